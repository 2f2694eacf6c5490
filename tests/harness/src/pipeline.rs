//! Checking the pipeline against the simulator: run the simulator's vendor
//! API in-process, and compare what the change topics replay to with what
//! the vendor shows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;

use skolflode_producers::detect::content_hash;
use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::ss12000::json::Json;
use skolflode_producers::ss12000::map::{Context, Ss12000Entity};
use skolflode_schemas::catalogue;
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::{wire, AvroType, ChangeEvent, EntityKey, Op};
use skolflode_simulator::server::{self, AppState};
use skolflode_simulator::sim::Simulation;

use crate::kafka::Isolation;
use crate::{HarnessError, TestKafka};

/// Endpoint → entity id → content hash.
pub type View = HashMap<&'static str, HashMap<String, String>>;

/// Endpoint → entity id → the versions in order: a content hash, or `None`
/// where the entity was gone.
pub type History = HashMap<&'static str, HashMap<String, Vec<Option<String>>>>;

/// Add what a view shows to the history of every entity: a new entry
/// where an entity's version differs from its last one (`None` for an
/// entity no longer shown).
pub fn record(history: &mut History, view: &View) {
    for endpoint in Endpoint::ALL.map(Endpoint::name) {
        let empty = HashMap::new();
        let shown = view.get(endpoint).unwrap_or(&empty);
        let versions = history.entry(endpoint).or_default();
        for (id, hash) in shown {
            let seq = versions.entry(id.clone()).or_default();
            if seq.last() != Some(&Some(hash.clone())) {
                seq.push(Some(hash.clone()));
            }
        }
        for (id, seq) in versions.iter_mut() {
            if !shown.contains_key(id) && seq.last().is_some_and(Option::is_some) {
                seq.push(None);
            }
        }
    }
}

/// Differences between two histories: entities whose version sequences
/// differ, a line each (at most `limit` lines).
pub fn history_differences(replayed: &History, expected: &History, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for endpoint in Endpoint::ALL.map(Endpoint::name) {
        let empty = HashMap::new();
        let r = replayed.get(endpoint).unwrap_or(&empty);
        let e = expected.get(endpoint).unwrap_or(&empty);
        let mut ids: Vec<&String> = r.keys().chain(e.keys()).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let (rs, es) = (r.get(id), e.get(id));
            if rs != es {
                out.push(format!(
                    "{endpoint} {id}: replayed {} versions {:?}, the vendor showed {} {:?}",
                    rs.map_or(0, Vec::len),
                    rs.map(|v| short(v)),
                    es.map_or(0, Vec::len),
                    es.map(|v| short(v)),
                ));
            }
        }
    }
    out.truncate(limit);
    out
}

fn short(versions: &[Option<String>]) -> Vec<String> {
    versions
        .iter()
        .map(|v| {
            v.as_deref()
                .map_or("gone".to_owned(), |h| h[..8].to_owned())
        })
        .collect()
}

/// A lesson as a vendor's JSON item: an hour of activity `a1` on Monday
/// 8 September 2025, for vendors written by tests.
pub fn lesson(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "meta": { "created": "2025-09-01T06:00:00+02:00", "modified": "2025-09-01T06:00:00+02:00" },
        "activity": { "id": "a1" },
        "startTime": "2025-09-08T08:10:00+02:00",
        "endTime": "2025-09-08T09:10:00+02:00",
    })
}

/// The clock of vendors written by tests, in their `Date` header unless
/// a route sets its own: the week of their lessons ([`lesson`]), so that
/// the producer's read window around the vendor's today holds them.
pub const TEST_VENDOR_DATE: &str = "Wed, 10 Sep 2025 10:00:00 GMT";

