//! The feedback report of one organiser and period: what the rules found,
//! worst first, where, and the period's absence statistics. The same data
//! is written as JSON and as the HTML page; both are functions of their
//! inputs only (no clock, no map order), so a report can be compared with
//! the last one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use skolflode_schemas::records::QualityFinding;
use skolflode_schemas::rules::{self, Severity};

use crate::absence::Absence;
use crate::coverage::Coverage;
use crate::findings::FindingKey;
use crate::organisations::Organiser;

/// A finding shown as an example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Example {
    /// The entity's kind, as its SS 12000 endpoint.
    pub endpoint: String,
    pub entity_id: String,
    pub field: String,
    pub school_unit: String,
    pub week: String,
    pub open: bool,
}

/// One rule's findings in the period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleSummary {
    pub rule: String,
    pub severity: String,
    pub en: String,
    pub sv: String,
    pub open: usize,
    pub resolved: usize,
    /// Open findings by school unit (`code name`), most first: where to fix.
    pub by_unit: Vec<(String, usize)>,
    pub examples: Vec<Example>,
}

/// One school unit's open findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnitSummary {
    pub code: String,
    pub name: String,
    pub form: String,
    pub open_errors: usize,
    pub open_warnings: usize,
    /// Open findings by rule.
    pub by_rule: BTreeMap<String, usize>,
}

/// The findings first found in one week.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WeekSummary {
    pub week: String,
    pub open_errors: usize,
    pub open_warnings: usize,
    pub resolved: usize,
}

/// The report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub organiser: String,
    pub from: String,
    pub to: String,
    /// The latest vendor clock among the weeks' findings read (ms since
    /// the Unix epoch): how current the report is.
    pub findings_as_of: Option<i64>,
    pub open_errors: usize,
    pub open_warnings: usize,
    pub resolved: usize,
    /// Worst first: errors before warnings, then by open findings.
    pub rules: Vec<RuleSummary>,
    pub units: Vec<UnitSummary>,
    pub weeks: Vec<WeekSummary>,
    pub long_absence_percent: u32,
    pub extensive_absence_percent: u32,
    pub absence: Option<Absence>,
    pub coverage: Option<Coverage>,
    /// What the report does not show, and why.
    pub notes: Vec<String>,
}

/// What a report is built from.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub organiser: &'a Organiser,
    pub findings: &'a BTreeMap<FindingKey, QualityFinding>,
    pub from: &'a str,
    pub to: &'a str,
    pub examples_per_rule: usize,
    pub long_absence_percent: u32,
    pub extensive_absence_percent: u32,
    pub absence: Option<Absence>,
    pub coverage: Option<Coverage>,
}

const UNKNOWN_UNIT: &str = "(no school unit: persons)";

