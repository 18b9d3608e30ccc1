//! Clusters of real `starling` processes on loopback: membership and failure detection,
//! dissemination (including a value that must go over the TCP transfer stream), restart and
//! late-join catch-up, partition and heal, `ack = peers:k`, rejected datagrams, and a cluster
//! with encrypted gossip.
//!
//! Intervals are shortened through the config file (gossip 50 ms, probes 100 ms, sync 500 ms)
//! so every test finishes in seconds; the bounds below are generous multiples of those.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::Commands as _;

use crate::support::{Node, NodeOptions, metric};

/// Shards per node (gossip ports base..base+SHARDS).
const SHARDS: u16 = 2;
/// How long convergence may take in these tests (the configured intervals are ~10× shorter).
const CONVERGE: Duration = Duration::from_secs(10);
/// The configured failure-detection bound: probe 100 ms, suspicion ≤ 4 · 2 · 0.1 s, plus
/// dissemination, with margin for a loaded 2-core CI machine.
const DETECTION: Duration = Duration::from_secs(6);

/// A gossip base port whose UDP and TCP ports base..base+SHARDS are free right now. The range
/// 20000..32000 lies below Linux's ephemeral ports, so `free_port()` users cannot take them.
fn gossip_base() -> u16 {
    // A random seed per call: tests run as concurrent processes with neighbouring pids, and a
    // seed of pid ^ (a few ns) once gave two of them the same ports.
    let seed =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    let mut candidate = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..1000 {
        candidate = candidate
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 20_000 + ((candidate >> 33) % 1_500) as u16 * 8;
        let free = (base..base + SHARDS).all(|port| {
            UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free gossip port range");
}

/// One cluster node: its process, data dir and gossip port.
struct Member {
    node: Option<Node>,
    data: PathBuf,
    config: PathBuf,
    gossip: u16,
    id: String,
}

/// A test cluster under one temp dir.
struct Cluster {
    _root: tempfile::TempDir,
    root: PathBuf,
    name: String,
    members: Vec<Member>,
}

impl Cluster {
    fn new() -> Cluster {
        let root = crate::support::data_dir();
        Cluster {
            root: root.path().to_path_buf(),
            _root: root,
            name: format!("it-{}-{}", std::process::id(), crate::support::free_port()),
            members: Vec::new(),
        }
    }

    /// Adds and starts a node joining through node 0 (if any); `extra` is more `[cluster]` TOML.
    fn add(&mut self, extra: &str) -> usize {
        let index = self.members.len();
        let gossip = gossip_base();
        let join = match self.members.first() {
            Some(seed) => format!("join = [\"127.0.0.1:{}\"]", seed.gossip),
            None => String::new(),
        };
        let config = self.root.join(format!("node{index}.toml"));
        let text = format!(
            "[cluster]\nenabled = true\ncluster_id = \"{}\"\ngossip_addr = \"127.0.0.1:{gossip}\"\n{join}\n\
             gossip_interval_ms = 50\nsync_interval_ms = 500\nprobe_interval_ms = 100\n\
             probe_timeout_ms = 50\nfault_injection = true\nack_timeout_ms = 1500\n{extra}\n",
            self.name
        );
        std::fs::write(&config, text).expect("write config");
        let data = self.root.join(format!("node{index}"));
        let mut member = Member {
            node: None,
            data,
            config,
            gossip,
            id: String::new(),
        };
        member.node = Some(start(&member));
        member.id = node_id(member.node());
        self.members.push(member);
        index
    }

    fn node(&self, index: usize) -> &Node {
        self.members[index].node()
    }

    fn kill(&mut self, index: usize) {
        drop(self.members[index].node.take());
    }

    fn restart(&mut self, index: usize) {
        let member = &mut self.members[index];
        assert!(member.node.is_none(), "node {index} is running");
        member.node = Some(start(member));
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.node.as_ref().map(|node| (i, node)))
    }

    /// Waits until every running node sees every other running node alive.
    fn wait_formed(&self) -> Duration {
        let started = Instant::now();
        let expected: Vec<(usize, String)> = self
            .running()
            .map(|(i, _)| (i, self.members[i].id.clone()))
            .collect();
        let formed = || {
            self.running().all(|(i, node)| {
                let states = member_states(node);
                expected
                    .iter()
                    .filter(|(j, _)| *j != i)
                    .all(|(_, id)| states.iter().any(|(m, s)| m == id && s == "alive"))
            })
        };
        wait_for_explained(CONVERGE, "cluster formation", formed, || self.views());
        started.elapsed()
    }

    /// What each running node sees and the end of its log: why a wait timed out.
    fn views(&self) -> String {
        let views: Vec<String> = self
            .running()
            .map(|(i, node)| {
                let log = node.log_text();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "node {i} (gossip {}) sees {:?}; log tail:\n{}",
                    self.members[i].gossip,
                    member_states(node),
                    tail.join("\n")
                )
            })
            .collect();
        views.join("\n")
    }

    fn block(&self, index: usize, blocked: &[usize]) {
        let ids: Vec<&str> = blocked
            .iter()
            .map(|j| self.members[*j].id.as_str())
            .collect();
        let path = format!("/faults?drop=0&block={}", ids.join(","));
        let (code, body) =
            starling::api::admin::request(self.node(index).admin_addr(), "POST", &path)
                .expect("faults");
        assert_eq!(code, 200, "{body}");
    }
}

impl Member {
    fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }
}

