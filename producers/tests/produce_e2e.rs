//! The producer against the simulator and the real Kafka broker: after
//! every poll, replaying the change topics gives exactly what the vendor
//! showed at that poll; faults and malformed pages lose nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use skolflode_producers::detect::content_hash;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, Runner, DEAD_LETTER_TOPIC};
use skolflode_producers::ss12000::client::{ClientConfig, Secret};
use skolflode_producers::ss12000::map::{self, Context};
use skolflode_schemas::catalogue;
use skolflode_schemas::entities::*;
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::records::DeadLetter;
use skolflode_schemas::{wire, AvroType, ChangeEvent, EntityKey, Op};
use skolflode_simulator::config::Faults;
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::{unique, TestKafka};

const SECRET: &[u8] = b"the producer end-to-end test's pseudonym key";

struct Vendor {
    url: String,
    state: Arc<AppState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn vendor(config: SimConfig) -> Vendor {
    let mut sim = Simulation::new(config, None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 8, 18).unwrap())
        .unwrap();
    let state = AppState::new(sim);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));
    Vendor {
        url,
        state,
        _stop: stop,
    }
}

fn connection(name: &str, url: &str) -> ConnectionConfig {
    ConnectionConfig {
        name: name.to_owned(),
        endpoints: runner::ENDPOINTS.iter().map(|e| (*e).to_owned()).collect(),
        poll_interval_secs: 1,
        full_read_every: 3,
        overlap_secs: 3600,
        deletion_feed: true,
        client: ClientConfig {
            base_url: format!("{url}/ss12000/v2"),
            token_url: format!("{url}/oauth2/token"),
            client_id: "skolflode".into(),
            client_secret: Secret::new("simulated-secret"),
            page_limit: 200,
            backoff_base_ms: 1,
            backoff_max_ms: 5,
            max_retries: 12,
            ..ClientConfig::default()
        },
    }
}

/// What the vendor shows now: endpoint → id → content hash.
fn vendor_view(
    vendor: &Vendor,
    name: &str,
    p: &Pseudonymiser,
) -> HashMap<&'static str, HashMap<String, String>> {
    let sim = vendor.state.sim();
    let mut view = HashMap::new();
    for endpoint in runner::ENDPOINTS {
        let mut items = HashMap::new();
        for i in 0..sim.storage_len(endpoint).unwrap() {
            let Some((_, item)) = sim.render(endpoint, i) else {
                continue;
            };
            let today = (2025, 8, 18);
            let cx = Context {
                pseudonymiser: p,
                source: name,
                today,
            };
            let (id, hash) = match *endpoint {
                "organisations" => hashed(map::organisation(&item).unwrap().entity),
                "persons" => hashed(map::person(&item, &cx).unwrap().entity),
                "duties" => hashed(map::duty(&item).unwrap().entity),
                "groups" => hashed(map::group(&item).unwrap().entity),
                "syllabuses" => hashed(map::syllabus(&item).unwrap().entity),
                "activities" => hashed(map::activity(&item).unwrap().entity),
                "calendarEvents" => hashed(map::calendar_event(&item).unwrap().entity),
                _ => hashed(map::attendance(&item).unwrap().entity),
            };
            items.insert(id, hash);
        }
        view.insert(*endpoint, items);
    }
    view
}

fn hashed<E: Entity>(e: E) -> (String, String) {
    (e.id().to_owned(), content_hash(&e))
}

/// Replay a change topic: id → content hash of the last version, and every
/// event id seen.
async fn replay<E: Entity>(
    kafka: &TestKafka,
    name: &str,
    event_ids: &mut Vec<String>,
) -> HashMap<String, String> {
    let topic = catalogue::change_topic::<E>().unwrap().name;
    let records = kafka
        .drain(topic, Isolation::ReadCommitted, Duration::from_secs(60))
        .await
        .unwrap();
    let mut state = HashMap::new();
    for r in records {
        let (_, key) = wire::split(r.key.as_deref().unwrap()).unwrap();
        let key = EntityKey::decode_all(key).unwrap();
        if key.connection != name {
            continue;
        }
        let (_, body) = wire::split(r.payload.as_deref().unwrap()).unwrap();
        let event = ChangeEvent::<E>::decode_all(body).unwrap();
        event_ids.push(event.event_id.clone());
        match event.op {
            Op::Delete => {
                assert!(
                    state.remove(&key.entity_id).is_some(),
                    "delete of an unknown entity"
                );
            }
            _ => {
                let hash = event.content_hash.clone().unwrap();
                if event.op == Op::Update {
                    let before = event.before.as_ref().map(content_hash);
                    assert_eq!(
                        before.as_ref(),
                        state.get(&key.entity_id),
                        "before image is the last version"
                    );
                    assert_ne!(
                        before.as_ref(),
                        Some(&hash),
                        "an update that changes nothing"
                    );
                } else {
                    assert!(!state.contains_key(&key.entity_id), "created twice");
                }
                state.insert(key.entity_id, hash);
            }
        }
    }
    state
}

