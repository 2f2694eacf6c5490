//! The PostgreSQL registers: the same tables as the Parquet ones, in one
//! schema, created and migrated by the sink, loaded with `COPY`.
//!
//! Exactly once: a flush is one database transaction that replaces the
//! rows of each new revision (a connection's week), rebuilds the yearly
//! rows of the school years touched, records the revisions, and stores the
//! input offsets the sink resumes from. A sink killed at any point leaves
//! the tables as the last committed flush left them, and reads again from
//! the offsets stored with them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::runtime::Handle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Transaction};

use crate::assemble::{BlockId, Completed};
use crate::checkpoint::Checkpoint;
use crate::output::{Applied, Output};
use crate::period::Week;
use crate::table::{Cell, Kind, Role, Table};
use crate::SinkError;

/// How long a sink waits for another to release the schema.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn db(e: tokio_postgres::Error) -> SinkError {
    SinkError::Postgres(e.to_string())
}

/// The migrations, in order; each runs once, recorded in `migrations`.
fn migrations(schema: &str) -> Vec<String> {
    let weekly = |table: Table| {
        let columns: Vec<String> = table
            .columns()
            .iter()
            .map(|c| format!("{} {} NOT NULL", c.name, sql_type(c.kind)))
            .collect();
        format!(
            "CREATE TABLE {schema}.weekly_{name} (week text NOT NULL, school_year text NOT NULL, \
             connection text NOT NULL, revision integer NOT NULL, {columns});\n\
             CREATE INDEX ON {schema}.weekly_{name} (week, connection);\n\
             CREATE INDEX ON {schema}.weekly_{name} (school_year);",
            name = table.name(),
            columns = columns.join(", ")
        )
    };
    let yearly = |table: Table| {
        let columns: Vec<String> = table
            .columns()
            .iter()
            .map(|c| format!("{} {} NOT NULL", c.name, sql_type(c.kind)))
            .collect();
        format!(
            "CREATE TABLE {schema}.yearly_{name} (school_year text NOT NULL, {columns}, \
             first_week text NOT NULL, last_week text NOT NULL, weeks integer NOT NULL);\n\
             CREATE INDEX ON {schema}.yearly_{name} (school_year);",
            name = table.name(),
            columns = columns.join(", ")
        )
    };
    vec![format!(
        "{}\n{}\n{}\n{}\n\
         CREATE TABLE {schema}.revisions (table_name text NOT NULL, week text NOT NULL, \
         connection text NOT NULL, revision integer NOT NULL, rows integer NOT NULL, \
         topic text NOT NULL, partition integer NOT NULL, first_offset bigint NOT NULL, \
         last_offset bigint NOT NULL, current boolean NOT NULL, \
         PRIMARY KEY (table_name, week, connection, revision));\n\
         CREATE TABLE {schema}.sink_offsets (topic text NOT NULL, partition integer NOT NULL, \
         next_offset bigint NOT NULL, PRIMARY KEY (topic, partition));",
        weekly(Table::TeacherStudent),
        weekly(Table::Attendance),
        yearly(Table::TeacherStudent),
        yearly(Table::Attendance),
    )]
}

fn sql_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Int => "integer",
        Kind::Flag => "boolean",
    }
}

fn pg_type(kind: Kind) -> Type {
    match kind {
        Kind::Text => Type::TEXT,
        Kind::Int => Type::INT4,
        Kind::Flag => Type::BOOL,
    }
}

