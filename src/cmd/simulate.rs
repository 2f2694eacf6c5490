//! `skolflode simulate`: run the vendor simulator.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use chrono::NaiveDate;
use skolflode_simulator::config::Preset;
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulator configuration (TOML): size, vendor behaviour, rates of
    /// change, data-quality and API faults. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Size: tiny (~100 pupils), municipality (~10 000), city (~60 000).
    #[arg(long)]
    preset: Option<Preset>,

    /// Number of pupils, overriding the preset.
    #[arg(long)]
    pupils: Option<u32>,

    /// Seed: the same seed and configuration give the same world, the same
    /// API responses and the same ground truth.
    #[arg(long)]
    seed: Option<u64>,

    /// The school year, by the year it starts in (2025 for 2025-26).
    #[arg(long)]
    school_year: Option<i32>,

    /// Where to write the ground truth and the change log.
    #[arg(long)]
    truth_dir: Option<PathBuf>,

    /// Simulate up to this day (exclusive) before serving.
    #[arg(long)]
    advance_to: Option<NaiveDate>,

    /// Do not serve: simulate, write the ground truth and exit.
    #[arg(long)]
    no_serve: bool,

    /// Stream one ISO week (e.g. 2025-W36) of every unit as SS 12000 JSON
    /// lines, one unit at a time in bounded memory, and exit. Works for the
    /// national preset.
    #[arg(long, value_name = "YYYY-Www")]
    stream_week: Option<String>,

    /// Where to stream to (default: standard output).
    #[arg(long, requires = "stream_week")]
    stream_out: Option<PathBuf>,

    /// Stream only the first N units.
    #[arg(long, requires = "stream_week")]
    stream_units: Option<u32>,

    /// Address of the vendor APIs.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
}

fn load_config(args: &Args) -> anyhow::Result<SimConfig> {
    let mut config = match &args.config {
        Some(path) => crate::job::read_config(path)?,
        None => SimConfig::default(),
    };
    if let Some(preset) = args.preset {
        config.preset = preset;
    }
    if args.pupils.is_some() {
        config.pupils = args.pupils;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(year) = args.school_year {
        config.school_year = year;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    if config.preset == Preset::National && config.pupils.is_none() && args.stream_week.is_none() {
        anyhow::bail!(
            "the national preset cannot be served whole; give --pupils for a sample of it"
        );
    }
    Ok(config)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    if let Some(week) = &args.stream_week {
        let (year, week) = parse_week(week)?;
        let out = args.stream_out.clone();
        let units = args.stream_units;
        return tokio::task::spawn_blocking(move || stream(&config, year, week, units, out))
            .await?;
    }
    tracing::info!(
        seed = config.seed,
        pupils = config.pupils(),
        school_year = config.school_year,
        "generating the simulated municipality"
    );
    let truth_dir = args.truth_dir.clone();
    let advance_to = args.advance_to;
    let sim = tokio::task::spawn_blocking(move || -> anyhow::Result<Simulation> {
        let mut sim = Simulation::new(config, truth_dir).context("starting the simulation")?;
        if let Some(until) = advance_to {
            while sim.day < until {
                let step = (sim.day + chrono::Duration::days(7)).min(until);
                sim.advance_to(step).context("simulating")?;
                tracing::info!(
                    day = %sim.day,
                    calendar_events = sim.lessons.len(),
                    attendances = sim.records.len(),
                    changes = sim.changes_logged(),
                    "simulated up to"
                );
            }
        }
        Ok(sim)
    })
    .await??;
    tracing::info!(
        persons = sim.world.persons.len(),
        activities = sim.world.activities.len(),
        next_day = %sim.day,
        "simulation ready"
    );
    let state = AppState::new(sim);
    if args.no_serve {
        state.sim().finish().context("writing the ground truth")?;
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving SS 12000 at /ss12000/v2, OAuth2 at /oauth2/token, control at /control");
    println!("SIMULATOR_URL=http://{address}");
    server::serve(listener, state.clone(), super::shutdown_signal()).await?;
    state.sim().finish().context("writing the ground truth")?;
    tracing::info!("stopped; ground truth written");
    Ok(())
}

fn parse_week(text: &str) -> anyhow::Result<(i32, u32)> {
    let (year, week) = text
        .split_once("-W")
        .with_context(|| format!("{text:?} is not an ISO week like 2025-W36"))?;
    let year: i32 = year
        .parse()
        .with_context(|| format!("bad year in {text:?}"))?;
    let week: u32 = week
        .parse()
        .with_context(|| format!("bad week in {text:?}"))?;
    anyhow::ensure!((1..=53).contains(&week), "week {week} is out of range");
    Ok((year, week))
}

fn stream(
    config: &SimConfig,
    year: i32,
    week: u32,
    units: Option<u32>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let total =
        skolflode_simulator::world::World::unit_count(config).min(units.unwrap_or(u32::MAX));
    let started = std::time::Instant::now();
    let progress = |s: &skolflode_simulator::stream::StreamStats| {
        if s.units.is_multiple_of(50) || s.units == total {
            tracing::info!(
                units = s.units,
                of = total,
                items = s.items,
                bytes = s.bytes,
                elapsed_s = started.elapsed().as_secs(),
                "streamed"
            );
        }
    };
    let sink: Box<dyn std::io::Write> = match out {
        Some(path) => Box::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, sink);
    let stats =
        skolflode_simulator::stream::stream_week(config, year, week, units, &mut writer, progress)?;
    tracing::info!(
        units = stats.units,
        items = stats.items,
        calendar_events = stats.calendar_events,
        attendances = stats.attendances,
        bytes = stats.bytes,
        seconds = started.elapsed().as_secs_f64(),
        "week streamed"
    );
    Ok(())
}
