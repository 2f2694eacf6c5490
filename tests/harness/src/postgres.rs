//! The real PostgreSQL server, as seen by a test.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::{names, HarnessError};

/// The environment variable with the connection string.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// How long a test waits for the database before it gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection to the test database plus a schema of this test's own,
/// set as the search path, so tests can create tables freely.
#[derive(Debug)]
pub struct TestDatabase {
    client: Client,
    schema: String,
    connection: tokio::task::JoinHandle<()>,
}

impl TestDatabase {
    /// Connect to `DATABASE_URL` and create a private schema.
    pub async fn connect() -> Result<Self, HarnessError> {
        let url = std::env::var(DATABASE_URL_ENV).map_err(|_| {
            HarnessError::Environment(format!(
                "{DATABASE_URL_ENV} is not set; start PostgreSQL with `scripts/postgres start` \
                 and export what it prints"
            ))
        })?;
        Self::connect_to(&url, CONNECT_TIMEOUT).await
    }

    /// Connect to a given URL within `timeout` and create a private schema.
    pub async fn connect_to(url: &str, timeout: Duration) -> Result<Self, HarnessError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| HarnessError::Postgres(format!("DATABASE_URL does not parse: {e}")))?;
        config.connect_timeout(timeout);
        let (client, connection) = match tokio::time::timeout(timeout, config.connect(NoTls)).await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(HarnessError::Postgres(format!(
                "cannot connect to PostgreSQL ({}): {e}. Is it running (scripts/postgres status)?",
                describe(&config)
            )))
            }
            Err(_) => {
                return Err(HarnessError::Timeout {
                    what: format!("connecting to PostgreSQL ({})", describe(&config)),
                    waited: timeout,
                })
            }
        };
        let connection = tokio::spawn(async move {
            // The connection future ends when the client is dropped; an error
            // here surfaces as a failed query on the client side.
            let _ = connection.await;
        });
        let schema = names::unique("t").replace('-', "_");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema};"
            ))
            .await
            .map_err(|e| HarnessError::Postgres(format!("creating test schema: {e}")))?;
        Ok(Self {
            client,
            schema,
            connection,
        })
    }

    /// The client, with the search path set to this test's schema.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The private schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drop the private schema and close the connection.
    pub async fn cleanup(self) -> Result<(), HarnessError> {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .map_err(|e| HarnessError::Postgres(format!("dropping test schema: {e}")))?;
        drop(self.client);
        let _ = self.connection.await;
        Ok(())
    }
}

/// Host, port and database of a config, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("host {host}, port {port}, database {db}")
}
