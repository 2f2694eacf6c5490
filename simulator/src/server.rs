//! The vendors' HTTP APIs on 127.0.0.1, plus a control API that moves
//! simulated time.
//!
//! - `POST /oauth2/token`: OAuth2 client credentials (form body or HTTP
//!   Basic); tokens expire after `token_lifetime_secs` of wall time.
//! - `GET /ss12000/v2/{endpoint}`: SS 12000 entities with `limit`,
//!   `pageToken` and `meta.modified.after`; `calendarEvents` requires the
//!   window `startTime.onOrAfter` and `startTime.onOrBefore` (RFC 3339 with
//!   a zone, both inclusive); bearer token required.
//! - `GET /ss12000/v2/deletedEntities` with `after`, `limit`, `pageToken`.
//!
//! Requests are held to the specification like a strict vendor would
//! ([`ss12000::QUERY_PARAMETERS`]); every refusal is a 400
//! `{"code": "invalid_filter", "message": …}`: a parameter the
//! specification does not define for the endpoint (`unknown query
//! parameter X`), one it defines but the simulator does not implement (`…
//! is not supported by this simulator`), a parameter given twice, a
//! missing required one, a malformed value, or a `pageToken` with filters
//! (only `limit` may accompany it; the token carries the first request's
//! filters). Page tokens are opaque and deterministic; one of another
//! endpoint is `invalid_page_token`. The vendor's
//! [`crate::config::Dialect`] changes the JSON and two rules: with
//! `filters_with_page_token` every page-token request must repeat the first
//! request's filters exactly, and `unsupported_endpoints` answer 404
//! `endpoint not supported`.
//! - `POST /skola24/v0/units`, `POST /skola24/v0/students
//!   {"unitGuid"}`, `POST /skola24/v0/lessons {"unitGuid", "year",
//!   "week"}`: the Skola24-style timetable vendor, same bearer tokens.
//! - `GET /control/status`, `POST /control/advance?days=N` or
//!   `?until=YYYY-MM-DD`, `POST /control/finish` (writes the remaining
//!   ground truth).
//!
//! Every response carries the simulated time in its `Date` header. API
//! faults are drawn from the seed and the request's sequence number, so the
//! same run of requests meets the same faults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::ids;
use crate::sim::Simulation;
use crate::ss12000::{self, Param, ENDPOINTS};

/// Shared state of the running simulator.
#[derive(Debug)]
pub struct AppState {
    sim: Mutex<Simulation>,
    tokens: Mutex<HashMap<String, Instant>>,
    requests: AtomicU64,
    issued: AtomicU64,
    /// The latest SS 12000 requests, for tests that hold a client's
    /// requests to the specification.
    log: Mutex<std::collections::VecDeque<LoggedRequest>>,
}

/// One SS 12000 request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `persons`, `calendarEvents`, `deletedEntities`, …
    pub endpoint: String,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
}

/// Requests kept in the log; older ones are dropped.
const LOGGED_REQUESTS: usize = 200_000;

