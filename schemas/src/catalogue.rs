//! Every schema subject with all its kept versions, and every topic with its
//! key and value subjects, retention and writer. `schemas/asyncapi.yaml`
//! describes the same topics for people and tools; a test keeps the two
//! equal.

use apache_avro::Schema;

use crate::envelope::Entity;
use crate::SchemaError;

/// A schema and all its versions, oldest first: `versions[0]` is v1.
#[derive(Debug)]
pub struct Subject {
    /// The Avro record's short name, also the folder under `schemas/avro/`.
    pub name: &'static str,
    /// The `.avsc` texts, v1 first. Versions are never removed.
    pub versions: &'static [&'static str],
}

/// All subjects. Adding a version: copy the latest file to `v<N+1>.avsc`,
/// change it, add it here; `skolflode schemas check` must still pass.
pub const SUBJECTS: &[Subject] = &[
    Subject {
        name: "OrganisationChange",
        versions: &[include_str!("../avro/OrganisationChange/v1.avsc")],
    },
    Subject {
        name: "PersonChange",
        versions: &[include_str!("../avro/PersonChange/v1.avsc")],
    },
    Subject {
        name: "DutyChange",
        versions: &[include_str!("../avro/DutyChange/v1.avsc")],
    },
    Subject {
        name: "GroupChange",
        versions: &[include_str!("../avro/GroupChange/v1.avsc")],
    },
    Subject {
        name: "ActivityChange",
        versions: &[include_str!("../avro/ActivityChange/v1.avsc")],
    },
    Subject {
        name: "CalendarEventChange",
        versions: &[include_str!("../avro/CalendarEventChange/v1.avsc")],
    },
    Subject {
        name: "AttendanceChange",
        versions: &[include_str!("../avro/AttendanceChange/v1.avsc")],
    },
    Subject {
        name: "SyllabusChange",
        versions: &[include_str!("../avro/SyllabusChange/v1.avsc")],
    },
    Subject {
        name: "EntityKey",
        versions: &[include_str!("../avro/EntityKey/v1.avsc")],
    },
    Subject {
        name: "StringKey",
        versions: &[include_str!("../avro/StringKey/v1.avsc")],
    },
    Subject {
        name: "ProducerState",
        versions: &[
            include_str!("../avro/ProducerState/v1.avsc"),
            include_str!("../avro/ProducerState/v2.avsc"),
        ],
    },
    Subject {
        name: "DeadLetter",
        versions: &[
            include_str!("../avro/DeadLetter/v1.avsc"),
            include_str!("../avro/DeadLetter/v2.avsc"),
        ],
    },
    Subject {
        name: "QualityFinding",
        versions: &[
            include_str!("../avro/QualityFinding/v1.avsc"),
            include_str!("../avro/QualityFinding/v2.avsc"),
        ],
    },
    Subject {
        name: "Heartbeat",
        versions: &[include_str!("../avro/Heartbeat/v1.avsc")],
    },
    Subject {
        name: "HistoryVersion",
        versions: &[include_str!("../avro/HistoryVersion/v1.avsc")],
    },
    Subject {
        name: "TeacherStudentRow",
        versions: &[include_str!("../avro/TeacherStudentRow/v1.avsc")],
    },
    Subject {
        name: "AttendanceRow",
        versions: &[include_str!("../avro/AttendanceRow/v1.avsc")],
    },
    Subject {
        name: "ProcessorState",
        versions: &[include_str!("../avro/ProcessorState/v1.avsc")],
    },
    Subject {
        name: "UnitWeekCoverage",
        versions: &[include_str!("../avro/UnitWeekCoverage/v1.avsc")],
    },
];

impl Subject {
    /// The newest version number.
    pub fn latest_version(&self) -> u32 {
        self.versions.len() as u32
    }

