//! From snapshot records to whole revisions.
//!
//! The processor publishes every revision of a connection's week whole,
//! each row saying how many rows its revision has. A revision is complete
//! when that many rows of it have arrived; only then does it reach the
//! registers. A revision no newer than the one a register already holds is
//! a re-delivery: it is counted through (so that its place in the
//! manifest's history is known) but its rows are not kept.

use std::collections::{BTreeMap, HashMap};

use skolflode_schemas::codec::Reader;
use skolflode_schemas::{catalogue, wire, AvroType, DecodeError};

use crate::block::{Block, RowsBuilder};
use crate::period::Week;
use crate::table::{Kind, Table, MAX_COLUMNS};

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

/// What a snapshot record says about the revision it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub connection: &'a str,
    pub week: Week,
    pub revision: i32,
    pub rows_in_revision: i32,
}

/// A cell of a snapshot record as read. Text is not yet checked for
/// UTF-8: a revision's text columns are checked whole once it is complete
/// ([`RowsBuilder::finish`]), one check per column instead of one per
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell<'a> {
    Text(&'a [u8]),
    Int(i32),
    Flag(bool),
}

/// A snapshot record, read: its header and its row's cells, in the
/// table's column order, borrowed from the record's payload.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub table: Table,
    pub header: Header<'a>,
    cells: [Cell<'a>; MAX_COLUMNS],
    columns: usize,
}

impl<'a> Record<'a> {
    /// The row's cells, one per column of [`Table::columns`].
    pub fn cells(&self) -> &[Cell<'a>] {
        &self.cells[..self.columns]
    }
}

/// Reads snapshot records straight into cells that borrow the payload:
/// the rows are copied once, into the revision's columns. The snapshot
/// schemas hold the header (`connection`, `week`, `revision`,
/// `rows_in_revision`) and then the table's columns, in order (a test
/// checks it against the schemas).
#[derive(Debug, Default)]
pub struct Decoder {
    /// The last week label read, and its week: a revision's rows all carry
    /// the same label.
    last_week: Option<(Vec<u8>, Week)>,
}

fn undecodable(e: DecodeError) -> BadRecord {
    BadRecord::Undecodable(e.to_string())
}

impl Decoder {
    /// Read a record of `table`'s snapshot topic.
    pub fn read<'a>(
        &mut self,
        table: Table,
        payload: Option<&'a [u8]>,
    ) -> Result<Record<'a>, BadRecord> {
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
        let mut reader = Reader::new(body);
        let connection = reader.str().map_err(undecodable)?;
        let week = reader.bytes().map_err(undecodable)?;
        let revision = reader.int().map_err(undecodable)?;
        let rows_in_revision = reader.int().map_err(undecodable)?;
        let columns = table.columns();
        let mut cells = [Cell::Int(0); MAX_COLUMNS];
        for (cell, column) in cells.iter_mut().zip(columns) {
            *cell = match column.kind {
                Kind::Text => Cell::Text(reader.bytes().map_err(undecodable)?),
                Kind::Int => {
                    // Every number of a weekly row is a count within a
                    // week; beyond that is broken input, and would
                    // overflow the yearly sums.
                    let n = reader.int().map_err(undecodable)?;
                    if !(0..=MAX_COUNT).contains(&i64::from(n)) {
                        return Err(BadRecord::BadCount(i64::from(n)));
                    }
                    Cell::Int(n)
                }
                Kind::Flag => Cell::Flag(bool::decode(&mut reader).map_err(undecodable)?),
            };
        }
        match reader.remaining() {
            0 => {}
            n => return Err(BadRecord::Undecodable(format!("{n} bytes after the row"))),
        }
        let week = match &self.last_week {
            Some((label, parsed)) if label.as_slice() == week => *parsed,
            _ => {
                let parsed = std::str::from_utf8(week)
                    .ok()
                    .and_then(Week::parse)
                    .ok_or(BadRecord::BadWeek)?;
                self.last_week = Some((week.to_vec(), parsed));
                parsed
            }
        };
        if revision < 1 || rows_in_revision < 1 {
            return Err(BadRecord::BadRevision {
                revision,
                rows: rows_in_revision,
            });
        }
        Ok(Record {
            table,
            header: Header {
                connection,
                week,
                revision,
                rows_in_revision,
            },
            cells,
            columns: columns.len(),
        })
    }
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
    pub content: Option<Block>,
}

