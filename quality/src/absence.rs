//! Absence statistics from the attendance registers: over the organiser's
//! units and a range of weeks, by week, subject, school form and grade,
//! valid against invalid, and the distribution of pupils' absence shares.
//! Only aggregates leave this module; pupils are counted, never listed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::QualityError;

/// Minutes of one breakdown cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Minutes {
    pub lessons: i64,
    pub scheduled: i64,
    pub present: i64,
    pub valid_absence: i64,
    pub invalid_absence: i64,
    pub lessons_unreported: i64,
}

impl Minutes {
    pub fn add(&mut self, o: &Minutes) {
        self.lessons += o.lessons;
        self.scheduled += o.scheduled;
        self.present += o.present;
        self.valid_absence += o.valid_absence;
        self.invalid_absence += o.invalid_absence;
        self.lessons_unreported += o.lessons_unreported;
    }

    /// Minutes reported at all (present or absent).
    pub fn reported(&self) -> i64 {
        self.present + self.valid_absence + self.invalid_absence
    }

    /// Absent share of the reported minutes, in percent.
    pub fn absence_percent(&self) -> f64 {
        percent(self.valid_absence + self.invalid_absence, self.reported())
    }

    pub fn valid_percent(&self) -> f64 {
        percent(self.valid_absence, self.reported())
    }

    pub fn invalid_percent(&self) -> f64 {
        percent(self.invalid_absence, self.reported())
    }
}

pub fn percent(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        // One decimal: the report's figures are the same on every machine.
        (1000.0 * part as f64 / whole as f64).round() / 10.0
    }
}

/// A bucket of the distribution of pupils' absence shares.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub label: String,
    pub pupils: usize,
}

/// Pupils at or above a threshold of absence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    pub percent: u32,
    pub pupils: usize,
    pub share_percent: f64,
}

/// The statistics of a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Absence {
    pub total: Minutes,
    pub by_week: BTreeMap<String, Minutes>,
    pub by_subject: BTreeMap<String, Minutes>,
    /// By the school unit's form (its school types), e.g. `GR`, `GY`.
    pub by_form: BTreeMap<String, Minutes>,
    /// By the grade the pupil register of 15 October gives (yearly
    /// registers integrated with it); `unknown` for pupils it does not list.
    pub by_grade: BTreeMap<String, Minutes>,
    /// Pupils with reported minutes in the period.
    pub pupils: usize,
    pub distribution: Vec<Bucket>,
    pub long: Option<Threshold>,
    pub extensive: Option<Threshold>,
    /// Register files read.
    pub files: usize,
    /// Coverage per school unit code.
    pub coverage: BTreeMap<String, Coverage>,
}

/// How much of a school unit's teaching the registers cover.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// Pupils' lessons scheduled, and the share of them reported.
    pub lessons: i64,
    pub reported_percent: f64,
    /// Pupils with lessons in the period.
    pub pupils: usize,
    /// Pupils the pupil register of 15 October lists at the unit, and the
    /// share of them with lessons there (a digital timetable), when the
    /// sink integrated a register.
    pub register_pupils: Option<i64>,
    pub with_timetable_percent: Option<f64>,
}

/// A weekly attendance row, reduced.
struct Row {
    week: String,
    unit: String,
    student: String,
    subject: String,
    minutes: Minutes,
}

fn column<'b>(
    batch: &'b RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'b dyn Array, QualityError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| QualityError::Register {
            path: path.to_owned(),
            reason: format!("no column {name}"),
        })
}

fn strings(batch: &RecordBatch, name: &str, path: &Path) -> Result<Vec<String>, QualityError> {
    let c = column(batch, name, path)?;
    let s = c
        .as_string_opt::<i32>()
        .ok_or_else(|| QualityError::Register {
            path: path.to_owned(),
            reason: format!("{name} is not a string column"),
        })?;
    Ok(s.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
}

fn ints(batch: &RecordBatch, name: &str, path: &Path) -> Result<Vec<i64>, QualityError> {
    let c = column(batch, name, path)?;
    let s = c
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| QualityError::Register {
            path: path.to_owned(),
            reason: format!("{name} is not an int32 column"),
        })?;
    Ok(s.iter().map(|v| i64::from(v.unwrap_or_default())).collect())
}

