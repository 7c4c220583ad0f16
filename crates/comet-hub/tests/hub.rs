//! The hub through its public API, over the in-memory store.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_hub::{
    BatchLimit, Gap, GapReason, Hub, HubConfig, HubError, Item, Publication, Published, Start,
    Subscription,
};
use comet_protocol::{
    ChannelList, ChannelName, Cursor, Data, Epoch, EventType, IdempotencyKey, Seq,
};
use comet_store::{MemoryStore, ReadLimit, Retention, Store, StoreOptions};
use common::WrappedStore;

fn hub_with(retention: Retention, live_window: usize) -> Hub {
    let store = Arc::new(MemoryStore::new(StoreOptions {
        retention,
        ..StoreOptions::default()
    }));
    Hub::new(
        store,
        HubConfig {
            live_window,
            ..HubConfig::default()
        },
    )
}

fn hub() -> Hub {
    hub_with(Retention::default(), 256)
}

fn channels(list: &str) -> ChannelList {
    ChannelList::parse(list, 16).expect("valid list")
}

fn name(text: &str) -> ChannelName {
    ChannelName::new(text).expect("valid name")
}

async fn publish(hub: &Hub, channel: &str, data: &str) -> Cursor {
    hub.publish(
        &name(channel),
        EventType::message(),
        Data::from(data.to_string()),
    )
    .await
    .expect("publish")
    .id
}

/// Reads items until `count` messages arrived, failing after 10 s.
async fn take_messages(sub: &mut Subscription, count: usize) -> (Vec<String>, Vec<Gap>) {
    let mut messages = Vec::new();
    let mut gaps = Vec::new();
    while messages.len() < count {
        let batch = tokio::time::timeout(
            Duration::from_secs(10),
            sub.next_batch(BatchLimit::messages(64)),
        )
        .await
        .expect("messages arrive in time")
        .expect("batch");
        for item in batch {
            match item {
                Item::Message(m) => messages.push(format!("{}:{}", m.channel(), m.data().as_str())),
                Item::Gap(gap) => gaps.push(gap),
            }
        }
    }
    (messages, gaps)
}

async fn ready_messages(sub: &mut Subscription) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let batch = sub
            .ready_batch(BatchLimit::messages(64))
            .await
            .expect("batch");
        if batch.is_empty() {
            return out;
        }
        for item in batch {
            if let Item::Message(m) = item {
                out.push(format!("{}:{}", m.channel(), m.data().as_str()));
            }
        }
    }
}

#[tokio::test]
async fn a_live_subscriber_receives_what_is_published_after_it_started() {
    let hub = hub();
    publish(&hub, "news", "before").await;
    let mut sub = hub.subscribe(&channels("news"), Start::Now).await.unwrap();
    publish(&hub, "news", "1").await;
    publish(&hub, "other", "x").await;
    publish(&hub, "news", "2").await;
    let (messages, gaps) = take_messages(&mut sub, 2).await;
    assert_eq!(messages, ["news:1", "news:2"]);
    assert!(gaps.is_empty());
}

#[tokio::test]
async fn publish_reports_local_subscribers() {
    let hub = hub();
    let first = hub.subscribe(&channels("news"), Start::Now).await.unwrap();
    let _second = hub
        .subscribe(&channels("news,sport"), Start::Now)
        .await
        .unwrap();
    let published = hub
        .publish(&name("news"), EventType::message(), Data::from("x"))
        .await
        .unwrap();
    assert_eq!(published.subscribers, 2);
    drop(first);
    let published = hub
        .publish(&name("news"), EventType::message(), Data::from("y"))
        .await
        .unwrap();
    assert_eq!(published.subscribers, 1);
    let info = hub.channel_info(&name("news")).await.unwrap().unwrap();
    assert_eq!(info.subscribers, 1);
    assert_eq!(info.retained, 2);
    assert_eq!(info.last_id, published.id);
    assert!(hub.channel_info(&name("never")).await.unwrap().is_none());
}

