//! `[sink]` of the sink's configuration file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::SinkError;

/// Where the registers go.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Parquet files under `out_dir` (no server needed).
    #[default]
    Parquet,
    /// Tables in PostgreSQL (`[sink.postgres]`).
    Postgres,
}

/// `[sink.postgres]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// The environment variable holding the connection string (it may
    /// hold a password, so it is never in the file nor printed). Default
    /// `DATABASE_URL`.
    pub url_env: String,
    /// The schema of the register tables, created and migrated by the
    /// sink; one sink per schema. Default `skolflode`.
    pub schema: String,
    /// Memory for the server's sort of a school year's weekly rows, per
    /// table, in MiB (`work_mem` of the sink's reading connections only).
    /// The national week's sort ran about a third faster with 64 than
    /// with the server's usual 4 (`docs/performance.md`). Default 64.
    pub sort_memory_mib: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url_env: "DATABASE_URL".to_owned(),
            schema: "skolflode".to_owned(),
            sort_memory_mib: 64,
        }
    }
}

/// `[sink.pupil_register]`: the yearly integration with the traditional
/// pupil register (Parquet output).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PupilRegisterConfig {
    /// The register's CSV file per school year (`"2025-26" = "path"`).
    /// Default: none, no integration.
    pub files: std::collections::BTreeMap<String, PathBuf>,
    /// The pseudonym key, the producers' own (a file; else
    /// `SKOLFLODE_PSEUDONYM_KEY`). Needed only with `files`.
    pub pseudonym_key_file: Option<PathBuf>,
}

/// The sink's settings. Every field has a default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `parquet` (default) or `postgres`.
    pub output: OutputKind,
    /// Settings of the PostgreSQL output.
    pub postgres: PostgresConfig,
    /// The pupil register to integrate the yearly registers with.
    pub pupil_register: PupilRegisterConfig,
    /// The register directory (`weekly/`, `yearly/`, `_sink/`). Default
    /// `out/registers`. One sink per directory: a lock file enforces it.
    pub out_dir: PathBuf,
    /// The consumer group the sink reports its positions under (for lag
    /// monitoring; the sink resumes from its own checkpoint in
    /// `<out_dir>/_sink/`, written with the files). Default `skolflode-sink`.
    pub application_id: String,
    /// Read the snapshot topics of a replay, `<topic>.<suffix>`. Default:
    /// none, the processor's own topics.
    pub topic_suffix: Option<String>,
    /// No whole revision waits longer than this to be written, even
    /// while input keeps coming (once caught up, the sink writes at once).
    /// Default 5000 ms.
    pub flush_interval_ms: u64,
    /// Write what is whole once it takes this much memory, encoded (for
    /// Parquet, compressed: about 40 bytes a row; for PostgreSQL, `COPY`
    /// tuples: about 250). Bounds the sink's memory during a backlog, and
    /// how often a week's file is rewritten then. Default 268 435 456
    /// (256 MiB).
    pub flush_bytes: usize,
    /// zstd level of the Parquet files (1–22). Default 3.
    pub zstd_level: i32,
    /// A yearly Parquet file is summed a range of school units at a time,
    /// of about this many weekly rows: its memory (a few hundred bytes a
    /// row, per table) whatever the size of the school year. The rows do
    /// not depend on it; the files' page layout may. Default 262 144.
    pub yearly_range_rows: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            output: OutputKind::Parquet,
            postgres: PostgresConfig::default(),
            pupil_register: PupilRegisterConfig::default(),
            out_dir: PathBuf::from("out/registers"),
            application_id: "skolflode-sink".to_owned(),
            topic_suffix: None,
            flush_interval_ms: 5_000,
            flush_bytes: 256 << 20,
            zstd_level: 3,
            yearly_range_rows: 1 << 18,
        }
    }
}

impl SinkConfig {
    /// Check the settings.
    pub fn build(&self) -> Result<(), SinkError> {
        let bad = |m: String| Err(SinkError::Config(m));
        if self.out_dir.as_os_str().is_empty() {
            return bad("out_dir is empty".into());
        }
        if self.application_id.trim().is_empty() {
            return bad("application_id is empty".into());
        }
        if self
            .topic_suffix
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return bad(
                "topic_suffix is empty: leave it out to read the processor's own topics".into(),
            );
        }
        let schema = &self.postgres.schema;
        let identifier = schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !identifier {
            return bad(format!(
                "postgres.schema = {schema:?}: use lowercase letters, digits and _"
            ));
        }
        if self.output == OutputKind::Postgres && self.postgres.url_env.trim().is_empty() {
            return bad("postgres.url_env is empty".into());
        }
        for year in self.pupil_register.files.keys() {
            let ok = year.len() == 7
                && year.as_bytes()[4] == b'-'
                && year[..4]
                    .parse::<i32>()
                    .is_ok_and(|y| year[5..].parse::<i32>().is_ok_and(|e| e == (y + 1) % 100));
            if !ok {
                return bad(format!(
                    "pupil_register.files: {year:?} is not a school year like 2025-26"
                ));
            }
        }
        if self.flush_bytes == 0 {
            return bad("flush_bytes must be at least 1".into());
        }
        if self.yearly_range_rows == 0 {
            return bad("yearly_range_rows must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.postgres.sort_memory_mib) {
            return bad(format!(
                "postgres.sort_memory_mib = {} is not in 1..=65536",
                self.postgres.sort_memory_mib
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad(format!("zstd_level = {} is not in 1..=22", self.zstd_level));
        }
        Ok(())
    }

    /// The snapshot topic the sink reads `topic` from.
    pub fn topic(&self, topic: &str) -> String {
        match &self.topic_suffix {
            Some(suffix) => format!("{topic}.{suffix}"),
            None => topic.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_and_unknown_fields_are_refused() {
        assert!(SinkConfig::default().build().is_ok());
        let parsed: Result<SinkConfig, _> = toml_like("{\"out_dir\": \"x\", \"oops\": 1}");
        assert!(parsed.is_err());
        let bad = SinkConfig {
            zstd_level: 0,
            ..SinkConfig::default()
        };
        assert!(bad.build().is_err());
    }

    fn toml_like(text: &str) -> Result<SinkConfig, serde_json::Error> {
        serde_json::from_str(text)
    }
}
