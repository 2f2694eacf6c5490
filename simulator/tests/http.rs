//! The simulator's vendor API over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use serde_json::Value;
use skolflode_simulator::calendar::{local_to_epoch_millis, rfc3339_local};
use skolflode_simulator::config::{Dialect, Evolution, Faults, Timestamps, VendorBehaviour};
use skolflode_simulator::ss12000::ENDPOINTS;
use skolflode_simulator::SimConfig;
use support::{date, start, window};

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
        // Paged with limit alone, the feed is the same.
        let mut paged = HashSet::new();
        let mut path = "/ss12000/v2/deletedEntities?limit=2".to_owned();
        loop {
            let page: Value = running.get(&token, &path).await.json().await.unwrap();
            for id in page["data"]["duties"].as_array().into_iter().flatten() {
                assert!(paged.insert(id.as_str().unwrap().to_owned()), "{id} twice");
            }
            match page["pageToken"].as_str() {
                Some(next) => {
                    path = format!("/ss12000/v2/deletedEntities?limit=2&pageToken={next}")
                }
                None => break,
            }
        }
        assert_eq!(paged, announced);
    }
}

/// The status and JSON body of a request.
async fn answer(running: &support::Running, token: &str, path: &str) -> (u16, Value) {
    let response = running.get(token, path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn refused(running: &support::Running, token: &str, path: &str) -> String {
    let (status, body) = answer(running, token, path).await;
    assert_eq!(status, 400, "{path}: {body}");
    assert_eq!(body["code"], "invalid_filter", "{path}: {body}");
    body["message"].as_str().unwrap().to_owned()
}

/// RFC 3339 with the offset, query-encoded.
fn at(local: chrono::NaiveDateTime) -> String {
    rfc3339_local(local).replace('+', "%2B")
}

#[tokio::test]
async fn requests_outside_the_specification_are_refused() {
    let running = start(SimConfig::default(), date(2025, 9, 8)).await;
    let token = running.token().await;
    let r = &running;
    assert_eq!(
        refused(r, &token, "/ss12000/v2/persons?limit=5&colour=red").await,
        "unknown query parameter colour"
    );
    assert_eq!(
        refused(
            r,
            &token,
            "/ss12000/v2/attendances?startTime.onOrAfter=2025-09-01T00:00:00Z"
        )
        .await,
        "unknown query parameter startTime.onOrAfter"
    );
    for (endpoint, param) in [
        ("persons", "sortkey=ModifiedDesc"),
        ("attendances", "student=x"),
        ("duties", "organisation=x"),
        ("groups", "expand=assignmentRoles"),
        ("activities", "meta.created.after=2025-09-01T00:00:00Z"),
        ("deletedEntities", "entities=Duty"),
    ] {
        let message = refused(r, &token, &format!("/ss12000/v2/{endpoint}?{param}")).await;
        let name = param.split('=').next().unwrap();
        assert_eq!(
            message,
            format!("query parameter {name} is not supported by this simulator")
        );
    }
    assert_eq!(
        refused(r, &token, "/ss12000/v2/calendarEvents?limit=10").await,
        "missing required query parameter startTime.onOrAfter, startTime.onOrBefore"
    );
    assert_eq!(
        refused(
            r,
            &token,
            "/ss12000/v2/calendarEvents?startTime.onOrBefore=2025-09-01T00:00:00Z"
        )
        .await,
        "missing required query parameter startTime.onOrAfter"
    );
    assert!(refused(
        r,
        &token,
        "/ss12000/v2/calendarEvents?startTime.onOrAfter=2025-09-01T00:00:00&startTime.onOrBefore=2025-09-02T00:00:00Z"
    )
    .await
    .contains("RFC 3339"));
    assert!(refused(
        r,
        &token,
        "/ss12000/v2/calendarEvents?startTime.onOrAfter=2025-09-03T00:00:00Z&startTime.onOrBefore=2025-09-02T00:00:00Z"
    )
    .await
    .contains("must not be after"));
    // Attendance records need no window.
    assert_eq!(
        running
            .get(&token, "/ss12000/v2/attendances?limit=3")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn calendar_events_are_served_in_their_start_time_window() {
    let running = start(SimConfig::default(), date(2025, 10, 1)).await;
    let token = running.token().await;
    let starts: Vec<(String, i64, bool)> = {
        let sim = running.state.sim();
        sim.lessons
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l.id.clone(),
                    local_to_epoch_millis(l.start_local()),
                    sim.render("calendarEvents", i).is_some(),
                )
            })
            .collect()
    };
    let lesson_start = |day: chrono::NaiveDate, latest: bool| {
        let sim = running.state.sim();
        let on_day = sim.lessons.iter().filter(|l| l.date == day);
        let pick = if latest {
            on_day.map(|l| l.start_local()).max()
        } else {
            on_day.map(|l| l.start_local()).min()
        };
        pick.unwrap()
    };
    // From the first lesson of a Monday to the last of the Thursday: both
    // ends are lesson starts, and both are inside.
    let from = lesson_start(date(2025, 9, 8), false);
    let to = lesson_start(date(2025, 9, 11), true);
    let (from_ms, to_ms) = (local_to_epoch_millis(from), local_to_epoch_millis(to));
    let expected: HashSet<&str> = starts
        .iter()
        .filter(|(_, t, shown)| *shown && from_ms <= *t && *t <= to_ms)
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert!(expected.len() > 100, "{} lessons", expected.len());
    assert!(starts.iter().any(|(_, t, _)| *t == from_ms));
    assert!(starts.iter().any(|(_, t, _)| *t == to_ms));
    let filter = format!(
        "&startTime.onOrAfter={}&startTime.onOrBefore={}",
        at(from),
        at(to)
    );
    let items = running.all(&token, "calendarEvents", &filter).await;
    let ids: HashSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), items.len(), "a lesson served twice");
    assert_eq!(ids, expected);

    // The same window in UTC, one second narrower at each end.
    let utc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let narrower = format!(
        "&startTime.onOrAfter={}&startTime.onOrBefore={}",
        utc(from_ms + 1000),
        utc(to_ms - 1000)
    );
    let inner = running.all(&token, "calendarEvents", &narrower).await;
    let expected_inner = starts
        .iter()
        .filter(|(_, t, shown)| *shown && from_ms < *t && *t < to_ms)
        .count();
    assert_eq!(inner.len(), expected_inner);
    assert!(inner.len() < items.len());

    // With meta.modified.after: the window's lessons changed since
    // (cancellations).
    let (before, changed) = {
        let sim = running.state.sim();
        let before = local_to_epoch_millis(date(2025, 9, 5).and_hms_opt(12, 0, 0).unwrap());
        let changed: HashSet<String> = sim
            .lessons
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                let t = local_to_epoch_millis(l.start_local());
                sim.render("calendarEvents", *i)
                    .is_some_and(|(m, _)| m > before)
                    && from_ms <= t
                    && t <= to_ms
            })
            .map(|(_, l)| l.id.clone())
            .collect();
        (before, changed)
    };
    let since = chrono::DateTime::from_timestamp_millis(before)
        .unwrap()
        .to_rfc3339();
    let items = running
        .all(
            &token,
            "calendarEvents",
            &format!("{filter}&meta.modified.after={}", since.replace('+', "%2B")),
        )
        .await;
    let ids: HashSet<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, changed);
    assert!(!changed.is_empty() && changed.len() < expected.len());
}

