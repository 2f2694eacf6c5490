//! The PostgreSQL registers: the same tables as the Parquet ones, in one
//! schema, created and migrated by the sink, loaded with `COPY`.
//!
//! Exactly once: a commit is a database transaction per table, on the
//! table's own connection and all at once, that replaces the rows of each
//! new revision (a connection's week), records the revisions, marks the
//! school years touched as pending, and stores the offsets of the table's
//! topic, from which the sink resumes reading it. A sink killed at any
//! point leaves each table as its last committed transaction left it, and
//! reads each topic again from the offsets stored with its rows.
//!
//! A whole revision is encoded in `COPY`'s binary format as soon as it
//! arrives; a commit streams every staged revision of a table in one
//! `COPY`. The yearly rows of pending school years are rebuilt, in a
//! transaction of their own that clears the mark, when the sink has caught
//! up with its input: the weekly rows stay the truth the yearly ones are
//! summed from (by the sink, `yearly`), and a mark outlives a kill. With a
//! pupil register for the school year, the rebuild also annotates the
//! yearly rows from it and replaces the year's `coverage` and
//! `register_findings`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::runtime::Handle;
use tokio_postgres::{Client, NoTls, Transaction};

use crate::assemble::{BlockId, Completed};
use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::config::PostgresConfig;
use crate::output::{Applied, Output};
use crate::period::{school_year_bounds, Week};
use crate::pupil_register::{self, file_sha256, Coverage, PupilRegister, PupilsByUnit};
use crate::registers::{Integration, Revision};
use crate::table::{Kind, Table};
use crate::SinkError;

mod yearly;

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
    vec![
        format!(
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
        ),
        format!("CREATE TABLE {schema}.yearly_pending (school_year text PRIMARY KEY);"),
        // The yearly integration with the pupil register.
        format!(
            "ALTER TABLE {schema}.yearly_teacher_student \
             ADD COLUMN register_school_unit_code text NOT NULL DEFAULT '', \
             ADD COLUMN register_grade text NOT NULL DEFAULT '';\n\
             ALTER TABLE {schema}.yearly_attendance \
             ADD COLUMN register_school_unit_code text NOT NULL DEFAULT '', \
             ADD COLUMN register_grade text NOT NULL DEFAULT '';\n\
             CREATE TABLE {schema}.coverage (school_year text NOT NULL, \
             school_unit_code text NOT NULL, register_pupils integer NOT NULL, \
             pipeline_pupils integer NOT NULL, in_both integer NOT NULL, \
             only_in_register integer NOT NULL, only_in_pipeline integer NOT NULL, \
             registered_elsewhere integer NOT NULL, PRIMARY KEY (school_year, school_unit_code));\n\
             CREATE TABLE {schema}.register_findings (school_year text NOT NULL, \
             line integer NOT NULL, reason text NOT NULL, PRIMARY KEY (school_year, line));\n\
             CREATE TABLE {schema}.pupil_registers (school_year text PRIMARY KEY, \
             file text NOT NULL, sha256 text NOT NULL, pupils integer NOT NULL, \
             findings integer NOT NULL);"
        ),
        // A B-tree entry per row is most of a load's cost
        // (docs/performance.md): the weekly tables keep only the one that
        // finds a block's rows to replace, which also serves a school
        // year's weeks; the yearly tables, replaced a school year at a
        // time, a block-range index.
        fewer_btrees(schema),
    ]
}

/// A school year's bounding week labels (`school_year_bounds`), or why
/// not.
fn year_bounds(year: &str) -> Result<(String, String), SinkError> {
    school_year_bounds(year)
        .ok_or_else(|| SinkError::Postgres(format!("not a school year: {year:?}")))
}

fn fewer_btrees(schema: &str) -> String {
    let mut sql = String::new();
    for table in Table::ALL {
        let name = table.name();
        // The new index first: building it does not lock readers out, and
        // dropping an index is quick.
        sql.push_str(&format!(
            "CREATE INDEX yearly_{name}_years ON {schema}.yearly_{name} USING brin (school_year);\n\
             DROP INDEX IF EXISTS {schema}.yearly_{name}_school_year_idx;\n\
             DROP INDEX IF EXISTS {schema}.weekly_{name}_school_year_idx;\n"
        ));
    }
    sql
}