#[derive(Debug)]
struct Pending {
    revision: i32,
    expected: usize,
    seen: usize,
    partition: i32,
    first_offset: i64,
    rows: Option<RowsBuilder>,
}

/// What became of an offered record.
#[derive(Debug, PartialEq)]
pub enum Offered {
    /// Part of a revision still incomplete.
    Held,
    /// It completed a revision.
    Completed(Completed),
    /// It completed a revision whose rows could not be put in order (an
    /// array beyond Arrow's limits); the revision is not written.
    Unusable(String),
    /// An older revision than one already being assembled: dropped.
    Stale,
}

/// Revisions being assembled, and the newest revision the registers hold
/// per block.
#[derive(Debug, Default)]
pub struct Assembler {
    done: HashMap<BlockId, i32>,
    /// Per table and week, per connection: looked up by the record's
    /// borrowed connection name, without an allocation per record.
    pending: BTreeMap<(Table, Week), BTreeMap<String, Pending>>,
    incomplete: usize,
}

impl Assembler {
    /// An assembler that knows the revisions the registers already hold.
    pub fn new(done: HashMap<BlockId, i32>) -> Self {
        Assembler {
            done,
            ..Assembler::default()
        }
    }

    /// Take `record`, read at `at`.
    pub fn offer(&mut self, record: &Record<'_>, at: At) -> Offered {
        let (table, header) = (record.table, record.header);
        let week_slot = self.pending.entry((table, header.week)).or_default();
        let current = week_slot.get(header.connection).map(|p| p.revision);
        match current {
            Some(r) if r == header.revision => {}
            Some(r) if r > header.revision => return Offered::Stale,
            _ => {
                // A newer revision than one still incomplete replaces it:
                // the processor publishes a revision whole, in one
                // transaction, so the older one will not complete.
                let id = BlockId {
                    table,
                    week: header.week,
                    connection: header.connection.to_owned(),
                };
                let held = self.done.get(&id).copied().unwrap_or(0);
                let expected = usize::try_from(header.rows_in_revision).unwrap_or(0);
                let keep_rows = header.revision > held;
                if current.is_none() {
                    self.incomplete += 1;
                }
                week_slot.insert(
                    id.connection,
                    Pending {
                        revision: header.revision,
                        expected,
                        seen: 0,
                        partition: at.partition,
                        first_offset: at.offset,
                        rows: keep_rows.then(|| RowsBuilder::new(table, expected.min(1 << 16))),
                    },
                );
            }
        }
        let Some(pending) = week_slot.get_mut(header.connection) else {
            return Offered::Stale;
        };
        pending.seen += 1;
        if let Some(rows) = &mut pending.rows {
            rows.push(record);
        }
        if pending.seen < pending.expected {
            return Offered::Held;
        }
        let Some(done) = week_slot.remove(header.connection) else {
            return Offered::Held;
        };
        if week_slot.is_empty() {
            self.pending.remove(&(table, header.week));
        }
        self.incomplete -= 1;
        let id = BlockId {
            table,
            week: header.week,
            connection: header.connection.to_owned(),
        };
        let content = match done.rows.map(RowsBuilder::finish).transpose() {
            Ok(content) => content,
            Err(e) => return Offered::Unusable(e.to_string()),
        };
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
            .filter(|((t, _), _)| *t == table)
            .flat_map(|(_, slot)| slot.values())
            .filter(|p| p.partition == partition)
            .map(|p| p.first_offset)
            .min()
    }