fn batches(path: &Path) -> Result<Vec<RecordBatch>, QualityError> {
    let parquet = |source| QualityError::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(QualityError::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet)?
        .build()
        .map_err(parquet)?;
    reader
        .map(|b| {
            b.map_err(|e| QualityError::Register {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn weekly_rows(path: &Path) -> Result<Vec<Row>, QualityError> {
    let mut rows = Vec::new();
    for batch in batches(path)? {
        let week = strings(&batch, "week", path)?;
        let unit = strings(&batch, "school_unit_code", path)?;
        let student = strings(&batch, "student_key", path)?;
        let subject = strings(&batch, "subject_code", path)?;
        let lessons = ints(&batch, "lessons", path)?;
        let scheduled = ints(&batch, "minutes_scheduled", path)?;
        let present = ints(&batch, "minutes_present", path)?;
        let valid = ints(&batch, "minutes_valid_absence", path)?;
        let invalid = ints(&batch, "minutes_invalid_absence", path)?;
        let unreported = ints(&batch, "lessons_unreported", path)?;
        for i in 0..batch.num_rows() {
            rows.push(Row {
                week: week[i].clone(),
                unit: unit[i].clone(),
                student: student[i].clone(),
                subject: subject[i].clone(),
                minutes: Minutes {
                    lessons: lessons[i],
                    scheduled: scheduled[i],
                    present: present[i],
                    valid_absence: valid[i],
                    invalid_absence: invalid[i],
                    lessons_unreported: unreported[i],
                },
            });
        }
    }
    Ok(rows)
}

/// Pupils' grades from the yearly attendance registers that carry the
/// pupil register's `register_grade` (when the sink was given one).
fn grades(registers: &Path) -> Result<BTreeMap<String, String>, QualityError> {
    let mut out = BTreeMap::new();
    for path in files(&registers.join("yearly"), "attendance.parquet")? {
        for batch in batches(&path)? {
            if batch.column_by_name("register_grade").is_none() {
                continue;
            }
            let student = strings(&batch, "student_key", &path)?;
            let grade = strings(&batch, "register_grade", &path)?;
            for (s, g) in student.into_iter().zip(grade) {
                if !g.is_empty() {
                    out.insert(s, g);
                }
            }
        }
    }
    Ok(out)
}

/// Per unit of `units`: pupils the pupil register lists there and those
/// of them with lessons there, summed over the yearly coverage files.
fn register_coverage(
    registers: &Path,
    units: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, (i64, i64)>, QualityError> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for path in files(&registers.join("yearly"), "coverage.parquet")? {
        for batch in batches(&path)? {
            let unit = strings(&batch, "school_unit_code", &path)?;
            let listed = ints(&batch, "register_pupils", &path)?;
            let both = ints(&batch, "in_both", &path)?;
            for ((u, n), b) in unit.into_iter().zip(listed).zip(both) {
                if units.contains_key(&u) {
                    let e = out.entry(u).or_default();
                    e.0 += n;
                    e.1 += b;
                }
            }
        }
    }
    Ok(out)
}

/// `<dir>/<partition>/<name>` for every partition directory, sorted.
fn files(dir: &Path, name: &str) -> Result<Vec<PathBuf>, QualityError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join(name))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// The statistics of the weeks `from..=to` at the units `units` (school
/// unit code → school form), from the registers in `registers`.
pub fn compute(
    registers: &Path,
    units: &BTreeMap<String, String>,
    from: (i32, u32),
    to: (i32, u32),
    long_percent: u32,
    extensive_percent: u32,
) -> Result<Absence, QualityError> {
    let mut absence = Absence::default();
    let grades = grades(registers)?;
    let mut per_pupil: BTreeMap<String, Minutes> = BTreeMap::new();
    let mut by_unit: BTreeMap<String, (Minutes, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    for path in files(&registers.join("weekly"), "attendance.parquet")? {
        let in_range = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("week="))
            .is_some_and(|w| crate::weeks::within(w, from, to));
        if !in_range {
            continue;
        }
        absence.files += 1;
        for row in weekly_rows(&path)? {
            let Some(form) = units.get(&row.unit) else {
                continue;
            };
            let m = &row.minutes;
            absence.total.add(m);
            absence.by_week.entry(row.week).or_default().add(m);
            absence.by_subject.entry(row.subject).or_default().add(m);
            absence.by_form.entry(form.clone()).or_default().add(m);
            let grade = grades.get(&row.student).map_or("unknown", String::as_str);
            absence.by_grade.entry(grade.to_owned()).or_default().add(m);
            let unit = by_unit.entry(row.unit.clone()).or_default();
            unit.0.add(m);
            unit.1.insert(row.student.clone());
            per_pupil.entry(row.student).or_default().add(m);
        }
    }
    let registered = register_coverage(registers, units)?;
    for (code, (m, pupils)) in by_unit {
        let listed = registered.get(&code).copied();
        absence.coverage.insert(
            code,
            Coverage {
                lessons: m.lessons,
                reported_percent: percent(m.lessons - m.lessons_unreported, m.lessons),
                pupils: pupils.len(),
                register_pupils: listed.map(|(n, _)| n),
                with_timetable_percent: listed.map(|(n, both)| percent(both, n)),
            },
        );
    }
    for (code, (n, both)) in registered {
        absence.coverage.entry(code).or_insert(Coverage {
            register_pupils: Some(n),
            with_timetable_percent: Some(percent(both, n)),
            ..Coverage::default()
        });
    }
    let shares: Vec<f64> = per_pupil
        .values()
        .filter(|m| m.reported() > 0)
        .map(|m| 100.0 * (m.valid_absence + m.invalid_absence) as f64 / m.reported() as f64)
        .collect();
    absence.pupils = shares.len();
    let bounds = [0.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0];
    absence.distribution = bounds
        .windows(2)
        .map(|w| {
            let last = w[1] >= 100.0;
            Bucket {
                label: if last {
                    format!("{}–{} %", w[0], w[1])
                } else {
                    format!("{}–<{} %", w[0], w[1])
                },
                pupils: shares
                    .iter()
                    .filter(|s| **s >= w[0] && (**s < w[1] || (last && **s <= w[1])))
                    .count(),
            }
        })
        .collect();
    let at_least = |p: u32| Threshold {
        percent: p,
        pupils: shares.iter().filter(|s| **s >= f64::from(p)).count(),
        share_percent: percent(
            shares.iter().filter(|s| **s >= f64::from(p)).count() as i64,
            shares.len() as i64,
        ),
    };
    if !shares.is_empty() {
        absence.long = Some(at_least(long_percent));
        absence.extensive = Some(at_least(extensive_percent));
    }
    Ok(absence)
}

/// The subjects, sorted by absence share, highest first (ties by code).
pub fn subjects_by_absence(absence: &Absence) -> Vec<(&String, &Minutes)> {
    let mut v: Vec<(&String, &Minutes)> = absence.by_subject.iter().collect();
    v.sort_by(|a, b| {
        b.1.absence_percent()
            .total_cmp(&a.1.absence_percent())
            .then_with(|| a.0.cmp(b.0))
    });
    v
}
