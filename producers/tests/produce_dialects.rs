//! A whole autumn term read from two simulated vendors with the same world:
//! one that follows SS 12000 to the letter, one with every dialect switch
//! the simulator has (zone-less UTC times, 10-digit civic numbers, teachers
//! as persons, `subject` for `syllabus`, required fields left out, a flat
//! deletion feed, page tokens that need the filters repeated, an endpoint
//! it does not serve). The change topics of the two must tell the same
//! story, entity by entity and version by version, up to what the
//! dialect run recorded as findings: fields it reported missing, and the
//! endpoint it reported unsupported. Every poll of both succeeds, and each
//! dialect is reported once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use skolflode_producers::detect::content_hash;
use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, Runner};
use skolflode_producers::ss12000::time::Zone;
use skolflode_schemas::catalogue::{self, DEAD_LETTERS, QUALITY_FINDINGS};
use skolflode_schemas::entities::{Activity, Duty, Syllabus};
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::records::{DeadLetter, QualityFinding};
use skolflode_schemas::{wire, AvroType, ChangeEvent, EntityKey, Op};
use skolflode_simulator::config::{Dialect, VendorBehaviour};
use skolflode_simulator::server::LoggedRequest;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::pipeline::Vendor;
use skolflode_testkit::term::{connection, simulation};
use skolflode_testkit::{unique, Scratch, TestKafka};

const SECRET: &[u8] = b"the producer's dialect test pseudonym key";
const POLL_EVERY_DAYS: u32 = 4;

/// Entity id → its versions in order: the content hash after the fields
/// the run reported missing are blanked, or `None` where it was deleted.
type Versions = BTreeMap<String, Vec<Option<String>>>;

/// Fields a dialect run reported missing, as (endpoint, field).
type Missing = HashSet<(String, String)>;

/// Blank the fields that one run reported missing, in both runs alike.
trait Blank: Entity {
    fn blank(&mut self, _missing: &Missing) {}
}

fn reported(missing: &Missing, endpoint: &str, field: &str) -> bool {
    missing.contains(&(format!("/{endpoint}"), field.to_owned()))
}

impl Blank for Activity {
    fn blank(&mut self, missing: &Missing) {
        if reported(missing, "activities", "calendarEventsRequired") {
            self.calendar_events_required = false;
        }
    }
}

impl Blank for Duty {
    fn blank(&mut self, missing: &Missing) {
        if reported(missing, "duties", "dutyRole") {
            self.duty_role.clear();
        }
    }
}

impl Blank for Syllabus {
    fn blank(&mut self, missing: &Missing) {
        if reported(missing, "syllabuses", "official") {
            self.official = false;
        }
    }
}

macro_rules! unblanked {
    ($($t:ident),*) => {$(impl Blank for skolflode_schemas::entities::$t {})*};
}
unblanked!(Organisation, Person, Group, CalendarEvent, Attendance);

/// The versions of every entity of one change topic for a connection.
async fn versions<E: Blank>(kafka: &TestKafka, connection: &str, missing: &Missing) -> Versions {
    let topic = catalogue::change_topic::<E>().unwrap().name;
    let mut out = Versions::new();
    for r in kafka
        .drain_keyed(
            topic,
            Isolation::ReadCommitted,
            Duration::from_secs(120),
            connection,
        )
        .await
        .unwrap()
    {
        let key = EntityKey::decode_all(wire::split(r.key.as_deref().unwrap()).unwrap().1).unwrap();
        if key.connection != connection {
            continue;
        }
        let body = r.payload.unwrap();
        let event = ChangeEvent::<E>::decode_all(wire::split(&body).unwrap().1).unwrap();
        let version = match (event.op, event.after) {
            (Op::Delete, _) | (_, None) => None,
            (_, Some(mut after)) => {
                after.blank(missing);
                Some(content_hash(&after))
            }
        };
        out.entry(key.entity_id).or_default().push(version);
    }
    out
}

