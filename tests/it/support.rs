//! Starts real `starling` processes on free loopback ports, with data dirs under the target
//! directory (a disk filesystem: the engine needs O_DIRECT), and stops them.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to start or stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh data dir under the target directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create a data dir")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub shards: usize,
    pub password: Option<String>,
    pub extra_args: Vec<String>,
    pub client_port: Option<u16>,
    /// A command the node is started through, e.g. `taskset -c 1` (empty: none).
    pub launcher: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            shards: 2,
            password: None,
            extra_args: Vec::new(),
            client_port: None,
            launcher: Vec::new(),
        }
    }
}

/// A running node; killed on drop if not stopped.
pub struct Node {
    child: Option<Child>,
    pub client_port: u16,
    pub admin_port: u16,
    log: PathBuf,
}

impl Node {
    /// Starts a node on `dir` and waits until it answers PING.
    pub fn start(dir: &Path, options: &NodeOptions) -> Node {
        match Node::try_start(dir, options) {
            Ok(node) => node,
            Err(output) => panic!("node did not start:\n{output}"),
        }
    }

    /// Starts a node; `Err(log)` if the process exits before it is ready.
    pub fn try_start(dir: &Path, options: &NodeOptions) -> Result<Node, String> {
        let client_port = options.client_port.unwrap_or_else(free_port);
        let admin_port = free_port();
        let log = dir.with_extension(format!("{client_port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the node log");
        let mut command = match options.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_starling"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_starling")),
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--client-addr")
            .arg(format!("127.0.0.1:{client_port}"))
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(&options.extra_args)
            // The shard count through the environment: checks that overrides work.
            .env("STARLING_SHARDS", options.shards.to_string())
            .env_remove("STARLING_PASSWORD")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file);
        if let Some(password) = &options.password {
            command.arg("--password").arg(password);
        }
        let child = command.spawn().expect("spawn starling");
        let mut node = Node {
            child: Some(child),
            client_port,
            admin_port,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = node.child_mut().try_wait().expect("try_wait") {
                node.child = None;
                return Err(format!("exited with {status}:\n{}", node.log_text()));
            }
            // Shards start in parallel: a client port answering (any shard) does not mean that
            // shard 0 has bound the admin port yet, so wait for both.
            if node.ping_raw() && TcpStream::connect(node.admin_addr()).is_ok() {
                return Ok(node);
            }
            assert!(
                Instant::now() < deadline,
                "node not ready after {START_TIMEOUT:?}:\n{}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("node is running")
    }

    /// The node's process id (the launcher execs it, so the same process).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ping_raw(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(self.client_addr()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// A redis-crate connection (no password).
    pub fn connection(&self) -> redis::Connection {
        self.connection_with(None)
    }

    /// A redis-crate connection, authenticating with `password` if given.
    pub fn connection_with(&self, password: Option<&str>) -> redis::Connection {
        let url = match password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.client_port),
            None => format!("redis://127.0.0.1:{}/", self.client_port),
        };
        let client = redis::Client::open(url).expect("client");
        let connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        connection
    }

    /// The admin port's `/info` document.
    pub fn info(&self) -> serde_json::Value {
        let (code, body) =
            starling::api::admin::get(self.admin_addr(), "/info").expect("GET /info");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/info is JSON")
    }

    /// A raw socket to the client port.
    pub fn raw(&self) -> TcpStream {
        let stream = TcpStream::connect(self.client_addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill failed");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                if !status.success() {
                    // Callers assert on the status; the log says why.
                    eprintln!(
                        "node exited with {status} after SIGTERM:\n{}",
                        self.log_text()
                    );
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node did not stop after SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads whatever arrives until the peer closes or `timeout` passes without data.
pub fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(_) => return (received, false),
        }
    }
}

/// Sends `request` and reads one reply line (through its CRLF).
pub fn exchange_line(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).expect("write");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("read reply");
        reply.push(byte[0]);
    }
    reply
}

/// Sends `request` and reads exactly `reply_len` bytes of reply.
pub fn exchange(stream: &mut TcpStream, request: &[u8], reply_len: usize) -> Vec<u8> {
    stream.write_all(request).expect("write");
    let mut reply = vec![0u8; reply_len];
    stream.read_exact(&mut reply).expect("read reply");
    reply
}

/// A counter from a node's /metrics (summed over label sets that contain `labels`).
pub fn metric(node: &Node, name: &str, labels: &str) -> u64 {
    let (_, text) = starling::api::admin::get(node.admin_addr(), "/metrics").expect("metrics");
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
