//! A disk that fills up under the durable store: every acknowledged
//! message stays, readable and in order; appends fail with a clear error
//! while SQLite cannot commit, and no sequence number is given twice; once
//! space is back the store recovers by itself, and a restart finds the
//! same history.
//!
//! The disk is a small tmpfs mounted for the test, filled with a file of
//! zeros: a real file system saying "no space left". Mounting needs root;
//! without it the test says so and stops, and fails if run by CI.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use comet_protocol::{ChannelName, Data, EventType, Seq};
use comet_store::{ReadLimit, Store, StoreError, StoreOptions};
use comet_store_disk::DiskStore;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Mounted {
    path: PathBuf,
}

impl Mounted {
    fn tmpfs(name: &str, size: &str) -> Option<Self> {
        let path = common::fresh_dir(name);
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { path })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Writes zeros into `dir` until the file system is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // What is left is less than a chunk: take it too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

fn channel() -> ChannelName {
    ChannelName::new("full").unwrap()
}

async fn append(store: &DiskStore, data: &str) -> Result<Seq, StoreError> {
    store
        .append(
            &channel(),
            EventType::message(),
            Data::from(data.to_string()),
        )
        .await
        .map(|appended| appended.seq())
}

async fn all(store: &DiskStore) -> Vec<(Seq, String)> {
    store
        .read(
            &channel(),
            Seq::ZERO,
            Seq(u64::MAX),
            ReadLimit::messages(1_000_000),
        )
        .await
        .expect("read")
        .messages
        .iter()
        .map(|m| (m.seq(), m.data().as_str().to_string()))
        .collect()
}

#[tokio::test]
async fn a_full_disk_loses_nothing_acknowledged_and_the_store_recovers_once_space_is_back() {
    let Some(disk) = Mounted::tmpfs("full-disk", "8m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test mounts a tmpfs, which needs root"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = disk.path.join("data");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let data = format!("before {i}");
        acknowledged.push((append(&store, &data).await.unwrap(), data));
    }
    let filler = fill(&disk.path);

    // Groups go to the journal, whose space is set aside, and are
    // acknowledged; SQLite's commit (here before a sweep) finds no space,
    // and from then on appends and sweeps are refused.
    for i in 0..20 {
        let data = format!("while full {i}");
        acknowledged.push((append(&store, &data).await.unwrap(), data));
    }
    let refused = store.enforce_retention().await.unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
    assert!(
        store.check_health().await.is_err(),
        "the store says it fails"
    );
    assert!(append(&store, "refused again").await.is_err());
    assert_eq!(
        all(&store).await,
        acknowledged,
        "every acknowledged message is read back while the disk is full"
    );

    std::fs::remove_file(filler).unwrap();
    let next = append(&store, "after")
        .await
        .expect("appends once space is back");
    let last = acknowledged.last().unwrap().0;
    assert_eq!(next, last.checked_next().unwrap(), "no number given twice");
    acknowledged.push((next, "after".to_string()));
    assert_eq!(all(&store).await, acknowledged);
    store.check_health().await.expect("healthy again");
    drop(store);

    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(
        all(&store).await,
        acknowledged,
        "the same history after a restart"
    );
    drop(store);
}