/// Every request the producer made, held to the SS 12000 specification
/// itself (its YAML), not to the simulator's reading of it: only the
/// parameters it defines for the endpoint, each once, the required ones on
/// every first page, a `pageToken` with nothing but `limit` beside it,
/// date-times in RFC 3339 with a zone.
fn check_against_the_specification(requests: &[LoggedRequest]) {
    let dir = skolflode_simulator::spec::dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("the SS 12000 specification beside the checkout");
    let mut specs: HashMap<String, HashMap<String, bool>> = HashMap::new();
    let (mut windows, mut tokens) = (0, 0);
    for r in requests {
        let spec = specs.entry(r.endpoint.clone()).or_insert_with(|| {
            skolflode_simulator::spec::query_parameters(&dir, &r.endpoint).unwrap()
        });
        let names: HashSet<&str> = r.query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names.len(), r.query.len(), "a parameter twice: {r:?}");
        for (name, value) in &r.query {
            assert!(
                spec.contains_key(name),
                "{name} is not a parameter of /{}",
                r.endpoint
            );
            if name == "limit" {
                assert!(value.parse::<u32>().is_ok_and(|l| l >= 1), "{r:?}");
            }
            if name.contains("Time.") || name.contains("modified") || name == "after" {
                assert!(
                    chrono::DateTime::parse_from_rfc3339(value).is_ok(),
                    "{name}={value} is not RFC 3339 with a zone"
                );
            }
        }
        if names.contains("pageToken") {
            tokens += 1;
            assert!(
                names.iter().all(|n| *n == "pageToken" || *n == "limit"),
                "a pageToken with filters: {r:?}"
            );
        } else {
            for (name, required) in spec.iter() {
                assert!(
                    !required || names.contains(name.as_str()),
                    "{name} missing: {r:?}"
                );
            }
        }
        windows += usize::from(names.contains("startTime.onOrAfter"));
    }
    assert!(
        windows > 100 && tokens > 100,
        "{windows} windows, {tokens} page tokens"
    );
    assert!(specs.contains_key("deletedEntities") && specs.contains_key("calendarEvents"));
}

struct Run {
    name: String,
    vendor: Vendor,
    runner: Runner,
    /// Held for its drop: the simulator's truth goes with the run.
    _truth: Scratch,
}

