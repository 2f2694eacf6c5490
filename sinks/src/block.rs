//! Rows of a register table held column by column, as Arrow arrays: a
//! revision's rows while it is assembled, and a whole revision, sorted,
//! once it is complete. A row costs its bytes and no allocation of its
//! own, which is what lets a sink hold a national week.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, Int32Builder};
use arrow_array::{Array, ArrayRef, StringArray, UInt32Array};
use arrow_ord::ord::{make_comparator, DynComparator};
use arrow_schema::{ArrowError, SortOptions};
#[cfg(test)]
use skolflode_schemas::processed::{AttendanceRow, TeacherStudentRow};

use crate::assemble::{Cell, Record};
use crate::table::{Kind, Role, Table};

/// A column being gathered. Text is gathered as bytes and checked for
/// UTF-8 once, when the column is finished.
enum Builder {
    Text(BinaryBuilder),
    Int(Int32Builder),
    Flag(BooleanBuilder),
}

impl Builder {
    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Builder::Text(b) => Arc::new(StringArray::try_from_binary(b.finish())?),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Flag(b) => Arc::new(b.finish()),
        })
    }

    fn push(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Builder::Text(b), Cell::Text(v)) => b.append_value(v),
            (Builder::Int(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Flag(b), Cell::Flag(v)) => b.append_value(v),
            // Cells and builders both follow the table's columns.
            _ => {}
        }
    }
}

#[cfg(test)]
fn text(s: &str) -> Cell<'_> {
    Cell::Text(s.as_bytes())
}

/// Rows of a table being gathered, column by column.
pub struct RowsBuilder {
    table: Table,
    columns: Vec<Builder>,
    rows: usize,
}

impl std::fmt::Debug for RowsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowsBuilder")
            .field("table", &self.table)
            .field("rows", &self.rows)
            .finish()
    }
}

impl RowsBuilder {
    /// Room for `capacity` rows to begin with.
    pub fn new(table: Table, capacity: usize) -> Self {
        let columns = table
            .columns()
            .iter()
            .map(|c| match c.kind {
                Kind::Text => Builder::Text(BinaryBuilder::with_capacity(capacity, capacity * 16)),
                Kind::Int => Builder::Int(Int32Builder::with_capacity(capacity)),
                Kind::Flag => Builder::Flag(BooleanBuilder::with_capacity(capacity)),
            })
            .collect();
        RowsBuilder {
            table,
            columns,
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append the row of `record` (ignored by a builder of another
    /// table).
    pub fn push(&mut self, record: &Record<'_>) {
        if record.table != self.table {
            return;
        }
        self.push_cells(record.cells());
    }

    fn push_cells(&mut self, cells: &[Cell<'_>]) {
        for (column, &cell) in self.columns.iter_mut().zip(cells) {
            column.push(cell);
        }
        self.rows += 1;
    }

    /// Append a `teacher_student` row (ignored by a builder of another
    /// table): the tests' way to build a revision from rows.
    #[cfg(test)]
    pub fn push_teacher_student(&mut self, r: &TeacherStudentRow) {
        if self.table != Table::TeacherStudent {
            return;
        }
        self.push_cells(&[
            text(&r.school_unit_code),
            text(&r.teacher_key),
            text(&r.student_key),
            text(&r.activity_id),
            text(&r.group_id),
            text(&r.subject_code),
            Cell::Int(r.lessons),
            Cell::Int(r.minutes),
            Cell::Flag(r.is_grader),
            text(&r.source),
        ]);
    }

    /// Append an `attendance` row (ignored by a builder of another table):
    /// the tests' way to build a revision from rows.
    #[cfg(test)]
    pub fn push_attendance(&mut self, r: &AttendanceRow) {
        if self.table != Table::Attendance {
            return;
        }
        self.push_cells(&[
            text(&r.school_unit_code),
            text(&r.student_key),
            text(&r.subject_code),
            Cell::Int(r.lessons),
            Cell::Int(r.minutes_scheduled),
            Cell::Int(r.minutes_present),
            Cell::Int(r.minutes_valid_absence),
            Cell::Int(r.minutes_invalid_absence),
            Cell::Int(r.lessons_unreported),
            text(&r.source),
        ]);
    }

    /// The rows as a block, sorted.
    pub fn finish(mut self) -> Result<Block, ArrowError> {
        let columns = self
            .columns
            .iter_mut()
            .map(Builder::finish)
            .collect::<Result<_, _>>()?;
        Block::sorted(self.table, columns)
    }
}

/// Whole rows of a table: its columns in [`Table::columns`] order (the
/// period is not among them), all the same length.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub table: Table,
    pub columns: Vec<ArrayRef>,
}

/// Columns compared in this order: the grouping columns first, then the
/// counts. The processor emits a revision in this order already, so
/// sorting it costs one pass.
pub fn sort_order(table: Table) -> Vec<usize> {
    let columns = table.columns();
    let keys = (0..columns.len()).filter(|&i| columns[i].role == Role::Key);
    let sums = (0..columns.len()).filter(|&i| columns[i].role == Role::Sum);
    keys.chain(sums).collect()
}

/// A comparison of two rows of the same columns by `order`.
pub struct RowOrder {
    comparators: Vec<DynComparator>,
}

impl std::fmt::Debug for RowOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowOrder")
            .field("columns", &self.comparators.len())
            .finish()
    }
}

impl RowOrder {
    pub fn new(columns: &[ArrayRef], order: &[usize]) -> Result<Self, ArrowError> {
        let comparators = order
            .iter()
            .map(|&i| {
                let column = columns[i].as_ref();
                make_comparator(column, column, SortOptions::default())
            })
            .collect::<Result<_, _>>()?;
        Ok(RowOrder { comparators })
    }

