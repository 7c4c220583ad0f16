//! The durable store against the memory store as a model: through random
//! histories of batches, retention by count, bytes and age, every read,
//! backlog, summary and listing of the durable store must be what the
//! memory store answers. The durable store keeps a channel's messages of one
//! commit in one segment and may trim inside it; the memory store keeps
//! each message apart, so the two disagree wherever segment bookkeeping is
//! wrong.
//!
//! The histories come from a fixed-seed generator: a failure names its
//! seed and step, and runs the same again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use comet_protocol::{ChannelName, Data, EventType, Seq};
use comet_store::{
    Appended, Draft, History, ManualClock, MemoryStore, ReadLimit, Retention, Store, StoreOptions,
};
use comet_store_disk::{DiskOptions, DiskStore};

/// A small deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const CHANNELS: [&str; 3] = ["a", "b", "c"];

/// A read as compared: positions and contents, the gap, and whether more
/// remains.
fn seen(history: &History) -> (Vec<(Seq, String, String)>, Seq, bool) {
    let messages = history
        .messages
        .iter()
        .map(|message| {
            (
                message.seq(),
                message.event().as_str().to_string(),
                brief(message.data().as_str()),
            )
        })
        .collect();
    (messages, history.trimmed_upto, history.truncated)
}

/// Data as shown in a failure: where it came from, its length and a hash of
/// the whole, not its thousands of bytes.
fn brief(data: &str) -> String {
    let origin = data.split(':').next().unwrap_or_default();
    let hash = data.bytes().fold(0u64, |hash, byte| {
        hash.wrapping_mul(0x100_0000_01b3) ^ u64::from(byte)
    });
    format!("{origin} ({} bytes, {hash:016x})", data.len())
}

/// Data of `len` bytes that says where it came from.
fn data(step: usize, index: usize, len: usize) -> String {
    let mut text = format!("{step}.{index}:");
    while text.len() < len {
        text.push(char::from(b'a' + (text.len() % 26) as u8));
    }
    text
}

