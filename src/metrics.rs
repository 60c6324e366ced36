//! What an operator sees at `GET /metrics`, in the Prometheus (OpenMetrics) text format. One
//! [`Metrics`] per server, handed to the layers that count (no global registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    pub projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub protocol: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

fn latency() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric Switchboard exports. Cheap to clone (each metric is shared).
pub struct Metrics {
    registry: Registry,
    /// Seconds from a command's start to its events committed, by command.
    pub commands: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Events appended to the event store.
    pub events_appended: Counter,
    /// Events a projection has not applied yet (set when scraped).
    pub projection_lag_events: Family<ProjectionLabel, Gauge>,
    /// Age of the oldest event a projection has not applied yet (set when scraped).
    pub projection_lag_seconds: Family<ProjectionLabel, Gauge<f64, AtomicU64>>,
    /// This node's account connections, by network and state (set when scraped).
    pub connections: Family<ConnectionLabels, Gauge>,
    /// Login attempts of accounts after a failure or a drop.
    pub reconnect_attempts: Family<ProtocolLabel, Counter>,
    /// Direct messages received (`in`) and sent (`out`).
    pub messages: Family<DirectionLabel, Counter>,
    /// Errors answered to API clients, by `extensions.code`.
    pub api_errors: Family<CodeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("switchboard"),
            commands: Family::new_with_constructor(latency),
            events_appended: Counter::default(),
            projection_lag_events: Family::default(),
            projection_lag_seconds: Family::default(),
            connections: Family::default(),
            reconnect_attempts: Family::default(),
            messages: Family::default(),
            api_errors: Family::default(),
        };
        let registry = &mut metrics.registry;
        registry.register_with_unit(
            "command_duration",
            "Time from a command's start to its events committed, by command",
            Unit::Seconds,
            metrics.commands.clone(),
        );
        registry.register(
            "events_appended",
            "Events appended to the event store",
            metrics.events_appended.clone(),
        );
        registry.register(
            "projection_lag_events",
            "Events a projection has not applied yet",
            metrics.projection_lag_events.clone(),
        );
        registry.register_with_unit(
            "projection_lag",
            "Age of the oldest event a projection has not applied yet",
            Unit::Seconds,
            metrics.projection_lag_seconds.clone(),
        );
        registry.register(
            "connections",
            "This node's account connections, by network and state",
            metrics.connections.clone(),
        );
        registry.register(
            "reconnect_attempts",
            "Login attempts of accounts after a failure or a drop",
            metrics.reconnect_attempts.clone(),
        );
        registry.register(
            "messages",
            "Direct messages received (in) and sent (out)",
            metrics.messages.clone(),
        );
        registry.register(
            "api_errors",
            "Errors answered to API clients, by code",
            metrics.api_errors.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Records how long one command took.
    pub fn command(&self, kind: &str, seconds: f64) {
        self.commands
            .get_or_create(&KindLabel { kind: kind.into() })
            .observe(seconds);
    }

    /// Counts `n` messages going `direction` (`in` or `out`).
    pub fn messages(&self, direction: &str, n: u64) {
        self.messages
            .get_or_create(&DirectionLabel {
                direction: direction.into(),
            })
            .inc_by(n);
    }

    /// Counts one login attempt after a failure or a drop.
    pub fn reconnect_attempt(&self, protocol: &str) {
        self.reconnect_attempts
            .get_or_create(&ProtocolLabel {
                protocol: protocol.into(),
            })
            .inc();
    }

    /// Counts one error answered with `code`.
    pub fn api_error(&self, code: &str) {
        self.api_errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_in_the_text_with_its_labels() {
        let metrics = Metrics::default();
        metrics
            .commands
            .get_or_create(&KindLabel {
                kind: "MergeContacts".into(),
            })
            .observe(0.004);
        metrics.events_appended.inc_by(3);
        metrics.api_error("CONFLICT");
        let text = metrics.encode();
        assert!(
            text.contains("switchboard_command_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("kind=\"MergeContacts\""), "{text}");
        assert!(
            text.contains("switchboard_events_appended_total 3"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_api_errors_total{code=\"CONFLICT\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