impl AppState {
    pub fn new(sim: Simulation) -> Arc<Self> {
        Arc::new(Self {
            sim: Mutex::new(sim),
            tokens: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            log: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// The latest SS 12000 requests received (at most 200 000), oldest
    /// first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record(&self, endpoint: &str, query: &[(String, String)]) {
        if let Ok(mut log) = self.log.lock() {
            if log.len() == LOGGED_REQUESTS {
                log.pop_front();
            }
            log.push_back(LoggedRequest {
                endpoint: endpoint.to_owned(),
                query: query.to_vec(),
            });
        }
    }

    /// The simulation, for in-process control (tests, the CLI).
    pub fn sim(&self) -> MutexGuard<'_, Simulation> {
        // A panic while holding the lock leaves a consistent-enough world
        // for a simulator; keep serving.
        self.sim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The router for all APIs.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/ss12000/v2/deletedEntities", get(deleted_entities))
        .route("/ss12000/v2/{endpoint}", get(entities))
        .route("/skola24/v0/{operation}", post(skola24))
        .route("/control/status", get(status))
        .route("/control/advance", post(advance))
        .route("/control/finish", post(finish))
        .with_state(state)
}

fn http_date(millis: i64) -> HeaderValue {
    let text = chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    HeaderValue::from_str(&text)
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

fn with_date(now: i64, status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::DATE, http_date(now));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(now: i64, status: StatusCode, code: &str, message: &str) -> Response {
    with_date(
        now,
        status,
        json!({ "code": code, "message": message }).to_string(),
    )
}

async fn token(State(state): State<Arc<AppState>>, headers: HeaderMap, body: String) -> Response {
    let (now, config) = {
        let sim = state.sim();
        (
            sim.now,
            (
                sim.config.client_id.clone(),
                sim.config.client_secret.clone(),
                sim.config.token_lifetime_secs,
                sim.config.seed,
            ),
        )
    };
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace('+', " ")))
        .collect();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(decode_base64)
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(
            now,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if id != config.0 || secret != config.1 {
        return error(
            now,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let n = state.issued.fetch_add(1, Ordering::Relaxed);
    let token = format!(
        "{:016x}{:016x}",
        ids::hash(&[config.3, 0x70c3, n]),
        ids::mix(n)
    );
    if let Ok(mut tokens) = state.tokens.lock() {
        tokens.insert(
            token.clone(),
            Instant::now() + Duration::from_secs(config.2),
        );
    }
    with_date(
        now,
        StatusCode::OK,
        json!({ "access_token": token, "token_type": "Bearer", "expires_in": config.2 })
            .to_string(),
    )
}

fn decode_base64(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn authorised(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    state
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(token).copied())
        .is_some_and(|expiry| Instant::now() < expiry)
}

/// A fault for this request, if one is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    ExpiredToken,
    ServerError,
    RateLimited,
    Truncated,
    RepeatedItem,
    Slow,
}

fn draw_fault(sim: &Simulation, request: u64) -> Option<Fault> {
    let f = &sim.config.faults;
    let u = (ids::hash(&[sim.config.seed, 0xfa17, request]) >> 11) as f64 / (1u64 << 53) as f64;
    let table = [
        (f.expired_tokens, Fault::ExpiredToken),
        (f.server_errors, Fault::ServerError),
        (f.rate_limited, Fault::RateLimited),
        (f.truncated_json, Fault::Truncated),
        (f.repeated_items, Fault::RepeatedItem),
        (f.slow_responses, Fault::Slow),
    ];
    let mut acc = 0.0;
    table.iter().find_map(|(rate, fault)| {
        acc += rate;
        (u < acc).then_some(*fault)
    })
}

/// The filters of a first-page request, which its page tokens carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Filters {
    /// `meta.modified.after`, or `after` on `/deletedEntities`.
    after: Option<i64>,
    /// `startTime.onOrAfter`.
    start_from: Option<i64>,
    /// `startTime.onOrBefore`.
    start_to: Option<i64>,
    /// `meta.created.after`.
    created_after: Option<i64>,
}

/// A page token: the endpoint, where its next page starts, and the first
/// request's filters, as hex of `endpoint:cursor:after:from:to` (`-` for
/// none). Opaque to clients, and the same for the same requests.
fn encode_token(endpoint: &str, cursor: usize, filters: Filters) -> String {
    let part = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let text = format!(
        "{endpoint}:{cursor}:{}:{}:{}:{}",
        part(filters.after),
        part(filters.start_from),
        part(filters.start_to),
        part(filters.created_after)
    );
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<(String, usize, Filters)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let parts: Vec<&str> = text.split(':').collect();
    let [endpoint, cursor, after, from, to, created] = parts[..] else {
        return None;
    };
    let part = |p: &str| -> Option<Option<i64>> {
        match p {
            "-" => Some(None),
            v => v.parse().ok().map(Some),
        }
    };
    let filters = Filters {
        after: part(after)?,
        start_from: part(from)?,
        start_to: part(to)?,
        created_after: part(created)?,
    };
    Some((endpoint.to_owned(), cursor.parse().ok()?, filters))
}

/// Parse an RFC 3339 instant; a strict vendor rejects anything else.
fn parse_instant(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A refused request: the status, the error code and the message.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn filter(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, "invalid_filter", message.into())
    }

    fn into_response(self, now: i64) -> Response {
        error(now, self.0, self.1, &self.2)
    }
}

/// How the vendor reads a request's parameters.
#[derive(Clone, Copy, Debug, Default)]
struct Rules {
    /// [`crate::config::Dialect::filters_with_page_token`].
    filters_with_page_token: bool,
    /// `limit` and `pageToken` are offered (not by a flat deletion feed).
    paging: bool,
}

/// A page request, checked against the specification's parameters for its
/// endpoint.
#[derive(Debug, PartialEq, Eq)]
struct PageRequest {
    limit: Option<usize>,
    cursor: usize,
    filters: Filters,
}

/// Check a request's query parameters (in the order given) against
/// [`ss12000::QUERY_PARAMETERS`]: unknown or unimplemented parameters,
/// repeated ones, page tokens with filters (or, in the
/// `filters_with_page_token` dialect, without the first request's
/// filters), missing required ones, and their values.
fn page_request(
    endpoint: &str,
    params: &[(String, String)],
    rules: Rules,
) -> Result<PageRequest, Refusal> {
    let table = ss12000::query_parameters(endpoint).ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint".to_owned(),
        )
    })?;
    let mut given: Vec<(Param, &str)> = Vec::with_capacity(params.len());
    for (name, value) in params {
        let Some(param) = table.iter().copied().find(|p| p.name() == name) else {
            return Err(Refusal::filter(format!("unknown query parameter {name}")));
        };
        if !param.implemented() {
            return Err(Refusal::filter(format!(
                "query parameter {name} is not supported by this simulator"
            )));
        }
        if !rules.paging && matches!(param, Param::Limit | Param::PageToken) {
            return Err(Refusal::filter(format!(
                "query parameter {name} is not supported by this simulator's flat deletedEntities"
            )));
        }
        if given.iter().any(|(p, _)| *p == param) {
            return Err(Refusal::filter(format!(
                "query parameter {name} is given more than once"
            )));
        }
        given.push((param, value));
    }
    let value = |param: Param| given.iter().find(|(p, _)| *p == param).map(|(_, v)| *v);
    let limit = match value(Param::Limit).map(str::parse::<usize>) {
        None => None,
        Some(Ok(l)) if (1..=10_000).contains(&l) => Some(l),
        Some(_) => return Err(Refusal::filter("limit must be 1 to 10000")),
    };
    let instant = |param: Param| -> Result<Option<i64>, Refusal> {
        value(param)
            .map(|text| {
                parse_instant(text).ok_or_else(|| {
                    Refusal::filter(format!(
                        "{} must be RFC 3339 with a time zone",
                        param.name()
                    ))
                })
            })
            .transpose()
    };
    let filters = || -> Result<Filters, Refusal> {
        Ok(Filters {
            after: instant(Param::ModifiedAfter)?.or(instant(Param::DeletedAfter)?),
            start_from: instant(Param::StartTimeOnOrAfter)?,
            start_to: instant(Param::StartTimeOnOrBefore)?,
            created_after: instant(Param::CreatedAfter)?,
        })
    };
    if let Some(token) = value(Param::PageToken) {
        let with_filters = given.iter().any(|(p, _)| p.is_filter());
        if with_filters && !rules.filters_with_page_token {
            return Err(Refusal::filter(
                "pageToken cannot be combined with other filters",
            ));
        }
        let Some((cursor, remembered)) = decode_token(token)
            .filter(|(e, _, _)| e == endpoint)
            .map(|(_, cursor, filters)| (cursor, filters))
        else {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "invalid_page_token",
                "unknown pageToken".to_owned(),
            ));
        };
        if rules.filters_with_page_token && filters()? != remembered {
            return Err(Refusal::filter("filters must be repeated with pageToken"));
        }
        return Ok(PageRequest {
            limit,
            cursor,
            filters: remembered,
        });
    }
    let missing: Vec<&str> = table
        .iter()
        .filter(|p| p.required() && value(**p).is_none())
        .map(|p| p.name())
        .collect();
    if !missing.is_empty() {
        return Err(Refusal::filter(format!(
            "missing required query parameter {}",
            missing.join(", ")
        )));
    }
    let filters = filters()?;
    if let (Some(from), Some(to)) = (filters.start_from, filters.start_to) {
        if from > to {
            return Err(Refusal::filter(
                "startTime.onOrAfter must not be after startTime.onOrBefore",
            ));
        }
    }
    Ok(PageRequest {
        limit,
        cursor: 0,
        filters,
    })
}

