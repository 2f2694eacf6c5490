//! Prometheus metrics of `skolflode sink`. Names follow
//! `skolflode_sink_<name>_<unit>`; labels are low-cardinality (table,
//! outcome, register).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// The sink's metrics, in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Snapshot records by table and outcome (`held`, `completed`,
    /// `stale`, `bad`).
    pub records: IntCounterVec,
    /// Whole revisions by table and kind (`new`, `redelivered`).
    pub revisions: IntCounterVec,
    /// Files renamed into place, by register (`weekly`, `yearly`).
    pub files: IntCounterVec,
    /// Rows written to the weekly register (`table="all"`: both tables).
    pub rows: IntCounterVec,
    /// Seconds each write of what is whole took.
    pub flush_seconds: Histogram,
    /// Revisions still incomplete.
    pub incomplete: IntGauge,
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
        let records = counter(
            "skolflode_sink_records_total",
            "Snapshot records read, by table and what became of them",
            &["table", "outcome"],
        )?;
        let revisions = counter(
            "skolflode_sink_revisions_total",
            "Whole week revisions read (new: written; redelivered: already held)",
            &["table", "kind"],
        )?;
        let files = counter(
            "skolflode_sink_files_written_total",
            "Register files renamed into place",
            &["register"],
        )?;
        let rows = counter(
            "skolflode_sink_rows_written_total",
            "Rows written to weekly register files (a rewritten week counts again)",
            &["table"],
        )?;
        let flush_seconds = Histogram::with_opts(HistogramOpts::new(
            "skolflode_sink_flush_seconds",
            "Time to write the registers of what is whole and the checkpoint",
        ))?;
        registry.register(Box::new(flush_seconds.clone()))?;
        let incomplete = IntGauge::new(
            "skolflode_sink_incomplete_revisions",
            "Week revisions of which some rows have been read",
        )?;
        registry.register(Box::new(incomplete.clone()))?;
        Ok(Metrics {
            registry,
            records,
            revisions,
            files,
            rows,
            flush_seconds,
            incomplete,
        })
    }
}
