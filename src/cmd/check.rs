//! `skolflode check`: is the infrastructure there?

use std::time::Duration;

use anyhow::{bail, Context};
use skolflode_kafka::{Admin, KafkaConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = skolflode_kafka::config::DEFAULT_BOOTSTRAP)]
    kafka: String,

    /// PostgreSQL connection string; PostgreSQL is not checked when unset.
    /// Its password is never printed.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Seconds to wait for each service.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut failures = 0;

    let config = KafkaConfig {
        bootstrap_servers: args.kafka.clone(),
        ..KafkaConfig::default()
    };
    match check_kafka(&config, timeout).await {
        Ok(brokers) => println!("kafka     ok    {} ({brokers} broker(s))", args.kafka),
        Err(e) => {
            failures += 1;
            println!("kafka     FAIL  {e:#}");
        }
    }

    if let Some(url) = &args.database_url {
        match check_postgres(url, timeout).await {
            Ok((where_, version)) => println!("postgres  ok    {where_} ({version})"),
            Err(e) => {
                failures += 1;
                println!("postgres  FAIL  {e:#}");
            }
        }
    } else {
        println!("postgres  skip  DATABASE_URL is not set");
    }

    if failures > 0 {
        bail!("{failures} service(s) did not answer");
    }
    Ok(())
}

async fn check_kafka(config: &KafkaConfig, timeout: Duration) -> anyhow::Result<usize> {
    let admin = Admin::new(config, timeout)?;
    Ok(admin.probe().await?)
}

async fn check_postgres(url: &str, timeout: Duration) -> anyhow::Result<(String, String)> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .context("DATABASE_URL does not parse as a PostgreSQL connection string")?;
    config.connect_timeout(timeout);
    let where_ = format!(
        "{}:{}/{}",
        config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default(),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or("")
    );
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
        .await
        .with_context(|| format!("no answer from {where_} within {timeout:?}"))?
        .with_context(|| format!("cannot connect to {where_}"))?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_setting('server_version')", &[])
        .await
        .context("query failed")?;
    let version: String = row.get(0);
    drop(client);
    let _ = connection.await;
    Ok((where_, format!("PostgreSQL {version}")))
}
