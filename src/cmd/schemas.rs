//! `skolflode schemas`: the compatibility gate, and registering the
//! contracts with a schema registry.

use std::time::Duration;

use anyhow::{bail, Context};
use skolflode_schemas::catalogue::{self, TOPICS};
use skolflode_schemas::compat;
use skolflode_schemas::registry::RegistryClient;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check every schema version against all earlier ones
    /// (FULL_TRANSITIVE: backward and forward); fails on any problem.
    Check,
    /// Register the current key and value schema of every topic
    /// (`<topic>-key`, `<topic>-value`) and set each subject's
    /// compatibility level to FULL_TRANSITIVE.
    Register {
        /// Base URL of a Confluent-compatible registry, e.g.
        /// http://127.0.0.1:8081 or http://host:8080/apis/ccompat/v7
        #[arg(long, env = "SKOLFLODE_SCHEMA_REGISTRY")]
        registry: String,
        /// Seconds to wait for each request.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Check => check(),
        Command::Register {
            registry,
            timeout_secs,
        } => register(&registry, Duration::from_secs(timeout_secs)).await,
    }
}

fn check() -> anyhow::Result<()> {
    let mut failures = 0;
    for report in compat::check_all() {
        if report.problems.is_empty() {
            println!("ok    {} (v1..v{})", report.subject, report.versions);
        } else {
            failures += report.problems.len();
            println!("FAIL  {} (v1..v{})", report.subject, report.versions);
            for problem in &report.problems {
                println!("      {problem}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} compatibility problem(s)");
    }
    println!("all schemas are {} compatible", compat::LEVEL.as_str());
    Ok(())
}

async fn register(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = RegistryClient::new(url, timeout)?;
    for topic in TOPICS {
        for (subject, schema_name) in [
            (topic.key_subject(), topic.key),
            (topic.value_subject(), topic.value),
        ] {
            let schema = catalogue::subject(schema_name)
                .with_context(|| {
                    format!("topic {} names unknown schema {schema_name}", topic.name)
                })?
                .latest();
            if !client.is_compatible(&subject, schema).await? {
                bail!("{subject}: the registry says {schema_name} is not compatible with what it holds");
            }
            let id = client.register(&subject, schema).await?;
            client.set_compatibility(&subject, compat::LEVEL).await?;
            println!("{subject:<55} {schema_name:<22} id {id}");
        }
    }
    Ok(())
}
