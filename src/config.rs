//! Node configuration: embedded defaults, a TOML file, `STARLING_*` environment overrides and flags.
//!
//! Precedence, lowest first: defaults < config file < environment < command-line flags. The
//! environment and the flags share one mechanism: every [`Overrides`] field is a clap flag that
//! also reads `STARLING_<NAME>`, so a flag wins over its variable and both win over the file.
//! **Invariant:** a [`Config`] returned by [`Config::resolve`] has passed [`Config::validate`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How writes are made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A write is acknowledged after the group commit holding it is on disk (fdatasync).
    #[default]
    Sync,
    /// No fdatasync (tests and benchmarks of the CPU path only).
    None,
}

/// The resolved configuration of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the shards keep their data (`shard-<i>/`) and the node's identity.
    pub data_dir: PathBuf,
    /// RESP client address.
    pub client_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Number of shards (one pinned executor each); `None` means one per CPU.
    pub shards: Option<usize>,
    /// Partitions of the key space (fixed per cluster, recorded in the data dir).
    pub partitions: u32,
    /// Password required by AUTH; `None` means no authentication.
    pub password: Option<String>,
    /// Most client connections open at once over all shards.
    pub max_connections: usize,
    /// Largest bulk string in a request (a key or a value), in bytes.
    pub max_bulk_bytes: usize,
    /// Most arguments of one command.
    pub max_args: usize,
    /// Largest single request (one command with all its arguments), in bytes.
    pub max_request_bytes: usize,
    /// Idle clients are disconnected after this many seconds (0: never).
    pub idle_timeout_secs: u64,
    /// Clients that do not read their replies for this many seconds are disconnected.
    pub write_timeout_secs: u64,
    /// Durability of writes.
    pub durability: Durability,
    /// io_uring registered buffer memory per shard, in bytes (counts against RLIMIT_MEMLOCK).
    pub io_memory_bytes: usize,
    /// How long a graceful shutdown waits for clients' in-flight requests, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Clustering (`[cluster]`): gossip, replication, acks. Off unless enabled.
    pub cluster: ClusterConfig,
}

/// How a client `SET` is acknowledged in a cluster (`ack = "local"` or `ack = "peers:k"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// After the local group commit.
    #[default]
    Local,
    /// After `k` peers report the entry durable (1..=16).
    Peers(usize),
}

/// Most peers an `ack = "peers:k"` write may wait for.
pub const ACK_PEERS_MAX: usize = 16;

impl std::str::FromStr for AckMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "local" {
            return Ok(AckMode::Local);
        }
        let peers = text
            .strip_prefix("peers:")
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| (1..=ACK_PEERS_MAX).contains(k));
        peers.map(AckMode::Peers).ok_or_else(|| {
            format!("ack = {text:?}: use \"local\" or \"peers:k\" with k in 1..={ACK_PEERS_MAX}")
        })
    }
}

impl std::fmt::Display for AckMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckMode::Local => formatter.write_str("local"),
            AckMode::Peers(k) => write!(formatter, "peers:{k}"),
        }
    }
}

