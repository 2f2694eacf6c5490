//! The processor's logic, without Kafka: a change event and the state give
//! the history records; the vendor's clock passing an instant gives the
//! weekly snapshots due by then. Pure and deterministic: the outputs are a
//! function of each entity's sequence of events and of the heartbeat
//! sequence, never of how the input partitions interleaved, of wall-clock
//! time or of map order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skolflode_schemas::processed::{
    AttendanceRow, HistoryEdge, HistoryVersion, Relation, TeacherStudentRow, UnitWeekCoverage,
    WeekdayAttendance,
};
use skolflode_schemas::records::QualityFinding;
use skolflode_schemas::TimestampMillis;

use super::input::Incoming;
use super::model::{Enrolled, Entity, Fact, Kind, Repeat, Version};
use super::rows::{self, Found, UnitTotals, WeekRows};
use super::store::{self, Disk, Entities, StoreError};
use super::time;

/// What the operator needs to know of the configuration.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// How long after a week's end (by the vendor's clock) it is closed.
    pub grace_millis: i64,
    /// Connection → the register's `source`; by default the producer's
    /// adapter name.
    pub sources: BTreeMap<String, String>,
    /// Only these connections are processed; all when empty.
    pub connections: BTreeSet<String>,
}

/// Which closed weeks a recorded change may alter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// One week's lessons.
    Week(String),
    /// Every week ending after this instant (a teacher or group change
    /// valid from then).
    From(i64),
    /// Weeks that were closed with references leading nowhere (a new
    /// entity may resolve them).
    Dangling,
}

/// The closed weeks that changes recorded at one instant may alter. They
/// wait until the vendor's clock, as the heartbeats tell it, has passed
/// that instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirty {
    pub weeks: BTreeSet<String>,
    /// The earliest [`Scope::From`].
    pub from: Option<i64>,
    pub dangling: bool,
}

impl Dirty {
    fn add(&mut self, scope: Scope) {
        match scope {
            Scope::Week(w) => {
                self.weeks.insert(w);
            }
            Scope::From(f) => self.from = Some(self.from.map_or(f, |g| g.min(f))),
            Scope::Dangling => self.dangling = true,
        }
    }

    fn merge(&mut self, other: Dirty) {
        self.weeks.extend(other.weeks);
        if let Some(f) = other.from {
            self.add(Scope::From(f));
        }
        self.dangling |= other.dangling;
    }

    fn touches(&self, week: &str, end: i64, emitted: &Emitted) -> bool {
        self.weeks.contains(week)
            || self.from.is_some_and(|f| end > f)
            || (self.dangling && emitted.has_dangling())
    }
}

/// What was last published of a week.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emitted {
    /// 0 while every computation of the week gave no rows.
    pub revision: i32,
    pub digest: String,
    /// The rules' findings open in the week: published when first found,
    /// and again as resolved when a computation no longer finds them.
    pub findings: BTreeMap<Found, OpenFinding>,
}

impl Emitted {
    /// Whether a reference led nowhere when the week was computed: a new
    /// entity may resolve it.
    fn has_dangling(&self) -> bool {
        self.findings
            .keys()
            .any(|f| f.rule == skolflode_schemas::rules::DANGLING_REFERENCE.id)
    }
}

/// A finding still open in a week.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFinding {
    /// The vendor clock when the rule first found it.
    pub first_seen: i64,
    pub school_unit_code: String,
}

/// The most silent changes (`MODIFIED_NOT_UPDATED`) listed for one week
/// of a connection: enough to show a vendor the pattern, bounded for a
/// vendor that shows it on everything.
pub const SILENT_PER_WEEK: usize = 1_000;

/// Per-connection bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantMeta {
    /// The producer's adapter name, from the first event.
    pub vendor: String,
    /// The vendor's clock as of the last heartbeat applied.
    pub watermark: i64,
    /// Kept as changelog entries of their own (a municipality's weeks of
    /// findings outgrow a Kafka record).
    #[serde(skip)]
    pub weeks: BTreeMap<String, Emitted>,
    /// By recording instant.
    pub dirty: BTreeMap<i64, Dirty>,
    /// Versions recorded before the watermark but applied after it passed
    /// (a clock that broke the heartbeats' promise): not yet published.
    /// Every other version recorded by the watermark is.
    #[serde(default)]
    pub late: BTreeSet<(Kind, String, usize)>,
    /// Changes whose `meta.modified` stayed as it was
    /// (`MODIFIED_NOT_UPDATED`), by the week they were recorded in, at most
    /// [`SILENT_PER_WEEK`] a week. Kept as changelog entries of their own,
    /// a week each: a vendor that never moves `meta.modified` gives one
    /// for nearly every change.
    #[serde(skip)]
    pub silent: BTreeMap<String, BTreeSet<(Kind, String)>>,
}

/// Everything kept of one connection.
#[derive(Debug, Default)]
pub struct Tenant {
    pub meta: TenantMeta,
    entities: Entities,
    /// Entities changed since the state was last written out, and whether
    /// `meta` did.
    changed: FxHashSet<(Kind, String)>,
    meta_changed: bool,
    /// Weeks whose [`Emitted`] changed since the state was written out.
    weeks_changed: BTreeSet<String>,
    /// Weeks whose silent changes did.
    silent_changed: BTreeSet<String>,
    /// Versions kept but not yet published to history, by recording
    /// instant (then entity and version index, sorted when published):
    /// rebuilt on restore from the versions recorded after the watermark.
    pending: BTreeMap<i64, Vec<(Kind, String, usize)>>,
}

impl Tenant {
    fn new(connection: &str, disk: Option<Arc<Disk>>) -> Self {
        Self {
            entities: Entities::new(connection, disk),
            ..Self::default()
        }
    }

    /// The connection's entities.
    pub fn store(&self) -> &Entities {
        &self.entities
    }

    /// The week of a lesson as recorded by `known`.
    fn week_of_lesson(&self, lesson: &str, known: i64) -> Option<String> {
        self.entities
            .read(Kind::Lesson, lesson, |entity| {
                entity
                    .versions
                    .iter()
                    .rev()
                    .filter(|v| v.recorded <= known)
                    .find_map(|v| match &v.fact {
                        Some(Fact::Lesson { start, .. }) => time::week_of(*start),
                        _ => None,
                    })
            })
            .flatten()
    }
}

/// A key of the state store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreKey {
    Entity {
        connection: String,
        kind: Kind,
        id: String,
    },
    Tenant {
        connection: String,
    },
    /// What was last published of one week of a connection.
    Week {
        connection: String,
        week: String,
    },
    /// The silent changes recorded in one week of a connection.
    Silent {
        connection: String,
        week: String,
    },
}

const SEP: char = '\u{1f}';

impl StoreKey {
    /// The changelog key text.
    pub fn encode(&self) -> String {
        match self {
            StoreKey::Entity {
                connection,
                kind,
                id,
            } => format!("e{SEP}{connection}{SEP}{}{SEP}{id}", kind.endpoint()),
            StoreKey::Tenant { connection } => format!("t{SEP}{connection}"),
            StoreKey::Week { connection, week } => format!("w{SEP}{connection}{SEP}{week}"),
            StoreKey::Silent { connection, week } => format!("s{SEP}{connection}{SEP}{week}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, SEP);
        match parts.next()? {
            "e" => {
                let connection = parts.next()?.to_owned();
                let endpoint = parts.next()?;
                let kind = Kind::ALL.into_iter().find(|k| k.endpoint() == endpoint)?;
                let id = parts.next()?.to_owned();
                Some(StoreKey::Entity {
                    connection,
                    kind,
                    id,
                })
            }
            "t" => Some(StoreKey::Tenant {
                connection: parts.next()?.to_owned(),
            }),
            "w" => Some(StoreKey::Week {
                connection: parts.next()?.to_owned(),
                week: parts.next()?.to_owned(),
            }),
            "s" => Some(StoreKey::Silent {
                connection: parts.next()?.to_owned(),
                week: parts.next()?.to_owned(),
            }),
            _ => None,
        }
    }
}

/// One week's revision, ready to publish.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub connection: String,
    pub week: String,
    pub revision: i32,
    pub teacher_student: Vec<TeacherStudentRow>,
    pub attendance: Vec<AttendanceRow>,
    pub coverage: Vec<UnitWeekCoverage>,
}

/// What applying an event or advancing the clock gives.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// A history record for the history topic of the entity's kind.
    History(Kind, HistoryVersion),
    Snapshot(Snapshot),
    Finding(QualityFinding),
}