#[tokio::test]
async fn dropping_the_last_subscription_stops_following_the_channel() {
    let hub = hub();
    let sub = hub.subscribe(&channels("a,b"), Start::Now).await.unwrap();
    assert_eq!(hub.followed_channels(), 2);
    drop(sub);
    assert_eq!(hub.followed_channels(), 0);
}

#[tokio::test]
async fn resuming_from_any_message_id_yields_exactly_the_rest() {
    let hub = hub();
    let mut ids = Vec::new();
    for i in 0..20 {
        let channel = ["a", "b", "c"][i % 3];
        ids.push((publish(&hub, channel, &i.to_string()).await, channel, i));
    }
    for (cut, (id, _, _)) in ids.iter().enumerate() {
        let mut sub = hub
            .subscribe(&channels("a,c"), Start::Since(id.clone()))
            .await
            .unwrap();
        let expected: Vec<String> = ids[cut + 1..]
            .iter()
            .filter(|(_, channel, _)| *channel != "b")
            .map(|(_, channel, i)| format!("{channel}:{i}"))
            .collect();
        assert_eq!(
            ready_messages(&mut sub).await,
            expected,
            "resuming after #{cut}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_arrive_in_store_order_under_concurrent_publishers() {
    let hub = hub();
    let mut sub = hub.subscribe(&channels("a,b,c"), Start::Now).await.unwrap();
    let mut writers = Vec::new();
    for channel in ["a", "b", "c"] {
        let hub = hub.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..300 {
                publish(&hub, channel, &i.to_string()).await;
            }
        }));
    }
    let mut seen = Vec::new();
    while seen.len() < 900 {
        let batch = tokio::time::timeout(
            Duration::from_secs(10),
            sub.next_batch(BatchLimit::messages(50)),
        )
        .await
        .expect("in time")
        .unwrap();
        for item in batch {
            if let Item::Message(m) = item {
                seen.push(m);
            }
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        seen.windows(2).all(|w| w[0].seq() < w[1].seq()),
        "store order"
    );
    for channel in ["a", "b", "c"] {
        let datas: Vec<String> = seen
            .iter()
            .filter(|m| m.channel().as_str() == channel)
            .map(|m| m.data().as_str().to_string())
            .collect();
        let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        assert_eq!(datas, expected, "channel {channel} complete and in order");
    }
    // The cursor after everything resumes to nothing.
    let mut again = hub
        .subscribe(&channels("a,b,c"), Start::Since(sub.cursor()))
        .await
        .unwrap();
    assert!(ready_messages(&mut again).await.is_empty());
}

#[tokio::test]
async fn backlog_delivers_the_newest_of_each_channel_in_order() {
    let hub = hub();
    for i in 0..5 {
        publish(&hub, "a", &format!("a{i}")).await;
        publish(&hub, "b", &format!("b{i}")).await;
    }
    let mut sub = hub
        .subscribe(&channels("a,b"), Start::Backlog(2))
        .await
        .unwrap();
    assert_eq!(
        ready_messages(&mut sub).await,
        ["a:a3", "b:b3", "a:a4", "b:b4"]
    );
    publish(&hub, "a", "live").await;
    let (messages, _) = take_messages(&mut sub, 1).await;
    assert_eq!(messages, ["a:live"]);
}

