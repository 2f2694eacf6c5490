//! The yearly register: a school year's weeks, summed.
//!
//! Rows of the weeks are grouped by every column that is not a count
//! (`Role::Key`: the school unit, the pseudonyms, the activity, the group,
//! the subject, `is_grader`, `source`); the counts are summed. Each yearly
//! row adds the first and last week it has rows in and how many weeks
//! those are. A teacher who becomes a grader mid-year therefore has two
//! rows: one per value of `is_grader`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, Int32Array};
use arrow_schema::ArrowError;

use crate::block::{take, RowOrder};
use crate::period::Week;
use crate::table::{Role, Table};

/// Sum `weeks` (each week's columns of `table`, weeks in any order) into
/// the yearly columns: the table's columns, then `first_week`,
/// `last_week`, `weeks`. Rows come out sorted by their grouping columns.
pub fn aggregate(
    table: Table,
    mut weeks: Vec<(Week, Vec<ArrayRef>)>,
) -> Result<Vec<ArrayRef>, ArrowError> {
    let columns = table.columns();
    weeks.sort_by_key(|(week, _)| *week);
    // One array per column over all weeks, in week order, and each row's
    // week.
    let mut all = Vec::with_capacity(columns.len());
    for c in 0..columns.len() {
        let parts: Vec<&dyn Array> = weeks.iter().map(|(_, w)| w[c].as_ref()).collect();
        all.push(if parts.is_empty() {
            arrow_array::new_empty_array(&crate::parquet::data_type(columns[c].kind))
        } else {
            arrow_select::concat::concat(&parts)?
        });
    }
    let mut week_of: Vec<u32> = Vec::with_capacity(all.first().map_or(0, |a| a.len()));
    for (i, (_, w)) in weeks.iter().enumerate() {
        let n = w.first().map_or(0, |a| a.len());
        week_of.extend(std::iter::repeat_n(i as u32, n));
    }
    let rows = week_of.len();
    if rows > u32::MAX as usize {
        return Err(ArrowError::InvalidArgumentError(format!(
            "{rows} weekly rows in one school year"
        )));
    }
    let keys: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].role == Role::Key)
        .collect();
    let order = RowOrder::new(&all, &keys)?;
    // A stable sort: within a key, rows stay in week order.
    let mut sorted: Vec<u32> = (0..rows as u32).collect();
    sorted.sort_by(|&a, &b| order.compare(a as usize, b as usize));
    let sums: Vec<(usize, &Int32Array)> = (0..columns.len())
        .filter(|&i| columns[i].role == Role::Sum)
        .map(|i| (i, all[i].as_primitive::<Int32Type>()))
        .collect();
    let mut starts: Vec<u32> = Vec::new();
    let mut totals: Vec<Vec<i32>> = vec![Vec::new(); sums.len()];
    let labels: Vec<String> = weeks.iter().map(|(week, _)| week.label()).collect();
    let (mut first, mut last) = (StringBuilder::new(), StringBuilder::new());
    let mut count = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i] as usize;
        let mut end = i + 1;
        while end < sorted.len() && order.compare(start, sorted[end] as usize) == Ordering::Equal {
            end += 1;
        }
        let group = &sorted[i..end];
        starts.push(sorted[i]);
        for ((_, values), total) in sums.iter().zip(totals.iter_mut()) {
            let sum: i64 = group
                .iter()
                .map(|&r| i64::from(values.value(r as usize)))
                .sum();
            total.push(i32::try_from(sum).map_err(|_| {
                ArrowError::ComputeError(format!("a yearly sum of {sum} exceeds 32 bits"))
            })?);
        }
        let mut distinct = 0;
        let mut previous = None;
        for &r in group {
            let w = week_of[r as usize];
            if previous != Some(w) {
                distinct += 1;
                previous = Some(w);
            }
        }
        first.append_value(&labels[week_of[sorted[i] as usize] as usize]);
        last.append_value(&labels[week_of[sorted[end - 1] as usize] as usize]);
        count.push(distinct);
        i = end;
    }
    // Where no key repeats (a school year of one week so far), the rows
    // are the groups, in the order they came: no copy.
    let identity = starts.len() == rows && starts.iter().enumerate().all(|(i, &s)| s as usize == i);
    let taken = if identity { all } else { take(&all, &starts)? };
    let mut totals = totals.into_iter();
    let mut out: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 3);
    for (c, column) in columns.iter().enumerate() {
        out.push(match column.role {
            Role::Key => Arc::clone(&taken[c]),
            Role::Sum => Arc::new(Int32Array::from(totals.next().unwrap_or_default())),
        });
    }
    out.push(Arc::new(first.finish()));
    out.push(Arc::new(last.finish()));
    out.push(Arc::new(Int32Array::from(count)));
    Ok(out)
}

/// A range of school-unit codes, compared as bytes (as the registers sort
/// them): `lo` inclusive, `hi` exclusive, `None` unbounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitRange {
    pub lo: Option<Vec<u8>>,
    pub hi: Option<Vec<u8>>,
}

impl UnitRange {
    pub fn contains(&self, unit: &[u8]) -> bool {
        self.lo.as_deref().is_none_or(|lo| unit >= lo)
            && self.hi.as_deref().is_none_or(|hi| unit < hi)
    }

    /// Whether some unit in `min..=max` is in the range.
    pub fn overlaps(&self, min: &[u8], max: &[u8]) -> bool {
        self.lo.as_deref().is_none_or(|lo| max >= lo)
            && self.hi.as_deref().is_none_or(|hi| min < hi)
    }

