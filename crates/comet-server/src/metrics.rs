//! Prometheus metrics, through the `prometheus-client` crate.
//!
//! Transport-level figures (deliveries, open subscribers, connections) are
//! counted here as they happen; the hub's own counters (published, gaps,
//! subscribers that fell behind) are read from the hub at scrape time.

use std::fmt::Write as _;

use comet_hub::Hub;

use crate::ServerConfig;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The transports, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Short polling.
    Poll,
    /// Long polling.
    LongPoll,
    /// HTTP streaming (NDJSON).
    Stream,
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    const ALL: [Transport; 5] = [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Stream,
        Transport::Sse,
        Transport::WebSocket,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "longpoll",
            Transport::Stream => "stream",
            Transport::Sse => "sse",
            Transport::WebSocket => "ws",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a connection was refused or closed by the server.
#[derive(Clone, Copy, Debug)]
pub enum ConnectionRefusal {
    /// The connection cap was reached (503).
    Limit,
    /// The request head did not arrive in time (408).
    HeaderTimeout,
    /// The request head was too large (431).
    HeadTooLarge,
    /// The request head was not HTTP (400).
    Malformed,
}

impl ConnectionRefusal {
    fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::Limit => "connection_limit",
            ConnectionRefusal::HeaderTimeout => "header_timeout",
            ConnectionRefusal::HeadTooLarge => "head_too_large",
            ConnectionRefusal::Malformed => "malformed",
        }
    }
}

/// Why a connection ended without a request left unanswered.
#[derive(Clone, Copy, Debug)]
pub enum Closed {
    /// The client closed it.
    ClientClosed,
    /// Nothing arrived within the header timeout.
    Idle,
    /// The socket failed while a request head was awaited.
    ReadFailed,
    /// The server failed while serving it (a bug: the log has the panic).
    ServerError,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Closed::ClientClosed => "client_closed",
            Closed::Idle => "idle",
            Closed::ReadFailed => "read_failed",
            Closed::ServerError => "server_error",
        }
    }
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Each transport's series, looked up once (in `Transport::ALL` order):
    /// counting a delivery is then one atomic add, not a labelled lookup.
    deliveries: [Counter; Transport::ALL.len()],
    subscribers: [Gauge; Transport::ALL.len()],
    connections: Gauge,
    parked_polls: Gauge,
    refused: Family<ReasonLabel, Counter>,
    closed: Family<ReasonLabel, Counter>,
    auth_refused: Family<ReasonLabel, Counter>,
    subscriptions_refused: Counter,
    stalled_disconnects: Counter,
}

