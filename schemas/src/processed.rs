//! What the processors publish: the bitemporal history of the entities the
//! registers need, the weekly register snapshots, and their state store's
//! changelog entries, and the coverage of each unit's week. Schemas under
//! `schemas/avro/{HistoryVersion, TeacherStudentRow, AttendanceRow,
//! ProcessorState, UnitWeekCoverage}`.

use crate::codec::{Bytes, TimestampMillis};
use crate::{avro_enum, avro_record};

avro_enum! {
    /// What a history edge links.
    pub enum Relation {
        Unknown = "UNKNOWN",
        ActivityTeacher = "ACTIVITY_TEACHER",
        ActivityGroup = "ACTIVITY_GROUP",
        ActivitySchoolUnit = "ACTIVITY_SCHOOL_UNIT",
        ActivitySyllabus = "ACTIVITY_SYLLABUS",
        GroupMember = "GROUP_MEMBER",
        LessonActivity = "LESSON_ACTIVITY",
        LessonStudentException = "LESSON_STUDENT_EXCEPTION",
        AttendanceLesson = "ATTENDANCE_LESSON",
        AttendanceStudent = "ATTENDANCE_STUDENT",
        DutyPerson = "DUTY_PERSON",
        DutySchoolUnit = "DUTY_SCHOOL_UNIT",
    }
}

avro_record! {
    /// One relationship of a version, valid in `[valid_from, valid_to)`.
    pub struct HistoryEdge = "se.skolflode.history.HistoryEdge" {
        relation: Relation = "relation",
        target_id: String = "target_id",
        valid_from: Option<TimestampMillis> = "valid_from",
        valid_to: Option<TimestampMillis> = "valid_to",
        grader: Option<bool> = "grader",
        participates: Option<bool> = "participates",
    }
}

avro_record! {
    /// One version of one entity, on both time axes.
    pub struct HistoryVersion = "se.skolflode.history.HistoryVersion" {
        entity_type: String = "entity_type",
        connection: String = "connection",
        entity_id: String = "entity_id",
        event_id: String = "event_id",
        version: i32 = "version",
        deleted: bool = "deleted",
        content_hash: Option<String> = "content_hash",
        recorded_from: TimestampMillis = "recorded_from",
        recorded_to: Option<TimestampMillis> = "recorded_to",
        valid_from: Option<TimestampMillis> = "valid_from",
        edges: Vec<HistoryEdge> = "edges",
    }
}

avro_record! {
    /// A row of the weekly `teacher_student` register.
    pub struct TeacherStudentRow = "se.skolflode.register.TeacherStudentRow" {
        connection: String = "connection",
        week: String = "week",
        revision: i32 = "revision",
        rows_in_revision: i32 = "rows_in_revision",
        school_unit_code: String = "school_unit_code",
        teacher_key: String = "teacher_key",
        student_key: String = "student_key",
        activity_id: String = "activity_id",
        group_id: String = "group_id",
        subject_code: String = "subject_code",
        lessons: i32 = "lessons",
        minutes: i32 = "minutes",
        is_grader: bool = "is_grader",
        source: String = "source",
    }
}

avro_record! {
    /// A row of the weekly `attendance` register.
    pub struct AttendanceRow = "se.skolflode.register.AttendanceRow" {
        connection: String = "connection",
        week: String = "week",
        revision: i32 = "revision",
        rows_in_revision: i32 = "rows_in_revision",
        school_unit_code: String = "school_unit_code",
        student_key: String = "student_key",
        subject_code: String = "subject_code",
        lessons: i32 = "lessons",
        minutes_scheduled: i32 = "minutes_scheduled",
        minutes_present: i32 = "minutes_present",
        minutes_valid_absence: i32 = "minutes_valid_absence",
        minutes_invalid_absence: i32 = "minutes_invalid_absence",
        lessons_unreported: i32 = "lessons_unreported",
        source: String = "source",
    }
}

avro_record! {
    /// Pupils' lessons on one weekday of a week at a unit.
    pub struct WeekdayAttendance = "se.skolflode.quality.WeekdayAttendance" {
        weekday: i32 = "weekday",
        pupil_lessons: i32 = "pupil_lessons",
        minutes_scheduled: i32 = "minutes_scheduled",
        minutes_present: i32 = "minutes_present",
        minutes_valid_absence: i32 = "minutes_valid_absence",
        minutes_invalid_absence: i32 = "minutes_invalid_absence",
        pupil_lessons_unreported: i32 = "pupil_lessons_unreported",
    }
}

avro_record! {
    /// Coverage of one school unit's week, with attendance by weekday.
    pub struct UnitWeekCoverage = "se.skolflode.quality.UnitWeekCoverage" {
        connection: String = "connection",
        week: String = "week",
        revision: i32 = "revision",
        rows_in_revision: i32 = "rows_in_revision",
        school_unit_code: String = "school_unit_code",
        lessons: i32 = "lessons",
        lessons_with_teacher: i32 = "lessons_with_teacher",
        lessons_with_pupils: i32 = "lessons_with_pupils",
        lessons_reported: i32 = "lessons_reported",
        pupils: i32 = "pupils",
        pupil_lessons: i32 = "pupil_lessons",
        pupil_lessons_reported: i32 = "pupil_lessons_reported",
        source: String = "source",
        weekdays: Vec<WeekdayAttendance> = "weekdays",
    }
}

avro_record! {
    /// One entry of a processor's state store, as its changelog holds it.
    pub struct ProcessorState = "se.skolflode.processor.ProcessorState" {
        format: String = "format",
        body: Bytes = "body",
    }
}
