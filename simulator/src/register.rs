//! The traditional pupil register, as SCB receives it: every pupil
//! enrolled on 15 October of the school year, with civic number, school
//! unit code, school form and grade, in a CSV file. Real registers and
//! vendor systems disagree, so this one does too, in ways the simulator
//! knows and writes down beside it:
//!
//! - pupils the vendor serves but the register lacks (`missing_from_register`);
//! - pupils in the register the vendor does not serve (`only_in_register`);
//! - pupils registered at another school unit than the vendor says
//!   (`other_unit`);
//! - lines a checker must refuse: malformed (`malformed_line`), an invalid
//!   civic number (`invalid_civic_number`), a school-unit code that does not
//!   exist (`unknown_school_unit`).
//!
//! Files, under the truth directory:
//! `pupil_register/school_year=2025-26/pupil_register.csv` (what SCB
//! receives) and `…/disagreements.csv` (what the simulator did to it, by
//! line of the register; line 0 for a pupil left out).

use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::civic::{self, Kind};
use crate::world::World;

/// How the register disagrees with the vendor. Shares of the vendor's
/// pupils, drawn from the seed.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterDisagreements {
    /// Vendor pupils left out of the register.
    pub missing_from_register: f64,
    /// Pupils added that the vendor does not serve.
    pub only_in_register: f64,
    /// Pupils registered at another school unit.
    pub other_unit: f64,
    /// Lines broken, with a bad civic number, or with an unknown unit,
    /// each.
    pub bad_lines: f64,
}

impl Default for RegisterDisagreements {
    fn default() -> Self {
        Self {
            missing_from_register: 0.01,
            only_in_register: 0.01,
            other_unit: 0.01,
            bad_lines: 0.002,
        }
    }
}

pub const HEADER: &str = "civic_number,school_unit_code,school_form,grade";
pub const DISAGREEMENTS_HEADER: &str = "line,civic_number,kind,vendor_school_unit_code";

/// 15 October of the school year starting in `start_year`.
pub fn census_day(start_year: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(start_year, 10, 15).unwrap_or(NaiveDate::MIN)
}

/// One line of the register, and what the simulator did to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub civic: String,
    pub kind: &'static str,
    pub vendor_unit: String,
}

/// The register's lines for `world` as of `day`, and the vendor pupils
/// left out of it (as disagreements without a line).
pub fn lines(
    world: &World,
    day: NaiveDate,
    shares: &RegisterDisagreements,
    seed: u64,
) -> (Vec<Line>, Vec<Line>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_6769_7374_6572);
    let codes: Vec<&str> = world
        .organisations
        .iter()
        .filter_map(|o| o.school_unit_code.as_deref())
        .collect();
    let mut out = Vec::new();
    let mut left_out = Vec::new();
    for person in &world.persons {
        let Some(enrolment) = person
            .enrolments
            .iter()
            .find(|e| e.start <= day && e.end.is_none_or(|end| end > day))
        else {
            continue;
        };
        // The register holds the number the tax agency issued; a vendor
        // without one (or with a mistyped one) is the vendor's error.
        let Some(civic) = person.civic.clone() else {
            continue;
        };
        let vendor_unit = world.unit_code(enrolment.unit).unwrap_or("").to_owned();
        let mut unit = vendor_unit.clone();
        let mut kind = "agrees";
        let roll: f64 = rng.random();
        if roll < shares.missing_from_register {
            left_out.push(Line {
                text: String::new(),
                civic,
                kind: "missing_from_register",
                vendor_unit,
            });
            continue;
        } else if roll < shares.missing_from_register + shares.other_unit && codes.len() > 1 {
            let other = codes[rng.random_range(0..codes.len())];
            if other != unit {
                unit = other.to_owned();
                kind = "other_unit";
            }
        }
        if unit.is_empty() {
            // The register knows the unit's code even where the vendor
            // lost it: the code a unit without one would have.
            unit = format!("{:08}", 99_000_000 + enrolment.unit);
        }
        out.push(Line {
            text: format!(
                "{civic},{unit},{},{}",
                enrolment.form.school_type(),
                enrolment.school_year
            ),
            civic,
            kind,
            vendor_unit,
        });
    }
    let pupils = out.len() + left_out.len();
    // At least one of each kind asked for, however small the school.
    let extra = (pupils as f64 * shares.only_in_register).ceil() as usize;
    for _ in 0..extra {
        let birth = day - chrono::Duration::days(rng.random_range(7 * 365..19 * 365));
        let male = rng.random();
        let civic = civic::generate(&mut rng, birth, male, Kind::Personal);
        let unit = codes
            .get(rng.random_range(0..codes.len().max(1)))
            .copied()
            .unwrap_or("");
        out.push(Line {
            text: format!("{civic},{unit},GR,{}", rng.random_range(1..10)),
            civic,
            kind: "only_in_register",
            vendor_unit: String::new(),
        });
    }
    let bad = (pupils as f64 * shares.bad_lines).ceil() as usize;
    for n in 0..bad {
        for kind in [
            "malformed_line",
            "invalid_civic_number",
            "unknown_school_unit",
        ] {
            let birth = day - chrono::Duration::days(rng.random_range(7 * 365..19 * 365));
            let male = rng.random();
            let good = civic::generate(&mut rng, birth, male, Kind::Personal);
            let unit = codes.first().copied().unwrap_or("10000000");
            let (text, civic) = match kind {
                "malformed_line" => (format!("{good};{unit};GR"), good),
                "invalid_civic_number" => {
                    let bad = civic::generate(&mut rng, birth, male, Kind::BadCheckDigit);
                    (format!("{bad},{unit},GR,{}", 1 + n % 9), bad)
                }
                _ => (
                    format!("{good},{:08},GR,{}", 98_000_000 + n, 1 + n % 9),
                    good,
                ),
            };
            out.push(Line {
                text,
                civic,
                kind,
                vendor_unit: String::new(),
            });
        }
    }
    // Registers are not in the vendor's order.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.random_range(0..=i));
    }
    (out, left_out)
}

