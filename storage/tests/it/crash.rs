//! Crash test: a child process (this test binary re-invoked with `STARLING_CRASH_DIR`) writes
//! with sync acks and is SIGKILLed at random moments, repeatedly; after each kill the engine
//! must hold every acknowledged write with at least its latest acknowledged version.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use starling_storage::{Durability, Engine, Entry, Version};

use crate::common::{run, small_options, tempdir};

const CHILD_ENV: &str = "STARLING_CRASH_DIR";
const WRITERS: u64 = 8;
const KEYS_PER_WRITER: u64 = 40;

/// The child side: only active when re-invoked by `acknowledged_writes_survive_sigkill`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run(move || async move {
        let mut options = small_options(std::path::Path::new(&dir));
        options.durability = Durability::Sync;
        options.memtable_bytes_max = 32 << 10;
        let engine = Rc::new(Engine::open(options).await.expect("child open"));
        let start = engine.hlc_max() + 1;
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let engine = Rc::clone(&engine);
                glommio::spawn_local(async move {
                    for i in 0u64.. {
                        let key = format!("w{writer}-k{}", i % KEYS_PER_WRITER);
                        let hlc = start + i * WRITERS + writer;
                        let entry = Entry {
                            key: key.clone().into_bytes(),
                            value: Some(vec![b'v'; 64]),
                            version: Version { hlc, node: 1 },
                        };
                        engine.apply(vec![entry]).await.expect("child apply");
                        println!("ack {key} {hlc}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempdir();
    let seed = std::env::var("STARLING_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("crash test seed {seed} (replay with STARLING_CRASH_SEED={seed})");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut acked: HashMap<String, u64> = HashMap::new();
    let child_log = dir.path().join("child.log");
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&child_log).expect("child log"))
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            })
        };
        // Kill at a random moment after the child started acknowledging writes.
        let started = std::time::Instant::now();
        let acked_once = || {
            lines
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.starts_with("ack "))
        };
        while !acked_once() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(10..300)));
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        let lines = lines.lock().expect("lines");
        let mut acks_this_round = 0;
        for line in lines.iter() {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ack") {
                continue;
            }
            let (Some(key), Some(hlc)) = (
                parts.next(),
                parts.next().and_then(|h| h.parse::<u64>().ok()),
            ) else {
                continue;
            };
            acks_this_round += 1;
            let slot = acked.entry(key.to_string()).or_default();
            *slot = (*slot).max(hlc);
        }
        assert!(
            acks_this_round > 0,
            "round {round}: the child acknowledged nothing (seed {seed}); its stderr: {}",
            std::fs::read_to_string(&child_log).unwrap_or_default()
        );
        eprintln!("round {round}: {acks_this_round} acknowledged writes before SIGKILL");
        verify(dir.path(), &acked, seed);
    }
}

fn verify(path: &std::path::Path, acked: &HashMap<String, u64>, seed: u64) {
    let path = path.to_path_buf();
    let acked = acked.clone();
    run(move || async move {
        let engine = Engine::open(small_options(&path))
            .await
            .expect("reopen after SIGKILL");
        for (key, hlc) in &acked {
            let stored = engine
                .get(key.as_bytes())
                .expect("get")
                .map(|e| e.version.hlc);
            assert!(
                stored.is_some_and(|s| s >= *hlc),
                "{key}: acknowledged hlc {hlc}, stored {stored:?} (seed {seed})"
            );
        }
        engine.close().await.expect("close");
    });
}
