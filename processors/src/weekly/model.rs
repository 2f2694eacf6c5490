//! What the processor keeps of each entity: the facts the registers need,
//! version by version, on both time axes. Versions are appended in the
//! order their entity's partition delivered them, so every query here is a
//! function of the input alone.

use serde::{Deserialize, Serialize};

/// The entity types the processor reads, one per change topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Organisation,
    Person,
    Duty,
    Group,
    Activity,
    Lesson,
    Attendance,
    Syllabus,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Organisation,
        Kind::Person,
        Kind::Duty,
        Kind::Group,
        Kind::Activity,
        Kind::Lesson,
        Kind::Attendance,
        Kind::Syllabus,
    ];

    /// The SS 12000 endpoint, as change events and findings name it.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::Organisation => "organisations",
            Kind::Person => "persons",
            Kind::Duty => "duties",
            Kind::Group => "groups",
            Kind::Activity => "activities",
            Kind::Lesson => "calendarEvents",
            Kind::Attendance => "attendances",
            Kind::Syllabus => "syllabuses",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A group membership, dates inclusive (Avro epoch days).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub person: String,
    pub start: Option<i32>,
    pub end: Option<i32>,
}

/// A teacher (duty) assigned to an activity, dates inclusive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teacher {
    pub duty: String,
    pub start: Option<i32>,
    pub end: Option<i32>,
    pub grader: bool,
}

/// An enrolment of a pupil, dates inclusive (Avro epoch days).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// `enroledAt`: the school unit's organisation id.
    pub organisation: String,
    /// SS 12000 `schoolType` (`FKLASS`, `GR`, `GY`, …).
    pub school_type: String,
    pub school_year: Option<i32>,
    pub start: Option<i32>,
    pub end: Option<i32>,
    pub cancelled: bool,
}

/// Whether a day (epoch days) lies within inclusive optional bounds.
pub fn covers(start: Option<i32>, end: Option<i32>, day: i32) -> bool {
    start.is_none_or(|s| s <= day) && end.is_none_or(|e| day <= e)
}

/// The facts of one version of an entity that the registers need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fact {
    Organisation {
        school_unit_code: Option<String>,
    },
    Person {
        person_key: String,
        /// From the civic number, else `birthDate`.
        birth_year: Option<i32>,
        #[serde(default)]
        enrolments: Vec<Enrolled>,
    },
    Duty {
        person: Option<String>,
        duty_at: String,
    },
    Group {
        members: Vec<Member>,
    },
    Activity {
        organisation: String,
        /// `startDate` and `endDate`, inclusive epoch days.
        start: Option<i32>,
        end: Option<i32>,
        syllabus: Option<String>,
        groups: Vec<String>,
        teachers: Vec<Teacher>,
    },
    Lesson {
        activity: String,
        start: i64,
        end: i64,
        cancelled: bool,
        /// The pupils' scheduled minutes.
        minutes: i32,
        /// Pupils who do not take part (`studentExceptions`).
        absent: Vec<String>,
    },
    Attendance {
        lesson: String,
        student: String,
        reported: bool,
        present: i32,
        valid_absence: i32,
        invalid_absence: i32,
    },
    Syllabus {
        subject_code: String,
    },
}

/// One version of an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Recorded time: when the vendor showed it (its clock).
    pub recorded: i64,
    /// Valid time: from when it was true. `i64::MIN` for the first version
    /// seen (true since before observation).
    pub valid_from: i64,
    pub event_id: String,
    /// The vendor's `meta.modified`, if it gave one.
    pub modified: Option<i64>,
    /// `None` for a delete.
    pub content_hash: Option<String>,
    /// `None` for a delete.
    pub fact: Option<Fact>,
}

/// Every kept version of one entity, in the order they were recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub versions: Vec<Version>,
}

/// Why an incoming version was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// The same change event again (same event id).
    SameEvent,
    /// The same content as the latest version (read again, through another
    /// path, or shown again without a change in between).
    SameContent,
}

impl Entity {
    /// Whether an incoming version repeats what is kept. A version shown
    /// again after a different one (a teacher put back) is not a repeat.
    pub fn repeat(&self, event_id: &str, content_hash: Option<&str>) -> Option<Repeat> {
        if self.versions.iter().any(|v| v.event_id == event_id) {
            return Some(Repeat::SameEvent);
        }
        let last = self.versions.last()?;
        match (last.content_hash.as_deref(), content_hash) {
            (None, None) => Some(Repeat::SameContent),
            (Some(a), Some(b)) if a == b => Some(Repeat::SameContent),
            _ => None,
        }
    }

