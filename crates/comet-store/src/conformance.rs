//! The behaviour every [`Store`] must have, as tests any backend runs.
//!
//! A backend's test file calls [`store_conformance!`](crate::store_conformance)
//! with a function that builds a fresh, empty store from [`StoreOptions`];
//! the macro expands to one `#[tokio::test]` per check below, so a failure
//! names the behaviour that broke.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_protocol::{ChannelName, Data, EventType, IdempotencyKey, Message, Seq};

use crate::{
    AppendError, Appended, CommitListener, Draft, History, IdempotencyOptions, ManualClock,
    Original, ReadLimit, Retention, Store, StoreOptions,
};

/// Expands to one test per conformance check for the store built by
/// `$factory`, an `async fn(StoreOptions) -> Arc<dyn Store>` (or a closure
/// returning such a future).
#[macro_export]
macro_rules! store_conformance {
    ($factory:expr) => {
        $crate::store_conformance!(@tests $factory;
            sequence_is_store_wide_and_increasing,
            messages_keep_their_content,
            read_returns_exactly_the_later_messages,
            read_respects_limit_and_upto,
            read_respects_a_byte_limit_but_returns_one_message_at_least,
            unknown_channels_read_empty,
            backlog_start_is_just_before_the_newest,
            retention_by_count_trims_and_marks_the_gap,
            retention_by_count_is_exact_at_every_step_for_a_larger_limit,
            retention_by_age_trims_on_access,
            retention_by_age_is_enforced_without_access,
            a_large_age_sweep_removes_everything_expired_in_steps,
            retention_by_total_bytes_removes_the_oldest_of_the_store,
            a_channel_with_nothing_retained_is_forgotten_but_its_gap_is_not,
            forgotten_channels_are_remembered_within_the_bound,
            footprint_counts_what_is_held,
            listener_hears_every_commit_in_order_before_append_returns,
            reads_and_listings_do_not_wait_for_the_listener,
            summary_reports_retained_count_and_last_id,
            channels_are_listed_in_name_order_by_pages,
            health_is_ok,
            a_batch_is_stored_in_order_and_announced_in_order,
            count_retention_trims_a_batch_message_by_message,
            the_byte_limit_trims_a_batch_message_by_message,
            age_retention_removes_a_batch_with_its_time,
            a_repeated_key_gets_the_original_answer_and_stores_nothing,
            a_key_reused_for_other_content_stores_nothing_of_the_batch,
            keys_repeated_within_one_batch_are_judged_like_any_other,
            keys_are_forgotten_after_the_window_and_beyond_the_bound,
            appends_racing_with_one_key_store_one_message,
        );
    };
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check($factory).await;
            }
        )*
    };
}

/// Builds a fresh, empty store of the backend under test.
pub trait StoreFactory {
    /// A new store with `options`.
    fn build(&self, options: StoreOptions) -> impl Future<Output = Arc<dyn Store>>;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn(StoreOptions) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    fn build(&self, options: StoreOptions) -> impl Future<Output = Arc<dyn Store>> {
        self(options)
    }
}

fn name(text: &str) -> ChannelName {
    ChannelName::new(text).expect("valid test channel name")
}

fn text(data: &str) -> Data {
    Data::from(data.to_string())
}

async fn append(store: &dyn Store, channel: &str, data: &str) -> Arc<Message> {
    store
        .append(&name(channel), EventType::message(), text(data))
        .await
        .expect("append")
}

fn datas(messages: &[Arc<Message>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.data().as_str().to_string())
        .collect()
}

fn options(retention: Retention) -> (StoreOptions, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let options = StoreOptions {
        retention,
        clock: Arc::new(clock.clone()),
        idempotency: IdempotencyOptions::default(),
    };
    (options, clock)
}

fn default_options() -> StoreOptions {
    options(Retention::default()).0
}

/// Sequence numbers grow across all channels; every id carries the epoch.
pub async fn sequence_is_store_wide_and_increasing(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    assert_eq!(store.head(), Seq::ZERO, "a fresh store is empty");
    let a1 = append(&*store, "a", "1").await;
    let b1 = append(&*store, "b", "1").await;
    let a2 = append(&*store, "a", "2").await;
    assert!(a1.seq() > Seq::ZERO);
    assert!(a1.seq() < b1.seq() && b1.seq() < a2.seq());
    assert_eq!(store.head(), a2.seq());
    for message in [&a1, &b1, &a2] {
        assert_eq!(message.epoch(), &store.epoch());
    }
}