    /// Revisions still incomplete.
    pub fn incomplete(&self) -> usize {
        self.incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use skolflode_schemas::processed::{AttendanceRow, TeacherStudentRow};
    use skolflode_schemas::AvroRecord;

    /// An attendance record of `connection`'s revision, told apart by
    /// its `lessons`.
    fn record(connection: &str, revision: i32, rows: i32, lessons: i32) -> Vec<u8> {
        let row = AttendanceRow {
            connection: connection.into(),
            week: "2025-W36".into(),
            revision,
            rows_in_revision: rows,
            school_unit_code: "U1".into(),
            student_key: format!("s{lessons}"),
            subject_code: "MA".into(),
            lessons,
            source: "sim".into(),
            ..AttendanceRow::default()
        };
        let id = catalogue::local_schema_id("AttendanceRow").unwrap_or_default();
        wire::encode(id, &row)
    }

    fn at(offset: i64) -> At {
        At {
            partition: 0,
            offset,
        }
    }

    struct Feed {
        assembler: Assembler,
        decoder: Decoder,
    }

    impl Feed {
        fn new() -> Self {
            Feed {
                assembler: Assembler::default(),
                decoder: Decoder::default(),
            }
        }

        fn offer(&mut self, table: Table, payload: Vec<u8>, at: At) -> Offered {
            match self.decoder.read(table, Some(&payload)) {
                Ok(record) => self.assembler.offer(&record, at),
                Err(e) => Offered::Unusable(e.to_string()),
            }
        }
    }

    fn lessons(block: &Block) -> Vec<i32> {
        block.columns[3]
            .as_primitive::<Int32Type>()
            .iter()
            .flatten()
            .collect()
    }

    const T: Table = Table::Attendance;

    #[test]
    fn a_revision_completes_with_its_last_row_and_a_redelivery_keeps_no_rows() {
        let mut f = Feed::new();
        assert_eq!(f.offer(T, record("c", 1, 2, 2), at(10)), Offered::Held);
        assert_eq!(f.assembler.needs_from(T, 0), Some(10));
        let Offered::Completed(done) = f.offer(T, record("c", 1, 2, 1), at(11)) else {
            panic!("not completed");
        };
        // Sorted: student s1 before s2.
        assert_eq!(done.content.as_ref().map(lessons), Some(vec![1, 2]));
        assert_eq!(
            (done.first_offset, done.last_offset, done.rows),
            (10, 11, 2)
        );
        assert_eq!(f.assembler.needs_from(T, 0), None);
        // The same revision again: completed, without rows.
        f.offer(T, record("c", 1, 2, 2), at(10));
        let Offered::Completed(again) = f.offer(T, record("c", 1, 2, 1), at(11)) else {
            panic!("not completed");
        };
        assert_eq!(again.content, None);
        // The next revision is kept.
        let Offered::Completed(next) = f.offer(T, record("c", 2, 1, 3), at(12)) else {
            panic!("not completed");
        };
        assert_eq!(next.content.as_ref().map(lessons), Some(vec![3]));
    }

    #[test]
    fn an_incomplete_revision_gives_way_to_a_newer_one_and_older_rows_are_stale() {
        let mut f = Feed::new();
        assert_eq!(f.offer(T, record("c", 1, 3, 1), at(1)), Offered::Held);
        assert_eq!(f.offer(T, record("c", 2, 2, 1), at(2)), Offered::Held);
        assert_eq!(f.assembler.incomplete(), 1);
        assert_eq!(f.offer(T, record("c", 1, 3, 2), at(3)), Offered::Stale);
        assert_eq!(f.assembler.needs_from(T, 0), Some(2));
        assert!(matches!(
            f.offer(T, record("c", 2, 2, 2), at(4)),
            Offered::Completed(Completed { revision: 2, .. })
        ));
        assert_eq!(f.assembler.incomplete(), 0);
    }

    #[test]
    fn connections_and_tables_assemble_apart() {
        let mut f = Feed::new();
        assert_eq!(f.offer(T, record("a", 1, 2, 1), at(1)), Offered::Held);
        assert_eq!(f.offer(T, record("b", 1, 2, 1), at(2)), Offered::Held);
        assert_eq!(f.assembler.incomplete(), 2);
        assert!(matches!(
            f.offer(T, record("b", 1, 2, 2), at(3)),
            Offered::Completed(_)
        ));
        assert_eq!(f.assembler.needs_from(T, 0), Some(1));
        assert_eq!(f.assembler.needs_from(Table::TeacherStudent, 0), None);
    }

    #[test]
    fn the_snapshot_schemas_hold_the_header_then_the_columns() {
        let header = ["connection", "week", "revision", "rows_in_revision"];
        for (table, fields) in [
            (Table::TeacherStudent, TeacherStudentRow::FIELDS),
            (Table::Attendance, AttendanceRow::FIELDS),
        ] {
            let expected: Vec<&str> = header
                .into_iter()
                .chain(table.columns().iter().map(|c| c.name))
                .collect();
            assert_eq!(fields, expected.as_slice(), "{table:?}");
        }
    }

    #[test]
    fn a_record_read_gives_the_row_it_was_written_from() -> Result<(), String> {
        let teaching = TeacherStudentRow {
            connection: "c".into(),
            week: "2025-W36".into(),
            revision: 1,
            rows_in_revision: 1,
            school_unit_code: "U1".into(),
            teacher_key: "t".into(),
            student_key: "s".into(),
            activity_id: "a".into(),
            group_id: "g".into(),
            subject_code: "MA".into(),
            lessons: 3,
            minutes: 180,
            is_grader: true,
            source: "sim".into(),
        };
        let id = catalogue::local_schema_id("TeacherStudentRow").unwrap_or_default();
        let payload = wire::encode(id, &teaching);
        let mut decoder = Decoder::default();
        let read_back = decoder
            .read(Table::TeacherStudent, Some(&payload))
            .map_err(|e| e.to_string())?;
        let mut read = RowsBuilder::new(Table::TeacherStudent, 1);
        read.push(&read_back);
        let mut written = RowsBuilder::new(Table::TeacherStudent, 1);
        written.push_teacher_student(&teaching);
        let (read, written) = (read.finish(), written.finish());
        assert_eq!(
            read.map_err(|e| e.to_string())?,
            written.map_err(|e| e.to_string())?
        );
        let attendance = record("c", 1, 1, 4);
        let read_back = decoder
            .read(T, Some(&attendance))
            .map_err(|e| e.to_string())?;
        assert_eq!(
            read_back.cells(),
            [
                Cell::Text(b"U1"),
                Cell::Text(b"s4"),
                Cell::Text(b"MA"),
                Cell::Int(4),
                Cell::Int(0),
                Cell::Int(0),
                Cell::Int(0),
                Cell::Int(0),
                Cell::Int(0),
                Cell::Text(b"sim"),
            ]
        );
        Ok(())
    }

    #[test]
    fn a_revision_with_text_that_is_not_utf8_is_unusable() {
        let mut f = Feed::new();
        let mut bad = record("c", 1, 1, 1);
        // The last field, `source` ("sim"), ends the record.
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert!(matches!(f.offer(T, bad, at(1)), Offered::Unusable(_)));
        assert_eq!(f.assembler.incomplete(), 0);
    }

    #[test]
    fn garbage_is_a_bad_record_not_a_panic() {
        let mut d = Decoder::default();
        assert_eq!(d.read(T, None).err(), Some(BadRecord::Empty));
        assert!(matches!(
            d.read(T, Some(b"\0\0\0\0\x01xyz")),
            Err(BadRecord::UnknownSchema(1))
        ));
        assert!(matches!(
            d.read(T, Some(b"{json}")),
            Err(BadRecord::Undecodable(_))
        ));
        // The attendance schema on the teacher-student topic.
        assert!(matches!(
            d.read(Table::TeacherStudent, Some(&record("c", 1, 1, 1))),
            Err(BadRecord::UnknownSchema(_))
        ));
        assert_eq!(
            d.read(T, Some(&record("c", 1, 1, 20_000))).err(),
            Some(BadRecord::BadCount(20_000))
        );
        assert!(matches!(
            d.read(T, Some(&record("c", 0, 1, 1))),
            Err(BadRecord::BadRevision { .. })
        ));
    }
}
