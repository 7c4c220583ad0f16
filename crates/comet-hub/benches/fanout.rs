//! Hub fan-out: one publisher, N subscribers on one channel, each reading
//! every message through `next_batch` on its own task. Reports the time to
//! deliver M messages to all N (criterion prints deliveries per second as
//! its throughput, "elements" being deliveries).
//!
//! Run: `cargo bench -p comet-hub --bench fanout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_hub::{BatchLimit, Hub, HubConfig, Item, Start};
use comet_protocol::{ChannelList, ChannelName, Data, EventType};
use comet_store::{MemoryStore, StoreOptions};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const MESSAGES: usize = 200;

async fn deliver(hub: &Hub, subscribers: usize) -> Duration {
    let list = ChannelList::parse("bench", 1).unwrap();
    let channel = ChannelName::new("bench").unwrap();
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut sub = hub.subscribe(&list, Start::Now).await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut received = 0;
            let mut bytes = 0;
            while received < MESSAGES {
                for item in sub.next_batch(BatchLimit::messages(64)).await.unwrap() {
                    if let Item::Message(message) = item {
                        // Touch the shared frame as a transport would.
                        bytes += message.sse_frame().len();
                        received += 1;
                    }
                }
            }
            bytes
        }));
    }
    let started = Instant::now();
    for i in 0..MESSAGES {
        hub.publish(
            &channel,
            EventType::message(),
            Data::from(format!("{{\"n\":{i}}}")),
        )
        .await
        .unwrap();
    }
    for reader in readers {
        std::hint::black_box(reader.await.unwrap());
    }
    started.elapsed()
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("hub_fanout");
    group.sample_size(10);
    for subscribers in [1, 100, 1_000, 10_000] {
        group.throughput(Throughput::Elements((subscribers * MESSAGES) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, &subscribers| {
                b.to_async(&runtime).iter_custom(|iterations| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let hub = Hub::new(
                            Arc::new(MemoryStore::new(StoreOptions::default())),
                            HubConfig::default(),
                        );
                        total += deliver(&hub, subscribers).await;
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
