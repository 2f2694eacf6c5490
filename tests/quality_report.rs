//! `skolflode quality report` on a processed and registered term: the page
//! opens in headless Chromium without errors and its screenshot shows the
//! charts; neither the page nor its JSON holds a civic number, a name or an
//! e-mail address; the page weighs under 2 MB.
//!
//! The term is produced from the simulator (faults on, as by default),
//! processed by `skolflode replay`, written to Parquet by `skolflode sink`,
//! and reported on by the binary, all against the real Kafka.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue;
use skolflode_simulator::config::VendorBehaviour;
use skolflode_testkit::term::produce_days;
use skolflode_testkit::{unique, Scratch, TestKafka};

const KEY: &str = "the quality report test's pseudonym key, long enough";
const SEED: u64 = 61;

fn run(command: &mut Command, what: &str) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every civic number of the simulator's truth, in the 12- and 10-digit
/// forms, with and without separator.
fn civic_numbers(truth: &Path) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![truth.join("weekly")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut lines = text.lines();
                let header: Vec<&str> = lines.next().unwrap().split(',').collect();
                let civic: Vec<usize> = header
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.ends_with("_civic"))
                    .map(|(i, _)| i)
                    .collect();
                for line in lines {
                    let fields: Vec<&str> = line.split(',').collect();
                    for i in &civic {
                        if let Some(c) = fields.get(*i).filter(|c| c.len() == 12) {
                            out.insert(c.to_string());
                        }
                    }
                }
            }
        }
    }
    out.into_iter()
        .flat_map(|c| {
            [
                c.clone(),
                c[2..].to_owned(),
                format!("{}-{}", &c[..8], &c[8..]),
                format!("{}-{}", &c[2..8], &c[8..]),
            ]
        })
        .collect()
}

fn words(text: &str) -> std::collections::BTreeSet<&str> {
    text.split(|c: char| !c.is_alphanumeric()).collect()
}