/// Where the operator's outputs go, one by one as they are made, so that
/// a clock step over a long backlog never holds all of them at once.
pub trait Emit {
    fn emit(&mut self, output: Output);
}

impl Emit for Vec<Output> {
    fn emit(&mut self, output: Output) {
        self.push(output);
    }
}

/// What became of an incoming change event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Kept,
    /// A connection not processed here.
    Skipped,
    Repeat(Repeat),
}

/// The operator and its state.
#[derive(Debug, Default)]
pub struct Operator {
    settings: Settings,
    tenants: BTreeMap<String, Tenant>,
    /// Where entities go once memory holds more than `budget` bytes of
    /// them; without one, everything stays in memory.
    disk: Option<Arc<Disk>>,
    budget: usize,
    /// Bytes that stayed in memory at the last trim.
    kept: usize,
}

fn edge(relation: Relation, target: &str) -> HistoryEdge {
    HistoryEdge {
        relation,
        target_id: target.to_owned(),
        ..HistoryEdge::default()
    }
}

fn day_bounds(
    start: Option<i32>,
    end: Option<i32>,
) -> (Option<TimestampMillis>, Option<TimestampMillis>) {
    (
        start.and_then(time::day_start).map(TimestampMillis),
        end.and_then(|e| time::day_start(e.saturating_add(1)))
            .map(TimestampMillis),
    )
}

/// The relationships a fact states, with their own valid times.
fn edges(fact: &Fact) -> Vec<HistoryEdge> {
    match fact {
        Fact::Organisation { .. } | Fact::Person { .. } | Fact::Syllabus { .. } => Vec::new(),
        Fact::Duty { person, duty_at } => {
            let mut out = vec![edge(Relation::DutySchoolUnit, duty_at)];
            if let Some(p) = person {
                out.push(edge(Relation::DutyPerson, p));
            }
            out
        }
        Fact::Group { members } => members
            .iter()
            .map(|m| {
                let (valid_from, valid_to) = day_bounds(m.start, m.end);
                HistoryEdge {
                    valid_from,
                    valid_to,
                    ..edge(Relation::GroupMember, &m.person)
                }
            })
            .collect(),
        Fact::Activity {
            organisation,
            syllabus,
            groups,
            teachers,
            ..
        } => {
            let mut out = vec![edge(Relation::ActivitySchoolUnit, organisation)];
            out.extend(syllabus.iter().map(|s| edge(Relation::ActivitySyllabus, s)));
            out.extend(groups.iter().map(|g| edge(Relation::ActivityGroup, g)));
            out.extend(teachers.iter().map(|t| {
                let (valid_from, valid_to) = day_bounds(t.start, t.end);
                HistoryEdge {
                    valid_from,
                    valid_to,
                    grader: Some(t.grader),
                    ..edge(Relation::ActivityTeacher, &t.duty)
                }
            }));
            out
        }
        Fact::Lesson {
            activity,
            start,
            end,
            absent,
            ..
        } => {
            let during = |e: HistoryEdge| HistoryEdge {
                valid_from: Some(TimestampMillis(*start)),
                valid_to: Some(TimestampMillis(*end)),
                ..e
            };
            let mut out = vec![during(edge(Relation::LessonActivity, activity))];
            out.extend(absent.iter().map(|p| {
                during(HistoryEdge {
                    participates: Some(false),
                    ..edge(Relation::LessonStudentException, p)
                })
            }));
            out
        }
        Fact::Attendance {
            lesson, student, ..
        } => vec![
            edge(Relation::AttendanceLesson, lesson),
            edge(Relation::AttendanceStudent, student),
        ],
    }
}

/// Publish what the rules found in a week's computation that the one
/// before did not (opened now), and what they no longer find (resolved
/// now); the week's open findings after it.
fn findings_of(
    connection: &str,
    week: &str,
    source: &str,
    now: i64,
    before: Option<&BTreeMap<Found, OpenFinding>>,
    rows: &rows::WeekRows,
    out: &mut impl Emit,
) -> BTreeMap<Found, OpenFinding> {
    let event = |found: &Found, open: &OpenFinding, resolved: Option<i64>| {
        let severity = skolflode_schemas::rules::rule(&found.rule).map(|r| r.severity.as_str());
        QualityFinding {
            connection: connection.to_owned(),
            endpoint: found.kind.endpoint().to_owned(),
            entity_id: found.entity_id.clone(),
            field: found.field.clone(),
            kind: found.rule.clone(),
            observed_at: TimestampMillis(now),
            rule: Some(found.rule.clone()),
            severity: severity.map(str::to_owned),
            school_unit_code: Some(open.school_unit_code.clone()),
            vendor: Some(source.to_owned()),
            week: Some(week.to_owned()),
            first_seen: Some(TimestampMillis(open.first_seen)),
            resolved_at: resolved.map(TimestampMillis),
        }
    };
    let mut open = BTreeMap::new();
    for (found, unit) in &rows.findings {
        match before.and_then(|b| b.get(found)) {
            Some(was) => {
                open.insert(found.clone(), was.clone());
            }
            None => {
                let now_open = OpenFinding {
                    first_seen: now,
                    school_unit_code: unit.clone(),
                };
                out.emit(Output::Finding(event(found, &now_open, None)));
                open.insert(found.clone(), now_open);
            }
        }
    }
    for (found, was) in before.into_iter().flatten() {
        if !open.contains_key(found) {
            out.emit(Output::Finding(event(found, was, Some(now))));
        }
    }
    open
}

/// The first instant on which two lists of enrolments differ: an
/// enrolment only ended (a school move) changes the days after its old or
/// new end, whichever comes first; one added, removed or otherwise changed,
/// the days from its start.
fn enrolments_changed_from(before: &[Enrolled], after: &[Enrolled]) -> i64 {
    let same_but_end = |a: &Enrolled, b: &Enrolled| {
        Enrolled {
            end: a.end,
            ..b.clone()
        } == *a
    };
    let mut from = i64::MAX;
    for (these, those) in [(before, after), (after, before)] {
        for e in these.iter().filter(|e| !those.contains(e)) {
            let day = match those.iter().find(|o| same_but_end(e, o)) {
                Some(o) => match (e.end, o.end) {
                    (Some(a), Some(b)) => Some(a.min(b).saturating_add(1)),
                    (Some(a), None) | (None, Some(a)) => Some(a.saturating_add(1)),
                    (None, None) => e.start,
                },
                None => e.start,
            };
            from = from.min(day.and_then(time::day_start).unwrap_or(i64::MIN));
        }
    }
    from
}

