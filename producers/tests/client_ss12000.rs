//! The SS 12000 client against the simulator's real HTTP API, with the
//! simulator's faults switched on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skolflode_producers::ss12000::client::{
    ClientConfig, FetchError, Filters, Secret, Ss12000Client,
};
use skolflode_simulator::config::Faults;
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;

struct Vendor {
    url: String,
    state: Arc<AppState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn vendor(faults: Faults) -> Vendor {
    vendor_with(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
}

async fn vendor_with(config: SimConfig) -> Vendor {
    let mut sim = Simulation::new(config, None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 3).unwrap())
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

fn config(url: &str) -> ClientConfig {
    ClientConfig {
        base_url: format!("{url}/ss12000/v2"),
        token_url: format!("{url}/oauth2/token"),
        client_id: "skolflode".into(),
        client_secret: Secret::new("simulated-secret"),
        page_limit: 50,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        max_retries: 12,
        ..ClientConfig::default()
    }
}

async fn all_ids(client: &Ss12000Client, endpoint: &str) -> (HashSet<String>, usize) {
    let mut ids = HashSet::new();
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let page = client
            .page(endpoint, token.as_deref(), &Filters::default())
            .await
            .unwrap();
        seen += page.len();
        ids.extend(page.items().map(|i| {
            let item: serde_json::Value = serde_json::from_str(i).unwrap();
            item["id"].as_str().unwrap().to_owned()
        }));
        assert!(page.server_time.is_some());
        match page.next {
            Some(next) => token = Some(next),
            None => return (ids, seen),
        }
    }
}

#[tokio::test]
async fn reads_everything_through_faults() {
    let faults = Faults {
        server_errors: 0.1,
        rate_limited: 0.1,
        retry_after_secs: 0,
        truncated_json: 0.1,
        expired_tokens: 0.1,
        repeated_items: 0.1,
        ..Faults::default()
    };
    let vendor = vendor(faults).await;
    let client = Ss12000Client::new(config(&vendor.url)).unwrap();
    for endpoint in ["persons", "groups", "activities", "attendances"] {
        let (ids, seen) = all_ids(&client, endpoint).await;
        let expected: HashSet<String> = {
            let sim = vendor.state.sim();
            (0..sim.storage_len(endpoint).unwrap())
                .filter_map(|i| sim.render(endpoint, i))
                .map(|(_, item)| item["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids, expected, "{endpoint}");
        assert!(seen >= ids.len());
    }
    let stats = client.stats();
    assert!(
        stats.retries > 0
            && stats.server_errors > 0
            && stats.rate_limited > 0
            && stats.malformed > 0,
        "{stats:?}"
    );
    assert!(
        stats.token_refreshes > 1,
        "expired tokens are refreshed: {stats:?}"
    );
}

#[tokio::test]
async fn a_page_that_stays_truncated_keeps_its_bytes_for_the_dead_letter_topic() {
    let vendor = vendor(Faults {
        truncated_json: 1.0,
        ..Faults::default()
    })
    .await;
    let client = Ss12000Client::new(ClientConfig {
        max_retries: 2,
        ..config(&vendor.url)
    })
    .unwrap();
    match client.page("persons", None, &Filters::default()).await {
        Err(FetchError::Malformed {
            raw,
            attempts,
            reason,
            ..
        }) => {
            assert_eq!(attempts, 3);
            assert!(raw.starts_with(b"{\"data\":["), "{reason}");
            assert!(reason.contains("JSON"), "{reason}");
        }
        other => panic!("expected a malformed page, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_credentials_and_unknown_endpoints_fail_without_retrying() {
    let vendor = vendor(Faults::default()).await;
    let client = Ss12000Client::new(ClientConfig {
        client_secret: Secret::new("wrong"),
        ..config(&vendor.url)
    })
    .unwrap();
    let started = Instant::now();
    let error = client
        .page("persons", None, &Filters::default())
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Token { .. }), "{error}");
    assert!(
        !error.to_string().contains("wrong"),
        "the secret leaked: {error}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let client = Ss12000Client::new(config(&vendor.url)).unwrap();
    let error = client
        .page("nonsense", None, &Filters::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::Status { status: 404, .. }),
        "{error}"
    );
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn incremental_reads_and_the_deletion_feed() {
    let vendor = vendor(Faults::default()).await;
    let client = Ss12000Client::new(config(&vendor.url)).unwrap();
    let page = client
        .page(
            "attendances",
            None,
            &Filters {
                modified_after: Some("2025-09-02T16:30:00+02:00".into()),
                ..Filters::default()
            },
        )
        .await
        .unwrap();
    assert!(!page.is_empty());
    for item in page.items() {
        let item: serde_json::Value = serde_json::from_str(item).unwrap();
        assert!(item["meta"]["modified"].as_str().unwrap() > "2025-09-02T16:30:00+02:00");
    }
    let deletions = client
        .deleted_entities(Some("2025-07-01T00:00:00Z"))
        .await
        .unwrap();
    assert!(!deletions.flat);
    let deleted = deletions.deleted;
    assert_eq!(deletions.server_time, Some(vendor.state.sim().now));
    let sim_deleted = vendor.state.sim().deletions.len();
    assert_eq!(
        deleted.iter().map(|(_, ids)| ids.len()).sum::<usize>(),
        sim_deleted
    );
}

#[tokio::test]
async fn the_rate_limit_spaces_requests() {
    let vendor = vendor(Faults::default()).await;
    let client = Ss12000Client::new(ClientConfig {
        requests_per_second: 20.0,
        ..config(&vendor.url)
    })
    .unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        client
            .page("organisations", None, &Filters::default())
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(440),
        "{:?}",
        started.elapsed()
    );
}

/// Every item of an endpoint behind `filters`, paging to the end.
async fn read_all(client: &Ss12000Client, endpoint: &str, filters: &Filters) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .page(endpoint, token.as_deref(), filters)
            .await
            .unwrap();
        for item in page.items() {
            let item: serde_json::Value = serde_json::from_str(item).unwrap();
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.next {
            Some(next) => token = Some(next),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn page_tokens_go_alone_unless_the_vendor_needs_the_filters_repeated() {
    let filters = Filters {
        modified_after: Some("2025-09-01T16:30:00+02:00".into()),
        ..Filters::default()
    };
    let strict = vendor(Faults::default()).await;
    let client = Ss12000Client::new(config(&strict.url)).unwrap();
    let standard = read_all(&client, "attendances", &filters).await;
    assert!(
        standard.len() > 100,
        "{} items: several pages",
        standard.len()
    );
    assert!(!client.repeats_filters());

    let mut sim = SimConfig::default();
    sim.vendor.dialect.filters_with_page_token = true;
    let sloppy = vendor_with(sim).await;
    let client = Ss12000Client::new(config(&sloppy.url)).unwrap();
    let repeated = read_all(&client, "attendances", &filters).await;
    assert!(client.repeats_filters());
    assert_eq!(repeated, standard);
}

#[tokio::test]
async fn lessons_are_read_in_the_window_the_standard_requires() {
    let vendor = vendor(Faults::default()).await;
    let client = Ss12000Client::new(config(&vendor.url)).unwrap();
    let error = client
        .page("calendarEvents", None, &Filters::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::Status { status: 400, ref body, .. } if body.contains("startTime")),
        "{error}"
    );
    assert!(
        error.to_string().contains("calendar_events window"),
        "{error}"
    );
    let week = Filters {
        start_time: Some(("2025-09-01T00:00:00Z".into(), "2025-09-07T23:59:59Z".into())),
        ..Filters::default()
    };
    let lessons = read_all(&client, "calendarEvents", &week).await;
    assert!(!lessons.is_empty());
}

#[tokio::test]
async fn a_deletion_feed_is_read_to_its_last_page() {
    use axum::extract::Query;
    use axum::routing::get;
    use serde_json::json;
    use std::collections::HashMap;
    let app = axum::Router::new()
        .route(
            "/ss12000/v2/deletedEntities",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                // The standard's paging: a token goes alone.
                axum::Json(match q.get("pageToken").map(String::as_str) {
                    None if q.contains_key("after") => {
                        json!({ "data": { "persons": ["p1"] }, "pageToken": "two" })
                    }
                    Some("two") if q.len() == 1 => {
                        json!({ "data": { "persons": ["p2"], "activitites": ["a1"] }, "pageToken": null })
                    }
                    _ => json!({ "unexpected": q }),
                })
            }),
        );
    let url = skolflode_testkit::pipeline::serve_vendor(app)
        .await
        .unwrap();
    let client = Ss12000Client::new(config(&url)).unwrap();
    let deletions = client
        .deleted_entities(Some("2025-09-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        deletions.deleted,
        vec![
            ("persons".to_owned(), vec!["p1".to_owned(), "p2".to_owned()]),
            ("activitites".to_owned(), vec!["a1".to_owned()]),
        ]
    );
}