/// Pixels of the screenshot within a small distance of `rgb`.
fn pixels_like(png_path: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 6))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_opens_in_chromium_shows_its_charts_and_holds_nothing_personal() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let pseudonymiser = Arc::new(Pseudonymiser::new(KEY.as_bytes()).unwrap());
    let term = produce_days(
        kafka.config(),
        &pseudonymiser,
        VendorBehaviour {
            name: "quality-sim".into(),
            dated_assignments: true,
            end_date_memberships: true,
            deletion_feed: true,
            ..VendorBehaviour::default()
        },
        SEED,
        400,
        45,
    )
    .await
    .unwrap();
    let dir = Scratch::new("quality-report").unwrap();
    let binary = env!("CARGO_BIN_EXE_skolflode");
    let bootstrap = kafka.config().bootstrap_servers.clone();
    let app = unique("quality-input");

    std::fs::write(
        dir.join("process.toml"),
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[process]\ngrace_hours = 72\nconnections = [\"{name}\"]\n\n[process.sources]\n\"{name}\" = \"{source}\"\n",
            name = term.name,
            source = term.source
        ),
    )
    .unwrap();
    run(
        Command::new(binary)
            .args(["replay", "--config"])
            .arg(dir.join("process.toml"))
            .args(["--application-id", &app])
            .env("RUST_LOG", "warn")
            .env("TMPDIR", dir.path()),
        "the processor",
    );
    let registers = dir.join("registers");
    std::fs::write(
        dir.join("sink.toml"),
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[sink]\nout_dir = \"{}\"\ntopic_suffix = \"{app}\"\n",
            registers.display()
        ),
    )
    .unwrap();
    run(
        Command::new(binary)
            .args(["sink", "--until-caught-up", "--config"])
            .arg(dir.join("sink.toml"))
            .env("RUST_LOG", "warn")
            .env("TMPDIR", dir.path()),
        "the sink",
    );

    std::fs::write(
        dir.join("quality.toml"),
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[quality]\nregisters = \"{}\"\nconnections = [\"{}\"]\nfindings_topics = [\"{}\", \"{}.{app}\"]\ncoverage_topics = [\"{}.{app}\"]\n",
            registers.display(),
            term.name,
            catalogue::QUALITY_FINDINGS,
            catalogue::QUALITY_FINDINGS,
            catalogue::QUALITY_COVERAGE,
        ),
    )
    .unwrap();
    let out = dir.join("report");
    let organiser = format!("Simulerad kommun {:04}", 100 + SEED % 2000);
    let started = std::time::Instant::now();
    let said = run(
        Command::new(binary)
            .args(["quality", "report", "--config"])
            .arg(dir.join("quality.toml"))
            .args([
                "--organiser",
                &organiser,
                "--from",
                "2025-W34",
                "--to",
                "2025-W40",
                "--out",
            ])
            .arg(&out)
            .env("RUST_LOG", "warn"),
        "the report",
    );
    let said = String::from_utf8_lossy(&said.stdout).to_string();
    eprintln!("{said}report in {:?}", started.elapsed());
    let stem = format!(
        "quality-{}-2025-W34-2025-W40",
        organiser.to_lowercase().replace(' ', "-")
    );
    let html_path = out.join(format!("{stem}.html"));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let json = std::fs::read_to_string(out.join(format!("{stem}.json"))).unwrap();

    // What it says.
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["organiser"], organiser.as_str());
    let rules = report["rules"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["rule"] == "LESSON_NOT_REPORTED") && rules.len() >= 3,
        "{said}"
    );
    assert!(
        report["absence"]["pupils"].as_u64().unwrap() > 100,
        "{said}"
    );
    // Coverage by week and absence by weekday, from the processor's
    // coverage topic: school days only, and most lessons with a teacher.
    let coverage = &report["coverage"];
    let weekdays: Vec<u64> = coverage["weekdays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["weekday"].as_u64().unwrap())
        .collect();
    assert_eq!(weekdays, [1, 2, 3, 4, 5], "{coverage}");
    let weeks = coverage["by_week"].as_array().unwrap();
    assert!(weeks.len() >= 3, "{coverage}");
    for w in weeks {
        assert!(w["with_teacher_percent"].as_f64().unwrap() > 90.0, "{w}");
        assert!(w["pupils"].as_u64().unwrap() > 100, "{w}");
    }
    assert!(html.contains("Absence by weekday"));
    assert!(html.len() < 2 * 1024 * 1024, "{} bytes", html.len());
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));

    // Nothing personal.
    let civic = civic_numbers(term.truth.path());
    assert!(
        civic.len() > 400,
        "{} civic numbers in the truth",
        civic.len()
    );
    for text in [&html, &json] {
        for c in &civic {
            assert!(!text.contains(c.as_str()), "a civic number in the report");
        }
        let words = words(text);
        for name in skolflode_simulator::world::GIVEN
            .iter()
            .chain(skolflode_simulator::world::FAMILY)
        {
            assert!(!words.contains(name), "the name {name} in the report");
        }
        assert!(!text.contains('@'), "an e-mail address in the report");
    }

    // Chromium opens it without errors, and the screenshot shows charts.
    let shot = dir.join("report.png");
    let chromium = run(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1200,4000",
            ])
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("file://{}", html_path.display())),
        "chromium",
    );
    let log = String::from_utf8_lossy(&chromium.stderr);
    for line in log.lines() {
        assert!(
            !line.contains("CONSOLE") && !line.contains("Uncaught") && !line.contains("net::ERR"),
            "the page logged: {line}"
        );
    }
    let red = pixels_like(&shot, [0xc5, 0x30, 0x30]);
    let blue = pixels_like(&shot, [0x31, 0x82, 0xce]);
    let purple = pixels_like(&shot, [0x80, 0x5a, 0xd5]);
    eprintln!("screenshot: {red} red, {blue} blue, {purple} purple pixels");
    assert!(
        red > 2_000 && blue > 2_000 && purple > 2_000,
        "{red} {blue} {purple}"
    );
}