/// The vendor does not offer `endpoint` in its dialect.
fn unsupported(sim: &Simulation, endpoint: &str) -> bool {
    sim.config
        .vendor
        .dialect
        .unsupported_endpoints
        .iter()
        .any(|e| e == endpoint)
}

fn not_supported(now: i64) -> Response {
    error(
        now,
        StatusCode::NOT_FOUND,
        "not_found",
        "endpoint not supported",
    )
}

/// Authentication and the faults that end a request early. Returns the
/// simulated time and any fault that shapes the answer (truncation,
/// repeats).
async fn gate(state: &AppState, headers: &HeaderMap) -> Result<(i64, Option<Fault>), Response> {
    let request = state.requests.fetch_add(1, Ordering::Relaxed);
    let (now, fault, slow_ms, retry_after) = {
        let sim = state.sim();
        (
            sim.now,
            draw_fault(&sim, request),
            sim.config.faults.slow_ms,
            sim.config.faults.retry_after_secs,
        )
    };
    if !authorised(state, headers) || fault == Some(Fault::ExpiredToken) {
        let mut r = error(
            now,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing, unknown or expired access token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return Err(r);
    }
    match fault {
        Some(Fault::ServerError) => Err(error(
            now,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "simulated server error",
        )),
        Some(Fault::RateLimited) => {
            let mut r = error(
                now,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "slow down",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(r)
        }
        Some(Fault::Slow) => {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            Ok((now, fault))
        }
        _ => Ok((now, fault)),
    }
}

fn truncate_if(fault: Option<Fault>, body: String) -> String {
    if fault != Some(Fault::Truncated) {
        return body;
    }
    let mut cut = body.len() / 2;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body[..cut].to_owned()
}

async fn skola24(
    State(state): State<Arc<AppState>>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (now, fault) = match gate(&state, &headers).await {
        Ok(pass) => pass,
        Err(response) => return response,
    };
    let request: Value = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    now,
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("body is not JSON: {e}"),
                )
            }
        }
    };
    let unit = request["unitGuid"].as_str().unwrap_or_default();
    let answer = {
        let sim = state.sim();
        match operation.as_str() {
            "units" => Some(sim.skola24_units()),
            "students" => sim.skola24_students(unit),
            "lessons" => {
                let year = request["year"].as_i64().and_then(|y| i32::try_from(y).ok());
                let week = request["week"].as_u64().and_then(|w| u32::try_from(w).ok());
                match (year, week) {
                    (Some(y), Some(w)) => sim.skola24_lessons(unit, y, w),
                    _ => {
                        return error(
                            now,
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "give year and week",
                        )
                    }
                }
            }
            _ => return error(now, StatusCode::NOT_FOUND, "not_found", "no such operation"),
        }
    };
    match answer {
        Some(v) => with_date(now, StatusCode::OK, truncate_if(fault, v.to_string())),
        None => error(
            now,
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown unitGuid or week",
        ),
    }
}