    /// The newest schema text.
    pub fn latest(&self) -> &'static str {
        self.versions.last().copied().unwrap_or_default()
    }

    /// Parse one version (1-based).
    pub fn parse(&self, version: u32) -> Result<Schema, SchemaError> {
        let text = version
            .checked_sub(1)
            .and_then(|i| self.versions.get(i as usize))
            .ok_or_else(|| SchemaError::Parse {
                subject: self.name.to_owned(),
                version,
                cause: "no such version".to_owned(),
            })?;
        Schema::parse_str(text).map_err(|e| SchemaError::Parse {
            subject: self.name.to_owned(),
            version,
            cause: e.to_string(),
        })
    }

    /// Parse the newest version.
    pub fn parse_latest(&self) -> Result<Schema, SchemaError> {
        self.parse(self.latest_version())
    }
}

/// Look a subject up by name.
pub fn subject(name: &str) -> Option<&'static Subject> {
    SUBJECTS.iter().find(|s| s.name == name)
}

/// How a topic is cleaned up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Kept for `retention_ms` (-1: forever).
    Delete,
    /// Only the newest record per key is kept.
    Compact,
}

/// A topic, with its contract.
#[derive(Debug)]
pub struct Topic {
    pub name: &'static str,
    /// Subject of the key schema.
    pub key: &'static str,
    /// Subject of the value schema.
    pub value: &'static str,
    pub partitions: i32,
    pub cleanup: Cleanup,
    /// -1: kept forever.
    pub retention_ms: i64,
    /// The job that writes it.
    pub writer: &'static str,
    pub description: &'static str,
}

impl Topic {
    /// Subject names under the Confluent TopicNameStrategy.
    pub fn key_subject(&self) -> String {
        format!("{}-key", self.name)
    }

    pub fn value_subject(&self) -> String {
        format!("{}-value", self.name)
    }

    /// Topic-level configs to create it with.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "cleanup.policy",
                match self.cleanup {
                    Cleanup::Delete => "delete",
                    Cleanup::Compact => "compact",
                }
                .to_owned(),
            ),
            ("retention.ms", self.retention_ms.to_string()),
        ]
    }
}

const CHANGE_TOPIC_NOTE: &str = "Change events (create, update with before image, delete, snapshot read)      of one SS 12000 entity type, keyed by connection and entity id. Kept forever: the      registers are rebuilt from these topics.";

macro_rules! change_topic {
    ($name:literal, $value:literal, $partitions:literal) => {
        Topic {
            name: $name,
            key: "EntityKey",
            value: $value,
            partitions: $partitions,
            cleanup: Cleanup::Delete,
            retention_ms: -1,
            writer: "skolflode produce",
            description: CHANGE_TOPIC_NOTE,
        }
    };
}

/// The producer's state: last versions, cursors, published dialect
/// findings (compacted).
pub const PRODUCER_STATE: &str = "skolflode.producer.state";
/// Input that could not be understood.
pub const DEAD_LETTERS: &str = "skolflode.deadletter";
/// What had to be repaired to be understood.
pub const QUALITY_FINDINGS: &str = "skolflode.quality.findings";
/// One record per poll of each connection.
pub const HEARTBEATS: &str = "skolflode.heartbeats";

const HISTORY_TOPIC_NOTE: &str =
    "Bitemporal history of one entity type: every version the processors kept \
     (duplicates dropped), with its relationships' valid-time intervals and its recorded-time \
     interval. Same key and partition count as the change topic it comes from: partition p \
     holds what partition p of the change topic gave.";

macro_rules! history_topic {
    ($name:literal) => {
        Topic {
            name: $name,
            key: "StringKey",
            value: "HistoryVersion",
            partitions: PROCESS_PARTITIONS,
            cleanup: Cleanup::Delete,
            retention_ms: -1,
            writer: "skolflode process",
            description: HISTORY_TOPIC_NOTE,
        }
    };
}

/// Partitions of the heartbeats and of every topic `skolflode process`
/// writes: one processor task per partition, owning the connections whose
/// key lands there.
pub const PROCESS_PARTITIONS: i32 = 6;

