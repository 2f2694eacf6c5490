//! What to simulate: the municipality's size, its vendors (how they keep
//! history, and the dialect of SS 12000 they speak), the rates of change,
//! data-quality faults and API faults. Every field has a default; unknown
//! fields are rejected so that a typo does not silently change a run.
//!
//! A vendor's [`Dialect`] (`[vendor.dialect]` in TOML) switches on the
//! deviations from the standard that real vendors show: zone-less
//! timestamps, 10-digit civic numbers, teachers as persons, `subject`
//! instead of `syllabus`, omitted required fields, a flat deletion feed,
//! page tokens that need the filters repeated, endpoints not offered. The
//! defaults speak the standard. A dialect changes only the JSON served,
//! never the world, the ground truth or `changes.jsonl`.

use serde::{Deserialize, Serialize};

/// Size presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// One compulsory school, about 100 pupils.
    Tiny,
    /// About 20 school units, about 10 000 pupils.
    Municipality,
    /// About 120 school units, about 60 000 pupils.
    City,
    /// Sweden: about 1.5 million pupils (streamed, never held whole).
    National,
}

impl Preset {
    /// Pupils in the preset.
    pub fn pupils(self) -> u32 {
        match self {
            Self::Tiny => 100,
            Self::Municipality => 10_000,
            Self::City => 60_000,
            Self::National => 1_480_000,
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "municipality" => Ok(Self::Municipality),
            "city" => Ok(Self::City),
            "national" => Ok(Self::National),
            other => Err(format!(
                "unknown preset {other:?} (tiny, municipality, city, national)"
            )),
        }
    }
}

/// How a vendor treats history.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorBehaviour {
    /// Name, used as `source` in the ground truth.
    pub name: String,
    /// Send dated duty assignments (`teachers[].startDate/endDate`) when a
    /// teacher is replaced, instead of overwriting the teacher list.
    pub dated_assignments: bool,
    /// When a pupil leaves a group: end-date the membership (true) or delete
    /// it (false).
    pub end_date_memberships: bool,
    /// Announce deletions in `/deletedEntities`.
    pub deletion_feed: bool,
    /// How the vendor deviates from the standard (`[vendor.dialect]`).
    pub dialect: Dialect,
}

impl Default for VendorBehaviour {
    fn default() -> Self {
        Self {
            name: "ss12000-sim".to_owned(),
            dated_assignments: false,
            end_date_memberships: true,
            deletion_feed: true,
            dialect: Dialect::default(),
        }
    }
}

/// How date-times inside items are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timestamps {
    /// RFC 3339 with Swedish local time and its offset, as the standard
    /// asks: `2025-09-01T08:10:00+02:00`.
    #[default]
    Offset,
    /// UTC wall time without a zone and without `Z`:
    /// `2025-09-01T06:10:00`.
    UtcWithoutZone,
    /// Swedish local wall time without a zone: `2025-09-01T08:10:00`.
    LocalWithoutZone,
}

/// A vendor's deviations from the SS 12000 standard, each a switch; the
/// defaults are standard-conforming. Only the JSON served changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dialect {
    /// The form of every date-time inside items (`meta.created`,
    /// `meta.modified`, `startTime`, `endTime`, `reportedTimestamp`, the
    /// flat deletion feed's `deletedAt`); not the HTTP `Date` header, not
    /// date-only fields.
    pub timestamps: Timestamps,
    /// `civicNo.value` as `YYMMDD-NNNN` (`+` instead of `-` from the
    /// person's 100th birthday) instead of the 12-digit `YYYYMMDDNNNN`.
    pub civic_numbers_ten_digits: bool,
    /// An activity's `teachers[]` elements carry `"person": {"id": …}`, the
    /// person holding the duty, instead of `"duty": {"id": …}`.
    pub teachers_as_persons: bool,
    /// Activities carry `"subject": {"id": <syllabus id>}` instead of
    /// `"syllabus": {"id": …}`.
    pub subject_instead_of_syllabus: bool,
    /// Leave out fields the standard requires but registers do not need:
    /// activities' `calendarEventsRequired`, syllabuses' `official`,
    /// duties' `dutyRole`.
    pub omit_unneeded_fields: bool,
    /// `/deletedEntities` answers a top-level array
    /// `[{"entityType": "Duty", "id": …, "deletedAt": …}]` (singular type
    /// names) instead of `{"data": {"duties": [...]}, "pageToken": null}`;
    /// such a vendor offers no `limit` or `pageToken` there.
    pub flat_deleted_entities: bool,
    /// Page tokens do not remember the filters: every request with a
    /// `pageToken` must repeat the first request's filters
    /// (`meta.modified.after`, `startTime.onOrAfter`,
    /// `startTime.onOrBefore`, `after`) exactly, else 400. The standard
    /// instead rejects filters beside a `pageToken`.
    pub filters_with_page_token: bool,
    /// Endpoints the vendor does not offer (e.g. `"syllabuses"`,
    /// `"deletedEntities"`): they answer 404 `endpoint not supported`.
    pub unsupported_endpoints: Vec<String>,
}

