//! The traditional pupil register (SCB's list as of 15 October: civic
//! number, school-unit code, school form, grade), read for the yearly
//! integration. Civic numbers are pseudonymised as they are read, with the
//! same key and rule as the producers', and never kept or reported:
//! a bad line is reported by its number and the reason only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sha2::{Digest, Sha256};
use skolflode_producers::civic;
use skolflode_producers::pseudonym::Pseudonymiser;

use crate::SinkError;

/// What the register says of a pupil.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub school_unit_code: String,
    pub school_form: String,
    pub grade: String,
}

/// A register line that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// 1-based, the header being line 1.
    pub line: usize,
    pub reason: String,
}

/// A register, read.
#[derive(Clone, Debug, Default)]
pub struct PupilRegister {
    /// By person key.
    pub pupils: BTreeMap<String, Registered>,
    pub findings: Vec<Finding>,
    /// SHA-256 of the file, for the manifests.
    pub sha256: String,
}

pub const HEADER: &str = "civic_number,school_unit_code,school_form,grade";

/// Read the register at `path` as of `census` (year, month, day), given
/// the school-unit codes the pipeline knows: a line naming another unit is
/// reported and left out.
pub fn read(
    path: &Path,
    census: (i32, u32, u32),
    pseudonymiser: &Pseudonymiser,
    known_units: &BTreeSet<String>,
) -> Result<PupilRegister, SinkError> {
    let bytes = std::fs::read(path).map_err(SinkError::io(path))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8_lossy(&bytes);
    let mut register = PupilRegister {
        sha256,
        ..PupilRegister::default()
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err(SinkError::corrupt(
            path,
            format!("the first line is not {HEADER}"),
        ));
    }
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        let mut report = |reason: String| {
            register.findings.push(Finding {
                line: number,
                reason,
            })
        };
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [civic_text, unit, form, grade] = fields.as_slice() else {
            report(format!("{} fields, not 4", fields.len()));
            continue;
        };
        let civic = match civic::parse(civic_text, census) {
            Ok(c) => c,
            Err(why) => {
                report(format!("civic number: {why}"));
                continue;
            }
        };
        if unit.len() != 8 || !unit.bytes().all(|b| b.is_ascii_digit()) {
            report("school-unit code is not 8 digits".into());
            continue;
        }
        if !known_units.contains(*unit) {
            report(format!("school unit {unit} is not in the registers"));
            continue;
        }
        let key = pseudonymiser.civic_key(&civic);
        if register.pupils.contains_key(&key) {
            report("the pupil is on an earlier line too".into());
            continue;
        }
        register.pupils.insert(
            key,
            Registered {
                school_unit_code: (*unit).to_owned(),
                school_form: (*form).to_owned(),
                grade: (*grade).to_owned(),
            },
        );
    }
    Ok(register)
}

/// SHA-256 of a register file, lowercase hex: what the registers record
/// of the register they were integrated with.
pub fn file_sha256(path: &Path) -> Result<String, SinkError> {
    let bytes = std::fs::read(path).map_err(SinkError::io(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Log the lines of a register left out: each at debug level, and one
/// warning with their number (a register of a country has thousands).
pub fn log_findings(year: &str, register: &PupilRegister, written_to: &str) {
    for f in &register.findings {
        tracing::debug!(school_year = %year, line = f.line, reason = %f.reason, "pupil register line left out");
    }
    if !register.findings.is_empty() {
        tracing::warn!(
            school_year = %year,
            lines = register.findings.len(),
            "pupil register lines left out; each with its reason in {written_to}"
        );
    }
}

/// The pupils of a school year's register rows, by school unit.
pub type PupilsByUnit = BTreeMap<String, BTreeSet<String>>;

/// The census day of a school year labelled `2025-26`: 15 October of its
/// first year.
pub fn census(year: &str) -> (i32, u32, u32) {
    let start = year.get(..4).and_then(|y| y.parse().ok()).unwrap_or(1970);
    (start, 10, 15)
}

/// A school unit's line of the `coverage` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub school_unit_code: String,
    /// Pupils the register lists at this unit.
    pub register_pupils: usize,
    /// Pupils with rows at this unit in the yearly registers.
    pub pipeline_pupils: usize,
    /// Both: listed here and with rows here.
    pub in_both: usize,
    /// Listed here, found nowhere in the yearly registers.
    pub only_in_register: usize,
    /// With rows here, not in the register at all.
    pub only_in_pipeline: usize,
    /// With rows here, registered at another unit.
    pub registered_elsewhere: usize,
}

/// The coverage of each school unit of the pipeline or the register, in
/// unit order.
pub fn coverage(pipeline: &PupilsByUnit, register: &PupilRegister) -> Vec<Coverage> {
    let mut registered: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, pupil) in &register.pupils {
        registered
            .entry(pupil.school_unit_code.as_str())
            .or_default()
            .insert(key.as_str());
    }
    let anywhere: BTreeSet<&str> = pipeline.values().flatten().map(String::as_str).collect();
    let units: BTreeSet<&str> = pipeline
        .keys()
        .map(String::as_str)
        .chain(registered.keys().copied())
        .collect();
    let empty_owned = BTreeSet::new();
    let empty = BTreeSet::new();
    units
        .into_iter()
        .map(|unit| {
            let here = pipeline.get(unit).unwrap_or(&empty_owned);
            let listed = registered.get(unit).unwrap_or(&empty);
            Coverage {
                school_unit_code: unit.to_owned(),
                register_pupils: listed.len(),
                pipeline_pupils: here.len(),
                in_both: here.iter().filter(|k| listed.contains(k.as_str())).count(),
                only_in_register: listed.iter().filter(|k| !anywhere.contains(*k)).count(),
                only_in_pipeline: here
                    .iter()
                    .filter(|k| !register.pupils.contains_key(k.as_str()))
                    .count(),
                registered_elsewhere: here
                    .iter()
                    .filter(|k| {
                        register
                            .pupils
                            .get(k.as_str())
                            .is_some_and(|p| p.school_unit_code != unit)
                    })
                    .count(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_are_keyed_and_bad_ones_reported_by_number() -> Result<(), SinkError> {
        let dir = tempfile::tempdir().map_err(SinkError::io(Path::new("tempdir")))?;
        let path = dir.path().join("register.csv");
        // 811218-9876 is Skatteverket's example number.
        let text = format!(
            "{HEADER}\n198112189876,10000001,GR,5\n19811218987,10000001,GR,5\n198112189877,10000001,GR,5\n198112189876;10000001;GR\n201001012384,99999999,GR,9\n198112189876,10000001,GR,5\n"
        );
        std::fs::write(&path, text).map_err(SinkError::io(&path))?;
        let key = Pseudonymiser::new(b"a pseudonym key of at least thirty-two bytes".to_vec())
            .map_err(|e| SinkError::Config(e.to_string()))?;
        let known: BTreeSet<String> = ["10000001".to_owned()].into();
        let register = read(&path, (2025, 10, 15), &key, &known)?;
        assert_eq!(register.pupils.len(), 1);
        let lines: Vec<usize> = register.findings.iter().map(|f| f.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7]);
        for finding in &register.findings {
            assert!(!finding.reason.contains("1981"), "{finding:?}");
        }
        Ok(())
    }
}
