//! Conformance checks: retention by count, by age and by total size, and
//! what a store remembers of the channels it forgets.

use super::*;

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
