//! The demo's check of the registers against the simulator's ground truth.
//!
//! It reads the truth CSVs and the Parquet files itself and applies only
//! the published contracts: the pseudonym (HMAC-SHA256 of the 12-digit
//! civic number, else of `<connection>:<person id>`), the register columns,
//! and the yearly register's rule (a school year's weeks summed per
//! grouping columns, with first and last week and the number of weeks).
//! It uses no producer, processor or sink code, so that a bug there cannot
//! agree with itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_schema::DataType;
use chrono::{Datelike, NaiveDate, Weekday};
use hmac::{Hmac, KeyInit, Mac};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::Sha256;

type Row = Vec<String>;
/// Rows with how often each occurs: a row written twice is a difference.
type Rows = BTreeMap<Row, usize>;

const TABLES: [&str; 2] = ["teacher_student", "attendance"];

/// How many of a table's leading columns group the yearly rows; the
/// contract's counts follow, then the rest of the grouping columns.
fn counts(table: &str) -> std::ops::Range<usize> {
    match table {
        "teacher_student" => 6..8,
        _ => 3..9,
    }
}

struct Pseudonyms<'k> {
    key: &'k [u8],
    connection: &'k str,
}

impl Pseudonyms<'_> {
    fn of(&self, civic: &str, id: &str) -> anyhow::Result<String> {
        let digits: Vec<u32> = civic.chars().filter_map(|c| c.to_digit(10)).collect();
        let valid = digits.len() == 12 && {
            let sum: u32 = digits[2..]
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let v = if i % 2 == 0 { d * 2 } else { *d };
                    v / 10 + v % 10
                })
                .sum();
            sum.is_multiple_of(10)
        };
        let input = if valid {
            digits.iter().map(|d| char::from(b'0' + *d as u8)).collect()
        } else {
            format!("{}:{id}", self.connection)
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key).context("the key")?;
        mac.update(input.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }
}

/// The truth's rows of each week, in register columns (without the week).
fn truth(dir: &Path, pseudonyms: &Pseudonyms) -> anyhow::Result<BTreeMap<String, [Rows; 2]>> {
    let mut out = BTreeMap::new();
    let Ok(weeks) = std::fs::read_dir(dir.join("weekly")) else {
        return Ok(out);
    };
    for week in weeks.flatten() {
        let label = week.file_name().to_string_lossy().replace("week=", "");
        let read = |file: &str| -> anyhow::Result<Vec<Vec<String>>> {
            let path = week.path().join(file);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .skip(1)
                .map(|l| l.split(',').map(str::to_owned).collect())
                .collect())
        };
        let mut ts = Rows::new();
        // week,school_unit_code,teacher_civic,teacher_id,student_civic,student_id,activity_id,group_id,subject_code,lessons,minutes,is_grader,source
        for c in read("teacher_student.csv")? {
            anyhow::ensure!(c.len() == 13, "a truth row with {} columns", c.len());
            let mut row = vec![
                c[1].clone(),
                pseudonyms.of(&c[2], &c[3])?,
                pseudonyms.of(&c[4], &c[5])?,
            ];
            row.extend(c[6..].iter().cloned());
            *ts.entry(row).or_default() += 1;
        }
        let mut att = Rows::new();
        // week,school_unit_code,student_civic,student_id,subject_code,lessons,…,lessons_unreported,source
        for c in read("attendance.csv")? {
            anyhow::ensure!(c.len() == 12, "a truth row with {} columns", c.len());
            let mut row = vec![c[1].clone(), pseudonyms.of(&c[2], &c[3])?];
            row.extend(c[4..].iter().cloned());
            *att.entry(row).or_default() += 1;
        }
        if !ts.is_empty() || !att.is_empty() {
            out.insert(label, [ts, att]);
        }
    }
    Ok(out)
}