    pub fn bounded(&self) -> bool {
        self.lo.is_some() || self.hi.is_some()
    }
}

/// A page's least and greatest school unit, if known, and its rows.
pub type PageUnits<'a> = (Option<(&'a [u8], &'a [u8])>, usize);

/// Cut the school units into consecutive ranges of about `budget` weekly
/// rows each, from pages given as (least and greatest unit, rows): a
/// school year is summed range by range, so its memory is that of a
/// range's rows, not the year's. Every row of a yearly key has one unit,
/// so no key is split; a unit with more rows than `budget` is a range of
/// its own. A page's rows are counted at its least unit: a range can hold
/// a page more per weekly file than `budget`. Pages without statistics are
/// read by every range and not counted.
pub fn plan<'a>(pages: impl IntoIterator<Item = PageUnits<'a>>, budget: usize) -> Vec<UnitRange> {
    let mut rows_at: BTreeMap<&[u8], usize> = BTreeMap::new();
    for (units, rows) in pages {
        if let Some((min, max)) = units {
            *rows_at.entry(min).or_default() += rows;
            rows_at.entry(max).or_default();
        }
    }
    let mut ranges = Vec::new();
    let mut lo: Option<Vec<u8>> = None;
    let mut held = 0;
    for (unit, rows) in rows_at {
        if held > 0 && held + rows > budget {
            ranges.push(UnitRange {
                lo: lo.take(),
                hi: Some(unit.to_vec()),
            });
            lo = Some(unit.to_vec());
            held = 0;
        }
        held += rows;
    }
    ranges.push(UnitRange { lo, hi: None });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::StringArray;

    fn att(rows: &[(&str, i32, i32)]) -> Vec<ArrayRef> {
        let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; rows.len()])) };
        let int = |f: &dyn Fn(&(&str, i32, i32)) -> i32| -> ArrayRef {
            Arc::new(Int32Array::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        vec![
            text("U1"),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            text("MA"),
            int(&|r| r.1),
            int(&|r| r.1 * 60),
            int(&|r| r.2),
            int(&|_| 0),
            int(&|r| r.1 * 60 - r.2),
            int(&|_| 0),
            text("sim"),
        ]
    }

    #[test]
    fn weeks_sum_per_key_with_first_last_and_count() -> Result<(), ArrowError> {
        let w = |n| Week {
            year: 2025,
            week: n,
        };
        let out = aggregate(
            Table::Attendance,
            vec![
                (w(40), att(&[("b", 1, 60)])),
                (w(36), att(&[("a", 2, 100), ("b", 3, 180)])),
                (w(37), att(&[("a", 1, 60)])),
            ],
        )?;
        let text = |c: usize| -> Vec<String> {
            out[c]
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect()
        };
        let int = |c: usize| -> Vec<i32> {
            out[c]
                .as_primitive::<Int32Type>()
                .iter()
                .flatten()
                .collect()
        };
        assert_eq!(text(1), ["a", "b"]);
        assert_eq!(int(3), [3, 4]);
        assert_eq!(int(4), [180, 240]);
        assert_eq!(int(5), [160, 240]);
        assert_eq!(text(10), ["2025-W36", "2025-W36"]);
        assert_eq!(text(11), ["2025-W37", "2025-W40"]);
        assert_eq!(int(12), [2, 2]);
        // No weeks: no rows, the right columns.
        let empty = aggregate(Table::Attendance, Vec::new())?;
        assert_eq!(empty.len(), 13);
        assert!(empty.iter().all(|c| c.is_empty()));
        Ok(())
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn page<'a>(min: &'a str, max: &'a str, rows: usize) -> PageUnits<'a> {
        (Some((min.as_bytes(), max.as_bytes())), rows)
    }

    #[test]
    fn ranges_cover_every_unit_once_and_cut_only_between_units() {
        let pages = [
            page("10000001", "10000001", 600),
            page("10000001", "10000003", 600),
            page("10000003", "10000004", 600),
            page("10000002", "10000002", 600),
            page("10000005", "10000005", 5000),
            page("10000006", "10000007", 10),
        ];
        let ranges = plan(pages, 1000);
        type Bounds<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
        let bounds: Vec<Bounds<'_>> = ranges
            .iter()
            .map(|r| (r.lo.as_deref(), r.hi.as_deref()))
            .collect();
        assert_eq!(
            bounds,
            vec![
                (None, Some(&b"10000002"[..])),
                (Some(&b"10000002"[..]), Some(&b"10000003"[..])),
                (Some(&b"10000003"[..]), Some(&b"10000005"[..])),
                (Some(&b"10000005"[..]), Some(&b"10000006"[..])),
                (Some(&b"10000006"[..]), None),
            ]
        );
        for unit in ["0", "10000001", "10000004", "10000005", "10000007", "2"] {
            let holding = ranges
                .iter()
                .filter(|r| r.contains(unit.as_bytes()))
                .count();
            assert_eq!(holding, 1, "{unit}");
        }
        assert!(ranges[1].overlaps(b"10000001", b"10000003"));
        assert!(!ranges[1].overlaps(b"10000003", b"10000004"));
    }

    #[test]
    fn no_statistics_is_one_unbounded_range() {
        let ranges = plan([(None, 10_000)], 10);
        assert_eq!(ranges, vec![UnitRange::default()]);
        assert!(!ranges[0].bounded());
    }
}