/// One random history of `steps` steps, the two stores compared after each;
/// the durable store commits SQLite as `disk` says (what it has not
/// committed, its readers find in its tail).
async fn compare_one_history(seed: u64, steps: usize, disk: DiskOptions) {
    let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // The count and the byte limits are tried apart: within one commit the
    // durable store applies the count limit to the whole group before the
    // byte limit, and may then remove fewer messages for bytes than the
    // memory store, which applies both after each message. Both keep
    // within both limits; they need not agree on which messages go.
    let (max_messages, max_bytes) = *random.pick(&[
        (3, None),
        (7, None),
        (40, None),
        (1_000, Some(3_000)),
        (1_000, Some(40_000)),
    ]);
    let retention = Retention {
        max_messages,
        max_bytes,
        max_age: *random.pick(&[None, Some(Duration::from_secs(10))]),
        ..Retention::default()
    };
    let clock = ManualClock::new(1_700_000_000_000);
    let options = StoreOptions {
        retention: retention.clone(),
        clock: Arc::new(clock.clone()),
        ..StoreOptions::default()
    };
    let model = MemoryStore::new(options.clone());
    let dir = common::fresh_dir("model");
    let context = |step: usize, what: &str| {
        format!("seed {seed}, step {step}, {what}, {retention:?}, {disk:?}")
    };
    let disk = DiskStore::open_with(&dir, options, disk.clone()).expect("open the durable store");

    for step in 0..steps {
        // A batch of one to six messages, mostly small, now and then one
        // large enough to close a segment.
        let count = 1 + random.below(6) as usize;
        let drafts: Vec<Draft> = (0..count)
            .map(|index| {
                let len = match random.below(20) {
                    0 => 30_000,
                    1..=3 => 1_000,
                    _ => random.below(200) as usize,
                };
                let event = if random.below(4) == 0 {
                    EventType::new("update").unwrap()
                } else {
                    EventType::message()
                };
                Draft::new(
                    ChannelName::new(CHANNELS[random.below(3) as usize]).unwrap(),
                    event,
                    Data::from(data(step, index, len)),
                )
            })
            .collect();
        let from_model = model
            .append_batch(drafts.clone())
            .await
            .expect("model append");
        let from_disk = disk.append_batch(drafts).await.expect("disk append");
        let seqs = |appended: &[Appended]| -> Vec<Option<Seq>> {
            appended
                .iter()
                .map(|outcome| match outcome {
                    Appended::Stored(message) => Some(message.seq()),
                    Appended::Repeat(_) => None,
                })
                .collect()
        };
        assert_eq!(
            seqs(&from_disk),
            seqs(&from_model),
            "{}",
            context(step, "append")
        );
        if random.below(3) == 0 {
            clock.advance(Duration::from_millis(random.below(4_000)));
        }
        if random.below(8) == 0 {
            model.enforce_retention().await.expect("model sweep");
            disk.enforce_retention().await.expect("disk sweep");
        }

        if retention.max_messages < 16 {
            // No slack for the count limit: the totals are exact too.
            let totals = |footprint: comet_store::Footprint| (footprint.messages, footprint.bytes);
            assert_eq!(
                totals(disk.footprint()),
                totals(model.footprint()),
                "{}",
                context(step, "footprint")
            );
        }
        let head = disk.head();
        assert_eq!(head, model.head(), "{}", context(step, "head"));
        for channel in CHANNELS {
            let name = ChannelName::new(channel).unwrap();
            let after = Seq(random.below(head.0 + 2));
            // With an age limit, a read reports the expired messages it
            // passes over (the durable store, before its sweep) or all of
            // the channel's (the memory store): they agree on reads up to
            // the head.
            let upto = if random.below(2) == 0 || retention.max_age.is_some() {
                head
            } else {
                Seq(random.below(head.0 + 1))
            };
            let limit = ReadLimit {
                messages: 1 + random.below(12) as usize,
                bytes: *random.pick(&[300, 2_000, 50_000, u64::MAX]),
            };
            let mut expected = model
                .read(&name, after, upto, limit)
                .await
                .expect("model read");
            let mut found = disk
                .read(&name, after, upto, limit)
                .await
                .expect("disk read");
            if retention.max_age.is_some() {
                // Expired messages at or before `after` are no gap for
                // this reader, whether a store reports them or not.
                for history in [&mut expected, &mut found] {
                    history.trimmed_upto = history.trimmed_upto.max(after);
                }
            }
            assert_eq!(
                seen(&found),
                seen(&expected),
                "{}",
                context(
                    step,
                    &format!("read {channel} after {after} upto {upto} {limit:?}")
                )
            );
            let count = random.below(9) as usize;
            assert_eq!(
                disk.backlog_start(&name, count, upto)
                    .await
                    .expect("disk backlog"),
                model
                    .backlog_start(&name, count, upto)
                    .await
                    .expect("model backlog"),
                "{}",
                context(
                    step,
                    &format!("backlog of {count} in {channel} upto {upto}")
                )
            );
            if retention.max_age.is_some() {
                // Summaries and listings of the durable store count
                // messages past their age until the sweep removes them;
                // the memory store's summary removes them first.
                continue;
            }
            let summary = |summary: Option<comet_store::ChannelSummary>| {
                summary.map(|summary| (summary.last_id.seq, summary.retained))
            };
            assert_eq!(
                summary(disk.summary(&name).await.expect("disk summary")),
                summary(model.summary(&name).await.expect("model summary")),
                "{}",
                context(step, &format!("summary of {channel}"))
            );
        }
        if retention.max_age.is_some() {
            continue;
        }
        let listing = |channels: Vec<(ChannelName, comet_store::ChannelSummary)>| {
            channels
                .into_iter()
                .map(|(name, summary)| (name.to_string(), summary.last_id.seq, summary.retained))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            listing(disk.channels(None, 10).await.expect("disk listing")),
            listing(model.channels(None, 10).await.expect("model listing")),
            "{}",
            context(step, "listing")
        );
    }
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_store_answers_as_the_memory_store_through_random_histories() {
    for seed in 1..=16 {
        compare_one_history(seed, 120, DiskOptions::default()).await;
    }
}

/// The same, with SQLite committing only when a sweep or the close asks
/// (or the journal fills): reads, backlogs, summaries and listings go
/// through the tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_store_answers_as_the_memory_store_from_its_tail() {
    for seed in 1..=16 {
        compare_one_history(seed, 120, common::committing_rarely()).await;
    }
}
