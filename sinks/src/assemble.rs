//! From snapshot records to whole revisions.
//!
//! The processor publishes every revision of a connection's week whole,
//! each row saying how many rows its revision has. A revision is complete
//! when that many rows of it have arrived; only then does it reach the
//! registers. A revision no newer than the one a register already holds is
//! a re-delivery: it is counted through (so that its place in the
//! manifest's history is known) but its rows are not kept.

use std::collections::{BTreeMap, HashMap};

use skolflode_schemas::processed::{AttendanceRow, TeacherStudentRow};
use skolflode_schemas::{catalogue, wire, AvroType};

use crate::period::Week;
use crate::table::{Cell, Row, Table};

/// One decoded snapshot record.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub connection: String,
    pub week: Week,
    pub revision: i32,
    pub rows_in_revision: i32,
    pub row: Row,
}

/// Why a snapshot record cannot be used. Carries no field values: a row
/// holds pseudonyms only, but a broken record may hold anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("no value")]
    Empty,
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("schema id {0} is not this topic's row schema")]
    UnknownSchema(u32),
    #[error("week label is not an ISO week")]
    BadWeek,
    #[error("revision {revision} with {rows} rows")]
    BadRevision { revision: i32, rows: i32 },
    #[error("a count of {0}: negative or beyond any week")]
    BadCount(i64),
}

/// The largest count a weekly row may carry: minutes in a week.
pub const MAX_COUNT: i64 = 7 * 24 * 60;

fn text(s: String) -> Cell {
    Cell::Text(s)
}

fn int(n: i32) -> Cell {
    Cell::Int(i64::from(n))
}

/// Decode a record of `table`'s snapshot topic.
pub fn decode(table: Table, payload: Option<&[u8]>) -> Result<Snapshot, BadRecord> {
    let payload = payload.ok_or(BadRecord::Empty)?;
    let (id, body) = wire::split(payload).map_err(|e| BadRecord::Undecodable(e.to_string()))?;
    let subject = match table {
        Table::TeacherStudent => "TeacherStudentRow",
        Table::Attendance => "AttendanceRow",
    };
    let known = catalogue::subject_of_local_id(id).is_some_and(|(s, _)| s.name == subject);
    if !known {
        return Err(BadRecord::UnknownSchema(id));
    }
    let undecodable = |e: skolflode_schemas::DecodeError| BadRecord::Undecodable(e.to_string());
    let (connection, week, revision, rows_in_revision, row) = match table {
        Table::TeacherStudent => {
            let r = TeacherStudentRow::decode_all(body).map_err(undecodable)?;
            let row = vec![
                text(r.school_unit_code),
                text(r.teacher_key),
                text(r.student_key),
                text(r.activity_id),
                text(r.group_id),
                text(r.subject_code),
                int(r.lessons),
                int(r.minutes),
                Cell::Flag(r.is_grader),
                text(r.source),
            ];
            (r.connection, r.week, r.revision, r.rows_in_revision, row)
        }
        Table::Attendance => {
            let r = AttendanceRow::decode_all(body).map_err(undecodable)?;
            let row = vec![
                text(r.school_unit_code),
                text(r.student_key),
                text(r.subject_code),
                int(r.lessons),
                int(r.minutes_scheduled),
                int(r.minutes_present),
                int(r.minutes_valid_absence),
                int(r.minutes_invalid_absence),
                int(r.lessons_unreported),
                text(r.source),
            ];
            (r.connection, r.week, r.revision, r.rows_in_revision, row)
        }
    };
    let week = Week::parse(&week).ok_or(BadRecord::BadWeek)?;
    // A week has 10 080 minutes; a count beyond that is broken input, and
    // would overflow the yearly sums.
    for cell in &row {
        if let Cell::Int(n) = cell {
            if !(0..=MAX_COUNT).contains(n) {
                return Err(BadRecord::BadCount(*n));
            }
        }
    }
    if revision < 1 || rows_in_revision < 1 {
        return Err(BadRecord::BadRevision {
            revision,
            rows: rows_in_revision,
        });
    }
    Ok(Snapshot {
        connection,
        week,
        revision,
        rows_in_revision,
        row,
    })
}

