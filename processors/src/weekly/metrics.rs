//! Prometheus metrics of `skolflode process`. Names follow
//! `skolflode_process_<name>_<unit>`; labels are low-cardinality (task,
//! topic, outcome, rule).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The processor's metrics, registered in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Input records by topic and outcome (`kept`, `repeat`,
    /// `not_processed` — a connection left out by the configuration —,
    /// `dead_letter`, `heartbeat`).
    pub records: IntCounterVec,
    /// Week revisions published, by task (`first` or `revision`).
    pub snapshots: IntCounterVec,
    /// Transactions by task and outcome (`committed`, `aborted`).
    pub transactions: IntCounterVec,
    pub transaction_seconds: HistogramVec,
    /// Input records not yet read, by task (end offsets minus positions,
    /// when the task last looked).
    pub lag: IntGaugeVec,
    /// Entities held in the state, by task.
    pub state_entities: IntGaugeVec,
    /// Estimated bytes of state in memory (bounded by
    /// `memory_per_task_mib`), by task.
    pub state_memory_bytes: IntGaugeVec,
    /// Bytes of the disk store, by task.
    pub state_disk_bytes: IntGaugeVec,
    /// Milliseconds the last restore from the changelog took, by task.
    pub restore_milliseconds: IntGaugeVec,
    /// The vendors' clock as last applied (Unix seconds), by task: the
    /// event-time watermark.
    pub watermark_seconds: IntGaugeVec,
    /// Validation-rule findings open in the weeks computed, by task, rule,
    /// severity and vendor (`docs/quality.md`).
    pub open_findings: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["task"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let records = counter(
            "skolflode_process_records_total",
            "Input records, by topic and what became of them",
            &["topic", "outcome"],
        )?;
        let snapshots = counter(
            "skolflode_process_snapshots_total",
            "Week revisions published (first: the week closed; revision: a correction)",
            &["task", "kind"],
        )?;
        let transactions = counter(
            "skolflode_process_transactions_total",
            "Kafka transactions, by outcome",
            &["task", "outcome"],
        )?;
        let transaction_seconds = HistogramVec::new(
            HistogramOpts::new(
                "skolflode_process_transaction_duration_seconds",
                "Time to write the state changes and commit a transaction",
            ),
            &["task"],
        )?;
        registry.register(Box::new(transaction_seconds.clone()))?;
        let open_findings = IntGaugeVec::new(
            Opts::new(
                "skolflode_process_open_findings",
                "Validation-rule findings open in the weeks computed",
            ),
            &["task", "rule", "severity", "vendor"],
        )?;
        registry.register(Box::new(open_findings.clone()))?;
        Ok(Self {
            open_findings,
            records,
            snapshots,
            transactions,
            transaction_seconds,
            lag: gauge(
                "skolflode_process_lag_records",
                "Input records not yet read",
            )?,
            state_entities: gauge(
                "skolflode_process_state_entities",
                "Entities held in the state",
            )?,
            state_memory_bytes: gauge(
                "skolflode_process_state_memory_bytes",
                "Estimated bytes of state held in memory",
            )?,
            state_disk_bytes: gauge(
                "skolflode_process_state_disk_bytes",
                "Bytes of state in the disk store",
            )?,
            restore_milliseconds: gauge(
                "skolflode_process_restore_milliseconds",
                "Time the last restore of the state from the changelog took",
            )?,
            watermark_seconds: gauge(
                "skolflode_process_watermark_seconds",
                "The latest vendor clock applied (Unix seconds)",
            )?,
            registry,
        })
    }
}