#[tokio::test]
async fn resuming_before_the_retained_history_reports_a_gap_then_delivers_the_rest() {
    let hub = hub_with(
        Retention {
            max_messages: 5,
            max_age: None,
            ..Retention::default()
        },
        5,
    );
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(publish(&hub, "a", &i.to_string()).await);
    }
    let mut sub = hub
        .subscribe(&channels("a"), Start::Since(ids[2].clone()))
        .await
        .unwrap();
    let batch = sub.ready_batch(BatchLimit::messages(100)).await.unwrap();
    assert!(
        matches!(&batch[0], Item::Gap(Gap { reason: GapReason::Trimmed, channel }) if channel.as_str() == "a"),
        "first item is the gap: {batch:?}"
    );
    let datas: Vec<&str> = batch[1..]
        .iter()
        .map(|item| match item {
            Item::Message(m) => m.data().as_str(),
            Item::Gap(g) => panic!("second gap {g:?}"),
        })
        .collect();
    assert_eq!(datas, ["15", "16", "17", "18", "19"]);
    assert!(
        sub.ready_batch(BatchLimit::messages(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(hub.stats().gaps_trimmed, 1);

    // Resuming from the newest trimmed id is not a gap: nothing was missed.
    let mut exact = hub
        .subscribe(&channels("a"), Start::Since(ids[14].clone()))
        .await
        .unwrap();
    let batch = exact.ready_batch(BatchLimit::messages(100)).await.unwrap();
    assert!(batch.iter().all(|item| matches!(item, Item::Message(_))));
    assert_eq!(batch.len(), 5);
}

#[tokio::test]
async fn a_cursor_from_another_history_is_a_reset_gap_for_every_channel() {
    let hub = hub();
    publish(&hub, "a", "1").await;
    publish(&hub, "b", "2").await;
    let foreign = Cursor::new(Epoch::new("elsewhere").unwrap(), Seq(1));
    let mut sub = hub
        .subscribe(&channels("a,b"), Start::Since(foreign))
        .await
        .unwrap();
    let batch = sub.ready_batch(BatchLimit::messages(100)).await.unwrap();
    let gaps: Vec<_> = batch
        .iter()
        .filter_map(|item| match item {
            Item::Gap(gap) => Some((gap.channel.to_string(), gap.reason)),
            Item::Message(_) => None,
        })
        .collect();
    assert_eq!(
        gaps,
        [
            ("a".to_string(), GapReason::Reset),
            ("b".to_string(), GapReason::Reset)
        ]
    );
    let messages: Vec<String> = batch
        .iter()
        .filter_map(|item| match item {
            Item::Message(m) => Some(format!("{}:{}", m.channel(), m.data().as_str())),
            Item::Gap(_) => None,
        })
        .collect();
    assert_eq!(
        messages,
        ["a:1", "b:2"],
        "gaps first, then what is retained"
    );
    assert!(ready_messages(&mut sub).await.is_empty());
    assert_eq!(hub.stats().gaps_reset, 2);
}

#[tokio::test]
async fn a_subscriber_behind_the_live_window_catches_up_from_the_store() {
    let hub = hub_with(Retention::default(), 4);
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    publish(&hub, "a", "0").await;
    let (first, _) = take_messages(&mut sub, 1).await;
    assert_eq!(first, ["a:0"]);
    for i in 1..=50 {
        publish(&hub, "a", &i.to_string()).await;
    }
    let (messages, gaps) = take_messages(&mut sub, 50).await;
    let expected: Vec<String> = (1..=50).map(|i| format!("a:{i}")).collect();
    assert_eq!(messages, expected);
    assert!(gaps.is_empty(), "history still held everything");
    assert_eq!(hub.stats().fell_behind, 1);
}

#[tokio::test]
async fn a_subscriber_behind_the_retained_history_is_told_of_the_gap() {
    let hub = hub_with(
        Retention {
            max_messages: 10,
            max_age: None,
            ..Retention::default()
        },
        4,
    );
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    publish(&hub, "a", "0").await;
    take_messages(&mut sub, 1).await;
    for i in 1..=30 {
        publish(&hub, "a", &i.to_string()).await;
    }
    let (messages, gaps) = take_messages(&mut sub, 10).await;
    let expected: Vec<String> = (21..=30).map(|i| format!("a:{i}")).collect();
    assert_eq!(messages, expected);
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].reason, GapReason::Trimmed);
}

