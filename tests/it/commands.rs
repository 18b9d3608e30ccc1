//! Every command through the `redis` crate (a real client library) against a 2-shard node.

use redis::{Commands as _, RedisResult, Value};

use crate::support::{Node, NodeOptions, data_dir};

fn node() -> (tempfile::TempDir, Node) {
    let dir = data_dir();
    let node = Node::start(&dir.path().join("data"), &NodeOptions::default());
    (dir, node)
}

#[test]
fn connection_commands() {
    let (_dir, node) = node();
    let mut c = node.connection();
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
    let echoed: Vec<u8> = redis::cmd("PING")
        .arg(b"hi\0there".as_slice())
        .query(&mut c)
        .expect("PING msg");
    assert_eq!(echoed, b"hi\0there");
    let echoed: String = redis::cmd("ECHO").arg("hello").query(&mut c).expect("ECHO");
    assert_eq!(echoed, "hello");
    let () = redis::cmd("SELECT").arg(0).query(&mut c).expect("SELECT 0");
    let error = redis::cmd("SELECT")
        .arg(1)
        .query::<()>(&mut c)
        .expect_err("SELECT 1");
    assert!(error.to_string().contains("out of range"), "{error}");
    let hello: Vec<Value> = redis::cmd("HELLO").arg(2).query(&mut c).expect("HELLO 2");
    assert_eq!(hello.len(), 14);
    let error = redis::cmd("HELLO")
        .arg(3)
        .query::<Value>(&mut c)
        .expect_err("HELLO 3");
    assert!(error.to_string().contains("NOPROTO"), "{error}");
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("it-test")
        .query(&mut c)
        .expect("SETNAME");
    let name: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(&mut c)
        .expect("GETNAME");
    assert_eq!(name, "it-test");
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query(&mut c)
        .expect("CLIENT INFO");
    assert!(info.contains("name=it-test"), "{info}");
}

#[test]
fn introspection_commands() {
    let (_dir, node) = node();
    let mut c = node.connection();
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut c)
        .expect("COMMAND COUNT");
    let all: Vec<Value> = redis::cmd("COMMAND").query(&mut c).expect("COMMAND");
    assert_eq!(all.len() as i64, count);
    assert!(count >= 18);
    let docs: Vec<Value> = redis::cmd("COMMAND")
        .arg("DOCS")
        .query(&mut c)
        .expect("COMMAND DOCS");
    assert!(docs.is_empty());
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut c)
        .expect("CONFIG GET save");
    assert_eq!(save, vec!["save".to_string(), String::new()]);
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut c)
        .expect("CONFIG GET appendonly");
    assert_eq!(aof, vec!["appendonly".to_string(), "yes".to_string()]);
    let () = c.set("k", "v").expect("SET");
    let info: String = redis::cmd("INFO").query(&mut c).expect("INFO");
    for section in [
        "# Server",
        "# Clients",
        "# Stats",
        "# Keyspace",
        "# Storage",
    ] {
        assert!(info.contains(section), "missing {section} in {info}");
    }
    assert!(info.contains("db0:keys=1,"), "{info}");
    assert!(info.contains("connected_clients:1"), "{info}");
    let keyspace: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut c)
        .expect("INFO keyspace");
    assert!(
        keyspace.contains("# Keyspace") && !keyspace.contains("# Server"),
        "{keyspace}"
    );
}

