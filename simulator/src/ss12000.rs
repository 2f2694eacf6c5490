//! The SS 12000 v2 vendor: the simulation rendered as the standard's JSON,
//! with `limit`/`pageToken` paging and `meta.modified.after`.
//!
//! Page tokens are cursors into the vendor's own storage order: when data
//! changes between two pages, later pages see the changed world, as with
//! real vendors.

use chrono::{Duration, NaiveDateTime};
use serde_json::{json, Map, Value};

use crate::calendar::{local_to_epoch_millis, rfc3339_local, write_rfc3339_local};
use crate::page_json::Obj;
use crate::sim::Simulation;
use crate::world::Form;

/// The entity endpoints served.
pub const ENDPOINTS: &[&str] = &[
    "organisations",
    "persons",
    "duties",
    "groups",
    "syllabuses",
    "activities",
    "calendarEvents",
    "attendances",
];

/// Swedish local time of an instant.
pub fn local_from_epoch_millis(millis: i64) -> NaiveDateTime {
    let utc = chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.naive_utc())
        .unwrap_or_default();
    // Try CET, then check: near the switch the other offset may be right.
    for offset in [1, 2] {
        let local = utc + Duration::hours(offset);
        if local_to_epoch_millis(local) == millis {
            return local;
        }
    }
    utc + Duration::hours(1)
}

fn ts(millis: i64) -> String {
    rfc3339_local(local_from_epoch_millis(millis))
}

/// A quoted local timestamp.
fn time(out: &mut Vec<u8>, local: NaiveDateTime) {
    out.push(b'"');
    write_rfc3339_local(out, local);
    out.push(b'"');
}

/// [`meta`], written.
fn write_meta(out: &mut Vec<u8>, created: i64, modified: i64) {
    let mut o = Obj::start(out);
    time(o.key("created"), local_from_epoch_millis(created));
    time(o.key("modified"), local_from_epoch_millis(modified));
    o.end();
}

fn meta(created: i64, modified: i64) -> Value {
    json!({ "created": ts(created), "modified": ts(modified) })
}

fn reference(id: &str) -> Value {
    json!({ "id": id })
}

fn date(d: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// A page request.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub limit: usize,
    /// Where the previous page stopped, in storage order.
    pub cursor: usize,
    pub modified_after: Option<i64>,
    /// Fault: start one item before the cursor, repeating the previous
    /// page's last item.
    pub repeat_last: bool,
}

/// A page of items and the cursor for the next one.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<usize>,
}

/// Longest time after creation that an item can still change: attendance
/// corrections come at most 5 days after the lesson and reports at most 3
/// days after it; cancellations at most 8 days after publication.
const SETTLE_MILLIS: i64 = 10 * 24 * 3600 * 1000;

impl Simulation {
    /// Serve one page of an endpoint.
    pub fn page(&self, endpoint: &str, query: &Query) -> Option<Page> {
        let mut items = Vec::with_capacity(query.limit);
        let next = self.for_page(endpoint, query, |i| {
            if let Some((_, item)) = self.render(endpoint, i) {
                items.push(item);
            }
        })?;
        Some(Page { items, next })
    }

    /// One page as the response body `{"data": [...], "pageToken": ...}`,
    /// each item written as soon as it is rendered; `token` makes the next
    /// page's token from the cursor. Returns the body, the number of items
    /// and the next cursor.
    pub fn page_body(
        &self,
        endpoint: &str,
        query: &Query,
        token: impl Fn(usize) -> String,
    ) -> Option<(String, usize, Option<usize>)> {
        let mut body = Vec::with_capacity(query.limit * 512);
        body.extend_from_slice(b"{\"data\":[");
        let mut count = 0;
        let mut failed = false;
        let next = self.for_page(endpoint, query, |i| {
            if count > 0 {
                body.push(b',');
            }
            count += 1;
            failed |= !self.write_item(endpoint, i, &mut body);
        })?;
        if failed {
            return None;
        }
        body.extend_from_slice(b"],\"pageToken\":");
        match next {
            Some(n) => {
                let _ = serde_json::to_writer(&mut body, &token(n));
            }
            None => body.extend_from_slice(b"null"),
        }
        body.push(b'}');
        String::from_utf8(body).ok().map(|b| (b, count, next))
    }

    /// The storage positions of one page's items, in order, given to
    /// `emit`; returns where the next page starts.
    fn for_page(
        &self,
        endpoint: &str,
        query: &Query,
        mut emit: impl FnMut(usize),
    ) -> Option<Option<usize>> {
        let len = self.storage_len(endpoint)?;
        let mut start = query.cursor.min(len);
        if query.repeat_last && start > 0 {
            start -= 1;
        }
        // Attendance records and lessons are stored in creation order and
        // settle within days: skip what cannot match the filter.
        if let (Some(after), 0) = (query.modified_after, query.cursor) {
            start = start.max(self.first_possibly_modified_after(endpoint, after - SETTLE_MILLIS));
        }
        let mut emitted = 0;
        let mut i = start;
        while i < len && emitted < query.limit {
            if let Some(modified) = self.shown_modified(endpoint, i) {
                if query.modified_after.is_none_or(|after| modified > after) {
                    emit(i);
                    emitted += 1;
                }
            }
            i += 1;
        }
        Some((i < len).then_some(i))
    }

