//! The simulator's two benchmark figures:
//!
//! 1. the peak memory (and time) of streaming one `national` week, one
//!    school unit at a time;
//! 2. JSON items served per second over HTTP with the server on one core.
//!
//! ```text
//! cargo bench -p skolflode-simulator --bench serve
//! SKOLFLODE_BENCH_UNITS=200 cargo bench -p skolflode-simulator --bench serve   # a sample
//! ```
//!
//! The national stream runs first, so that the process's peak resident
//! memory (VmHWM) is the stream's.

use std::sync::Arc;
use std::time::Instant;

use skolflode_simulator::config::Preset;
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::ss12000::ENDPOINTS;
use skolflode_simulator::stream::stream_week;
use skolflode_simulator::world::World;
use skolflode_simulator::SimConfig;

/// A page, read without building its items.
#[derive(serde::Deserialize)]
struct Skim {
    data: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// Counts what is written, keeps nothing.
struct Counting(u64);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn national(units: Option<u32>) -> Result<(), Box<dyn std::error::Error>> {
    let config = SimConfig {
        preset: Preset::National,
        ..SimConfig::default()
    };
    let total = World::unit_count(&config).min(units.unwrap_or(u32::MAX));
    println!(
        "national week 2025-W36: {total} of {} school units, {} pupils in all",
        World::unit_count(&config),
        config.pupils()
    );
    let started = Instant::now();
    let mut sink = Counting(0);
    let stats = stream_week(&config, 2025, 36, units, &mut sink, |s| {
        if s.units % 200 == 0 {
            eprintln!(
                "  {} units, {} items, {:.0} s",
                s.units,
                s.items,
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "  streamed {} items ({} calendar events, {} attendance records), {:.1} GB of JSON in {:.0} s: {:.0} items/s",
        stats.items,
        stats.calendar_events,
        stats.attendances,
        sink.0 as f64 / 1e9,
        seconds,
        stats.items as f64 / seconds
    );
    println!("  peak resident memory: {:.0} MiB", peak_rss_mib());
    Ok(())
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let config = SimConfig {
        pupils: Some(2000),
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(config, None)?;
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 22).ok_or("date")?)?;
    let state = AppState::new(sim);

    // The server gets one thread of its own: one core.
    let (tx, rx) = std::sync::mpsc::channel();
    let server_state = Arc::clone(&state);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                return;
            };
            let _ = tx.send(listener.local_addr().map(|a| a.to_string()));
            let _ = server::serve(listener, server_state, std::future::pending()).await;
        });
    });
    let address = rx.recv()??;
    let url = format!("http://{address}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let http = reqwest::Client::new();
        let token: serde_json::Value = http
            .post(format!("{url}/oauth2/token"))
            .body("grant_type=client_credentials&client_id=skolflode&client_secret=simulated-secret")
            .send()
            .await?
            .json()
            .await?;
        let token = token["access_token"].as_str().ok_or("no token")?.to_owned();
        let mut items = 0u64;
        let mut bytes = 0u64;
        let started = Instant::now();
        for round in 0..3 {
            for endpoint in ENDPOINTS {
                // calendarEvents requires a startTime window: one that
                // holds every lesson.
                let window = if *endpoint == "calendarEvents" {
                    "&startTime.onOrAfter=2000-01-01T00:00:00Z&startTime.onOrBefore=2100-01-01T00:00:00Z"
                } else {
                    ""
                };
                let mut path = format!("/ss12000/v2/{endpoint}?limit=1000{window}");
                loop {
                    let body = http.get(format!("{url}{path}")).bearer_auth(&token).send().await?.bytes().await?;
                    bytes += body.len() as u64;
                    // Skim the page: count items without building them, so
                    // that the client on the other core keeps up.
                    let page: Skim = serde_json::from_slice(&body)?;
                    items += page.data.len() as u64;
                    match page.page_token.as_deref() {
                        Some(next) => path = format!("/ss12000/v2/{endpoint}?limit=1000&pageToken={next}"),
                        None => break,
                    }
                }
            }
            let _ = round;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "served over HTTP (server on one thread): {items} items, {:.0} MB in {seconds:.1} s: {:.0} items/s, {:.0} MB/s (client skims every page on the other core)",
            bytes as f64 / 1e6,
            items as f64 / seconds,
            bytes as f64 / 1e6 / seconds
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;

    // Rendering alone, without HTTP.
    let sim = state.sim();
    let started = Instant::now();
    let mut rendered = 0u64;
    let mut out = Vec::with_capacity(1 << 16);
    for endpoint in ENDPOINTS {
        let len = sim.storage_len(endpoint).unwrap_or(0);
        for i in 0..len {
            if let Some((_, item)) = sim.render(endpoint, i) {
                out.clear();
                serde_json::to_writer(&mut out, &item)?;
                rendered += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rendered to JSON without HTTP: {rendered} items in {seconds:.2} s: {:.0} items/s",
        rendered as f64 / seconds
    );

    // Pages as the server builds them, without HTTP.
    let started = Instant::now();
    let mut paged = 0u64;
    for endpoint in ENDPOINTS {
        let mut query = skolflode_simulator::ss12000::Query {
            limit: 1000,
            ..Default::default()
        };
        while let Some((body, count, next)) = sim.page_body(endpoint, &query, |n| n.to_string()) {
            paged += count as u64;
            std::hint::black_box(body);
            match next {
                Some(next) => query.cursor = next,
                None => break,
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "paged without HTTP: {paged} items in {seconds:.2} s: {:.0} items/s",
        paged as f64 / seconds
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with `cargo bench` for real figures");
    }
    let units = std::env::var("SKOLFLODE_BENCH_UNITS")
        .ok()
        .and_then(|u| u.parse().ok());
    national(units)?;
    serve()?;
    Ok(())
}
