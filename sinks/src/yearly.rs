//! The yearly register: a school year's weeks, summed.
//!
//! Rows of the weeks are grouped by every column that is not a count
//! (`Role::Key`: the school unit, the pseudonyms, the activity, the group,
//! the subject, `is_grader`, `source`); the counts are summed. Each yearly
//! row adds the first and last week it has rows in and how many weeks
//! those are. A teacher who becomes a grader mid-year therefore has two
//! rows: one per value of `is_grader`.

use std::collections::BTreeMap;

use crate::period::Week;
use crate::table::{Cell, Role, Row, Table};

struct Totals {
    sums: Vec<i64>,
    first: Week,
    last: Week,
    weeks: i64,
}

/// Sum `weeks` (each week's rows of `table`, weeks in any order) into the
/// yearly rows: the table's columns, then `first_week`, `last_week`,
/// `weeks`. Rows come out sorted by their grouping columns.
pub fn aggregate(table: Table, weeks: impl IntoIterator<Item = (Week, Vec<Row>)>) -> Vec<Row> {
    let columns = table.columns();
    let mut weeks: Vec<(Week, Vec<Row>)> = weeks.into_iter().collect();
    weeks.sort_by_key(|(week, _)| *week);
    let mut totals: BTreeMap<Vec<Cell>, Totals> = BTreeMap::new();
    for (week, rows) in weeks {
        for row in rows {
            let mut key = Vec::with_capacity(columns.len());
            let mut sums = Vec::with_capacity(columns.len());
            for (column, cell) in columns.iter().zip(row) {
                match (column.role, cell) {
                    (Role::Sum, Cell::Int(n)) => sums.push(n),
                    (Role::Sum, _) => sums.push(0),
                    (Role::Key, cell) => key.push(cell),
                }
            }
            match totals.get_mut(&key) {
                Some(t) => {
                    for (total, n) in t.sums.iter_mut().zip(sums) {
                        *total += n;
                    }
                    if t.last != week {
                        t.last = week;
                        t.weeks += 1;
                    }
                }
                None => {
                    totals.insert(
                        key,
                        Totals {
                            sums,
                            first: week,
                            last: week,
                            weeks: 1,
                        },
                    );
                }
            }
        }
    }
    totals
        .into_iter()
        .map(|(key, t)| {
            let mut key = key.into_iter();
            let mut sums = t.sums.into_iter();
            let mut row: Row = columns
                .iter()
                .map(|c| match c.role {
                    Role::Key => key.next().unwrap_or(Cell::Int(0)),
                    Role::Sum => Cell::Int(sums.next().unwrap_or(0)),
                })
                .collect();
            row.push(Cell::Text(t.first.label()));
            row.push(Cell::Text(t.last.label()));
            row.push(Cell::Int(t.weeks));
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(student: &str, lessons: i64, present: i64) -> Row {
        vec![
            Cell::Text("U1".into()),
            Cell::Text(student.into()),
            Cell::Text("MA".into()),
            Cell::Int(lessons),
            Cell::Int(lessons * 60),
            Cell::Int(present),
            Cell::Int(0),
            Cell::Int(lessons * 60 - present),
            Cell::Int(0),
            Cell::Text("sim".into()),
        ]
    }

    #[test]
    fn weeks_sum_per_key_with_first_last_and_count() {
        let w = |n| Week {
            year: 2025,
            week: n,
        };
        let rows = aggregate(
            Table::Attendance,
            [
                (w(40), vec![att("b", 1, 60)]),
                (w(36), vec![att("a", 2, 100), att("b", 3, 180)]),
                (w(37), vec![att("a", 1, 60)]),
            ],
        );
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(a[1], Cell::Text("a".into()));
        assert_eq!(a[3], Cell::Int(3));
        assert_eq!(a[4], Cell::Int(180));
        assert_eq!(a[5], Cell::Int(160));
        assert_eq!(a[10], Cell::Text("2025-W36".into()));
        assert_eq!(a[11], Cell::Text("2025-W37".into()));
        assert_eq!(a[12], Cell::Int(2));
        let b = &rows[1];
        assert_eq!(
            (&b[10], &b[11], &b[12]),
            (
                &Cell::Text("2025-W36".into()),
                &Cell::Text("2025-W40".into()),
                &Cell::Int(2)
            )
        );
    }
}