/// Which closed weeks a new version may change, given the one before.
fn scope(kind: Kind, before: Option<&Version>, after: &Version) -> Vec<Scope> {
    let fact = after.fact.as_ref();
    let prior = before.and_then(|v| v.fact.as_ref());
    match kind {
        Kind::Lesson => {
            let mut weeks: Vec<Scope> = [prior, fact]
                .into_iter()
                .flatten()
                .filter_map(|f| match f {
                    Fact::Lesson { start, .. } => time::week_of(*start).map(Scope::Week),
                    _ => None,
                })
                .collect();
            weeks.dedup();
            weeks
        }
        // The week of a report is its lesson's, looked up when the clock
        // passes the report's recording (`publish_history`): by then every
        // change recorded before it is in, the lesson included.
        Kind::Attendance => Vec::new(),
        Kind::Activity | Kind::Group => {
            if before.is_none() {
                return vec![Scope::Dangling];
            }
            let dates = |f: Option<&Fact>| match f {
                Some(Fact::Activity { start, end, .. }) => Some((*start, *end)),
                _ => None,
            };
            if dates(prior) != dates(fact) {
                // Lessons are judged by the activity's dates as last known.
                return vec![Scope::From(i64::MIN)];
            }
            // A lesson takes the version valid at its time, so a change
            // reaches only lessons from its valid time on: a back-dated
            // assignment recorded later does not rewrite what was recorded
            // before it.
            vec![Scope::From(after.valid_from)]
        }
        Kind::Person => match (prior, fact) {
            (
                Some(Fact::Person {
                    person_key: a,
                    birth_year: born_a,
                    enrolments: ea,
                }),
                Some(Fact::Person {
                    person_key: b,
                    birth_year: born_b,
                    enrolments: eb,
                }),
            ) => {
                if a != b || born_a != born_b {
                    vec![Scope::From(i64::MIN)]
                } else if ea != eb {
                    // The pupil rules read the enrolments in force on a
                    // lesson's day: weeks before every changed one stay.
                    vec![Scope::From(enrolments_changed_from(ea, eb))]
                } else {
                    Vec::new()
                }
            }
            (_, None) => Vec::new(),
            (None, Some(_)) => vec![Scope::Dangling],
            (Some(_), Some(_)) => vec![Scope::From(i64::MIN)],
        },
        Kind::Duty | Kind::Organisation | Kind::Syllabus => {
            // Only what the rows read of these matters: a duty's person, a
            // school-unit code, a subject code.
            let same = match (prior, fact) {
                (Some(Fact::Duty { person: a, .. }), Some(Fact::Duty { person: b, .. })) => a == b,
                (Some(a), Some(b)) => a == b,
                (_, None) => true,
                (None, Some(_)) => return vec![Scope::Dangling],
            };
            if same {
                Vec::new()
            } else {
                vec![Scope::From(i64::MIN)]
            }
        }
    }
}

impl Operator {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// An operator whose entities beyond `budget` bytes of memory go to
    /// `disk`.
    pub fn with_disk(settings: Settings, disk: Disk, budget: usize) -> Self {
        Self {
            settings,
            disk: Some(Arc::new(disk)),
            budget,
            ..Self::default()
        }
    }

    /// Entities held, for the state-size metric.
    pub fn entities(&self) -> usize {
        self.tenants.values().map(|t| t.entities.count()).sum()
    }

    /// Findings open in the weeks computed so far, by rule and vendor
    /// (every rule of the processor for every vendor, zero included, so
    /// that a gauge falls back to zero when its last finding resolves).
    pub fn open_findings(&self) -> BTreeMap<(&'static str, String), i64> {
        let mut open = BTreeMap::new();
        for (name, tenant) in &self.tenants {
            let vendor = self
                .settings
                .sources
                .get(name)
                .unwrap_or(&tenant.meta.vendor);
            for rule in skolflode_schemas::rules::RULES {
                if rule.evaluated == "processor" {
                    open.entry((rule.id, vendor.clone())).or_insert(0);
                }
            }
            for emitted in tenant.meta.weeks.values() {
                for found in emitted.findings.keys() {
                    if let Some(rule) = skolflode_schemas::rules::rule(&found.rule) {
                        *open.entry((rule.id, vendor.clone())).or_insert(0) += 1;
                    }
                }
            }
        }
        open
    }

    /// Estimated bytes of state in memory.
    pub fn memory_bytes(&self) -> usize {
        self.tenants.values().map(|t| t.entities.bytes()).sum()
    }

