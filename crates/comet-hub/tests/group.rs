//! Grouped streams through the hub's public API: a [`GroupWriter`] that
//! records what the group hands it, as a transport's socket would take it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use comet_hub::{
    BatchLimit, Encoded, GroupWriter, Hub, HubConfig, Item, Start, Subscription, Written,
};
use comet_protocol::{ChannelList, ChannelName, Data, EventType, Message};
use comet_store::{MemoryStore, StoreOptions};
use tokio::sync::Notify;

const LIMIT: BatchLimit = BatchLimit {
    messages: 256,
    bytes: usize::MAX,
};

fn hub(live_window: usize) -> Hub {
    Hub::new(
        Arc::new(MemoryStore::new(StoreOptions::default())),
        HubConfig {
            live_window,
            ..HubConfig::default()
        },
    )
}

async fn subscribe(hub: &Hub) -> Subscription {
    let channels = ChannelList::parse("news", 4).unwrap();
    hub.subscribe(&channels, Start::Now).await.unwrap()
}

async fn publish(hub: &Hub, data: String) {
    let channel = ChannelName::new("news").unwrap();
    hub.publish(&channel, EventType::message(), Data::from(data))
        .await
        .unwrap();
}

/// What the group wrote, write by write. It takes `takes` writes whole;
/// the next one stops (as a full socket would).
struct Recorder {
    writes: Mutex<Vec<Vec<String>>>,
    takes: usize,
    handed_back: Mutex<bool>,
    changed: Notify,
}

impl Recorder {
    fn new(takes: usize) -> Arc<Self> {
        Arc::new(Self {
            writes: Mutex::new(Vec::new()),
            takes,
            handed_back: Mutex::new(false),
            changed: Notify::new(),
        })
    }

    fn written(&self) -> Vec<String> {
        self.writes.lock().unwrap().concat()
    }

    /// Waits (at most 10 s) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {what}: {} written in {} writes, handed back: {}",
                self.written().len(),
                self.writes.lock().unwrap().len(),
                self.handed_back.lock().unwrap()
            )
        });
    }
}

impl GroupWriter for Recorder {
    fn write(&self, messages: &[Arc<Message>], _: &mut Encoded) -> Written {
        let mut writes = self.writes.lock().unwrap();
        writes.push(
            messages
                .iter()
                .map(|m| m.data().as_str().to_string())
                .collect(),
        );
        let taken = writes.len() <= self.takes;
        drop(writes);
        self.changed.notify_waiters();
        if taken {
            Written::All
        } else {
            Written::Stopped
        }
    }

    fn handed_back(&self) {
        *self.handed_back.lock().unwrap() = true;
        self.changed.notify_waiters();
    }
}

/// The data of the subscription's next batch (within 10 s), which must
/// hold no gap.
async fn next_data(subscription: &mut Subscription) -> Vec<String> {
    let batch = tokio::time::timeout(
        Duration::from_secs(10),
        subscription.next_batch(BatchLimit::messages(16)),
    )
    .await
    .expect("a batch")
    .unwrap();
    batch
        .into_iter()
        .map(|item| match item {
            Item::Message(message) => message.data().as_str().to_string(),
            Item::Gap(gap) => panic!("no gap: {gap:?}"),
        })
        .collect()
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|n| n.to_string()).collect()
}