impl Metrics {
    /// Metrics for a server over `hub` with `config`.
    pub fn new(hub: Hub, config: &ServerConfig) -> Self {
        let mut registry = Registry::with_prefix("comet");
        let deliveries = Family::<TransportLabel, Counter>::default();
        registry.register(
            "deliveries",
            "Messages written to subscribers, by transport",
            deliveries.clone(),
        );
        let subscribers = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "subscribers",
            "Open subscriptions (held long polls included), by transport",
            subscribers.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        let parked_polls = Gauge::default();
        registry.register(
            "parked_polls",
            "Long polls waiting parked with their connection, answered by the publisher",
            parked_polls.clone(),
        );
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections answered with an error and closed before reaching a route",
            refused.clone(),
        );
        let closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections that ended while no request was being answered, by reason \
             (streams and answered requests are not counted)",
            closed.clone(),
        );
        let auth_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_refused",
            "Requests refused by authorization, by reason",
            auth_refused.clone(),
        );
        let subscriptions_refused = Counter::default();
        registry.register(
            "subscriptions_refused",
            "Subscriptions answered 503 because the subscriber limit was reached",
            subscriptions_refused.clone(),
        );
        let limit = |value: usize| {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            gauge
        };
        registry.register(
            "connection_limit",
            "Most open connections (--max-connections, derived from the open-files limit by default)",
            limit(config.max_connections),
        );
        registry.register(
            "subscriber_limit",
            "Most open subscriptions (--max-subscribers)",
            limit(config.max_subscribers),
        );
        let stalled_disconnects = Counter::default();
        let label = |transport: Transport| TransportLabel {
            transport: transport.as_str(),
        };
        let deliveries = Transport::ALL.map(|t| deliveries.get_or_create(&label(t)).clone());
        let subscribers = Transport::ALL.map(|t| subscribers.get_or_create(&label(t)).clone());
        registry.register_collector(Box::new(HubCollector {
            hub,
            stalled_disconnects: stalled_disconnects.clone(),
        }));
        Self {
            registry,
            deliveries,
            subscribers,
            connections,
            parked_polls,
            refused,
            closed,
            auth_refused,
            subscriptions_refused,
            stalled_disconnects,
        }
    }

    /// Counts a connection that ended while no request was being answered.
    pub fn closed(&self, why: Closed) {
        self.closed
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts a request refused by authorization.
    pub fn auth_refused(&self, reason: &'static str) {
        self.auth_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a subscription refused at the subscriber limit.
    pub fn subscription_refused(&self) {
        self.subscriptions_refused.inc();
    }

    /// Counts `count` messages delivered over `transport`.
    pub fn delivered(&self, transport: Transport, count: usize) {
        if count > 0 {
            self.deliveries[transport as usize].inc_by(count as u64);
        }
    }

    /// Counts an open subscriber until the guard is dropped.
    pub fn subscriber(&self, transport: Transport) -> GaugeGuard {
        let gauge = self.subscribers[transport as usize].clone();
        gauge.inc();
        GaugeGuard(gauge)
    }

    /// Counts a parked long poll until the guard is dropped.
    pub fn parked_poll(&self) -> GaugeGuard {
        self.parked_polls.inc();
        GaugeGuard(self.parked_polls.clone())
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection(&self) -> GaugeGuard {
        self.connections.inc();
        GaugeGuard(self.connections.clone())
    }

    /// Counts a refused connection.
    pub fn refused(&self, why: ConnectionRefusal) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts a connection closed for not reading.
    pub fn stalled_disconnect(&self) {
        self.stalled_disconnects.inc();
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the hub's counters at scrape time.
struct HubCollector {
    hub: Hub,
    stalled_disconnects: Counter,
}

impl std::fmt::Debug for HubCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubCollector")
    }
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.hub.stats();

        let published = ConstCounter::new(stats.published);
        published.encode(encoder.encode_descriptor(
            "messages_published",
            "Messages stored through this server.",
            None,
            published.metric_type(),
        )?)?;

        let repeats = ConstCounter::new(stats.repeats);
        repeats.encode(encoder.encode_descriptor(
            "publish_repeats",
            "Publishes answered as repeats of an earlier one with the same idempotency key and content: nothing stored.",
            None,
            repeats.metric_type(),
        )?)?;

        let paced = ConstCounter::new(stats.paced);
        paced.encode(encoder.encode_descriptor(
            "publish_waits",
            "Publishes whose answer waited for a live subscriber more than --max-lag messages behind (publish back-pressure).",
            None,
            paced.metric_type(),
        )?)?;

        let gave_up = ConstCounter::new(stats.gave_up_waiting);
        gave_up.encode(encoder.encode_descriptor(
            "publish_wait_timeouts",
            "Subscribers a publish stopped waiting for after --max-lag-wait: they hold no publish back until they catch up.",
            None,
            gave_up.metric_type(),
        )?)?;

        let gaps = Family::<ReasonLabel, Counter>::default();
        gaps.get_or_create(&ReasonLabel { reason: "trimmed" })
            .inc_by(stats.gaps_trimmed);
        gaps.get_or_create(&ReasonLabel { reason: "reset" })
            .inc_by(stats.gaps_reset);
        gaps.encode(encoder.encode_descriptor(
            "gaps",
            "Gap signals sent: messages a subscriber missed, by reason.",
            None,
            gaps.metric_type(),
        )?)?;

        let actions = Family::<ActionLabel, Counter>::default();
        actions
            .get_or_create(&ActionLabel {
                action: "replayed_from_history",
            })
            .inc_by(stats.fell_behind);
        actions
            .get_or_create(&ActionLabel {
                action: "disconnected",
            })
            .inc_by(self.stalled_disconnects.get());
        actions.encode(encoder.encode_descriptor(
            "slow_consumer_actions",
            "What happened to subscribers that fell behind: served from stored history, or disconnected after the write timeout.",
            None,
            actions.metric_type(),
        )?)?;

        let gauges = [
            (
                "followed_channels",
                "Channels with at least one subscriber on this server.",
                self.hub.followed_channels() as u64,
            ),
            (
                "live_window_bytes",
                "Bytes of message data the live windows hold (--live-window-bytes bounds it).",
                self.hub.live_window_bytes() as u64,
            ),
        ];
        let footprint = self.hub.store_footprint();
        let store_gauges = [
            (
                "store_channels",
                "Channels the store holds messages of.",
                footprint.channels,
            ),
            (
                "store_forgotten_channels",
                "Channels with nothing retained that the store remembers exactly for gap detection (--forgotten-channels bounds it).",
                footprint.forgotten_channels,
            ),
            (
                "store_messages",
                "Messages the store retains.",
                footprint.messages,
            ),
            (
                "store_bytes",
                "What the retained messages count against --max-store-bytes.",
                footprint.bytes,
            ),
            (
                "store_idempotency_keys",
                "Idempotency keys the store remembers (--idempotency-window and --idempotency-max-keys bound them).",
                footprint.idempotency_keys,
            ),
        ];
        for (name, help, value) in gauges.into_iter().chain(store_gauges) {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let store_metrics = self.hub.store_metrics();
        // Figures of one name (with a label each) go under one descriptor.
        for group in store_metrics.chunk_by(|a, b| a.name == b.name) {
            let first = &group[0];
            let metric_type = if first.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family =
                encoder.encode_descriptor(first.name, first.help, None, metric_type)?;
            if let [alone] = group
                && alone.label.is_none()
            {
                encode_store_metric(alone, family)?;
                continue;
            }
            for metric in group {
                let labels: Vec<(&str, &str)> = metric.label.into_iter().collect();
                encode_store_metric(metric, family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// One figure of the store, as a sample.
fn encode_store_metric(
    metric: &comet_hub::StoreMetric,
    sample: prometheus_client::encoding::MetricEncoder<'_>,
) -> std::fmt::Result {
    if metric.counter {
        ConstCounter::new(metric.value).encode(sample)
    } else {
        ConstGauge::new(i64::try_from(metric.value).unwrap_or(i64::MAX)).encode(sample)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn every_transport_indexes_its_own_series() {
        for (index, transport) in Transport::ALL.into_iter().enumerate() {
            assert_eq!(transport as usize, index, "{transport:?}");
        }
    }
}
