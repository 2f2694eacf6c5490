//! The compatibility gate.
//!
//! Registers are rebuilt from the topics years later by the newest code, so
//! every version must read the data of all earlier versions
//! (BACKWARD_TRANSITIVE). Platform teams' consumers lag behind our schema
//! changes, so every earlier version must also read the data of every later
//! one (FORWARD_TRANSITIVE). Together: FULL_TRANSITIVE. Adding an optional
//! field (with a default) passes both; removing a required field fails the
//! forward half; adding a required field fails the backward half.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

use crate::catalogue::{Subject, SUBJECTS};
use crate::SchemaError;

/// The compatibility level the gate enforces, and that
/// `skolflode schemas register` sets on each subject.
pub const LEVEL: crate::registry::Compatibility = crate::registry::Compatibility::FullTransitive;

/// One subject's result.
#[derive(Debug)]
pub struct Report {
    pub subject: &'static str,
    pub versions: u32,
    pub problems: Vec<SchemaError>,
}

/// Check that data written with `writer` can be read with `reader`;
/// versions are for the message.
pub fn can_read(
    subject: &str,
    writer: (u32, &Schema),
    reader: (u32, &Schema),
) -> Result<(), SchemaError> {
    SchemaCompatibility::can_read(writer.1, reader.1).map_err(|e| SchemaError::Incompatible {
        subject: subject.to_owned(),
        writer: writer.0,
        reader: reader.0,
        cause: e.to_string(),
    })
}

/// Check a list of versions (v1 first) of one subject, transitively in
/// both directions.
pub fn check_versions(subject: &str, versions: &[(u32, Schema)]) -> Vec<SchemaError> {
    let mut problems = Vec::new();
    for (i, (new_version, new)) in versions.iter().enumerate() {
        for (old_version, old) in &versions[..i] {
            let pairs = [
                ((*old_version, old), (*new_version, new)),
                ((*new_version, new), (*old_version, old)),
            ];
            for (writer, reader) in pairs {
                if let Err(e) = can_read(subject, writer, reader) {
                    problems.push(e);
                }
            }
        }
    }
    problems
}

/// Check one catalogue subject: every version parses and passes.
pub fn check_subject(subject: &'static Subject) -> Report {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for version in 1..=subject.latest_version() {
        match subject.parse(version) {
            Ok(schema) => parsed.push((version, schema)),
            Err(e) => problems.push(e),
        }
    }
    problems.extend(check_versions(subject.name, &parsed));
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
