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
use skolflode_schemas::processed::{AttendanceRow, TeacherStudentRow};
use skolflode_schemas::{catalogue, wire, AvroType};

use crate::block::{Block, RowsBuilder};
use crate::period::Week;
use crate::table::Table;

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

/// Decodes snapshot records into values it reuses, so that reading a
/// record allocates nothing once the strings have grown.
#[derive(Debug, Default)]
pub struct Decoder {
    teacher_student: TeacherStudentRow,
    attendance: AttendanceRow,
    week: Option<Week>,
    /// The last week label parsed, and its week: a revision's rows all
    /// carry the same label.
    last_week: Option<(String, Week)>,
}

fn counts_in_range(counts: &[i32]) -> Result<(), BadRecord> {
    // A week has 10 080 minutes; a count beyond that is broken input, and
    // would overflow the yearly sums.
    match counts
        .iter()
        .find(|&&n| !(0..=MAX_COUNT).contains(&i64::from(n)))
    {
        Some(&n) => Err(BadRecord::BadCount(i64::from(n))),
        None => Ok(()),
    }
}

fn decode_whole<T: AvroType>(value: &mut T, body: &[u8]) -> Result<(), BadRecord> {
    let undecodable = |e: skolflode_schemas::DecodeError| BadRecord::Undecodable(e.to_string());
    let mut reader = Reader::new(body);
    value.decode_into(&mut reader).map_err(undecodable)?;
    match reader.remaining() {
        0 => Ok(()),
        n => Err(BadRecord::Undecodable(format!("{n} bytes after the row"))),
    }
}

impl Decoder {
    /// Decode a record of `table`'s snapshot topic and return its header;
    /// its row is kept until the next call, for [`Decoder::append_to`].
    pub fn decode(
        &mut self,
        table: Table,
        payload: Option<&[u8]>,
    ) -> Result<Header<'_>, BadRecord> {
        self.read(table, payload)?;
        self.header(table).ok_or(BadRecord::BadWeek)
    }

    /// Decode a record of `table`'s snapshot topic; [`Decoder::header`]
    /// then describes it.
    pub fn read(&mut self, table: Table, payload: Option<&[u8]>) -> Result<(), BadRecord> {
        self.week = None;
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
        let (connection, week, revision, rows_in_revision) = match table {
            Table::TeacherStudent => {
                let r = &mut self.teacher_student;
                decode_whole(r, body)?;
                counts_in_range(&[r.lessons, r.minutes])?;
                (&r.connection, &r.week, r.revision, r.rows_in_revision)
            }
            Table::Attendance => {
                let r = &mut self.attendance;
                decode_whole(r, body)?;
                counts_in_range(&[
                    r.lessons,
                    r.minutes_scheduled,
                    r.minutes_present,
                    r.minutes_valid_absence,
                    r.minutes_invalid_absence,
                    r.lessons_unreported,
                ])?;
                (&r.connection, &r.week, r.revision, r.rows_in_revision)
            }
        };
        let _ = connection;
        let week = match &self.last_week {
            Some((label, parsed)) if label == week => *parsed,
            _ => {
                let parsed = Week::parse(week).ok_or(BadRecord::BadWeek)?;
                self.last_week = Some((week.clone(), parsed));
                parsed
            }
        };
        if revision < 1 || rows_in_revision < 1 {
            return Err(BadRecord::BadRevision {
                revision,
                rows: rows_in_revision,
            });
        }
        self.week = Some(week);
        Ok(())
    }

    /// The header of the record of `table` last read, if it was good.
    pub fn header(&self, table: Table) -> Option<Header<'_>> {
        let week = self.week?;
        let (connection, revision, rows_in_revision) = match table {
            Table::TeacherStudent => {
                let r = &self.teacher_student;
                (&r.connection, r.revision, r.rows_in_revision)
            }
            Table::Attendance => {
                let r = &self.attendance;
                (&r.connection, r.revision, r.rows_in_revision)
            }
        };
        Some(Header {
            connection,
            week,
            revision,
            rows_in_revision,
        })
    }

    /// Append the row last decoded for `table` to `rows`.
    pub fn append_to(&self, table: Table, rows: &mut RowsBuilder) {
        match table {
            Table::TeacherStudent => rows.push_teacher_student(&self.teacher_student),
            Table::Attendance => rows.push_attendance(&self.attendance),
        }
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

    /// Take the record of `table` read at `at` that `decoder` decoded last,
    /// with its `header`.
    pub fn offer(
        &mut self,
        table: Table,
        header: Header<'_>,
        at: At,
        decoder: &Decoder,
    ) -> Offered {
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
            decoder.append_to(table, rows);
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
            if let Err(e) = self.decoder.read(table, Some(&payload)) {
                return Offered::Unusable(e.to_string());
            }
            match self.decoder.header(table) {
                Some(header) => self.assembler.offer(table, header, at, &self.decoder),
                None => Offered::Unusable("no header".into()),
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
    fn garbage_is_a_bad_record_not_a_panic() {
        let mut d = Decoder::default();
        assert_eq!(d.decode(T, None).err(), Some(BadRecord::Empty));
        assert!(matches!(
            d.decode(T, Some(b"\0\0\0\0\x01xyz")),
            Err(BadRecord::UnknownSchema(1))
        ));
        assert!(matches!(
            d.decode(T, Some(b"{json}")),
            Err(BadRecord::Undecodable(_))
        ));
        // The attendance schema on the teacher-student topic.
        assert!(matches!(
            d.decode(Table::TeacherStudent, Some(&record("c", 1, 1, 1))),
            Err(BadRecord::UnknownSchema(_))
        ));
        assert_eq!(
            d.decode(T, Some(&record("c", 1, 1, 20_000))).err(),
            Some(BadRecord::BadCount(20_000))
        );
        assert!(matches!(
            d.decode(T, Some(&record("c", 0, 1, 1))),
            Err(BadRecord::BadRevision { .. })
        ));
    }
}