/// The rows of a Parquet file, every column as text, without the first
/// (the period) and the pupil register's annotations.
fn parquet_rows(path: &Path) -> anyhow::Result<Rows> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut rows = Rows::new();
    for batch in reader {
        let batch = batch?;
        let mut out: Vec<Row> = vec![Vec::new(); batch.num_rows()];
        let schema = batch.schema();
        // The period is the partition; the pupil register's annotations
        // are checked apart from the truth's rows.
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .skip(1)
            .filter(|(field, _)| !field.name().starts_with("register_"))
            .map(|(_, column)| column);
        for column in columns {
            match column.data_type() {
                DataType::Utf8 => {
                    for (row, v) in out.iter_mut().zip(column.as_string::<i32>().iter()) {
                        row.push(v.unwrap_or_default().to_owned());
                    }
                }
                DataType::Int32 => {
                    for (row, v) in out
                        .iter_mut()
                        .zip(column.as_primitive::<Int32Type>().iter())
                    {
                        row.push(v.unwrap_or_default().to_string());
                    }
                }
                DataType::Boolean => {
                    for (row, v) in out.iter_mut().zip(column.as_boolean().iter()) {
                        row.push(v.unwrap_or_default().to_string());
                    }
                }
                other => anyhow::bail!("{}: a column of type {other}", path.display()),
            }
        }
        for row in out {
            *rows.entry(row).or_default() += 1;
        }
    }
    Ok(rows)
}

/// The school year of an ISO week: the one its Thursday falls in.
fn school_year(week: &str) -> anyhow::Result<String> {
    let (y, w) = week.split_once("-W").context("a week label")?;
    let thursday =
        NaiveDate::from_isoywd_opt(y.parse()?, w.parse()?, Weekday::Thu).context("an ISO week")?;
    let start = if thursday.month() >= 7 {
        thursday.year()
    } else {
        thursday.year() - 1
    };
    Ok(format!("{start}-{:02}", (start + 1) % 100))
}

/// The yearly rows of the truth's weeks, by the contract's rule.
fn yearly(
    weeks: &BTreeMap<String, [Rows; 2]>,
    table: usize,
) -> anyhow::Result<BTreeMap<String, Rows>> {
    let counted = counts(TABLES[table]);
    struct Totals {
        sums: Vec<i64>,
        first: String,
        last: String,
        weeks: i64,
    }
    let mut totals: BTreeMap<(String, Row), Totals> = BTreeMap::new();
    for (week, tables) in weeks {
        let year = school_year(week)?;
        for row in tables[table].keys() {
            let key: Row = row
                .iter()
                .enumerate()
                .filter(|(i, _)| !counted.contains(i))
                .map(|(_, c)| c.clone())
                .collect();
            let sums: Vec<i64> = row[counted.clone()]
                .iter()
                .map(|c| c.parse().unwrap_or_default())
                .collect();
            let entry = totals.entry((year.clone(), key)).or_insert_with(|| Totals {
                sums: vec![0; sums.len()],
                first: week.clone(),
                last: String::new(),
                weeks: 0,
            });
            for (t, n) in entry.sums.iter_mut().zip(sums) {
                *t += n;
            }
            if entry.last != *week {
                entry.last = week.clone();
                entry.weeks += 1;
            }
        }
    }
    let mut out: BTreeMap<String, Rows> = BTreeMap::new();
    for ((year, key), t) in totals {
        let mut row: Row = key[..counted.start].to_vec();
        row.extend(t.sums.iter().map(i64::to_string));
        row.extend(key[counted.start..].iter().cloned());
        row.extend([t.first, t.last, t.weeks.to_string()]);
        *out.entry(year).or_default().entry(row).or_default() += 1;
    }
    Ok(out)
}

/// One table's comparison.
#[derive(Debug, Default)]
struct Tally {
    periods: usize,
    rows: usize,
    agreeing_rows: usize,
    disagreeing: Vec<String>,
}