/// Channel, event type and data come back exactly as stored, from a read
/// and to the commit listener.
pub async fn messages_keep_their_content(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    let heard = Arc::new(Heard::default());
    store.set_commit_listener(heard.clone());
    let samples = [
        "",
        "plain",
        "line\nline\r\nline\rline\n",
        "ünïcödé ✓ 🚀",
        "\u{0}nul",
    ];
    let channel = name("content");
    for (i, data) in samples.iter().enumerate() {
        store
            .append(&channel, sample_event(i), text(data))
            .await
            .expect("append");
    }
    let history = store
        .read(&channel, Seq::ZERO, store.head(), ReadLimit::messages(100))
        .await
        .expect("read");
    assert_eq!(datas(&history.messages), samples);
    let heard = heard.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(datas(&heard), samples);
    for messages in [&history.messages, &heard] {
        for (i, message) in messages.iter().enumerate() {
            assert_eq!(message.event(), &sample_event(i));
            assert_eq!(message.channel(), &channel);
        }
    }
}

/// Event types with digits and spaces where a store might split them.
fn sample_event(i: usize) -> EventType {
    EventType::new(&format!("{i} type {i}  spaced ")).expect("valid type")
}

/// A listener that keeps every message it hears.
#[derive(Default)]
struct Heard(Mutex<Vec<Arc<Message>>>);

impl CommitListener for Heard {
    fn committed(&self, message: &Arc<Message>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.clone());
    }
}

/// A read after a position returns what followed it, and only that channel.
pub async fn read_returns_exactly_the_later_messages(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(append(&*store, "a", &i.to_string()).await.seq());
        append(&*store, "other", "noise").await;
    }
    let history = store
        .read(&name("a"), seqs[3], store.head(), ReadLimit::messages(100))
        .await
        .expect("read");
    assert_eq!(datas(&history.messages), ["4", "5", "6", "7", "8", "9"]);
    assert_eq!(history.trimmed_upto, Seq::ZERO, "nothing was trimmed");
    let none = store
        .read(&name("a"), seqs[9], store.head(), ReadLimit::messages(100))
        .await
        .expect("read");
    assert!(none.messages.is_empty());
}

/// `limit` caps the count and `upto` the position.
pub async fn read_respects_limit_and_upto(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(append(&*store, "a", &i.to_string()).await.seq());
    }
    let limited = store
        .read(&name("a"), Seq::ZERO, store.head(), ReadLimit::messages(3))
        .await
        .expect("read");
    assert_eq!(datas(&limited.messages), ["0", "1", "2"]);
    let bounded = store
        .read(&name("a"), seqs[1], seqs[4], ReadLimit::messages(100))
        .await
        .expect("read");
    assert_eq!(datas(&bounded.messages), ["2", "3", "4"]);
}

/// A channel that never had a message reads as empty, without error.
pub async fn unknown_channels_read_empty(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    append(&*store, "a", "x").await;
    let history = store
        .read(
            &name("never"),
            Seq::ZERO,
            store.head(),
            ReadLimit::messages(10),
        )
        .await
        .expect("read");
    assert!(history.messages.is_empty());
    assert_eq!(history.trimmed_upto, Seq::ZERO);
    let start = store
        .backlog_start(&name("never"), 10, store.head())
        .await
        .expect("backlog start");
    assert_eq!(start, Seq::ZERO);
    assert!(
        store
            .summary(&name("never"))
            .await
            .expect("summary")
            .is_none()
    );
}

/// A byte limit (by `stored_size`) stops a read early, but a read always
/// returns the first message, whatever its size.
pub async fn read_respects_a_byte_limit_but_returns_one_message_at_least(
    factory: impl StoreFactory,
) {
    let store = factory.build(default_options()).await;
    let mut size = 0;
    for i in 0..5 {
        size = crate::stored_size(&*append(&*store, "a", &format!("{i}{}", "x".repeat(99))).await);
    }
    let limit = |bytes| ReadLimit {
        messages: 100,
        bytes,
    };
    let two = store
        .read(
            &name("a"),
            Seq::ZERO,
            store.head(),
            limit(2 * size + size / 2),
        )
        .await
        .expect("read");
    assert_eq!(two.messages.len(), 2);
    let one = store
        .read(&name("a"), Seq::ZERO, store.head(), limit(1))
        .await
        .expect("read");
    assert_eq!(
        one.messages.len(),
        1,
        "the first message goes whatever its size"
    );
}

/// Reading after `backlog_start` yields the newest N (bounded by `upto`),
/// and after a channel's trimmed mark when it holds fewer.
pub async fn backlog_start_is_just_before_the_newest(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(append(&*store, "a", &i.to_string()).await.seq());
        append(&*store, "other", "noise").await;
    }
    let read_from = |start: Seq, upto: Seq| {
        let store = store.clone();
        async move {
            let history = store
                .read(&name("a"), start, upto, ReadLimit::messages(100))
                .await
                .expect("read");
            datas(&history.messages)
        }
    };
    let start = store
        .backlog_start(&name("a"), 3, store.head())
        .await
        .expect("backlog start");
    assert_eq!(read_from(start, store.head()).await, ["3", "4", "5"]);
    let start = store
        .backlog_start(&name("a"), 2, seqs[2])
        .await
        .expect("backlog start");
    assert_eq!(read_from(start, seqs[2]).await, ["1", "2"]);
    let start = store
        .backlog_start(&name("a"), 100, store.head())
        .await
        .expect("backlog start");
    assert_eq!(start, Seq::ZERO, "nothing was trimmed: from the start");
    assert_eq!(read_from(start, store.head()).await.len(), 6);
}