impl Dialect {
    /// Every deviation at once (zone-less UTC times), with `unsupported`
    /// endpoints: the sloppiest vendor the simulator plays.
    pub fn every(unsupported: &[&str]) -> Self {
        Self {
            timestamps: Timestamps::UtcWithoutZone,
            civic_numbers_ten_digits: true,
            teachers_as_persons: true,
            subject_instead_of_syllabus: true,
            omit_unneeded_fields: true,
            flat_deleted_entities: true,
            filters_with_page_token: true,
            unsupported_endpoints: unsupported.iter().map(|e| (*e).to_owned()).collect(),
        }
    }
}

/// Rates of change over simulated time.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Evolution {
    /// Chance that an activity gets a new teacher during one term.
    pub teacher_reassignments_per_activity_and_term: f64,
    /// Chance that a pupil moves to another class of the same school during
    /// one term.
    pub class_moves_per_pupil_and_term: f64,
    /// Chance that a pupil moves to another school during one term.
    pub school_moves_per_pupil_and_term: f64,
    /// Share of lessons cancelled.
    pub cancelled_lessons: f64,
    /// Share of lessons whose attendance is reported one to three days late.
    pub late_reports: f64,
    /// Share of lessons whose attendance is never reported.
    pub unreported_lessons: f64,
    /// Share of invalid absences corrected to valid two to five days later.
    pub corrections: f64,
    /// Chance that a teacher leaves (duty deleted) during one term.
    pub teacher_departures_per_term: f64,
}

impl Default for Evolution {
    fn default() -> Self {
        Self {
            teacher_reassignments_per_activity_and_term: 0.10,
            class_moves_per_pupil_and_term: 0.01,
            school_moves_per_pupil_and_term: 0.01,
            cancelled_lessons: 0.02,
            late_reports: 0.07,
            unreported_lessons: 0.02,
            corrections: 0.20,
            teacher_departures_per_term: 0.02,
        }
    }
}

/// Data-quality faults, as rates.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quality {
    /// Persons whose civic number has a wrong check digit.
    pub invalid_civic_numbers: f64,
    /// Persons with a coordination number instead of a personal number.
    pub coordination_numbers: f64,
    /// Persons without any civic number.
    pub missing_civic_numbers: f64,
    /// School units without a school-unit code.
    pub missing_school_unit_codes: f64,
    /// Activities without teachers.
    pub activities_without_teachers: f64,
    /// Activities that reference a group that does not exist.
    pub dangling_references: f64,
    /// Persons (with enrolments) one of whose enrolments, the first, is
    /// served without its `startDate`. Drawn per person from the seed when
    /// rendering: the world and the ground truth do not change.
    pub enrolments_without_start_date: f64,
    /// Teaching groups empty when the year is planned (nobody chose the
    /// language, no pupil reads Swedish as a second language) that still
    /// get an activity and lessons; the others are not taught.
    pub taught_empty_groups: f64,
    /// School units whose code is not eight digits (one digit short).
    pub malformed_school_unit_codes: f64,
    /// Attendance reports whose minutes add up to more than the lesson
    /// (ten minutes too many present).
    pub attendance_exceeding_lesson: f64,
    /// Activities staffed with the least-loaded teacher even when that
    /// teacher already teaches at one of the activity's times (the others
    /// get a teacher who is free then).
    pub double_booked_teachers: f64,
    /// Pupils whose enrolments are served without `schoolYear`. Drawn per
    /// person when rendering: the world does not change.
    pub enrolments_without_school_year: f64,
    /// Pupils (not in förskoleklass) whose enrolments are served with a
    /// school year four years off the one they are in. Drawn per person
    /// when rendering.
    pub implausible_school_years: f64,
    /// Activities served with an `endDate` two weeks after their start,
    /// though their lessons go on. Drawn per activity when rendering.
    pub activities_ending_early: f64,
    /// School moves after which the vendor leaves the pupil's
    /// `meta.modified` as it was.
    pub silent_school_moves: f64,
    /// Teacher reassignments, with dated assignments, after which the new
    /// teacher starts three days after the old one left.
    pub reassignment_gaps: f64,
    /// Pupils also put in the next class of their year (where there is
    /// one) from the start, so that they are in two lessons at once.
    pub pupils_in_two_classes: f64,
}

