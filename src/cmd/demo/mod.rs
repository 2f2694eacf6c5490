//! `skolflode demo`: the whole pipeline on a simulated municipality.
//!
//! Starts its own Kafka broker (the project's `scripts/kafka`, on fresh
//! storage, so that nothing of an earlier run mixes in), serves the
//! simulator, reads it with the SS 12000 producer once a simulated day,
//! turns the change topics into weekly snapshots with the processor,
//! writes the Parquet registers with the sink, and checks them against the
//! simulator's ground truth with a checker that reads the truth and the
//! files itself ([`check`]).

mod check;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::Datelike;
use skolflode_kafka::KafkaConfig;
use skolflode_processors::weekly::metrics::Metrics as ProcessMetrics;
use skolflode_processors::weekly::run::{self as process, Outputs};
use skolflode_processors::weekly::ProcessConfig;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, Runner};
use skolflode_producers::ss12000::client::{ClientConfig, Secret};
use skolflode_simulator::config::{Evolution, Faults, Preset};
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_sinks::metrics::Metrics as SinkMetrics;
use skolflode_sinks::SinkConfig;

const CONNECTION: &str = "demo";
const MARKER: &str = ".skolflode-demo";
/// The simulator's truth settles a week ten days after its Sunday. The
/// demo closes weeks as late (its grace), so that the registers hold
/// exactly the weeks the truth has settled and every one is checked.
const SETTLE_DAYS: i64 = 10;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the registers (`registers/`) and the simulator's ground truth
    /// (`truth/`) go. Emptied first, if an earlier demo wrote it.
    #[arg(long, default_value = "out")]
    out: PathBuf,

    /// Simulated school weeks from the start of the autumn term (default:
    /// the whole autumn term, to the Christmas break).
    #[arg(long)]
    weeks: Option<u32>,

    /// Pupils (default: the municipality preset's, about 10 000).
    #[arg(long)]
    pupils: Option<u32>,

    /// The processor's memory for entities per task, in MiB; beyond it they
    /// go to its disk store (0: all in memory). Default: the processor's.
    #[arg(long)]
    memory_per_task_mib: Option<usize>,

    /// The simulation's seed: the same seed gives the same registers, byte
    /// for byte.
    #[arg(long, default_value_t = 7)]
    seed: u64,

    /// The pseudonym key (at least 32 bytes). The default is the demo's
    /// own key for its simulated people; never use it for real data.
    #[arg(long, default_value = "deploy/demo/pseudonym.key")]
    pseudonym_key_file: PathBuf,

    /// Port of the demo's own Kafka broker (started by `scripts/kafka` on
    /// fresh storage).
    #[arg(long, default_value_t = 9392)]
    kafka_port: u16,

    /// Leave the demo's broker running at the end, to look at its topics.
    #[arg(long)]
    keep_kafka: bool,
}