#[tokio::test]
async fn page_tokens_carry_the_filters_and_refuse_new_ones() {
    let running = start(SimConfig::default(), date(2025, 9, 8)).await;
    let token = running.token().await;
    let first: Value = running
        .get(
            &token,
            &format!("/ss12000/v2/calendarEvents?limit=5{}", support::ALL_TIME),
        )
        .await
        .json()
        .await
        .unwrap();
    let next = first["pageToken"].as_str().unwrap();
    assert_eq!(
        refused(
            &running,
            &token,
            &format!(
                "/ss12000/v2/calendarEvents?limit=5&pageToken={next}{}",
                support::ALL_TIME
            )
        )
        .await,
        "pageToken cannot be combined with other filters"
    );
    let (status, _) = answer(
        &running,
        &token,
        &format!("/ss12000/v2/calendarEvents?limit=5&pageToken={next}"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = answer(
        &running,
        &token,
        &format!("/ss12000/v2/persons?pageToken={next}"),
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &Value::from("invalid_page_token"))
    );
}

#[tokio::test]
async fn a_vendor_whose_page_tokens_need_the_filters_repeated() {
    let config = SimConfig {
        vendor: VendorBehaviour {
            dialect: Dialect {
                filters_with_page_token: true,
                ..Dialect::default()
            },
            ..VendorBehaviour::default()
        },
        ..SimConfig::default()
    };
    let running = start(config, date(2025, 9, 15)).await;
    let token = running.token().await;
    let window = "&startTime.onOrAfter=2025-09-08T00:00:00%2B02:00&startTime.onOrBefore=2025-09-12T23:59:59%2B02:00";
    let first: Value = running
        .get(
            &token,
            &format!("/ss12000/v2/calendarEvents?limit=5{window}"),
        )
        .await
        .json()
        .await
        .unwrap();
    let next = first["pageToken"].as_str().unwrap();
    assert_eq!(
        refused(
            &running,
            &token,
            &format!("/ss12000/v2/calendarEvents?limit=5&pageToken={next}")
        )
        .await,
        "filters must be repeated with pageToken"
    );
    assert_eq!(
        refused(
            &running,
            &token,
            &format!(
                "/ss12000/v2/calendarEvents?limit=5&pageToken={next}&startTime.onOrAfter=2025-09-08T00:00:00%2B02:00&startTime.onOrBefore=2025-09-12T23:59:58%2B02:00"
            )
        )
        .await,
        "filters must be repeated with pageToken"
    );
    let (status, _) = answer(
        &running,
        &token,
        &format!("/ss12000/v2/calendarEvents?limit=5&pageToken={next}{window}"),
    )
    .await;
    assert_eq!(status, 200);

    let items = running
        .all_repeating(&token, "calendarEvents", window)
        .await;
    let ids: HashSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), items.len());
    let expected = {
        let sim = running.state.sim();
        sim.lessons
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                (date(2025, 9, 8)..=date(2025, 9, 12)).contains(&l.date)
                    && sim.render("calendarEvents", *i).is_some()
            })
            .count()
    };
    assert_eq!(items.len(), expected);
    // Without filters, a page token alone is enough.
    let persons = running.all_repeating(&token, "persons", "").await;
    assert_eq!(persons.len(), running.state.sim().world.persons.len());
}