/// Write the register of `world` as of its census day, and the
/// disagreements, under `dir`.
pub fn write(
    world: &World,
    dir: &Path,
    shares: &RegisterDisagreements,
    seed: u64,
) -> std::io::Result<()> {
    let start = world.year.start_year;
    let label = format!("{start}-{:02}", (start + 1) % 100);
    let dir = dir
        .join("pupil_register")
        .join(format!("school_year={label}"));
    std::fs::create_dir_all(&dir)?;
    let (lines, left_out) = lines(world, census_day(start), shares, seed);
    let mut register =
        std::io::BufWriter::new(std::fs::File::create(dir.join("pupil_register.csv"))?);
    writeln!(register, "{HEADER}")?;
    let mut truth = std::io::BufWriter::new(std::fs::File::create(dir.join("disagreements.csv"))?);
    writeln!(truth, "{DISAGREEMENTS_HEADER}")?;
    for (index, line) in lines.iter().enumerate() {
        writeln!(register, "{}", line.text)?;
        if line.kind != "agrees" {
            // Line numbers count the header as line 1.
            writeln!(
                truth,
                "{},{},{},{}",
                index + 2,
                line.civic,
                line.kind,
                line.vendor_unit
            )?;
        }
    }
    for line in &left_out {
        writeln!(truth, "0,{},{},{}", line.civic, line.kind, line.vendor_unit)?;
    }
    register.flush()?;
    truth.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;

    #[test]
    fn the_register_lists_the_enrolled_pupils_with_the_disagreements_it_says() {
        let config = SimConfig {
            pupils: Some(2_000),
            ..SimConfig::default()
        };
        let world = World::generate(&config);
        let shares = RegisterDisagreements {
            missing_from_register: 0.05,
            only_in_register: 0.05,
            other_unit: 0.05,
            bad_lines: 0.01,
        };
        let day = census_day(world.year.start_year);
        let (lines, left_out) = lines(&world, day, &shares, 7);
        let count = |k: &str| lines.iter().filter(|l| l.kind == k).count();
        let pupils =
            lines.len() - count("only_in_register") - 3 * count("malformed_line") + left_out.len();
        assert!(pupils > 1_500, "{pupils}");
        for kind in [
            "other_unit",
            "only_in_register",
            "malformed_line",
            "invalid_civic_number",
            "unknown_school_unit",
        ] {
            assert!(count(kind) > 0, "no {kind}");
        }
        assert!(!left_out.is_empty());
        for line in &lines {
            let fields: Vec<&str> = line.text.split(',').collect();
            if line.kind == "malformed_line" {
                assert_eq!(fields.len(), 1, "{}", line.text);
                continue;
            }
            assert_eq!(fields.len(), 4, "{}", line.text);
            assert_eq!(fields[0], line.civic);
            assert_eq!(fields[1].len(), 8, "{}", line.text);
        }
        // The same seed, the same register.
        assert_eq!(super::lines(&world, day, &shares, 7).0, lines);
    }
}