/// The PostgreSQL output of the sink.
pub struct Postgres {
    client: Client,
    schema: String,
    handle: Handle,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its configuration holds the password.
        f.debug_struct("Postgres")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connect, take the schema's lock (one sink per schema), create or
    /// migrate the tables, and read what is held and where to resume.
    /// Blocking: call it from a blocking task of a Tokio runtime.
    pub fn open(
        url: &str,
        schema: &str,
    ) -> Result<(Postgres, HashMap<BlockId, i32>, Checkpoint), SinkError> {
        let handle = Handle::try_current()
            .map_err(|_| SinkError::Config("the PostgreSQL sink needs a Tokio runtime".into()))?;
        let (client, connection) = handle
            .block_on(tokio_postgres::connect(url, NoTls))
            .map_err(db)?;
        handle.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the PostgreSQL connection ended");
            }
        });
        let output = Postgres {
            client,
            schema: schema.to_owned(),
            handle,
        };
        output.block(output.setup())?;
        let done = output.block(output.done())?;
        let checkpoint = output.block(output.offsets())?;
        Ok((output, done, checkpoint))
    }

    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        self.handle.block_on(f)
    }

    async fn setup(&self) -> Result<(), SinkError> {
        let s = &self.schema;
        // A sink killed a moment ago may still hold the lock until the
        // server notices its connection is gone: wait a little for it.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            let locked: bool = self
                .client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext($1))",
                    &[&format!("skolflode-sink:{s}")],
                )
                .await
                .map_err(db)?
                .get(0);
            if locked {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(SinkError::Locked(format!("PostgreSQL schema {s}")));
            }
            tracing::info!(schema = %s, "another sink holds the schema: waiting");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        self.client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};\n\
                 CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY);"
            ))
            .await
            .map_err(db)?;
        let applied: i32 = self
            .client
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        for (index, migration) in migrations(s).iter().enumerate() {
            let version = index as i32 + 1;
            if version <= applied {
                continue;
            }
            tracing::info!(schema = %s, version, "migrating the register tables");
            self.client
                .batch_execute(&format!(
                    "BEGIN;\n{migration}\nINSERT INTO {s}.migrations VALUES ({version});\nCOMMIT;"
                ))
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    async fn done(&self) -> Result<HashMap<BlockId, i32>, SinkError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT table_name, week, connection, revision FROM {}.revisions WHERE current",
                    self.schema
                ),
                &[],
            )
            .await
            .map_err(db)?;
        let mut done = HashMap::new();
        for row in rows {
            let table = match row.get::<_, &str>(0) {
                "teacher_student" => Table::TeacherStudent,
                _ => Table::Attendance,
            };
            let Some(week) = Week::parse(row.get(1)) else {
                continue;
            };
            done.insert(
                BlockId {
                    table,
                    week,
                    connection: row.get::<_, String>(2),
                },
                row.get::<_, i32>(3),
            );
        }
        Ok(done)
    }

    async fn offsets(&self) -> Result<Checkpoint, SinkError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT topic, partition, next_offset FROM {}.sink_offsets",
                    self.schema
                ),
                &[],
            )
            .await
            .map_err(db)?;
        let mut checkpoint = Checkpoint::default();
        for row in rows {
            checkpoint
                .offsets
                .entry(row.get::<_, String>(0))
                .or_default()
                .insert(row.get(1), row.get(2));
        }
        Ok(checkpoint)
    }

    async fn flush(
        &mut self,
        completed: Vec<Completed>,
        checkpoint: &Checkpoint,
        topic: &(dyn Fn(Table) -> String + Sync),
    ) -> Result<Applied, SinkError> {
        let s = self.schema.clone();
        let tx = self.client.transaction().await.map_err(db)?;
        let mut applied = Applied::default();
        let mut years: BTreeSet<String> = BTreeSet::new();
        // The newest revision with rows per block; every revision recorded.
        let mut newest: BTreeMap<BlockId, &Completed> = BTreeMap::new();
        for c in &completed {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.revisions VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false) \
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    &c.id.table.name(),
                    &c.id.week.label(),
                    &c.id.connection,
                    &c.revision,
                    &(c.rows as i32),
                    &topic(c.id.table),
                    &c.partition,
                    &c.first_offset,
                    &c.last_offset,
                ],
            )
            .await
            .map_err(db)?;
            if c.content.is_some() && newest.get(&c.id).is_none_or(|n| n.revision < c.revision) {
                newest.insert(c.id.clone(), c);
            }
        }
        for (id, c) in newest {
            let Some(rows) = &c.content else { continue };
            let (table, week) = (id.table.name(), id.week.label());
            tx.execute(
                &format!("DELETE FROM {s}.weekly_{table} WHERE week = $1 AND connection = $2"),
                &[&week, &id.connection],
            )
            .await
            .map_err(db)?;
            copy_rows(&tx, &s, id.table, &id, c.revision, rows).await?;
            tx.execute(
                &format!(
                    "UPDATE {s}.revisions SET current = (revision = $4) \
                     WHERE table_name = $1 AND week = $2 AND connection = $3"
                ),
                &[&table, &week, &id.connection, &c.revision],
            )
            .await
            .map_err(db)?;
            applied.rows += rows.len();
            applied.weekly_files += 1;
            years.insert(id.week.school_year());
        }
        for year in &years {
            for table in Table::ALL {
                rebuild_year(&tx, &s, table, year).await?;
                applied.yearly_files += 1;
            }
        }
        for (topic, partitions) in &checkpoint.offsets {
            for (partition, next) in partitions {
                tx.execute(
                    &format!(
                        "INSERT INTO {s}.sink_offsets VALUES ($1, $2, $3) \
                         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
                    ),
                    &[topic, partition, next],
                )
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }
}

