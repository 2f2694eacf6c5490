//! `[process]` in the configuration file.
//!
//! ```toml
//! [process]
//! application_id = "skolflode-process"   # consumer group and transactional id
//! grace_hours = 72                       # a week closes this long after its end
//! commit_every_records = 200000
//! commit_interval_ms = 5000
//! connections = []                     # only these (default: all)
//! memory_per_task_mib = 256              # beyond it, entities go to a disk store
//! # state_dir = "/var/lib/skolflode"     # the disk stores (default: temp dir)
//!
//! [process.sources]                      # connection → the registers' `source`
//! "municipality-a" = "ss12000-sim"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::operator::Settings;

/// The processor's settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Consumer group, and prefix of the transactional id. A replay runs
    /// under a new one. Default `skolflode-process`.
    #[serde(default = "ProcessConfig::default_application_id")]
    pub application_id: String,
    /// How long after a week's end (by the vendors' clocks) the week is
    /// closed and first published. Later changes publish new revisions.
    /// Default 72 hours.
    #[serde(default = "ProcessConfig::default_grace_hours")]
    pub grace_hours: u32,
    /// The register's `source` of each connection: the vendor system's
    /// name. Default: the producer's adapter name (`ss12000`).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// Process only these connections (all when empty): the others'
    /// records are read and skipped.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Commit after this many input records. Default 200 000.
    #[serde(default = "ProcessConfig::default_commit_every_records")]
    pub commit_every_records: usize,
    /// Commit at least this often while input flows. Default 5 000 ms.
    /// Input that pauses (nothing for 50 ms) is committed at once, so
    /// these two bound only a backlog's transactions: each commit waits
    /// for the broker, and on a replay the waits were a fifth of the time
    /// with a commit every 20 000 records or second
    /// (`docs/performance.md`). A crash redoes at most one transaction.
    #[serde(default = "ProcessConfig::default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Memory for entities per task, in MiB. Default 256. Beyond it, after
    /// a commit, a task writes its entities to its disk store and empties
    /// memory, so a task's memory is bounded whatever the length of the
    /// history. 0 keeps everything in memory (no disk store).
    #[serde(default = "ProcessConfig::default_memory_per_task_mib")]
    pub memory_per_task_mib: usize,
    /// Where the tasks' disk stores go (each a directory, deleted when its
    /// task stops). Default: the system's temporary directory.
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            application_id: Self::default_application_id(),
            grace_hours: Self::default_grace_hours(),
            sources: BTreeMap::new(),
            connections: Vec::new(),
            commit_every_records: Self::default_commit_every_records(),
            commit_interval_ms: Self::default_commit_interval_ms(),
            memory_per_task_mib: Self::default_memory_per_task_mib(),
            state_dir: None,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid [process] configuration: {0}")]
pub struct ConfigError(String);

impl ProcessConfig {
    fn default_application_id() -> String {
        "skolflode-process".to_owned()
    }
    fn default_grace_hours() -> u32 {
        72
    }
    fn default_commit_every_records() -> usize {
        200_000
    }
    fn default_commit_interval_ms() -> u64 {
        5_000
    }
    fn default_memory_per_task_mib() -> usize {
        256
    }

    /// The directory of the tasks' disk stores.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.state_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// Check the settings and give the operator's part of them.
    pub fn build(&self) -> Result<Settings, ConfigError> {
        if self.application_id.trim().is_empty() {
            return Err(ConfigError("application_id is empty".into()));
        }
        if self.commit_every_records == 0 {
            return Err(ConfigError(
                "commit_every_records must be at least 1".into(),
            ));
        }
        if self.grace_hours > 24 * 7 * 8 {
            return Err(ConfigError(format!(
                "grace_hours = {} is more than eight weeks",
                self.grace_hours
            )));
        }
        Ok(Settings {
            grace_millis: i64::from(self.grace_hours) * 3_600_000,
            sources: self.sources.clone(),
            connections: self.connections.iter().cloned().collect(),
        })
    }
}