#[tokio::test]
async fn a_gap_is_reported_once_even_when_reading_takes_several_batches() {
    let hub = hub_with(
        Retention {
            max_messages: 50,
            max_age: None,
            ..Retention::default()
        },
        4,
    );
    let first = publish(&hub, "a", "first").await;
    for i in 0..100 {
        publish(&hub, "a", &i.to_string()).await;
        publish(&hub, "b", &i.to_string()).await;
    }
    let mut sub = hub
        .subscribe(&channels("a,b"), Start::Since(first))
        .await
        .unwrap();
    let mut gaps = 0;
    let mut messages = 0;
    loop {
        let batch = sub.ready_batch(BatchLimit::messages(7)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for item in batch {
            match item {
                Item::Gap(_) => gaps += 1,
                Item::Message(_) => messages += 1,
            }
        }
    }
    assert_eq!(messages, 100, "50 retained of each channel");
    assert_eq!(gaps, 2, "one gap per channel");
}

#[tokio::test]
async fn a_waiting_reader_can_be_cancelled_and_resumed_without_loss() {
    let hub = hub();
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    for round in 0..20 {
        // Cancel a pending wait, then publish, then read.
        let waited = tokio::time::timeout(
            Duration::from_millis(1),
            sub.next_batch(BatchLimit::messages(10)),
        )
        .await;
        assert!(waited.is_err(), "nothing to read yet");
        publish(&hub, "a", &round.to_string()).await;
        let (messages, _) = take_messages(&mut sub, 1).await;
        assert_eq!(messages, [format!("a:{round}")]);
    }
}

#[tokio::test]
async fn batches_respect_the_byte_budget_and_lose_nothing() {
    let hub = hub();
    let mut sub = hub.subscribe(&channels("a,b"), Start::Now).await.unwrap();
    let big = "x".repeat(1000);
    for i in 0..20 {
        let channel = if i % 2 == 0 { "a" } else { "b" };
        publish(&hub, channel, &format!("{i:02}{big}")).await;
    }
    let limit = BatchLimit {
        messages: 100,
        bytes: 3500,
    };
    let mut received = Vec::new();
    loop {
        let batch = sub.ready_batch(limit).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(
            batch.len() <= 3,
            "at most 3 messages of 1002 bytes fit in 3500"
        );
        for item in batch {
            if let Item::Message(m) = item {
                received.push(m.data().as_str()[..2].to_string());
            }
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_message_larger_than_the_budget_still_goes_alone() {
    let hub = hub();
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    publish(&hub, "a", &"y".repeat(10_000)).await;
    publish(&hub, "a", "small").await;
    let limit = BatchLimit {
        messages: 100,
        bytes: 100,
    };
    assert_eq!(sub.ready_batch(limit).await.unwrap().len(), 1);
    assert_eq!(sub.ready_batch(limit).await.unwrap().len(), 1);
    assert!(sub.ready_batch(limit).await.unwrap().is_empty());
}

/// Pending backlog that fills the byte budget exactly, with fresh messages
/// behind it: the fresh ones must come in the next batch, not be skipped.
#[tokio::test]
async fn backlog_and_fresh_messages_under_a_small_byte_budget_all_arrive() {
    let hub = hub();
    let hundred = |tag: char| tag.to_string().repeat(100);
    for tag in ['a', 'b', 'c'] {
        publish(&hub, "x", &hundred(tag)).await;
    }
    let mut sub = hub
        .subscribe(&channels("x"), Start::Backlog(3))
        .await
        .unwrap();
    for tag in ['d', 'e'] {
        publish(&hub, "x", &hundred(tag)).await;
    }
    let limit = BatchLimit {
        messages: 64,
        bytes: 350,
    };
    let mut received = String::new();
    loop {
        let batch = sub.ready_batch(limit).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for item in batch {
            if let Item::Message(m) = item {
                received.push_str(&m.data().as_str()[..1]);
            }
        }
    }
    assert_eq!(received, "abcde");
}

/// A cursor of this history beyond anything it ever stored (a data
/// directory restored from an older backup) is a reset: the ids the client
/// holds may name other messages here.
#[tokio::test]
async fn a_cursor_beyond_the_head_of_the_same_history_is_a_reset() {
    let hub = hub();
    publish(&hub, "a", "one").await;
    let head = publish(&hub, "a", "two").await;
    let ahead = Cursor::new(head.epoch.clone(), Seq(head.seq.0 + 5));
    let mut sub = hub
        .subscribe(&channels("a"), Start::Since(ahead))
        .await
        .unwrap();
    let first = sub.ready_batch(BatchLimit::messages(64)).await.unwrap();
    assert!(
        matches!(&first[0], Item::Gap(Gap { reason: GapReason::Reset, channel }) if channel.as_str() == "a"),
        "{first:?}"
    );
    let data: Vec<&str> = first[1..]
        .iter()
        .map(|item| match item {
            Item::Message(m) => m.data().as_str(),
            Item::Gap(gap) => panic!("a second gap {gap:?}"),
        })
        .collect();
    assert_eq!(data, ["one", "two"]);

    // The head itself is a valid cursor: nothing is missed, nothing reset.
    let mut at_head = hub
        .subscribe(&channels("a"), Start::Since(head))
        .await
        .unwrap();
    assert!(
        at_head
            .ready_batch(BatchLimit::messages(64))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The feed's order only moves forward: a message announced again (or out
/// of order) neither lowers "now" nor reaches a subscriber twice.
#[tokio::test]
async fn a_message_announced_again_is_not_delivered_again() {
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    for data in ["one", "two", "three"] {
        publish(&hub, "a", data).await;
    }
    let replayed = store
        .read(
            &name("a"),
            Seq::ZERO,
            Seq(u64::MAX),
            ReadLimit::messages(10),
        )
        .await
        .unwrap()
        .messages;
    let now = hub.now();
    store.listener().committed(&replayed[1]);
    assert_eq!(hub.now(), now, "the watermark went back");
    publish(&hub, "a", "four").await;
    let (messages, _) = take_messages(&mut sub, 4).await;
    assert_eq!(messages, ["a:one", "a:two", "a:three", "a:four"]);
    assert!(
        ready_messages(&mut sub).await.is_empty(),
        "a message came twice"
    );
}

/// Live windows together hold no more than their byte budget; readers
/// behind what the windows hold read the store and lose nothing; a channel
/// nobody follows any more gives its bytes back.
#[tokio::test]
async fn live_windows_keep_within_their_byte_budget_and_readers_lose_nothing() {
    let store = Arc::new(MemoryStore::new(StoreOptions::default()));
    let hub = Hub::new(
        store,
        HubConfig {
            live_window: 256,
            live_window_bytes: 1_000,
            ..HubConfig::default()
        },
    );
    let mut a = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    let mut b = hub.subscribe(&channels("b"), Start::Now).await.unwrap();
    let hundred = "x".repeat(100);
    for i in 0..40 {
        let channel = if i % 2 == 0 { "a" } else { "b" };
        publish(&hub, channel, &format!("{i:02}{hundred}")).await;
        assert!(
            hub.live_window_bytes() <= 1_000,
            "{}",
            hub.live_window_bytes()
        );
    }
    assert!(hub.live_window_bytes() > 500, "the windows are in use");
    let (from_a, _) = take_messages(&mut a, 20).await;
    let (from_b, _) = take_messages(&mut b, 20).await;
    let numbers = |messages: Vec<String>| -> Vec<u32> {
        messages
            .iter()
            .map(|m| m.split_once(':').unwrap().1[..2].parse().unwrap())
            .collect()
    };
    assert_eq!(numbers(from_a), (0..40).step_by(2).collect::<Vec<_>>());
    assert_eq!(numbers(from_b), (1..40).step_by(2).collect::<Vec<_>>());
    drop(a);
    drop(b);
    assert_eq!(hub.live_window_bytes(), 0);
}

fn publication(channel: &str, data: &str, key: Option<&str>) -> Publication {
    Publication {
        idempotency_key: key.map(|key| IdempotencyKey::new(key).expect("valid key")),
        ..Publication::new(
            name(channel),
            EventType::message(),
            Data::from(data.to_string()),
        )
    }
}

/// A batch reaches a subscriber of several of its channels in the batch's
/// order; results come in the same order; a repeated key is answered as
/// the original was (its id and subscribers) and delivered once.
#[tokio::test]
async fn a_batch_is_delivered_in_its_order_and_repeats_are_not_delivered() {
    let hub = hub();
    let mut both = hub.subscribe(&channels("a,b"), Start::Now).await.unwrap();
    let batch = vec![
        publication("b", "1", None),
        publication("a", "2", Some("k")),
        publication("b", "3", None),
        publication("a", "2", Some("k")),
    ];
    let published = hub.publish_batch(batch).await.unwrap();
    assert_eq!(published.len(), 4);
    assert!(
        published[..3]
            .iter()
            .all(|p| !p.repeat && p.subscribers == 1)
    );
    assert!(published[3].repeat);
    assert_eq!(published[3].id, published[1].id);
    let seqs: Vec<u64> = published.iter().map(|p| p.id.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3, 2]);
    let later = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    let again = hub
        .publish_batch(vec![publication("a", "2", Some("k"))])
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Published {
            repeat: true,
            ..published[1].clone()
        }
    );
    drop(later);
    publish(&hub, "a", "last").await;
    let (messages, gaps) = take_messages(&mut both, 4).await;
    assert_eq!(messages, ["b:1", "a:2", "b:3", "a:last"]);
    assert!(gaps.is_empty());
    let stats = hub.stats();
    assert_eq!((stats.published, stats.repeats), (4, 2));
}

/// A key reused for other content fails the whole batch, naming the
/// publication; nothing of it is stored or delivered.
#[tokio::test]
async fn a_conflicting_key_publishes_nothing_of_the_batch() {
    let hub = hub();
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    hub.publish_batch(vec![publication("a", "x", Some("k"))])
        .await
        .unwrap();
    let refused = hub
        .publish_batch(vec![
            publication("a", "fine", None),
            publication("a", "y", Some("k")),
        ])
        .await;
    assert!(matches!(
        refused,
        Err(HubError::IdempotencyConflict { index: 1 })
    ));
    publish(&hub, "a", "after").await;
    let (messages, _) = take_messages(&mut sub, 2).await;
    assert_eq!(messages, ["a:x", "a:after"]);
}

/// A node whose feed fell behind skips ahead (messages stored, never
/// announced to it): its subscribers read the skipped messages from the
/// store, in order, with no gap, then go on live.
#[tokio::test]
async fn after_the_store_skips_ahead_subscribers_read_what_was_skipped() {
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    let mut sub = hub.subscribe(&channels("a,b"), Start::Now).await.unwrap();
    publish(&hub, "a", "1").await;
    assert_eq!(take_messages(&mut sub, 1).await.0, ["a:1"]);
    store.mute(true);
    for (channel, data) in [("b", "2"), ("a", "3"), ("b", "4"), ("a", "5")] {
        publish(&hub, channel, data).await;
    }
    store.mute(false);
    store.listener().skipped_to(store.head());
    assert_eq!(hub.now().seq, store.head(), "now moved past the skip");
    publish(&hub, "a", "6").await;
    let (messages, gaps) = take_messages(&mut sub, 5).await;
    assert_eq!(messages, ["b:2", "a:3", "b:4", "a:5", "a:6"]);
    assert!(gaps.is_empty(), "{gaps:?}");
}

/// The history behind the hub is replaced while it runs (a shared store
/// lost its data): a subscriber waiting for its next batch is woken with a
/// reset gap for each of its channels, then receives the new history's
/// messages under the new epoch; "now" and cursors are in the new epoch.
#[tokio::test]
async fn a_new_history_is_a_reset_gap_for_every_live_subscription_then_goes_on() {
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    let mut sub = hub.subscribe(&channels("a,b"), Start::Now).await.unwrap();
    let old = publish(&hub, "a", "old").await;
    assert_eq!(take_messages(&mut sub, 1).await.0, ["a:old"]);
    let waiting = tokio::spawn(async move {
        let batch = tokio::time::timeout(
            Duration::from_secs(10),
            sub.next_batch(BatchLimit::messages(64)),
        )
        .await
        .expect("woken by the change")
        .expect("batch");
        (sub, batch)
    });
    tokio::task::yield_now().await;
    let epoch = store.replace_history();
    let (mut sub, batch) = waiting.await.unwrap();
    let gaps: Vec<_> = batch
        .iter()
        .map(|item| match item {
            Item::Gap(gap) => (gap.channel.to_string(), gap.reason),
            Item::Message(m) => panic!("a message before the gaps: {m:?}"),
        })
        .collect();
    assert_eq!(
        gaps,
        [
            ("a".to_string(), GapReason::Reset),
            ("b".to_string(), GapReason::Reset)
        ]
    );
    assert_eq!(hub.epoch(), epoch);
    assert_eq!(hub.now().epoch, epoch);
    let new = publish(&hub, "b", "new").await;
    assert_eq!(new.epoch, epoch);
    assert_ne!(new.epoch, old.epoch);
    let (messages, gaps) = take_messages(&mut sub, 1).await;
    assert_eq!(messages, ["b:new"]);
    assert!(gaps.is_empty(), "one reset, not two: {gaps:?}");
    assert_eq!(sub.cursor(), new);
    // A client coming back with an id of the old history is told too.
    let mut late = hub
        .subscribe(&channels("a"), Start::Since(old))
        .await
        .unwrap();
    let batch = late.ready_batch(BatchLimit::messages(64)).await.unwrap();
    assert!(
        matches!(&batch[..], [Item::Gap(gap)] if gap.reason == GapReason::Reset),
        "{batch:?}"
    );
}

/// `publish_answering` gives its answer exactly what it returns, a repeat
/// included, once, and hands back what the answer returned; a refused
/// publication gets no answer.
#[tokio::test]
async fn publish_answering_answers_what_it_returns_and_nothing_when_refused() {
    let hub = hub();
    let mut sub = hub.subscribe(&channels("a"), Start::Now).await.unwrap();
    let answers: Arc<Mutex<Vec<Published>>> = Arc::default();
    let answer = || {
        let answers = answers.clone();
        move |published: &Published| {
            answers.lock().unwrap().push(published.clone());
            published.id.seq
        }
    };

    let (first, answered) = hub
        .publish_answering(publication("a", "1", Some("k")), answer())
        .await
        .unwrap();
    assert_eq!(answered, Some(first.id.seq));
    assert!(!first.repeat);
    assert_eq!(first.subscribers, 1);
    let (again, answered) = hub
        .publish_answering(publication("a", "1", Some("k")), answer())
        .await
        .unwrap();
    assert_eq!(answered, Some(first.id.seq));
    assert_eq!(
        again,
        Published {
            repeat: true,
            ..first.clone()
        }
    );
    let refused = hub
        .publish_answering(publication("a", "other", Some("k")), answer())
        .await;
    assert!(matches!(
        refused,
        Err(HubError::IdempotencyConflict { index: 0 })
    ));

    assert_eq!(*answers.lock().unwrap(), [first, again]);
    publish(&hub, "a", "last").await;
    let (messages, _) = take_messages(&mut sub, 2).await;
    assert_eq!(messages, ["a:1", "a:last"]);
    let stats = hub.stats();
    assert_eq!((stats.published, stats.repeats), (2, 1));
}