/// Build the report of `inputs`.
pub fn build(inputs: Inputs<'_>) -> Report {
    let (Some(from), Some(to)) = (
        crate::weeks::parse(inputs.from),
        crate::weeks::parse(inputs.to),
    ) else {
        return empty(&inputs);
    };
    let organiser = inputs.organiser;
    let mut rules_seen: BTreeMap<&str, RuleSummary> = BTreeMap::new();
    let mut by_unit: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut units: BTreeMap<String, UnitSummary> = organiser
        .units
        .values()
        .map(|u| {
            (
                unit_label(&u.code, &u.name),
                UnitSummary {
                    code: u.code.clone(),
                    name: u.name.clone(),
                    form: u.form.clone(),
                    open_errors: 0,
                    open_warnings: 0,
                    by_rule: BTreeMap::new(),
                },
            )
        })
        .collect();
    let mut weeks: BTreeMap<String, WeekSummary> = BTreeMap::new();
    let mut as_of: Option<i64> = None;
    let (mut open_errors, mut open_warnings, mut resolved) = (0, 0, 0);
    for f in inputs.findings.values() {
        if !organiser.ids.contains_key(&f.connection) {
            continue;
        }
        let week = f.week.clone().unwrap_or_default();
        if !week.is_empty() && !crate::weeks::within(&week, from, to) {
            continue;
        }
        let Some(rule) = f.rule.as_deref().and_then(rules::rule) else {
            continue;
        };
        let code = f.school_unit_code.clone().unwrap_or_default();
        let own_id =
            (f.endpoint.trim_start_matches('/') == "organisations").then_some(f.entity_id.as_str());
        let unit = organiser.unit_of(&f.connection, &code, own_id);
        let label = match (unit, week.is_empty()) {
            (Some(u), _) => unit_label(&u.code, &u.name),
            // A week's finding at another organiser's unit.
            (None, false) => continue,
            (None, true) => UNKNOWN_UNIT.to_owned(),
        };
        // The vendor clock of the processor's evaluations (the producer's
        // findings carry its own clock).
        if !week.is_empty() {
            as_of = as_of.max(Some(f.observed_at.0));
        }
        let open = f.resolved_at.is_none();
        let summary = rules_seen.entry(rule.id).or_insert_with(|| RuleSummary {
            rule: rule.id.to_owned(),
            severity: rule.severity.as_str().to_owned(),
            en: rule.en.to_owned(),
            sv: rule.sv.to_owned(),
            open: 0,
            resolved: 0,
            by_unit: Vec::new(),
            examples: Vec::new(),
        });
        let shown = summary
            .examples
            .iter()
            .any(|e| e.entity_id == f.entity_id && e.field == f.field);
        if summary.examples.len() < inputs.examples_per_rule && open && !shown {
            summary.examples.push(Example {
                endpoint: f.endpoint.trim_start_matches('/').to_owned(),
                entity_id: f.entity_id.clone(),
                field: f.field.clone(),
                school_unit: label.clone(),
                week: week.clone(),
                open,
            });
        }
        if !week.is_empty() {
            let w = weeks.entry(week.clone()).or_insert_with(|| WeekSummary {
                week: week.clone(),
                ..WeekSummary::default()
            });
            match (open, rule.severity) {
                (false, _) => w.resolved += 1,
                (true, Severity::Error) => w.open_errors += 1,
                (true, Severity::Warning) => w.open_warnings += 1,
            }
        }
        if !open {
            summary.resolved += 1;
            resolved += 1;
            continue;
        }
        summary.open += 1;
        *by_unit
            .entry(rule.id.to_owned())
            .or_default()
            .entry(label.clone())
            .or_default() += 1;
        match rule.severity {
            Severity::Error => open_errors += 1,
            Severity::Warning => open_warnings += 1,
        }
        if let Some(u) = units.get_mut(&label) {
            match rule.severity {
                Severity::Error => u.open_errors += 1,
                Severity::Warning => u.open_warnings += 1,
            }
            *u.by_rule.entry(rule.id.to_owned()).or_default() += 1;
        }
    }
    let mut rules: Vec<RuleSummary> = rules_seen
        .into_values()
        .map(|mut r| {
            let mut v: Vec<(String, usize)> = by_unit
                .remove(&r.rule)
                .unwrap_or_default()
                .into_iter()
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            r.by_unit = v;
            r
        })
        .collect();
    rules.sort_by(|a, b| {
        severity_rank(&a.severity)
            .cmp(&severity_rank(&b.severity))
            .then_with(|| b.open.cmp(&a.open))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    let mut units: Vec<UnitSummary> = units.into_values().collect();
    units.sort_by(|a, b| {
        (b.open_errors, b.open_warnings)
            .cmp(&(a.open_errors, a.open_warnings))
            .then_with(|| a.code.cmp(&b.code))
            .then_with(|| a.name.cmp(&b.name))
    });
    // Every week of the period, with nothing found or not.
    let mut all_weeks: BTreeSet<String> = weeks.keys().cloned().collect();
    if let Some(absence) = &inputs.absence {
        all_weeks.extend(absence.by_week.keys().cloned());
    }
    if let Some(coverage) = &inputs.coverage {
        all_weeks.extend(coverage.by_week.iter().map(|w| w.week.clone()));
    }
    let weeks = all_weeks
        .into_iter()
        .map(|w| {
            weeks.remove(&w).unwrap_or(WeekSummary {
                week: w,
                ..WeekSummary::default()
            })
        })
        .collect();
    Report {
        organiser: organiser.name.clone(),
        from: inputs.from.to_owned(),
        to: inputs.to.to_owned(),
        findings_as_of: as_of,
        open_errors,
        open_warnings,
        resolved,
        rules,
        units,
        weeks,
        long_absence_percent: inputs.long_absence_percent,
        extensive_absence_percent: inputs.extensive_absence_percent,
        notes: notes(inputs.absence.is_some(), inputs.coverage.is_some()),
        absence: inputs.absence,
        coverage: inputs.coverage,
    }
}

fn empty(inputs: &Inputs<'_>) -> Report {
    Report {
        organiser: inputs.organiser.name.clone(),
        from: inputs.from.to_owned(),
        to: inputs.to.to_owned(),
        findings_as_of: None,
        open_errors: 0,
        open_warnings: 0,
        resolved: 0,
        rules: Vec::new(),
        units: Vec::new(),
        weeks: Vec::new(),
        long_absence_percent: inputs.long_absence_percent,
        extensive_absence_percent: inputs.extensive_absence_percent,
        absence: None,
        coverage: None,
        notes: vec!["the period is not two ISO weeks (YYYY-Www)".into()],
    }
}

fn notes(with_absence: bool, with_coverage: bool) -> Vec<String> {
    let mut notes = vec![
        "Findings about persons (civic numbers) are per connection: a vendor connection that serves several organisers shows them to each.".to_owned(),
    ];
    if !with_absence {
        notes.push(
            "No registers were given ([quality] registers): no absence statistics.".to_owned(),
        );
    }
    if !with_coverage {
        notes.push(
            "No coverage topics were given ([quality] coverage_topics): no coverage by week and no absence by weekday.".to_owned(),
        );
    }
    notes
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    }
}

fn unit_label(code: &str, name: &str) -> String {
    if code.is_empty() {
        format!("(no code) {name}")
    } else {
        format!("{code} {name}")
    }
}