/// The `[cluster]` section. A node gossips only when `enabled`, `gossip_addr` is given on the
/// command line, or `join` is not empty (so single-node use and tests need no free UDP ports).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Run gossip and replication.
    pub enabled: bool,
    /// Name of the cluster; datagrams of other clusters are dropped. Without a key file the
    /// MAC key is derived from it (authentication against accidents, not attackers).
    pub cluster_id: String,
    /// UDP gossip address of shard 0; shard `i` uses port + `i` (UDP and the TCP transfer port).
    pub gossip_addr: SocketAddr,
    /// The IP other nodes reach this one at (default: the gossip IP, or 127.0.0.1 if unspecified).
    pub advertise_ip: Option<IpAddr>,
    /// Seed nodes (`host:port` of their shard-0 gossip port).
    pub join: Vec<String>,
    /// Key file (`starling keygen`): lines `<id> <64 hex>`, optional `send <id>`.
    pub key_file: Option<PathBuf>,
    /// Encrypt gossip datagrams (XChaCha20-Poly1305 under a key derived from the cluster key).
    /// Every node must agree: an encrypting node drops plaintext datagrams and vice versa
    /// (metric `reason="encryption_mismatch"`). Bulk transfers over TCP stay authenticated only.
    pub encrypt: bool,
    /// Peers each rumor hop sends to.
    pub fanout: usize,
    /// Replication tick (rumor packing, retransmits) and membership gossip interval.
    pub gossip_interval_ms: u64,
    /// Every partition reconciles with one random peer this often.
    pub sync_interval_ms: u64,
    /// SWIM probe interval.
    pub probe_interval_ms: u64,
    /// SWIM probe timeout (below the probe interval).
    pub probe_timeout_ms: u64,
    /// Write acknowledgement: `"local"` or `"peers:k"`.
    pub ack: String,
    /// How long an `ack = "peers:k"` write waits for its peers.
    pub ack_timeout_ms: u64,
    /// Allow `POST /faults` on the admin port (tests only).
    pub fault_injection: bool,
    /// Tombstones older than this may be dropped; a node away longer must resync.
    pub gc_grace_secs: u64,
    /// How anti-entropy finds differences: `"cpisync"` (default: per-partition sketches kept
    /// in step with every write; bytes grow with the difference, not the partition) or
    /// `"elements"` (the responder lists a partition's elements; cheaper for tiny partitions).
    pub anti_entropy: String,
    /// A peer's partition this many entries ahead of ours starts a bulk catch-up: everything
    /// this shard owns is pulled from that peer over the TCP transfer stream, page by page,
    /// instead of reconciled (a new or long-absent node).
    pub bulk_threshold: u64,
    /// How long a write's batch waits at its first hops for other writers' batches to share
    /// datagrams with (bytes per update against latency per write).
    pub rumor_linger_ms: u64,
    /// How long hop acks wait to share a datagram (delays loss repair by about as much).
    pub ack_linger_ms: u64,
    /// `--resync` was given: wipe local data if the node was away longer than gc_grace.
    #[serde(skip)]
    pub resync: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            cluster_id: "starling".into(),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise_ip: None,
            join: Vec::new(),
            key_file: None,
            encrypt: false,
            fanout: 3,
            gossip_interval_ms: 100,
            sync_interval_ms: 30_000,
            probe_interval_ms: 200,
            probe_timeout_ms: 100,
            ack: "local".into(),
            ack_timeout_ms: 2_000,
            fault_injection: false,
            gc_grace_secs: 7 * 24 * 3600,
            anti_entropy: "cpisync".into(),
            bulk_threshold: 2_048,
            rumor_linger_ms: 150,
            ack_linger_ms: 120,
            resync: false,
        }
    }
}

impl ClusterConfig {
    /// The parsed ack mode (validated by [`Config::validate`]).
    pub fn ack_mode(&self) -> AckMode {
        self.ack.parse().unwrap_or_default()
    }

    /// The address peers reach shard 0 at.
    pub fn advertise_addr(&self) -> SocketAddr {
        let ip = self.advertise_ip.unwrap_or_else(|| {
            let ip = self.gossip_addr.ip();
            if ip.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                ip
            }
        });
        SocketAddr::new(ip, self.gossip_addr.port())
    }

    fn validate(&self) -> Result<(), String> {
        self.ack.parse::<AckMode>()?;
        if !matches!(self.anti_entropy.as_str(), "elements" | "cpisync") {
            return Err(format!(
                "anti_entropy = {:?}: use \"elements\" or \"cpisync\"",
                self.anti_entropy
            ));
        }
        if self.cluster_id.is_empty() {
            return Err("cluster_id must not be empty".into());
        }
        if !(1..=16).contains(&self.fanout) {
            return Err(format!("fanout = {}: must be 1..=16", self.fanout));
        }
        if self.probe_timeout_ms == 0 || self.probe_timeout_ms >= self.probe_interval_ms {
            return Err(format!(
                "probe_timeout_ms = {} must be positive and below probe_interval_ms = {}",
                self.probe_timeout_ms, self.probe_interval_ms
            ));
        }
        if self.rumor_linger_ms > 1_000 || self.ack_linger_ms > 1_000 {
            return Err("rumor_linger_ms and ack_linger_ms must be at most 1000".into());
        }
        if self.gossip_interval_ms == 0 || self.sync_interval_ms == 0 || self.ack_timeout_ms == 0 {
            return Err(
                "gossip_interval_ms, sync_interval_ms and ack_timeout_ms must be > 0".into(),
            );
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./starling-data"),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 7379)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7380)),
            shards: None,
            partitions: 256,
            password: None,
            max_connections: 10_000,
            max_bulk_bytes: 1 << 20,
            max_args: 16 * 1024,
            max_request_bytes: 64 << 20,
            idle_timeout_secs: 0,
            write_timeout_secs: 30,
            durability: Durability::Sync,
            io_memory_bytes: 512 * 1024,
            shutdown_timeout_secs: 10,
            cluster: ClusterConfig::default(),
        }
    }
}