fn start(member: &Member) -> Node {
    Node::start(&member.data, &options(&member.config))
}

fn options(config: &Path) -> NodeOptions {
    NodeOptions {
        shards: usize::from(SHARDS),
        extra_args: vec![
            "--config".into(),
            config.display().to_string(),
            "--durability".into(),
            "none".into(),
        ],
        ..NodeOptions::default()
    }
}

/// A node whose gossip port another node holds is refused at start-up: the gossip sockets are
/// bound without the SO_REUSEPORT glommio sets, which would let the two silently split the
/// port's datagrams.
#[test]
fn a_gossip_port_in_use_is_refused() {
    let mut cluster = Cluster::new();
    cluster.add("");
    let config = cluster.root.join("second.toml");
    let same_gossip_addr = std::fs::read_to_string(&cluster.members[0].config).expect("config");
    std::fs::write(&config, same_gossip_addr).expect("write config");
    let refused = Node::try_start(&cluster.root.join("second"), &options(&config));
    let Err(log) = refused else {
        panic!(
            "a second node started on gossip port {}",
            cluster.members[0].gossip
        );
    };
    assert!(log.contains("cannot bind gossip UDP"), "{log}");
}

fn members_json(node: &Node) -> serde_json::Value {
    // The admin port may come up a moment after the client port the start-up waits for.
    let mut answer = starling::api::admin::get(node.admin_addr(), "/members");
    for _ in 0..100 {
        if answer.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        answer = starling::api::admin::get(node.admin_addr(), "/members");
    }
    let (code, body) = answer.expect("/members");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn node_id(node: &Node) -> String {
    members_json(node)["node"]
        .as_str()
        .expect("node id")
        .to_string()
}

/// (id, state) of every member a node knows, itself excluded.
fn member_states(node: &Node) -> Vec<(String, String)> {
    let json = members_json(node);
    json["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["self"].as_bool() != Some(true))
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn wait_for(bound: Duration, what: &str, condition: impl FnMut() -> bool) {
    wait_for_explained(bound, what, condition, String::new);
}

/// [`wait_for`], adding `explain()` to the message when it times out.
fn wait_for_explained(
    bound: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + bound;
    while !condition() {
        if Instant::now() >= deadline {
            panic!("{what} did not happen within {bound:?}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(node: &Node, key: &str) -> Option<Vec<u8>> {
    node.connection().get(key).expect("GET")
}

fn set(node: &Node, key: &str, value: impl redis::ToRedisArgs) {
    let () = node.connection().set(key, value).expect("SET");
}

#[test]
fn members_form_and_a_killed_node_is_declared_dead_everywhere() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.add("");
    }
    let formed = cluster.wait_formed();
    eprintln!("3 nodes formed a cluster in {formed:?}");
    // `starling members` lists all three, alive.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args([
            "members",
            "--admin-addr",
            &cluster.node(0).admin_addr().to_string(),
        ])
        .output()
        .expect("run starling members");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for member in &cluster.members {
        assert!(text.contains(&member.id), "{} missing:\n{text}", member.id);
    }
    assert_eq!(text.matches(" alive ").count(), 3, "{text}");
    assert_eq!(
        metric(
            cluster.node(1),
            "starling_cluster_members",
            "state=\"alive\""
        ),
        2
    );

    let dead_id = cluster.members[2].id.clone();
    let killed = Instant::now();
    cluster.kill(2);
    wait_for(
        DETECTION,
        "the killed node declared dead by every other node",
        || {
            (0..2).all(|i| {
                member_states(cluster.node(i))
                    .iter()
                    .any(|(id, state)| *id == dead_id && state == "dead")
            })
        },
    );
    eprintln!(
        "killed node declared dead everywhere after {:?}",
        killed.elapsed()
    );
}

#[test]
fn writes_anywhere_are_read_everywhere_including_a_large_value_over_tcp() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.add("");
    }
    cluster.wait_formed();
    for (i, node) in cluster.running() {
        let mut c = node.connection();
        for k in 0..20 {
            let () = c
                .set(format!("n{i}:k{k}"), format!("v{i}.{k}"))
                .expect("SET");
        }
    }
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    set(cluster.node(1), "big", &big);
    // DEL on another node than the writer's: the tombstone must win everywhere.
    wait_for(CONVERGE, "n0:k3 on node 2", || {
        get(cluster.node(2), "n0:k3").is_some()
    });
    let deleted: u64 = cluster.node(2).connection().del("n0:k3").expect("DEL");
    assert_eq!(deleted, 1);
    let written = Instant::now();
    wait_for(CONVERGE, "every write readable on every node", || {
        cluster.running().all(|(_, node)| {
            (0..3).all(|i| {
                (0..20).all(|k| {
                    let expected = (i, k) != (0, 3);
                    get(node, &format!("n{i}:k{k}")).is_some() == expected
                })
            }) && get(node, "big").as_deref() == Some(&big[..])
        })
    });
    eprintln!(
        "60 writes, 1 delete and a 20 KB value everywhere after {:?}",
        written.elapsed()
    );
    let fetched: u64 = (0..3)
        .map(|i| {
            metric(
                cluster.node(i),
                "starling_transfer_bytes_received_total",
                "",
            )
        })
        .sum();
    assert!(
        fetched >= 20_000,
        "the 20 KB value did not come over TCP ({fetched} bytes)"
    );
}

