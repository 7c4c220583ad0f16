//! Comet's durable-store workload against three embedded engines: redb
//! (copy-on-write B-tree), fjall (LSM tree) and SQLite (B-tree + WAL, via
//! rusqlite with the bundled library).
//!
//! The workload: messages of ~100 bytes on 100 channels, appended in
//! fsync'd commits (one commit per group of concurrent publishes), read back
//! by range "after position P" on one channel, and trimmed from the head of
//! the global order. Printed figures: appends/s and commit latency for
//! groups of 1 and 64, bulk load of 1,000,000 messages, reopen time with
//! 1,000,000 messages, range reads of 100 messages, head trim of 500,000.
//!
//! Usage: `store-engines DIR [ENGINE…]`; `crash ENGINE DIR` then
//! `reopen ENGINE DIR` for the open after an abort.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHANNELS: u32 = 100;
const PAYLOAD: usize = 100;

trait Engine {
    fn name(&self) -> &'static str;
    /// Stores `(channel, seq)` rows durably in one commit.
    fn append(&mut self, rows: &[(u32, u64)], payload: &[u8]);
    /// Counts up to `limit` messages of `channel` after `after`.
    fn read_after(&mut self, channel: u32, after: u64, limit: usize) -> usize;
    /// Removes every message with `seq <= upto`, durably.
    fn trim(&mut self, upto: u64);
}

use redb::{ReadableDatabase, ReadableTable};

