//! SSE and NDJSON framing cost per message, by data size and shape.
//!
//! Run: `cargo bench -p comet-protocol --bench sse_framing`.

use std::hint::black_box;

use comet_protocol::{ChannelName, Data, Epoch, EventType, Message, Seq, json, sse};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn message(data: String) -> Message {
    Message::new(
        Epoch::new("k3x9q2mf").unwrap(),
        Seq(123_456),
        ChannelName::new("news").unwrap(),
        EventType::new("update").unwrap(),
        Data::from(data),
        0,
    )
}

fn framing(c: &mut Criterion) {
    let shapes = [
        (
            "json_64B",
            r#"{"user":"ada","text":"hello, world","n":42}"#.to_string(),
        ),
        ("text_1KiB", "x".repeat(1024)),
        ("lines_1KiB", "line of text\n".repeat(79)),
        ("text_64KiB", "y".repeat(64 * 1024)),
    ];
    let mut group = c.benchmark_group("frame");
    for (name, data) in shapes {
        group.throughput(Throughput::Bytes(data.len() as u64));
        let msg = message(data);
        group.bench_with_input(BenchmarkId::new("sse", name), &msg, |b, m| {
            b.iter(|| sse::encode_message(black_box(m)))
        });
        group.bench_with_input(BenchmarkId::new("ndjson", name), &msg, |b, m| {
            b.iter(|| json::encode_message_line(black_box(m)))
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