fn sql_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Int => "integer",
        Kind::Flag => "boolean",
    }
}

/// A revision staged for the next commit.
struct Staged {
    /// The revision and where it was read.
    read: Revision,
    /// Its rows as `COPY` binary tuples; `None` for a re-delivery.
    tuples: Option<Bytes>,
}

/// The PostgreSQL output of the sink.
pub struct Postgres {
    client: Client,
    /// A connection per table: it writes the table's weekly rows, and
    /// reads them back for a yearly rebuild while `client` writes the
    /// yearly ones.
    tables: Vec<Client>,
    /// Each table's snapshot topic: its offsets are stored with its rows.
    topics: BTreeMap<Table, String>,
    schema: String,
    handle: Handle,
    /// Every whole revision read since the last commit, per block and
    /// revision.
    staged: BTreeMap<(BlockId, i32), Staged>,
    staged_bytes: usize,
    /// School years whose yearly rows are behind their weeks.
    pending_years: BTreeSet<String>,
    integration: Option<Integration>,
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
        config: &PostgresConfig,
        topics: BTreeMap<Table, String>,
        integration: Option<Integration>,
    ) -> Result<(Postgres, HashMap<BlockId, i32>, Checkpoint), SinkError> {
        let handle = Handle::try_current()
            .map_err(|_| SinkError::Config("the PostgreSQL sink needs a Tokio runtime".into()))?;
        let connect = || -> Result<Client, SinkError> {
            let (client, connection) = handle
                .block_on(tokio_postgres::connect(url, NoTls))
                .map_err(db)?;
            handle.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the PostgreSQL connection ended");
                }
            });
            Ok(client)
        };
        let client = connect()?;
        let mut output = Postgres {
            client,
            tables: Vec::new(),
            topics,
            schema: config.schema.clone(),
            handle: handle.clone(),
            staged: BTreeMap::new(),
            staged_bytes: 0,
            pending_years: BTreeSet::new(),
            integration,
        };
        output.block(output.setup())?;
        // Only once the schema's lock is held: a sink waiting for it holds
        // one connection.
        output.tables = Table::ALL
            .iter()
            .map(|_| connect())
            .collect::<Result<_, _>>()?;
        let sort_memory = format!("SET work_mem = '{}MB'", config.sort_memory_mib);
        for client in &output.tables {
            output.block(async { client.batch_execute(&sort_memory).await.map_err(db) })?;
        }
        output.pending_years = output.block(output.pending())?;
        let changed = output.block(output.registers_changed())?;
        output.pending_years.extend(changed);
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

    async fn pending(&self) -> Result<BTreeSet<String>, SinkError> {
        let rows = self
            .client
            .query(
                &format!("SELECT school_year FROM {}.yearly_pending", self.schema),
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// School years whose yearly rows were integrated with another pupil
    /// register than the one configured now (or with none, or without
    /// one now), and that have weekly rows.
    async fn registers_changed(&self) -> Result<BTreeSet<String>, SinkError> {
        let s = &self.schema;
        let rows = self
            .client
            .query(
                &format!("SELECT school_year, sha256 FROM {s}.pupil_registers"),
                &[],
            )
            .await
            .map_err(db)?;
        let read: BTreeMap<String, String> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let mut configured: BTreeMap<String, String> = BTreeMap::new();
        if let Some(integration) = &self.integration {
            for (year, path) in &integration.files {
                configured.insert(year.clone(), file_sha256(path)?);
            }
        }
        let mut changed = BTreeSet::new();
        for year in read.keys().chain(configured.keys()) {
            if read.get(year) == configured.get(year) {
                continue;
            }
            let bounds = year_bounds(year)?;
            let has_weeks: bool = self
                .client
                .query_one(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM {s}.weekly_teacher_student \
                         WHERE week BETWEEN $2 AND $3 AND school_year = $1) \
                         OR EXISTS (SELECT 1 FROM {s}.weekly_attendance \
                         WHERE week BETWEEN $2 AND $3 AND school_year = $1)"
                    ),
                    &[year, &bounds.0, &bounds.1],
                )
                .await
                .map_err(db)?
                .get(0);
            if has_weeks || read.contains_key(year) {
                changed.insert(year.clone());
            }
        }
        Ok(changed)
    }

    /// A transaction per table, on the table's own connection, all at
    /// once: the staged revisions' rows in place of their blocks' old
    /// ones, the revisions, the school years now pending, and the offsets
    /// of the table's topic. A table's offsets cover only its own rows, so
    /// each transaction is exactly once on its own; the server loads the
    /// two tables on two backends at the same time.
    async fn write_staged(
        &mut self,
        staged: BTreeMap<(BlockId, i32), Staged>,
        checkpoint: &Checkpoint,
    ) -> Result<(Applied, BTreeSet<String>), SinkError> {
        let mut by_table: BTreeMap<Table, BTreeMap<(BlockId, i32), Staged>> = BTreeMap::new();
        for (key, st) in staged {
            by_table.entry(key.0.table).or_default().insert(key, st);
        }
        let schema = self.schema.as_str();
        let writes = Table::ALL
            .into_iter()
            .zip(self.tables.iter_mut())
            .map(|(table, client)| {
                let staged = by_table.remove(&table).unwrap_or_default();
                let offsets = self
                    .topics
                    .get(&table)
                    .and_then(|topic| checkpoint.offsets.get_key_value(topic));
                write_table(client, schema, table, staged, offsets)
            });
        let mut applied = Applied::default();
        let mut years = BTreeSet::new();
        for (written, table_years) in futures_util::future::try_join_all(writes).await? {
            applied.rows += written.rows;
            applied.weekly_files += written.weekly_files;
            years.extend(table_years);
        }
        Ok((applied, years))
    }

    /// Rebuild the yearly rows of the pending school years and clear their
    /// marks, in one transaction.
    async fn rebuild_pending(&mut self) -> Result<usize, SinkError> {
        let s = self.schema.clone();
        let years = self.pending_years.clone();
        let tx = self.client.transaction().await.map_err(db)?;
        let mut rebuilt = 0;
        for year in &years {
            let register = match &self.integration {
                Some(integration) => match integration.files.get(year) {
                    Some(path) => {
                        Some((path, load_register(&tx, &s, year, path, integration).await?))
                    }
                    None => None,
                },
                None => None,
            };
            // Every table's weekly rows are asked for at once: the server
            // sorts the next table's while the sink sums the one before.
            let mut inputs = Vec::with_capacity(Table::ALL.len());
            for (table, read) in Table::ALL.into_iter().zip(&self.tables) {
                inputs.push((table, yearly::read_weeks(read, &s, table, year).await?));
            }
            let mut pipeline = PupilsByUnit::new();
            for (table, input) in inputs {
                let target = yearly::Target {
                    year,
                    register: register.as_ref().map(|(_, r)| r),
                    pipeline: register.as_ref().map(|_| &mut pipeline),
                };
                yearly::rebuild(input, &tx, &s, table, target).await?;
                rebuilt += 1;
            }
            integrate(
                &tx,
                &s,
                year,
                register.as_ref().map(|(p, r)| (*p, r, &pipeline)),
            )
            .await?;
            tx.execute(
                &format!("DELETE FROM {s}.yearly_pending WHERE school_year = $1"),
                &[year],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.pending_years.clear();
        Ok(rebuilt)
    }
}

/// One table's part of a commit (`Postgres::write_staged`), in one
/// transaction on `client`: its staged revisions and its topic's offsets.
async fn write_table(
    client: &mut Client,
    s: &str,
    table: Table,
    staged: BTreeMap<(BlockId, i32), Staged>,
    offsets: Option<(&String, &BTreeMap<i32, i64>)>,
) -> Result<(Applied, BTreeSet<String>), SinkError> {
    let mut applied = Applied::default();
    let mut years: BTreeSet<String> = BTreeSet::new();
    if staged.is_empty() && offsets.is_none() {
        return Ok((applied, years));
    }
    let tx = client.transaction().await.map_err(db)?;
    let name = table.name();
    // Every revision read, in one statement.
    let n = staged.len();
    let mut weeks: Vec<String> = Vec::with_capacity(n);
    let mut connections: Vec<&str> = Vec::with_capacity(n);
    let mut revisions: Vec<i32> = Vec::with_capacity(n);
    let mut row_counts: Vec<i32> = Vec::with_capacity(n);
    let mut topics: Vec<&str> = Vec::with_capacity(n);
    let mut partitions: Vec<i32> = Vec::with_capacity(n);
    let mut firsts: Vec<i64> = Vec::with_capacity(n);
    let mut lasts: Vec<i64> = Vec::with_capacity(n);
    for ((id, revision), st) in &staged {
        weeks.push(id.week.label());
        connections.push(&id.connection);
        revisions.push(*revision);
        row_counts.push(i32::try_from(st.read.rows).unwrap_or(i32::MAX));
        topics.push(&st.read.topic);
        partitions.push(st.read.partition);
        firsts.push(st.read.first_offset);
        lasts.push(st.read.last_offset);
    }
    if n > 0 {
        tx.execute(
            &format!(
                "INSERT INTO {s}.revisions \
                 SELECT $1::text, *, false FROM unnest($2::text[], $3::text[], $4::int4[], \
                 $5::int4[], $6::text[], $7::int4[], $8::int8[], $9::int8[]) \
                 ON CONFLICT DO NOTHING"
            ),
            &[
                &name,
                &weeks,
                &connections,
                &revisions,
                &row_counts,
                &topics,
                &partitions,
                &firsts,
                &lasts,
            ],
        )
        .await
        .map_err(db)?;
    }
    // The newest revision with rows per block replaces the block's rows.
    let mut newest: BTreeMap<&BlockId, (i32, &Bytes, usize)> = BTreeMap::new();
    for ((id, revision), st) in &staged {
        if let Some(tuples) = &st.tuples {
            newest.insert(id, (*revision, tuples, st.read.rows));
        }
    }
    if !newest.is_empty() {
        let weeks: Vec<String> = newest.keys().map(|id| id.week.label()).collect();
        let connections: Vec<&str> = newest.keys().map(|id| id.connection.as_str()).collect();
        let revisions: Vec<i32> = newest.values().map(|v| v.0).collect();
        // Only blocks already held have rows to replace: a new week
        // costs no scan.
        let held = tx
            .query(
                &format!(
                    "SELECT r.week, r.connection FROM {s}.revisions r \
                     JOIN unnest($2::text[], $3::text[]) AS b(week, connection) \
                     ON r.week = b.week AND r.connection = b.connection \
                     WHERE r.table_name = $1 AND r.current"
                ),
                &[&name, &weeks, &connections],
            )
            .await
            .map_err(db)?;
        if !held.is_empty() {
            let held_weeks: Vec<&str> = held.iter().map(|r| r.get(0)).collect();
            let held_connections: Vec<&str> = held.iter().map(|r| r.get(1)).collect();
            tx.execute(
                &format!(
                    "DELETE FROM {s}.weekly_{name} w \
                     USING unnest($1::text[], $2::text[]) AS b(week, connection) \
                     WHERE w.week = b.week AND w.connection = b.connection"
                ),
                &[&held_weeks, &held_connections],
            )
            .await
            .map_err(db)?;
        }
        copy_blocks(&tx, s, table, newest.values().map(|v| v.1)).await?;
        tx.execute(
            &format!(
                "UPDATE {s}.revisions r SET current = (r.revision = b.revision) \
                 FROM unnest($2::text[], $3::text[], $4::int4[]) AS b(week, connection, revision) \
                 WHERE r.table_name = $1 AND r.week = b.week AND r.connection = b.connection"
            ),
            &[&name, &weeks, &connections, &revisions],
        )
        .await
        .map_err(db)?;
        for (id, v) in &newest {
            applied.rows += v.2;
            applied.weekly_files += 1;
            years.insert(id.week.school_year());
        }
    }
    if let Some((topic, partitions)) = offsets {
        let topics: Vec<&str> = partitions.keys().map(|_| topic.as_str()).collect();
        let numbers: Vec<i32> = partitions.keys().copied().collect();
        let next: Vec<i64> = partitions.values().copied().collect();
        tx.execute(
            &format!(
                "INSERT INTO {s}.sink_offsets SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[]) \
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
            ),
            &[&topics, &numbers, &next],
        )
        .await
        .map_err(db)?;
    }
    // Last, as the other table's transaction may mark the same years and
    // one waits for the other's commit there.
    if !years.is_empty() {
        let years_list: Vec<&String> = years.iter().collect();
        tx.execute(
            &format!(
                "INSERT INTO {s}.yearly_pending SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
            ),
            &[&years_list],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok((applied, years))
}

/// `COPY`'s binary header: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The rows of `block` of week `week`, from `connection`'s `revision`, as
/// `COPY` binary tuples: week, school_year, connection, revision, then the
/// table's columns.
fn tuples(week: Week, connection: &str, revision: i32, block: &Block) -> Bytes {
    let rows = block.rows();
    let columns = block.table.columns();
    let (label, year) = (week.label(), week.school_year());
    let mut prefix = BytesMut::new();
    for text in [label.as_str(), year.as_str(), connection] {
        prefix.put_i32(text.len() as i32);
        prefix.put_slice(text.as_bytes());
    }
    prefix.put_i32(4);
    prefix.put_i32(revision);
    let mut out = BytesMut::with_capacity(rows * (prefix.len() + 2 + 200));
    let fields = (4 + columns.len()) as i16;
    for row in 0..rows {
        out.put_i16(fields);
        out.put_slice(&prefix);
        for (column, array) in columns.iter().zip(&block.columns) {
            match column.kind {
                Kind::Text => {
                    let value = array.as_string::<i32>().value(row);
                    out.put_i32(value.len() as i32);
                    out.put_slice(value.as_bytes());
                }
                Kind::Int => {
                    out.put_i32(4);
                    out.put_i32(array.as_primitive::<Int32Type>().value(row));
                }
                Kind::Flag => {
                    out.put_i32(1);
                    out.put_u8(u8::from(array.as_boolean().value(row)));
                }
            }
        }
    }
    out.freeze()
}

async fn copy_blocks(
    tx: &Transaction<'_>,
    schema: &str,
    table: Table,
    blocks: impl Iterator<Item = &Bytes>,
) -> Result<(), SinkError> {
    let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
    let sink = tx
        .copy_in::<_, Bytes>(&format!(
            "COPY {schema}.weekly_{} (week, school_year, connection, revision, {}) FROM STDIN BINARY",
            table.name(),
            names.join(", ")
        ))
        .await
        .map_err(db)?;
    let mut sink = std::pin::pin!(sink);
    sink.feed(Bytes::from_static(COPY_HEADER))
        .await
        .map_err(db)?;
    for block in blocks {
        sink.feed(block.clone()).await.map_err(db)?;
    }
    sink.feed(Bytes::from_static(&[0xff, 0xff]))
        .await
        .map_err(db)?;
    sink.as_mut().finish().await.map_err(db)?;
    Ok(())
}

/// Read the pupil register of `year` at `path` (its lines checked against
/// the school units of the year's weekly rows).
async fn load_register(
    tx: &Transaction<'_>,
    s: &str,
    year: &str,
    path: &Path,
    integration: &Integration,
) -> Result<PupilRegister, SinkError> {
    let (lo, hi) = year_bounds(year)?;
    let rows = tx
        .query(
            &format!(
                "SELECT school_unit_code FROM {s}.weekly_teacher_student \
                 WHERE week BETWEEN $2 AND $3 AND school_year = $1 \
                 UNION SELECT school_unit_code FROM {s}.weekly_attendance \
                 WHERE week BETWEEN $2 AND $3 AND school_year = $1"
            ),
            &[&year, &lo, &hi],
        )
        .await
        .map_err(db)?;
    let known: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let register = pupil_register::read(
        path,
        pupil_register::census(year),
        &integration.pseudonymiser,
        &known,
    )?;
    Ok(register)
}

/// Replace `year`'s coverage, findings and register record with those of
/// `register` (none without one), from the pupils of each unit the yearly
/// rows just rebuilt name.
async fn integrate(
    tx: &Transaction<'_>,
    s: &str,
    year: &str,
    register: Option<(&PathBuf, &PupilRegister, &PupilsByUnit)>,
) -> Result<(), SinkError> {
    for table in ["coverage", "register_findings", "pupil_registers"] {
        tx.execute(
            &format!("DELETE FROM {s}.{table} WHERE school_year = $1"),
            &[&year],
        )
        .await
        .map_err(db)?;
    }
    let Some((path, register, pipeline)) = register else {
        return Ok(());
    };
    let lines = pupil_register::coverage(pipeline, register);
    let count = |f: fn(&Coverage) -> usize| -> Vec<i32> {
        lines
            .iter()
            .map(|c| i32::try_from(f(c)).unwrap_or(i32::MAX))
            .collect()
    };
    let units: Vec<&str> = lines.iter().map(|c| c.school_unit_code.as_str()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {s}.coverage SELECT $1, * FROM unnest($2::text[], $3::int4[], \
             $4::int4[], $5::int4[], $6::int4[], $7::int4[], $8::int4[])"
        ),
        &[
            &year,
            &units,
            &count(|c| c.register_pupils),
            &count(|c| c.pipeline_pupils),
            &count(|c| c.in_both),
            &count(|c| c.only_in_register),
            &count(|c| c.only_in_pipeline),
            &count(|c| c.registered_elsewhere),
        ],
    )
    .await
    .map_err(db)?;
    let line_numbers: Vec<i32> = register
        .findings
        .iter()
        .map(|f| i32::try_from(f.line).unwrap_or(i32::MAX))
        .collect();
    let reasons: Vec<&str> = register
        .findings
        .iter()
        .map(|f| f.reason.as_str())
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO {s}.register_findings SELECT $1, * FROM unnest($2::int4[], $3::text[])"
        ),
        &[&year, &line_numbers, &reasons],
    )
    .await
    .map_err(db)?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pupils = i32::try_from(register.pupils.len()).unwrap_or(i32::MAX);
    let findings = i32::try_from(register.findings.len()).unwrap_or(i32::MAX);
    tx.execute(
        &format!("INSERT INTO {s}.pupil_registers VALUES ($1, $2, $3, $4, $5)"),
        &[&year, &file, &register.sha256, &pupils, &findings],
    )
    .await
    .map_err(db)?;
    pupil_register::log_findings(year, register, "the register_findings table");
    Ok(())
}