#[tokio::test]
async fn unsupported_endpoints_answer_404() {
    let config = SimConfig {
        vendor: VendorBehaviour {
            dialect: Dialect {
                unsupported_endpoints: vec!["syllabuses".into(), "deletedEntities".into()],
                ..Dialect::default()
            },
            ..VendorBehaviour::default()
        },
        ..SimConfig::default()
    };
    config.validate().unwrap();
    let running = start(config, date(2025, 8, 25)).await;
    let token = running.token().await;
    for path in ["/ss12000/v2/syllabuses", "/ss12000/v2/deletedEntities"] {
        let (status, body) = answer(&running, &token, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            body,
            serde_json::json!({"code": "not_found", "message": "endpoint not supported"})
        );
    }
    assert_eq!(
        running.get(&token, "/ss12000/v2/persons").await.status(),
        200
    );
    let bad = SimConfig {
        vendor: VendorBehaviour {
            dialect: Dialect {
                unsupported_endpoints: vec!["syllabi".into()],
                ..Dialect::default()
            },
            ..VendorBehaviour::default()
        },
        ..SimConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("syllabi"));
}

#[tokio::test]
async fn a_flat_deletion_feed() {
    let config = SimConfig {
        evolution: Evolution {
            teacher_departures_per_term: 3.0,
            ..Evolution::default()
        },
        vendor: VendorBehaviour {
            dialect: Dialect {
                flat_deleted_entities: true,
                timestamps: Timestamps::UtcWithoutZone,
                ..Dialect::default()
            },
            ..VendorBehaviour::default()
        },
        ..SimConfig::default()
    };
    let running = start(config, date(2025, 10, 1)).await;
    let token = running.token().await;
    let deletions: Vec<(String, i64)> = running
        .state
        .sim()
        .deletions
        .iter()
        .map(|d| (d.id.clone(), d.at))
        .collect();
    assert!(deletions.len() > 1);
    let (status, feed) = answer(&running, &token, "/ss12000/v2/deletedEntities").await;
    assert_eq!(status, 200);
    let expected: Vec<Value> = deletions
        .iter()
        .map(|(id, at)| {
            let utc = chrono::DateTime::from_timestamp_millis(*at).unwrap();
            serde_json::json!({
                "entityType": "Duty",
                "id": id,
                "deletedAt": utc.format("%Y-%m-%dT%H:%M:%S").to_string(),
            })
        })
        .collect();
    assert_eq!(feed, Value::Array(expected.clone()));
    // `after` filters; paging is not offered.
    let after = chrono::DateTime::from_timestamp_millis(deletions[0].1)
        .unwrap()
        .to_rfc3339()
        .replace('+', "%2B");
    let (status, later) = answer(
        &running,
        &token,
        &format!("/ss12000/v2/deletedEntities?after={after}"),
    )
    .await;
    assert_eq!(status, 200);
    let later_expected: Vec<Value> = expected
        .iter()
        .zip(&deletions)
        .filter(|(_, (_, at))| *at > deletions[0].1)
        .map(|(v, _)| v.clone())
        .collect();
    assert_eq!(later, Value::Array(later_expected));
    assert!(
        refused(&running, &token, "/ss12000/v2/deletedEntities?limit=5")
            .await
            .contains("not supported")
    );
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
                .get(
                    &token,
                    &format!("/ss12000/v2/{endpoint}?limit=500{}", window(endpoint)),
                )
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