/// Values from flags or `STARLING_*` variables; each one set replaces the file's value.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file (optional; every key is optional).
    #[arg(long, short = 'c', env = "STARLING_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./starling-data].
    #[arg(long, env = "STARLING_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// RESP client address [default: 127.0.0.1:7379].
    #[arg(long, env = "STARLING_CLIENT_ADDR")]
    pub client_addr: Option<SocketAddr>,
    /// Admin HTTP address [default: 127.0.0.1:7380].
    #[arg(long, env = "STARLING_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Number of shards, one pinned core each [default: all CPUs].
    #[arg(long, env = "STARLING_SHARDS")]
    pub shards: Option<usize>,
    /// Partitions of the key space, fixed for the data dir's lifetime [default: 256].
    #[arg(long, env = "STARLING_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Password clients must send with AUTH [default: none].
    #[arg(long, env = "STARLING_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Most client connections at once [default: 10000].
    #[arg(long, env = "STARLING_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Idle client timeout in seconds, 0 = never [default: 0].
    #[arg(long, env = "STARLING_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Durability of writes [default: sync].
    #[arg(long, env = "STARLING_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Join a cluster through this seed (`host:port` of its gossip port); repeatable.
    #[arg(long = "join", env = "STARLING_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// UDP gossip address of shard 0 (enables clustering) [default: 127.0.0.1:7946].
    #[arg(long, env = "STARLING_GOSSIP_ADDR")]
    pub gossip_addr: Option<SocketAddr>,
    /// Cluster name; nodes of other clusters are ignored [default: starling].
    #[arg(long, env = "STARLING_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Cluster key file written by `starling keygen` [default: key derived from the cluster id].
    #[arg(long, env = "STARLING_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Encrypt gossip datagrams: `true` or `false`; every node must agree [default: false].
    #[arg(long, env = "STARLING_ENCRYPT")]
    pub encrypt: Option<bool>,
    /// Write acknowledgement: `local` or `peers:k` [default: local].
    #[arg(long, env = "STARLING_ACK")]
    pub ack: Option<String>,
    /// Start even though this node was away longer than gc_grace (its data is wiped and
    /// fetched again from the cluster).
    #[arg(long)]
    pub resync: bool,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the config file (if any), then the overrides.
    pub fn resolve(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file (unknown keys are refused, missing ones take their defaults).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    fn apply(&mut self, overrides: &Overrides) {
        let o = overrides.clone();
        self.data_dir = o.data_dir.unwrap_or(std::mem::take(&mut self.data_dir));
        self.client_addr = o.client_addr.unwrap_or(self.client_addr);
        self.admin_addr = o.admin_addr.unwrap_or(self.admin_addr);
        self.shards = o.shards.or(self.shards);
        self.partitions = o.partitions.unwrap_or(self.partitions);
        self.password = o.password.or(self.password.take());
        self.max_connections = o.max_connections.unwrap_or(self.max_connections);
        self.idle_timeout_secs = o.idle_timeout_secs.unwrap_or(self.idle_timeout_secs);
        self.durability = o.durability.unwrap_or(self.durability);
        let cluster = &mut self.cluster;
        if o.gossip_addr.is_some() || !o.join.is_empty() {
            cluster.enabled = true;
        }
        cluster.gossip_addr = o.gossip_addr.unwrap_or(cluster.gossip_addr);
        if !o.join.is_empty() {
            cluster.join = o.join;
        }
        if !cluster.join.is_empty() {
            cluster.enabled = true;
        }
        cluster.cluster_id = o
            .cluster_id
            .unwrap_or(std::mem::take(&mut cluster.cluster_id));
        cluster.key_file = o.key_file.or(cluster.key_file.take());
        cluster.encrypt = o.encrypt.unwrap_or(cluster.encrypt);
        cluster.ack = o.ack.unwrap_or(std::mem::take(&mut cluster.ack));
        cluster.resync = o.resync;
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.shards == Some(0) || self.shards.is_some_and(|s| s > 1024) {
            return invalid(format!("shards = {:?}: must be 1..=1024", self.shards));
        }
        if self.partitions == 0 || self.partitions > 65_536 {
            return invalid(format!(
                "partitions = {}: must be 1..=65536",
                self.partitions
            ));
        }
        if let Some(shards) = self.shards
            && shards as u64 > u64::from(self.partitions)
        {
            return invalid(format!(
                "{shards} shards need at least as many partitions (partitions = {})",
                self.partitions
            ));
        }
        if self.max_connections == 0 {
            return invalid("max_connections = 0: must be at least 1".into());
        }
        if !(4096..=(1 << 20)).contains(&self.max_bulk_bytes) {
            return invalid(format!(
                "max_bulk_bytes = {}: must be 4096..=1048576 (the value limit)",
                self.max_bulk_bytes
            ));
        }
        if self.max_args < 3 {
            return invalid(format!("max_args = {}: must be at least 3", self.max_args));
        }
        if self.max_request_bytes < self.max_bulk_bytes + 1024 {
            return invalid(format!(
                "max_request_bytes = {} must exceed max_bulk_bytes by at least 1 KiB",
                self.max_request_bytes
            ));
        }
        if let Err(message) = self.cluster.validate() {
            return invalid(format!("[cluster] {message}"));
        }
        if self.cluster.enabled && self.partitions > u32::from(u16::MAX) {
            return invalid(format!(
                "partitions = {}: a cluster supports at most 65535",
                self.partitions
            ));
        }
        if self.client_addr == self.admin_addr && self.client_addr.port() != 0 {
            return invalid(format!(
                "client_addr and admin_addr are both {}",
                self.client_addr
            ));
        }
        Ok(())
    }

    /// The shard count to use on a machine with `cpus` CPUs.
    pub fn shard_count(&self, cpus: usize) -> usize {
        self.shards.unwrap_or(cpus.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_and_no_overrides_gives_the_documented_defaults() {
        let config = Config::resolve(&Overrides::default()).expect("defaults are valid");
        assert_eq!(config.data_dir, PathBuf::from("./starling-data"));
        assert_eq!(config.client_addr.to_string(), "127.0.0.1:7379");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:7380");
        assert_eq!(
            (config.partitions, config.durability),
            (256, Durability::Sync)
        );
    }

    #[test]
    fn overrides_beat_the_file_and_the_file_beats_defaults() {
        let dir = crate::test_tempdir();
        let path = dir.path().join("starling.toml");
        std::fs::write(
            &path,
            "shards = 3\npartitions = 512\npassword = \"file\"\nclient_addr = \"127.0.0.1:9000\"\n",
        )
        .expect("write");
        let overrides = Overrides {
            config: Some(path),
            shards: Some(2),
            password: Some("flag".into()),
            ..Overrides::default()
        };
        let config = Config::resolve(&overrides).expect("valid");
        assert_eq!(config.shards, Some(2));
        assert_eq!(config.partitions, 512);
        assert_eq!(config.password.as_deref(), Some("flag"));
        assert_eq!(config.client_addr.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_name() {
        let dir = crate::test_tempdir();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "shardz = 3\n").expect("write");
        let error = Config::from_file(&path).expect_err("unknown key");
        assert!(error.to_string().contains("shardz"), "{error}");
        let config = Config {
            partitions: 0,
            ..Config::default()
        };
        assert!(
            config
                .validate()
                .expect_err("zero")
                .to_string()
                .contains("partitions")
        );
        let config = Config {
            shards: Some(8),
            partitions: 4,
            ..Config::default()
        };
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.cluster.ack_linger_ms = 5_000;
        let error = config.validate().expect_err("an ack linger of 5 s");
        assert!(error.to_string().contains("ack_linger_ms"), "{error}");
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start =
            readme.find("```toml\n").expect("README has a toml example") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed block");
        let config: Config = toml::from_str(&readme[start..end]).expect("README example parses");
        config.validate().expect("README example is valid");
        assert_eq!(config.shards, Some(8));
    }

    #[test]
    fn environment_variables_feed_the_same_overrides() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            overrides: Overrides,
        }
        // Parse from explicit args: a flag given on the command line must be taken.
        let cli = Cli::try_parse_from(["starling", "--shards", "4", "--durability", "none"])
            .expect("parses");
        assert_eq!(cli.overrides.shards, Some(4));
        assert_eq!(cli.overrides.durability, Some(Durability::None));
        let cli = Cli::try_parse_from(["starling", "--encrypt", "true"]).expect("parses");
        assert_eq!(cli.overrides.encrypt, Some(true));
    }

    #[test]
    fn encrypt_defaults_off_and_the_flag_beats_the_file() {
        assert!(!Config::default().cluster.encrypt);
        let dir = crate::test_tempdir();
        let path = dir.path().join("starling.toml");
        std::fs::write(&path, "[cluster]\nencrypt = true\n").expect("write");
        let from_file = Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        assert!(Config::resolve(&from_file).expect("valid").cluster.encrypt);
        let overridden = Overrides {
            config: Some(path),
            encrypt: Some(false),
            ..Overrides::default()
        };
        assert!(!Config::resolve(&overridden).expect("valid").cluster.encrypt);
    }
}
