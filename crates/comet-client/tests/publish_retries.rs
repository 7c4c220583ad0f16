//! The client's publishes through a proxy that loses the server's answers:
//! it retries with idempotency keys of its own, and every message is
//! stored, and delivered, exactly once. On the memory and durable stores.

use std::collections::BTreeMap;
use std::time::Duration;

use comet_client::{Client, Error, Item, Publication, SubscribeOptions, Transport};
use comet_testkit::{AnswerLosingProxy, Losing, TestServer, TestStore, within};
use futures::StreamExt;

const SINGLES: usize = 60;
const BATCHES: usize = 10;
const BATCH: usize = 20;

async fn stored_once_through_lost_answers(store: TestStore) {
    let server = TestServer::builder().store(store).start();
    let proxy = AnswerLosingProxy::start(server.address(), Losing::Half).await;
    let direct = Client::new(&server.base()).unwrap();
    let options = SubscribeOptions {
        transport: Transport::Sse,
        ..SubscribeOptions::default()
    };
    let mut subscription = direct.subscribe(&["a", "b"], options).await.unwrap();
    let publisher = Client::new(&proxy.base())
        .unwrap()
        .with_publish_retries(30)
        .with_publish_retry_delay(Duration::from_millis(5))
        .with_publish_timeout(Duration::from_secs(5));
    let mut sent = Vec::new();
    for i in 0..SINGLES {
        let data = format!("single {i}");
        let published = within(
            "a publish",
            publisher.publish(["a", "b"][i % 2], data.clone()),
        )
        .await
        .expect("published despite lost answers");
        sent.push((data, published.id));
    }
    for b in 0..BATCHES {
        let batch: Vec<Publication> = (0..BATCH)
            .map(|i| Publication::new(["a", "b"][i % 2], format!("batch {b}.{i}")))
            .collect();
        let results = within("a batch", publisher.publish_batch(&batch))
            .await
            .expect("a batch published despite lost answers");
        for (message, published) in batch.into_iter().zip(results) {
            sent.push((message.data, published.id));
        }
    }
    assert!(
        proxy.lost() >= 10,
        "the proxy lost {} answers: the test shows nothing",
        proxy.lost()
    );

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    while received.values().sum::<usize>() < sent.len() {
        let item = within("every message", subscription.next())
            .await
            .expect("the subscription goes on")
            .expect("no error");
        match item {
            Item::Message(message) => {
                *received.entry(message.data.clone()).or_default() += 1;
                ids.insert(message.data, message.id);
            }
            Item::Gap(gap) => panic!("a gap: {gap:?}"),
        }
    }
    for (data, id) in &sent {
        assert_eq!(received.get(data), Some(&1), "{data} delivered once");
        assert_eq!(
            ids.get(data),
            Some(id),
            "{data}: the answer's id is the stored one"
        );
    }
    assert_eq!(received.len(), sent.len(), "nothing else was delivered");
    // Nothing more arrives: no copy stored late.
    direct.publish("a", "end").await.unwrap();
    match within("the end marker", subscription.next()).await {
        Some(Ok(Item::Message(message))) => assert_eq!(message.data, "end"),
        other => panic!("expected the end marker, got {other:?}"),
    }
}

#[tokio::test]
async fn retried_publishes_are_stored_once_with_the_durable_store() {
    stored_once_through_lost_answers(TestStore::Durable).await;
}

#[tokio::test]
async fn retried_publishes_are_stored_once_with_the_memory_store() {
    stored_once_through_lost_answers(TestStore::Memory).await;
}

/// Without retries, a lost answer is an error: the client does not pretend
/// to know the outcome, and sends no key of its own.
#[tokio::test]
async fn without_retries_a_lost_answer_is_reported() {
    let server = TestServer::start();
    let proxy = AnswerLosingProxy::start(server.address(), Losing::Everything).await;
    let publisher = Client::new(&proxy.base())
        .unwrap()
        .with_publish_retries(0)
        .with_publish_timeout(Duration::from_secs(5));
    let failed = within("a publish", publisher.publish("a", "x")).await;
    assert!(matches!(failed, Err(Error::Http(_))), "{failed:?}");
    let metrics = comet_testkit::metrics(&comet_testkit::client(), &server.base()).await;
    assert_eq!(
        comet_testkit::metric_value(&metrics, "comet_store_idempotency_keys"),
        0,
        "no key was sent"
    );
}
