//! The simulator's vendor API over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use serde_json::Value;
use skolflode_simulator::config::{Evolution, Faults, VendorBehaviour};
use skolflode_simulator::ss12000::ENDPOINTS;
use skolflode_simulator::SimConfig;
use support::{date, start};

#[tokio::test]
async fn every_endpoint_pages_through_everything_once() {
    let running = start(SimConfig::default(), date(2025, 9, 1)).await;
    let token = running.token().await;
    for endpoint in ENDPOINTS {
        let items = running.all(&token, endpoint, "").await;
        let ids: HashSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), items.len(), "{endpoint}: duplicates");
        let expected = {
            let sim = running.state.sim();
            match *endpoint {
                "organisations" => sim.world.organisations.len(),
                "persons" => sim.world.persons.len(),
                "duties" => sim
                    .world
                    .duties
                    .iter()
                    .filter(|d| d.deleted.is_none())
                    .count(),
                "groups" => sim.world.groups.len(),
                "syllabuses" => sim.world.syllabuses.len(),
                "activities" => sim.world.activities.len(),
                "calendarEvents" => sim.lessons.len(),
                _ => sim.records.len(),
            }
        };
        assert_eq!(items.len(), expected, "{endpoint}");
        assert!(!items.is_empty(), "{endpoint} is empty");
    }
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let running = start(SimConfig::default(), date(2025, 8, 1)).await;
    let response = running
        .http
        .get(format!("{}/ss12000/v2/persons", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = running.get("not-a-token", "/ss12000/v2/persons").await;
    assert_eq!(response.status(), 401);
    let response = running
        .http
        .post(format!("{}/oauth2/token", running.url))
        .body("grant_type=client_credentials&client_id=skolflode&client_secret=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = running
        .http
        .post(format!("{}/oauth2/token", running.url))
        .basic_auth("skolflode", Some("simulated-secret"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token = running.token().await;
    assert_eq!(
        running
            .get(&token, "/ss12000/v2/persons?limit=1")
            .await
            .status(),
        200
    );
    assert_eq!(
        running
            .get(&token, "/ss12000/v2/persons?limit=0")
            .await
            .status(),
        400
    );
    assert_eq!(
        running
            .get(&token, "/ss12000/v2/persons?pageToken=zz")
            .await
            .status(),
        400
    );
    assert_eq!(
        running
            .get(
                &token,
                "/ss12000/v2/persons?meta.modified.after=2025-08-01T10:00:00"
            )
            .await
            .status(),
        400,
        "a timestamp without a time zone is refused"
    );
}

#[tokio::test]
async fn the_date_header_is_simulated_time_and_control_advances_it() {
    let running = start(SimConfig::default(), date(2025, 9, 1)).await;
    let token = running.token().await;
    let response = running.get(&token, "/ss12000/v2/organisations").await;
    let header = response.headers()["date"].to_str().unwrap().to_owned();
    assert_eq!(header, "Sun, 31 Aug 2025 22:00:00 GMT");

    let before = running.state.sim().now;
    let after = chrono::DateTime::from_timestamp_millis(before)
        .unwrap()
        .to_rfc3339();
    let response = running
        .http
        .post(format!("{}/control/advance?days=7", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["next_day"], "2025-09-08");

    // Incremental reads see exactly what changed since.
    for endpoint in [
        "activities",
        "groups",
        "calendarEvents",
        "attendances",
        "persons",
    ] {
        let changed = running
            .all(
                &token,
                endpoint,
                &format!("&meta.modified.after={}", after.replace('+', "%2B")),
            )
            .await;
        let expected = {
            let sim = running.state.sim();
            (0..sim.storage_len(endpoint).unwrap())
                .filter_map(|i| sim.render(endpoint, i))
                .filter(|(modified, _)| *modified > before)
                .count()
        };
        assert_eq!(changed.len(), expected, "{endpoint}");
    }
    let attendances = running
        .all(
            &token,
            "attendances",
            &format!("&meta.modified.after={}", after.replace('+', "%2B")),
        )
        .await;
    assert!(!attendances.is_empty());
}

#[tokio::test]
async fn deletions_with_and_without_a_feed() {
    let evolution = Evolution {
        teacher_departures_per_term: 3.0,
        ..Evolution::default()
    };
    for feed in [true, false] {
        let config = SimConfig {
            evolution: evolution.clone(),
            vendor: VendorBehaviour {
                deletion_feed: feed,
                ..VendorBehaviour::default()
            },
            ..SimConfig::default()
        };
        let running = start(config, date(2025, 10, 1)).await;
        let token = running.token().await;
        let gone: Vec<String> = {
            let sim = running.state.sim();
            sim.world
                .duties
                .iter()
                .filter(|d| d.deleted.is_some())
                .map(|d| d.id.clone())
                .collect()
        };
        assert!(!gone.is_empty());
        let served: HashSet<String> = running
            .all(&token, "duties", "")
            .await
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(gone.iter().all(|id| !served.contains(id)));
        let feed_body: Value = running
            .get(&token, "/ss12000/v2/deletedEntities")
            .await
            .json()
            .await
            .unwrap();
        let announced: HashSet<String> = feed_body["data"]["duties"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        if feed {
            assert_eq!(announced, gone.iter().cloned().collect());
        } else {
            assert!(announced.is_empty());
        }
    }
}

async fn with_fault(faults: Faults) -> (support::Running, String) {
    let running = start(
        SimConfig {
            faults,
            ..SimConfig::default()
        },
        date(2025, 8, 25),
    )
    .await;
    let token = running.token().await;
    (running, token)
}

#[tokio::test]
async fn api_faults_happen_as_configured() {
    let (r, t) = with_fault(Faults {
        server_errors: 1.0,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.get(&t, "/ss12000/v2/groups").await.status(), 500);

    let (r, t) = with_fault(Faults {
        rate_limited: 1.0,
        retry_after_secs: 3,
        ..Faults::default()
    })
    .await;
    let response = r.get(&t, "/ss12000/v2/groups").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    let (r, t) = with_fault(Faults {
        truncated_json: 1.0,
        ..Faults::default()
    })
    .await;
    let body = r.get(&t, "/ss12000/v2/groups").await.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err());
    assert!(body.starts_with("{\"data\":["));

    let (r, t) = with_fault(Faults {
        expired_tokens: 1.0,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.get(&t, "/ss12000/v2/groups").await.status(), 401);

    let (r, t) = with_fault(Faults {
        repeated_items: 1.0,
        ..Faults::default()
    })
    .await;
    let first: Value = r
        .get(&t, "/ss12000/v2/persons?limit=10")
        .await
        .json()
        .await
        .unwrap();
    let next = first["pageToken"].as_str().unwrap();
    let second: Value = r
        .get(
            &t,
            &format!("/ss12000/v2/persons?limit=10&pageToken={next}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["data"][9]["id"], second["data"][0]["id"]);

    let (r, t) = with_fault(Faults {
        slow_responses: 1.0,
        slow_ms: 300,
        ..Faults::default()
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(r.get(&t, "/ss12000/v2/groups").await.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn same_seed_same_bytes() {
    let faults = Faults {
        server_errors: 0.1,
        repeated_items: 0.1,
        truncated_json: 0.1,
        ..Faults::default()
    };
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let running = start(
            SimConfig {
                seed: 11,
                faults: faults.clone(),
                ..SimConfig::default()
            },
            date(2025, 9, 3),
        )
        .await;
        let token = running.token().await;
        let mut run = Vec::new();
        for endpoint in ENDPOINTS {
            let response = running
                .get(&token, &format!("/ss12000/v2/{endpoint}?limit=500"))
                .await;
            let date = response.headers()["date"].to_str().unwrap().to_owned();
            run.push((
                response.status().as_u16(),
                date,
                response.bytes().await.unwrap(),
            ));
        }
        bodies.push(run);
    }
    assert_eq!(bodies[0], bodies[1]);
}
