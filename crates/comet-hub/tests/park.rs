//! Parked subscriptions (`Subscription::park`): the next message of their
//! channels wakes them and is handed over once, never one that was missed,
//! never after withdrawal, under concurrent publishers too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_hub::{BatchLimit, Catch, Hub, HubConfig, Item, Parked, Start, Subscription};
use comet_protocol::{ChannelList, ChannelName, Cursor, Data, EventType, Message, Seq};
use comet_store::{MemoryStore, Store, StoreOptions};
use tokio::sync::Notify;

mod common;
use common::WrappedStore;

fn hub() -> Hub {
    Hub::new(
        Arc::new(MemoryStore::new(StoreOptions::default())),
        HubConfig::default(),
    )
}

async fn subscribe(hub: &Hub, list: &str, start: Start) -> Subscription {
    let channels = ChannelList::parse(list, 16).expect("valid list");
    hub.subscribe(&channels, start).await.expect("subscribe")
}

async fn publish(hub: &Hub, channel: &str, data: &str) -> Cursor {
    hub.publish(
        &ChannelName::new(channel).expect("valid name"),
        EventType::message(),
        Data::from(data.to_string()),
    )
    .await
    .expect("publish")
    .id
}

fn everything() -> BatchLimit {
    BatchLimit::messages(1000)
}

/// Records what the hub does with a parked subscription.
#[derive(Default)]
struct Recorder {
    wakes: AtomicUsize,
    woken: Notify,
    delivered: Mutex<Vec<String>>,
}

impl Catch for Recorder {
    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.woken.notify_one();
    }

    fn deliver(&self, message: &Arc<Message>) {
        self.delivered
            .lock()
            .unwrap()
            .push(message.data().as_str().to_string());
    }
}

impl Recorder {
    fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }
}

/// Reads `sub` (finding nothing) and parks it with a new recorder, as a
/// long poll does.
async fn park_after_empty_read(sub: &mut Subscription) -> (Arc<Recorder>, Parked) {
    assert!(sub.ready_batch(everything()).await.unwrap().is_empty());
    let recorder = Arc::new(Recorder::default());
    let parked = sub
        .park(recorder.clone())
        .expect("nothing arrived since the read: parked");
    (recorder, parked)
}

