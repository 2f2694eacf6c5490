//! `skolflode quality report`: the feedback report of one school organiser
//! and period, as HTML and JSON.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use skolflode_kafka::KafkaConfig;
use skolflode_quality::report::{self, Inputs};
use skolflode_quality::{absence, coverage, findings, html, organisations, QualityConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write the report of one organiser and period: what the validation
    /// rules found, worst first, by school unit, over the weeks, with
    /// examples; and the period's absence statistics from the registers.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Configuration (TOML): `[kafka]` and `[quality]`.
    #[arg(long)]
    config: PathBuf,
    /// The organiser (huvudman): its organisation number, code, vendor id
    /// or display name.
    #[arg(long)]
    organiser: String,
    /// First ISO week of the period (`2025-W36`).
    #[arg(long)]
    from: String,
    /// Last ISO week of the period.
    #[arg(long)]
    to: String,
    /// Directory to write `quality-<organiser>-<from>-<to>.html` and
    /// `.json` in.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    kafka: KafkaConfig,
    #[serde(default)]
    quality: QualityConfig,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Report(args) => report(args).await,
    }
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let mut file: File = crate::job::read_config(&args.config)?;
    file.kafka.apply_env();
    file.quality.build()?;
    let started = std::time::Instant::now();
    let (kafka, config) = (file.kafka, file.quality);
    let (organiser, from_label, to_label) = (args.organiser, args.from, args.to);
    let built = tokio::task::spawn_blocking(move || {
        let orgs = organisations::read(&kafka)?;
        build(&kafka, &orgs, &config, &organiser, &from_label, &to_label)
    })
    .await??;
    let (html_path, json_path) = write(&built, &args.out)?;
    println!(
        "report: {}  open errors {}, open warnings {}, resolved {}; {} rules, {} school units  ({:.1} s)",
        built.organiser,
        built.open_errors,
        built.open_warnings,
        built.resolved,
        built.rules.len(),
        built.units.len(),
        started.elapsed().as_secs_f64()
    );
    println!("html: {}", html_path.display());
    println!("json: {}", json_path.display());
    Ok(())
}

/// The report of `organiser` for the weeks `from..=to`: its units among
/// `orgs` (the organisations change topic, read by the caller), the
/// findings as they stand, and (with registers configured) the absence
/// statistics. Blocking.
pub fn build(
    kafka: &KafkaConfig,
    orgs: &organisations::Organisations,
    config: &QualityConfig,
    organiser: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<report::Report> {
    let (Some(first), Some(last)) = (
        skolflode_quality::weeks::parse(from),
        skolflode_quality::weeks::parse(to),
    ) else {
        anyhow::bail!("the period is two ISO weeks, like 2025-W36: {from:?}, {to:?}");
    };
    anyhow::ensure!(
        first <= last,
        "the period starts ({from}) after it ends ({to})"
    );
    let organiser = organisations::organiser(orgs, organiser, &config.connections)?;
    tracing::info!(organiser = %organiser.name, units = organiser.units.len(), "organiser found");
    let latest = findings::reduce(findings::read(kafka, &config.findings_topics)?);
    let absence = match &config.registers {
        None => None,
        Some(dir) => {
            let units = organiser
                .units
                .values()
                .filter(|u| !u.code.is_empty())
                .map(|u| (u.code.clone(), u.form.clone()))
                .collect();
            Some(absence::compute(
                dir,
                &units,
                first,
                last,
                config.long_absence_percent,
                config.extensive_absence_percent,
            )?)
        }
    };
    let coverage = if config.coverage_topics.is_empty() {
        None
    } else {
        let rows = coverage::read(kafka, &config.coverage_topics)?;
        Some(coverage::summarise(
            &rows,
            &organiser,
            first,
            last,
            absence.as_ref(),
        ))
    };
    Ok(report::build(Inputs {
        organiser: &organiser,
        findings: &latest,
        from,
        to,
        examples_per_rule: config.examples_per_rule,
        long_absence_percent: config.long_absence_percent,
        extensive_absence_percent: config.extensive_absence_percent,
        absence,
        coverage,
    }))
}

/// Write `quality-<organiser>-<from>-<to>.html` and `.json` in `out`;
/// their paths.
pub fn write(report: &report::Report, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let slug: String = report
        .organiser
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let stem = format!("quality-{slug}-{}-{}", report.from, report.to);
    let html_path = out.join(format!("{stem}.html"));
    let json_path = out.join(format!("{stem}.json"));
    std::fs::write(&html_path, html::render(report))
        .with_context(|| format!("writing {}", html_path.display()))?;
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok((html_path, json_path))
}