    /// How many items of an endpoint the vendor stores, shown or not.
    pub fn storage_len(&self, endpoint: &str) -> Option<usize> {
        let w = &self.world;
        Some(match endpoint {
            "organisations" => w.organisations.len(),
            "persons" => w.persons.len(),
            "duties" => w.duties.len(),
            "groups" => w.groups.len(),
            "syllabuses" => w.syllabuses.len(),
            "activities" => w.activities.len(),
            "calendarEvents" => self.lessons.len(),
            "attendances" => self.records.len(),
            _ => return None,
        })
    }

    fn first_possibly_modified_after(&self, endpoint: &str, created_after: i64) -> usize {
        match endpoint {
            "calendarEvents" => self.lessons.partition_point(|l| l.created <= created_after),
            "attendances" => self
                .records
                .partition_point(|r| r.reported <= created_after),
            _ => 0,
        }
    }

    /// The `meta.modified` of the item at a storage position, or `None`
    /// when the vendor does not show it: what [`Self::render`] returns,
    /// without rendering (a test holds the two together).
    fn shown_modified(&self, endpoint: &str, i: usize) -> Option<i64> {
        let w = &self.world;
        let shown_lesson =
            |l: &crate::sim::Lesson| !w.is_skola24(w.activities[l.activity as usize].unit);
        match endpoint {
            "organisations" => w.organisations.get(i).map(|o| o.modified),
            "persons" => w.persons.get(i).map(|p| p.modified),
            "duties" => w
                .duties
                .get(i)
                .filter(|d| d.deleted.is_none())
                .map(|d| d.modified),
            "groups" => w.groups.get(i).map(|g| g.modified),
            "syllabuses" => w.syllabuses.get(i).map(|s| s.created),
            "activities" => w.activities.get(i).map(|a| a.modified),
            "calendarEvents" => self
                .lessons
                .get(i)
                .filter(|l| shown_lesson(l))
                .map(|l| l.modified),
            "attendances" => self
                .records
                .get(i)
                .filter(|r| shown_lesson(&self.lessons[r.lesson as usize]))
                .map(|r| r.modified),
            _ => None,
        }
    }

    /// Append the item at a storage position that
    /// [`Self::shown_modified`] accepts, exactly as `serde_json` writes
    /// [`Self::render`]'s value; lessons and attendance records, the bulk
    /// of every read, are written directly ([`crate::page_json`]). Returns
    /// false if there is no item there.
    fn write_item(&self, endpoint: &str, i: usize, out: &mut Vec<u8>) -> bool {
        let w = &self.world;
        match endpoint {
            "calendarEvents" => {
                let Some(l) = self.lessons.get(i) else {
                    return false;
                };
                let mut o = Obj::start(out);
                o.reference("activity", &w.activities[l.activity as usize].id);
                o.bool("cancelled", l.cancelled);
                time(o.key("endTime"), l.end_local());
                o.str("id", &l.id);
                write_meta(o.key("meta"), l.created, l.modified);
                time(o.key("startTime"), l.start_local());
                o.int("teachingLengthStudent", l.len);
                o.int("teachingLengthTeacher", l.len);
                o.end();
                true
            }
            "attendances" => {
                let Some(r) = self.records.get(i) else {
                    return false;
                };
                let mut o = Obj::start(out);
                o.int("attendanceMinutes", r.present);
                o.reference("calendarEvent", &self.lessons[r.lesson as usize].id);
                o.str("id", &r.id(w.seed));
                o.int("invalidAbsenceMinutes", r.invalid);
                o.bool("isReported", true);
                write_meta(o.key("meta"), r.reported, r.modified);
                time(
                    o.key("reportedTimestamp"),
                    local_from_epoch_millis(r.reported),
                );
                if let Some(duty) = r.reporter {
                    o.reference(
                        "reporter",
                        &w.persons[w.duties[duty as usize].person as usize].id,
                    );
                }
                o.reference("student", &w.persons[r.pupil as usize].id);
                o.int("validAbsenceMinutes", r.valid);
                o.end();
                true
            }
            _ => match self.render(endpoint, i) {
                Some((_, item)) => serde_json::to_writer(out, &item).is_ok(),
                None => false,
            },
        }
    }