#[tokio::test]
async fn a_parked_subscription_is_woken_and_handed_the_next_message_once() {
    let hub = hub();
    let mut sub = subscribe(&hub, "a", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    assert_eq!(recorder.wakes(), 0);
    assert!(parked.caught().is_none());

    publish(&hub, "a", "one").await;
    publish(&hub, "a", "two").await;
    assert_eq!(recorder.wakes(), 1);
    assert_eq!(recorder.delivered(), ["one"]);
    assert_eq!(parked.caught().unwrap().data().as_str(), "one");
}

#[tokio::test]
async fn a_message_of_another_channel_does_not_release_it() {
    let hub = hub();
    let mut sub = subscribe(&hub, "a", Start::Now).await;
    let _b = subscribe(&hub, "b", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    publish(&hub, "b", "elsewhere").await;
    assert_eq!(recorder.wakes(), 0);
    assert!(recorder.delivered().is_empty());
    publish(&hub, "a", "here").await;
    assert_eq!(recorder.delivered(), ["here"]);
    assert_eq!(parked.caught().unwrap().data().as_str(), "here");
}

#[tokio::test]
async fn parking_is_refused_when_anything_was_stored_since_the_last_read() {
    let hub = hub();
    let mut sub = subscribe(&hub, "a", Start::Now).await;
    assert!(sub.ready_batch(everything()).await.unwrap().is_empty());
    publish(&hub, "a", "missed").await;
    let recorder = Arc::new(Recorder::default());
    assert!(sub.park(recorder.clone()).is_none());
    let items = sub.ready_batch(everything()).await.unwrap();
    assert!(matches!(&items[..], [Item::Message(m)] if m.data().as_str() == "missed"));

    // A message of another channel moves the watermark too: refused, and
    // the next read finds nothing, so the one after parks.
    publish(&hub, "b", "elsewhere").await;
    assert!(sub.park(recorder.clone()).is_none());
    assert!(sub.ready_batch(everything()).await.unwrap().is_empty());
    let _parked = sub.park(recorder.clone()).expect("parked");
    publish(&hub, "a", "next").await;
    assert_eq!(recorder.delivered(), ["next"]);
}

#[tokio::test]
async fn a_subscription_of_several_channels_is_caught_once_by_the_first_message() {
    let hub = hub();
    let mut sub = subscribe(&hub, "a,b", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    publish(&hub, "b", "first").await;
    publish(&hub, "a", "second").await;
    assert_eq!(recorder.wakes(), 1);
    assert_eq!(recorder.delivered(), ["first"]);
    assert_eq!(parked.caught().unwrap().data().as_str(), "first");
    drop(parked);
    // The subscription itself still reads on from where it was.
    let items = sub.ready_batch(everything()).await.unwrap();
    assert_eq!(items.len(), 2);
}

#[tokio::test]
async fn a_withdrawn_subscription_is_never_woken_or_handed_anything() {
    let hub = hub();
    let mut sub = subscribe(&hub, "a,b", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    drop(parked);
    publish(&hub, "a", "late").await;
    publish(&hub, "b", "later").await;
    assert_eq!(recorder.wakes(), 0);
    assert!(recorder.delivered().is_empty());
}

#[tokio::test]
async fn a_position_beyond_the_watermark_waits_for_a_message_after_it() {
    // Another node may hand a client a cursor this hub has not reached:
    // the shared store's head is beyond what this hub was told of.
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    let first = publish(&hub, "a", "0").await;
    store.head_ahead_by(2);
    let ahead = Cursor::new(hub.epoch(), Seq(first.seq.0 + 2));
    let mut sub = subscribe(&hub, "a", Start::Since(ahead)).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    publish(&hub, "a", "1").await;
    publish(&hub, "a", "2").await;
    assert!(
        recorder.delivered().is_empty(),
        "not after the position yet"
    );
    publish(&hub, "a", "3").await;
    assert_eq!(recorder.delivered(), ["3"]);
    assert_eq!(parked.caught().unwrap().data().as_str(), "3");
}

/// Long-poll clients over the hub alone: each reads what is ready or parks
/// for the next message, then starts a new subscription from the message's
/// cursor, while several publishers race them on two threads. Everyone
/// must see every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_readers_racing_concurrent_publishers_miss_nothing() {
    const CLIENTS: usize = 40;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 60;
    let hub = hub();
    let mut first = Vec::new();
    for _ in 0..CLIENTS {
        first.push(subscribe(&hub, "a", Start::Now).await);
    }
    let mut clients = Vec::new();
    for subscription in first {
        let hub = hub.clone();
        clients.push(tokio::spawn(async move {
            let mut sub = subscription;
            let mut received: Vec<Arc<Message>> = Vec::new();
            while received.len() < PUBLISHERS * EACH {
                let items = sub.ready_batch(BatchLimit::messages(3)).await.unwrap();
                let last = if items.is_empty() {
                    // Widens the window in which a message can be stored
                    // between the read and the parking.
                    tokio::task::yield_now().await;
                    let recorder = Arc::new(Recorder::default());
                    let Some(parked) = sub.park(recorder.clone()) else {
                        continue;
                    };
                    recorder.woken.notified().await;
                    let caught = parked.caught().expect("woken only when caught");
                    received.push(caught.clone());
                    caught
                } else {
                    for item in &items {
                        let Item::Message(message) = item else {
                            panic!("no gap expected: {item:?}");
                        };
                        received.push(message.clone());
                    }
                    received.last().unwrap().clone()
                };
                // Like a long-poll client: a new subscription from the cursor.
                sub = subscribe(&hub, "a", Start::Since(last.cursor())).await;
            }
            received
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let hub = hub.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..EACH {
                publish(&hub, "a", &format!("{p}-{i}")).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut reference = subscribe(&hub, "a", Start::Backlog(PUBLISHERS * EACH)).await;
    let stored: Vec<Seq> = reference
        .ready_batch(everything())
        .await
        .unwrap()
        .iter()
        .map(|item| match item {
            Item::Message(message) => message.seq(),
            Item::Gap(gap) => panic!("unexpected gap {gap:?}"),
        })
        .collect();
    assert_eq!(stored.len(), PUBLISHERS * EACH);
    for client in clients {
        let received = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("every client finished")
            .unwrap();
        let seqs: Vec<Seq> = received.iter().map(|m| m.seq()).collect();
        assert_eq!(seqs, stored, "a client saw a different sequence");
    }
}

#[tokio::test]
async fn withdrawn_polls_of_a_quiet_channel_do_not_pile_up() {
    // Every slot holds the catch: its reference count tells how many the
    // hub still keeps.
    let hub = hub();
    let mut sub = subscribe(&hub, "quiet", Start::Now).await;
    assert!(sub.ready_batch(everything()).await.unwrap().is_empty());
    let recorder = Arc::new(Recorder::default());
    for _ in 0..10_000 {
        drop(sub.park(recorder.clone()).expect("parked"));
    }
    let kept = Arc::strong_count(&recorder) - 1;
    assert!(kept <= 128, "{kept} withdrawn slots kept");

    let live = Arc::new(Recorder::default());
    let _parked = sub.park(live.clone()).expect("parked");
    publish(&hub, "quiet", "news").await;
    assert_eq!(live.delivered(), ["news"]);
    assert_eq!(recorder.wakes(), 0);
    assert!(recorder.delivered().is_empty());
    assert_eq!(
        Arc::strong_count(&recorder),
        1,
        "the message swept the rest"
    );
}

#[tokio::test]
async fn a_commit_no_publisher_waits_for_wakes_its_polls_at_once() {
    // A message stored behind the hub's back (as when its publisher gave up
    // before the commit, or it came from elsewhere): nobody will hand it
    // over, so the poll is woken at once and finds it itself.
    use comet_store::Store;
    let store = Arc::new(MemoryStore::new(StoreOptions::default()));
    let hub = Hub::new(store.clone(), HubConfig::default());
    let mut sub = subscribe(&hub, "a", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    store
        .append(
            &ChannelName::new("a").unwrap(),
            EventType::message(),
            Data::from("direct".to_string()),
        )
        .await
        .unwrap();
    assert_eq!(recorder.wakes(), 1);
    assert!(recorder.delivered().is_empty());
    assert_eq!(parked.caught().unwrap().data().as_str(), "direct");
}

/// A cursor from another node, beyond what this node heard of and beyond
/// what it thinks the store holds, is legitimate when the shared store
/// confirms its history reached it: the subscription waits for it instead
/// of reporting a reset.
#[tokio::test]
async fn a_cursor_only_the_shared_store_has_reached_waits_instead_of_resetting() {
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    let first = publish(&hub, "a", "0").await;
    store.confirmed_ahead_by(1);
    let ahead = Cursor::new(hub.epoch(), Seq(first.seq.0 + 1));
    let mut sub = subscribe(&hub, "a", Start::Since(ahead)).await;
    let (recorder, _parked) = park_after_empty_read(&mut sub).await;
    publish(&hub, "a", "1").await;
    publish(&hub, "a", "2").await;
    assert_eq!(
        recorder.delivered(),
        ["2"],
        "no reset gap, and only what came after the cursor"
    );
}

/// Parked polls are let go, with nothing caught, when the store skips
/// ahead: a later message would otherwise be handed over as the next one
/// while the skipped ones were never delivered. Read again, they find the
/// skipped messages.
#[tokio::test]
async fn parked_subscriptions_are_let_go_when_the_store_skips_ahead() {
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    let mut sub = subscribe(&hub, "a", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    store.mute(true);
    publish(&hub, "a", "skipped").await;
    store.mute(false);
    store.listener().skipped_to(store.head());
    publish(&hub, "a", "after").await;
    assert_eq!(recorder.wakes(), 1, "let go");
    assert!(
        recorder.delivered().is_empty(),
        "{:?}",
        recorder.delivered()
    );
    assert!(parked.caught().is_none());
    drop(parked);
    let batch = sub.ready_batch(everything()).await.unwrap();
    let data: Vec<_> = batch
        .iter()
        .filter_map(|item| match item {
            Item::Message(message) => Some(message.data().as_str().to_string()),
            Item::Gap(_) => None,
        })
        .collect();
    assert_eq!(data, ["skipped", "after"]);
}

/// When the history is replaced, parked polls are let go with nothing
/// caught, a poll that parks afterwards without reading first is refused,
/// and reading gives the reset gap.
#[tokio::test]
async fn parked_subscriptions_are_let_go_when_the_history_is_replaced() {
    let store = Arc::new(WrappedStore::new());
    let hub = Hub::new(store.clone(), HubConfig::default());
    publish(&hub, "a", "old").await;
    let mut sub = subscribe(&hub, "a", Start::Now).await;
    let (recorder, parked) = park_after_empty_read(&mut sub).await;
    store.replace_history();
    publish(&hub, "a", "new").await;
    assert_eq!(recorder.wakes(), 1, "let go");
    assert!(
        recorder.delivered().is_empty(),
        "{:?}",
        recorder.delivered()
    );
    assert!(parked.caught().is_none());
    drop(parked);
    assert!(
        sub.park(Arc::new(Recorder::default())).is_none(),
        "parked in a history it has not read"
    );
    let batch = sub.ready_batch(everything()).await.unwrap();
    assert!(
        matches!(&batch[0], Item::Gap(gap) if gap.reason == comet_hub::GapReason::Reset),
        "{batch:?}"
    );
}
