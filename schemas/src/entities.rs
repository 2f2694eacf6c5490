//! SS 12000 entities as skolflode carries them: SS 12000's field names and
//! meanings, without personal data other than the pseudonymous person key.
//! Field-by-field origins are in `docs/schemas.md`.

use crate::codec::{Date, TimestampMillis};
use crate::{avro_enum, avro_record};

avro_record! {
    /// A reference to another SS 12000 object by id. SS 12000's
    /// `displayName` on references is not carried: for persons it is a name.
    pub struct ObjectReference = "se.skolflode.ss12000.ObjectReference" {
        id: String = "id",
    }
}

impl ObjectReference {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

avro_record! {
    /// SS 12000 `meta`, as UTC instants.
    pub struct Meta = "se.skolflode.ss12000.Meta" {
        created: Option<TimestampMillis> = "created",
        modified: Option<TimestampMillis> = "modified",
    }
}

avro_record! {
    /// SS 12000 Organisation (huvudman, school, school unit), without
    /// contact details.
    pub struct Organisation = "se.skolflode.ss12000.Organisation" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        display_name: String = "displayName",
        organisation_code: Option<String> = "organisationCode",
        organisation_type: String = "organisationType",
        organisation_number: Option<String> = "organisationNumber",
        parent_organisation: Option<ObjectReference> = "parentOrganisation",
        school_unit_code: Option<String> = "schoolUnitCode",
        school_types: Vec<String> = "schoolTypes",
        municipality_code: Option<String> = "municipalityCode",
        start_date: Option<Date> = "startDate",
        end_date: Option<Date> = "endDate",
    }
}

avro_enum! {
    /// What the producer found in `civicNo` before pseudonymising it.
    pub enum CivicNoValidity {
        Unknown = "UNKNOWN",
        Valid = "VALID",
        ValidCoordination = "VALID_COORDINATION",
        Invalid = "INVALID",
        Missing = "MISSING",
    }
}

avro_record! {
    /// SS 12000 Enrolment.
    pub struct Enrolment = "se.skolflode.ss12000.Enrolment" {
        enroled_at: ObjectReference = "enroledAt",
        school_year: Option<i32> = "schoolYear",
        school_type: String = "schoolType",
        start_date: Date = "startDate",
        end_date: Option<Date> = "endDate",
        cancelled: Option<bool> = "cancelled",
        education_code: Option<String> = "educationCode",
        programme: Option<ObjectReference> = "programme",
    }
}

avro_record! {
    /// SS 12000 Person, pseudonymised: a person key instead of the civic
    /// number; no names, contact details, identifiers or relations.
    pub struct Person = "se.skolflode.ss12000.Person" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        person_key: String = "personKey",
        civic_no_validity: CivicNoValidity = "civicNoValidity",
        birth_year: Option<i32> = "birthYear",
        sex: Option<String> = "sex",
        security_marking: Option<String> = "securityMarking",
        person_status: Option<String> = "personStatus",
        enrolments: Vec<Enrolment> = "enrolments",
    }
}

avro_record! {
    /// SS 12000 Duty.assignmentRole[].
    pub struct AssignmentRole = "se.skolflode.ss12000.AssignmentRole" {
        group: ObjectReference = "group",
        assignment_role_type: String = "assignmentRoleType",
        start_date: Date = "startDate",
        end_date: Option<Date> = "endDate",
    }
}

avro_record! {
    /// SS 12000 Duty: a person's employment at an organisation in a role.
    pub struct Duty = "se.skolflode.ss12000.Duty" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        person: Option<ObjectReference> = "person",
        assignment_role: Vec<AssignmentRole> = "assignmentRole",
        duty_at: ObjectReference = "dutyAt",
        duty_role: String = "dutyRole",
        signature: Option<String> = "signature",
        duty_percent: Option<i32> = "dutyPercent",
        hours_per_year: Option<i32> = "hoursPerYear",
        start_date: Date = "startDate",
        end_date: Option<Date> = "endDate",
    }
}

avro_record! {
    /// SS 12000 Group.groupMemberships[].
    pub struct GroupMembership = "se.skolflode.ss12000.GroupMembership" {
        person: ObjectReference = "person",
        start_date: Option<Date> = "startDate",
        end_date: Option<Date> = "endDate",
    }
}

avro_record! {
    /// SS 12000 Group._embedded.assignmentRoles[].
    pub struct GroupAssignmentRole = "se.skolflode.ss12000.GroupAssignmentRole" {
        duty: ObjectReference = "duty",
        assignment_role_type: String = "assignmentRoleType",
        start_date: Option<Date> = "startDate",
        end_date: Option<Date> = "endDate",
    }
}