#[test]
fn string_commands() {
    let (_dir, node) = node();
    let mut c = node.connection();
    let missing: Option<String> = c.get("nope").expect("GET missing");
    assert_eq!(missing, None);
    let () = c.set("a", "1").expect("SET");
    let value: String = c.get("a").expect("GET");
    assert_eq!(value, "1");
    let binary = vec![0u8, 255, 13, 10, 42];
    let () = c
        .set(b"bin\r\nkey".as_slice(), binary.as_slice())
        .expect("SET binary");
    let got: Vec<u8> = c.get(b"bin\r\nkey".as_slice()).expect("GET binary");
    assert_eq!(got, binary);
    let () = c.set("empty-value", "").expect("SET empty value");
    let got: String = c.get("empty-value").expect("GET empty value");
    assert_eq!(got, "");

    let nx: Option<String> = redis::cmd("SET")
        .arg("a")
        .arg("2")
        .arg("NX")
        .query(&mut c)
        .expect("SET NX existing");
    assert_eq!(nx, None);
    let nx: Option<String> = redis::cmd("SET")
        .arg("n")
        .arg("2")
        .arg("NX")
        .query(&mut c)
        .expect("SET NX new");
    assert_eq!(nx.as_deref(), Some("OK"));
    let xx: Option<String> = redis::cmd("SET")
        .arg("x")
        .arg("2")
        .arg("XX")
        .query(&mut c)
        .expect("SET XX missing");
    assert_eq!(xx, None);
    let xx: Option<String> = redis::cmd("SET")
        .arg("a")
        .arg("3")
        .arg("XX")
        .query(&mut c)
        .expect("SET XX existing");
    assert_eq!(xx.as_deref(), Some("OK"));
    assert_eq!(c.get::<_, String>("a").expect("GET"), "3");
    let error = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .arg("EX")
        .arg(10)
        .query::<()>(&mut c)
        .expect_err("EX refused");
    assert!(error.to_string().contains("expire"), "{error}");

    let exists: i64 = redis::cmd("EXISTS")
        .arg("a")
        .arg("n")
        .arg("zzz")
        .arg("a")
        .query(&mut c)
        .expect("EXISTS");
    assert_eq!(exists, 3, "EXISTS counts repeated keys like Redis");
    let deleted: i64 = c.del(&["a", "zzz", "n"]).expect("DEL");
    assert_eq!(deleted, 2);
    let deleted: i64 = c.del("a").expect("DEL again");
    assert_eq!(deleted, 0);
    assert_eq!(c.get::<_, Option<String>>("a").expect("GET deleted"), None);
    let () = c.set("a", "back").expect("SET after DEL");
    assert_eq!(c.get::<_, String>("a").expect("GET"), "back");
}

#[test]
fn multi_key_and_keyspace_commands() {
    let (_dir, node) = node();
    let mut c = node.connection();
    let () = c
        .mset(&[("k1", "v1"), ("k2", "v2"), ("k3", "v3")])
        .expect("MSET");
    let values: Vec<Option<String>> = c.mget(&["k1", "missing", "k3", "k2"]).expect("MGET");
    assert_eq!(
        values,
        vec![
            Some("v1".into()),
            None,
            Some("v3".into()),
            Some("v2".into())
        ]
    );
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(size, 3);
    let () = c.set("other", "x").expect("SET");
    let mut keys: Vec<String> = c.scan_match("k*").expect("SCAN MATCH").collect();
    keys.sort();
    assert_eq!(keys, vec!["k1", "k2", "k3"]);
    let all: Vec<String> = c.scan().expect("SCAN").collect();
    assert_eq!(all.len(), 4);
    let error = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("a*b")
        .query::<Value>(&mut c)
        .expect_err("glob refused");
    assert!(error.to_string().contains("prefix"), "{error}");
    let error = redis::cmd("MSET")
        .arg("a")
        .query::<()>(&mut c)
        .expect_err("odd MSET");
    assert!(
        error.to_string().contains("wrong number of arguments"),
        "{error}"
    );
}

#[test]
fn errors_and_pipelining_and_quit() {
    let (_dir, node) = node();
    let mut c = node.connection();
    let error = redis::cmd("FLUSHALL")
        .query::<()>(&mut c)
        .expect_err("unknown");
    assert!(
        error.to_string().contains("unknown command 'FLUSHALL'"),
        "{error}"
    );
    let error = redis::cmd("GET").query::<()>(&mut c).expect_err("arity");
    assert!(
        error
            .to_string()
            .contains("wrong number of arguments for 'get'"),
        "{error}"
    );
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(format!("p{i}"), i).ignore();
    }
    pipe.get("p7").get("p199").cmd("PING");
    let (seven, last, pong): (i64, i64, String) = pipe.query(&mut c).expect("pipeline");
    assert_eq!((seven, last, pong.as_str()), (7, 199, "PONG"));
    let quit: RedisResult<String> = redis::cmd("QUIT").query(&mut c);
    assert_eq!(quit.expect("QUIT"), "OK");
    assert!(
        redis::cmd("PING").query::<String>(&mut c).is_err(),
        "the connection is closed after QUIT"
    );
}
