//! The compatibility gate: every subject's newest version must read data
//! written with each of its earlier versions (BACKWARD_TRANSITIVE), and so
//! must every intermediate version read the ones before it.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

use crate::catalogue::{Subject, SUBJECTS};
use crate::SchemaError;

/// One subject's result.
#[derive(Debug)]
pub struct Report {
    pub subject: &'static str,
    pub versions: u32,
    pub problems: Vec<SchemaError>,
}

/// Check that `new` can read what `old` wrote.
pub fn can_read(
    subject: &str,
    old: (u32, &Schema),
    new: (u32, &Schema),
) -> Result<(), SchemaError> {
    SchemaCompatibility::can_read(old.1, new.1).map_err(|e| SchemaError::Incompatible {
        subject: subject.to_owned(),
        old: old.0,
        new: new.0,
        cause: e.to_string(),
    })
}

/// Check one subject: every version parses, and each version reads every
/// earlier one.
pub fn check_subject(subject: &'static Subject) -> Report {
    let mut problems = Vec::new();
    let mut parsed: Vec<(u32, Schema)> = Vec::new();
    for version in 1..=subject.latest_version() {
        match subject.parse(version) {
            Ok(schema) => parsed.push((version, schema)),
            Err(e) => problems.push(e),
        }
    }
    for (i, (new_version, new)) in parsed.iter().enumerate() {
        for (old_version, old) in &parsed[..i] {
            if let Err(e) = can_read(subject.name, (*old_version, old), (*new_version, new)) {
                problems.push(e);
            }
        }
    }
    Report {
        subject: subject.name,
        versions: subject.latest_version(),
        problems,
    }
}

/// Check every subject in the catalogue.
pub fn check_all() -> Vec<Report> {
    SUBJECTS.iter().map(check_subject).collect()
}