async fn copy_rows(
    tx: &Transaction<'_>,
    schema: &str,
    table: Table,
    id: &BlockId,
    revision: i32,
    rows: &[Vec<Cell>],
) -> Result<(), SinkError> {
    let columns = table.columns();
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {schema}.weekly_{} (week, school_year, connection, revision, {}) FROM STDIN BINARY",
            table.name(),
            names.join(", ")
        ))
        .await
        .map_err(db)?;
    let mut types = vec![Type::TEXT, Type::TEXT, Type::TEXT, Type::INT4];
    types.extend(columns.iter().map(|c| pg_type(c.kind)));
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    let (week, year) = (id.week.label(), id.week.school_year());
    for row in rows {
        let ints: Vec<i32> = row
            .iter()
            .map(|c| match c {
                // Bounded by `assemble::MAX_COUNT` when decoded.
                Cell::Int(n) => i32::try_from(*n).unwrap_or(i32::MAX),
                _ => 0,
            })
            .collect();
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&week, &year, &id.connection, &revision];
        for (i, cell) in row.iter().enumerate() {
            values.push(match cell {
                Cell::Text(t) => t,
                Cell::Int(_) => &ints[i],
                Cell::Flag(b) => b,
            });
        }
        writer.as_mut().write(&values).await.map_err(db)?;
    }
    writer.finish().await.map_err(db)?;
    Ok(())
}

async fn rebuild_year(
    tx: &Transaction<'_>,
    s: &str,
    table: Table,
    year: &str,
) -> Result<(), SinkError> {
    let columns = table.columns();
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| match c.role {
            Role::Key => c.name.to_owned(),
            Role::Sum => format!("sum({0})::integer", c.name),
        })
        .collect();
    let group: Vec<&str> = columns
        .iter()
        .filter(|c| c.role == Role::Key)
        .map(|c| c.name)
        .collect();
    let name = table.name();
    tx.execute(
        &format!("DELETE FROM {s}.yearly_{name} WHERE school_year = $1"),
        &[&year],
    )
    .await
    .map_err(db)?;
    tx.execute(
        &format!(
            "INSERT INTO {s}.yearly_{name} (school_year, {names}, first_week, last_week, weeks) \
             SELECT school_year, {select}, min(week), max(week), count(DISTINCT week)::integer \
             FROM {s}.weekly_{name} WHERE school_year = $1 GROUP BY school_year, {group}",
            names = names.join(", "),
            select = select.join(", "),
            group = group.join(", ")
        ),
        &[&year],
    )
    .await
    .map_err(db)?;
    Ok(())
}

impl Output for Postgres {
    fn apply(
        &mut self,
        completed: Vec<Completed>,
        checkpoint: &Checkpoint,
        topic: &(dyn Fn(Table) -> String + Sync),
    ) -> Result<Applied, SinkError> {
        let handle = self.handle.clone();
        handle.block_on(self.flush(completed, checkpoint, topic))
    }
}