    /// The valid-from of a new version recorded at `recorded` whose source
    /// says it changed at `modified`: the vendor's own time when it lies
    /// after the latest version's and not after the recording, else the
    /// recording itself. The first version is valid since before
    /// observation.
    pub fn valid_from(&self, recorded: i64, modified: Option<i64>) -> i64 {
        let Some(last) = self.versions.last() else {
            return i64::MIN;
        };
        match modified {
            Some(m) if m > last.valid_from && m <= recorded => m,
            _ => recorded.max(last.valid_from),
        }
    }

    /// The latest version recorded at or before `known`.
    pub fn as_of(&self, known: i64) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.recorded <= known)
    }

    /// The latest fact recorded at or before `known`, deletes skipped: what
    /// a reference to the entity means even after the vendor removed it
    /// (a departed teacher's duty still names the teacher).
    pub fn last_known(&self, known: i64) -> Option<&Fact> {
        self.versions
            .iter()
            .rev()
            .filter(|v| v.recorded <= known)
            .find_map(|v| v.fact.as_ref())
    }

    /// The fact valid at `at` as recorded at or before `known`: the last
    /// such version whose valid time had begun by `at` (the first version
    /// when none had). `None` when that version is a delete.
    pub fn valid_at(&self, at: i64, known: i64) -> Option<&Fact> {
        let mut chosen = None;
        for v in self.versions.iter().filter(|v| v.recorded <= known) {
            if chosen.is_none() || v.valid_from <= at {
                chosen = Some(v);
            }
        }
        chosen.and_then(|v| v.fact.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(recorded: i64, valid_from: i64, hash: &str, teacher: &str) -> Version {
        Version {
            recorded,
            valid_from,
            event_id: format!("e{recorded}"),
            modified: None,
            content_hash: Some(hash.into()),
            fact: Some(Fact::Activity {
                organisation: "u".into(),
                start: None,
                end: None,
                syllabus: None,
                groups: vec![],
                teachers: vec![Teacher {
                    duty: teacher.into(),
                    start: None,
                    end: None,
                    grader: true,
                }],
            }),
        }
    }

    fn teacher(f: Option<&Fact>) -> Option<&str> {
        match f {
            Some(Fact::Activity { teachers, .. }) => teachers.first().map(|t| t.duty.as_str()),
            _ => None,
        }
    }

    #[test]
    fn an_overwrite_does_not_rewrite_the_lessons_before_it() {
        let mut e = Entity::default();
        e.versions.push(version(10, i64::MIN, "a", "old"));
        // The vendor overwrote the teacher list at 50 (meta.modified); it
        // was seen at 80.
        let from = e.valid_from(80, Some(50));
        assert_eq!(from, 50);
        e.versions.push(version(80, from, "b", "new"));
        assert_eq!(teacher(e.valid_at(40, 1000)), Some("old"));
        assert_eq!(teacher(e.valid_at(60, 1000)), Some("new"));
        // As known before the overwrite was seen, the new teacher is unknown.
        assert_eq!(teacher(e.valid_at(60, 70)), Some("old"));
    }

    #[test]
    fn a_modified_time_outside_the_versions_falls_back_to_the_recording() {
        let mut e = Entity::default();
        e.versions.push(version(10, i64::MIN, "a", "x"));
        e.versions.push(version(80, 80, "b", "y"));
        // meta.modified not moved on (or in the future): the recording counts.
        assert_eq!(e.valid_from(120, Some(30)), 120);
        assert_eq!(e.valid_from(120, Some(500)), 120);
        assert_eq!(e.valid_from(120, None), 120);
    }

    #[test]
    fn a_version_seen_again_after_a_different_one_is_not_a_repeat() {
        let mut e = Entity::default();
        e.versions.push(version(10, i64::MIN, "a", "x"));
        assert_eq!(e.repeat("e99", Some("a")), Some(Repeat::SameContent));
        assert_eq!(e.repeat("e10", Some("z")), Some(Repeat::SameEvent));
        e.versions.push(version(20, 20, "b", "y"));
        assert_eq!(e.repeat("e30", Some("a")), None);
    }
}