async fn run(kafka: &TestKafka, p: &Arc<Pseudonymiser>, dialect: Dialect, zone: Zone) -> Run {
    let truth = Scratch::new("dialect-truth").unwrap();
    let behaviour = VendorBehaviour {
        name: "ss12000-sim".into(),
        dated_assignments: false,
        end_date_memberships: true,
        deletion_feed: true,
        dialect,
    };
    let vendor = Vendor::serve(simulation(behaviour, 21, 240, truth.path()).unwrap())
        .await
        .unwrap();
    let name = unique("dialect");
    let mut config = connection(&name, &vendor.url, 4, true);
    config.timestamps_without_zone = zone;
    let runner = Runner::start(config, kafka.config(), Arc::clone(p))
        .await
        .unwrap();
    Run {
        name,
        vendor,
        runner,
        _truth: truth,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_through_every_dialect_gives_the_standard_run_s_events() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let p = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let mut standard = run(&kafka, &p, Dialect::default(), Zone::Stockholm).await;
    // Zone-less UTC times, read as such by the connection.
    let every = Dialect::every(&["syllabuses"]);
    let mut dialect = run(&kafka, &p, every, Zone::Utc).await;

    let term_end = standard.vendor.state.sim().world.year.autumn.1;
    let mut polls = 0;
    loop {
        for r in [&mut standard, &mut dialect] {
            // Every poll of either vendor succeeds: lessons in windows, the
            // dialects understood.
            r.runner
                .poll()
                .await
                .unwrap_or_else(|e| panic!("{}: {}", r.name, e.chain()));
        }
        polls += 1;
        if standard.vendor.state.sim().day > term_end {
            break;
        }
        for r in [&standard, &dialect] {
            r.vendor.state.sim().advance_days(POLL_EVERY_DAYS).unwrap();
        }
    }
    assert!(polls >= 30, "{polls} polls");
    check_against_the_specification(&standard.vendor.state.requests());

    // What each run reported.
    let findings = |name: String| {
        let kafka = &kafka;
        async move {
            kafka
                .committed::<QualityFinding>(QUALITY_FINDINGS, &name)
                .await
                .unwrap()
        }
    };
    let standard_findings = findings(standard.name.clone()).await;
    let dialect_findings = findings(dialect.name.clone()).await;
    let dialects = |all: &[QualityFinding]| -> Vec<(String, String, String)> {
        all.iter()
            .filter(|f| f.entity_id.is_empty())
            .map(|f| (f.endpoint.clone(), f.kind.clone(), f.field.clone()))
            .collect()
    };
    assert!(
        dialects(&standard_findings).is_empty(),
        "the standard vendor has no dialect: {:?}",
        dialects(&standard_findings)
    );
    let reported = dialects(&dialect_findings);
    let unique_reported: HashSet<_> = reported.iter().cloned().collect();
    assert_eq!(
        unique_reported.len(),
        reported.len(),
        "each dialect once: {reported:#?}"
    );
    for (endpoint, kind, field) in [
        ("/persons", "ZONE_ASSUMED", "meta.modified"),
        ("/calendarEvents", "ZONE_ASSUMED", "startTime"),
        ("/activities", "TEACHER_AS_PERSON", "teachers[].person"),
        ("/activities", "SUBJECT_FOR_SYLLABUS", "subject"),
        ("/activities", "MISSING_FIELD", "calendarEventsRequired"),
        ("/duties", "MISSING_FIELD", "dutyRole"),
        ("/deletedEntities", "FLAT_DELETION_LIST", ""),
        ("/syllabuses", "UNSUPPORTED_ENDPOINT", ""),
    ] {
        assert!(
            unique_reported.contains(&(endpoint.to_owned(), kind.to_owned(), field.to_owned())),
            "{endpoint} {kind} {field} not reported: {reported:#?}"
        );
    }
    assert!(
        reported
            .iter()
            .any(|(_, kind, _)| kind == "FILTERS_WITH_PAGE_TOKEN"),
        "{reported:#?}"
    );
    // Item by item, both runs found the same problems in the data.
    let per_item = |all: &[QualityFinding]| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = all
            .iter()
            .filter(|f| !f.entity_id.is_empty())
            .map(|f| (f.endpoint.clone(), f.entity_id.clone(), f.kind.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(per_item(&dialect_findings), per_item(&standard_findings));
    for r in [&standard, &dialect] {
        let letters = kafka
            .committed::<DeadLetter>(DEAD_LETTERS, &r.name)
            .await
            .unwrap();
        assert!(letters.is_empty(), "{}: {letters:#?}", r.name);
    }

    // The same versions of every entity, in the same order.
    let missing: Missing = dialect_findings
        .iter()
        .filter(|f| f.kind == "MISSING_FIELD")
        .map(|f| (f.endpoint.clone(), f.field.clone()))
        .collect();
    let mut compared = 0;
    for endpoint in Endpoint::ALL {
        let of = |name: &str| {
            let (kafka, missing, name) = (&kafka, &missing, name.to_owned());
            async move {
                skolflode_producers::with_entity!(endpoint, E => versions::<E>(kafka, &name, missing).await)
            }
        };
        let (want, got) = (of(&standard.name).await, of(&dialect.name).await);
        if endpoint == Endpoint::Syllabuses {
            assert!(
                !want.is_empty() && got.is_empty(),
                "unsupported: nothing read"
            );
            compared += want.values().map(Vec::len).sum::<usize>();
            continue;
        }
        assert!(!want.is_empty(), "{endpoint}: nothing read");
        let differing: Vec<_> = want
            .iter()
            .filter(|(id, v)| got.get(*id) != Some(v))
            .map(|(id, v)| (id, v.len(), got.get(id).map(Vec::len)))
            .take(10)
            .collect();
        assert!(differing.is_empty(), "{endpoint}: {differing:?}");
        assert_eq!(want.len(), got.len(), "{endpoint}");
        compared += want.values().map(Vec::len).sum::<usize>();
    }
    let events: u64 = standard.runner.stats().events.values().sum();
    assert_eq!(
        compared as u64, events,
        "every event of the standard run compared"
    );
}