impl Output for Postgres {
    fn stage(&mut self, completed: Completed, topic: &str) -> Result<(), SinkError> {
        let tuples = completed.content.as_ref().map(|block| {
            tuples(
                completed.id.week,
                &completed.id.connection,
                completed.revision,
                block,
            )
        });
        let staged = Staged {
            read: Revision::read(&completed, topic),
            tuples,
        };
        let key = (completed.id, completed.revision);
        // A newer revision of a block staged in the same commit makes the
        // older one's rows moot; the revision itself is still recorded.
        let superseded: Vec<(BlockId, i32)> = self
            .staged
            .range((key.0.clone(), i32::MIN)..(key.0.clone(), key.1))
            .filter(|(_, st)| st.tuples.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if staged.tuples.is_some() {
            for k in superseded {
                if let Some(st) = self.staged.get_mut(&k) {
                    self.staged_bytes -= st.tuples.take().map_or(0, |t| t.len());
                }
            }
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = self.staged.entry(key) {
            // A revision staged twice in one commit counts once.
            self.staged_bytes += slot.insert(staged).tuples.as_ref().map_or(0, Bytes::len);
        }
        Ok(())
    }

    fn staged_bytes(&self) -> usize {
        self.staged_bytes
    }

    fn behind(&self) -> bool {
        !self.staged.is_empty() || !self.pending_years.is_empty()
    }

    fn commit(&mut self, checkpoint: &Checkpoint, settled: bool) -> Result<Applied, SinkError> {
        let handle = self.handle.clone();
        let staged = std::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        let mut applied = Applied::default();
        if !staged.is_empty() {
            let (written, years) = handle.block_on(self.write_staged(staged, checkpoint))?;
            applied = written;
            self.pending_years.extend(years);
        }
        if settled && !self.pending_years.is_empty() {
            applied.yearly_files += handle.block_on(self.rebuild_pending())?;
        }
        Ok(applied)
    }
}
