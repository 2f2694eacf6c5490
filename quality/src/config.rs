//! `[quality]` of the report's configuration file.
//!
//! ```toml
//! [quality]
//! registers = "out/registers"            # the sink's out_dir (default: none, no absence statistics)
//! findings_topics = ["skolflode.quality.findings"]   # where the rules' findings are (default)
//! coverage_topics = ["skolflode.quality.coverage"]   # coverage and attendance by weekday (default)
//! long_absence_percent = 10              # a pupil's absence share that counts as long (default 10)
//! extensive_absence_percent = 50         # ... and as extensive (default 50)
//! examples_per_rule = 5                  # entity ids shown per rule (default 5)
//! connections = ["kommun-ss12000"]       # only these connections (default: every one that shows the organiser)
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use skolflode_schemas::catalogue;

use crate::QualityError;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// The Parquet registers (`out_dir` of the sink).
    pub registers: Option<PathBuf>,
    /// Topics holding findings: the producers' and processors' topic, or a
    /// replay's copy of it.
    pub findings_topics: Vec<String>,
    /// Topics holding the processors' coverage per unit and week: theirs,
    /// or a replay's copy. Empty: no coverage by week, no weekdays.
    pub coverage_topics: Vec<String>,
    /// A pupil whose absence (valid and invalid) is at least this share of
    /// their scheduled minutes in the period has long absence.
    pub long_absence_percent: u32,
    /// ... and extensive absence from this share on.
    pub extensive_absence_percent: u32,
    pub examples_per_rule: usize,
    /// Only these connections; empty: every connection whose vendor shows
    /// the organiser.
    pub connections: Vec<String>,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            registers: None,
            findings_topics: vec![catalogue::QUALITY_FINDINGS.to_owned()],
            coverage_topics: vec![catalogue::QUALITY_COVERAGE.to_owned()],
            long_absence_percent: 10,
            extensive_absence_percent: 50,
            examples_per_rule: 5,
            connections: Vec::new(),
        }
    }
}

impl QualityConfig {
    /// Check the settings.
    pub fn build(&self) -> Result<(), QualityError> {
        if self.findings_topics.is_empty() {
            return Err(QualityError::Config(
                "findings_topics: name at least one topic".into(),
            ));
        }
        if !(1..=100).contains(&self.long_absence_percent)
            || !(self.long_absence_percent..=100).contains(&self.extensive_absence_percent)
        {
            return Err(QualityError::Config(format!(
                "long_absence_percent ({}) and extensive_absence_percent ({}) must satisfy 1 <= long <= extensive <= 100",
                self.long_absence_percent, self.extensive_absence_percent
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_and_thresholds_are_checked() {
        assert!(QualityConfig::default().build().is_ok());
        let bad = QualityConfig {
            long_absence_percent: 60,
            ..QualityConfig::default()
        };
        assert!(bad.build().is_err());
        let unknown = serde_json::from_str::<QualityConfig>(r#"{"unknown": 1}"#);
        assert!(unknown.is_err());
    }
}
