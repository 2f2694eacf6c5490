//! The SS 12000 v2 vendor: the simulation rendered as the standard's JSON,
//! in the vendor's [`Dialect`], with `limit`/`pageToken` paging,
//! `meta.modified.after` and the calendar events' `startTime` window; and
//! [`QUERY_PARAMETERS`], every query parameter the specification defines
//! for the endpoints served and what the simulator does with it.
//!
//! Page tokens are cursors into the vendor's own storage order: when data
//! changes between two pages, later pages see the changed world, as with
//! real vendors.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::{json, Map, Value};

use crate::calendar::{local_to_epoch_millis, write_rfc3339_local, write_wall_time};
use crate::config::{Dialect, Timestamps};
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

/// A query parameter that the specification defines for `GET /{endpoint}`
/// or `GET /deletedEntities`, and what the simulator does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `limit`: items per page, 1 to 10 000 (default 100; on
    /// `/deletedEntities` all).
    Limit,
    /// `pageToken`: the opaque token of the previous page.
    PageToken,
    /// `meta.modified.after`: items modified after an instant (exclusive).
    ModifiedAfter,
    /// `meta.created.after`: items created after an instant (exclusive);
    /// implemented for attendance records.
    CreatedAfter,
    /// `startTime.onOrAfter` of calendar events (inclusive; required).
    StartTimeOnOrAfter,
    /// `startTime.onOrBefore` of calendar events (inclusive; required).
    StartTimeOnOrBefore,
    /// `after` of `/deletedEntities`: deletions after an instant.
    DeletedAfter,
    /// Defined by the specification, not implemented by the simulator: a
    /// request carrying it is refused (400), never silently served
    /// unfiltered.
    Unsupported(&'static str),
}

impl Param {
    /// The name in the query string.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::PageToken => "pageToken",
            Self::ModifiedAfter => "meta.modified.after",
            Self::CreatedAfter => "meta.created.after",
            Self::StartTimeOnOrAfter => "startTime.onOrAfter",
            Self::StartTimeOnOrBefore => "startTime.onOrBefore",
            Self::DeletedAfter => "after",
            Self::Unsupported(name) => name,
        }
    }

    /// Whether a first-page request must carry it (the specification's
    /// `required: true`).
    pub const fn required(self) -> bool {
        matches!(self, Self::StartTimeOnOrAfter | Self::StartTimeOnOrBefore)
    }

    /// Whether the simulator implements it.
    pub const fn implemented(self) -> bool {
        !matches!(self, Self::Unsupported(_))
    }

    /// Whether it is a filter: not `limit` or `pageToken`. A page token
    /// carries the first request's filters.
    pub const fn is_filter(self) -> bool {
        !matches!(self, Self::Limit | Self::PageToken)
    }
}