impl Quality {
    /// Whether a fault of `rate`, told apart by `salt`, befalls item
    /// `index`: a draw from the seed alone, so that the server rendering
    /// an item and the truth listing its faults agree.
    pub fn drawn(rate: f64, seed: u64, salt: u64, index: u64) -> bool {
        let draw = (crate::ids::hash(&[seed, salt, index]) >> 11) as f64 / (1u64 << 53) as f64;
        rate > 0.0 && draw < rate
    }

    /// Whether person `index` is served without school years.
    pub fn without_school_year(&self, seed: u64, index: usize) -> bool {
        Self::drawn(
            self.enrolments_without_school_year,
            seed,
            0x5c4e,
            index as u64,
        )
    }

    /// Whether person `index` (unless it has no school year to be off)
    /// is served with implausible school years.
    pub fn implausible_school_year(&self, seed: u64, index: usize) -> bool {
        !self.without_school_year(seed, index)
            && Self::drawn(self.implausible_school_years, seed, 0xa6e, index as u64)
    }

    /// Whether activity `index` is served ending early.
    pub fn ending_early(&self, seed: u64, index: usize) -> bool {
        Self::drawn(self.activities_ending_early, seed, 0xe4d5, index as u64)
    }

    /// No data-quality fault at all (coordination numbers, which are valid,
    /// as by default).
    pub fn fault_free() -> Self {
        Self {
            invalid_civic_numbers: 0.0,
            missing_civic_numbers: 0.0,
            missing_school_unit_codes: 0.0,
            activities_without_teachers: 0.0,
            dangling_references: 0.0,
            enrolments_without_start_date: 0.0,
            taught_empty_groups: 0.0,
            malformed_school_unit_codes: 0.0,
            attendance_exceeding_lesson: 0.0,
            double_booked_teachers: 0.0,
            enrolments_without_school_year: 0.0,
            implausible_school_years: 0.0,
            activities_ending_early: 0.0,
            silent_school_moves: 0.0,
            reassignment_gaps: 0.0,
            pupils_in_two_classes: 0.0,
            ..Self::default()
        }
    }
}

impl Default for Quality {
    fn default() -> Self {
        Self {
            invalid_civic_numbers: 0.005,
            coordination_numbers: 0.01,
            missing_civic_numbers: 0.002,
            missing_school_unit_codes: 0.02,
            activities_without_teachers: 0.01,
            dangling_references: 0.002,
            enrolments_without_start_date: 0.0,
            taught_empty_groups: 0.5,
            malformed_school_unit_codes: 0.02,
            attendance_exceeding_lesson: 0.0005,
            double_booked_teachers: 0.01,
            enrolments_without_school_year: 0.005,
            implausible_school_years: 0.005,
            activities_ending_early: 0.01,
            silent_school_moves: 0.25,
            reassignment_gaps: 0.1,
            pupils_in_two_classes: 0.002,
        }
    }
}

/// API faults, as shares of requests.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    pub server_errors: f64,
    pub rate_limited: f64,
    /// Seconds in the `Retry-After` of a 429.
    pub retry_after_secs: u64,
    pub slow_responses: f64,
    /// Milliseconds a slow response is held back.
    pub slow_ms: u64,
    pub truncated_json: f64,
    /// Pages that repeat the last item of the previous page.
    pub repeated_items: f64,
    pub expired_tokens: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            server_errors: 0.0,
            rate_limited: 0.0,
            retry_after_secs: 1,
            slow_responses: 0.0,
            slow_ms: 200,
            truncated_json: 0.0,
            repeated_items: 0.0,
            expired_tokens: 0.0,
        }
    }
}

/// The whole simulation.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    pub seed: u64,
    pub preset: Preset,
    /// Overrides the preset's number of pupils.
    pub pupils: Option<u32>,
    /// The school year simulated, by the year it starts (2025: 2025-26).
    pub school_year: i32,
    /// Share of school units that are upper-secondary schools.
    pub upper_secondary_share: f64,
    /// Share of school units whose timetable and attendance are in the
    /// Skola24-style vendor (administration stays in the SS 12000 one).
    pub skola24_share: f64,
    /// The Skola24-style vendor's name, its `source` in the ground truth.
    pub skola24_name: String,
    pub vendor: VendorBehaviour,
    pub evolution: Evolution,
    pub quality: Quality,
    pub faults: Faults,
    /// How the pupil register of 15 October disagrees with the vendor.
    pub register: crate::register::RegisterDisagreements,
    /// OAuth2 client credentials the vendor accepts.
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token, in seconds of wall time.
    pub token_lifetime_secs: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            preset: Preset::Tiny,
            pupils: None,
            school_year: 2025,
            upper_secondary_share: 0.2,
            skola24_share: 0.25,
            skola24_name: "skola24-sim".to_owned(),
            vendor: VendorBehaviour::default(),
            evolution: Evolution::default(),
            quality: Quality::default(),
            faults: Faults::default(),
            register: crate::register::RegisterDisagreements::default(),
            client_id: "skolflode".to_owned(),
            client_secret: "simulated-secret".to_owned(),
            token_lifetime_secs: 3600,
        }
    }
}

