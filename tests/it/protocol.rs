//! Raw-socket input: pipelining across reads, inline commands, and malformed or oversized
//! frames. A framing error gets an error reply and a closed connection; the node stays healthy
//! and nothing written before the error is lost.

use std::io::Write as _;

use redis::Commands as _;

use crate::support::{Node, NodeOptions, data_dir, exchange, exchange_line, read_until_closed};

fn node() -> (tempfile::TempDir, Node) {
    let dir = data_dir();
    let node = Node::start(&dir.path().join("data"), &NodeOptions::default());
    (dir, node)
}

#[test]
fn frames_split_across_writes_and_inline_commands_work() {
    let (_dir, node) = node();
    let mut s = node.raw();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel")
        .expect("first half");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(exchange(&mut s, b"lo\r\n", 5), b"+OK\r\n");
    assert_eq!(exchange(&mut s, b"GET k\r\n", 11), b"$5\r\nhello\r\n");
    assert_eq!(
        exchange(&mut s, b"\r\nPING\r\n", 7),
        b"+PONG\r\n",
        "empty lines are skipped"
    );
    // Unknown commands and wrong arity do not break the connection.
    let reply = exchange_line(&mut s, b"NOSUCH a\r\n");
    assert!(
        reply.starts_with(b"-ERR unknown command 'NOSUCH'"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(exchange(&mut s, b"PING\r\n", 7), b"+PONG\r\n");
}

#[test]
fn a_malformed_frame_is_answered_and_closed_after_earlier_commands_ran() {
    let (_dir, node) = node();
    let mut s = node.raw();
    // A valid SET, then a frame whose argument is not a bulk string.
    s.write_all(b"*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n*1\r\n:12\r\n")
        .expect("write");
    let (reply, closed) = read_until_closed(&mut s);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        reply.starts_with("+OK\r\n-ERR Protocol error: expected '$'"),
        "{reply}"
    );
    assert!(closed, "connection closed after a framing error");
    let mut c = node.connection();
    assert_eq!(
        c.get::<_, String>("before").expect("GET"),
        "1",
        "the write before the error is kept"
    );
}

#[test]
fn oversized_bulk_and_too_many_arguments_name_the_limit() {
    let (_dir, node) = node();
    let mut s = node.raw();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n")
        .expect("write");
    let (reply, closed) = read_until_closed(&mut s);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        reply.contains("bulk_bytes_max (1048576)") && closed,
        "{reply}"
    );

    let mut s = node.raw();
    s.write_all(b"*99999999\r\n").expect("write");
    let (reply, closed) = read_until_closed(&mut s);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.contains("args_max") && closed, "{reply}");

    for garbage in [&b"*1\r\n$-5\r\n"[..], b"*abc\r\n", b"*1\r\n$3\r\nGETxx"] {
        let mut s = node.raw();
        s.write_all(garbage).expect("write");
        let (reply, closed) = read_until_closed(&mut s);
        assert!(
            reply.starts_with(b"-ERR Protocol error") && closed,
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    let mut c = node.connection();
    let pong: String = redis::cmd("PING")
        .query(&mut c)
        .expect("node still healthy");
    assert_eq!(pong, "PONG");
}

#[test]
fn a_large_value_and_a_deep_pipeline_in_one_write() {
    let (_dir, node) = node();
    let mut s = node.raw();
    let value = vec![b'v'; 1 << 20];
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    request.extend_from_slice(&value);
    request.extend_from_slice(b"\r\n");
    for i in 0..1000 {
        request.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n$4\r\nk{i:03}\r\n$1\r\nx\r\n").as_bytes(),
        );
    }
    let reply = exchange(&mut s, &request, 5 * 1001);
    assert!(reply.chunks(5).all(|r| r == b"+OK\r\n"));
    let mut c = node.connection();
    let got: Vec<u8> = c.get("big").expect("GET big");
    assert_eq!(got.len(), value.len());
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(size, 1001);
}

#[test]
fn a_key_longer_than_the_limit_is_refused() {
    let (_dir, node) = node();
    let mut c = node.connection();
    let key = "k".repeat(5000);
    let error = c.set::<_, _, ()>(&key, "v").expect_err("key too long");
    assert!(error.to_string().contains("key_bytes_max"), "{error}");
    let pong: String = redis::cmd("PING")
        .query(&mut c)
        .expect("connection still usable");
    assert_eq!(pong, "PONG");
}

#[test]
fn idle_clients_are_disconnected() {
    let dir = data_dir();
    let extra_args = ["--idle-timeout-secs", "1"].map(String::from).to_vec();
    let node = Node::start(
        &dir.path().join("data"),
        &NodeOptions {
            extra_args,
            ..NodeOptions::default()
        },
    );
    let mut idle = node.raw();
    assert_eq!(exchange(&mut idle, b"PING\r\n", 7), b"+PONG\r\n");
    let started = std::time::Instant::now();
    let (reply, closed) = read_until_closed(&mut idle);
    assert!(reply.is_empty() && closed, "idle connection not closed");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "closed before the idle timeout"
    );
}

#[test]
fn the_connection_limit_refuses_with_a_reply_and_frees_slots() {
    let dir = data_dir();
    let extra_args = ["--max-connections", "2"].map(String::from).to_vec();
    let node = Node::start(
        &dir.path().join("data"),
        &NodeOptions {
            extra_args,
            ..NodeOptions::default()
        },
    );
    // The start-up probe's connection may not be released yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node.info()["connections"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "probe connection never released"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut first = node.raw();
    let mut second = node.raw();
    assert_eq!(exchange(&mut first, b"PING\r\n", 7), b"+PONG\r\n");
    assert_eq!(exchange(&mut second, b"PING\r\n", 7), b"+PONG\r\n");
    let mut third = node.raw();
    let (reply, closed) = read_until_closed(&mut third);
    assert!(
        reply.starts_with(b"-ERR max number of clients reached") && closed,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    drop(first);
    // The slot comes back: a new client is served once one is gone.
    loop {
        let mut s = node.raw();
        s.write_all(b"PING\r\n").expect("write");
        let (reply, _) = read_until_closed_or(&mut s, 7);
        if reply == b"+PONG\r\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot not released");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(exchange(&mut second, b"PING\r\n", 7), b"+PONG\r\n");
}

/// Reads until `len` bytes arrived or the peer closed.
fn read_until_closed_or(stream: &mut std::net::TcpStream, len: usize) -> (Vec<u8>, bool) {
    use std::io::Read as _;
    let mut received = Vec::new();
    let mut chunk = [0u8; 256];
    while received.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return (received, true),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    (received, false)
}