#[test]
fn a_restarted_node_rejoins_and_catches_up() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.add("");
    }
    cluster.wait_formed();
    set(cluster.node(0), "before", "1");
    wait_for(CONVERGE, "first write on node 2", || {
        get(cluster.node(2), "before").is_some()
    });
    cluster.kill(2);
    let mut c = cluster.node(0).connection();
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("while-down:{i}"), i.to_string()))
        .collect();
    let () = c.mset(&pairs).expect("MSET");
    let () = c.set("before", "2").expect("SET");
    cluster.restart(2);
    let restarted = Instant::now();
    cluster.wait_formed();
    wait_for(CONVERGE, "the restarted node caught up", || {
        let mut c = cluster.node(2).connection();
        let size: u64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        size == 201 && get(cluster.node(2), "before").as_deref() == Some(&b"2"[..])
    });
    eprintln!(
        "restarted node rejoined and caught up 201 keys in {:?}",
        restarted.elapsed()
    );
}

/// Forms a two-node cluster, writes `chunks` × 100 keys `k{chunk}:{i}` = `value {chunk} {i}`
/// through node 0, then adds a third node with `extra` config and waits until it holds them
/// all. Returns the cluster and the joiner's index.
fn late_joiner(chunks: usize, extra: &str) -> (Cluster, usize) {
    let mut cluster = Cluster::new();
    cluster.add("");
    cluster.add("");
    cluster.wait_formed();
    let mut c = cluster.node(0).connection();
    for chunk in 0..chunks {
        let pairs: Vec<(String, String)> = (0..100)
            .map(|i| (format!("k{chunk}:{i}"), format!("value {chunk} {i}")))
            .collect();
        let () = c.mset(&pairs).expect("MSET");
    }
    let keys = chunks as u64 * 100;
    let joiner = cluster.add(extra);
    let joined = Instant::now();
    wait_for(
        CONVERGE,
        &format!("the late joiner holds all {keys} keys"),
        || {
            let mut c = cluster.node(joiner).connection();
            let size: u64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
            size == keys
        },
    );
    eprintln!("late joiner received {keys} keys in {:?}", joined.elapsed());
    (cluster, joiner)
}

