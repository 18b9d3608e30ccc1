//! Disk full: on a small loop-mounted ext4 image (the test runs as root and mounts it under the
//! target dir), writes in flight fail with `DiskFull`, reads keep working, and once space is
//! freed the same engine accepts writes again; everything acknowledged survives a reopen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use starling_storage::{Engine, Error};

use crate::common::{put, run, small_options};

/// Unmounts and deletes the image when dropped, so a failing test cleans up.
struct LoopMount {
    mount_point: PathBuf,
    image: PathBuf,
}

impl LoopMount {
    fn new(root: &Path, megabytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
        let image = root.join("disk.img");
        let mount_point = root.join("mnt");
        std::fs::create_dir_all(&mount_point).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(megabytes << 20).map_err(|e| e.to_string())?;
        let sh = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| e.to_string())?;
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        };
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount_point))?;
        Ok(LoopMount { mount_point, image })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Fills the filesystem; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![1u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    filler
}

#[test]
fn disk_full_fails_writes_in_flight_and_engine_recovers() {
    let root =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("enospc-{}", std::process::id()));
    let mount = match LoopMount::new(&root, 24) {
        Ok(mount) => mount,
        Err(e) => panic!("this test needs root to loop-mount an ext4 image: {e}"),
    };
    let dir = mount.mount_point.join("data");
    let path = dir.clone();
    run(move || async move {
        let mut options = small_options(&path);
        options.memtable_bytes_max = 256 << 10;
        options.wal_segment_bytes = 2 << 20;
        let engine = Engine::open(options.clone()).await.expect("open");
        for i in 0..100u64 {
            engine
                .apply(vec![put(
                    format!("before{i:03}").as_bytes(),
                    &[1; 200],
                    i + 1,
                )])
                .await
                .expect("apply");
        }
        let filler = fill(&path);
        let mut disk_full = 0;
        let mut acked_after = Vec::new();
        for i in 0..3000u64 {
            let key = format!("during{i:04}");
            match engine
                .apply(vec![put(key.as_bytes(), &[2; 200], 1000 + i)])
                .await
            {
                Ok(_) => acked_after.push(key),
                Err(Error::DiskFull { .. }) => {
                    disk_full += 1;
                    if disk_full > 5 {
                        break;
                    }
                }
                Err(other) => panic!("expected DiskFull, got {other}"),
            }
        }
        assert!(disk_full > 0, "the disk never filled up");
        assert!(
            engine
                .get(b"before050")
                .expect("reads work while full")
                .is_some()
        );
        std::fs::remove_file(&filler).expect("free space");
        let mut recovered = false;
        for attempt in 0..20u64 {
            let key = format!("after{attempt}");
            if engine
                .apply(vec![put(key.as_bytes(), b"v", 10_000 + attempt)])
                .await
                .is_ok()
            {
                acked_after.push(key);
                recovered = true;
                break;
            }
        }
        assert!(recovered, "the engine accepts writes once space is freed");
        engine.flush().await.expect("flush after space was freed");
        engine.close().await.expect("close");
        let engine = Engine::open(options).await.expect("reopen");
        for key in acked_after
            .iter()
            .chain(std::iter::once(&"before099".to_string()))
        {
            assert!(
                engine.get(key.as_bytes()).expect("get").is_some(),
                "{key} was acknowledged"
            );
        }
        engine.close().await.expect("close");
    });
    drop(mount);
    let _ = std::fs::remove_dir_all(&root);
}