    /// Bytes of the disk store.
    pub fn disk_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.disk_bytes())
    }

    /// Why a read of the disk store failed, if one did: what was computed
    /// since may lack entities, so it must not be committed.
    pub fn take_failure(&mut self) -> Option<StoreError> {
        self.tenants
            .values_mut()
            .find_map(|t| t.entities.take_failure())
    }

    /// After a commit: when the state in memory is over budget, write it
    /// to disk and empty memory. Gives whether it did.
    pub fn trim(&mut self) -> Result<bool, StoreError> {
        if self.disk.is_none() {
            return Ok(false);
        }
        if let Some(failure) = self.take_failure() {
            return Err(failure);
        }
        if !self.over_budget() || self.tenants.values().any(|t| !t.changed.is_empty()) {
            for tenant in self.tenants.values_mut() {
                tenant.entities.clear_stash();
            }
            return Ok(false);
        }
        let tenants = self.tenants.len().max(1);
        for tenant in self.tenants.values_mut() {
            // Versions not yet published are read again when the clock
            // passes them: their entities stay, if they take no more than
            // half the budget (during a backlog they can be most of the
            // state; then they are read back from disk).
            let pending: usize = tenant.pending.values().map(Vec::len).sum();
            let held = tenant.entities.count_in_memory().max(1);
            let room = self.budget / 2 / tenants;
            if pending > 0 && pending.saturating_mul(tenant.entities.bytes() / held) <= room {
                let pending: FxHashSet<(Kind, &str)> = tenant
                    .pending
                    .values()
                    .flatten()
                    .map(|(kind, id, _)| (*kind, id.as_str()))
                    .collect();
                let keep = |kind: Kind, id: &str| pending.contains(&(kind, id));
                tenant.entities.trim(0, Some(&keep))?;
            } else {
                tenant.entities.trim(0, None)?;
            }
        }
        self.kept = self.memory_bytes();
        Ok(true)
    }

    /// Whether memory has grown past the budget by enough for a trim:
    /// what stayed at the last trim does not count, or a trim that could
    /// free only a little would run at every commit.
    fn over_budget(&self) -> bool {
        self.disk.is_some()
            && self.memory_bytes() > self.budget.max(self.kept.saturating_add(self.budget / 4))
    }

    /// The watermark of each connection.
    pub fn watermarks(&self) -> impl Iterator<Item = (&str, i64)> {
        self.tenants
            .iter()
            .map(|(c, t)| (c.as_str(), t.meta.watermark))
    }

    /// Whether a connection is processed at all.
    pub fn wants(&self, connection: &str) -> bool {
        self.settings.connections.is_empty() || self.settings.connections.contains(connection)
    }

    /// Apply one change event of `kind` for `connection`'s entity `id`.
    pub fn apply(
        &mut self,
        kind: Kind,
        connection: &str,
        id: &str,
        incoming: Incoming,
    ) -> Result<Applied, StoreError> {
        if !self.wants(connection) {
            return Ok(Applied::Skipped);
        }
        let disk = &self.disk;
        let tenant = self
            .tenants
            .entry(connection.to_owned())
            .or_insert_with(|| Tenant::new(connection, disk.clone()));
        if tenant.meta.vendor.is_empty() {
            tenant.meta.vendor = incoming.vendor.clone();
            tenant.meta_changed = true;
        }
        let entity = tenant.entities.entry(kind, id)?;
        if let Some(repeat) = entity.repeat(&incoming.event_id, incoming.content_hash.as_deref()) {
            return Ok(Applied::Repeat(repeat));
        }
        // Recorded intervals never run backwards, even when the vendor's
        // clock does.
        let recorded = entity
            .versions
            .last()
            .map_or(incoming.recorded, |v| v.recorded.max(incoming.recorded));
        let silent = entity.versions.last().is_some_and(|last| {
            last.fact.is_some()
                && incoming.fact.is_some()
                && last.modified.is_some()
                && last.modified == incoming.modified
        });
        let version = Version {
            recorded,
            valid_from: entity.valid_from(recorded, incoming.modified),
            modified: incoming.modified,
            event_id: incoming.event_id,
            content_hash: incoming.content_hash,
            fact: incoming.fact,
        };
        let mut scopes = scope(kind, entity.versions.last(), &version);
        let silent = silent.then(|| time::week_of(recorded)).flatten();
        if let Some(week) = &silent {
            scopes.push(Scope::Week(week.clone()));
        }
        let index = entity.versions.len();
        let first = entity.versions.first().map_or(recorded, |v| v.recorded);
        let indexed = Entities::indexed(kind, version.fact.as_ref());
        let weight = store::weight(&version);
        // Most entities have one version or a few: a vector's first growth
        // makes room for four, which for a report doubled its memory.
        entity.versions.reserve_exact(1);
        entity.versions.push(version);
        tenant.entities.grew(weight);
        tenant.entities.index(indexed, id, first);
        if let Some(week) = silent {
            let in_week = tenant.meta.silent.entry(week.clone()).or_default();
            if in_week.len() < SILENT_PER_WEEK && in_week.insert((kind, id.to_owned())) {
                tenant.silent_changed.insert(week);
            }
        }
        if !scopes.is_empty() {
            let dirty = tenant.meta.dirty.entry(recorded).or_default();
            for scope in scopes {
                dirty.add(scope);
            }
            tenant.meta_changed = true;
        }
        if recorded <= tenant.meta.watermark {
            tenant.meta.late.insert((kind, id.to_owned(), index));
            tenant.meta_changed = true;
        }
        tenant
            .pending
            .entry(recorded)
            .or_default()
            .push((kind, id.to_owned(), index));
        tenant.changed.insert((kind, id.to_owned()));
        Ok(Applied::Kept)
    }

    /// The vendor's clock for `connection` has passed `now`, and every
    /// change recorded by then has been applied: close the weeks due and
    /// re-publish closed weeks that changes recorded by then altered.
    pub fn advance(&mut self, connection: &str, now: i64, out: &mut impl Emit) {
        let Some(tenant) = self.tenants.get_mut(connection) else {
            return;
        };
        if now < tenant.meta.watermark {
            return;
        }
        tenant.meta.watermark = now;
        tenant.meta_changed = true;
        let reported = publish_history(connection, tenant, now, out);
        let waiting = match now.checked_add(1) {
            Some(after) => tenant.meta.dirty.split_off(&after),
            None => BTreeMap::new(),
        };
        let mut due = Dirty::default();
        for (_, d) in std::mem::replace(&mut tenant.meta.dirty, waiting) {
            due.merge(d);
        }
        for lesson in reported {
            if let Some(week) = tenant.week_of_lesson(&lesson, now) {
                due.weeks.insert(week);
            }
        }
        let grace = self.settings.grace_millis;
        let mut weeks: BTreeSet<String> = BTreeSet::new();
        // Weeks with silent changes are closed even without lessons.
        let silent = tenant.meta.silent.keys().map(|w| (w, i64::MIN));
        for (week, first_recorded) in tenant.entities.weeks().chain(silent) {
            let Some(end) = time::week_end(week) else {
                continue;
            };
            if end.saturating_add(grace) > now {
                continue;
            }
            let touched = match tenant.meta.weeks.get(week) {
                None => true,
                Some(emitted) => due.touches(week, end, emitted),
            };
            // A week none of whose lessons was recorded by now is not
            // there yet (only read ahead of the clock): computing it would
            // depend on how far ahead the input was read.
            if touched && first_recorded <= now {
                weeks.insert(week.clone());
            }
        }
        let source = self
            .settings
            .sources
            .get(connection)
            .cloned()
            .unwrap_or_else(|| tenant.meta.vendor.clone());
        for week in weeks {
            let mut rows = rows::compute(tenant, &week, now);
            rows::silent_changes(tenant, &week, now, &mut rows);
            let digest = digest(&rows);
            let previous = tenant.meta.weeks.get(&week);
            let revision = previous.map_or(0, |e| e.revision);
            let unchanged = match previous {
                Some(e) => e.digest == digest,
                None => {
                    rows.teacher_student.is_empty()
                        && rows.attendance.is_empty()
                        && rows.coverage.is_empty()
                }
            };
            let revision = if unchanged { revision } else { revision + 1 };
            let before = previous.map(|e| &e.findings);
            let findings = findings_of(connection, &week, &source, now, before, &rows, out);
            if !unchanged {
                out.emit(Output::Snapshot(snapshot(
                    connection, &week, revision, &source, &rows,
                )));
            }
            tenant.weeks_changed.insert(week.clone());
            tenant.meta.weeks.insert(
                week,
                Emitted {
                    revision,
                    digest,
                    findings,
                },
            );
        }
    }

    /// The store entries changed since the last call, with their values,
    /// in key order: what the transaction must write to the changelog.
    pub fn take_changed(&mut self) -> Result<Vec<(String, Vec<u8>)>, postcard::Error> {
        let mut out = Vec::new();
        // A trim will follow the commit: it writes the same encodings.
        let stash = self.over_budget();
        for (connection, tenant) in &mut self.tenants {
            tenant.entities.clear_stash();
            let mut changed: Vec<(Kind, String)> = tenant.changed.drain().collect();
            changed.sort_unstable();
            for (kind, id) in changed {
                let Some(entity) = tenant.entities.changed(kind, &id) else {
                    continue;
                };
                let value = postcard::to_stdvec(entity)?;
                if stash {
                    tenant.entities.stash(kind, &id, &value);
                }
                let key = StoreKey::Entity {
                    connection: connection.clone(),
                    kind,
                    id,
                };
                out.push((key.encode(), value));
            }
            if std::mem::take(&mut tenant.meta_changed) {
                let key = StoreKey::Tenant {
                    connection: connection.clone(),
                };
                out.push((key.encode(), postcard::to_stdvec(&tenant.meta)?));
            }
            for week in std::mem::take(&mut tenant.weeks_changed) {
                let Some(emitted) = tenant.meta.weeks.get(&week) else {
                    continue;
                };
                let value = postcard::to_stdvec(emitted)?;
                let key = StoreKey::Week {
                    connection: connection.clone(),
                    week,
                };
                out.push((key.encode(), value));
            }
            for week in std::mem::take(&mut tenant.silent_changed) {
                let Some(changes) = tenant.meta.silent.get(&week) else {
                    continue;
                };
                let value = postcard::to_stdvec(changes)?;
                let key = StoreKey::Silent {
                    connection: connection.clone(),
                    week,
                };
                out.push((key.encode(), value));
            }
        }
        Ok(out)
    }

    /// Put back one changelog entry (on start, before any input), written
    /// in `format`; [`Operator::restored`] when all are in.
    pub fn restore(&mut self, key: &str, format: &str, value: &[u8]) -> Result<(), RestoreError> {
        let key = StoreKey::decode(key)
            .ok_or_else(|| RestoreError::Key(key.escape_debug().to_string()))?;
        match key {
            StoreKey::Entity {
                connection,
                kind,
                id,
            } => {
                let entity: Entity = read_state(format, value)?;
                let disk = &self.disk;
                let tenant = self
                    .tenants
                    .entry(connection.clone())
                    .or_insert_with(|| Tenant::new(&connection, disk.clone()));
                tenant.entities.restore(kind, &id, entity)?;
                // A restore that outgrows memory goes on on disk.
                self.trim()?;
            }
            StoreKey::Tenant { connection } => {
                let disk = &self.disk;
                let tenant = self
                    .tenants
                    .entry(connection.clone())
                    .or_insert_with(|| Tenant::new(&connection, disk.clone()));
                // The weeks come in entries of their own, before or after.
                let weeks = std::mem::take(&mut tenant.meta.weeks);
                let silent = std::mem::take(&mut tenant.meta.silent);
                tenant.meta = read_state(format, value)?;
                tenant.meta.weeks = weeks;
                tenant.meta.silent = silent;
            }
            StoreKey::Silent { connection, week } => {
                let disk = &self.disk;
                self.tenants
                    .entry(connection.clone())
                    .or_insert_with(|| Tenant::new(&connection, disk.clone()))
                    .meta
                    .silent
                    .insert(week, read_state(format, value)?);
            }
            StoreKey::Week { connection, week } => {
                let disk = &self.disk;
                self.tenants
                    .entry(connection.clone())
                    .or_insert_with(|| Tenant::new(&connection, disk.clone()))
                    .meta
                    .weeks
                    .insert(week, read_state(format, value)?);
            }
        }
        Ok(())
    }

    /// Every changelog entry is back: note the versions still to publish.
    pub fn restored(&mut self) -> Result<(), StoreError> {
        for tenant in self.tenants.values_mut() {
            let Tenant {
                meta,
                entities,
                pending,
                ..
            } = tenant;
            entities.for_each(|kind, id, entity| {
                for (i, v) in entity.versions.iter().enumerate() {
                    if v.recorded > meta.watermark || meta.late.contains(&(kind, id.to_owned(), i))
                    {
                        pending
                            .entry(v.recorded)
                            .or_default()
                            .push((kind, id.to_owned(), i));
                    }
                }
            })?;
        }
        Ok(())
    }
}