    /// The item at a storage position with its `meta.modified`, or `None`
    /// when the vendor does not show it (deleted).
    pub fn render(&self, endpoint: &str, i: usize) -> Option<(i64, Value)> {
        let w = &self.world;
        match endpoint {
            "organisations" => {
                let o = w.organisations.get(i)?;
                let mut v = json!({
                    "id": o.id,
                    "meta": meta(o.created, o.modified),
                    "displayName": o.name,
                    "organisationType": o.kind,
                    "municipalityCode": format!("{:04}", 100 + (w.seed % 2000)),
                    "startDate": date(w.year.bounds().0),
                });
                if let Some(parent) = o.parent {
                    v["parentOrganisation"] = reference(&w.organisations[parent as usize].id);
                }
                if let Some(code) = &o.school_unit_code {
                    v["schoolUnitCode"] = json!(code);
                }
                if let Some(form) = o.form {
                    v["schoolTypes"] = match form {
                        Form::Gr => json!(["FKLASS", "GR"]),
                        Form::Gy => json!(["GY"]),
                    };
                }
                Some((o.modified, v))
            }
            "persons" => {
                let p = w.persons.get(i)?;
                let mut v = json!({
                    "id": p.id,
                    "meta": meta(p.created, p.modified),
                    "givenName": p.given_name,
                    "familyName": p.family_name,
                    "birthDate": date(p.birth),
                    "sex": if p.male { "Man" } else { "Kvinna" },
                    "emails": [{
                        "value": format!("{}.{}{}@skola.example", p.given_name.to_lowercase(), p.family_name.to_lowercase(), i),
                        "type": if p.enrolments.is_empty() { "Skola personal" } else { "Skola elev" },
                    }],
                    "enrolments": p.enrolments.iter().map(|e| {
                        let mut enrolment = json!({
                            "enroledAt": reference(&w.organisations[e.unit as usize].id),
                            "schoolYear": e.school_year,
                            "schoolType": if e.form == Form::Gr && e.school_year == 0 { "FKLASS" } else { e.form.school_type() },
                            "startDate": date(e.start),
                        });
                        if let Some(end) = e.end {
                            enrolment["endDate"] = json!(date(end));
                        }
                        enrolment
                    }).collect::<Vec<_>>(),
                });
                if let Some(civic) = &p.civic {
                    v["civicNo"] = json!({ "value": civic, "nationality": "SE" });
                }
                Some((p.modified, v))
            }
            "duties" => {
                let d = w.duties.get(i)?;
                if d.deleted.is_some() {
                    return None;
                }
                let v = json!({
                    "id": d.id,
                    "meta": meta(d.created, d.modified),
                    "person": reference(&w.persons[d.person as usize].id),
                    "dutyAt": reference(&w.organisations[d.unit as usize].id),
                    "dutyRole": "Lärare",
                    "signature": d.signature,
                    "dutyPercent": 100,
                    "startDate": date(d.start),
                });
                Some((d.modified, v))
            }
            "groups" => {
                let g = w.groups.get(i)?;
                let v = json!({
                    "id": g.id,
                    "meta": meta(g.created, g.modified),
                    "displayName": g.name,
                    "startDate": date(g.start),
                    "endDate": date(g.end),
                    "groupType": g.group_type,
                    "schoolType": g.form.school_type(),
                    "organisation": reference(&w.organisations[g.unit as usize].id),
                    "groupMemberships": g.members.iter().filter(|m| !m.hidden).map(|m| {
                        let mut membership = json!({
                            "person": reference(&w.persons[m.person as usize].id),
                            "startDate": date(m.start),
                        });
                        if let Some(end) = m.end {
                            membership["endDate"] = json!(date(end));
                        }
                        membership
                    }).collect::<Vec<_>>(),
                });
                Some((g.modified, v))
            }
            "syllabuses" => {
                let s = w.syllabuses.get(i)?;
                let mut v = json!({
                    "id": s.id,
                    "meta": meta(s.created, s.created),
                    "schoolType": s.form.school_type(),
                    "subjectCode": s.item.subject_code,
                    "subjectName": s.item.name,
                    "subjectDesignation": s.item.designation,
                    "official": true,
                });
                if let Some(code) = s.item.course_code {
                    v["courseCode"] = json!(code);
                    v["courseName"] = json!(s.item.name);
                }
                if let Some(points) = s.item.points {
                    v["points"] = json!(points);
                }
                if let Some(l) = s.language {
                    v["languageCode"] = json!(crate::plan::LANGUAGES[l as usize].1);
                }
                Some((s.created, v))
            }
            "activities" => {
                let a = w.activities.get(i)?;
                let mut groups: Vec<Value> = a
                    .groups
                    .iter()
                    .map(|g| reference(&w.groups[*g as usize].id))
                    .collect();
                if let Some(dangling) = &a.dangling_group {
                    groups.push(reference(dangling));
                }
                let weekly: u32 = w.slots_of(a).iter().map(|s| u32::from(s.len)).sum();
                let v = json!({
                    "id": a.id,
                    "meta": meta(a.created, a.modified),
                    "displayName": a.name,
                    "calendarEventsRequired": true,
                    "startDate": date(a.start),
                    "endDate": date(a.end),
                    "activityType": "Undervisning",
                    "minutesPlanned": weekly * 36,
                    "groups": groups,
                    "teachers": a.teachers.iter().map(|t| {
                        let mut teacher = json!({
                            "duty": reference(&w.duties[t.duty as usize].id),
                            "grader": true,
                        });
                        if let Some(start) = t.start {
                            teacher["startDate"] = json!(date(start));
                        }
                        if let Some(end) = t.end {
                            teacher["endDate"] = json!(date(end));
                        }
                        teacher
                    }).collect::<Vec<_>>(),
                    "syllabus": reference(&w.syllabuses[a.syllabus as usize].id),
                    "organisation": reference(&w.organisations[a.unit as usize].id),
                });
                Some((a.modified, v))
            }
            "calendarEvents" => {
                let l = self.lessons.get(i)?;
                let a = &w.activities[l.activity as usize];
                if w.is_skola24(a.unit) {
                    return None;
                }
                let v = json!({
                    "id": l.id,
                    "meta": meta(l.created, l.modified),
                    "activity": reference(&a.id),
                    "startTime": rfc3339_local(l.start_local()),
                    "endTime": rfc3339_local(l.end_local()),
                    "cancelled": l.cancelled,
                    "teachingLengthTeacher": l.len,
                    "teachingLengthStudent": l.len,
                });
                Some((l.modified, v))
            }
            "attendances" => {
                let r = self.records.get(i)?;
                let l = &self.lessons[r.lesson as usize];
                if w.is_skola24(w.activities[l.activity as usize].unit) {
                    return None;
                }
                let mut v = json!({
                    "id": r.id(w.seed),
                    "meta": meta(r.reported, r.modified),
                    "calendarEvent": reference(&l.id),
                    "student": reference(&w.persons[r.pupil as usize].id),
                    "isReported": true,
                    "attendanceMinutes": r.present,
                    "validAbsenceMinutes": r.valid,
                    "invalidAbsenceMinutes": r.invalid,
                    "reportedTimestamp": ts(r.reported),
                });
                if let Some(duty) = r.reporter {
                    v["reporter"] =
                        reference(&w.persons[w.duties[duty as usize].person as usize].id);
                }
                Some((r.modified, v))
            }
            _ => None,
        }
    }