/// Each change topic the processors read, with the history topic they
/// write its versions to.
pub const HISTORY_OF: &[(&str, &str)] = &[
    (
        "skolflode.ss12000.organisation.changes",
        "skolflode.history.organisation",
    ),
    (
        "skolflode.ss12000.person.changes",
        "skolflode.history.person",
    ),
    ("skolflode.ss12000.duty.changes", "skolflode.history.duty"),
    ("skolflode.ss12000.group.changes", "skolflode.history.group"),
    (
        "skolflode.ss12000.activity.changes",
        "skolflode.history.activity",
    ),
    (
        "skolflode.ss12000.calendar-event.changes",
        "skolflode.history.calendar-event",
    ),
    (
        "skolflode.ss12000.attendance.changes",
        "skolflode.history.attendance",
    ),
    (
        "skolflode.ss12000.syllabus.changes",
        "skolflode.history.syllabus",
    ),
];

/// Weekly `teacher_student` rows, by revision.
pub const SNAPSHOT_TEACHER_STUDENT: &str = "skolflode.snapshot.teacher-student";
/// Weekly `attendance` rows, by revision.
pub const SNAPSHOT_ATTENDANCE: &str = "skolflode.snapshot.attendance";
/// Coverage and attendance by weekday per school unit and week, by
/// revision.
pub const QUALITY_COVERAGE: &str = "skolflode.quality.coverage";
/// The changelog of `skolflode process`'s state store (compacted); one per
/// application id: `skolflode.process.changelog.<application id>`.
pub const PROCESS_CHANGELOG: &str = "skolflode.process.changelog";

/// Every topic skolflode uses.
pub const TOPICS: &[Topic] = &[
    change_topic!(
        "skolflode.ss12000.organisation.changes",
        "OrganisationChange",
        3
    ),
    change_topic!("skolflode.ss12000.person.changes", "PersonChange", 6),
    change_topic!("skolflode.ss12000.duty.changes", "DutyChange", 3),
    change_topic!("skolflode.ss12000.group.changes", "GroupChange", 6),
    change_topic!("skolflode.ss12000.activity.changes", "ActivityChange", 6),
    change_topic!(
        "skolflode.ss12000.calendar-event.changes",
        "CalendarEventChange",
        12
    ),
    change_topic!(
        "skolflode.ss12000.attendance.changes",
        "AttendanceChange",
        24
    ),
    change_topic!("skolflode.ss12000.syllabus.changes", "SyllabusChange", 3),
    Topic {
        name: PRODUCER_STATE,
        key: "StringKey",
        value: "ProducerState",
        partitions: 6,
        cleanup: Cleanup::Compact,
        retention_ms: -1,
        writer: "skolflode produce",
        description:
            "The producer's state (last version of every entity, and cursors), written in the \
             same transaction as the change events; compacted; read back on start.",
    },
    Topic {
        name: DEAD_LETTERS,
        key: "StringKey",
        value: "DeadLetter",
        partitions: 1,
        cleanup: Cleanup::Delete,
        retention_ms: -1,
        writer: "skolflode produce, skolflode process",
        description:
            "Input that could not be understood, with the reason: redacted, the raw bytes \
             encrypted to the operators' age recipients. Keyed by connection.",
    },
    Topic {
        name: QUALITY_FINDINGS,
        key: "StringKey",
        value: "QualityFinding",
        // As the heartbeats: a connection's findings land in the partition
        // of its processor task (the same key, the same partitioner), so
        // each partition has one writer among the tasks and a replay
        // writes it byte for byte again.
        partitions: PROCESS_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: -1,
        writer: "skolflode produce, skolflode process",
        description:
            "What vendors sent that had to be repaired to be understood, and the validation \
             rules' findings, opened and resolved. No personal data. Keyed by connection.",
    },
    Topic {
        name: HEARTBEATS,
        key: "StringKey",
        value: "Heartbeat",
        partitions: PROCESS_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: 604_800_000,
        writer: "skolflode produce",
        description:
            "One record per poll of each connection, so that idle and failing sources are visible. \
             Committed after the poll's change events: the processors' clock.",
    },
    history_topic!("skolflode.history.organisation"),
    history_topic!("skolflode.history.person"),
    history_topic!("skolflode.history.duty"),
    history_topic!("skolflode.history.group"),
    history_topic!("skolflode.history.activity"),
    history_topic!("skolflode.history.calendar-event"),
    history_topic!("skolflode.history.attendance"),
    history_topic!("skolflode.history.syllabus"),
    Topic {
        name: SNAPSHOT_TEACHER_STUDENT,
        key: "StringKey",
        value: "TeacherStudentRow",
        partitions: PROCESS_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: -1,
        writer: "skolflode process",
        description: "The weekly teacher_student register, a week at a time: when the week closes \
             (its end plus the grace period, by the vendors' clocks) and again, as the next \
             revision, after every correction. Keyed by connection.",
    },
    Topic {
        name: SNAPSHOT_ATTENDANCE,
        key: "StringKey",
        value: "AttendanceRow",
        partitions: PROCESS_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: -1,
        writer: "skolflode process",
        description: "The weekly attendance register, a week at a time, by revision as for \
             teacher_student. Keyed by connection.",
    },
    Topic {
        name: QUALITY_COVERAGE,
        key: "StringKey",
        value: "UnitWeekCoverage",
        partitions: PROCESS_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: -1,
        writer: "skolflode process",
        description: "Per school unit and week: lessons with a teacher, lessons and pupils' \
             lessons reported, pupils with lessons, and attendance by weekday; published with \
             every revision of the week's registers. Counts only. Keyed by connection.",
    },
    Topic {
        name: PROCESS_CHANGELOG,
        key: "StringKey",
        value: "ProcessorState",
        partitions: PROCESS_PARTITIONS,
        cleanup: Cleanup::Compact,
        retention_ms: -1,
        writer: "skolflode process",
        description:
            "The processor's state store, written in the same transaction as its outputs and \
             consumed offsets; compacted; read back on start. Internal.",
    },
];