    pub fn compare(&self, a: usize, b: usize) -> Ordering {
        for c in &self.comparators {
            match c(a, b) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        Ordering::Equal
    }
}

/// Rows `indices` of `columns`, in that order.
pub fn take(columns: &[ArrayRef], indices: &[u32]) -> Result<Vec<ArrayRef>, ArrowError> {
    let indices = UInt32Array::from(indices.to_vec());
    columns
        .iter()
        .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
        .collect()
}

impl Block {
    /// `columns` of `table`, sorted by [`sort_order`].
    pub fn sorted(table: Table, columns: Vec<ArrayRef>) -> Result<Block, ArrowError> {
        let rows = columns.first().map_or(0, |c| c.len());
        if rows > u32::MAX as usize {
            return Err(ArrowError::InvalidArgumentError(format!(
                "{rows} rows in one revision"
            )));
        }
        let order = RowOrder::new(&columns, &sort_order(table))?;
        let in_order = (1..rows).all(|i| order.compare(i - 1, i) != Ordering::Greater);
        if in_order {
            return Ok(Block { table, columns });
        }
        let mut indices: Vec<u32> = (0..rows as u32).collect();
        indices.sort_by(|&a, &b| order.compare(a as usize, b as usize));
        Ok(Block {
            table,
            columns: take(&columns, &indices)?,
        })
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.len())
    }

    /// The memory its arrays take.
    pub fn bytes(&self) -> usize {
        self.columns.iter().map(|c| c.get_array_memory_size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    fn row(unit: &str, student: &str, subject: &str, lessons: i32) -> AttendanceRow {
        AttendanceRow {
            connection: "c".into(),
            week: "2025-W36".into(),
            revision: 1,
            rows_in_revision: 3,
            school_unit_code: unit.into(),
            student_key: student.into(),
            subject_code: subject.into(),
            lessons,
            minutes_scheduled: lessons * 60,
            minutes_present: 0,
            minutes_valid_absence: 0,
            minutes_invalid_absence: 0,
            lessons_unreported: 0,
            source: "sim".into(),
        }
    }

    #[test]
    fn rows_come_out_sorted_by_their_grouping_columns() -> Result<(), ArrowError> {
        let mut b = RowsBuilder::new(Table::Attendance, 0);
        b.push_attendance(&row("U2", "a", "MA", 1));
        b.push_attendance(&row("U1", "b", "SV", 2));
        b.push_attendance(&row("U1", "b", "MA", 3));
        // Another table's row is not this builder's.
        b.push_teacher_student(&TeacherStudentRow::default());
        assert_eq!(b.len(), 3);
        let block = b.finish()?;
        let units: Vec<_> = block.columns[0]
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        let subjects: Vec<_> = block.columns[2]
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(units, ["U1", "U1", "U2"]);
        assert_eq!(subjects, ["MA", "SV", "MA"]);
        // Already sorted: the same arrays back.
        let again = Block::sorted(Table::Attendance, block.columns.clone())?;
        assert_eq!(again, block);
        Ok(())
    }
}