async fn replayed(
    kafka: &TestKafka,
    name: &str,
) -> (HashMap<&'static str, HashMap<String, String>>, Vec<String>) {
    let mut ids = Vec::new();
    let mut out = HashMap::new();
    out.insert(
        "organisations",
        replay::<Organisation>(kafka, name, &mut ids).await,
    );
    out.insert("persons", replay::<Person>(kafka, name, &mut ids).await);
    out.insert("duties", replay::<Duty>(kafka, name, &mut ids).await);
    out.insert("groups", replay::<Group>(kafka, name, &mut ids).await);
    out.insert(
        "syllabuses",
        replay::<Syllabus>(kafka, name, &mut ids).await,
    );
    out.insert(
        "activities",
        replay::<Activity>(kafka, name, &mut ids).await,
    );
    out.insert(
        "calendarEvents",
        replay::<CalendarEvent>(kafka, name, &mut ids).await,
    );
    out.insert(
        "attendances",
        replay::<Attendance>(kafka, name, &mut ids).await,
    );
    (out, ids)
}

fn assert_same(
    replayed: &HashMap<&'static str, HashMap<String, String>>,
    vendor: &HashMap<&'static str, HashMap<String, String>>,
    when: &str,
) {
    for endpoint in runner::ENDPOINTS {
        let r = &replayed[endpoint];
        let v = &vendor[endpoint];
        let missing = v.keys().filter(|k| !r.contains_key(*k)).count();
        let extra = r.keys().filter(|k| !v.contains_key(*k)).count();
        let stale = v
            .iter()
            .filter(|(k, h)| r.get(*k).is_some_and(|rh| rh != *h))
            .count();
        assert!(
            missing == 0 && extra == 0 && stale == 0,
            "{when}: {endpoint}: {missing} missing, {extra} extra, {stale} stale of {}",
            v.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_topics_gives_what_the_vendor_showed_at_each_poll() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let faults = Faults {
        server_errors: 0.05,
        rate_limited: 0.05,
        retry_after_secs: 0,
        repeated_items: 0.05,
        expired_tokens: 0.05,
        ..Faults::default()
    };
    let evolution = skolflode_simulator::config::Evolution {
        teacher_reassignments_per_activity_and_term: 0.5,
        teacher_departures_per_term: 0.3,
        class_moves_per_pupil_and_term: 0.1,
        ..Default::default()
    };
    let vendor = vendor(SimConfig {
        faults,
        evolution,
        ..SimConfig::default()
    })
    .await;
    let name = unique("e2e");
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let mut runner = Runner::start(
        connection(&name, &vendor.url),
        kafka.config(),
        Arc::clone(&pseudonymiser),
    )
    .await
    .unwrap();
    for step in 0..6 {
        if step > 0 {
            vendor.state.sim().advance_days(4).unwrap();
        }
        runner.poll().await.unwrap();
        let (replayed, ids) = replayed(&kafka, &name).await;
        let expected = vendor_view(&vendor, &name, &pseudonymiser);
        assert_same(&replayed, &expected, &format!("poll {step}"));
        let unique_ids: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            unique_ids.len(),
            ids.len(),
            "duplicated events after poll {step}"
        );
    }
    let stats = runner.stats().clone();
    assert!(
        stats.events.get("UPDATE").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert!(
        stats.events.get("DELETE").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert!(
        stats.events.get("CREATE").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );

    // A restarted producer rebuilds its state from the state topic alone and
    // publishes nothing for what it already published.
    drop(runner);
    let mut again = Runner::start(
        connection(&name, &vendor.url),
        kafka.config(),
        Arc::clone(&pseudonymiser),
    )
    .await
    .unwrap();
    assert!(again.held("attendances") > 0);
    again.poll().await.unwrap();
    assert_eq!(
        again.stats().events.values().sum::<u64>(),
        0,
        "{:?}",
        again.stats()
    );
    vendor.state.sim().advance_days(3).unwrap();
    again.poll().await.unwrap();
    let (replayed, ids) = replayed(&kafka, &name).await;
    assert_same(
        &replayed,
        &vendor_view(&vendor, &name, &pseudonymiser),
        "after the restart",
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pages_go_to_the_dead_letter_topic_and_nothing_is_lost() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let vendor = vendor(SimConfig {
        faults: Faults {
            truncated_json: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let name = unique("dlq");
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let mut config = connection(&name, &vendor.url);
    config.client.max_retries = 1;
    config.endpoints = vec!["groups".into()];
    config.deletion_feed = false;
    let mut runner = Runner::start(config, kafka.config(), Arc::clone(&pseudonymiser))
        .await
        .unwrap();
    assert!(runner.poll().await.is_err());
    let letters: Vec<DeadLetter> = kafka
        .drain(
            DEAD_LETTER_TOPIC,
            Isolation::ReadCommitted,
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            DeadLetter::decode_all(wire::split(r.payload.as_deref().unwrap()).unwrap().1).unwrap()
        })
        .filter(|l| l.connection == name)
        .collect();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("JSON"), "{}", letters[0].reason);
    assert!(letters[0].raw.0.starts_with(b"{\"data\":["));

    // The vendor recovers; the next poll reads everything.
    vendor.state.sim().config.faults = Faults::default();
    runner.poll().await.unwrap();
    let (replayed, _) = replayed(&kafka, &name).await;
    assert_eq!(
        replayed["groups"].len(),
        vendor.state.sim().world.groups.len()
    );
}
