//! The register tables: their columns, as the contract names them, and a
//! row as the sink holds it.

use serde::{Deserialize, Serialize};

/// A register table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    TeacherStudent,
    Attendance,
}

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Flag,
}

/// What the yearly register does with a column: groups by it, or sums it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Key,
    Sum,
}

/// A column of a table, after its period column (`week`, `school_year`).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub role: Role,
}

const fn key(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        role: Role::Key,
    }
}

const fn sum(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        role: Role::Sum,
    }
}

const TEACHER_STUDENT: &[Column] = &[
    key("school_unit_code"),
    key("teacher_key"),
    key("student_key"),
    key("activity_id"),
    key("group_id"),
    key("subject_code"),
    sum("lessons"),
    sum("minutes"),
    Column {
        name: "is_grader",
        kind: Kind::Flag,
        role: Role::Key,
    },
    key("source"),
];

const ATTENDANCE: &[Column] = &[
    key("school_unit_code"),
    key("student_key"),
    key("subject_code"),
    sum("lessons"),
    sum("minutes_scheduled"),
    sum("minutes_present"),
    sum("minutes_valid_absence"),
    sum("minutes_invalid_absence"),
    sum("lessons_unreported"),
    key("source"),
];

/// The most columns a table has.
pub const MAX_COLUMNS: usize = if TEACHER_STUDENT.len() > ATTENDANCE.len() {
    TEACHER_STUDENT.len()
} else {
    ATTENDANCE.len()
};

impl Table {
    pub const ALL: [Table; 2] = [Table::TeacherStudent, Table::Attendance];

    /// The table's name in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Table::TeacherStudent => "teacher_student",
            Table::Attendance => "attendance",
        }
    }

    /// Its file in a partition directory.
    pub fn file_name(self) -> String {
        format!("{}.parquet", self.name())
    }

    /// Its columns after the period column, in the contract's order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::TeacherStudent => TEACHER_STUDENT,
            Table::Attendance => ATTENDANCE,
        }
    }

    /// The position of the column `name` among [`Table::columns`] (0 if
    /// the table has none of that name: callers name columns both have).
    pub fn position(self, name: &str) -> usize {
        self.columns()
            .iter()
            .position(|c| c.name == name)
            .unwrap_or(0)
    }
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    Text(String),
    Int(i64),
    Flag(bool),
}

/// A row: its cells in [`Table::columns`] order (the period is not in it).
pub type Row = Vec<Cell>;
