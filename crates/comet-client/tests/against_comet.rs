//! The client against the real server, on every transport: publishing,
//! subscribing to several channels, resuming exactly across a server
//! restart, gaps as their own items, and clear errors.

use std::time::Duration;

use comet_client::{Client, Error, Item, Reconnect, SubscribeOptions, Subscription, Transport};
use comet_store::Retention;
use comet_testkit::{TestServer, within};
use futures::StreamExt;

fn quick(transport: Transport) -> SubscribeOptions {
    SubscribeOptions {
        transport,
        reconnect: Reconnect {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..SubscribeOptions::default().reconnect
        },
        ..SubscribeOptions::default()
    }
}

fn transports() -> [Transport; 5] {
    [
        Transport::Sse,
        Transport::Stream,
        Transport::WebSocket,
        Transport::LongPoll {
            wait: Duration::from_secs(5),
        },
        Transport::Poll {
            interval: Duration::from_millis(5),
        },
    ]
}

async fn next_item(subscription: &mut Subscription) -> Item {
    within("an item", subscription.next())
        .await
        .expect("the subscription goes on")
        .expect("no error")
}

async fn next_message(subscription: &mut Subscription) -> comet_client::Message {
    match next_item(subscription).await {
        Item::Message(message) => message,
        Item::Gap(gap) => panic!("unexpected gap {gap:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_delivers_exactly_once_across_a_server_restart() {
    for transport in transports() {
        let mut server = TestServer::builder()
            .config(|c| c.sse_retry = Duration::from_millis(20))
            .start();
        let client = Client::new(&server.base()).unwrap();
        let mut subscription = client
            .subscribe(&["a", "b"], quick(transport))
            .await
            .unwrap();
        // Start the subscription (it learns "now") before publishing.
        let first = client.publish("a", "first").await.unwrap();
        let message = next_message(&mut subscription).await;
        assert_eq!(
            (message.id.as_str(), message.data.as_str()),
            (first.id.as_str(), "first")
        );

        let mut expected = Vec::new();
        for i in 0..10 {
            let channel = ["a", "b", "c"][i % 3];
            let published = client
                .publish(channel, format!("before {i}"))
                .await
                .unwrap();
            if channel != "c" {
                expected.push((published.id, channel.to_string(), format!("before {i}")));
            }
        }
        // Read half, then the server goes away and comes back (history kept).
        let mut received = Vec::new();
        for _ in 0..3 {
            let m = next_message(&mut subscription).await;
            received.push((m.id, m.channel, m.data));
        }
        server.restart();
        // The publisher's kept-alive connection went with the old server; a
        // publish on it can fail once the request is written (hyper's
        // IncompleteMessage), and a publish is not retried blindly (it
        // could store the message twice). What is tested here is the
        // subscription: publish on fresh connections.
        let publisher = Client::with_http(
            &server.base(),
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        )
        .unwrap();
        for i in 0..10 {
            let channel = ["a", "b", "c"][i % 3];
            let published = publisher
                .publish(channel, format!("after {i}"))
                .await
                .unwrap();
            if channel != "c" {
                expected.push((published.id, channel.to_string(), format!("after {i}")));
            }
        }
        while received.len() < expected.len() {
            let m = next_message(&mut subscription).await;
            received.push((m.id, m.channel, m.data));
        }
        assert_eq!(received, expected, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_and_multi_line_data_come_through_every_transport() {
    let server = TestServer::start();
    let client = Client::new(&server.base()).unwrap();
    for transport in transports() {
        let mut subscription = client
            .subscribe(&["typed"], quick(transport))
            .await
            .unwrap();
        let published = client
            .publish_event("typed", Some("price-update"), "line one\nline two")
            .await
            .unwrap();
        let message = next_message(&mut subscription).await;
        assert_eq!(message.id, published.id, "{transport:?}");
        assert_eq!(message.channel, "typed");
        assert_eq!(message.event, "price-update");
        assert_eq!(message.data, "line one\nline two");
    }
}

#[tokio::test]
async fn since_and_backlog_start_where_asked() {
    let server = TestServer::start();
    let client = Client::new(&server.base()).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(client.publish("news", format!("{i}")).await.unwrap().id);
    }
    for transport in transports() {
        let mut since = client
            .subscribe(
                &["news"],
                SubscribeOptions {
                    since: Some(ids[2].clone()),
                    ..quick(transport)
                },
            )
            .await
            .unwrap();
        assert_eq!(next_message(&mut since).await.data, "3", "{transport:?}");
        assert_eq!(next_message(&mut since).await.data, "4");
        let mut backlog = client
            .subscribe(
                &["news"],
                SubscribeOptions {
                    backlog: Some(2),
                    ..quick(transport)
                },
            )
            .await
            .unwrap();
        assert_eq!(next_message(&mut backlog).await.data, "3", "{transport:?}");
        assert_eq!(next_message(&mut backlog).await.data, "4");
    }
}

#[tokio::test]
async fn gaps_are_items_of_their_own_on_every_transport() {
    let server = TestServer::builder()
        .retention(Retention {
            max_messages: 2,
            ..Retention::default()
        })
        .start();
    let client = Client::new(&server.base()).unwrap();
    let old = client.publish("news", "0").await.unwrap().id;
    for i in 1..5 {
        client.publish("news", format!("{i}")).await.unwrap();
    }
    for transport in transports() {
        let mut subscription = client
            .subscribe(
                &["news"],
                SubscribeOptions {
                    since: Some(old.clone()),
                    ..quick(transport)
                },
            )
            .await
            .unwrap();
        match next_item(&mut subscription).await {
            Item::Gap(gap) => {
                assert_eq!(
                    (gap.channel.as_str(), gap.reason.as_str()),
                    ("news", "trimmed")
                )
            }
            other => panic!("{transport:?}: expected a gap, got {other:?}"),
        }
        assert_eq!(next_message(&mut subscription).await.data, "3");
        assert_eq!(next_message(&mut subscription).await.data, "4");
    }
}

#[tokio::test]
async fn refusals_are_clear_errors() {
    let server = TestServer::builder()
        .config(|c| c.max_body_bytes = 10)
        .start();
    let client = Client::new(&server.base()).unwrap();
    let error = client
        .publish("news", "far too long a body")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Status { status: 413, code: Some(code), .. } if code == "payload_too_large"),
        "{error}"
    );
    let error = client.publish("bad name", "x").await.unwrap_err();
    assert!(matches!(error, Error::InvalidChannel { .. }), "{error}");
    let error = client
        .publish_event("news", Some("comet-gap"), "x")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("reserved_event"), "{error}");
    for transport in transports() {
        let mut subscription = client
            .subscribe(
                &["news"],
                SubscribeOptions {
                    since: Some("not-an-id".into()),
                    ..quick(transport)
                },
            )
            .await
            .unwrap();
        let error = within("the error", subscription.next())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&error, Error::Status { status: 400, code: Some(code), .. } if code == "invalid_cursor"),
            "{transport:?}: {error}"
        );
        assert!(within("the end", subscription.next()).await.is_none());
    }
    assert!(Client::new("ftp://example.com").is_err());
    assert!(Client::new("not a url").is_err());
}