/// A stream's task, as a transport runs it: in the group while it is
/// caught up, reading on its own when handed back, until it has `count`
/// messages. Everything it received, in the order received, and how many
/// of those the group wrote.
async fn stream(mut subscription: Subscription, count: usize) -> (Vec<String>, usize) {
    let recorder = Recorder::new(usize::MAX);
    let mut read_itself = 0;
    loop {
        *recorder.handed_back.lock().unwrap() = false;
        if let Some(grouped) = subscription.join_group(recorder.clone(), LIMIT) {
            recorder
                .until("everything, or a hand-back", |r| {
                    r.written().len() >= count || *r.handed_back.lock().unwrap()
                })
                .await;
            subscription.leave_group(grouped);
        } else {
            let batch = next_data(&mut subscription).await;
            read_itself += batch.len();
            recorder.writes.lock().unwrap().push(batch);
        }
        let received = recorder.written();
        if received.len() >= count {
            let by_group = received.len() - read_itself;
            return (received, by_group);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_gets_every_message_once_in_order_under_concurrent_publishers() {
    let hub = hub(256);
    let mut streams = Vec::new();
    for _ in 0..50 {
        let subscription = subscribe(&hub).await;
        streams.push(tokio::spawn(stream(subscription, 1000)));
    }
    // Four publishers of 250 messages each, interleaved by the runtime:
    // each stream must see the store's one order, whether the group wrote
    // a message or the stream's task read it.
    let publishers: Vec<_> = (0..4)
        .map(|publisher| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for n in 0..250 {
                    publish(&hub, format!("{publisher}-{n}")).await;
                    // Room for the group's task, so it writes some.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut orders = Vec::new();
    let mut by_group = 0;
    for stream in streams {
        let (received, written_by_group) = stream.await.unwrap();
        by_group += written_by_group;
        assert_eq!(received.len(), 1000, "nothing twice");
        for publisher in 0..4 {
            let own: Vec<&String> = received
                .iter()
                .filter(|data| data.starts_with(&format!("{publisher}-")))
                .collect();
            let expected: Vec<String> = (0..250).map(|n| format!("{publisher}-{n}")).collect();
            assert_eq!(own, expected.iter().collect::<Vec<_>>());
        }
        orders.push(received);
    }
    assert!(
        orders.iter().all(|order| order == &orders[0]),
        "every stream in the store's order"
    );
    assert!(by_group > 0, "the group wrote some of it");
}

#[tokio::test]
async fn a_member_whose_socket_takes_no_more_is_handed_back_and_reads_on_from_there() {
    let hub = hub(256);
    let mut subscription = subscribe(&hub).await;
    let recorder = Recorder::new(0);
    let grouped = subscription.join_group(recorder.clone(), LIMIT).unwrap();
    for data in numbered(3) {
        publish(&hub, data).await;
    }
    recorder
        .until("the hand-back", |r| *r.handed_back.lock().unwrap())
        .await;
    // What the stopped write carried is the stream's to finish: reading on
    // starts after it.
    let carried = recorder.written();
    assert!(!carried.is_empty());
    subscription.leave_group(grouped);
    for data in ["3", "4"] {
        publish(&hub, data.to_string()).await;
    }
    let mut read = carried.clone();
    while read.len() < 5 {
        read.extend(next_data(&mut subscription).await);
    }
    assert_eq!(read, numbered(5));
    assert_eq!(recorder.written(), carried, "nothing written after it");
}

#[tokio::test]
async fn a_member_left_behind_by_the_live_window_is_handed_back_and_reads_the_store() {
    // The window keeps 4 messages; 10 are published before the group's
    // task (on this one thread) gets to run.
    let hub = hub(4);
    let mut subscription = subscribe(&hub).await;
    let recorder = Recorder::new(usize::MAX);
    let grouped = subscription.join_group(recorder.clone(), LIMIT).unwrap();
    for data in numbered(10) {
        publish(&hub, data).await;
    }
    recorder
        .until("the hand-back", |r| *r.handed_back.lock().unwrap())
        .await;
    assert!(
        recorder.written().is_empty(),
        "the window no longer reached"
    );
    subscription.leave_group(grouped);
    let mut read = Vec::new();
    while read.len() < 10 {
        read.extend(next_data(&mut subscription).await);
    }
    assert_eq!(read, numbered(10));
}

#[tokio::test]
async fn only_a_caught_up_subscription_of_one_channel_joins() {
    let hub = hub(256);
    let several = ChannelList::parse("news,sport", 4).unwrap();
    let subscription = hub.subscribe(&several, Start::Now).await.unwrap();
    assert!(
        subscription
            .join_group(Recorder::new(usize::MAX), LIMIT)
            .is_none()
    );

    let mut behind = subscribe(&hub).await;
    publish(&hub, "unread".to_string()).await;
    assert!(
        behind
            .join_group(Recorder::new(usize::MAX), LIMIT)
            .is_none()
    );
    behind.next_batch(LIMIT).await.unwrap();
    assert!(
        behind
            .join_group(Recorder::new(usize::MAX), LIMIT)
            .is_some()
    );
}

/// A writer that fails the way a bug would.
struct Panicking;

impl GroupWriter for Panicking {
    fn write(&self, _: &[Arc<Message>], _: &mut Encoded) -> Written {
        panic!("a writer's bug (this test panics on purpose)");
    }

    fn handed_back(&self) {}
}

#[tokio::test]
async fn a_writer_that_panics_leaves_no_member_unwritten() {
    let hub = hub(256);
    let broken = subscribe(&hub).await;
    let mut healthy = subscribe(&hub).await;
    let _broken = broken.join_group(Arc::new(Panicking), LIMIT).unwrap();
    let recorder = Recorder::new(usize::MAX);
    let grouped = healthy.join_group(recorder.clone(), LIMIT).unwrap();
    publish(&hub, "0".to_string()).await;
    // The pass that panicked gives its members back to their tasks.
    recorder
        .until("the hand-back", |r| *r.handed_back.lock().unwrap())
        .await;
    healthy.leave_group(grouped);
    let mut read = recorder.written();
    while read.is_empty() {
        read.extend(next_data(&mut healthy).await);
    }
    assert_eq!(read, numbered(1));

    // And the next one to join is written by a new task.
    let recorder = Recorder::new(usize::MAX);
    let _grouped = healthy.join_group(recorder.clone(), LIMIT).unwrap();
    publish(&hub, "1".to_string()).await;
    recorder
        .until("the next message", |r| !r.written().is_empty())
        .await;
    assert_eq!(recorder.written(), ["1"]);
}

#[tokio::test]
async fn a_group_lets_go_of_its_writers_once_the_last_member_left() {
    let hub = hub(256);
    let mut subscription = subscribe(&hub).await;
    let recorder = Recorder::new(usize::MAX);
    let grouped = subscription.join_group(recorder.clone(), LIMIT).unwrap();
    publish(&hub, "0".to_string()).await;
    recorder
        .until("the message", |r| !r.written().is_empty())
        .await;
    subscription.leave_group(grouped);
    // Only this test holds the writer once the group's task has ended (a
    // task left running would keep it, and its channel, for good).
    tokio::time::timeout(Duration::from_secs(10), async {
        while Arc::strong_count(&recorder) > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the group let go of the writer");
}

/// A writer of one kind of encoding that counts the encodings it made.
struct Encoding {
    kind: u8,
    made: Arc<AtomicUsize>,
    got: Mutex<Vec<Bytes>>,
    changed: Arc<Notify>,
}

impl GroupWriter for Encoding {
    fn write(&self, messages: &[Arc<Message>], encoded: &mut Encoded) -> Written {
        let bytes = encoded.get_or_insert_with(self.kind, || {
            self.made.fetch_add(1, Ordering::SeqCst);
            let data: Vec<&str> = messages.iter().map(|m| m.data().as_str()).collect();
            Bytes::from(format!("{}:{}", self.kind, data.join(",")))
        });
        self.got.lock().unwrap().push(bytes);
        self.changed.notify_waiters();
        Written::All
    }

    fn handed_back(&self) {}
}

#[tokio::test]
async fn members_given_the_same_messages_share_each_kind_of_encoding() {
    let hub = hub(256);
    let made = Arc::new(AtomicUsize::new(0));
    let changed = Arc::new(Notify::new());
    let mut members = Vec::new();
    for kind in [0, 0, 1, 0, 1] {
        let subscription = subscribe(&hub).await;
        let writer = Arc::new(Encoding {
            kind,
            made: made.clone(),
            got: Mutex::new(Vec::new()),
            changed: changed.clone(),
        });
        let grouped = subscription.join_group(writer.clone(), LIMIT).unwrap();
        members.push((subscription, grouped, writer));
    }
    let writes_each = |count: usize| {
        let members = &members;
        let changed = changed.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let notified = changed.notified();
                    if members
                        .iter()
                        .all(|(_, _, writer)| writer.got.lock().unwrap().len() >= count)
                    {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .expect("every member written");
        }
    };
    publish(&hub, "a".to_string()).await;
    writes_each(1).await;
    assert_eq!(made.load(Ordering::SeqCst), 2, "one encoding per kind");
    publish(&hub, "b".to_string()).await;
    writes_each(2).await;
    assert_eq!(
        made.load(Ordering::SeqCst),
        4,
        "other messages, new encodings"
    );
    for (_, _, writer) in &members {
        let got = writer.got.lock().unwrap();
        let kind = writer.kind;
        assert_eq!(
            *got,
            vec![
                Bytes::from(format!("{kind}:a")),
                Bytes::from(format!("{kind}:b"))
            ],
            "each member got its own kind, of its own messages"
        );
    }
}

#[tokio::test]
async fn members_at_different_positions_get_their_own_messages_encoded() {
    // On this one thread the group's task runs only once the test waits:
    // one pass finds the first member two messages behind and the second
    // one behind.
    let hub = hub(256);
    let made = Arc::new(AtomicUsize::new(0));
    let changed = Arc::new(Notify::new());
    let writer = || {
        Arc::new(Encoding {
            kind: 0,
            made: made.clone(),
            got: Mutex::new(Vec::new()),
            changed: changed.clone(),
        })
    };
    let (first, second) = (writer(), writer());
    let early = subscribe(&hub).await;
    let _early = early.join_group(first.clone(), LIMIT).unwrap();
    publish(&hub, "a".to_string()).await;
    let late = subscribe(&hub).await;
    let _late = late.join_group(second.clone(), LIMIT).unwrap();
    publish(&hub, "b".to_string()).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notified = changed.notified();
            if !second.got.lock().unwrap().is_empty() {
                return;
            }
            notified.await;
        }
    })
    .await
    .expect("the second member written");
    assert_eq!(*first.got.lock().unwrap(), vec![Bytes::from("0:a,b")]);
    assert_eq!(*second.got.lock().unwrap(), vec![Bytes::from("0:b")]);
    assert_eq!(made.load(Ordering::SeqCst), 2);
}