/// The repository's `scripts/kafka`: from the working directory, else next
/// to the binary (`target/release/skolflode`).
fn kafka_script() -> anyhow::Result<PathBuf> {
    let mut candidates = vec![PathBuf::from("scripts/kafka")];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(repo) = exe.ancestors().nth(3) {
            candidates.push(repo.join("scripts/kafka"));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("scripts/kafka not found: run the demo from the repository (scripts/demo)")
}

/// The demo's broker, stopped and its storage removed when dropped unless
/// kept: the topics of a term are gigabytes, and the next demo starts
/// afresh anyway.
struct Broker {
    script: PathBuf,
    port: u16,
    keep: bool,
    bootstrap: String,
}

impl Broker {
    fn start(port: u16, keep: bool) -> anyhow::Result<Broker> {
        let script = kafka_script()?;
        // A broker left by an earlier demo holds its topics: start afresh.
        let _ = std::process::Command::new(&script)
            .arg("stop")
            .env("KAFKA_PORT", port.to_string())
            .stderr(std::process::Stdio::null())
            .status();
        println!("demo: starting Kafka on 127.0.0.1:{port} (scripts/kafka, fresh storage)");
        let output = std::process::Command::new(&script)
            .arg("start")
            .env("KAFKA_PORT", port.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!("{} start failed", script.display());
        }
        let bootstrap = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP=").map(str::to_owned))
            .context("scripts/kafka start printed no KAFKA_BOOTSTRAP")?;
        Ok(Broker {
            script,
            port,
            keep,
            bootstrap,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.keep {
            println!(
                "demo: Kafka keeps running at {} (KAFKA_PORT={} scripts/kafka stop)",
                self.bootstrap, self.port
            );
            return;
        }
        let _ = std::process::Command::new(&self.script)
            .arg("purge")
            .env("KAFKA_PORT", self.port.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Empty `out` of an earlier demo's files; refuse a directory the demo did
/// not make.
fn prepare(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(MARKER).exists() {
            bail!(
                "{} holds files the demo did not write: give another --out",
                out.display()
            );
        }
        for sub in ["registers", "truth", "quality"] {
            let dir = out.join(sub);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(MARKER), "written by skolflode demo\n")
        .with_context(|| format!("writing in {}", out.display()))?;
    Ok(())
}

fn simulation(seed: u64, pupils: Option<u32>, truth: &Path) -> anyhow::Result<Simulation> {
    let config = SimConfig {
        seed,
        preset: Preset::Municipality,
        pupils,
        // The Skola24 producer is not built yet: every unit's timetable
        // and attendance are in the SS 12000 vendor.
        skola24_share: 0.0,
        evolution: Evolution {
            teacher_reassignments_per_activity_and_term: 0.6,
            teacher_departures_per_term: 0.5,
            class_moves_per_pupil_and_term: 0.1,
            school_moves_per_pupil_and_term: 0.05,
            ..Evolution::default()
        },
        faults: Faults {
            server_errors: 0.02,
            rate_limited: 0.02,
            retry_after_secs: 0,
            repeated_items: 0.02,
            expired_tokens: 0.02,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let mut sim = Simulation::new(config, Some(truth.to_path_buf())).context("the simulation")?;
    let before = sim.world.year.autumn.0 - chrono::Duration::days(2);
    sim.advance_to(before).context("simulating the summer")?;
    Ok(sim)
}

fn rate(n: u64, seconds: f64) -> String {
    format!("{:.0}/s", n as f64 / seconds.max(1e-3))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    prepare(&args.out)?;
    let pseudonymiser = Arc::new(
        Pseudonymiser::from_config(Some(&args.pseudonym_key_file)).context("the pseudonym key")?,
    );
    let key = std::fs::read_to_string(&args.pseudonym_key_file)
        .with_context(|| format!("reading {}", args.pseudonym_key_file.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        crate::cmd::shutdown_signal().await;
        println!("demo: stopping");
        flag.store(true, Ordering::Relaxed);
    });

    let broker = Broker::start(args.kafka_port, args.keep_kafka)?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        ..KafkaConfig::default()
    };
    runner::ensure_topics(&kafka)
        .await
        .context("creating the topics")?;

    // The simulator.
    let truth = args.out.join("truth");
    println!(
        "demo: simulating a municipality (seed {}) up to the autumn term",
        args.seed
    );
    let sim = {
        let (seed, pupils, truth) = (args.seed, args.pupils, truth.clone());
        tokio::task::spawn_blocking(move || simulation(seed, pupils, &truth)).await??
    };
    let year = sim.world.year.clone();
    let first_day = sim.day;
    let pupils = sim.config.pupils();
    let state = AppState::new(sim);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, Arc::clone(&state), async move {
        let _ = server_stopped.await;
    }));

    // Days to read: to the Sunday ending the last week wanted, then until
    // the simulator's truth has settled that week (ten days on, when late
    // reports and corrections are in) and the processor has closed it.
    let last_sunday = match args.weeks {
        Some(weeks) => year.autumn.0 + chrono::Duration::days(7 * i64::from(weeks) - 1),
        None => year.autumn.1,
    };
    let last_sunday = last_sunday
        + chrono::Duration::days(i64::from(6 - last_sunday.weekday().num_days_from_monday()));
    let days = (last_sunday - first_day).num_days() + 1 + SETTLE_DAYS + 1;
    let client = ClientConfig {
        base_url: format!("{url}/ss12000/v2"),
        token_url: format!("{url}/oauth2/token"),
        client_id: "skolflode".into(),
        client_secret: Secret::new("simulated-secret"),
        page_limit: 1000,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        max_retries: 12,
        ..ClientConfig::default()
    };
    let connection = ConnectionConfig {
        full_read_every: 7,
        ..ConnectionConfig::new(CONNECTION, client)
    };
    let mut runner = Runner::start(connection, &kafka, Arc::clone(&pseudonymiser))
        .await
        .context("starting the producer")?;
    println!(
        "demo: {pupils} pupils; reading the vendor once a simulated day for {days} days from {first_day}"
    );
    let produce_started = Instant::now();
    for day in 0..days {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        runner.poll().await.context("the producer")?;
        {
            let state = Arc::clone(&state);
            tokio::task::spawn_blocking(move || state.sim().advance_days(1)).await??;
        }
        if day % 7 == 6 || day == days - 1 {
            let events: u64 = runner.stats().events.values().sum();
            println!(
                "demo: produce  {} / {days} days  {events} change events  ({})",
                day + 1,
                rate(events, produce_started.elapsed().as_secs_f64())
            );
        }
    }
    if !stop.load(Ordering::Relaxed) {
        runner.poll().await.context("the producer")?;
    }
    let produced: u64 = runner.stats().events.values().sum();
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    drop(runner);
    let _ = stop_server.send(());
    let _ = server.await;
    if stop.load(Ordering::Relaxed) {
        println!("demo: stopped while producing; nothing more written");
        return Ok(());
    }

    // The processor.
    let process_config = ProcessConfig {
        application_id: "skolflode-demo".into(),
        sources: [(CONNECTION.to_owned(), "ss12000-sim".to_owned())].into(),
        connections: vec![CONNECTION.to_owned()],
        grace_hours: 24 * SETTLE_DAYS as u32,
        memory_per_task_mib: args
            .memory_per_task_mib
            .unwrap_or_else(|| ProcessConfig::default().memory_per_task_mib),
        ..ProcessConfig::default()
    };
    process_config.build()?;
    let outputs = Outputs::default();
    process::ensure_topics(&kafka, &process_config, &outputs).await?;
    println!("demo: process  the change topics into weekly snapshots (exactly once)");
    let process_started = Instant::now();
    let processed = {
        let kafka = kafka.clone();
        let stop = Arc::clone(&stop);
        let metrics = Arc::new(ProcessMetrics::new()?);
        tokio::task::spawn_blocking(move || {
            process::run(
                &kafka,
                &process_config,
                &outputs,
                &metrics,
                process::Until::CaughtUp,
                &stop,
            )
        })
        .await??
    };
    let process_seconds = process_started.elapsed().as_secs_f64();
    println!(
        "demo: process  {} records, {} week revisions  ({})",
        processed.records,
        processed.snapshots,
        rate(processed.records, process_seconds)
    );
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }

    // The sink.
    let registers = args.out.join("registers");
    // The pupil register of 15 October, when the term reached it.
    let year_label = format!("{}-{:02}", year.start_year, (year.start_year + 1) % 100);
    let pupil_register = truth
        .join("pupil_register")
        .join(format!("school_year={year_label}"))
        .join("pupil_register.csv");
    let mut sink_config = SinkConfig {
        out_dir: registers.clone(),
        application_id: "skolflode-demo-sink".into(),
        ..SinkConfig::default()
    };
    if pupil_register.exists() {
        sink_config.pupil_register.files = [(year_label.clone(), pupil_register.clone())].into();
        sink_config.pupil_register.pseudonym_key_file = Some(args.pseudonym_key_file.clone());
    }
    println!(
        "demo: sink     the snapshots into Parquet registers in {}",
        registers.display()
    );
    let sink_started = Instant::now();
    let sunk = crate::cmd::sink::go(
        kafka.clone(),
        sink_config,
        skolflode_sinks::run::Until::CaughtUp,
        Arc::new(SinkMetrics::new()?),
    )
    .await?;
    let sink_seconds = sink_started.elapsed().as_secs_f64();
    println!(
        "demo: sink     {} records, {} weekly and {} yearly files written  ({})",
        sunk.records,
        sunk.weekly_files,
        sunk.yearly_files,
        rate(sunk.records, sink_seconds)
    );
    // The feedback report of the simulated municipality over the weeks
    // registered, while the broker still holds the findings.
    let quality = if stop.load(Ordering::Relaxed) {
        None
    } else {
        let (kafka, registers, out) = (kafka.clone(), registers.clone(), args.out.join("quality"));
        let quality_started = Instant::now();
        let written =
            tokio::task::spawn_blocking(move || quality_report(&kafka, &registers, &out)).await??;
        if let Some((report, html, _)) = &written {
            println!(
                "demo: quality  {}: {} open errors, {} open warnings over {} rules  ({:.1} s)",
                report.organiser,
                report.open_errors,
                report.open_warnings,
                report.rules.len(),
                quality_started.elapsed().as_secs_f64()
            );
            for rule in &report.rules {
                println!(
                    "demo: quality    {:<28} {:>6} open  {}",
                    rule.rule, rule.open, rule.severity
                );
            }
            println!("demo: quality  report: {}", html.display());
        }
        written
    };
    drop(broker);
    if stop.load(Ordering::Relaxed) {
        println!(
            "demo: stopped while writing the registers; what is in {} is whole, but not all",
            registers.display()
        );
        return Ok(());
    }

    // The check.
    let report = check::check(&registers, &truth, key.trim().as_bytes(), CONNECTION)?;
    println!();
    println!("{report}");
    if pupil_register.exists() {
        println!();
        println!("{}", check::coverage(&registers, &year_label)?);
    }
    println!();
    println!("stage      records        seconds   per second");
    for (stage, n, s) in [
        ("produce", produced, produce_seconds),
        ("process", processed.records, process_seconds),
        ("sink", sunk.records, sink_seconds),
    ] {
        println!("{stage:<10} {n:>12} {s:>10.1}   {:>10}", rate(n, s));
    }
    println!();
    println!(
        "registers: {}/weekly/week=*/ and {}/yearly/school_year=*/",
        registers.display(),
        registers.display()
    );
    println!("try:  duckdb -c \"SELECT week, count(*) AS links, sum(minutes) AS minutes FROM read_parquet('{}/weekly/*/teacher_student.parquet', hive_partitioning = true) GROUP BY week ORDER BY week\"", registers.display());
    if let Some((_, html, json)) = &quality {
        println!(
            "quality report: {} (and {})",
            html.display(),
            json.display()
        );
    }
    println!("demo: done in {:.0} s", started.elapsed().as_secs_f64());
    if !report.agrees() {
        bail!("the registers disagree with the simulator's ground truth");
    }
    Ok(())
}

/// The quality report of the organiser of the demo's connection over the
/// weeks in the registers, written in `out`; `None` when nothing was
/// registered.
fn quality_report(
    kafka: &KafkaConfig,
    registers: &Path,
    out: &Path,
) -> anyhow::Result<Option<(skolflode_quality::report::Report, PathBuf, PathBuf)>> {
    let mut weeks: Vec<String> = std::fs::read_dir(registers.join("weekly"))
        .with_context(|| format!("reading {}", registers.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("week="))
                .map(str::to_owned)
        })
        .collect();
    weeks.sort();
    let (Some(from), Some(to)) = (weeks.first(), weeks.last()) else {
        return Ok(None);
    };
    let organisations = skolflode_quality::organisations::read(kafka)?;
    let Some(organiser) = organisations
        .iter()
        .find(|((connection, _), o)| connection == CONNECTION && o.organisation_type == "Huvudman")
        .map(|(_, o)| o.display_name.clone())
    else {
        return Ok(None);
    };
    let config = skolflode_quality::QualityConfig {
        registers: Some(registers.to_owned()),
        connections: vec![CONNECTION.to_owned()],
        ..skolflode_quality::QualityConfig::default()
    };
    let report = crate::cmd::quality::build(kafka, &organisations, &config, &organiser, from, to)?;
    let (html, json) = crate::cmd::quality::write(&report, out)?;
    Ok(Some((report, html, json)))
}
