//! Conformance checks: positions, reads, backlogs, summaries, listings,
//! health and the commit listener.

use super::*;

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

/// `append_batch_then` runs its work once per append, with what became of
/// its drafts, after the listener heard of them and before the append
/// returns.
pub async fn work_after_commit_runs_once_after_the_listener_before_append_returns(
    factory: impl StoreFactory,
) {
    let store = factory.build(default_options()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_commit_listener(recorder.clone());
    // Each run: the sequences stored, and whether the listener had heard
    // of all of them by then.
    type Runs = Arc<Mutex<Vec<(Vec<Seq>, bool)>>>;
    let runs: Runs = Arc::default();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let recorder = recorder.clone();
        let runs = runs.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let channel = format!("c{}", (writer + i) % 3);
                let drafts = vec![plain(&channel, "x"), plain(&channel, "y")];
                let (recorder, runs_here) = (recorder.clone(), runs.clone());
                let work: crate::AfterCommit = Box::new(move |appended| {
                    let seqs: Vec<Seq> = appended.iter().map(|a| stored(a).seq()).collect();
                    let heard = recorder.0.lock().unwrap_or_else(|e| e.into_inner());
                    let heard = seqs.iter().all(|seq| heard.contains(seq));
                    let mut runs = runs_here.lock().unwrap_or_else(|e| e.into_inner());
                    runs.push((seqs, heard));
                });
                let appended = store
                    .append_batch_then(drafts, work)
                    .await
                    .expect("append");
                let seqs: Vec<Seq> = appended.iter().map(|a| stored(a).seq()).collect();
                let runs = runs.lock().unwrap_or_else(|e| e.into_inner());
                let mine: Vec<bool> = runs
                    .iter()
                    .filter(|(run, _)| *run == seqs)
                    .map(|(_, heard)| *heard)
                    .collect();
                assert_eq!(
                    mine,
                    [true],
                    "the work ran once, with the outcome, after the listener, before the append returned"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    assert_eq!(runs.lock().unwrap_or_else(|e| e.into_inner()).len(), 400);
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

/// A summary leaves out messages older than the age limit before any sweep
/// has removed them, as reads do; a channel holding only such messages is
/// not held.
pub async fn summary_leaves_out_expired_messages(factory: impl StoreFactory) {
    let (options, clock) = options(Retention {
        max_messages: 100,
        max_age: Some(Duration::from_secs(10)),
        ..Retention::default()
    });
    let store = factory.build(options).await;
    append(&*store, "a", "old").await;
    append(&*store, "a", "old too").await;
    clock.advance(Duration::from_secs(6));
    let middle = append(&*store, "a", "middle").await;
    clock.advance(Duration::from_secs(6));
    let summary = store
        .summary(&name("a"))
        .await
        .expect("summary")
        .expect("channel a holds a message");
    assert_eq!(summary.retained, 1, "{summary:?}");
    assert_eq!(summary.last_id, middle.cursor());
    clock.advance(Duration::from_secs(6));
    let summary = store.summary(&name("a")).await.expect("summary");
    assert!(summary.is_none(), "{summary:?}");
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
