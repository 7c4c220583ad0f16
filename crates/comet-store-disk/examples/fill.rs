//! Fills a data directory with N messages through the store's own API (256
//! concurrent appenders, so commits are grouped), for start-up measurements.
//!
//! `cargo run --release -p comet-store-disk --example fill -- DIR COUNT [CHANNELS]`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use comet_protocol::{ChannelName, Data, EventType};
use comet_store::{Retention, Store, StoreOptions};
use comet_store_disk::DiskStore;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("DIR"));
    let count: usize = args.next().expect("COUNT").parse().expect("a count");
    let channels: usize = args
        .next()
        .map_or(1000, |c| c.parse().expect("a channel count"));
    let options = StoreOptions {
        retention: Retention {
            max_messages: count,
            max_bytes: None,
            max_age: None,
            ..Retention::default()
        },
        ..StoreOptions::default()
    };
    let store = Arc::new(DiskStore::open(&dir, options).expect("open the store"));
    let started = Instant::now();
    let appenders = 256;
    let mut tasks = Vec::new();
    for appender in 0..appenders {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = appender;
            while n < count {
                let channel = ChannelName::new(&format!("channel-{}", n % channels)).unwrap();
                let data = Data::from(format!("{{\"n\":{n},\"text\":\"{}\"}}", "x".repeat(80)));
                store
                    .append(&channel, EventType::message(), data)
                    .await
                    .expect("append");
                n += appenders;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "{count} messages on {channels} channels in {:.2?} (head {})",
        started.elapsed(),
        store.head()
    );
}