/// The changelog's value format.
pub const STATE_FORMAT: &str = "postcard/2";

fn read_state<T: serde::de::DeserializeOwned>(
    format: &str,
    value: &[u8],
) -> Result<T, RestoreError> {
    match format {
        STATE_FORMAT => Ok(postcard::from_bytes(value)?),
        other => Err(RestoreError::Format(other.to_owned())),
    }
}

/// Publish the history of the versions recorded by `now`, in the order of
/// recording, entity kind, id and version: an order the input fixes, not
/// the order in which the input partitions happened to be read. Gives the
/// lessons whose attendance these versions report (before and after).
fn publish_history(
    connection: &str,
    tenant: &mut Tenant,
    now: i64,
    out: &mut impl Emit,
) -> BTreeSet<String> {
    let mut reported = BTreeSet::new();
    let later = match now.checked_add(1) {
        Some(after) => tenant.pending.split_off(&after),
        None => BTreeMap::new(),
    };
    let due = std::mem::replace(&mut tenant.pending, later);
    if !tenant.meta.late.is_empty() {
        tenant.meta.late.clear();
        tenant.meta_changed = true;
    }
    for (_, mut bucket) in due {
        bucket.sort_unstable();
        bucket.dedup();
        for (kind, id, index) in bucket {
            publish_version(connection, tenant, kind, &id, index, &mut reported, out);
        }
    }
    reported
}

/// The history records of one version: the one it replaces, closed, and
/// itself, open.
fn publish_version(
    connection: &str,
    tenant: &Tenant,
    kind: Kind,
    id: &str,
    index: usize,
    reported: &mut BTreeSet<String>,
    out: &mut impl Emit,
) {
    // Read without being cached: during a backlog every version of the
    // input comes by here once, and a cache would hold them all.
    tenant.entities.read(kind, id, |entity| {
        let history = |v: &Version, index: usize, recorded_to: Option<i64>| HistoryVersion {
            entity_type: kind.endpoint().to_owned(),
            connection: connection.to_owned(),
            entity_id: id.to_owned(),
            event_id: v.event_id.clone(),
            version: index as i32 + 1,
            deleted: v.fact.is_none(),
            content_hash: v.content_hash.clone(),
            recorded_from: TimestampMillis(v.recorded),
            recorded_to: recorded_to.map(TimestampMillis),
            valid_from: (v.valid_from != i64::MIN).then_some(TimestampMillis(v.valid_from)),
            edges: v.fact.as_ref().map(edges).unwrap_or_default(),
        };
        let Some(version) = entity.versions.get(index) else {
            return;
        };
        if let Some(before) = index.checked_sub(1).and_then(|i| entity.versions.get(i)) {
            out.emit(Output::History(
                kind,
                history(before, index - 1, Some(version.recorded)),
            ));
        }
        out.emit(Output::History(kind, history(version, index, None)));
        if kind == Kind::Attendance {
            let before = index.checked_sub(1).and_then(|i| entity.versions.get(i));
            for v in [before, Some(version)].into_iter().flatten() {
                if let Some(Fact::Attendance { lesson, .. }) = &v.fact {
                    reported.insert(lesson.clone());
                }
            }
        }
    });
}