/// Where a record was read: the partition of its table's topic, and its
/// offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub partition: i32,
    pub offset: i64,
}

/// Which revision of which week of which connection, in which table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId {
    pub table: Table,
    pub week: Week,
    pub connection: String,
}

/// A revision that has all its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    pub id: BlockId,
    pub revision: i32,
    pub rows: usize,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The rows, sorted; `None` for a re-delivered revision, whose rows
    /// the registers already hold or have replaced.
    pub content: Option<Vec<Row>>,
}

#[derive(Debug)]
struct Pending {
    revision: i32,
    expected: usize,
    seen: usize,
    partition: i32,
    first_offset: i64,
    rows: Option<Vec<Row>>,
}

/// What became of an offered record.
#[derive(Debug, PartialEq)]
pub enum Offered {
    /// Part of a revision still incomplete.
    Held,
    /// It completed a revision.
    Completed(Completed),
    /// An older revision than one already being assembled: dropped.
    Stale,
}

/// Revisions being assembled, and the newest revision the registers hold
/// per block.
#[derive(Debug, Default)]
pub struct Assembler {
    done: HashMap<BlockId, i32>,
    pending: BTreeMap<BlockId, Pending>,
}

impl Assembler {
    /// An assembler that knows the revisions the registers already hold.
    pub fn new(done: HashMap<BlockId, i32>) -> Self {
        Assembler {
            done,
            pending: BTreeMap::new(),
        }
    }

    /// Take a record of `table` read at `at`.
    pub fn offer(&mut self, table: Table, snapshot: Snapshot, at: At) -> Offered {
        let id = BlockId {
            table,
            week: snapshot.week,
            connection: snapshot.connection,
        };
        let held = self.done.get(&id).copied().unwrap_or(0);
        let expected = usize::try_from(snapshot.rows_in_revision).unwrap_or(0);
        let pending = match self.pending.get_mut(&id) {
            Some(p) if p.revision == snapshot.revision => p,
            Some(p) if p.revision > snapshot.revision => return Offered::Stale,
            _ => {
                // A newer revision than one still incomplete replaces it:
                // the processor publishes a revision whole, in one
                // transaction, so the older one will not complete.
                let keep_rows = snapshot.revision > held;
                self.pending.insert(
                    id.clone(),
                    Pending {
                        revision: snapshot.revision,
                        expected,
                        seen: 0,
                        partition: at.partition,
                        first_offset: at.offset,
                        rows: keep_rows.then(|| Vec::with_capacity(expected.min(1 << 16))),
                    },
                );
                match self.pending.get_mut(&id) {
                    Some(p) => p,
                    None => return Offered::Stale,
                }
            }
        };
        pending.seen += 1;
        if let Some(rows) = &mut pending.rows {
            rows.push(snapshot.row);
        }
        if pending.seen < pending.expected {
            return Offered::Held;
        }
        let Some(done) = self.pending.remove(&id) else {
            return Offered::Held;
        };
        let content = done.rows.map(|mut rows| {
            rows.sort_unstable();
            rows
        });
        if content.is_some() {
            self.done.insert(id.clone(), done.revision);
        }
        Offered::Completed(Completed {
            id,
            revision: done.revision,
            rows: done.seen,
            partition: done.partition,
            first_offset: done.first_offset,
            last_offset: at.offset,
            content,
        })
    }

    /// The first offset of `table`'s `partition` that an incomplete
    /// revision still needs: a restart must read from there.
    pub fn needs_from(&self, table: Table, partition: i32) -> Option<i64> {
        self.pending
            .iter()
            .filter(|(id, p)| id.table == table && p.partition == partition)
            .map(|(_, p)| p.first_offset)
            .min()
    }