avro_record! {
    /// SS 12000 Group with its memberships.
    pub struct Group = "se.skolflode.ss12000.Group" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        display_name: String = "displayName",
        start_date: Date = "startDate",
        end_date: Option<Date> = "endDate",
        group_type: String = "groupType",
        school_type: Option<String> = "schoolType",
        organisation: ObjectReference = "organisation",
        group_memberships: Vec<GroupMembership> = "groupMemberships",
        assignment_roles: Vec<GroupAssignmentRole> = "assignmentRoles",
    }
}

avro_record! {
    /// SS 12000 Activity.teachers[]: a duty assigned to an activity.
    pub struct DutyAssignment = "se.skolflode.ss12000.DutyAssignment" {
        duty: ObjectReference = "duty",
        start_date: Option<Date> = "startDate",
        end_date: Option<Date> = "endDate",
        minutes_planned: Option<i32> = "minutesPlanned",
        grader: Option<bool> = "grader",
    }
}

avro_record! {
    /// SS 12000 Activity: teaching of groups by teachers in a syllabus.
    pub struct Activity = "se.skolflode.ss12000.Activity" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        display_name: String = "displayName",
        calendar_events_required: bool = "calendarEventsRequired",
        start_date: Date = "startDate",
        end_date: Option<Date> = "endDate",
        activity_type: Option<String> = "activityType",
        minutes_planned: Option<i32> = "minutesPlanned",
        groups: Vec<ObjectReference> = "groups",
        teachers: Vec<DutyAssignment> = "teachers",
        syllabus: Option<ObjectReference> = "syllabus",
        organisation: ObjectReference = "organisation",
        parent_activity: Option<ObjectReference> = "parentActivity",
    }
}

avro_record! {
    /// SS 12000 CalendarEvent.studentExceptions[].
    pub struct StudentException = "se.skolflode.ss12000.StudentException" {
        student: ObjectReference = "student",
        participates: bool = "participates",
        start_time: Option<TimestampMillis> = "startTime",
        end_time: Option<TimestampMillis> = "endTime",
        teaching_length: Option<i32> = "teachingLength",
    }
}

avro_record! {
    /// SS 12000 CalendarEvent.teacherExceptions[].
    pub struct TeacherException = "se.skolflode.ss12000.TeacherException" {
        duty: ObjectReference = "duty",
        participates: bool = "participates",
        start_time: Option<TimestampMillis> = "startTime",
        end_time: Option<TimestampMillis> = "endTime",
        teaching_length: Option<i32> = "teachingLength",
    }
}

avro_record! {
    /// SS 12000 CalendarEvent: one lesson.
    pub struct CalendarEvent = "se.skolflode.ss12000.CalendarEvent" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        activity: ObjectReference = "activity",
        start_time: TimestampMillis = "startTime",
        end_time: TimestampMillis = "endTime",
        cancelled: Option<bool> = "cancelled",
        teaching_length_teacher: Option<i32> = "teachingLengthTeacher",
        teaching_length_student: Option<i32> = "teachingLengthStudent",
        student_exceptions: Vec<StudentException> = "studentExceptions",
        teacher_exceptions: Vec<TeacherException> = "teacherExceptions",
        rooms: Vec<ObjectReference> = "rooms",
    }
}

avro_record! {
    /// SS 12000 Attendance: one pupil at one lesson.
    pub struct Attendance = "se.skolflode.ss12000.Attendance" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        calendar_event: ObjectReference = "calendarEvent",
        student: ObjectReference = "student",
        reporter: Option<ObjectReference> = "reporter",
        is_reported: bool = "isReported",
        attendance_minutes: i32 = "attendanceMinutes",
        valid_absence_minutes: Option<i32> = "validAbsenceMinutes",
        invalid_absence_minutes: Option<i32> = "invalidAbsenceMinutes",
        other_attendance_minutes: Option<i32> = "otherAttendanceMinutes",
        reported_timestamp: Option<TimestampMillis> = "reportedTimestamp",
    }
}

avro_record! {
    /// SS 12000 Syllabus: a subject or course.
    pub struct Syllabus = "se.skolflode.ss12000.Syllabus" {
        id: String = "id",
        meta: Option<Meta> = "meta",
        school_type: String = "schoolType",
        subject_code: String = "subjectCode",
        subject_name: Option<String> = "subjectName",
        subject_designation: Option<String> = "subjectDesignation",
        course_code: Option<String> = "courseCode",
        course_name: Option<String> = "courseName",
        start_school_year: Option<i32> = "startSchoolYear",
        end_school_year: Option<i32> = "endSchoolYear",
        points: Option<i32> = "points",
        curriculum: Option<String> = "curriculum",
        language_code: Option<String> = "languageCode",
        official: bool = "official",
    }
}