fn key(channel: u32, seq: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&channel.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

// ---------------------------------------------------------------- redb
const MESSAGES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("messages");
const ORDER: redb::TableDefinition<u64, u32> = redb::TableDefinition::new("order");

struct Redb(redb::Database);

impl Redb {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("redb.db")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(MESSAGES).unwrap();
        txn.open_table(ORDER).unwrap();
        txn.commit().unwrap();
        Self(db)
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn append(&mut self, rows: &[(u32, u64)], payload: &[u8]) {
        let txn = self.0.begin_write().unwrap();
        {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut order = txn.open_table(ORDER).unwrap();
            for (channel, seq) in rows {
                messages.insert(&key(*channel, *seq)[..], payload).unwrap();
                order.insert(*seq, *channel).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn read_after(&mut self, channel: u32, after: u64, limit: usize) -> usize {
        let txn = self.0.begin_read().unwrap();
        let table = txn.open_table(MESSAGES).unwrap();
        let start = key(channel, after + 1);
        let end = key(channel, u64::MAX);
        table
            .range(&start[..]..&end[..])
            .unwrap()
            .take(limit)
            .map(|entry| entry.unwrap().1.value().len())
            .filter(|len| *len > 0)
            .count()
    }
    fn trim(&mut self, upto: u64) {
        let txn = self.0.begin_write().unwrap();
        {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut order = txn.open_table(ORDER).unwrap();
            let doomed: Vec<(u64, u32)> = order
                .range(..=upto)
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value(), v.value())
                })
                .collect();
            for (seq, channel) in doomed {
                messages.remove(&key(channel, seq)[..]).unwrap();
                order.remove(seq).unwrap();
            }
        }
        txn.commit().unwrap();
    }
}

// ---------------------------------------------------------------- fjall
struct Fjall {
    db: fjall::Database,
    messages: fjall::Keyspace,
    order: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
        let messages = db
            .keyspace("messages", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let order = db
            .keyspace("order", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Self {
            db,
            messages,
            order,
        }
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn append(&mut self, rows: &[(u32, u64)], payload: &[u8]) {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (channel, seq) in rows {
            batch.insert(&self.messages, key(*channel, *seq).to_vec(), payload.to_vec());
            batch.insert(&self.order, seq.to_be_bytes().to_vec(), channel.to_be_bytes().to_vec());
        }
        batch.commit().unwrap();
    }
    fn read_after(&mut self, channel: u32, after: u64, limit: usize) -> usize {
        let start = key(channel, after + 1).to_vec();
        let end = key(channel, u64::MAX).to_vec();
        self.messages
            .range(start..end)
            .take(limit)
            .map(|g| g.into_inner().unwrap().1.len())
            .filter(|len| *len > 0)
            .count()
    }
    fn trim(&mut self, upto: u64) {
        let doomed: Vec<(Vec<u8>, Vec<u8>)> = self
            .order
            .range(..=upto.to_be_bytes().to_vec())
            .map(|g| {
                let (k, v) = g.into_inner().unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (seq, channel) in doomed {
            let seq = u64::from_be_bytes(seq.as_slice().try_into().unwrap());
            let channel = u32::from_be_bytes(channel.as_slice().try_into().unwrap());
            batch.remove(&self.messages, key(channel, seq).to_vec());
            batch.remove(&self.order, seq.to_be_bytes().to_vec());
        }
        batch.commit().unwrap();
    }
}

// ---------------------------------------------------------------- SQLite
struct Sqlite(rusqlite::Connection);

impl Sqlite {
    fn open(dir: &Path) -> Self {
        let conn = rusqlite::Connection::open(dir.join("sqlite.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS messages(
               channel INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
               PRIMARY KEY (channel, seq)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS by_seq ON messages(seq);",
        )
        .unwrap();
        Self(conn)
    }
}

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn append(&mut self, rows: &[(u32, u64)], payload: &[u8]) {
        let txn = self.0.transaction().unwrap();
        {
            let mut insert = txn
                .prepare_cached("INSERT INTO messages(seq, channel, data) VALUES (?1, ?2, ?3)")
                .unwrap();
            for (channel, seq) in rows {
                insert.execute((*seq as i64, *channel, payload)).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn read_after(&mut self, channel: u32, after: u64, limit: usize) -> usize {
        let mut select = self
            .0
            .prepare_cached(
                "SELECT data FROM messages WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .unwrap();
        let rows = select
            .query_map((channel, after as i64, limit as i64), |row| {
                row.get_ref(0).map(|v| v.as_blob().map(|b| b.len()).unwrap_or(0))
            })
            .unwrap();
        rows.map(|r| r.unwrap()).filter(|len| *len > 0).count()
    }
    fn trim(&mut self, upto: u64) {
        self.0
            .execute("DELETE FROM messages WHERE seq <= ?1", [upto as i64])
            .unwrap();
    }
}

// ---------------------------------------------------------------- harness
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn commits(engine: &mut dyn Engine, group: usize, total: usize, next_seq: &mut u64) {
    let payload = vec![b'x'; PAYLOAD];
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let rows: Vec<(u32, u64)> = (0..group)
            .map(|_| {
                *next_seq += 1;
                ((*next_seq % CHANNELS as u64) as u32, *next_seq)
            })
            .collect();
        let t = Instant::now();
        engine.append(&rows, &payload);
        latencies.push(t.elapsed());
        written += group;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "{:<7} commits of {group:>4}: {:>9.0} appends/s, commit p50 {:>7.2?} p99 {:>7.2?}",
        engine.name(),
        written as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}

fn measure(dir: &Path, name: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut engine = open_engine(name, dir);
    let mut seq = 0;
    commits(&mut *engine, 1, 2_000, &mut seq);
    commits(&mut *engine, 64, 100_000, &mut seq);
    let bulk = Instant::now();
    commits(&mut *engine, 1024, 1_000_000 - seq as usize, &mut seq);
    let bulk = bulk.elapsed();
    drop(engine);

    let reopen = Instant::now();
    let mut engine = open_engine(name, dir);
    let first = engine.read_after(1, 0, 1);
    let reopen = reopen.elapsed();
    assert_eq!(first, 1);

    let mut state = 0x9e3779b97f4a7c15u64;
    let reads = Instant::now();
    let mut found = 0;
    for _ in 0..5_000 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let channel = (state >> 40) as u32 % CHANNELS;
        let after = (state >> 20) % (seq - 20_000);
        found += engine.read_after(channel, after, 100);
    }
    let reads = reads.elapsed() / 5_000;
    assert!(found > 0);

    let trim = Instant::now();
    engine.trim(500_000);
    let trim = trim.elapsed();
    let size: u64 = walk(dir);
    println!(
        "{:<7} bulk 1M in {bulk:.2?}; reopen {reopen:.2?}; read 100 after P {reads:.2?}; trim 500k {trim:.2?}; files {} MiB",
        engine.name(),
        size >> 20
    );
}

fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() { walk(&e.path()) } else { meta.len() }
        })
        .sum()
}

fn open_engine(name: &str, dir: &Path) -> Box<dyn Engine> {
    match name {
        "redb" => Box::new(Redb::open(dir)),
        "fjall" => Box::new(Fjall::open(dir)),
        "sqlite" => Box::new(Sqlite::open(dir)),
        other => panic!("unknown engine {other}"),
    }
}

/// `crash ENGINE DIR`: writes 1,000,000 messages, then aborts without
/// closing anything (as `kill -9` would). `reopen ENGINE DIR`: times the
/// open that follows such a crash, and checks every message is there.
fn crash_or_reopen(mode: &str, name: &str, dir: &Path) {
    if mode == "crash" {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let mut engine = open_engine(name, dir);
        let mut seq = 0;
        commits(&mut *engine, 1024, 1_000_000, &mut seq);
        std::process::abort();
    }
    let started = Instant::now();
    let mut engine = open_engine(name, dir);
    let first = engine.read_after(1, 0, 1);
    let opened = started.elapsed();
    let last = engine.read_after((1_000_000 % CHANNELS as u64) as u32, 999_000, 100);
    println!("{name:<7} reopen after a crash with 1M messages: {opened:.2?} (first {first}, tail {last})");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, engine, dir] if mode == "crash" || mode == "reopen" => {
            crash_or_reopen(mode, engine, Path::new(dir))
        }
        [dir, engines @ ..] => {
            let all = ["redb", "fjall", "sqlite"].map(String::from);
            let engines = if engines.is_empty() { &all[..] } else { engines };
            for name in engines {
                measure(&PathBuf::from(dir).join(name), name);
            }
        }
        [] => eprintln!("usage: store-engines DIR [ENGINE…] | crash ENGINE DIR | reopen ENGINE DIR"),
    }
}
