//! Prometheus metrics of the producer. Names follow
//! `skolflode_producer_<name>_<unit>`; labels are low-cardinality
//! (connection, endpoint, op, kind, outcome).

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::ss12000::client::Stats;

/// The producer's metrics, registered in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub items: IntCounterVec,
    pub pages: IntCounterVec,
    pub events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub findings: IntCounterVec,
    pub transactions: IntCounterVec,
    pub transaction_seconds: HistogramVec,
    pub requests: IntCounterVec,
    pub lag_seconds: IntGaugeVec,
    pub held_entities: IntGaugeVec,
    pub retired: IntCounterVec,
    pub polls: IntCounterVec,
    /// Where a connection's loop spends the time it does not compute:
    /// `pages` (the vendor and the mapping ahead of it), `commit` (Kafka
    /// acknowledging a transaction), `handing_over` (librdkafka's queue).
    pub wait_seconds: CounterVec,
    /// 1 while a connection runs, 0 while it waits to be restarted.
    pub up: IntGaugeVec,
    /// Restarts of a connection after it failed.
    pub restarts: IntCounterVec,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let transaction_seconds = HistogramVec::new(
            HistogramOpts::new(
                "skolflode_producer_transaction_duration_seconds",
                "Time from beginning a Kafka transaction to its commit or abort",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["connection"],
        )?;
        registry.register(Box::new(transaction_seconds.clone()))?;
        let wait_seconds = CounterVec::new(
            Opts::new(
                "skolflode_producer_wait_seconds_total",
                "Time a connection's loop waited, by what it waited on (pages, commit, handing_over)",
            ),
            &["connection", "on"],
        )?;
        registry.register(Box::new(wait_seconds.clone()))?;
        Ok(Self {
            items: counter(&registry, "skolflode_producer_items_fetched_total", "Items read from vendor APIs", &["connection", "endpoint"])?,
            pages: counter(&registry, "skolflode_producer_pages_total", "Pages read from vendor APIs", &["connection", "endpoint"])?,
            events: counter(&registry, "skolflode_producer_events_total", "Change events published", &["connection", "op"])?,
            dead_letters: counter(&registry, "skolflode_producer_dead_letters_total", "Items or pages sent to the dead-letter topic", &["connection"])?,
            findings: counter(&registry, "skolflode_producer_quality_findings_total", "Repairs made to vendor data", &["connection", "kind"])?,
            transactions: counter(&registry, "skolflode_producer_transactions_total", "Kafka transactions by outcome", &["connection", "outcome"])?,
            requests: counter(&registry, "skolflode_producer_requests_total", "Vendor API requests by outcome (ok, retry, rate_limited, server_error, malformed, transport_error, token_refresh)", &["connection", "outcome"])?,
            lag_seconds: gauge(&registry, "skolflode_producer_lag_seconds", "Vendor's clock minus the newest meta.modified seen, after the last read", &["connection", "endpoint"])?,
            held_entities: gauge(&registry, "skolflode_producer_held_entities", "Entities whose last version the producer holds", &["connection", "endpoint"])?,
            retired: counter(&registry, "skolflode_producer_retired_total", "Lessons and attendance records forgotten (state tombstoned, no event) because they left the read window", &["connection", "endpoint"])?,
            polls: counter(&registry, "skolflode_producer_polls_total", "Completed polls (the connection's heartbeat)", &["connection", "outcome"])?,
            up: gauge(&registry, "skolflode_producer_connection_up", "1 while a connection runs, 0 while it waits to be restarted after failing", &["connection"])?,
            restarts: counter(&registry, "skolflode_producer_restarts_total", "Restarts of a connection after it failed", &["connection"])?,
            transaction_seconds,
            wait_seconds,
            registry,
        })
    }

    /// Bring the request counters up to the client's totals.
    pub fn client_stats(&self, connection: &str, now: &Stats, before: &Stats) {
        let pairs = [
            (
                "ok",
                now.requests.saturating_sub(now.retries),
                before.requests.saturating_sub(before.retries),
            ),
            ("retry", now.retries, before.retries),
            ("rate_limited", now.rate_limited, before.rate_limited),
            ("server_error", now.server_errors, before.server_errors),
            ("malformed", now.malformed, before.malformed),
            (
                "transport_error",
                now.transport_errors,
                before.transport_errors,
            ),
            ("token_refresh", now.token_refreshes, before.token_refreshes),
        ];
        for (outcome, n, b) in pairs {
            if n > b {
                self.requests
                    .with_label_values(&[connection, outcome])
                    .inc_by(n - b);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder
            .encode_utf8(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }
}