/// A vendor written by a test: `routes` (its SS 12000 endpoints) behind an
/// OAuth2 token endpoint that grants any client, on 127.0.0.1 until the
/// runtime ends; its clock says [`TEST_VENDOR_DATE`]. Returns its base URL.
pub async fn serve_vendor(routes: axum::Router) -> Result<String, HarnessError> {
    let app = routes
        .route(
            "/oauth2/token",
            axum::routing::post(|| async {
                axum::Json(serde_json::json!({ "access_token": "t", "expires_in": 3600 }))
            }),
        )
        // The producer asks `/organisations` for the vendor's clock: a test
        // that does not serve it answers with an empty page, anything else
        // it does not serve is not found.
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().ends_with("/organisations") {
                axum::Json(serde_json::json!({ "data": [] })).into_response()
            } else {
                axum::http::StatusCode::NOT_FOUND.into_response()
            }
        })
        .layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                response
                    .headers_mut()
                    .entry(axum::http::header::DATE)
                    .or_insert(axum::http::HeaderValue::from_static(TEST_VENDOR_DATE));
                response
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| HarnessError::Environment(format!("binding a test vendor: {e}")))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| HarnessError::Environment(e.to_string()))?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The simulator's APIs on 127.0.0.1, in this process.
pub struct Vendor {
    pub url: String,
    pub state: Arc<AppState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vendor")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Vendor {
    /// Serve a simulation until dropped.
    pub async fn serve(sim: Simulation) -> Result<Self, HarnessError> {
        let state = AppState::new(sim);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError::Environment(format!("binding the simulator: {e}")))?;
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| HarnessError::Environment(e.to_string()))?
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, Arc::clone(&state), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            state,
            _stop: stop,
        })
    }

    /// What the vendor shows now, mapped as the producer maps it.
    pub fn view(
        &self,
        connection: &str,
        pseudonymiser: &Pseudonymiser,
    ) -> Result<View, HarnessError> {
        let sim = self.state.sim();
        let today = (sim.world.year.start_year, 8, 18);
        let cx = Context::new(pseudonymiser, connection, today);
        let mut view = View::new();
        for endpoint in Endpoint::ALL {
            let name = endpoint.name();
            let mut items = HashMap::new();
            for i in 0..sim.storage_len(name).unwrap_or(0) {
                let Some((_, item)) = sim.render(name, i) else {
                    continue;
                };
                let hashed = skolflode_producers::with_entity!(endpoint, E => {
                    E::map(&Json::from(&item), &cx).map(|m| hashed(m.entity))
                });
                let (id, hash) =
                    hashed.map_err(|e| HarnessError::Environment(format!("{name}: {e}")))?;
                items.insert(id, hash);
            }
            view.insert(name, items);
        }
        Ok(view)
    }
}

fn hashed<E: Entity>(e: E) -> (String, String) {
    (e.id().to_owned(), content_hash(&e))
}

/// Every committed change event of `connection` for entities `E`, in
/// order, with its entity id.
pub async fn change_events<E: Entity>(
    kafka: &TestKafka,
    connection: &str,
) -> Result<Vec<(String, ChangeEvent<E>)>, HarnessError> {
    let bad = |what: String| HarnessError::Environment(what);
    let topic = catalogue::change_topic::<E>()
        .ok_or_else(|| bad("no change topic".into()))?
        .name;
    let records = kafka
        .drain_keyed(
            topic,
            Isolation::ReadCommitted,
            Duration::from_secs(120),
            connection,
        )
        .await?;
    let mut out = Vec::new();
    for r in records {
        let key = r
            .key
            .as_deref()
            .ok_or_else(|| bad(format!("{topic}: a record without a key")))?;
        let (_, key) = wire::split(key).map_err(|e| bad(e.to_string()))?;
        let key = EntityKey::decode_all(key).map_err(|e| bad(e.to_string()))?;
        if key.connection != connection {
            continue;
        }
        let value = r
            .payload
            .as_deref()
            .ok_or_else(|| bad(format!("{topic}: a tombstone")))?;
        let (_, body) = wire::split(value).map_err(|e| bad(e.to_string()))?;
        let event = ChangeEvent::<E>::decode_all(body).map_err(|e| bad(e.to_string()))?;
        out.push((key.entity_id, event));
    }
    Ok(out)
}

