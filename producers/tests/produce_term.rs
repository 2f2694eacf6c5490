//! A whole autumn term against two simulated vendors — one with a deletion
//! feed, dated teacher assignments and end-dated memberships, one without a
//! feed that overwrites teachers and deletes memberships — with teacher
//! reassignments, departures, class and school moves and API faults:
//! replaying the change topics gives, for every entity, exactly the
//! sequence of versions the vendor showed at the polls, and every version
//! change the topics hold is one the simulator's change log recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::Arc;

use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, Runner};
use skolflode_simulator::config::VendorBehaviour;
use skolflode_testkit::pipeline::{
    history_differences, record, replay_history, History, Vendor, View,
};
use skolflode_testkit::term::{connection, simulation};
use skolflode_testkit::{unique, Scratch, TestKafka};

const SECRET: &[u8] = b"the producer's whole-term test pseudonym key";

/// Days between polls: the term is read 33 times.
const POLL_EVERY_DAYS: u32 = 4;

struct Tenant {
    vendor: Vendor,
    runner: Runner,
    name: String,
    /// The versions the vendor showed at the polls.
    shown: History,
    /// The last view, and the change-log position when it was taken.
    last: View,
    /// For each poll: the change-log sequence numbers it covers.
    logged_until: Vec<u64>,
    truth: Scratch,
}

async fn tenant(
    kafka: &TestKafka,
    pseudonymiser: &Arc<Pseudonymiser>,
    behaviour: VendorBehaviour,
    seed: u64,
    pupils: u32,
    full_read_every: i64,
) -> Tenant {
    let truth = Scratch::new("term-truth").unwrap();
    let deletion_feed = behaviour.deletion_feed;
    let vendor = Vendor::serve(simulation(behaviour, seed, pupils, truth.path()).unwrap())
        .await
        .unwrap();
    let name = unique("term");
    let runner = Runner::start(
        connection(&name, &vendor.url, full_read_every, deletion_feed),
        kafka.config(),
        Arc::clone(pseudonymiser),
    )
    .await
    .unwrap();
    Tenant {
        vendor,
        runner,
        name,
        shown: History::new(),
        last: View::new(),
        logged_until: Vec::new(),
        truth,
    }
}

impl Tenant {
    async fn poll(&mut self, pseudonymiser: &Pseudonymiser) {
        self.runner.poll().await.unwrap();
        let view = self.vendor.view(&self.name, pseudonymiser).unwrap();
        record(&mut self.shown, &view);
        self.last = view;
        self.logged_until
            .push(self.vendor.state.sim().changes_logged());
    }
}

/// Change-log lines: sequence number → (endpoint, entity id).
fn change_log(truth: &std::path::Path) -> HashMap<u64, (String, String)> {
    let file = std::fs::File::open(truth.join("changes.jsonl")).unwrap();
    std::io::BufReader::new(file)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                (
                    v["entity"].as_str().unwrap().to_owned(),
                    v["id"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// Every entity whose version changed between two consecutive polls has a
/// line in the change log between them: the topics hold no version the
/// vendor did not make.
fn check_against_change_log(tenant: &Tenant, polls: &[View]) {
    let log = change_log(tenant.truth.path());
    for (k, pair) in polls.windows(2).enumerate() {
        let (from, to) = (tenant.logged_until[k], tenant.logged_until[k + 1]);
        let logged: HashSet<(&str, &str)> = (from + 1..=to)
            .filter_map(|seq| log.get(&seq))
            .map(|(e, id)| (e.as_str(), id.as_str()))
            .collect();
        for endpoint in Endpoint::ALL.map(Endpoint::name) {
            let empty = HashMap::new();
            let (before, after) = (
                pair[0].get(endpoint).unwrap_or(&empty),
                pair[1].get(endpoint).unwrap_or(&empty),
            );
            let ids: HashSet<&String> = before.keys().chain(after.keys()).collect();
            for id in ids {
                if before.get(id) != after.get(id) {
                    assert!(
                        logged.contains(&(endpoint, id.as_str())),
                        "{}: {endpoint} {id} changed between polls {k} and {} without a change-log line",
                        tenant.name,
                        k + 1
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_term_replays_to_every_version_the_vendors_showed() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    // Incremental reads, a full read every fourth poll, deletions from the
    // feed; 300 pupils make two classes a year, so pupils change classes.
    let mut fed = tenant(
        &kafka,
        &pseudonymiser,
        VendorBehaviour {
            name: "with-feed".into(),
            dated_assignments: true,
            end_date_memberships: true,
            deletion_feed: true,
            ..VendorBehaviour::default()
        },
        11,
        300,
        4,
    )
    .await;
    // No deletion feed: every poll a full read, deletions found by set
    // difference, so the topics follow the vendor poll by poll. Smaller,
    // since it is read whole every time.
    let mut unfed = tenant(
        &kafka,
        &pseudonymiser,
        VendorBehaviour {
            name: "without-feed".into(),
            dated_assignments: false,
            end_date_memberships: false,
            deletion_feed: false,
            ..VendorBehaviour::default()
        },
        12,
        80,
        1,
    )
    .await;

    let term_end = fed.vendor.state.sim().world.year.autumn.1;
    let mut views: [Vec<View>; 2] = [Vec::new(), Vec::new()];
    loop {
        for (i, t) in [&mut fed, &mut unfed].into_iter().enumerate() {
            t.poll(&pseudonymiser).await;
            views[i].push(t.last.clone());
        }
        if fed.vendor.state.sim().day > term_end {
            break;
        }
        for t in [&fed, &unfed] {
            t.vendor.state.sim().advance_days(POLL_EVERY_DAYS).unwrap();
        }
    }
    assert!(views[0].len() >= 30, "{} polls", views[0].len());

    for (i, t) in [&fed, &unfed].into_iter().enumerate() {
        let (_, replayed, ids) = replay_history(&kafka, &t.name).await.unwrap();
        let diff = history_differences(&replayed, &t.shown, 20);
        assert!(diff.is_empty(), "{}: {diff:#?}", t.name);
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            ids.len(),
            "{}: duplicated events",
            t.name
        );
        check_against_change_log(t, &views[i]);
        // The term had all kinds of change in it.
        let stats = t.runner.stats();
        for op in ["SNAPSHOT_READ", "CREATE", "UPDATE", "DELETE"] {
            assert!(
                stats.events.get(op).copied().unwrap_or(0) > 0,
                "{}: no {op}: {stats:?}",
                t.name
            );
        }
        let updated_activities = replayed["activities"]
            .values()
            .filter(|v| v.len() > 1)
            .count();
        let gone_duties = replayed["duties"]
            .values()
            .filter(|v| v.last() == Some(&None))
            .count();
        let updated_groups = replayed["groups"].values().filter(|v| v.len() > 1).count();
        // One class a year in the smaller world: nobody changes class.
        let moves = i == 0;
        assert!(
            updated_activities > 0 && gone_duties > 0 && (updated_groups > 0 || !moves),
            "{}: {updated_activities} activities with new teachers, {gone_duties} teachers gone, {updated_groups} groups changed",
            t.name
        );
    }
}