    /// `/deletedEntities`: what the vendor announces as deleted after an
    /// instant, grouped by entity type.
    pub fn deleted_after(&self, after: Option<i64>) -> Value {
        let mut data = Map::new();
        for d in self
            .deletions
            .iter()
            .filter(|d| after.is_none_or(|a| d.at > a))
        {
            if let Some(list) = data
                .entry(d.entity.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            {
                list.push(json!(d.id));
            }
        }
        json!({ "data": data, "pageToken": null })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::local_to_epoch_millis;

    #[test]
    fn local_time_round_trips() {
        for (y, m, d, h) in [
            (2026, 2, 10, 8),
            (2025, 9, 10, 8),
            (2025, 10, 26, 1),
            (2026, 3, 29, 4),
        ] {
            let local = chrono::NaiveDate::from_ymd_opt(y, m, d)
                .and_then(|d| d.and_hms_opt(h, 0, 0))
                .unwrap_or_default();
            assert_eq!(local_from_epoch_millis(local_to_epoch_millis(local)), local);
        }
    }

    #[test]
    #[allow(clippy::expect_used)]
    fn written_items_are_what_serde_json_writes_for_the_rendered_ones() {
        let mut sim = Simulation::new(crate::SimConfig::default(), None).expect("simulation");
        let first = sim.world.year.bounds().0;
        sim.advance_to(first + chrono::Duration::days(70))
            .expect("advance");
        for endpoint in ENDPOINTS {
            let len = sim.storage_len(endpoint).expect("endpoint");
            let mut shown = 0;
            for i in 0..len {
                let rendered = sim.render(endpoint, i);
                assert_eq!(
                    sim.shown_modified(endpoint, i),
                    rendered.as_ref().map(|(m, _)| *m),
                    "{endpoint} {i}"
                );
                let Some((_, item)) = rendered else { continue };
                shown += 1;
                let mut written = Vec::new();
                assert!(sim.write_item(endpoint, i, &mut written));
                assert_eq!(
                    String::from_utf8_lossy(&written),
                    serde_json::to_string(&item).expect("json"),
                    "{endpoint} {i}"
                );
            }
            assert!(shown > 0, "{endpoint}: nothing shown");
        }
    }
}