/// Replay one change topic for a connection, checking every event against
/// what came before it: an update's before image is the last version, no
/// update changes nothing, nothing is created twice or deleted unseen.
async fn replay<E: Entity>(
    kafka: &TestKafka,
    connection: &str,
    event_ids: &mut Vec<String>,
    history: &mut HashMap<String, Vec<Option<String>>>,
) -> Result<HashMap<String, String>, HarnessError> {
    let bad = |what: String| HarnessError::Environment(what);
    let topic = catalogue::change_topic::<E>()
        .ok_or_else(|| bad("no change topic".into()))?
        .name;
    let mut state = HashMap::new();
    for (id, event) in change_events::<E>(kafka, connection).await? {
        event_ids.push(event.event_id.clone());
        match event.op {
            Op::Delete => {
                if state.remove(&id).is_none() {
                    return Err(bad(format!("{topic}: delete of unknown {id}")));
                }
                history.entry(id).or_default().push(None);
            }
            op => {
                let hash = event
                    .content_hash
                    .clone()
                    .ok_or_else(|| bad(format!("{topic}: no content hash")))?;
                let before = event.before.as_ref().map(content_hash);
                match op {
                    Op::Update if before.as_ref() != state.get(&id) => {
                        return Err(bad(format!(
                            "{topic}: {id}: the before image is not the last version"
                        )))
                    }
                    Op::Update if before.as_ref() == Some(&hash) => {
                        return Err(bad(format!(
                            "{topic}: {id}: an update that changes nothing"
                        )))
                    }
                    Op::Create | Op::SnapshotRead if state.contains_key(&id) => {
                        return Err(bad(format!("{topic}: {id} created twice")))
                    }
                    _ => {}
                }
                history
                    .entry(id.clone())
                    .or_default()
                    .push(Some(hash.clone()));
                state.insert(id, hash);
            }
        }
    }
    Ok(state)
}

/// Replay every change topic of a connection: the view they add up to, and
/// every event id in the order read.
pub async fn replay_all(
    kafka: &TestKafka,
    connection: &str,
) -> Result<(View, Vec<String>), HarnessError> {
    let (view, _, ids) = replay_history(kafka, connection).await?;
    Ok((view, ids))
}

/// Replay every change topic of a connection: the view they add up to, the
/// history of every entity, and every event id in the order read.
pub async fn replay_history(
    kafka: &TestKafka,
    connection: &str,
) -> Result<(View, History, Vec<String>), HarnessError> {
    let mut ids = Vec::new();
    let mut view = View::new();
    let mut history = History::new();
    for endpoint in Endpoint::ALL {
        let versions = history.entry(endpoint.name()).or_default();
        let replayed = skolflode_producers::with_entity!(endpoint, E => {
            replay::<E>(kafka, connection, &mut ids, versions).await?
        });
        view.insert(endpoint.name(), replayed);
    }
    Ok((view, history, ids))
}

/// Differences between two views, one line per endpoint that differs.
pub fn differences(replayed: &View, vendor: &View) -> Vec<String> {
    let mut out = Vec::new();
    for endpoint in Endpoint::ALL.map(Endpoint::name) {
        let empty = HashMap::new();
        let r = replayed.get(endpoint).unwrap_or(&empty);
        let v = vendor.get(endpoint).unwrap_or(&empty);
        let missing = v.keys().filter(|k| !r.contains_key(*k)).count();
        let extra = r.keys().filter(|k| !v.contains_key(*k)).count();
        let stale = v
            .iter()
            .filter(|(k, h)| r.get(*k).is_some_and(|rh| rh != *h))
            .count();
        if missing + extra + stale > 0 {
            out.push(format!(
                "{endpoint}: {missing} missing, {extra} extra, {stale} stale of {}",
                v.len()
            ));
        }
    }
    out
}