impl SimConfig {
    /// The number of pupils to simulate.
    pub fn pupils(&self) -> u32 {
        self.pupils.unwrap_or_else(|| self.preset.pupils())
    }

    /// Check the rates and sizes.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("upper_secondary_share", self.upper_secondary_share),
            ("skola24_share", self.skola24_share),
            (
                "evolution.cancelled_lessons",
                self.evolution.cancelled_lessons,
            ),
            ("evolution.late_reports", self.evolution.late_reports),
            (
                "evolution.unreported_lessons",
                self.evolution.unreported_lessons,
            ),
            ("evolution.corrections", self.evolution.corrections),
            (
                "quality.invalid_civic_numbers",
                self.quality.invalid_civic_numbers,
            ),
            (
                "quality.enrolments_without_start_date",
                self.quality.enrolments_without_start_date,
            ),
            (
                "quality.taught_empty_groups",
                self.quality.taught_empty_groups,
            ),
            (
                "quality.malformed_school_unit_codes",
                self.quality.malformed_school_unit_codes,
            ),
            (
                "quality.attendance_exceeding_lesson",
                self.quality.attendance_exceeding_lesson,
            ),
            (
                "quality.double_booked_teachers",
                self.quality.double_booked_teachers,
            ),
            ("faults.server_errors", self.faults.server_errors),
            ("faults.rate_limited", self.faults.rate_limited),
            ("faults.truncated_json", self.faults.truncated_json),
            ("faults.expired_tokens", self.faults.expired_tokens),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} = {rate} is not a share between 0 and 1"));
            }
        }
        for endpoint in &self.vendor.dialect.unsupported_endpoints {
            if !crate::ss12000::ENDPOINTS.contains(&endpoint.as_str())
                && endpoint != "deletedEntities"
            {
                return Err(format!(
                    "vendor.dialect.unsupported_endpoints: unknown endpoint {endpoint:?} ({}, deletedEntities)",
                    crate::ss12000::ENDPOINTS.join(", ")
                ));
            }
        }
        if self.pupils() == 0 {
            return Err("pupils must be positive".to_owned());
        }
        if !(2000..=2100).contains(&self.school_year) {
            return Err(format!("school_year {} is out of range", self.school_year));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::expect_used)]
    fn dialects_are_read_by_their_documented_names() {
        let config: SimConfig = serde_json::from_value(serde_json::json!({
            "vendor": { "dialect": {
                "timestamps": "utc_without_zone",
                "civic_numbers_ten_digits": true,
                "teachers_as_persons": true,
                "subject_instead_of_syllabus": true,
                "omit_unneeded_fields": true,
                "flat_deleted_entities": true,
                "filters_with_page_token": true,
                "unsupported_endpoints": ["syllabuses", "deletedEntities"],
            }},
            "quality": { "enrolments_without_start_date": 0.1 },
        }))
        .expect("config");
        let d = &config.vendor.dialect;
        assert_eq!(d.timestamps, Timestamps::UtcWithoutZone);
        assert!(d.civic_numbers_ten_digits && d.teachers_as_persons);
        assert!(d.subject_instead_of_syllabus && d.omit_unneeded_fields);
        assert!(d.flat_deleted_entities && d.filters_with_page_token);
        assert_eq!(d.unsupported_endpoints, ["syllabuses", "deletedEntities"]);
        assert_eq!(config.validate(), Ok(()));
        for (style, name) in [
            (Timestamps::Offset, "offset"),
            (Timestamps::LocalWithoutZone, "local_without_zone"),
        ] {
            assert_eq!(serde_json::to_value(style).ok(), Some(name.into()));
        }
        assert_eq!(SimConfig::default().vendor.dialect, Dialect::default());
        assert!(
            serde_json::from_value::<Dialect>(serde_json::json!({ "timestamp": "offset" }))
                .is_err()
        );
        let bad = SimConfig {
            quality: Quality {
                enrolments_without_start_date: 1.5,
                ..Quality::default()
            },
            ..SimConfig::default()
        };
        assert!(bad
            .validate()
            .is_err_and(|e| e.contains("enrolments_without_start_date")));
    }
}
