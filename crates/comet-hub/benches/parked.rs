//! Releasing parked long polls: N subscriptions parked on one channel, one
//! publish that catches them all. The time is the publish's, from the
//! append to the last poll handed over (to a catch that does nothing, so
//! what is measured is the hub's own work per parked poll, which runs in
//! the store's commit and in the publisher's hand-over loop).
//!
//! Run: `cargo bench -p comet-hub --bench parked`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_hub::{BatchLimit, Catch, Hub, HubConfig, Start};
use comet_protocol::{ChannelList, ChannelName, Data, EventType, Message};
use comet_store::{MemoryStore, StoreOptions};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A catch that only counts, standing in for a socket write.
struct Counted;

impl Catch for Counted {
    fn wake(&self) {}
    fn deliver(&self, message: &Arc<Message>) {
        std::hint::black_box(message.seq());
    }
}

async fn release(polls: usize) -> Duration {
    let hub = Hub::new(
        Arc::new(MemoryStore::new(StoreOptions::default())),
        HubConfig::default(),
    );
    let list = ChannelList::parse("bench", 1).unwrap();
    let mut parked = Vec::with_capacity(polls);
    for _ in 0..polls {
        let mut sub = hub.subscribe(&list, Start::Now).await.unwrap();
        assert!(
            sub.ready_batch(BatchLimit::messages(1))
                .await
                .unwrap()
                .is_empty()
        );
        let park = sub.park(Arc::new(Counted)).expect("parked");
        parked.push((sub, park));
    }
    let started = Instant::now();
    hub.publish(
        &ChannelName::new("bench").unwrap(),
        EventType::message(),
        Data::from("x".to_string()),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert!(parked.iter().all(|(_, park)| park.caught().is_some()));
    elapsed
}

fn parked(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("release_parked_polls");
    for polls in [1_000, 10_000] {
        group.throughput(Throughput::Elements(polls as u64));
        group.bench_with_input(BenchmarkId::from_parameter(polls), &polls, |b, &polls| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| runtime.block_on(release(polls)))
                    .sum()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, parked);
criterion_main!(benches);