async fn entities(
    State(state): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    state.record(&endpoint, &params);
    let (now, fault) = match gate(&state, &headers).await {
        Ok(pass) => pass,
        Err(response) => return response,
    };
    if !ENDPOINTS.contains(&endpoint.as_str()) {
        return error(now, StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    let sim = state.sim();
    if unsupported(&sim, &endpoint) {
        return not_supported(now);
    }
    let rules = Rules {
        filters_with_page_token: sim.config.vendor.dialect.filters_with_page_token,
        paging: true,
    };
    let request = match page_request(&endpoint, &params, rules) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(now),
    };
    let filters = request.filters;
    let query = ss12000::Query {
        limit: request.limit.unwrap_or(100),
        cursor: request.cursor,
        modified_after: filters.after,
        created_after: filters.created_after,
        window: filters.start_from.zip(filters.start_to),
        repeat_last: fault == Some(Fault::RepeatedItem),
    };
    let body = match sim.page_body(&endpoint, &query, |n| encode_token(&endpoint, n, filters)) {
        Some((body, _, _)) => body,
        None => return error(now, StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    drop(sim);
    with_date(now, StatusCode::OK, truncate_if(fault, body))
}

async fn deleted_entities(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    const ENDPOINT: &str = "deletedEntities";
    state.record(ENDPOINT, &params);
    let now = state.sim().now;
    if !authorised(&state, &headers) {
        return error(
            now,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing, unknown or expired access token",
        );
    }
    let sim = state.sim();
    if unsupported(&sim, ENDPOINT) {
        return not_supported(now);
    }
    let dialect = &sim.config.vendor.dialect;
    let rules = Rules {
        filters_with_page_token: dialect.filters_with_page_token,
        paging: !dialect.flat_deleted_entities,
    };
    let request = match page_request(ENDPOINT, &params, rules) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(now),
    };
    let filters = request.filters;
    let body = sim
        .deleted_page(
            filters.after,
            request.cursor,
            request.limit.unwrap_or(usize::MAX),
            |n| encode_token(ENDPOINT, n, filters),
        )
        .to_string();
    drop(sim);
    with_date(now, StatusCode::OK, body)
}

fn status_json(sim: &Simulation) -> Value {
    json!({
        "now": crate::sim::utc(sim.now),
        "next_day": sim.day.format("%Y-%m-%d").to_string(),
        "school_year": sim.world.year.label(),
        "persons": sim.world.persons.len(),
        "activities": sim.world.activities.len(),
        "calendar_events": sim.lessons.len(),
        "attendances": sim.records.len(),
        "changes_logged": sim.changes_logged(),
    })
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    let sim = state.sim();
    with_date(sim.now, StatusCode::OK, status_json(&sim).to_string())
}

async fn advance(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let state2 = Arc::clone(&state);
    let result = tokio::task::spawn_blocking(move || {
        let mut sim = state2.sim();
        let outcome = if let Some(days) = params.get("days") {
            days.parse::<u32>()
                .map_err(|e| e.to_string())
                .and_then(|d| sim.advance_days(d).map_err(|e| e.to_string()))
        } else if let Some(until) = params.get("until") {
            chrono::NaiveDate::parse_from_str(until, "%Y-%m-%d")
                .map_err(|e| e.to_string())
                .and_then(|d| sim.advance_to(d).map_err(|e| e.to_string()))
        } else {
            Err("give days=N or until=YYYY-MM-DD".to_owned())
        };
        (sim.now, outcome, status_json(&sim))
    })
    .await;
    match result {
        Ok((now, Ok(()), body)) => with_date(now, StatusCode::OK, body.to_string()),
        Ok((now, Err(e), _)) => error(now, StatusCode::BAD_REQUEST, "bad_request", &e),
        Err(e) => error(
            0,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

async fn finish(State(state): State<Arc<AppState>>) -> Response {
    let mut sim = state.sim();
    match sim.finish() {
        Ok(()) => with_date(sim.now, StatusCode::OK, status_json(&sim).to_string()),
        Err(e) => error(
            sim.now,
            StatusCode::INTERNAL_SERVER_ERROR,
            "io",
            &e.to_string(),
        ),
    }
}

/// Serve until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip() {
        let filters = Filters {
            after: Some(1_700_000_000_000),
            start_from: Some(-5),
            start_to: None,
            created_after: Some(7),
        };
        assert_eq!(
            decode_token(&encode_token("persons", 42, filters)),
            Some(("persons".to_owned(), 42, filters))
        );
        assert_eq!(
            decode_token(&encode_token("groups", 0, Filters::default())),
            Some(("groups".to_owned(), 0, Filters::default()))
        );
        assert_eq!(decode_token("zz"), None);
    }

    fn params(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn message(result: Result<PageRequest, Refusal>) -> String {
        match result {
            Ok(request) => format!("accepted {request:?}"),
            Err(Refusal(_, code, message)) => format!("{code}: {message}"),
        }
    }

    #[test]
    fn requests_are_checked_against_the_specification() {
        let standard = Rules {
            filters_with_page_token: false,
            paging: true,
        };
        let check = |endpoint: &str, query: &[(&str, &str)]| {
            message(page_request(endpoint, &params(query), standard))
        };
        assert_eq!(
            check("persons", &[("limit", "5"), ("colour", "red")]),
            "invalid_filter: unknown query parameter colour"
        );
        assert_eq!(
            check("persons", &[("sortkey", "ModifiedDesc")]),
            "invalid_filter: query parameter sortkey is not supported by this simulator"
        );
        assert_eq!(
            check("attendances", &[("startTime.onOrAfter", "x")]),
            "invalid_filter: unknown query parameter startTime.onOrAfter"
        );
        assert_eq!(
            check("persons", &[("limit", "5"), ("limit", "6")]),
            "invalid_filter: query parameter limit is given more than once"
        );
        assert_eq!(
            check("calendarEvents", &[("limit", "5")]),
            "invalid_filter: missing required query parameter startTime.onOrAfter, startTime.onOrBefore"
        );
        assert_eq!(
            check(
                "calendarEvents",
                &[("startTime.onOrAfter", "2025-09-01T00:00:00+02:00")]
            ),
            "invalid_filter: missing required query parameter startTime.onOrBefore"
        );
        assert_eq!(
            check(
                "calendarEvents",
                &[
                    ("startTime.onOrAfter", "2025-09-01T00:00:00"),
                    ("startTime.onOrBefore", "2025-09-02T00:00:00Z")
                ]
            ),
            "invalid_filter: startTime.onOrAfter must be RFC 3339 with a time zone"
        );
        assert_eq!(
            check(
                "calendarEvents",
                &[
                    ("startTime.onOrAfter", "2025-09-03T00:00:00Z"),
                    ("startTime.onOrBefore", "2025-09-02T00:00:00Z")
                ]
            ),
            "invalid_filter: startTime.onOrAfter must not be after startTime.onOrBefore"
        );
        let token = encode_token("persons", 7, Filters::default());
        assert_eq!(
            check("persons", &[("pageToken", &token), ("limit", "3")]),
            "accepted PageRequest { limit: Some(3), cursor: 7, filters: Filters { after: None, start_from: None, start_to: None, created_after: None } }"
        );
        assert_eq!(
            check(
                "persons",
                &[
                    ("pageToken", &token),
                    ("meta.modified.after", "2025-09-01T00:00:00Z")
                ]
            ),
            "invalid_filter: pageToken cannot be combined with other filters"
        );
        assert_eq!(
            check("groups", &[("pageToken", &token)]),
            "invalid_page_token: unknown pageToken"
        );
    }

    #[test]
    fn repeated_filters_must_match_the_page_token() {
        let rules = Rules {
            filters_with_page_token: true,
            paging: true,
        };
        let after = "2025-09-01T00:00:00+02:00";
        let filters = Filters {
            after: parse_instant(after),
            ..Filters::default()
        };
        let token = encode_token("persons", 3, filters);
        let check =
            |query: &[(&str, &str)]| message(page_request("persons", &params(query), rules));
        assert_eq!(
            check(&[("pageToken", &token)]),
            "invalid_filter: filters must be repeated with pageToken"
        );
        assert_eq!(
            check(&[
                ("pageToken", &token),
                ("meta.modified.after", "2025-09-02T00:00:00+02:00")
            ]),
            "invalid_filter: filters must be repeated with pageToken"
        );
        assert!(
            check(&[("pageToken", &token), ("meta.modified.after", after)]).starts_with("accepted")
        );
        let flat = Rules {
            filters_with_page_token: false,
            paging: false,
        };
        assert_eq!(
            message(page_request("deletedEntities", &params(&[("limit", "3")]), flat)),
            "invalid_filter: query parameter limit is not supported by this simulator's flat deletedEntities"
        );
    }

    #[test]
    fn basic_auth_decodes() {
        assert_eq!(
            decode_base64("c2tvbGZsb2RlOnNlY3JldA==").as_deref(),
            Some("skolflode:secret")
        );
    }
}