#[test]
fn a_late_joiner_gets_the_whole_dataset() {
    let (cluster, joiner) = late_joiner(10, "");
    assert_eq!(
        get(cluster.node(joiner), "k7:42").as_deref(),
        Some(&b"value 7 42"[..])
    );
}

/// A joiner whose partitions are far behind (here: more than 2 entries) pulls its shards'
/// data page by page over the TCP transfer stream instead of reconciling it.
#[test]
fn a_late_joiner_far_behind_pulls_the_dataset_in_bulk() {
    let (cluster, joiner) = late_joiner(30, "bulk_threshold = 2");
    let node = cluster.node(joiner);
    assert!(metric(node, "starling_replication_catch_ups_total", "") >= 1);
    let pulled = metric(node, "starling_replication_pull_entries_total", "");
    assert!(pulled >= 1_000, "only {pulled} entries came in bulk");
    assert_eq!(get(node, "k29:99").as_deref(), Some(&b"value 29 99"[..]));
}

#[test]
fn a_partition_heals_and_converges_last_writer_wins() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.add("");
    }
    cluster.wait_formed();
    // Node 0 alone on one side.
    cluster.block(0, &[1, 2]);
    cluster.block(1, &[0]);
    cluster.block(2, &[0]);
    set(cluster.node(0), "x", "from-0");
    set(cluster.node(0), "only-0", "a");
    std::thread::sleep(Duration::from_millis(20));
    set(cluster.node(1), "x", "from-1");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(cluster.node(2), "only-0"), None, "the partition leaked");
    for i in 0..3 {
        cluster.block(i, &[]);
    }
    let healed = Instant::now();
    wait_for(CONVERGE, "convergence after the heal", || {
        cluster.running().all(|(_, node)| {
            get(node, "x").as_deref() == Some(&b"from-1"[..])
                && get(node, "only-0").as_deref() == Some(&b"a"[..])
        })
    });
    eprintln!("converged {:?} after the heal", healed.elapsed());
    let dropped = metric(
        cluster.node(1),
        "starling_gossip_datagrams_rejected_total",
        "fault_injected",
    );
    assert!(dropped > 0, "fault injection dropped nothing");
}

#[test]
fn ack_peers_2_waits_for_two_peers_and_fails_clearly_without_them() {
    let mut cluster = Cluster::new();
    cluster.add("ack = \"peers:2\"");
    cluster.add("");
    cluster.add("");
    cluster.wait_formed();
    let mut c = cluster.node(0).connection();
    let () = c.set("acked", "1").expect("SET with two live peers");
    // Both peers hold it durably (they acked it).
    for i in 1..3 {
        assert_eq!(get(cluster.node(i), "acked").as_deref(), Some(&b"1"[..]));
    }
    cluster.block(0, &[1, 2]);
    let error = c
        .set::<_, _, ()>("lonely", "1")
        .expect_err("no peer can ack");
    let text = error.to_string();
    assert!(
        text.contains("NOACK") && text.contains("0 of 2 peers"),
        "{text}"
    );
    assert_eq!(
        get(cluster.node(0), "lonely").as_deref(),
        Some(&b"1"[..]),
        "kept locally"
    );
    cluster.block(0, &[]);
    wait_for(
        CONVERGE,
        "the unacknowledged write replicates after the heal",
        || get(cluster.node(1), "lonely").is_some(),
    );
}