/// The query parameters of `GET /{endpoint}` for every endpoint served
/// (and `deletedEntities`), in the specification's order
/// (`paths/{endpoint}.yaml`, with `searchParameters.yaml` resolved). A test
/// holds this table to the specification.
pub const QUERY_PARAMETERS: &[(&str, &[Param])] = {
    use Param::{
        CreatedAfter, DeletedAfter, Limit, ModifiedAfter, PageToken, StartTimeOnOrAfter,
        StartTimeOnOrBefore, Unsupported as U,
    };
    &[
        (
            "organisations",
            &[
                U("parent"),
                U("schoolUnitCode"),
                U("organisationCode"),
                U("municipalityCode"),
                U("type"),
                U("schoolTypes"),
                U("startDate.onOrBefore"),
                U("startDate.onOrAfter"),
                U("endDate.onOrBefore"),
                U("endDate.onOrAfter"),
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "persons",
            &[
                U("nameContains"),
                U("civicNo"),
                U("eduPersonPrincipalName"),
                U("identifier.value"),
                U("identifier.context"),
                U("relationship.entity.type"),
                U("relationship.organisation"),
                U("relationship.startDate.onOrBefore"),
                U("relationship.startDate.onOrAfter"),
                U("relationship.endDate.onOrBefore"),
                U("relationship.endDate.onOrAfter"),
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expand"),
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "duties",
            &[
                U("organisation"),
                U("dutyRole"),
                U("person"),
                U("startDate.onOrBefore"),
                U("startDate.onOrAfter"),
                U("endDate.onOrBefore"),
                U("endDate.onOrAfter"),
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expand"),
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "groups",
            &[
                U("groupType"),
                U("schoolTypes"),
                U("organisation"),
                U("startDate.onOrBefore"),
                U("startDate.onOrAfter"),
                U("endDate.onOrBefore"),
                U("endDate.onOrAfter"),
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expand"),
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "syllabuses",
            &[
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "activities",
            &[
                U("member"),
                U("teacher"),
                U("organisation"),
                U("group"),
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expand"),
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "calendarEvents",
            &[
                StartTimeOnOrAfter,
                StartTimeOnOrBefore,
                U("endTime.onOrBefore"),
                U("endTime.onOrAfter"),
                U("activity"),
                U("student"),
                U("teacher"),
                U("organisation"),
                U("group"),
                U("meta.created.before"),
                U("meta.created.after"),
                U("meta.modified.before"),
                ModifiedAfter,
                U("expand"),
                U("expandReferenceNames"),
                U("sortkey"),
                Limit,
                PageToken,
            ],
        ),
        (
            "attendances",
            &[
                U("student"),
                U("organisation"),
                U("calendarEvent"),
                U("meta.created.before"),
                CreatedAfter,
                U("meta.modified.before"),
                ModifiedAfter,
                U("expandReferenceNames"),
                Limit,
                PageToken,
            ],
        ),
        (
            "deletedEntities",
            &[DeletedAfter, U("entities"), Limit, PageToken],
        ),
    ]
};

/// The query parameters the specification defines for `GET /{endpoint}`
/// (an entity endpoint or `deletedEntities`).
pub fn query_parameters(endpoint: &str) -> Option<&'static [Param]> {
    QUERY_PARAMETERS
        .iter()
        .find(|(e, _)| *e == endpoint)
        .map(|(_, params)| *params)
}

/// The singular type name of an endpoint's entities (`duties` → `Duty`),
/// as the specification's `EndPointsEnum` names them.
pub fn entity_type(endpoint: &str) -> Option<&'static str> {
    Some(match endpoint {
        "organisations" => "Organisation",
        "persons" => "Person",
        "duties" => "Duty",
        "groups" => "Group",
        "syllabuses" => "Syllabus",
        "activities" => "Activity",
        "calendarEvents" => "CalendarEvent",
        "attendances" => "Attendance",
        _ => return None,
    })
}

/// Swedish local time of an instant.
pub fn local_from_epoch_millis(millis: i64) -> NaiveDateTime {
    let utc = utc_from_epoch_millis(millis);
    // Try CET, then check: near the switch the other offset may be right.
    for offset in [1, 2] {
        let local = utc + Duration::hours(offset);
        if local_to_epoch_millis(local) == millis {
            return local;
        }
    }
    utc + Duration::hours(1)
}

fn utc_from_epoch_millis(millis: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.naive_utc())
        .unwrap_or_default()
}

/// An instant written as the dialect writes date-times inside items.
fn write_instant(out: &mut Vec<u8>, millis: i64, style: Timestamps) {
    match style {
        Timestamps::Offset => write_rfc3339_local(out, local_from_epoch_millis(millis)),
        Timestamps::LocalWithoutZone => write_wall_time(out, local_from_epoch_millis(millis)),
        Timestamps::UtcWithoutZone => write_wall_time(out, utc_from_epoch_millis(millis)),
    }
}

/// A Swedish local time written as the dialect writes date-times.
fn write_local(out: &mut Vec<u8>, local: NaiveDateTime, style: Timestamps) {
    match style {
        Timestamps::Offset => write_rfc3339_local(out, local),
        Timestamps::LocalWithoutZone => write_wall_time(out, local),
        Timestamps::UtcWithoutZone => {
            write_wall_time(out, utc_from_epoch_millis(local_to_epoch_millis(local)))
        }
    }
}

fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(25);
    write(&mut out);
    // Only ASCII is written.
    String::from_utf8(out).unwrap_or_default()
}

/// An instant as the dialect writes it, e.g. `2025-09-01T08:10:00+02:00`.
pub fn format_instant(millis: i64, style: Timestamps) -> String {
    text(|out| write_instant(out, millis, style))
}

/// A quoted instant.
fn instant(out: &mut Vec<u8>, millis: i64, style: Timestamps) {
    out.push(b'"');
    write_instant(out, millis, style);
    out.push(b'"');
}

/// A quoted local time.
fn time(out: &mut Vec<u8>, local: NaiveDateTime, style: Timestamps) {
    out.push(b'"');
    write_local(out, local, style);
    out.push(b'"');
}

/// [`meta`], written.
fn write_meta(out: &mut Vec<u8>, created: i64, modified: i64, style: Timestamps) {
    let mut o = Obj::start(out);
    instant(o.key("created"), created, style);
    instant(o.key("modified"), modified, style);
    o.end();
}

fn meta(created: i64, modified: i64, style: Timestamps) -> Value {
    json!({
        "created": format_instant(created, style),
        "modified": format_instant(modified, style),
    })
}

fn reference(id: &str) -> Value {
    json!({ "id": id })
}

fn date(d: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// A 12-digit civic number `YYYYMMDDNNNN` in the 10-digit form
/// `YYMMDD-NNNN`, with `+` for someone 100 or older on `today`.
pub fn ten_digit_civic(civic: &str, birth: NaiveDate, today: NaiveDate) -> String {
    let separator = if today.years_since(birth).is_some_and(|age| age >= 100) {
        '+'
    } else {
        '-'
    };
    match (civic.get(2..8), civic.get(8..)) {
        (Some(date), Some(serial)) if civic.len() == 12 => format!("{date}{separator}{serial}"),
        _ => civic.to_owned(),
    }
}

/// A page request.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub limit: usize,
    /// Where the previous page stopped, in storage order.
    pub cursor: usize,
    pub modified_after: Option<i64>,
    /// Attendance records only: `meta.created.after`.
    pub created_after: Option<i64>,
    /// Calendar events only: the `startTime` window, both ends inclusive
    /// (`startTime.onOrAfter`, `startTime.onOrBefore`).
    pub window: Option<(i64, i64)>,
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
        let mut end = self.storage_len(endpoint)?;
        let mut start = query.cursor.min(end);
        if query.repeat_last && start > 0 {
            start -= 1;
        }
        // Attendance records and lessons are stored in creation order and
        // settle within days: skip what cannot match the filter.
        if let (Some(after), 0) = (query.modified_after, query.cursor) {
            start = start.max(self.first_possibly_modified_after(endpoint, after - SETTLE_MILLIS));
        }
        let created_after = query.created_after.filter(|_| endpoint == "attendances");
        if let (Some(after), 0) = (created_after, query.cursor) {
            start = start.max(self.records.partition_point(|r| r.reported <= after));
        }
        // Lessons are stored day by day: a window's lessons lie between
        // the first lesson of its first local day and the last of its last.
        let window = match (endpoint, query.window) {
            ("calendarEvents", Some((from, to))) => {
                let (first, last) = (
                    local_from_epoch_millis(from).date(),
                    local_from_epoch_millis(to).date(),
                );
                start = start.max(self.lessons.partition_point(|l| l.date < first));
                end = end.min(self.lessons.partition_point(|l| l.date <= last));
                Some((from, to))
            }
            _ => None,
        };
        let mut emitted = 0;
        let mut i = start;
        while i < end && emitted < query.limit {
            if let Some(modified) = self.shown_modified(endpoint, i) {
                let in_window = window.is_none_or(|(from, to)| {
                    let t = local_to_epoch_millis(self.lessons[i].start_local());
                    from <= t && t <= to
                });
                let created = created_after
                    .is_none_or(|after| self.records.get(i).is_some_and(|r| r.reported > after));
                if in_window && created && query.modified_after.is_none_or(|after| modified > after)
                {
                    emit(i);
                    emitted += 1;
                }
            }
            i += 1;
        }
        Some((i < end).then_some(i))
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
        let style = self.config.vendor.dialect.timestamps;
        match endpoint {
            "calendarEvents" => {
                let Some(l) = self.lessons.get(i) else {
                    return false;
                };
                let mut o = Obj::start(out);
                o.reference("activity", &w.activities[l.activity as usize].id);
                o.bool("cancelled", l.cancelled);
                time(o.key("endTime"), l.end_local(), style);
                o.str("id", &l.id);
                write_meta(o.key("meta"), l.created, l.modified, style);
                time(o.key("startTime"), l.start_local(), style);
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
                write_meta(o.key("meta"), r.reported, r.modified, style);
                instant(o.key("reportedTimestamp"), r.reported, style);
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
        let dialect = &self.config.vendor.dialect;
        let style = dialect.timestamps;
        let meta = |created, modified| meta(created, modified, style);
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
                    "enrolments": p.enrolments.iter().enumerate().map(|(n, e)| {
                        let mut enrolment = json!({
                            "enroledAt": reference(&w.organisations[e.unit as usize].id),
                            "schoolType": if e.form == Form::Gr && e.school_year == 0 { "FKLASS" } else { e.form.school_type() },
                        });
                        let quality = &self.config.quality;
                        if !quality.without_school_year(self.config.seed, i) {
                            enrolment["schoolYear"] = json!(
                                if quality.implausible_school_year(self.config.seed, i) {
                                    crate::world::implausible_school_year(e)
                                } else {
                                    e.school_year
                                }
                            );
                        }
                        if n > 0 || !self.enrolment_without_start_date(i) {
                            enrolment["startDate"] = json!(date(e.start));
                        }
                        if let Some(end) = e.end {
                            enrolment["endDate"] = json!(date(end));
                        }
                        enrolment
                    }).collect::<Vec<_>>(),
                });
                if let Some(civic) = &p.civic {
                    let value = if dialect.civic_numbers_ten_digits {
                        ten_digit_civic(civic, p.birth, local_from_epoch_millis(self.now).date())
                    } else {
                        civic.clone()
                    };
                    v["civicNo"] = json!({ "value": value, "nationality": "SE" });
                }
                Some((p.modified, v))
            }
            "duties" => {
                let d = w.duties.get(i)?;
                if d.deleted.is_some() {
                    return None;
                }
                let mut v = json!({
                    "id": d.id,
                    "meta": meta(d.created, d.modified),
                    "person": reference(&w.persons[d.person as usize].id),
                    "dutyAt": reference(&w.organisations[d.unit as usize].id),
                    "signature": d.signature,
                    "dutyPercent": 100,
                    "startDate": date(d.start),
                });
                if !dialect.omit_unneeded_fields {
                    v["dutyRole"] = json!("Lärare");
                }
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
                });
                if !dialect.omit_unneeded_fields {
                    v["official"] = json!(true);
                }
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
                let mut v = json!({
                    "id": a.id,
                    "meta": meta(a.created, a.modified),
                    "displayName": a.name,
                    "startDate": date(a.start),
                    "endDate": date(if self.config.quality.ending_early(self.config.seed, i) {
                        crate::world::early_end(a)
                    } else {
                        a.end
                    }),
                    "activityType": "Undervisning",
                    "minutesPlanned": weekly * 36,
                    "groups": groups,
                    "teachers": a.teachers.iter().map(|t| {
                        let duty = &w.duties[t.duty as usize];
                        let mut teacher = json!({ "grader": true });
                        if dialect.teachers_as_persons {
                            teacher["person"] = reference(&w.persons[duty.person as usize].id);
                        } else {
                            teacher["duty"] = reference(&duty.id);
                        }
                        if let Some(start) = t.start {
                            teacher["startDate"] = json!(date(start));
                        }
                        if let Some(end) = t.end {
                            teacher["endDate"] = json!(date(end));
                        }
                        teacher
                    }).collect::<Vec<_>>(),
                    "organisation": reference(&w.organisations[a.unit as usize].id),
                });
                let syllabus = reference(&w.syllabuses[a.syllabus as usize].id);
                if dialect.subject_instead_of_syllabus {
                    v["subject"] = syllabus;
                } else {
                    v["syllabus"] = syllabus;
                }
                if !dialect.omit_unneeded_fields {
                    v["calendarEventsRequired"] = json!(true);
                }
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
                    "startTime": text(|out| write_local(out, l.start_local(), style)),
                    "endTime": text(|out| write_local(out, l.end_local(), style)),
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
                    "reportedTimestamp": format_instant(r.reported, style),
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

    /// Whether person `i`'s first enrolment is served without its
    /// `startDate` (`quality.enrolments_without_start_date`): drawn from
    /// the seed and the person, so that the world does not change.
    fn enrolment_without_start_date(&self, i: usize) -> bool {
        let rate = self.config.quality.enrolments_without_start_date;
        crate::config::Quality::drawn(rate, self.config.seed, 0xe4d0, i as u64)
    }

    /// `/deletedEntities`: what the vendor announces as deleted after an
    /// instant, at most `limit` deletions from storage position `cursor`
    /// on. Standard: `{"data": {"duties": [ids], ...}, "pageToken": ...}`,
    /// grouped by endpoint, with `token` making the next page's token from
    /// its cursor. With [`Dialect::flat_deleted_entities`]: a top-level
    /// array `[{"entityType": "Duty", "id": ..., "deletedAt": ...}]` (the
    /// server offers no paging then).
    pub fn deleted_page(
        &self,
        after: Option<i64>,
        cursor: usize,
        limit: usize,
        token: impl Fn(usize) -> String,
    ) -> Value {
        let dialect: &Dialect = &self.config.vendor.dialect;
        // Deletions are stored in time order.
        let start = match after {
            Some(a) => cursor.max(self.deletions.partition_point(|d| d.at <= a)),
            None => cursor,
        }
        .min(self.deletions.len());
        let end = start.saturating_add(limit).min(self.deletions.len());
        let page = &self.deletions[start..end];
        if dialect.flat_deleted_entities {
            return Value::Array(
                page.iter()
                    .map(|d| {
                        json!({
                            "entityType": entity_type(d.entity).unwrap_or(d.entity),
                            "id": d.id,
                            "deletedAt": format_instant(d.at, dialect.timestamps),
                        })
                    })
                    .collect(),
            );
        }
        let mut data = Map::new();
        for d in page {
            if let Some(list) = data
                .entry(d.entity.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            {
                list.push(json!(d.id));
            }
        }
        let next = (end < self.deletions.len()).then(|| token(end));
        json!({ "data": data, "pageToken": next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{local_to_epoch_millis, rfc3339_local as rfc3339};
    use chrono::Datelike;

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

    /// Every rendering switch on or off, with each timestamp form.
    fn dialects() -> Vec<(Dialect, f64)> {
        let mut out = Vec::new();
        for timestamps in [
            Timestamps::Offset,
            Timestamps::UtcWithoutZone,
            Timestamps::LocalWithoutZone,
        ] {
            for on in [false, true] {
                let dialect = Dialect {
                    timestamps,
                    civic_numbers_ten_digits: on,
                    teachers_as_persons: on,
                    subject_instead_of_syllabus: on,
                    omit_unneeded_fields: on,
                    flat_deleted_entities: on,
                    filters_with_page_token: on,
                    unsupported_endpoints: Vec::new(),
                };
                out.push((dialect, if on { 0.3 } else { 0.0 }));
            }
        }
        out
    }

    #[test]
    #[allow(clippy::expect_used)]
    fn written_items_are_what_serde_json_writes_for_the_rendered_ones() {
        let mut sim = Simulation::new(crate::SimConfig::default(), None).expect("simulation");
        let first = sim.world.year.bounds().0;
        sim.advance_to(first + chrono::Duration::days(70))
            .expect("advance");
        for (dialect, enrolments_without_start_date) in dialects() {
            sim.config.vendor.dialect = dialect.clone();
            sim.config.quality.enrolments_without_start_date = enrolments_without_start_date;
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
                        "{endpoint} {i} {dialect:?}"
                    );
                }
                assert!(shown > 0, "{endpoint}: nothing shown");
            }
        }
    }

    #[test]
    #[allow(clippy::expect_used)]
    fn dialects_render_as_documented() {
        let mut sim = Simulation::new(crate::SimConfig::default(), None).expect("simulation");
        let first = sim.world.year.bounds().0;
        sim.advance_to(first + chrono::Duration::days(63))
            .expect("advance");
        let standard: Vec<Vec<Value>> = ENDPOINTS
            .iter()
            .map(|e| {
                (0..sim.storage_len(e).unwrap_or(0))
                    .filter_map(|i| sim.render(e, i).map(|(_, v)| v))
                    .collect()
            })
            .collect();
        let lesson = (0..sim.lessons.len())
            .find(|i| {
                sim.lessons[*i].date.month() == 9 && sim.render("calendarEvents", *i).is_some()
            })
            .expect("a September lesson");
        let event = sim.render("calendarEvents", lesson).expect("shown").1;
        let start = sim.lessons[lesson].start_local();
        assert_eq!(event["startTime"], rfc3339(start));
        sim.config.vendor.dialect.timestamps = Timestamps::UtcWithoutZone;
        let event = sim.render("calendarEvents", lesson).expect("shown").1;
        let utc = start - chrono::Duration::hours(2);
        assert_eq!(
            event["startTime"],
            utc.format("%Y-%m-%dT%H:%M:%S").to_string()
        );
        sim.config.vendor.dialect.timestamps = Timestamps::LocalWithoutZone;
        let event = sim.render("calendarEvents", lesson).expect("shown").1;
        assert_eq!(
            event["startTime"],
            start.format("%Y-%m-%dT%H:%M:%S").to_string()
        );
        let created = event["meta"]["created"].as_str().expect("created");
        assert_eq!(created.len(), 19, "{created}");

        sim.config.vendor.dialect = Dialect {
            civic_numbers_ten_digits: true,
            teachers_as_persons: true,
            subject_instead_of_syllabus: true,
            omit_unneeded_fields: true,
            ..Dialect::default()
        };
        sim.config.quality.enrolments_without_start_date = 1.0;
        let endpoint_items = |endpoint: &str| -> Vec<Value> {
            (0..sim.storage_len(endpoint).unwrap_or(0))
                .filter_map(|i| sim.render(endpoint, i).map(|(_, v)| v))
                .collect()
        };
        let index = |endpoint: &str| ENDPOINTS.iter().position(|e| *e == endpoint).unwrap_or(0);
        for (p, before) in endpoint_items("persons")
            .iter()
            .zip(&standard[index("persons")])
        {
            if let Some(twelve) = before["civicNo"]["value"].as_str() {
                assert_eq!(
                    p["civicNo"]["value"],
                    format!("{}-{}", &twelve[2..8], &twelve[8..])
                );
            }
            if let Some(enrolments) = p["enrolments"].as_array() {
                if let Some(first) = enrolments.first() {
                    assert!(first.get("startDate").is_none());
                }
            }
        }
        for (a, before) in endpoint_items("activities")
            .iter()
            .zip(&standard[index("activities")])
        {
            assert_eq!(a["subject"], before["syllabus"]);
            assert!(a.get("syllabus").is_none() && a.get("calendarEventsRequired").is_none());
            for (t, u) in a["teachers"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(before["teachers"].as_array().into_iter().flatten())
            {
                let duty = sim
                    .world
                    .duties
                    .iter()
                    .find(|d| u["duty"]["id"] == d.id.as_str())
                    .expect("duty");
                assert_eq!(
                    t["person"]["id"],
                    sim.world.persons[duty.person as usize].id.as_str()
                );
                assert!(t.get("duty").is_none());
                assert_eq!(t["grader"], u["grader"]);
            }
        }
        assert!(endpoint_items("syllabuses")
            .iter()
            .all(|s| s.get("official").is_none()));
        assert!(endpoint_items("duties")
            .iter()
            .all(|d| d.get("dutyRole").is_none()));
    }

    #[test]
    fn ten_digit_civic_numbers_mark_centenarians() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        let today = day(2025, 9, 1);
        assert_eq!(
            ten_digit_civic("201203041234", day(2012, 3, 4), today),
            "120304-1234"
        );
        assert_eq!(
            ten_digit_civic("192509011234", day(1925, 9, 1), today),
            "250901+1234"
        );
        assert_eq!(
            ten_digit_civic("192509021234", day(1925, 9, 2), today),
            "250902-1234"
        );
    }
}
