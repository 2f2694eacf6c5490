//! `[sink]` of the sink's configuration file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::SinkError;

/// The Parquet sink's settings. Every field has a default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
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
    /// Write what is whole at least this often while input keeps coming.
    /// Default 5000 ms.
    pub flush_interval_ms: u64,
    /// … or once this many new rows are held. Bounds the memory: each held
    /// row is a few hundred bytes. Default 1 000 000.
    pub flush_rows: usize,
    /// zstd level of the Parquet files (1–22). Default 3.
    pub zstd_level: i32,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            out_dir: PathBuf::from("out/registers"),
            application_id: "skolflode-sink".to_owned(),
            topic_suffix: None,
            flush_interval_ms: 5_000,
            flush_rows: 1_000_000,
            zstd_level: 3,
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
        if self.flush_rows == 0 {
            return bad("flush_rows must be at least 1".into());
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
