//! A term against the simulator: the vendor's world with a lively term
//! (teacher reassignments and departures, class and school moves) and API
//! faults, and a connection configured to poll it often with small
//! transactions, so that kills and commits land mid-read.

use skolflode_producers::runner::ConnectionConfig;
use skolflode_producers::ss12000::client::{ClientConfig, Secret};
use skolflode_simulator::config::{Evolution, Faults, VendorBehaviour};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;

use crate::HarnessError;

/// The simulation of a term: `pupils` pupils with every unit's lessons and
/// attendance through SS 12000, advanced to two days before the term.
pub fn simulation(
    vendor: VendorBehaviour,
    seed: u64,
    pupils: u32,
    truth: &std::path::Path,
) -> Result<Simulation, HarnessError> {
    simulation_with(vendor, seed, pupils, truth, |_| ())
}

/// [`simulation`], with the configuration changed by `adjust` first.
pub fn simulation_with(
    vendor: VendorBehaviour,
    seed: u64,
    pupils: u32,
    truth: &std::path::Path,
    adjust: impl FnOnce(&mut SimConfig),
) -> Result<Simulation, HarnessError> {
    let mut config = SimConfig {
        seed,
        pupils: Some(pupils),
        skola24_share: 0.0,
        vendor,
        evolution: Evolution {
            teacher_reassignments_per_activity_and_term: 0.6,
            teacher_departures_per_term: 0.5,
            class_moves_per_pupil_and_term: 0.1,
            school_moves_per_pupil_and_term: 0.05,
            ..Evolution::default()
        },
        faults: Faults {
            server_errors: 0.03,
            rate_limited: 0.03,
            retry_after_secs: 0,
            repeated_items: 0.05,
            expired_tokens: 0.05,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    adjust(&mut config);
    let bad = |e: String| HarnessError::Environment(format!("the simulation: {e}"));
    let mut sim =
        Simulation::new(config, Some(truth.to_path_buf())).map_err(|e| bad(e.to_string()))?;
    let before = sim.world.year.autumn.0 - chrono::Duration::days(2);
    sim.advance_to(before).map_err(|e| bad(e.to_string()))?;
    Ok(sim)
}

/// A client of the simulator at `url`: its credentials, pages of
/// `page_limit`, and quick retries through its API faults.
pub fn client(url: &str, page_limit: u32) -> ClientConfig {
    ClientConfig {
        base_url: format!("{url}/ss12000/v2"),
        token_url: format!("{url}/oauth2/token"),
        client_id: "skolflode".into(),
        client_secret: Secret::new("simulated-secret"),
        page_limit,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        max_retries: 12,
        ..ClientConfig::default()
    }
}

/// A connection to the simulator at `url` that polls every second, reads
/// in full every `full_read_every` polls and commits every 2 000 records.
pub fn connection(
    name: &str,
    url: &str,
    full_read_every: i64,
    deletion_feed: bool,
) -> ConnectionConfig {
    let client = client(url, 500);
    ConnectionConfig {
        poll_interval_secs: 1,
        full_read_every,
        overlap_secs: 3600,
        deletion_feed,
        max_transaction_records: 2_000,
        ..ConnectionConfig::new(name, client)
    }
}

/// A connection whose vendor was read for some days of a lively term.
#[derive(Debug)]
pub struct ProducedTerm {
    /// The connection's name.
    pub name: String,
    /// The vendor system's name, the registers' `source`.
    pub source: String,
    /// Where the simulator wrote its ground truth (deleted with it).
    pub truth: crate::Scratch,
}

/// Serve a simulated vendor behaving as `vendor` from two days before the
/// autumn term, and read it with the producer once a simulated day for
/// `days` days (full reads weekly), into the change topics.
pub async fn produce_days(
    kafka: &skolflode_kafka::KafkaConfig,
    pseudonymiser: &std::sync::Arc<skolflode_producers::pseudonym::Pseudonymiser>,
    vendor: VendorBehaviour,
    seed: u64,
    pupils: u32,
    days: u32,
) -> Result<ProducedTerm, HarnessError> {
    produce_days_with(kafka, pseudonymiser, vendor, seed, pupils, days, |_| ()).await
}

/// [`produce_days`], with the simulation's configuration changed by
/// `adjust` first.
pub async fn produce_days_with(
    kafka: &skolflode_kafka::KafkaConfig,
    pseudonymiser: &std::sync::Arc<skolflode_producers::pseudonym::Pseudonymiser>,
    vendor: VendorBehaviour,
    seed: u64,
    pupils: u32,
    days: u32,
    adjust: impl FnOnce(&mut SimConfig),
) -> Result<ProducedTerm, HarnessError> {
    let bad = |e: String| HarnessError::Environment(format!("producing a term: {e}"));
    let dated = vendor.dated_assignments;
    let source = vendor.name.clone();
    let name = crate::unique(if dated { "dated" } else { "overwritten" });
    let truth = crate::Scratch::new("term-truth")?;
    let served = crate::pipeline::Vendor::serve(simulation_with(
        vendor,
        seed,
        pupils,
        truth.path(),
        adjust,
    )?)
    .await?;
    let mut runner = skolflode_producers::runner::Runner::start(
        connection(&name, &served.url, 7, dated),
        kafka,
        std::sync::Arc::clone(pseudonymiser),
    )
    .await
    .map_err(|e| bad(e.to_string()))?;
    for _ in 0..days {
        runner.poll().await.map_err(|e| bad(e.to_string()))?;
        served
            .state
            .sim()
            .advance_days(1)
            .map_err(|e| bad(e.to_string()))?;
    }
    runner.poll().await.map_err(|e| bad(e.to_string()))?;
    Ok(ProducedTerm {
        name,
        source,
        truth,
    })
}