impl Tally {
    fn compare(&mut self, period: &str, truth: Option<&Rows>, got: Option<&Rows>) {
        let empty = Rows::new();
        let (truth, got) = (truth.unwrap_or(&empty), got.unwrap_or(&empty));
        self.periods += 1;
        let count = |rows: &Rows| rows.values().sum::<usize>();
        let surplus = |a: &Rows, b: &Rows| -> usize {
            a.iter()
                .map(|(row, n)| n.saturating_sub(b.get(row).copied().unwrap_or(0)))
                .sum()
        };
        self.rows += count(truth);
        self.agreeing_rows += count(truth) - surplus(truth, got);
        if truth != got {
            let missing = surplus(truth, got);
            let extra = surplus(got, truth);
            self.disagreeing.push(format!(
                "{period}: {missing} rows missing, {extra} not in the truth"
            ));
        }
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    weekly: [Tally; 2],
    yearly: [Tally; 2],
}

impl Report {
    pub fn agrees(&self) -> bool {
        self.weekly
            .iter()
            .chain(&self.yearly)
            .all(|t| t.disagreeing.is_empty() && t.periods > 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "check against the simulator's ground truth")?;
        writeln!(
            f,
            "register  table             periods        rows   agreeing"
        )?;
        for (register, tallies) in [("weekly", &self.weekly), ("yearly", &self.yearly)] {
            for (table, t) in TABLES.iter().zip(tallies) {
                let share = if t.rows == 0 {
                    0.0
                } else {
                    100.0 * t.agreeing_rows as f64 / t.rows as f64
                };
                writeln!(
                    f,
                    "{register:<9} {table:<16} {:>8} {:>11}   {share:>7.2} %",
                    t.periods, t.rows
                )?;
                for d in t.disagreeing.iter().take(5) {
                    writeln!(f, "          disagrees: {d}")?;
                }
            }
        }
        write!(
            f,
            "{}",
            if self.agrees() {
                "full agreement: every row of every week and school year equals the truth"
            } else {
                "DISAGREEMENT: see above"
            }
        )
    }
}

/// Compare the registers under `registers` with the truth under `truth`.
pub fn check(
    registers: &Path,
    truth_dir: &Path,
    key: &[u8],
    connection: &str,
) -> anyhow::Result<Report> {
    let pseudonyms = Pseudonyms { key, connection };
    let truth = truth(truth_dir, &pseudonyms)?;
    let mut report = Report::default();
    let mut weeks: BTreeSet<String> = truth.keys().cloned().collect();
    if let Ok(dirs) = std::fs::read_dir(registers.join("weekly")) {
        for dir in dirs.flatten() {
            if let Some(week) = dir.file_name().to_string_lossy().strip_prefix("week=") {
                weeks.insert(week.to_owned());
            }
        }
    }
    for week in &weeks {
        for (i, table) in TABLES.iter().enumerate() {
            let path = registers
                .join("weekly")
                .join(format!("week={week}"))
                .join(format!("{table}.parquet"));
            let got = if path.exists() {
                Some(parquet_rows(&path)?)
            } else {
                None
            };
            report.weekly[i].compare(week, truth.get(week).map(|t| &t[i]), got.as_ref());
        }
    }
    for (i, table) in TABLES.iter().enumerate() {
        let expected = yearly(&truth, i)?;
        let mut years: BTreeSet<String> = expected.keys().cloned().collect();
        if let Ok(dirs) = std::fs::read_dir(registers.join("yearly")) {
            for dir in dirs.flatten() {
                if let Some(y) = dir
                    .file_name()
                    .to_string_lossy()
                    .strip_prefix("school_year=")
                {
                    years.insert(y.to_owned());
                }
            }
        }
        for year in years {
            let path = registers
                .join("yearly")
                .join(format!("school_year={year}"))
                .join(format!("{table}.parquet"));
            let got = if path.exists() {
                Some(parquet_rows(&path)?)
            } else {
                None
            };
            report.yearly[i].compare(&year, expected.get(&year), got.as_ref());
        }
    }
    Ok(report)
}

/// A summary of the yearly integration with the pupil register: the
/// coverage table's totals and the lines the sink left out. A report, not
/// a check: `tests/registers_check.py` checks it against the register.
pub fn coverage(registers: &Path, year: &str) -> anyhow::Result<String> {
    let dir = registers.join("yearly").join(format!("school_year={year}"));
    let mut totals = [0i64; 6];
    let file = std::fs::File::open(dir.join("coverage.parquet")).context("coverage.parquet")?;
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
        let batch = batch?;
        for (i, name) in [
            "register_pupils",
            "pipeline_pupils",
            "in_both",
            "only_in_register",
            "only_in_pipeline",
            "registered_elsewhere",
        ]
        .iter()
        .enumerate()
        {
            let column = batch.column_by_name(name).context("a coverage column")?;
            totals[i] += column
                .as_primitive::<Int32Type>()
                .iter()
                .map(|v| i64::from(v.unwrap_or_default()))
                .sum::<i64>();
        }
    }
    let file = std::fs::File::open(dir.join("register_findings.parquet"))
        .context("register_findings.parquet")?;
    let findings: usize = ParquetRecordBatchReaderBuilder::try_new(file)?
        .build()?
        .map(|b| b.map(|b| b.num_rows()).unwrap_or(0))
        .sum();
    Ok(format!(
        "pupil register {year} (15 October): {} pupils listed, {} in the pipeline; {} at the same unit in both, \
         {} only in the register, {} only in the pipeline, {} registered at another unit; {findings} lines left out (reason per line in register_findings.parquet)",
        totals[0], totals[1], totals[2], totals[3], totals[4], totals[5]
    ))
}