/// A changelog entry that could not be put back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("unknown state key {0}")]
    Key(String),
    #[error("a state entry that cannot be read")]
    Binary(#[from] postcard::Error),
    #[error("state written in an unknown format {0} (an older skolflode's: rebuild the state with skolflode replay under a new application id)")]
    Format(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn digest(rows: &WeekRows) -> String {
    let mut hash = Sha256::new();
    for (k, (lessons, minutes)) in &rows.teacher_student {
        hash.update(format!("{k:?}{lessons},{minutes}\n").as_bytes());
    }
    for (k, t) in &rows.attendance {
        hash.update(format!("{k:?}{t:?}\n").as_bytes());
    }
    for (k, c) in &rows.coverage {
        // The pupils by count: the rows above name them already.
        let pupils = c.pupils.len();
        let UnitTotals {
            lessons,
            lessons_with_teacher,
            lessons_with_pupils,
            lessons_reported,
            pupil_lessons,
            pupil_lessons_reported,
            weekdays,
            ..
        } = c;
        hash.update(
            format!(
                "{k:?}{lessons},{lessons_with_teacher},{lessons_with_pupils},{lessons_reported},{pupils},{pupil_lessons},{pupil_lessons_reported},{weekdays:?}\n"
            )
            .as_bytes(),
        );
    }
    hex::encode(hash.finalize())
}

fn snapshot(
    connection: &str,
    week: &str,
    revision: i32,
    source: &str,
    rows: &WeekRows,
) -> Snapshot {
    let ts_count = rows.teacher_student.len() as i32;
    let att_count = rows.attendance.len() as i32;
    Snapshot {
        connection: connection.to_owned(),
        week: week.to_owned(),
        revision,
        teacher_student: rows
            .teacher_student
            .iter()
            .map(
                |(
                    (unit, teacher, student, activity, group, subject, grader),
                    (lessons, minutes),
                )| {
                    TeacherStudentRow {
                        connection: connection.to_owned(),
                        week: week.to_owned(),
                        revision,
                        rows_in_revision: ts_count,
                        school_unit_code: unit.clone(),
                        teacher_key: teacher.clone(),
                        student_key: student.clone(),
                        activity_id: activity.clone(),
                        group_id: group.clone(),
                        subject_code: subject.clone(),
                        lessons: *lessons,
                        minutes: *minutes,
                        is_grader: *grader,
                        source: source.to_owned(),
                    }
                },
            )
            .collect(),
        attendance: rows
            .attendance
            .iter()
            .map(|((unit, student, subject), t)| AttendanceRow {
                connection: connection.to_owned(),
                week: week.to_owned(),
                revision,
                rows_in_revision: att_count,
                school_unit_code: unit.clone(),
                student_key: student.clone(),
                subject_code: subject.clone(),
                lessons: t.lessons,
                minutes_scheduled: t.minutes_scheduled,
                minutes_present: t.minutes_present,
                minutes_valid_absence: t.minutes_valid_absence,
                minutes_invalid_absence: t.minutes_invalid_absence,
                lessons_unreported: t.lessons_unreported,
                source: source.to_owned(),
            })
            .collect(),
        coverage: rows
            .coverage
            .iter()
            .map(|(unit, c)| UnitWeekCoverage {
                connection: connection.to_owned(),
                week: week.to_owned(),
                revision,
                rows_in_revision: rows.coverage.len() as i32,
                school_unit_code: unit.clone(),
                lessons: c.lessons,
                lessons_with_teacher: c.lessons_with_teacher,
                lessons_with_pupils: c.lessons_with_pupils,
                lessons_reported: c.lessons_reported,
                pupils: c.pupils.len() as i32,
                pupil_lessons: c.pupil_lessons,
                pupil_lessons_reported: c.pupil_lessons_reported,
                source: source.to_owned(),
                weekdays: c
                    .weekdays
                    .iter()
                    .map(|(weekday, d)| WeekdayAttendance {
                        weekday: *weekday as i32,
                        pupil_lessons: d.pupil_lessons,
                        minutes_scheduled: d.minutes_scheduled,
                        minutes_present: d.minutes_present,
                        minutes_valid_absence: d.minutes_valid_absence,
                        minutes_invalid_absence: d.minutes_invalid_absence,
                        pupil_lessons_unreported: d.pupil_lessons_unreported,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::weekly::model::{Member, Teacher};

    const HOUR: i64 = 3_600_000;
    /// Monday 2025-09-01 00:00 in Stockholm.
    const MONDAY: i64 = 1_756_677_600_000;

    fn event(
        kind: Kind,
        id: &str,
        recorded: i64,
        modified: Option<i64>,
        fact: Option<Fact>,
    ) -> (Kind, String, Incoming) {
        let hash = fact.as_ref().map(|f| format!("{f:?}"));
        (
            kind,
            id.to_owned(),
            Incoming {
                event_id: format!("{id}@{recorded}"),
                content_hash: hash,
                fact,
                recorded,
                modified,
                vendor: "ss12000".into(),
            },
        )
    }

    fn lesson(day: i64) -> Fact {
        Fact::Lesson {
            activity: "act".into(),
            start: MONDAY + day * 24 * HOUR + 8 * HOUR,
            end: MONDAY + day * 24 * HOUR + 9 * HOUR,
            cancelled: false,
            minutes: 60,
            absent: vec![],
        }
    }

    fn person(key: &str) -> Fact {
        Fact::Person {
            person_key: key.into(),
            birth_year: None,
            enrolments: vec![],
        }
    }

    fn activity(teacher: &str) -> Fact {
        Fact::Activity {
            organisation: "unit".into(),
            start: None,
            end: None,
            syllabus: Some("syl".into()),
            groups: vec!["grp".into()],
            teachers: vec![Teacher {
                duty: teacher.into(),
                start: None,
                end: None,
                grader: true,
            }],
        }
    }

    /// A week of two lessons whose teacher list is overwritten on
    /// Wednesday (seen on Thursday), with one attendance report.
    fn events() -> Vec<(Kind, String, Incoming)> {
        let before = MONDAY - 24 * HOUR;
        vec![
            event(
                Kind::Organisation,
                "unit",
                before,
                None,
                Some(Fact::Organisation {
                    school_unit_code: Some("12345678".into()),
                }),
            ),
            event(
                Kind::Syllabus,
                "syl",
                before,
                None,
                Some(Fact::Syllabus {
                    subject_code: "MA".into(),
                }),
            ),
            event(Kind::Person, "t1", before, None, Some(person("k-t1"))),
            event(Kind::Person, "t2", before, None, Some(person("k-t2"))),
            event(Kind::Person, "p1", before, None, Some(person("k-p1"))),
            event(
                Kind::Duty,
                "d1",
                before,
                None,
                Some(Fact::Duty {
                    person: Some("t1".into()),
                    duty_at: "unit".into(),
                }),
            ),
            event(
                Kind::Duty,
                "d2",
                before,
                None,
                Some(Fact::Duty {
                    person: Some("t2".into()),
                    duty_at: "unit".into(),
                }),
            ),
            event(
                Kind::Group,
                "grp",
                before,
                None,
                Some(Fact::Group {
                    members: vec![Member {
                        person: "p1".into(),
                        start: None,
                        end: None,
                    }],
                }),
            ),
            event(Kind::Activity, "act", before, None, Some(activity("d1"))),
            event(Kind::Lesson, "l-mon", before, None, Some(lesson(0))),
            event(Kind::Lesson, "l-thu", before, None, Some(lesson(3))),
            // Overwritten Wednesday 06:00, seen Thursday 00:00.
            event(
                Kind::Activity,
                "act",
                MONDAY + 72 * HOUR,
                Some(MONDAY + 54 * HOUR),
                Some(activity("d2")),
            ),
            event(
                Kind::Attendance,
                "a1",
                MONDAY + 80 * HOUR,
                None,
                Some(Fact::Attendance {
                    lesson: "l-mon".into(),
                    student: "p1".into(),
                    reported: true,
                    present: 50,
                    valid_absence: 10,
                    invalid_absence: 0,
                }),
            ),
        ]
    }

    fn run(events: &[(Kind, String, Incoming)]) -> Vec<Output> {
        let mut operator = Operator::new(Settings {
            grace_millis: 24 * HOUR,
            ..Settings::default()
        });
        for (kind, id, incoming) in events {
            operator.apply(*kind, "c", id, incoming.clone()).unwrap();
        }
        let mut snapshots = Vec::new();
        operator.advance("c", MONDAY + 9 * 24 * HOUR, &mut snapshots);
        snapshots
    }

    fn teachers(out: &[Output]) -> Vec<(String, i32)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Snapshot(s) => Some(s),
                _ => None,
            })
            .flat_map(|s| {
                s.teacher_student
                    .iter()
                    .map(|r| (r.teacher_key.clone(), r.lessons))
            })
            .collect()
    }

    #[test]
    fn each_lesson_counts_for_the_teacher_assigned_when_it_took_place() {
        let out = run(&events());
        assert_eq!(
            teachers(&out),
            vec![("k-t1".to_owned(), 1), ("k-t2".to_owned(), 1)]
        );
        let Some(Output::Snapshot(s)) = out.iter().find(|o| matches!(o, Output::Snapshot(_)))
        else {
            panic!("no snapshot");
        };
        assert_eq!(s.week, "2025-W36");
        assert_eq!(s.revision, 1);
        let a = &s.attendance[0];
        assert_eq!(
            (
                a.lessons,
                a.minutes_scheduled,
                a.minutes_present,
                a.minutes_valid_absence,
                a.lessons_unreported
            ),
            (2, 120, 50, 10, 1)
        );
    }

    #[test]
    fn a_change_event_delivered_twice_is_kept_once() {
        let mut all = events();
        all.extend(events());
        assert_eq!(run(&all), run(&events()));
    }

    #[test]
    fn a_correction_after_the_close_is_the_next_revision() {
        let mut operator = Operator::new(Settings {
            grace_millis: 24 * HOUR,
            ..Settings::default()
        });
        let mut out = Vec::new();
        for (kind, id, incoming) in events() {
            operator.apply(kind, "c", &id, incoming).unwrap();
        }
        let closed = MONDAY + 9 * 24 * HOUR;
        out.clear();
        operator.advance("c", closed, &mut out);
        let (_, id, late) = event(
            Kind::Attendance,
            "a2",
            closed + HOUR,
            None,
            Some(Fact::Attendance {
                lesson: "l-thu".into(),
                student: "p1".into(),
                reported: true,
                present: 60,
                valid_absence: 0,
                invalid_absence: 0,
            }),
        );
        operator.apply(Kind::Attendance, "c", &id, late).unwrap();
        out.clear();
        // Not before the clock has passed the correction's recording.
        operator.advance("c", closed + HOUR - 1, &mut out);
        assert!(out.is_empty());
        operator.advance("c", closed + HOUR, &mut out);
        let Some(Output::Snapshot(s)) = out.iter().find(|o| matches!(o, Output::Snapshot(_)))
        else {
            panic!("no revision: {out:?}");
        };
        assert_eq!((s.revision, s.attendance[0].lessons_unreported), (2, 0));
    }

    fn findings(out: &[Output]) -> Vec<(String, String, Option<i64>, Option<i64>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Finding(f) => Some((
                    f.rule.clone().unwrap_or_default(),
                    f.entity_id.clone(),
                    f.first_seen.map(|t| t.0),
                    f.resolved_at.map(|t| t.0),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_finding_opens_when_a_week_closes_and_resolves_when_it_no_longer_holds() {
        let mut operator = Operator::new(Settings {
            grace_millis: 24 * HOUR,
            ..Settings::default()
        });
        let mut all = events();
        // More minutes reported than the lesson has; an unknown unit code.
        all.push(event(
            Kind::Attendance,
            "a1",
            MONDAY + 81 * HOUR,
            None,
            Some(Fact::Attendance {
                lesson: "l-mon".into(),
                student: "p1".into(),
                reported: true,
                present: 60,
                valid_absence: 10,
                invalid_absence: 0,
            }),
        ));
        all.push(event(
            Kind::Organisation,
            "unit",
            MONDAY + 81 * HOUR,
            None,
            Some(Fact::Organisation {
                school_unit_code: Some("1234567".into()),
            }),
        ));
        for (kind, id, incoming) in all {
            operator.apply(kind, "c", &id, incoming).unwrap();
        }
        let closed = MONDAY + 9 * 24 * HOUR;
        let mut out = Vec::new();
        operator.advance("c", closed, &mut out);
        assert_eq!(
            findings(&out),
            vec![
                (
                    "ATTENDANCE_EXCEEDS_LESSON".into(),
                    "a1".into(),
                    Some(closed),
                    None
                ),
                (
                    "LESSON_NOT_REPORTED".into(),
                    "l-thu".into(),
                    Some(closed),
                    None
                ),
                (
                    "MALFORMED_SCHOOL_UNIT_CODE".into(),
                    "unit".into(),
                    Some(closed),
                    None
                ),
            ]
        );
        let Some(Output::Finding(f)) = out.iter().find(|o| matches!(o, Output::Finding(_))) else {
            panic!("no finding");
        };
        assert_eq!(
            (
                f.severity.as_deref(),
                f.week.as_deref(),
                f.school_unit_code.as_deref()
            ),
            (Some("error"), Some("2025-W36"), Some("1234567"))
        );
        assert_eq!(
            operator
                .open_findings()
                .get(&("LESSON_NOT_REPORTED", "ss12000".into())),
            Some(&1)
        );
        // The report comes: the week is computed again, and only what
        // changed is published.
        let (_, id, late) = event(
            Kind::Attendance,
            "a2",
            closed + HOUR,
            None,
            Some(Fact::Attendance {
                lesson: "l-thu".into(),
                student: "p1".into(),
                reported: true,
                present: 60,
                valid_absence: 0,
                invalid_absence: 0,
            }),
        );
        operator.apply(Kind::Attendance, "c", &id, late).unwrap();
        out.clear();
        operator.advance("c", closed + HOUR, &mut out);
        assert_eq!(
            findings(&out),
            vec![(
                "LESSON_NOT_REPORTED".into(),
                "l-thu".into(),
                Some(closed),
                Some(closed + HOUR)
            )]
        );
        assert_eq!(
            operator
                .open_findings()
                .get(&("LESSON_NOT_REPORTED", "ss12000".into())),
            Some(&0)
        );
    }

    #[test]
    fn teachers_and_pupils_in_two_lessons_at_once_are_double_booked() {
        let mut operator = Operator::new(Settings {
            grace_millis: 24 * HOUR,
            ..Settings::default()
        });
        let mut all = events();
        // Half an hour into Monday's lesson of the same activity, another;
        // one right after it is no overlap.
        for (id, from, to) in [
            ("l-mon2", 8 * HOUR + HOUR / 2, 9 * HOUR + HOUR / 2),
            ("l-mon3", 10 * HOUR, 11 * HOUR),
        ] {
            all.push(event(
                Kind::Lesson,
                id,
                MONDAY - 24 * HOUR,
                None,
                Some(Fact::Lesson {
                    activity: "act".into(),
                    start: MONDAY + from,
                    end: MONDAY + to,
                    cancelled: false,
                    minutes: 60,
                    absent: vec![],
                }),
            ));
        }
        for (kind, id, incoming) in all {
            operator.apply(kind, "c", &id, incoming).unwrap();
        }
        let mut out = Vec::new();
        operator.advance("c", MONDAY + 9 * 24 * HOUR, &mut out);
        let booked: Vec<(String, String)> = findings(&out)
            .into_iter()
            .filter(|(rule, ..)| rule.ends_with("_DOUBLE_BOOKED"))
            .map(|(rule, entity, ..)| (rule, entity))
            .collect();
        assert_eq!(
            booked,
            vec![
                ("PUPIL_DOUBLE_BOOKED".into(), "p1".into()),
                ("TEACHER_DOUBLE_BOOKED".into(), "t1".into()),
            ]
        );
    }

    fn rule_findings(events: Vec<(Kind, String, Incoming)>, rule: &str) -> Vec<String> {
        findings(&run(&events))
            .into_iter()
            .filter(|(r, ..)| r == rule)
            .map(|(_, entity, ..)| entity)
            .collect()
    }

    /// The week's events with pupil `p1` as the vendor gave it.
    fn with_pupil(
        birth_year: Option<i32>,
        enrolments: Vec<Enrolled>,
    ) -> Vec<(Kind, String, Incoming)> {
        let mut all = events();
        all.push(event(
            Kind::Person,
            "p1",
            MONDAY - 12 * HOUR,
            None,
            Some(Fact::Person {
                person_key: "k-p1".into(),
                birth_year,
                enrolments,
            }),
        ));
        all
    }

    fn enrolled(school_type: &str, school_year: Option<i32>, end: Option<i32>) -> Enrolled {
        Enrolled {
            organisation: "unit".into(),
            school_type: school_type.into(),
            school_year,
            start: Some(20_000),
            end,
            cancelled: false,
        }
    }

    #[test]
    fn pupils_are_judged_by_the_enrolments_in_force() {
        // In the autumn of 2025, year 4 of compulsory school is usually 10.
        let plausible = with_pupil(Some(2015), vec![enrolled("GR", Some(4), None)]);
        assert!(rule_findings(plausible.clone(), "IMPLAUSIBLE_AGE").is_empty());
        assert!(rule_findings(plausible, "PUPIL_WITHOUT_SCHOOL_YEAR").is_empty());
        for (born, implausible) in [(2017, true), (2016, false), (2012, false), (2011, true)] {
            let found = rule_findings(
                with_pupil(Some(born), vec![enrolled("GR", Some(4), None)]),
                "IMPLAUSIBLE_AGE",
            );
            assert_eq!(found.len(), usize::from(implausible), "born {born}");
        }
        assert_eq!(
            rule_findings(
                with_pupil(Some(2009), vec![enrolled("GY", Some(1), None)]),
                "IMPLAUSIBLE_AGE"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            rule_findings(
                with_pupil(Some(2015), vec![enrolled("GR", None, None)]),
                "PUPIL_WITHOUT_SCHOOL_YEAR"
            ),
            vec!["p1".to_owned()]
        );
        // An enrolment that ended before the week is not in force: the
        // pupil is not judged.
        assert!(rule_findings(
            with_pupil(Some(2015), vec![enrolled("GR", None, Some(20_001))]),
            "PUPIL_WITHOUT_SCHOOL_YEAR"
        )
        .is_empty());
    }

    #[test]
    fn a_lesson_after_its_activitys_end_date_is_found() {
        let mut all = events();
        // The activity ends on the Tuesday (epoch day of 2025-09-02).
        let tuesday = time::epoch_days(chrono::NaiveDate::from_ymd_opt(2025, 9, 2).unwrap());
        for (_, id, incoming) in all.iter_mut() {
            if let Some(Fact::Activity { end, .. }) = incoming.fact.as_mut() {
                *end = Some(tuesday);
                incoming.content_hash = Some(format!("{id}{:?}", incoming.fact));
            }
        }
        assert_eq!(
            rule_findings(all, "LESSON_OUTSIDE_ACTIVITY_DATES"),
            vec!["l-thu".to_owned()]
        );
    }

    #[test]
    fn a_change_without_a_new_modified_time_is_found_in_the_week_it_was_seen() {
        let mut all = events();
        all.push(event(
            Kind::Person,
            "p1",
            MONDAY - 12 * HOUR,
            Some(MONDAY - 100 * HOUR),
            Some(Fact::Person {
                person_key: "k-p1".into(),
                birth_year: Some(2015),
                enrolments: vec![],
            }),
        ));
        let mut silent = event(
            Kind::Person,
            "p1",
            MONDAY + 30 * HOUR,
            Some(MONDAY - 100 * HOUR),
            Some(Fact::Person {
                person_key: "k-p1".into(),
                birth_year: Some(2015),
                enrolments: vec![enrolled("GR", Some(4), None)],
            }),
        );
        silent.2.event_id = "p1-silent".into();
        all.push(silent);
        let out = run(&all);
        let found: Vec<_> = findings(&out)
            .into_iter()
            .filter(|(r, ..)| r == "MODIFIED_NOT_UPDATED")
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, "p1");
        let Some(Output::Finding(f)) = out.iter().find(|o| {
            matches!(o, Output::Finding(f) if f.rule.as_deref() == Some("MODIFIED_NOT_UPDATED"))
        }) else {
            panic!("no finding");
        };
        assert_eq!(
            (f.week.as_deref(), f.school_unit_code.as_deref()),
            (Some("2025-W36"), Some("12345678"))
        );
        // With a new modified time, nothing is found.
        let last = all.len() - 1;
        all[last].2.modified = Some(MONDAY + 29 * HOUR);
        assert!(rule_findings(all, "MODIFIED_NOT_UPDATED").is_empty());
    }

    #[test]
    fn history_waits_for_the_clock_and_survives_a_restore() {
        let mut operator = Operator::new(Settings {
            grace_millis: 24 * HOUR,
            ..Settings::default()
        });
        for (kind, id, incoming) in events() {
            operator.apply(kind, "c", &id, incoming).unwrap();
        }
        // Nothing is published before the clock passes; the state written
        // so far carries the versions still to publish.
        let mut restored = Operator::new(operator.settings.clone());
        let dir = std::env::temp_dir().join("skolflode-operator-test");
        let disk = Disk::create(&dir, "restored", 1 << 20).unwrap();
        // Restored onto disk: nothing of it in memory.
        let mut on_disk = Operator::with_disk(operator.settings.clone(), disk, 0);
        for (key, value) in operator.take_changed().unwrap() {
            restored.restore(&key, STATE_FORMAT, &value).unwrap();
            on_disk.restore(&key, STATE_FORMAT, &value).unwrap();
        }
        restored.restored().unwrap();
        on_disk.restored().unwrap();
        assert_eq!(on_disk.entities(), restored.entities());
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        operator.advance("c", MONDAY + 9 * 24 * HOUR, &mut a);
        restored.advance("c", MONDAY + 9 * 24 * HOUR, &mut b);
        on_disk.advance("c", MONDAY + 9 * 24 * HOUR, &mut c);
        assert_eq!(a, b);
        assert_eq!(a, c);
        let history: Vec<(i64, String, i32)> = a
            .iter()
            .filter_map(|o| match o {
                Output::History(_, h) => Some((h.recorded_from.0, h.entity_id.clone(), h.version)),
                _ => None,
            })
            .collect();
        assert!(!history.is_empty());
        // Published in recording order.
        assert!(history.windows(2).all(|w| w[0].0 <= w[1].0), "{history:?}");
        // Once.
        let mut again = Vec::new();
        operator.advance("c", MONDAY + 10 * 24 * HOUR, &mut again);
        assert!(!again.iter().any(|o| matches!(o, Output::History(..))));
    }

    /// `events()` with reports after the close: a late one and a
    /// correction.
    fn late_events() -> Vec<(Kind, String, Incoming)> {
        let closed = MONDAY + 9 * 24 * HOUR;
        let report = |lesson: &str, present: i32, invalid: i32| Fact::Attendance {
            lesson: lesson.into(),
            student: "p1".into(),
            reported: true,
            present,
            valid_absence: 0,
            invalid_absence: invalid,
        };
        let mut all = events();
        all.push(event(
            Kind::Attendance,
            "a2",
            closed + HOUR,
            None,
            Some(report("l-thu", 60, 0)),
        ));
        all.push(event(
            Kind::Attendance,
            "a1",
            closed + 2 * HOUR,
            None,
            Some(report("l-mon", 20, 40)),
        ));
        all
    }

    /// Apply `arrivals` in their order, advancing the clock every twelve
    /// hours once every event recorded by then has arrived, and `ahead`
    /// more have (read ahead of the clock, as a reader of many partitions
    /// does).
    fn staged(arrivals: &[(Kind, String, Incoming)], ahead: usize) -> Vec<Output> {
        staged_in(arrivals, ahead, false)
    }

    /// The same, with the state written to a disk store and memory emptied
    /// after every step (`on_disk`).
    fn staged_in(
        arrivals: &[(Kind, String, Incoming)],
        ahead: usize,
        on_disk: bool,
    ) -> Vec<Output> {
        let settings = Settings {
            grace_millis: 24 * HOUR,
            ..Settings::default()
        };
        let mut operator = if on_disk {
            let dir = std::env::temp_dir().join("skolflode-operator-test");
            Operator::with_disk(settings, Disk::create(&dir, "staged", 1 << 20).unwrap(), 0)
        } else {
            Operator::new(settings)
        };
        let mut out = Vec::new();
        let mut next = 0;
        for step in 0..=24 {
            let clock = MONDAY + step * 12 * HOUR;
            let needed = arrivals
                .iter()
                .rposition(|(_, _, e)| e.recorded <= clock)
                .map_or(0, |i| i + 1);
            let until = (needed + ahead).min(arrivals.len()).max(next);
            for (kind, id, incoming) in &arrivals[next..until] {
                operator.apply(*kind, "c", id, incoming.clone()).unwrap();
            }
            next = until;
            operator.advance("c", clock, &mut out);
            if on_disk {
                operator.take_changed().unwrap();
                operator.trim().unwrap();
            }
        }
        out
    }

    /// Keep each entity's versions in their order, entities in `order`.
    fn interleave(
        all: &[(Kind, String, Incoming)],
        order: Vec<usize>,
    ) -> Vec<(Kind, String, Incoming)> {
        let mut shuffled: Vec<(Kind, String, Incoming)> = Vec::new();
        for i in order {
            let (kind, id, _) = &all[i];
            if shuffled.iter().any(|(k, d, _)| k == kind && d == id) {
                continue;
            }
            shuffled.extend(all.iter().filter(|(k, d, _)| k == kind && d == id).cloned());
        }
        shuffled
    }

    proptest! {
        /// Read ahead of the clock in any interleaving of the entities,
        /// the outputs — history, snapshots, revisions — are those of
        /// reading in recording order.
        #[test]
        fn reading_ahead_of_the_clock_does_not_change_the_outputs(
            order in Just((0..15usize).collect::<Vec<_>>()).prop_shuffle(),
            ahead in 0..15usize,
        ) {
            let all = late_events();
            let expected = staged(&all, 0);
            prop_assert!(expected.iter().any(|o| matches!(o, Output::Snapshot(s) if s.revision == 2)));
            let shuffled = interleave(&all, order);
            prop_assert_eq!(staged_in(&shuffled, ahead, true), staged(&shuffled, ahead));
            prop_assert_eq!(staged(&shuffled, ahead), expected);
        }

        /// The outputs (history and snapshots) depend on each entity's own
        /// sequence, not on how the entities' partitions interleaved.
        #[test]
        fn interleaving_does_not_change_the_outputs(order in Just((0..13usize).collect::<Vec<_>>()).prop_shuffle()) {
            let all = events();
            prop_assert_eq!(run(&interleave(&all, order)), run(&all));
        }
    }
}