    /// Revisions still incomplete.
    pub fn incomplete(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(connection: &str, revision: i32, rows: i32, n: i64) -> Snapshot {
        Snapshot {
            connection: connection.into(),
            week: Week {
                year: 2025,
                week: 36,
            },
            revision,
            rows_in_revision: rows,
            row: vec![Cell::Int(n)],
        }
    }

    fn at(offset: i64) -> At {
        At {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn a_revision_completes_with_its_last_row_and_a_redelivery_keeps_no_rows() {
        let mut a = Assembler::default();
        let table = Table::Attendance;
        assert_eq!(a.offer(table, snap("c", 1, 2, 2), at(10)), Offered::Held);
        assert_eq!(a.needs_from(table, 0), Some(10));
        let Offered::Completed(done) = a.offer(table, snap("c", 1, 2, 1), at(11)) else {
            panic!("not completed");
        };
        assert_eq!(
            done.content,
            Some(vec![vec![Cell::Int(1)], vec![Cell::Int(2)]])
        );
        assert_eq!(
            (done.first_offset, done.last_offset, done.rows),
            (10, 11, 2)
        );
        assert_eq!(a.needs_from(table, 0), None);
        // The same revision again: completed, without rows.
        a.offer(table, snap("c", 1, 2, 2), at(10));
        let Offered::Completed(again) = a.offer(table, snap("c", 1, 2, 1), at(11)) else {
            panic!("not completed");
        };
        assert_eq!(again.content, None);
        // The next revision is kept.
        let Offered::Completed(next) = a.offer(table, snap("c", 2, 1, 3), at(12)) else {
            panic!("not completed");
        };
        assert_eq!(next.content, Some(vec![vec![Cell::Int(3)]]));
    }

    #[test]
    fn an_incomplete_revision_gives_way_to_a_newer_one_and_older_rows_are_stale() {
        let mut a = Assembler::default();
        let table = Table::TeacherStudent;
        assert_eq!(a.offer(table, snap("c", 1, 3, 1), at(1)), Offered::Held);
        assert_eq!(a.offer(table, snap("c", 2, 2, 1), at(2)), Offered::Held);
        assert_eq!(a.offer(table, snap("c", 1, 3, 2), at(3)), Offered::Stale);
        assert_eq!(a.needs_from(table, 0), Some(2));
        assert!(matches!(
            a.offer(table, snap("c", 2, 2, 2), at(4)),
            Offered::Completed(Completed { revision: 2, .. })
        ));
        assert_eq!(a.incomplete(), 0);
    }

    #[test]
    fn connections_and_tables_assemble_apart() {
        let mut a = Assembler::default();
        assert_eq!(
            a.offer(Table::Attendance, snap("a", 1, 2, 1), at(1)),
            Offered::Held
        );
        assert_eq!(
            a.offer(Table::Attendance, snap("b", 1, 2, 1), at(2)),
            Offered::Held
        );
        assert_eq!(
            a.offer(Table::TeacherStudent, snap("a", 1, 2, 1), at(1)),
            Offered::Held
        );
        assert_eq!(a.incomplete(), 3);
        assert!(matches!(
            a.offer(Table::Attendance, snap("b", 1, 2, 2), at(3)),
            Offered::Completed(_)
        ));
        assert_eq!(a.needs_from(Table::Attendance, 0), Some(1));
    }

    #[test]
    fn garbage_is_a_bad_record_not_a_panic() {
        assert_eq!(decode(Table::Attendance, None), Err(BadRecord::Empty));
        assert!(matches!(
            decode(Table::Attendance, Some(b"\0\0\0\0\x01xyz")),
            Err(BadRecord::UnknownSchema(1))
        ));
        assert!(matches!(
            decode(Table::Attendance, Some(b"{json}")),
            Err(BadRecord::Undecodable(_))
        ));
    }
}
