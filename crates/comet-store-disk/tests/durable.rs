//! What only a durable store must do: keep history across restarts, recover
//! from a crash image with a torn log tail, bound and reclaim its disk
//! space, refuse directories that are not its own, and admit one server
//! per directory.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use comet_protocol::{ChannelName, Data, EventType, IdempotencyKey, Seq};
use comet_store::{Appended, Draft, Retention, Store, StoreOptions};
use comet_store_disk::{DiskOptions, DiskStore, OpenError};

/// A fresh data directory path for the test `name`.
fn fresh_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("durable-{name}"))
}

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

/// A draft of `data` to channel `name` under idempotency key `key`.
fn keyed(name: &str, key: &str, data: &str) -> Draft {
    Draft {
        idempotency_key: Some(IdempotencyKey::new(key).unwrap()),
        ..Draft::new(
            channel(name),
            EventType::message(),
            Data::from(data.to_string()),
        )
    }
}

async fn append(store: &DiskStore, name: &str, data: &str) -> Seq {
    store
        .append(
            &channel(name),
            EventType::message(),
            Data::from(data.to_string()),
        )
        .await
        .expect("append")
        .seq()
}

async fn all(store: &DiskStore, name: &str) -> Vec<String> {
    store
        .read(
            &channel(name),
            Seq::ZERO,
            Seq(u64::MAX),
            comet_store::ReadLimit::messages(1_000_000),
        )
        .await
        .expect("read")
        .messages
        .iter()
        .map(|m| m.data().as_str().to_string())
        .collect()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The files that hold data: the database and its log, not the lock or
/// SQLite's shared-memory index (a cache any reader may rebuild).
fn data_files(files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    files
        .into_iter()
        .filter(|(name, _)| name != "LOCK" && !name.ends_with("-shm"))
        .collect()
}

/// Copies the database files of a store that is still open: what the disk
/// holds at this moment, as a crash would leave it.
fn crash_image(from: &Path, name: &str) -> PathBuf {
    let to = fresh_dir(name);
    std::fs::create_dir_all(&to).unwrap();
    for file in ["history.db", "history.db-wal", "history.journal"] {
        if from.join(file).exists() {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
    to
}

#[tokio::test]
async fn a_reopened_store_continues_the_same_history() {
    let dir = fresh_dir("reopen");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let epoch = store.epoch();
    let mut last = Seq::ZERO;
    for i in 0..50 {
        last = append(&store, if i % 2 == 0 { "a" } else { "b" }, &i.to_string()).await;
    }
    drop(store);

    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(store.epoch(), epoch, "same history, same epoch");
    assert_eq!(store.head(), last);
    let a = all(&store, "a").await;
    assert_eq!(a.len(), 25);
    assert_eq!(a[0], "0");
    let next = append(&store, "a", "after").await;
    assert_eq!(next, last.checked_next().unwrap(), "the sequence continues");
    let summary = store.summary(&channel("b")).await.unwrap().unwrap();
    assert_eq!(summary.retained, 25);
}

#[tokio::test]
async fn a_crash_image_with_a_torn_log_tail_keeps_every_committed_message() {
    let dir = fresh_dir("torn");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..300 {
        append(&store, "a", &format!("m{i}")).await;
        acknowledged.push(format!("m{i}"));
    }
    let image = crash_image(&dir, "torn-image");
    drop(store);

    // A write cut short: half a frame of garbage after the last commit.
    let wal = image.join("history.db-wal");
    assert!(wal.exists(), "the log holds the recent commits");
    let mut torn = std::fs::read(&wal).unwrap();
    torn.extend(std::iter::repeat_n(0xA5u8, 2000));
    std::fs::write(&wal, torn).unwrap();

    let recovered = DiskStore::open(&image, StoreOptions::default()).unwrap();
    assert_eq!(all(&recovered, "a").await, acknowledged);
    let next = append(&recovered, "a", "after recovery").await;
    assert_eq!(next, Seq(301));
    recovered.check_health().await.unwrap();
}

#[tokio::test]
async fn a_crash_image_with_a_damaged_database_is_refused_untouched() {
    let dir = fresh_dir("damaged");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    for i in 0..2000 {
        append(&store, &format!("c{}", i % 7), &"x".repeat(200)).await;
    }
    drop(store);
    // Reopen (now marked open), and take the image while it is open.
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let image = crash_image(&dir, "damaged-image");
    drop(store);
    let database = image.join("history.db");
    let mut bytes = std::fs::read(&database).unwrap();
    let middle = bytes.len() / 2 / 4096 * 4096;
    for byte in &mut bytes[middle..middle + 4096] {
        *byte = 0x5A;
    }
    std::fs::write(&database, &bytes).unwrap();
    let before = file_bytes(&image);

    let error = DiskStore::open(&image, StoreOptions::default())
        .err()
        .expect("a damaged database is refused");
    assert!(matches!(error, OpenError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("left untouched"), "{error}");
    assert!(
        data_files(before) == data_files(file_bytes(&image)),
        "the damaged files were not modified"
    );
}

#[tokio::test]
async fn the_total_byte_limit_bounds_the_directory_and_space_is_reclaimed() {
    let dir = fresh_dir("bounded");
    let options = StoreOptions {
        retention: Retention {
            max_messages: 100_000,
            max_bytes: Some(1 << 20),
            ..Retention::default()
        },
        ..StoreOptions::default()
    };
    let store = DiskStore::open(&dir, options).unwrap();
    let payload = "p".repeat(10_000);
    // 40 MB through a store limited to 1 MiB.
    for i in 0..4_000 {
        append(&store, &format!("c{}", i % 10), &payload).await;
    }
    store.enforce_retention().await.unwrap();
    let size = dir_size(&dir);
    eprintln!(
        "a store limited to 1 MiB holds {} KiB of files after 40 MB",
        size >> 10
    );
    assert!(
        size < 12 << 20,
        "40 MB went through a 1 MiB store; the directory holds {} KiB",
        size >> 10
    );
    let mut retained = 0;
    for c in 0..10 {
        retained += all(&store, &format!("c{c}")).await.len();
    }
    assert!(
        (90..=105).contains(&retained),
        "about 1 MiB of 10 kB messages is retained, not {retained}"
    );
    // The newest message of each channel is among them.
    assert_eq!(
        all(&store, "c9").await.last().map(String::len),
        Some(10_000)
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = fresh_dir("locked");
    let _first = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let error = DiskStore::open(&dir, StoreOptions::default())
        .err()
        .expect("the directory is taken");
    assert!(matches!(error, OpenError::Locked { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("in use by another process"), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
}

#[tokio::test]
async fn a_directory_of_other_files_is_refused_untouched() {
    let dir = fresh_dir("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "important").unwrap();
    let error = DiskStore::open(&dir, StoreOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(error, OpenError::NotOurs { .. }), "{error}");
    assert!(error.to_string().contains("notes.txt"));
    assert!(!dir.join("history.db").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "important"
    );
}

#[tokio::test]
async fn files_in_unknown_formats_are_refused_untouched() {
    // Not a database at all.
    let dir = fresh_dir("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("history.db"), vec![7u8; 10_000]).unwrap();
    let before = std::fs::read(dir.join("history.db")).unwrap();
    let error = DiskStore::open(&dir, StoreOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(error, OpenError::UnknownFormat { .. }), "{error}");
    assert_eq!(std::fs::read(dir.join("history.db")).unwrap(), before);

    // Somebody else's SQLite database.
    let dir = fresh_dir("other-sqlite");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let other = rusqlite_connection(&dir.join("history.db"));
        other
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(dir.join("history.db")).unwrap();
    let error = DiskStore::open(&dir, StoreOptions::default())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("not a Comet history"), "{error}");
    assert_eq!(std::fs::read(dir.join("history.db")).unwrap(), before);
}

#[tokio::test]
async fn a_newer_format_is_refused_untouched() {
    let dir = fresh_dir("newer");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    append(&store, "a", "x").await;
    drop(store);
    mark_format(&dir, 99);
    let before = file_bytes(&dir);
    let error = DiskStore::open(&dir, StoreOptions::default())
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.contains("newer Comet"), "{message}");
    assert!(message.contains("format 99"), "{message}");
    let after = file_bytes(&dir);
    let describe = |files: &Vec<(String, Vec<u8>)>| -> Vec<(String, usize)> {
        files.iter().map(|(n, b)| (n.clone(), b.len())).collect()
    };
    assert!(
        data_files(before.clone()) == data_files(after.clone()),
        "nothing was written: before {:?}, after {:?}",
        describe(&before),
        describe(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits_and_all_survive_a_reopen() {
    let dir = fresh_dir("group");
    let store = Arc::new(DiskStore::open(&dir, StoreOptions::default()).unwrap());
    let mut writers = Vec::new();
    for w in 0..32 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                append(&store, &format!("w{}", w % 4), &format!("{w}:{i}")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    drop(Arc::try_unwrap(store).ok().expect("the only reference"));
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let mut total = 0;
    for c in 0..4 {
        let datas = all(&store, &format!("w{c}")).await;
        for w in (c..32).step_by(4) {
            let mine: Vec<&String> = datas
                .iter()
                .filter(|d| d.starts_with(&format!("{w}:")))
                .collect();
            let expected: Vec<String> = (0..50).map(|i| format!("{w}:{i}")).collect();
            assert!(
                mine.iter()
                    .map(|s| s.as_str())
                    .eq(expected.iter().map(|s| s.as_str()))
            );
        }
        total += datas.len();
    }
    assert_eq!(total, 32 * 50);
}

/// Acknowledged groups SQLite has not committed yet are in the journal:
/// a crash image of a store that never committed holds all of them, and
/// opening it stores them again, keys and all.
#[tokio::test]
async fn a_crash_before_sqlite_commits_keeps_every_acknowledged_message() {
    let dir = fresh_dir("journal-only");
    let rarely = common::committing_rarely();
    let store = DiskStore::open_with(&dir, StoreOptions::default(), rarely.clone()).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        append(&store, if i % 3 == 0 { "b" } else { "a" }, &format!("m{i}")).await;
        acknowledged.push(format!("m{i}"));
    }
    let keyed = || keyed("a", "once", "k");
    store.append_batch(vec![keyed()]).await.unwrap();
    let image = crash_image(&dir, "journal-only-image");
    drop(store);
    let committed: i64 = rusqlite_connection(&image.join("history.db"))
        .query_row("SELECT count(*) FROM segments", [], |row| row.get(0))
        .unwrap();
    assert_eq!(committed, 0, "SQLite committed none of them");

    let recovered = DiskStore::open_with(&image, StoreOptions::default(), rarely).unwrap();
    let mut found = all(&recovered, "a").await;
    found.extend(all(&recovered, "b").await);
    let mut expected = acknowledged.clone();
    expected.push("k".to_string());
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(recovered.head(), Seq(201));
    let again = recovered.append_batch(vec![keyed()]).await.unwrap();
    assert!(matches!(again[0], Appended::Repeat(_)), "the key came back");
    let next = append(&recovered, "a", "after").await;
    assert_eq!(next, Seq(202));
    drop(recovered);
    let reopened = DiskStore::open(&image, StoreOptions::default()).unwrap();
    assert_eq!(all(&reopened, "b").await.len(), 67);
}

/// Reads racing the writer's commits (here after every group) pair each
/// SQLite snapshot with the tail that continues it: every read up to the
/// head holds every message once, in order, never a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_commits_see_every_message_once_in_order() {
    let dir = fresh_dir("racing");
    let always = DiskOptions {
        commit_every: std::time::Duration::ZERO,
        commit_when_idle: std::time::Duration::ZERO,
    };
    let options = StoreOptions {
        retention: Retention {
            max_messages: 100_000,
            ..Retention::default()
        },
        ..StoreOptions::default()
    };
    let store = Arc::new(DiskStore::open_with(&dir, options, always).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let store = store.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let head = store.head();
                let history = store
                    .read(
                        &channel("a"),
                        Seq::ZERO,
                        head,
                        comet_store::ReadLimit::messages(1_000_000),
                    )
                    .await
                    .unwrap();
                let seqs: Vec<u64> = history.messages.iter().map(|m| m.seq().0).collect();
                let in_order = seqs.iter().copied().eq(1..=head.0);
                assert!(
                    in_order,
                    "a read up to {head} gave {} messages, {:?} to {:?}",
                    seqs.len(),
                    seqs.first(),
                    seqs.last()
                );
                reads += 1;
            }
            reads
        }));
    }
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    append(&store, "a", &i.to_string()).await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    assert_eq!(store.head(), Seq(1200));
}

/// A data directory of format 4 (no journal) is upgraded in place when
/// opened: the journal is created and the history kept.
#[tokio::test]
async fn a_format_4_directory_is_upgraded_with_a_journal() {
    let dir = fresh_dir("format-4");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    append(&store, "a", "kept").await;
    drop(store);
    std::fs::remove_file(dir.join("history.journal")).unwrap();
    mark_format(&dir, 4);
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(all(&store, "a").await, ["kept"]);
    append(&store, "a", "more").await;
    drop(store);
    assert_eq!(format_version(&dir), 5);
    assert!(dir.join("history.journal").exists());
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(all(&store, "a").await, ["kept", "more"]);
}

fn rusqlite_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// Writes `version` as the format of the history in `dir`.
fn mark_format(dir: &Path, version: u32) {
    rusqlite_connection(&dir.join("history.db"))
        .execute_batch(&format!("PRAGMA user_version = {version};"))
        .unwrap();
}

/// Makes the store in `dir` look as a build of format `version` (1 to 3)
/// left it: each message in a row of its own in `messages`, and no tables
/// the format did not have yet. `messages` names each stored message by
/// its channel and data (event `message`), oldest first; they are given
/// the sequence numbers the store gave them.
fn downgrade(dir: &Path, version: i32, messages: &[(&str, &str)]) {
    let old = rusqlite_connection(&dir.join("history.db"));
    let published_at: i64 = old
        .query_row("SELECT max(published_at) FROM segments", [], |row| {
            row.get(0)
        })
        .unwrap();
    let mut steps = String::from(
        "DROP TABLE segments;
         CREATE TABLE messages (
             channel_id INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             event TEXT NOT NULL,
             data BLOB NOT NULL,
             published_at INTEGER NOT NULL,
             size INTEGER NOT NULL,
             PRIMARY KEY (channel_id, seq)) WITHOUT ROWID;
         CREATE INDEX messages_in_order ON messages (seq);",
    );
    if version < 3 {
        steps.push_str("DROP TABLE idempotency_keys;");
    }
    if version < 2 {
        steps.push_str("DROP INDEX channels_forgotten; DROP TABLE forgotten_marks;");
    }
    steps.push_str(&format!("PRAGMA user_version = {version};"));
    old.execute_batch(&steps).unwrap();
    for (seq, (name, data)) in messages.iter().enumerate() {
        let size = data.len() + "message".len() + name.len() + 64;
        old.execute(
            "INSERT INTO messages (channel_id, seq, event, data, published_at, size)
             SELECT id, ?2, 'message', CAST(?3 AS BLOB), ?4, ?5 FROM channels WHERE name = ?1",
            rusqlite::params![name, seq as i64 + 1, data, published_at, size as i64],
        )
        .unwrap();
    }
}

fn format_version(dir: &Path) -> i32 {
    rusqlite_connection(&dir.join("history.db"))
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

/// A data directory of format 1 (before forgotten channels had their
/// table and index) is upgraded in place when opened, history intact.
#[tokio::test]
async fn a_format_1_directory_is_upgraded_with_its_history() {
    let dir = fresh_dir("format-1");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    append(&store, "a", "kept").await;
    drop(store);
    downgrade(&dir, 1, &[("a", "kept")]);
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(all(&store, "a").await, ["kept"]);
    append(&store, "a", "more").await;
    drop(store);
    assert_eq!(format_version(&dir), 5);
    let marks: i64 = rusqlite_connection(&dir.join("history.db"))
        .query_row("SELECT count(*) FROM forgotten_marks", [], |row| row.get(0))
        .unwrap();
    assert_eq!(marks, 0);
}

/// A data directory of format 2 (before idempotency keys) is upgraded in
/// place when opened: history intact, keys remembered from then on.
#[tokio::test]
async fn a_format_2_directory_is_upgraded_and_remembers_keys() {
    let dir = fresh_dir("format-2");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    append(&store, "a", "kept").await;
    drop(store);
    downgrade(&dir, 2, &[("a", "kept")]);
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(all(&store, "a").await, ["kept"]);
    let draft = || keyed("a", "k", "x");
    let first = store.append_batch(vec![draft()]).await.unwrap();
    assert!(matches!(first[0], Appended::Stored(_)));
    drop(store);
    assert_eq!(format_version(&dir), 5);
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let again = store.append_batch(vec![draft()]).await.unwrap();
    assert!(
        matches!(again[0], Appended::Repeat(_)),
        "the key survived the restart"
    );
    assert_eq!(store.footprint().idempotency_keys, 1);
}

/// A data directory of format 3 (a row per message) is upgraded in place
/// when opened: each message moves into a segment of its own, history and
/// counts intact, and trimming goes on from there.
#[tokio::test]
async fn a_format_3_directory_is_upgraded_into_segments() {
    let dir = fresh_dir("format-3");
    let old = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4"), ("b", "5")];
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    for (name, data) in old {
        append(&store, name, data).await;
    }
    drop(store);
    downgrade(&dir, 3, &old);
    let options = StoreOptions {
        retention: Retention {
            max_messages: 4,
            max_bytes: None,
            max_age: None,
            ..Retention::default()
        },
        ..StoreOptions::default()
    };
    let store = DiskStore::open(&dir, options.clone()).unwrap();
    assert_eq!(format_version(&dir), 5);
    assert_eq!(all(&store, "a").await, ["1", "3", "4"]);
    assert_eq!(all(&store, "b").await, ["2", "5"]);
    assert_eq!(store.footprint().messages, 5);
    for data in ["6", "7", "8"] {
        append(&store, "a", data).await;
    }
    assert_eq!(all(&store, "a").await, ["4", "6", "7", "8"]);
    drop(store);
    let store = DiskStore::open(&dir, options).unwrap();
    assert_eq!(all(&store, "a").await, ["4", "6", "7", "8"]);
    assert_eq!(store.footprint().messages, 6);
    drop(store);
    let database = rusqlite_connection(&dir.join("history.db"));
    let count = |sql: &str| -> i64 { database.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM sqlite_master WHERE name = 'messages'"),
        0,
        "the old table is gone"
    );
    assert_eq!(
        count("SELECT count(*) FROM segments"),
        6,
        "the trimmed messages' segments are gone"
    );
    assert_eq!(
        count("PRAGMA freelist_count"),
        0,
        "the old table's pages were given back"
    );
}

/// Subscribers catching up on the same history from disk share one
/// decoded copy of each message (and so its encoded frames), instead of a
/// private copy each.
#[tokio::test]
async fn readers_of_the_same_history_share_decoded_messages() {
    let dir = fresh_dir("shared");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    for i in 0..10 {
        append(&store, "a", &i.to_string()).await;
    }
    let a = channel("a");
    let read = || {
        store.read(
            &a,
            Seq::ZERO,
            store.head(),
            comet_store::ReadLimit::messages(100),
        )
    };
    let first = read().await.unwrap();
    let second = read().await.unwrap();
    assert_eq!(first.messages.len(), 10);
    for (one, other) in first.messages.iter().zip(&second.messages) {
        assert!(
            Arc::ptr_eq(one, other),
            "message {} decoded twice",
            one.seq()
        );
    }
    drop(first);
    drop(second);
    // Nobody holds them any more: read again, decoded anew, still right.
    let third = read().await.unwrap();
    assert_eq!(third.messages.len(), 10);
}

/// A full channel is trimmed in batches: between trims it holds at most a
/// sixteenth of its count limit, and never more than 1,024 messages,
/// beyond the limit on disk; readers see exactly the limit.
#[tokio::test]
async fn a_full_channel_holds_a_bounded_batch_beyond_its_limit() {
    // A sixteenth of this limit is 2,048: the cap of 1,024 is what applies.
    let limit = 32_768;
    let dir = fresh_dir("slack");
    let options = StoreOptions {
        retention: Retention {
            max_messages: limit,
            ..Retention::default()
        },
        ..StoreOptions::default()
    };
    let store = DiskStore::open(&dir, options).unwrap();
    let mut most_held = 0;
    for batch in 0..80 {
        let drafts = (0..512)
            .map(|i| {
                Draft::new(
                    channel("a"),
                    EventType::message(),
                    Data::from(format!("{batch}-{i}")),
                )
            })
            .collect();
        store.append_batch(drafts).await.unwrap();
        most_held = most_held.max(store.footprint().messages);
    }
    let limit = limit as u64;
    assert!(
        most_held > limit,
        "a full channel is trimmed in batches, not at every commit: at most {most_held} held"
    );
    assert!(
        most_held <= limit + 1024,
        "a full channel held {} messages beyond its limit of {limit}",
        most_held - limit
    );
    let seen = all(&store, "a").await;
    assert_eq!(seen.len() as u64, limit);
    assert_eq!(seen.last().map(String::as_str), Some("79-511"));
}

/// A byte limit on a read loads only what fits (a reader behind a history
/// of large messages reads one at a time, not the whole count).
#[tokio::test]
async fn a_read_loads_no_more_than_its_byte_limit() {
    let dir = fresh_dir("bytes");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let big = "b".repeat(100_000);
    for _ in 0..20 {
        append(&store, "a", &big).await;
    }
    let history = store
        .read(
            &channel("a"),
            Seq::ZERO,
            store.head(),
            comet_store::ReadLimit {
                messages: 256,
                bytes: 250_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 2);
    assert!(history.truncated);
}

/// A history whose sequence reached the highest number SQLite holds
/// refuses further appends with a clear error, never a panic or a
/// wrapped-around id; a head beyond it is refused as corrupt.
#[tokio::test]
async fn an_exhausted_sequence_refuses_appends() {
    let dir = fresh_dir("exhausted");
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    append(&store, "a", "x").await;
    drop(store);
    {
        let edit = rusqlite_connection(&dir.join("history.db"));
        edit.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'head'",
            [(i64::MAX - 1).to_string()],
        )
        .unwrap();
    }
    let store = DiskStore::open(&dir, StoreOptions::default()).unwrap();
    let last = append(&store, "a", "the last").await;
    assert_eq!(last, Seq(i64::MAX as u64));
    let refused = store
        .append(
            &channel("a"),
            EventType::message(),
            Data::from("one too many".to_string()),
        )
        .await;
    assert!(
        matches!(refused, Err(comet_store::StoreError::SequenceExhausted)),
        "{refused:?}"
    );
    drop(store);
    {
        let edit = rusqlite_connection(&dir.join("history.db"));
        edit.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'head'",
            [u64::MAX.to_string()],
        )
        .unwrap();
    }
    let error = DiskStore::open(&dir, StoreOptions::default())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("no valid head"), "{error}");
}
