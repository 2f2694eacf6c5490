//! The report as one self-contained HTML page: inline CSS, charts as
//! inline SVG, no script, no external font or image.

use std::fmt::Write;

use crate::absence::{subjects_by_absence, Minutes};
use crate::charts::{bars, columns, escape, Series};
use crate::coverage::Coverage;
use crate::report::Report;

const ERROR: &str = "#c53030";
const WARNING: &str = "#d69e2e";
const RESOLVED: &str = "#38a169";
const VALID: &str = "#3182ce";
const INVALID: &str = "#805ad5";

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1a202c}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #e2e8f0;padding-bottom:.3rem}\
.sub{color:#4a5568;margin-top:0}.cards{display:flex;gap:1rem;flex-wrap:wrap}\
.card{border:1px solid #e2e8f0;border-radius:8px;padding:.8rem 1.2rem;min-width:150px}\
.card b{display:block;font-size:1.6rem}table{border-collapse:collapse;width:100%;margin:.8rem 0;font-size:.92rem}\
th,td{border-bottom:1px solid #e2e8f0;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#f7fafc}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.error{color:#fff;background:#c53030;border-radius:4px;padding:0 .4rem}\
.warning{color:#1a202c;background:#f6e05e;border-radius:4px;padding:0 .4rem}\
.sv{color:#4a5568;font-style:italic}code{font-size:.85rem}\
svg.chart{display:block;margin:1rem 0;font-size:11px;font-family:inherit}svg .chart-title{font-weight:600;font-size:13px}";

fn minutes_row(out: &mut String, label: &str, m: &Minutes) {
    let _ = write!(
        out,
        "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1} %</td><td class=n>{:.1} %</td><td class=n>{:.1} %</td><td class=n>{}</td></tr>",
        escape(label),
        m.lessons,
        m.scheduled,
        m.absence_percent(),
        m.valid_percent(),
        m.invalid_percent(),
        m.lessons_unreported
    );
}

const MINUTES_HEAD: &str = "<tr><th></th><th>lessons (lektioner)</th><th>minutes scheduled</th><th>absent</th><th>valid (giltig)</th><th>invalid (ogiltig)</th><th>lessons unreported</th></tr>";

fn badge(severity: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", escape(severity))
}

fn as_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn share(p: Option<f64>) -> String {
    p.map_or("—".to_owned(), |p| format!("{p:.1} %"))
}

/// Coverage over the weeks, by unit and week, and absence by weekday.
fn coverage(h: &mut String, c: &Coverage) {
    h.push_str("<h2>Coverage over the weeks / Täckning över veckorna</h2><p>Of the lessons held: the share with a teacher, and of those with pupils the share with any attendance report; of the pupils' lessons, the share reported; and the pupils with lessons against the pupil register of 15 October (a digital timetable), where the registers integrated it.</p>");
    if !c.by_week.is_empty() {
        let labels: Vec<String> = c.by_week.iter().map(|w| w.week.clone()).collect();
        let series = [
            Series {
                name: "lessons with a teacher",
                color: RESOLVED,
                values: c.by_week.iter().map(|w| w.with_teacher_percent).collect(),
            },
            Series {
                name: "pupils' lessons reported",
                color: VALID,
                values: c
                    .by_week
                    .iter()
                    .map(|w| w.pupil_lessons_reported_percent)
                    .collect(),
            },
        ];
        h.push_str(&columns("Coverage by week, %", &labels, &series, " %"));
    }
    let head = "<tr><th>school unit</th><th>week</th><th>lessons</th><th>with a teacher</th><th>lessons reported</th><th>pupils' lessons</th><th>reported</th><th>pupils</th><th>with a timetable</th></tr>";
    let row = |h: &mut String, w: &crate::coverage::UnitWeek| {
        let unit = if w.code.is_empty() && w.name.is_empty() {
            "all".to_owned()
        } else {
            format!("{} {}", w.code, w.name)
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{:.1} %</td><td class=n>{:.1} %</td><td class=n>{}</td><td class=n>{:.1} %</td><td class=n>{}</td><td class=n>{}</td></tr>",
            escape(&unit),
            escape(&w.week),
            w.lessons,
            w.with_teacher_percent,
            w.lessons_reported_percent,
            w.pupil_lessons,
            w.pupil_lessons_reported_percent,
            w.pupils,
            share(w.with_timetable_percent)
        );
    };
    let _ = write!(h, "<table>{head}");
    for w in &c.by_week {
        row(h, w);
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<details><summary>By school unit and week / Per skolenhet och vecka ({} rows)</summary><table>{head}",
        c.by_unit_week.len()
    );
    for w in &c.by_unit_week {
        row(h, w);
    }
    h.push_str("</table></details>");
    if !c.weekdays.is_empty() {
        h.push_str("<h3>Absence by weekday / Frånvaro per veckodag</h3>");
        let labels: Vec<String> = c
            .weekdays
            .iter()
            .map(|d| d.name.split(" / ").next().unwrap_or_default().to_owned())
            .collect();
        let series = [
            Series {
                name: "valid absence",
                color: VALID,
                values: c
                    .weekdays
                    .iter()
                    .map(|d| d.minutes.valid_percent())
                    .collect(),
            },
            Series {
                name: "invalid absence",
                color: INVALID,
                values: c
                    .weekdays
                    .iter()
                    .map(|d| d.minutes.invalid_percent())
                    .collect(),
            },
        ];
        h.push_str(&columns(
            "Absence by weekday, % of reported minutes",
            &labels,
            &series,
            " %",
        ));
        let _ = write!(h, "<table>{MINUTES_HEAD}");
        for d in &c.weekdays {
            minutes_row(h, &d.name, &d.minutes);
        }
        h.push_str("</table>");
    }
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!(
        "Datakvalitet och frånvaro / Data quality and absence — {}",
        r.organiser
    );
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"sv\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class=sub>Weeks {from} to {to}. Findings as of {asof}. Made by skolflode from the vendors' data and the weekly registers; entities are named by the vendor's ids, pupils are only counted.</p>",
        t = escape(&title),
        from = escape(&r.from),
        to = escape(&r.to),
        asof = r.findings_as_of.map(as_of).unwrap_or_else(|| "—".into()),
    );

    // Summary.
    let _ = write!(
        h,
        "<div class=cards><div class=card><b>{}</b>open errors (fel)</div><div class=card><b>{}</b>open warnings (varningar)</div><div class=card><b>{}</b>resolved (åtgärdade)</div>",
        r.open_errors, r.open_warnings, r.resolved
    );
    if let Some(a) = &r.absence {
        let _ = write!(
            h,
            "<div class=card><b>{:.1} %</b>absence (frånvaro), {} pupils</div>",
            a.total.absence_percent(),
            a.pupils
        );
    }
    h.push_str("</div>");

    // Worst first.
    h.push_str("<h2>Worst problems first / Största problemen först</h2>");
    if r.rules.is_empty() {
        h.push_str("<p>No rule found anything in the period. / Inga fynd under perioden.</p>");
    } else {
        let items: Vec<(String, f64)> = r
            .rules
            .iter()
            .map(|x| (x.rule.clone(), x.open as f64))
            .collect();
        h.push_str(&bars("Open findings by rule", &items, "", ERROR));
        h.push_str("<table><tr><th>rule</th><th>open</th><th>resolved</th><th>what it means</th><th>where to fix (most open first)</th></tr>");
        for x in &r.rules {
            let mut wheres = String::new();
            for (unit, n) in x.by_unit.iter().take(3) {
                let _ = write!(wheres, "{} ({n})<br>", escape(unit));
            }
            let _ = write!(
                h,
                "<tr><td>{} <code>{}</code></td><td class=n>{}</td><td class=n>{}</td><td>{}<br><span class=sv>{}</span></td><td>{}</td></tr>",
                badge(&x.severity),
                escape(&x.rule),
                x.open,
                x.resolved,
                escape(&x.en),
                escape(&x.sv),
                wheres
            );
        }
        h.push_str("</table>");
    }

    // Trend.
    if !r.weeks.is_empty() {
        h.push_str("<h2>Over the weeks / Över veckorna</h2>");
        let labels: Vec<String> = r.weeks.iter().map(|w| w.week.clone()).collect();
        let series = [
            Series {
                name: "open errors",
                color: ERROR,
                values: r.weeks.iter().map(|w| w.open_errors as f64).collect(),
            },
            Series {
                name: "open warnings",
                color: WARNING,
                values: r.weeks.iter().map(|w| w.open_warnings as f64).collect(),
            },
            Series {
                name: "resolved",
                color: RESOLVED,
                values: r.weeks.iter().map(|w| w.resolved as f64).collect(),
            },
        ];
        h.push_str(&columns(
            "Findings by the week they are about",
            &labels,
            &series,
            "",
        ));
    }

    // Absence.
    if let Some(a) = &r.absence {
        h.push_str("<h2>Absence / Frånvaro</h2>");
        let _ = write!(
            h,
            "<p>Shares of the reported minutes (present plus absent) of {} pupils in {} weekly registers. <b>Long absence</b> (långvarig frånvaro): at least {} % of a pupil's reported minutes in the period; <b>extensive absence</b> (omfattande frånvaro): at least {} %.</p>",
            a.pupils, a.files, r.long_absence_percent, r.extensive_absence_percent
        );
        h.push_str("<div class=cards>");
        for (name, t) in [("long", &a.long), ("extensive", &a.extensive)] {
            if let Some(t) = t {
                let _ = write!(
                    h,
                    "<div class=card><b>{}</b>pupils with {name} absence (≥ {} %), {:.1} % of pupils</div>",
                    t.pupils, t.percent, t.share_percent
                );
            }
        }
        h.push_str("</div>");
        let labels: Vec<String> = a.by_week.keys().cloned().collect();
        let series = [
            Series {
                name: "valid absence",
                color: VALID,
                values: a.by_week.values().map(Minutes::valid_percent).collect(),
            },
            Series {
                name: "invalid absence",
                color: INVALID,
                values: a.by_week.values().map(Minutes::invalid_percent).collect(),
            },
        ];
        h.push_str(&columns(
            "Absence by week, % of reported minutes",
            &labels,
            &series,
            " %",
        ));
        let distribution: Vec<(String, f64)> = a
            .distribution
            .iter()
            .map(|b| (b.label.clone(), b.pupils as f64))
            .collect();
        h.push_str(&bars(
            "Pupils by their absence share",
            &distribution,
            "",
            VALID,
        ));
        let subjects: Vec<(String, f64)> = subjects_by_absence(a)
            .into_iter()
            .take(20)
            .map(|(s, m)| {
                (
                    if s.is_empty() {
                        "(none)".to_owned()
                    } else {
                        s.clone()
                    },
                    m.absence_percent(),
                )
            })
            .collect();
        h.push_str(&bars(
            "Absence by subject, % (highest 20)",
            &subjects,
            " %",
            INVALID,
        ));
        for (heading, map) in [
            ("By school form / Per skolform", &a.by_form),
            (
                "By grade (pupil register of 15 October) / Per årskurs",
                &a.by_grade,
            ),
            ("By subject / Per ämne", &a.by_subject),
        ] {
            let _ = write!(h, "<h3>{}</h3><table>{MINUTES_HEAD}", escape(heading));
            for (label, m) in map {
                minutes_row(&mut h, if label.is_empty() { "(none)" } else { label }, m);
            }
            h.push_str("</table>");
        }
        h.push_str("<h3>Coverage by school unit / Täckning per skolenhet</h3><p>Pupils' lessons reported, and pupils in the pupil register of 15 October with lessons at their unit (a digital timetable), where the registers integrated it.</p><table><tr><th>school unit</th><th>pupils' lessons</th><th>reported</th><th>pupils with lessons</th><th>pupils in the pupil register</th><th>with a timetable</th></tr>");
        for (code, c) in &a.coverage {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{:.1} %</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                escape(code),
                c.lessons,
                c.reported_percent,
                c.pupils,
                c.register_pupils.map_or("—".to_owned(), |n| n.to_string()),
                c.with_timetable_percent.map_or("—".to_owned(), |p| format!("{p:.1} %"))
            );
        }
        h.push_str("</table>");
        let _ = write!(h, "<h3>All / Totalt</h3><table>{MINUTES_HEAD}");
        minutes_row(&mut h, "all", &a.total);
        h.push_str("</table>");
    }

    if let Some(c) = &r.coverage {
        coverage(&mut h, c);
    }

    // Units.
    h.push_str("<h2>By school unit / Per skolenhet</h2><table><tr><th>school unit</th><th>form</th><th>errors</th><th>warnings</th><th>open findings by rule</th></tr>");
    for u in &r.units {
        let by_rule: Vec<String> = u
            .by_rule
            .iter()
            .map(|(rule, n)| format!("<code>{}</code> {n}", escape(rule)))
            .collect();
        let _ =
            write!(
            h,
            "<tr><td>{} {}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            if u.code.is_empty() { "(no code)".to_owned() } else { escape(&u.code) },
            escape(&u.name),
            escape(&u.form),
            u.open_errors,
            u.open_warnings,
            by_rule.join(", ")
        );
    }
    h.push_str("</table>");

    // Examples.
    if r.rules.iter().any(|x| !x.examples.is_empty()) {
        h.push_str("<h2>Examples to look up / Exempel att slå upp</h2><p>By the vendor system's own ids: search for them in the vendor's administration.</p><table><tr><th>rule</th><th>kind</th><th>id</th><th>field</th><th>school unit</th><th>week</th></tr>");
        for x in &r.rules {
            for e in &x.examples {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&x.rule),
                    escape(&e.endpoint),
                    escape(&e.entity_id),
                    escape(&e.field),
                    escape(&e.school_unit),
                    escape(&e.week)
                );
            }
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Notes / Att tänka på</h2><ul>");
    for n in &r.notes {
        let _ = write!(h, "<li>{}</li>", escape(n));
    }
    h.push_str(
        "<li>Every rule is explained in skolflode's docs/quality.md.</li></ul></body></html>\n",
    );
    h
}
