//! Conformance checks: batches (stored and announced in order, trimmed
//! message by message) and idempotency keys.

use super::*;

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