/// Count retention keeps the newest N and marks what it removed.
pub async fn retention_by_count_trims_and_marks_the_gap(factory: impl StoreFactory) {
    let (options, _clock) = options(Retention {
        max_messages: 3,
        max_age: None,
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(append(&*store, "a", &i.to_string()).await.seq());
        append(&*store, "b", &i.to_string()).await;
    }
    let history = history_of(&*store, "a").await;
    assert_eq!(datas(&history.messages), ["2", "3", "4"]);
    assert_eq!(history.trimmed_upto, seqs[1]);
    let summary = store.summary(&name("a")).await.expect("summary");
    assert_eq!(summary.map(|s| s.retained), Some(3));
}

/// With a larger limit, a store may trim lazily (Redis trims a full
/// channel in batches), but what readers see never shows it: after every
/// append past the limit, the listing, the summary and a read report
/// exactly the newest `LIMIT` messages and the highest seq removed.
pub async fn retention_by_count_is_exact_at_every_step_for_a_larger_limit(
    factory: impl StoreFactory,
) {
    const LIMIT: usize = 48;
    let (options, _clock) = options(Retention {
        max_messages: LIMIT,
        max_age: None,
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let mut seqs = Vec::new();
    for i in 0..LIMIT + 30 {
        seqs.push(append(&*store, "a", &i.to_string()).await.seq());
        if seqs.len() <= LIMIT {
            continue;
        }
        let listed = store.channels(None, 10).await.expect("list");
        assert_eq!(listed[0].1.retained, LIMIT as u64, "listed after {i}");
        // A read or a summary may trim what the store held beyond the
        // limit, so each is first after appends that only the store
        // itself has trimmed.
        if i % 5 == 0 {
            let history = history_of(&*store, "a").await;
            let newest: Vec<String> = (i + 1 - LIMIT..=i).map(|n| n.to_string()).collect();
            assert_eq!(datas(&history.messages), newest, "read after {i}");
            assert_eq!(history.trimmed_upto, seqs[i - LIMIT], "trimmed after {i}");
        }
        if i % 5 == 2 {
            let summary = store.summary(&name("a")).await.expect("summary");
            assert_eq!(summary.map(|s| s.retained), Some(LIMIT as u64), "after {i}");
        }
        if i % 5 == 4 {
            // Asked for one more than it keeps, the backlog starts at the gap.
            let more = store
                .backlog_start(&name("a"), LIMIT + 1, store.head())
                .await
                .expect("backlog");
            assert_eq!(more, seqs[i - LIMIT], "backlog after {i}");
        }
    }
    let footprint = store.footprint();
    assert!(
        footprint.messages as usize <= LIMIT + LIMIT / 16,
        "a channel holds at most a sixteenth more than its limit: {}",
        footprint.messages
    );
}

/// Age retention removes old messages when the channel is next read.
pub async fn retention_by_age_trims_on_access(factory: impl StoreFactory) {
    let (options, clock) = options(Retention {
        max_messages: 100,
        max_age: Some(Duration::from_secs(10)),
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let old = append(&*store, "a", "old").await;
    clock.advance(Duration::from_secs(6));
    append(&*store, "a", "middle").await;
    clock.advance(Duration::from_secs(6));
    append(&*store, "a", "new").await;
    let history = history_of(&*store, "a").await;
    assert_eq!(datas(&history.messages), ["middle", "new"]);
    assert_eq!(history.trimmed_upto, old.seq());
}

/// Age retention also runs without any access, on `enforce_retention`.
pub async fn retention_by_age_is_enforced_without_access(factory: impl StoreFactory) {
    let (options, clock) = options(Retention {
        max_messages: 100,
        max_age: Some(Duration::from_secs(10)),
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let last = append(&*store, "a", "1").await;
    clock.advance(Duration::from_secs(11));
    store.enforce_retention().await.expect("enforce");
    let history = history_of(&*store, "a").await;
    assert!(history.messages.is_empty());
    assert!(
        history.trimmed_upto >= last.seq(),
        "a reader from before the expired message must see a gap"
    );
}

/// A sweep with far more expired messages than one step removes runs in
/// steps until none is left, forgetting the channels it empties.
pub async fn a_large_age_sweep_removes_everything_expired_in_steps(factory: impl StoreFactory) {
    let (options, clock) = options(Retention {
        max_messages: 100_000,
        max_age: Some(Duration::from_secs(10)),
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..1_500 {
                append(&*store, &format!("c{}", (writer + i) % 40), "x").await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    clock.advance(Duration::from_secs(11));
    let kept = append(&*store, "fresh", "kept").await;
    store.enforce_retention().await.expect("enforce");
    let footprint = store.footprint();
    assert_eq!(footprint.messages, 1, "{footprint:?}");
    assert_eq!(footprint.channels, 1, "{footprint:?}");
    let listed = store.channels(None, 100).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.last_id, kept.cursor());
}

/// A store whose byte limit keeps ten messages of the data it returns (100
/// bytes) to a one-letter channel, and their stored size: 100 (data) + 7
/// ("message") + 1 (channel) + 64.
async fn store_of_ten_messages(factory: impl StoreFactory) -> (Arc<dyn Store>, String, u64) {
    let size = 172;
    let (options, _clock) = options(Retention {
        max_messages: 1000,
        max_bytes: Some(10 * size),
        ..Retention::default()
    });
    (factory.build(options).await, "x".repeat(100), size)
}

/// The total byte limit removes the store's oldest messages, whatever their
/// channel, and marks each channel's loss.
pub async fn retention_by_total_bytes_removes_the_oldest_of_the_store(factory: impl StoreFactory) {
    let (store, data, size) = store_of_ten_messages(factory).await;
    let mut appended = Vec::new();
    for i in 0..15 {
        let channel = if i % 3 == 0 { "a" } else { "b" };
        let message = append(&*store, channel, &data).await;
        assert_eq!(crate::stored_size(&message), size);
        appended.push((channel, message.seq()));
    }
    let mut retained = Vec::new();
    for channel in ["a", "b"] {
        let history = history_of(&*store, channel).await;
        let removed_last = appended[..5]
            .iter()
            .filter(|(c, _)| *c == channel)
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(Seq::ZERO);
        assert_eq!(history.trimmed_upto, removed_last, "channel {channel}");
        retained.extend(history.messages.iter().map(|m| m.seq()));
    }
    retained.sort();
    let newest_ten: Vec<Seq> = appended[5..].iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        retained, newest_ten,
        "exactly the ten newest of the store remain"
    );
}

/// A channel whose messages were all trimmed (here by the total byte
/// limit) is no longer held: not listed, no summary. A reader from before
/// its last message is still told of the gap; one that saw its last
/// message is not; publishing to it again continues from there.
pub async fn a_channel_with_nothing_retained_is_forgotten_but_its_gap_is_not(
    factory: impl StoreFactory,
) {
    let (options, _clock) = options(Retention {
        max_messages: 1000,
        max_bytes: Some(3 * 172),
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let data = "x".repeat(100);
    let gone_first = append(&*store, "g", &data).await;
    let gone_last = append(&*store, "g", &data).await;
    for _ in 0..3 {
        append(&*store, "k", &data).await;
    }
    assert!(store.summary(&name("g")).await.expect("summary").is_none());
    let listed = store.channels(None, 100).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["k"]);
    let from_before = store
        .read(
            &name("g"),
            gone_first.seq(),
            store.head(),
            ReadLimit::messages(10),
        )
        .await
        .expect("read");
    assert!(from_before.messages.is_empty());
    assert!(
        from_before.trimmed_upto > gone_first.seq(),
        "a reader from before the last message must see a gap"
    );
    let after_all = store
        .read(
            &name("g"),
            gone_last.seq(),
            store.head(),
            ReadLimit::messages(10),
        )
        .await
        .expect("read");
    assert!(
        after_all.trimmed_upto <= gone_last.seq(),
        "a reader that saw everything has missed nothing"
    );
    let back = append(&*store, "g", "back").await;
    let resumed = store
        .read(
            &name("g"),
            gone_last.seq(),
            store.head(),
            ReadLimit::messages(10),
        )
        .await
        .expect("read");
    assert_eq!(datas(&resumed.messages), ["back"]);
    assert!(resumed.trimmed_upto <= gone_last.seq());
    let old_reader = store
        .read(
            &name("g"),
            gone_first.seq(),
            store.head(),
            ReadLimit::messages(10),
        )
        .await
        .expect("read");
    assert_eq!(datas(&old_reader.messages), ["back"]);
    assert!(old_reader.trimmed_upto >= gone_last.seq());
    assert_eq!(
        store
            .summary(&name("g"))
            .await
            .expect("summary")
            .map(|s| s.last_id),
        Some(back.cursor())
    );
}

/// Publishing to ever new channel names holds only what is retained, and
/// remembers forgotten channels within `forgotten_channels`; those
/// remembered no longer exactly still report their gaps.
pub async fn forgotten_channels_are_remembered_within_the_bound(factory: impl StoreFactory) {
    let (options, _clock) = options(Retention {
        max_messages: 1,
        max_bytes: Some(5 * 172),
        forgotten_channels: 20,
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let data = "x".repeat(100);
    let mut first = Vec::new();
    for i in 0..300 {
        let channel = format!("u{i:03}");
        first.push((
            channel.clone(),
            append(&*store, &channel, &data).await.seq(),
        ));
    }
    let footprint = store.footprint();
    assert!(footprint.channels <= 5, "{footprint:?}");
    assert!(
        footprint.forgotten_channels <= 20 + 20 / 16,
        "{footprint:?}"
    );
    assert!(store.channels(None, 1000).await.expect("list").len() <= 5);
    for (channel, seq) in &first[..290] {
        let history = store
            .read(
                &name(channel),
                Seq(seq.0 - 1),
                store.head(),
                ReadLimit::messages(10),
            )
            .await
            .expect("read");
        assert!(
            history.trimmed_upto >= *seq,
            "{channel}: a reader from before its message must see a gap"
        );
    }
}

/// The footprint counts channels held, forgotten channels remembered,
/// messages and bytes retained.
pub async fn footprint_counts_what_is_held(factory: impl StoreFactory) {
    let (options, _clock) = options(Retention {
        max_messages: 2,
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let mut bytes = 0;
    for i in 0..3 {
        append(&*store, "a", &i.to_string()).await;
    }
    for i in 0..2 {
        bytes += crate::stored_size(&*append(&*store, "b", &i.to_string()).await);
    }
    bytes *= 2; // "a" keeps two messages of the same size
    let footprint = store.footprint();
    assert_eq!(footprint.channels, 2);
    assert_eq!(footprint.forgotten_channels, 0);
    assert_eq!(footprint.messages, 4);
    assert_eq!(footprint.bytes, bytes);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seq>>);

impl CommitListener for Recorder {
    fn committed(&self, message: &Arc<Message>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.seq());
    }
}

/// Under concurrent appends, the listener hears every message exactly once,
/// in sequence order, and before its append returns.
pub async fn listener_hears_every_commit_in_order_before_append_returns(
    factory: impl StoreFactory,
) {
    let store = factory.build(default_options()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_commit_listener(recorder.clone());
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..100 {
                let channel = name(&format!("c{}", (writer + i) % 3));
                let message = store
                    .append(&channel, EventType::message(), text("x"))
                    .await
                    .expect("append");
                let heard = recorder.0.lock().unwrap_or_else(|e| e.into_inner());
                assert!(
                    heard.contains(&message.seq()),
                    "append returned before the listener heard of it"
                );
                seqs.push(message.seq());
            }
            seqs
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        appended.extend(task.await.expect("writer task"));
    }
    appended.sort();
    let heard = recorder.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(heard.len(), 800);
    assert!(
        heard.windows(2).all(|w| w[0] < w[1]),
        "commits heard out of order"
    );
    assert_eq!(heard, appended, "heard exactly the appended messages");
}

/// A listener that takes its time (releasing many parked polls) holds up
/// the append it announces, never the store's readers.
pub async fn reads_and_listings_do_not_wait_for_the_listener(factory: impl StoreFactory) {
    struct Blocking {
        entered: std::sync::mpsc::SyncSender<()>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }
    impl CommitListener for Blocking {
        fn committed(&self, _: &Arc<Message>) {
            let _ = self.entered.send(());
            let _ = self
                .release
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv();
        }
    }
    let store = factory.build(default_options()).await;
    append(&*store, "a", "before").await;
    let (entered, in_listener) = std::sync::mpsc::sync_channel(1);
    let (release, released) = std::sync::mpsc::channel();
    store.set_commit_listener(Arc::new(Blocking {
        entered,
        release: Mutex::new(released),
    }));
    let appending = tokio::spawn({
        let store = store.clone();
        async move { append(&*store, "a", "announced slowly").await }
    });
    tokio::task::spawn_blocking(move || in_listener.recv())
        .await
        .expect("the listener was entered")
        .expect("the listener was entered");
    // On a thread of its own: a read that blocks on a lock held by the
    // listener must fail this test, not hang it.
    let (looked_tx, looked) = std::sync::mpsc::channel();
    let reader = store.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            reader
                .read(&name("a"), Seq::ZERO, Seq(1), ReadLimit::messages(10))
                .await
                .expect("read");
            reader.summary(&name("a")).await.expect("summary");
            reader.channels(None, 10).await.expect("list");
        });
        let _ = looked_tx.send(());
    });
    let looked = tokio::task::spawn_blocking(move || looked.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("waiting");
    release.send(()).expect("release the listener");
    assert!(looked.is_ok(), "a read waited for the listener");
    appending.await.expect("the append finishes");
}

/// `summary` counts retained messages and names the newest id.
pub async fn summary_reports_retained_count_and_last_id(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    append(&*store, "a", "1").await;
    let last = append(&*store, "a", "2").await;
    append(&*store, "b", "1").await;
    let summary = store
        .summary(&name("a"))
        .await
        .expect("summary")
        .expect("channel a exists");
    assert_eq!(summary.retained, 2);
    assert_eq!(summary.last_id, last.cursor());
}

/// `channels` lists every channel with its summary, in name order, in pages.
pub async fn channels_are_listed_in_name_order_by_pages(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    for channel in ["delta", "alpha", "charlie", "bravo", "alpha"] {
        append(&*store, channel, "x").await;
    }
    let first = store.channels(None, 3).await.expect("list");
    let names: Vec<&str> = first.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    assert_eq!(first[0].1.retained, 2);
    let rest = store.channels(Some(&first[2].0), 3).await.expect("list");
    let names: Vec<&str> = rest.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["delta"]);
    let summary = store.summary(&name("delta")).await.expect("summary");
    assert_eq!(Some(rest[0].1.clone()), summary);
}

/// A working store reports itself healthy.
pub async fn health_is_ok(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    store.check_health().await.expect("healthy");
}

fn keyed(channel: &str, data: &str, key: &str, subscribers: u64) -> Draft {
    Draft {
        idempotency_key: Some(IdempotencyKey::new(key).expect("valid test key")),
        subscribers,
        ..Draft::new(name(channel), EventType::message(), text(data))
    }
}

fn plain(channel: &str, data: &str) -> Draft {
    Draft::new(name(channel), EventType::message(), text(data))
}

/// The message of a draft that was stored; panics on a repeat.
fn stored(appended: &Appended) -> &Arc<Message> {
    match appended {
        Appended::Stored(message) => message,
        Appended::Repeat(original) => {
            panic!("expected a stored message, got a repeat of {original:?}")
        }
    }
}

fn repeat_of(appended: &Appended) -> Original {
    match appended {
        Appended::Repeat(original) => *original,
        Appended::Stored(message) => panic!("expected a repeat, got message {}", message.seq()),
    }
}

/// What `channel` holds up to the head, read at once.
async fn history_of(store: &dyn Store, channel: &str) -> History {
    store
        .read(
            &name(channel),
            Seq::ZERO,
            store.head(),
            ReadLimit::messages(10_000),
        )
        .await
        .expect("read")
}

async fn all_of(store: &dyn Store, channel: &str) -> Vec<String> {
    let history = store
        .read(
            &name(channel),
            Seq::ZERO,
            Seq(u64::MAX),
            ReadLimit::messages(10_000),
        )
        .await
        .expect("read");
    datas(&history.messages)
}

/// A batch takes consecutive sequence numbers in its order, across
/// channels, and the listener hears its messages in that order.
pub async fn a_batch_is_stored_in_order_and_announced_in_order(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_commit_listener(recorder.clone());
    append(&*store, "a", "before").await;
    let drafts = vec![
        plain("b", "1"),
        plain("a", "2"),
        plain("b", "3"),
        plain("c", "4"),
    ];
    let appended = store.append_batch(drafts).await.expect("batch");
    let seqs: Vec<Seq> = appended.iter().map(|a| stored(a).seq()).collect();
    assert_eq!(seqs, vec![Seq(2), Seq(3), Seq(4), Seq(5)]);
    assert_eq!(stored(&appended[2]).channel().as_str(), "b");
    assert_eq!(store.head(), Seq(5));
    let heard = recorder.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(heard, vec![Seq(1), Seq(2), Seq(3), Seq(4), Seq(5)]);
    assert_eq!(all_of(&*store, "b").await, vec!["1", "3"]);
    assert_eq!(all_of(&*store, "a").await, vec!["before", "2"]);
    assert!(
        store
            .append_batch(Vec::new())
            .await
            .expect("empty batch")
            .is_empty()
    );
    assert_eq!(store.head(), Seq(5), "an empty batch stores nothing");
}

/// Count retention trims the messages of a batch one by one, like any
/// others: a channel keeps exactly its newest, reads and backlogs may
/// start inside the batch, and later publishes trim the rest of it.
pub async fn count_retention_trims_a_batch_message_by_message(factory: impl StoreFactory) {
    let (options, _clock) = options(Retention {
        max_messages: 10,
        max_age: None,
        ..Retention::default()
    });
    let store = factory.build(options).await;
    // 30 messages, alternately to `a` and `b`: each channel gets 15.
    let drafts = (0..30)
        .map(|i| plain(if i % 2 == 0 { "a" } else { "b" }, &i.to_string()))
        .collect();
    let appended = store.append_batch(drafts).await.expect("batch");
    let seq = |i: usize| stored(&appended[i]).seq();
    let read = |channel: &'static str, after: Seq, upto: Seq, limit: usize| {
        let store = store.clone();
        async move {
            store
                .read(&name(channel), after, upto, ReadLimit::messages(limit))
                .await
                .expect("read")
        }
    };
    let numbers = |range: std::ops::Range<usize>| -> Vec<String> {
        range.step_by(2).map(|i| i.to_string()).collect()
    };
    let history = read("a", Seq::ZERO, store.head(), 100).await;
    assert_eq!(datas(&history.messages), numbers(10..30));
    assert_eq!(history.trimmed_upto, seq(8));
    let history = read("b", Seq::ZERO, store.head(), 100).await;
    assert_eq!(datas(&history.messages), numbers(11..30));
    assert_eq!(history.trimmed_upto, seq(9));

    let later = read("a", seq(20), store.head(), 2).await;
    assert_eq!(datas(&later.messages), ["22", "24"]);
    assert!(later.truncated);
    let start = store
        .backlog_start(&name("a"), 3, store.head())
        .await
        .expect("backlog start");
    assert_eq!(start, seq(22));
    let start = store
        .backlog_start(&name("a"), 2, seq(20))
        .await
        .expect("backlog start");
    assert_eq!(start, seq(16));
    let start = store
        .backlog_start(&name("a"), 100, store.head())
        .await
        .expect("backlog start");
    assert_eq!(start, seq(8), "asked for more than is kept: from the gap");

    for i in 30..37 {
        append(&*store, "a", &i.to_string()).await;
    }
    let history = read("a", Seq::ZERO, store.head(), 100).await;
    let newest: Vec<String> = numbers(24..30)
        .into_iter()
        .chain((30..37).map(|i| i.to_string()))
        .collect();
    assert_eq!(datas(&history.messages), newest);
    assert_eq!(history.trimmed_upto, seq(22));
    let summary = store.summary(&name("a")).await.expect("summary");
    assert_eq!(summary.map(|s| s.retained), Some(10));
}

/// The byte limit removes the store's oldest messages one by one, also
/// when they were stored in one batch: part of a batch may go and the
/// rest stay.
pub async fn the_byte_limit_trims_a_batch_message_by_message(factory: impl StoreFactory) {
    let (store, data, size) = store_of_ten_messages(factory).await;
    // Eight messages alternately to `a` and `b`, then six to `c`: the four
    // oldest of the store go, two of each of the first two channels.
    let first = store
        .append_batch(
            (0..8)
                .map(|i| plain(if i % 2 == 0 { "a" } else { "b" }, &data))
                .collect(),
        )
        .await
        .expect("batch");
    store
        .append_batch((0..6).map(|_| plain("c", &data)).collect())
        .await
        .expect("batch");
    let first: Vec<Seq> = first.iter().map(|a| stored(a).seq()).collect();
    for (channel, kept, trimmed) in [("a", [4, 6], 2), ("b", [5, 7], 3)] {
        let history = history_of(&*store, channel).await;
        let seqs: Vec<Seq> = history.messages.iter().map(|m| m.seq()).collect();
        assert_eq!(seqs, kept.map(|i| first[i]), "channel {channel}");
        assert_eq!(history.trimmed_upto, first[trimmed], "channel {channel}");
    }
    assert_eq!(all_of(&*store, "c").await.len(), 6);
    let footprint = store.footprint();
    assert_eq!((footprint.messages, footprint.bytes), (10, 10 * size));
}

/// Age retention removes a batch's messages together: they were published
/// at the same moment.
pub async fn age_retention_removes_a_batch_with_its_time(factory: impl StoreFactory) {
    let (options, clock) = options(Retention {
        max_messages: 100,
        max_age: Some(Duration::from_secs(10)),
        ..Retention::default()
    });
    let store = factory.build(options).await;
    let old = store
        .append_batch((0..5).map(|i| plain("a", &i.to_string())).collect())
        .await
        .expect("batch");
    clock.advance(Duration::from_secs(6));
    append(&*store, "a", "young").await;
    clock.advance(Duration::from_secs(6));
    store.enforce_retention().await.expect("enforce");
    let history = history_of(&*store, "a").await;
    assert_eq!(datas(&history.messages), ["young"]);
    assert_eq!(history.trimmed_upto, stored(&old[4]).seq());
    assert_eq!(store.footprint().messages, 1);
}

/// A key its channel stored within the window, with the same content, is a
/// repeat: the original's position and subscribers, nothing stored. The
/// same key on another channel is another publish.
pub async fn a_repeated_key_gets_the_original_answer_and_stores_nothing(
    factory: impl StoreFactory,
) {
    let store = factory.build(default_options()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_commit_listener(recorder.clone());
    let first = store
        .append_batch(vec![keyed("a", "x", "k1", 3)])
        .await
        .expect("first");
    let seq = stored(&first[0]).seq();
    append(&*store, "a", "between").await;
    let again = store
        .append_batch(vec![keyed("a", "x", "k1", 9)])
        .await
        .expect("again");
    assert_eq!(
        repeat_of(&again[0]),
        Original {
            seq,
            subscribers: 3
        }
    );
    assert_eq!(all_of(&*store, "a").await, vec!["x", "between"]);
    let other_channel = store
        .append_batch(vec![keyed("b", "x", "k1", 0)])
        .await
        .expect("b");
    assert_eq!(stored(&other_channel[0]).seq(), Seq(3));
    assert_eq!(
        recorder.0.lock().unwrap_or_else(|e| e.into_inner()).len(),
        3
    );
    assert_eq!(store.footprint().idempotency_keys, 2);
}

/// The same key with another event type or other data is a conflict: the
/// whole batch is refused, the valid drafts before it included.
pub async fn a_key_reused_for_other_content_stores_nothing_of_the_batch(
    factory: impl StoreFactory,
) {
    let store = factory.build(default_options()).await;
    store
        .append_batch(vec![keyed("a", "x", "k", 0)])
        .await
        .expect("first");
    let other_data = vec![
        plain("a", "fine"),
        plain("b", "fine"),
        keyed("a", "y", "k", 0),
    ];
    match store.append_batch(other_data).await {
        Err(AppendError::IdempotencyConflict { index }) => assert_eq!(index, 2),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut other_event = keyed("a", "x", "k", 0);
    other_event.event = EventType::new("price").expect("event");
    match store.append_batch(vec![other_event]).await {
        Err(AppendError::IdempotencyConflict { index }) => assert_eq!(index, 0),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.head(), Seq(1), "nothing of a refused batch is stored");
    assert_eq!(all_of(&*store, "a").await, vec!["x"]);
    assert!(all_of(&*store, "b").await.is_empty());
    let next = append(&*store, "a", "after").await;
    assert_eq!(
        next.seq(),
        Seq(2),
        "a refused batch uses no sequence numbers"
    );
}

/// A key given twice in one batch: the second is a repeat of the first
/// (same content) or a conflict (other content).
pub async fn keys_repeated_within_one_batch_are_judged_like_any_other(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    let drafts = vec![
        keyed("a", "x", "k", 1),
        plain("a", "y"),
        keyed("a", "x", "k", 2),
    ];
    let appended = store.append_batch(drafts).await.expect("batch");
    let first = stored(&appended[0]).seq();
    assert_eq!(stored(&appended[1]).seq(), Seq(2));
    assert_eq!(
        repeat_of(&appended[2]),
        Original {
            seq: first,
            subscribers: 1
        }
    );
    assert_eq!(all_of(&*store, "a").await, vec!["x", "y"]);
    let conflicting = vec![keyed("a", "p", "j", 0), keyed("a", "q", "j", 0)];
    match store.append_batch(conflicting).await {
        Err(AppendError::IdempotencyConflict { index }) => assert_eq!(index, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.head(), Seq(2));
}

/// Keys older than the window are forgotten (the same key then publishes
/// anew), and beyond the bound the oldest keys go first.
pub async fn keys_are_forgotten_after_the_window_and_beyond_the_bound(factory: impl StoreFactory) {
    let (mut options, clock) = options(Retention::default());
    options.idempotency = IdempotencyOptions {
        window: Duration::from_secs(60),
        max_keys: 100,
    };
    let store = factory.build(options).await;
    store
        .append_batch(vec![keyed("a", "x", "old", 0)])
        .await
        .expect("old");
    clock.advance(Duration::from_secs(59));
    let within = store
        .append_batch(vec![keyed("a", "x", "old", 0)])
        .await
        .expect("within");
    repeat_of(&within[0]);
    clock.advance(Duration::from_secs(2));
    let after = store
        .append_batch(vec![keyed("a", "x", "old", 0)])
        .await
        .expect("after");
    assert_eq!(
        stored(&after[0]).seq(),
        Seq(2),
        "past the window, a key publishes anew"
    );
    let other_content = store.append_batch(vec![keyed("a", "y", "gone", 0)]).await;
    stored(&other_content.expect("a fresh key")[0]);

    let drafts: Vec<Draft> = (0..150)
        .map(|i| keyed("b", "z", &format!("k{i}"), 0))
        .collect();
    store.append_batch(drafts).await.expect("many keys");
    // A batch's own keys may take the store beyond the bound until its
    // next append or retention step.
    append(&*store, "b", "next").await;
    store.enforce_retention().await.expect("retention");
    assert_eq!(
        store.footprint().idempotency_keys,
        100,
        "keys beyond the bound are let go"
    );
    let newest = store
        .append_batch(vec![keyed("b", "z", "k149", 0)])
        .await
        .expect("newest");
    repeat_of(&newest[0]);
    let oldest = store
        .append_batch(vec![keyed("b", "z", "k0", 0)])
        .await
        .expect("oldest");
    stored(&oldest[0]);
}

/// Appends with the same key racing from many tasks store one message;
/// every other one is answered with its position.
pub async fn appends_racing_with_one_key_store_one_message(factory: impl StoreFactory) {
    let store = factory.build(default_options()).await;
    for round in 0..20 {
        let key = format!("race-{round}");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append_batch(vec![keyed("r", "same", &key, 0)])
                    .await
                    .expect("append")
            }));
        }
        let mut seqs = Vec::new();
        let mut stored_count = 0;
        for task in tasks {
            let appended = task.await.expect("task").remove(0);
            match appended {
                Appended::Stored(message) => {
                    stored_count += 1;
                    seqs.push(message.seq());
                }
                Appended::Repeat(original) => seqs.push(original.seq),
            }
        }
        assert_eq!(
            stored_count, 1,
            "round {round}: one of the racing appends stores"
        );
        assert!(
            seqs.windows(2).all(|w| w[0] == w[1]),
            "every answer names the one message"
        );
    }
    assert_eq!(all_of(&*store, "r").await.len(), 20);
}