/// A server full of subscribers answers `503 too_many_subscribers`: every
/// transport waits (with backoff) for a place instead of ending, and then
/// delivers from where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_is_waited_for_on_every_transport() {
    for transport in transports() {
        let server = TestServer::builder()
            .config(|c| {
                c.max_connections = 10;
                c.max_subscribers = 1;
            })
            .start();
        let client = Client::new(&server.base()).unwrap();
        let first = client.publish("a", "before").await.unwrap();
        let http = comet_testkit::client();
        let holder = http.get(server.url("/sse/held")).send().await.unwrap();
        assert_eq!(holder.status(), 200);
        let options = SubscribeOptions {
            since: Some(first.id.clone()),
            ..quick(transport)
        };
        let waiting = tokio::spawn({
            let client = client.clone();
            async move {
                let mut subscription = client.subscribe(&["a"], options).await.unwrap();
                next_message(&mut subscription).await
            }
        });
        let refused = |text: String| {
            text.lines()
                .find_map(|line| line.strip_prefix("comet_subscriptions_refused_total "))
                .is_some_and(|count| count.trim() != "0")
        };
        within("a refusal", async {
            while !refused(comet_testkit::metrics(&http, &server.base()).await) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        drop(holder);
        client.publish("a", "after").await.unwrap();
        let message = within("the waiting subscription", waiting).await.unwrap();
        assert_eq!(message.data, "after", "{transport:?}");
    }
}