/// The schema id used in the Confluent framing when no schema registry is
/// configured: `1000 × (position in SUBJECTS + 1) + version`. Stable as long
/// as subjects are only ever appended to `SUBJECTS`; consumers without the
/// registry can map it back with [`subject_of_local_id`].
pub fn local_schema_id(subject: &str) -> Option<u32> {
    let (index, s) = SUBJECTS
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == subject)?;
    Some(1000 * (index as u32 + 1) + s.latest_version())
}

/// The subject and version behind a [`local_schema_id`].
pub fn subject_of_local_id(id: u32) -> Option<(&'static Subject, u32)> {
    let subject = SUBJECTS.get((id / 1000).checked_sub(1)? as usize)?;
    let version = id % 1000;
    (1..=subject.latest_version())
        .contains(&version)
        .then_some((subject, version))
}

/// Look a topic up by name.
pub fn topic(name: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.name == name)
}

/// The change topic of an entity type.
pub fn change_topic<E: Entity>() -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.value == E::CHANGE_SUBJECT)
}

/// A decoder of `subject` that reads every kept version, by the local
/// schema ids [`local_schema_id`] gives them.
pub fn decoder<T: crate::AvroType>(subject: &str) -> Result<crate::wire::Decoder<T>, SchemaError> {
    let (index, s) = SUBJECTS
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == subject)
        .ok_or_else(|| SchemaError::Unresolvable(format!("no subject {subject}")))?;
    let mut decoder = crate::wire::Decoder::new(s.parse_latest()?);
    for version in 1..=s.latest_version() {
        // Local ids as `local_schema_id` numbers them, for every
        // version a producer may have written.
        let id = 1000 * (index as u32 + 1) + version;
        decoder.add_writer(id, &s.parse(version)?)?;
    }
    debug_assert_eq!(
        local_schema_id(subject),
        Some(1000 * (index as u32 + 1) + s.latest_version())
    );
    Ok(decoder)
}