#[test]
fn forged_replayed_and_foreign_datagrams_are_dropped_and_counted() {
    use starling::gossip::wire::{Kind, Sealer};
    use starling::runtime::keys::{ClusterKeys, cluster_id_of};
    let mut cluster = Cluster::new();
    cluster.add("");
    let node = cluster.node(0);
    let target = SocketAddr::from(([127, 0, 0, 1], cluster.members[0].gossip));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let keys = ClusterKeys::derived(&cluster.name);
    let mut sealer = Sealer::new(cluster_id_of(&cluster.name), 0xfeed, 0, 1, keys.keyring());
    let mut good = Vec::new();
    sealer.seal(Kind(0x41), &[0], &mut good).expect("seal");
    let mut forged = Vec::new();
    sealer.seal(Kind(0x41), &[0], &mut forged).expect("seal");
    let body_at = forged.len() - 33;
    forged[body_at] ^= 0x55;
    let mut foreign_sealer = Sealer::new(
        cluster_id_of("another"),
        0xfeed,
        0,
        1,
        ClusterKeys::derived("another").keyring(),
    );
    let mut foreign = Vec::new();
    foreign_sealer
        .seal(Kind(0x41), &[0], &mut foreign)
        .expect("seal");
    for datagram in [&good, &good, &forged, &foreign] {
        socket.send_to(datagram, target).expect("send");
    }
    wait_for(CONVERGE, "the rejections to be counted", || {
        let count = |reason: &str| {
            metric(
                node,
                "starling_gossip_datagrams_rejected_total",
                &format!("reason=\"{reason}\""),
            )
        };
        count("replayed") == 1 && count("bad_mac") == 1 && count("wrong_cluster") == 1
    });
    // The one good datagram was accepted once (the copy was the replay).
    assert_eq!(
        metric(
            node,
            "starling_gossip_datagrams_received_total",
            "kind=\"rumor_ack\""
        ),
        1
    );
    assert!(Path::new(&cluster.members[0].data).exists());
}

#[test]
fn an_encrypted_cluster_replicates_and_drops_plaintext_datagrams() {
    use starling::gossip::wire::{Kind, Sealer};
    use starling::runtime::keys::{ClusterKeys, cluster_id_of};
    let mut cluster = Cluster::new();
    cluster.add("encrypt = true");
    cluster.add("encrypt = true");
    cluster.wait_formed();
    set(cluster.node(0), "secret", "sealed");
    wait_for(CONVERGE, "the write on node 1", || {
        get(cluster.node(1), "secret").as_deref() == Some(&b"sealed"[..])
    });
    // A plaintext datagram, correctly MACed with the cluster key, is still refused.
    let keys = ClusterKeys::derived(&cluster.name);
    let mut sealer = Sealer::new(cluster_id_of(&cluster.name), 0xfeed, 0, 1, keys.keyring());
    let mut plain = Vec::new();
    sealer.seal(Kind(0x41), &[0], &mut plain).expect("seal");
    let target = SocketAddr::from(([127, 0, 0, 1], cluster.members[1].gossip));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(&plain, target).expect("send");
    let node = cluster.node(1);
    wait_for(CONVERGE, "the plaintext datagram to be counted", || {
        metric(
            node,
            "starling_gossip_datagrams_rejected_total",
            "reason=\"encryption_mismatch\"",
        ) == 1
    });
}
