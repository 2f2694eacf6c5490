//! A well-behaved SS 12000 API client (and, through [`Ss12000Client::post`],
//! of vendor APIs beside it that are queried by POST with a JSON body,
//! such as the Skola24-style timetable API): OAuth2 client credentials with
//! refresh, `limit`/`pageToken` paging, connect and request timeouts,
//! retries with exponential backoff and full jitter, `429 Retry-After`,
//! bounded concurrency, a request-rate limit and an optional mTLS client
//! certificate.
//!
//! What is retried: transport errors and timeouts, 5xx, 429, 401 (after a
//! token refresh), and bodies that are not JSON (truncated pages). What is
//! not: other 4xx, and JSON of another shape than expected (retrying
//! cannot change it). When retries run out on a malformed body, the error
//! keeps the raw bytes so that the caller can send them to the dead-letter
//! topic.
//!
//! Paging follows the standard: a request with a `pageToken` carries only
//! `limit` besides it. Some vendors' tokens do not remember the filters and
//! refuse a token without them; a `400` to a token-only request is retried
//! once with the filters repeated, and if that works the client repeats
//! them from then on ([`Ss12000Client::repeats_filters`]).

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Semaphore;

/// A secret that is never printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach one vendor connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Base of the SS 12000 API, e.g. `http://127.0.0.1:8700/ss12000/v2`.
    pub base_url: String,
    /// OAuth2 token endpoint; no authentication when empty.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Items per page (`limit`).
    pub page_limit: u32,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Attempts per request after the first.
    pub max_retries: u32,
    /// First backoff; doubles per attempt up to `backoff_max_ms`, with full
    /// jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` honoured, in seconds.
    pub retry_after_max_secs: u64,
    /// Longest a request may take with its retries and their waits
    /// (default 300 s): no wait is begun that would pass it.
    pub max_request_secs: u64,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Requests per second at most; 0 for no limit.
    pub requests_per_second: f64,
    /// PEM file with the client certificate and key, for mTLS.
    pub client_identity_pem: Option<std::path::PathBuf>,
    /// The largest answer read (default 64 MiB): a longer body is cut
    /// there, its start goes to the dead-letter topic and the read fails.
    pub max_page_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            token_url: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            page_limit: 500,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_retries: 8,
            backoff_base_ms: 200,
            backoff_max_ms: 30_000,
            retry_after_max_secs: 120,
            max_request_secs: 300,
            max_concurrency: 4,
            requests_per_second: 0.0,
            client_identity_pem: None,
            max_page_bytes: 64 << 20,
        }
    }
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("{url} answered {status} ({}): {body}", status_hint(*status))]
    Status {
        url: String,
        status: u16,
        /// The first bytes of the body.
        body: String,
    },
    #[error("{url}: the answer is JSON but not what the standard describes ({reason})")]
    Shape { url: String, reason: String },
    #[error("{url}: {cause} (after {attempts} attempts)")]
    Transport {
        url: String,
        cause: String,
        attempts: u32,
    },
    #[error("{url}: the body is not a page of JSON ({reason}; after {attempts} attempts)")]
    Malformed {
        url: String,
        reason: String,
        raw: Vec<u8>,
        attempts: u32,
    },
    #[error("token endpoint {url}: {cause}")]
    Token { url: String, cause: String },
    #[error("{url}: the answer is longer than max_page_bytes = {limit}; cut there")]
    TooLarge {
        url: String,
        limit: usize,
        /// The body up to the limit.
        head: Vec<u8>,
    },
    /// A read that goes round in circles (a page token seen before) or
    /// far past the entities the vendor has shown.
    #[error("/{endpoint}: {reason}; the read stops and its open transaction is aborted")]
    Runaway { endpoint: String, reason: String },
}

impl FetchError {
    /// Whether the vendor says it does not serve the endpoint at all
    /// (404, 405, 501), as opposed to failing a request it serves.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 404 | 405 | 501,
                ..
            }
        )
    }
}

/// What an operator can do about a status.
fn status_hint(status: u16) -> &'static str {
    match status {
        400 => {
            "the vendor refused the request's parameters: check the endpoint's required \
                parameters and the connection's calendar_events window"
        }
        401 | 403 => {
            "the vendor refused the credentials or this client's access: check \
                      client_id, client_secret and the grants the vendor gave"
        }
        404 | 405 | 501 => {
            "the vendor does not serve this endpoint: remove it from the \
                            connection's endpoints, or check base_url"
        }
        _ => "a request the client does not retry",
    }
}

/// The filters of a read: sent with its first page, and with later pages
/// only to vendors that need them repeated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// `meta.modified.after` (RFC 3339).
    pub modified_after: Option<String>,
    /// `meta.created.after` (RFC 3339): attendance records are read from
    /// the start of the read window.
    pub created_after: Option<String>,
    /// `startTime.onOrAfter` and `startTime.onOrBefore` (RFC 3339), which
    /// the standard requires on `/calendarEvents`.
    pub start_time: Option<(String, String)>,
}

impl Filters {
    fn query(&self) -> String {
        let mut q = String::new();
        if let Some((from, to)) = &self.start_time {
            q.push_str(&format!(
                "&startTime.onOrAfter={}&startTime.onOrBefore={}",
                form_encode(from),
                form_encode(to)
            ));
        }
        if let Some(after) = &self.modified_after {
            q.push_str(&format!("&meta.modified.after={}", form_encode(after)));
        }
        if let Some(after) = &self.created_after {
            q.push_str(&format!("&meta.created.after={}", form_encode(after)));
        }
        q
    }
}

/// What `/deletedEntities` announced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deletions {
    /// Entity type as the vendor named it → ids.
    pub deleted: Vec<(String, Vec<String>)>,
    /// The vendor answered a flat list (`[{entityType, id, deletedAt}]`)
    /// instead of the standard's `data` object.
    pub flat: bool,
    /// The vendor's clock when it answered.
    pub server_time: Option<i64>,
    /// The token of the next page, while reading.
    next: Option<String>,
}

/// Pages of `/deletedEntities` read at most in one go.
const MAX_DELETION_PAGES: usize = 10_000;

/// Why a body could not be read.
#[derive(Debug)]
pub enum Unreadable {
    /// Not JSON (truncated, not UTF-8): worth asking again.
    Malformed(String),
    /// JSON of another shape: asking again changes nothing.
    Shape(String),
}

/// One page of items: the body as the vendor sent it, checked to be
/// JSON, and where each item is in it. Items are parsed by whoever maps
/// them, on another thread, and a dead letter keeps an item's own bytes.
#[derive(Debug)]
pub struct Page {
    body: String,
    items: Vec<Range<usize>>,
    /// The token of the next page, if there is one.
    pub next: Option<String>,
    /// The vendor's clock (HTTP `Date`), in UTC milliseconds.
    pub server_time: Option<i64>,
}

impl Page {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Each item's JSON text, in page order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.items
            .iter()
            .map(|r| self.body.get(r.clone()).unwrap_or(""))
    }
}

/// The page envelope: `data` is checked to be valid JSON but kept as text.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    data: Option<Vec<&'a RawValue>>,
    #[serde(rename = "pageToken", default)]
    page_token: Option<Value>,
}

/// Counters of what the client did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub retries: u64,
    pub token_refreshes: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub malformed: u64,
    pub transport_errors: u64,
}

#[derive(Debug)]
struct Token {
    value: String,
    expires: Instant,
}

/// The client of one vendor connection.
#[derive(Debug)]
pub struct Ss12000Client {
    config: ClientConfig,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    in_flight: Semaphore,
    next_slot: Mutex<Instant>,
    stats: Mutex<Stats>,
    jitter: Mutex<u64>,
    /// The vendor needs the filters repeated with every page token.
    repeat_filters: std::sync::atomic::AtomicBool,
}

enum Attempt<T> {
    Done(T),
    Retry {
        cause: String,
        wait: Option<Duration>,
        malformed: Option<(String, Vec<u8>)>,
    },
    Fail(FetchError),
}

impl Ss12000Client {
    /// Validate the configuration and build the client.
    pub fn new(config: ClientConfig) -> Result<Self, FetchError> {
        if config.base_url.is_empty() {
            return Err(FetchError::Config("base_url is empty".into()));
        }
        check_url("base_url", &config.base_url)?;
        if !config.token_url.is_empty() {
            check_url("token_url", &config.token_url)?;
        }
        if config.page_limit == 0 || config.max_concurrency == 0 || config.max_page_bytes == 0 {
            return Err(FetchError::Config(
                "page_limit, max_concurrency and max_page_bytes must be positive".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms));
        if let Some(path) = &config.client_identity_pem {
            let pem = std::fs::read(path).map_err(|e| {
                FetchError::Config(format!("reading {}: {}", path.display(), e.kind()))
            })?;
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| FetchError::Config(format!("client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| FetchError::Config(e.to_string()))?;
        Ok(Self {
            in_flight: Semaphore::new(config.max_concurrency),
            http,
            token: tokio::sync::Mutex::new(None),
            next_slot: Mutex::new(Instant::now()),
            stats: Mutex::new(Stats::default()),
            jitter: Mutex::new(0x2545_f491_4f6c_dd1d),
            repeat_filters: std::sync::atomic::AtomicBool::new(false),
            config,
        })
    }

    /// Whether the vendor turned out to need the filters repeated with
    /// every page token.
    pub fn repeats_filters(&self) -> bool {
        self.repeat_filters
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the client has done so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// Full jitter: a uniform wait in [0, min(max, base·2^attempt)].
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.config.backoff_max_ms);
        let r = match self.jitter.lock() {
            Ok(mut x) => {
                // xorshift64*
                *x ^= *x >> 12;
                *x ^= *x << 25;
                *x ^= *x >> 27;
                x.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
            Err(_) => 0,
        };
        Duration::from_millis(if cap == 0 { 0 } else { r % (cap + 1) })
    }

    async fn rate_limit(&self) {
        if self.config.requests_per_second <= 0.0 {
            return;
        }
        let interval = Duration::from_secs_f64(1.0 / self.config.requests_per_second);
        let wait = match self.next_slot.lock() {
            Ok(mut next) => {
                let now = Instant::now();
                let slot = (*next).max(now);
                *next = slot + interval;
                slot - now
            }
            Err(_) => Duration::ZERO,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn bearer(&self, refresh: bool) -> Result<Option<String>, FetchError> {
        self.bearer_within(refresh, self.config.max_retries + 1)
            .await
    }

    /// The bearer token, asked for at most `attempts` times.
    async fn bearer_within(
        &self,
        refresh: bool,
        attempts: u32,
    ) -> Result<Option<String>, FetchError> {
        if self.config.token_url.is_empty() {
            return Ok(None);
        }
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref() {
            if !refresh && Instant::now() < t.expires {
                return Ok(Some(t.value.clone()));
            }
        }
        self.count(|s| s.token_refreshes += 1);
        let url = &self.config.token_url;
        let failed = |cause: String| FetchError::Token {
            url: url.clone(),
            cause,
        };
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose()),
        ];
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait = self.backoff(attempt);
                say_wait(url, wait, attempt, attempts, &last);
                tokio::time::sleep(wait).await;
            }
            let response = self
                .http
                .post(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone())
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) if e.is_builder() => return Err(failed(with_causes(&e))),
                Err(e) if scheme_mismatch(&e) => {
                    return Err(failed(format!("{SCHEME_MISMATCH}: {}", with_causes(&e))))
                }
                Err(e) => {
                    last = self.transport_cause(&e);
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() || status.as_u16() == 429 {
                last = format!("status {status}");
                continue;
            }
            if !status.is_success() {
                return Err(failed(match status.as_u16() {
                    404 | 405 => {
                        format!("status {status}: no token endpoint there; check token_url")
                    }
                    _ => format!(
                        "status {status}: the credentials were refused; check client_id and \
                         client_secret"
                    ),
                }));
            }
            #[derive(Deserialize)]
            struct TokenResponse {
                access_token: String,
                expires_in: Option<u64>,
            }
            let parsed: TokenResponse = response
                .json()
                .await
                .map_err(|e| failed(format!("unexpected answer: {e}")))?;
            // Renew a little before the vendor says it expires.
            let lifetime = parsed.expires_in.unwrap_or(300).saturating_sub(30).max(1);
            *token = Some(Token {
                value: parsed.access_token.clone(),
                expires: Instant::now() + Duration::from_secs(lifetime),
            });
            return Ok(Some(parsed.access_token));
        }
        Err(failed(format!("{last} (after {attempts} attempts)")))
    }

    /// Check at start-up, in seconds, what a poll would otherwise find out
    /// only after its retries: that the hosts resolve, that the token
    /// endpoint takes the credentials, and that the vendor speaks the
    /// scheme the URL says. A vendor that is down or slow only gets a
    /// warning: the polls retry it.
    pub async fn probe(&self) -> Result<(), FetchError> {
        for (setting, url) in [
            ("base_url", &self.config.base_url),
            ("token_url", &self.config.token_url),
        ] {
            if url.is_empty() {
                continue;
            }
            let parsed = check_url(setting, url)?;
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let port = parsed.port_or_known_default().unwrap_or(443);
            let lookup = tokio::net::lookup_host(format!("{host}:{port}"));
            match tokio::time::timeout(PROBE_TIMEOUT, lookup).await {
                Ok(Ok(_)) => {}
                // Only a definite answer stops the start: a resolver that
                // is not ready yet, or a network reached through a proxy,
                // is the polls' to retry.
                Ok(Err(e)) if host_unknown(&e) && !behind_proxy() => {
                    return Err(FetchError::Config(format!(
                        "{setting}: the host {host:?} cannot be resolved ({e}); check the URL"
                    )))
                }
                Ok(Err(e)) => tracing::warn!(
                    setting,
                    host = %host,
                    error = %e,
                    "resolving the host failed at start-up; the polls will retry it"
                ),
                Err(_) => tracing::warn!(
                    setting,
                    host = %host,
                    "resolving the host took more than {} s; going on",
                    PROBE_TIMEOUT.as_secs()
                ),
            }
        }
        match tokio::time::timeout(PROBE_TIMEOUT, self.bearer_within(true, 1)).await {
            Ok(Ok(_)) => {}
            Ok(Err(FetchError::Token { cause, .. })) if cause.contains(SCHEME_MISMATCH) => {
                return Err(FetchError::Config(format!(
                    "token_url: {cause}; check https against http"
                )))
            }
            Ok(Err(FetchError::Token { cause, .. }))
                if ["400", "401", "403", "404", "405"]
                    .iter()
                    .any(|code| cause.starts_with(&format!("status {code} "))) =>
            {
                return Err(FetchError::Config(format!("token_url: {cause}")))
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the token endpoint did not answer at start-up; the polls will retry it"),
            Err(_) => tracing::warn!(
                "the token endpoint gave no answer within {} s at start-up; the polls will retry it",
                PROBE_TIMEOUT.as_secs()
            ),
        }
        let url = format!(
            "{}/organisations?limit=1",
            self.config.base_url.trim_end_matches('/')
        );
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(PROBE_TIMEOUT);
        let request = match self.token.lock().await.as_ref() {
            Some(token) => request.bearer_auth(&token.value),
            None => request,
        };
        if let Err(e) = request.send().await {
            let cause = self.transport_cause(&e);
            if scheme_mismatch(&e) {
                return Err(FetchError::Config(format!(
                    "base_url: {SCHEME_MISMATCH} ({cause}); check https against http"
                )));
            }
            tracing::warn!(url = %url, cause = %cause, "the vendor did not answer at start-up; the polls will retry it");
        }
        Ok(())
    }

    /// A failed request's cause, with timeouts named as such and the
    /// setting that bounds them.
    fn transport_cause(&self, e: &reqwest::Error) -> String {
        let cause = with_causes(e);
        if !e.is_timeout() {
            return cause;
        }
        if e.is_connect() {
            format!(
                "timed out connecting (connect_timeout_ms = {}): {cause}",
                self.config.connect_timeout_ms
            )
        } else {
            format!(
                "timed out: no whole answer within request_timeout_ms = {}: {cause}",
                self.config.request_timeout_ms
            )
        }
    }

    /// One page of an endpoint: the first page (with `limit` and the
    /// filters), or the page behind a token (with `limit`, and the filters
    /// only for vendors that need them repeated).
    pub async fn page(
        &self,
        endpoint: &str,
        page_token: Option<&str>,
        filters: &Filters,
    ) -> Result<Page, FetchError> {
        let base = format!(
            "{}/{endpoint}?limit={}",
            self.config.base_url.trim_end_matches('/'),
            self.config.page_limit
        );
        let Some(token) = page_token else {
            return self
                .get(&format!("{base}{}", filters.query()), parse_page)
                .await;
        };
        let token_only = format!("{base}&pageToken={}", form_encode(token));
        self.behind_token(&token_only, &filters.query(), parse_page)
            .await
    }

    /// The page behind a token: the token alone, as the standard says, or
    /// with the read's `filters` (a query suffix) repeated for a vendor
    /// that needs them — found out by its 400 to the token alone.
    async fn behind_token<T>(
        &self,
        token_only: &str,
        filters: &str,
        parse: impl Fn(&[u8], Option<i64>) -> Result<T, Unreadable>,
    ) -> Result<T, FetchError> {
        let repeated = format!("{token_only}{filters}");
        if self.repeats_filters() {
            return self.get(&repeated, parse).await;
        }
        match self.get(token_only, &parse).await {
            Err(FetchError::Status { status: 400, .. }) if !filters.is_empty() => {
                let page = self.get(&repeated, parse).await?;
                if !self
                    .repeat_filters
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        "the vendor refuses page tokens without the filters; repeating them with \
                         every token from now on (a deviation from SS 12000)"
                    );
                }
                Ok(page)
            }
            other => other,
        }
    }

    /// The vendor's clock (its `Date` header), from a one-item request to
    /// `/organisations`; `None` if it cannot be had.
    pub async fn server_time(&self) -> Option<i64> {
        let url = format!(
            "{}/organisations?limit=1",
            self.config.base_url.trim_end_matches('/')
        );
        self.get(&url, |_, server_time| Ok(server_time))
            .await
            .ok()
            .flatten()
    }

    /// `deletedEntities` after an instant (RFC 3339), in the standard's
    /// shape (every page of it) or as a flat list. No `limit` is sent: the
    /// standard lets the vendor choose, and vendors with a flat list offer
    /// none.
    pub async fn deleted_entities(&self, after: Option<&str>) -> Result<Deletions, FetchError> {
        let base = format!(
            "{}/deletedEntities",
            self.config.base_url.trim_end_matches('/')
        );
        let filter = after
            .map(|a| format!("after={}", form_encode(a)))
            .unwrap_or_default();
        let first = if filter.is_empty() {
            base.clone()
        } else {
            format!("{base}?{filter}")
        };
        let mut all = self.get(&first, parse_deletions).await?;
        let mut pages = 1;
        while let Some(token) = all.next.take() {
            pages += 1;
            if pages > MAX_DELETION_PAGES {
                return Err(FetchError::Shape {
                    url: base,
                    reason: format!("more than {MAX_DELETION_PAGES} pages of deletions"),
                });
            }
            let token_only = format!("{base}?pageToken={}", form_encode(&token));
            let filters = if filter.is_empty() {
                String::new()
            } else {
                format!("&{filter}")
            };
            let page = self
                .behind_token(&token_only, &filters, parse_deletions)
                .await?;
            for (kind, ids) in page.deleted {
                match all.deleted.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, known)) => known.extend(ids),
                    None => all.deleted.push((kind, ids)),
                }
            }
            all.server_time = page.server_time.or(all.server_time);
            all.next = page.next;
        }
        Ok(all)
    }

    async fn get<T>(
        &self,
        url: &str,
        parse: impl Fn(&[u8], Option<i64>) -> Result<T, Unreadable>,
    ) -> Result<T, FetchError> {
        self.request(url, None, parse).await
    }

    /// `POST {base_url}/{path}` with a JSON body, read as `parse` says,
    /// with the same credentials, retries, limits and errors as a page:
    /// for vendor APIs beside SS 12000 that are queried by POST (the
    /// Skola24-style timetable API).
    pub async fn post<T>(
        &self,
        path: &str,
        body: &str,
        parse: impl Fn(&[u8], Option<i64>) -> Result<T, Unreadable>,
    ) -> Result<T, FetchError> {
        let url = format!("{}/{path}", self.config.base_url.trim_end_matches('/'));
        self.request(&url, Some(body), parse).await
    }

    async fn request<T>(
        &self,
        url: &str,
        body: Option<&str>,
        parse: impl Fn(&[u8], Option<i64>) -> Result<T, Unreadable>,
    ) -> Result<T, FetchError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| FetchError::Config("client is shut down".into()))?;
        let mut refresh = false;
        let mut last_cause = String::new();
        let mut last_malformed: Option<(String, Vec<u8>)> = None;
        let budget = Duration::from_secs(self.config.max_request_secs);
        let began = Instant::now();
        let mut attempts = 0;
        for attempt in 0..=self.config.max_retries {
            if attempt > 0 {
                self.count(|s| s.retries += 1);
            }
            self.rate_limit().await;
            attempts = attempt + 1;
            match self.attempt(url, body, refresh, &parse).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry {
                    cause,
                    wait,
                    malformed,
                } => {
                    refresh = cause == "401";
                    last_malformed = malformed;
                    last_cause = cause;
                    if attempt == self.config.max_retries {
                        break;
                    }
                    let wait = wait.unwrap_or_else(|| self.backoff(attempt));
                    if began.elapsed() + wait > budget {
                        last_cause = format!(
                            "{last_cause}; gave up: another wait of {:.1} s would pass \
                             max_request_secs = {}",
                            wait.as_secs_f64(),
                            budget.as_secs()
                        );
                        break;
                    }
                    say_wait(
                        url,
                        wait,
                        attempt + 1,
                        self.config.max_retries + 1,
                        &last_cause,
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(match last_malformed {
            Some((reason, raw)) => FetchError::Malformed {
                url: url.to_owned(),
                reason,
                raw,
                attempts,
            },
            None => FetchError::Transport {
                url: url.to_owned(),
                cause: last_cause,
                attempts,
            },
        })
    }

    /// A request that failed on the way: counted, and retried after backoff.
    fn transport_error<T>(&self, e: reqwest::Error) -> Attempt<T> {
        if e.is_builder() {
            return Attempt::Fail(FetchError::Config(format!(
                "the request cannot be made: {}",
                with_causes(&e)
            )));
        }
        self.count(|s| s.transport_errors += 1);
        Attempt::Retry {
            cause: self.transport_cause(&e),
            wait: None,
            malformed: None,
        }
    }

    async fn attempt<T>(
        &self,
        url: &str,
        body: Option<&str>,
        refresh: bool,
        parse: &impl Fn(&[u8], Option<i64>) -> Result<T, Unreadable>,
    ) -> Attempt<T> {
        let bearer = match self.bearer(refresh).await {
            Ok(b) => b,
            Err(e) => return Attempt::Fail(e),
        };
        self.count(|s| s.requests += 1);
        let request = match body {
            None => self.http.get(url),
            Some(body) => self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned()),
        };
        let mut request = request.header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return self.transport_error(e),
        };
        let status = response.status();
        let server_time = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after_secs(v, super::time::now_millis()))
            .map(|asked| {
                let max = self.config.retry_after_max_secs;
                if asked > max {
                    tracing::warn!(
                        url,
                        "the vendor asked us to wait {asked} s; waiting {max} s, the configured \
                         maximum (retry_after_max_secs)"
                    );
                }
                Duration::from_secs(asked.min(max))
            });
        let body = match read_body(response, self.config.max_page_bytes).await {
            Ok(Ok(b)) => b,
            Ok(Err(head)) => {
                return Attempt::Fail(FetchError::TooLarge {
                    url: url.to_owned(),
                    limit: self.config.max_page_bytes,
                    head,
                })
            }
            Err(e) => return self.transport_error(e),
        };
        match status.as_u16() {
            200..=299 => match parse(&body, server_time) {
                Ok(value) => Attempt::Done(value),
                Err(Unreadable::Shape(reason)) => Attempt::Fail(FetchError::Shape {
                    url: url.to_owned(),
                    reason: crate::seal::scrub(&reason),
                }),
                Err(Unreadable::Malformed(reason)) => {
                    self.count(|s| s.malformed += 1);
                    Attempt::Retry {
                        cause: reason.clone(),
                        wait: None,
                        malformed: Some((reason, body.to_vec())),
                    }
                }
            },
            401 => Attempt::Retry {
                cause: "401".into(),
                wait: Some(Duration::ZERO),
                malformed: None,
            },
            429 => {
                self.count(|s| s.rate_limited += 1);
                Attempt::Retry {
                    cause: "429".into(),
                    wait: retry_after,
                    malformed: None,
                }
            }
            500..=599 => {
                self.count(|s| s.server_errors += 1);
                Attempt::Retry {
                    cause: format!("status {status}"),
                    wait: None,
                    malformed: None,
                }
            }
            code => Attempt::Fail(FetchError::Status {
                url: url.to_owned(),
                status: code,
                // For logs: no civic number or e-mail address a vendor
                // may quote in its error.
                body: crate::seal::scrub(
                    &String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>(),
                ),
            }),
        }
    }
}

/// Whether a serde_json error says the text is not JSON (as opposed to
/// JSON of another shape).
fn not_json(e: &serde_json::Error) -> bool {
    matches!(
        e.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    )
}

impl Page {
    /// A delivered file shaped as a page (`{"data": [...]}`), or why it is
    /// not one.
    pub fn parse_export(text: String) -> Result<Page, String> {
        let items = item_ranges(&text).map_err(|e| match e {
            Unreadable::Malformed(reason) | Unreadable::Shape(reason) => reason,
        })?;
        // The text is kept as it is: a delivered file can be large.
        Ok(Page {
            body: text,
            items: items.0,
            next: items.1,
            server_time: None,
        })
    }
}

fn parse_page(bytes: &[u8], server_time: Option<i64>) -> Result<Page, Unreadable> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| Unreadable::Malformed(format!("not UTF-8: {e}")))?;
    let (items, next) = item_ranges(text)?;
    Ok(Page {
        body: text.to_owned(),
        items,
        next,
        server_time,
    })
}

/// Where each item of a page's `data` array is in its text, and its next
/// page token.
fn item_ranges(text: &str) -> Result<(Vec<Range<usize>>, Option<String>), Unreadable> {
    let raw: RawPage<'_> = serde_json::from_str(text).map_err(|e| {
        if not_json(&e) {
            Unreadable::Malformed(format!("not JSON: {e}"))
        } else {
            Unreadable::Shape(format!("not a page: {e}"))
        }
    })?;
    let Some(data) = raw.data else {
        return Err(Unreadable::Shape("no data array".into()));
    };
    let start = text.as_ptr() as usize;
    let items = data
        .iter()
        .map(|item| {
            let from = item.get().as_ptr() as usize - start;
            from..from + item.get().len()
        })
        .collect();
    let next = raw
        .page_token
        .as_ref()
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((items, next))
}

/// `/deletedEntities` in either shape: the standard's `{"data": {"persons":
/// [ids], …}}`, or a flat list `[{"entityType": "Person", "id": …}]`.
fn parse_deletions(bytes: &[u8], server_time: Option<i64>) -> Result<Deletions, Unreadable> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if not_json(&e) {
            Unreadable::Malformed(format!("not JSON: {e}"))
        } else {
            Unreadable::Shape(e.to_string())
        }
    })?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(data) = value.get("data").and_then(Value::as_object) {
        return Ok(Deletions {
            deleted: data
                .iter()
                .map(|(k, ids)| (k.clone(), strings(ids)))
                .collect(),
            flat: false,
            server_time,
            next: value
                .get("pageToken")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    let Some(list) = value.as_array() else {
        return Err(Unreadable::Shape(
            "neither a data object nor a list of {entityType, id}".into(),
        ));
    };
    let mut deleted: Vec<(String, Vec<String>)> = Vec::new();
    for entry in list {
        let (Some(kind), Some(id)) = (
            entry.get("entityType").and_then(Value::as_str),
            entry.get("id").and_then(Value::as_str),
        ) else {
            return Err(Unreadable::Shape(
                "a flat deletion entry without entityType or id".into(),
            ));
        };
        match deleted.iter_mut().find(|(k, _)| k == kind) {
            Some((_, ids)) => ids.push(id.to_owned()),
            None => deleted.push((kind.to_owned(), vec![id.to_owned()])),
        }
    }
    Ok(Deletions {
        deleted,
        flat: true,
        server_time,
        next: None,
    })
}

/// An error and its causes as one line: reqwest's own message ("error
/// sending request") says nothing of what went wrong ("connection
/// refused", "dns error") without them.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A response's body, or its first `limit` bytes when it is longer.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Result<Vec<u8>, Vec<u8>>, reqwest::Error> {
    let expected = response.content_length().map_or(0, |n| n as usize);
    let mut body = Vec::with_capacity(expected.min(limit));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok(Err(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

/// How long the start-up checks wait for each answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A URL setting that can be requested: http or https, with a host.
fn check_url(setting: &str, url: &str) -> Result<reqwest::Url, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        FetchError::Config(format!(
            "{setting} {url:?} is not a URL ({e}); write it whole, e.g. https://vendor.example/ss12000/v2"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(FetchError::Config(format!(
            "{setting} {url:?} needs the scheme http:// or https:// and a host"
        )));
    }
    Ok(parsed)
}

/// What a token request's cause says when the two ends disagree on TLS.
const SCHEME_MISMATCH: &str = "the server does not speak the URL's scheme";

/// Whether a transport error says the two ends disagree on TLS: https to
/// a plain HTTP server (rustls reads an HTTP answer as a corrupt record),
/// or plain HTTP to a TLS one. Only the causes are read, not the message
/// that quotes the URL; a handshake cut short or a certificate refused is
/// something else.
fn scheme_mismatch(e: &reqwest::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string().to_ascii_lowercase();
        if [
            "corrupt message",
            "invalidcontenttype",
            "invalid http version",
        ]
        .iter()
        .any(|sign| text.contains(sign))
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether a failed lookup says the name does not exist (as opposed to a
/// resolver that failed for now).
fn host_unknown(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    [
        "not known",
        "no address associated",
        "nodename nor servname",
    ]
    .iter()
    .any(|sign| text.contains(sign))
}

/// Whether requests go through a proxy, which resolves names itself.
fn behind_proxy() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// A wait before the next attempt, said aloud when it is long enough to
/// notice.
fn say_wait(url: &str, wait: Duration, next: u32, attempts: u32, cause: &str) {
    if wait >= Duration::from_secs(1) {
        tracing::info!(
            url,
            "waiting {:.1} s before attempt {} of {attempts}: {cause}",
            wait.as_secs_f64(),
            next + 1
        );
    } else {
        tracing::debug!(url, attempt = next + 1, cause, "retrying");
    }
}

/// `Retry-After` in seconds, from either form the standard allows:
/// delay-seconds or an HTTP date (`now` in UTC milliseconds).
fn retry_after_secs(value: &str, now: i64) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    parse_http_date(value).map(|at| u64::try_from((at - now).max(0) / 1000).unwrap_or(0))
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → UTC milliseconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let days = super::time::days_from_civil(year, month, day);
    Some(((days * 86_400) + h * 3600 + m * 60 + s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 31 Aug 2025 22:00:00 GMT"),
            Some(1_756_677_600_000)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn secrets_are_not_printed() {
        let config = ClientConfig {
            client_secret: Secret::new("hunter2"),
            ..ClientConfig::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn pages_parse_and_malformed_bodies_are_explained() {
        let page = parse_page(br#"{"data":[{"id":"a"}],"pageToken":"t"}"#, None);
        assert!(
            matches!(page, Ok(Page { ref items, next: Some(ref t), .. }) if items.len() == 1 && t == "t")
        );
        assert!(matches!(
            parse_page(br#"{"data":[{"id":"a"}"#, None),
            Err(Unreadable::Malformed(_))
        ));
        assert!(matches!(
            parse_page(b"\xff\xfe", None),
            Err(Unreadable::Malformed(_))
        ));
        assert!(matches!(
            parse_page(br#"{"items":[]}"#, None),
            Err(Unreadable::Shape(_))
        ));
        assert!(matches!(
            parse_page(br#"[1, 2]"#, None),
            Err(Unreadable::Shape(_))
        ));
    }

    #[tokio::test]
    async fn transport_errors_say_what_went_wrong() {
        // Nothing listens on port 9 of 127.0.0.1.
        let client = Ss12000Client::new(ClientConfig {
            base_url: "http://127.0.0.1:9/ss12000/v2".into(),
            max_retries: 0,
            ..ClientConfig::default()
        });
        let error = match client {
            Ok(c) => c.page("persons", None, &Filters::default()).await.err(),
            Err(e) => Some(e),
        };
        let text = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[test]
    fn deletions_read_in_both_shapes() {
        let standard = parse_deletions(
            br#"{"data":{"persons":["p1","p2"]},"pageToken":null}"#,
            None,
        );
        assert!(
            matches!(standard, Ok(ref d) if !d.flat && d.deleted == vec![("persons".to_owned(), vec!["p1".to_owned(), "p2".to_owned()])])
        );
        let flat = parse_deletions(
            br#"[{"entityType":"Person","id":"p1","deletedAt":"2025-09-01T10:00:00"},{"entityType":"Duty","id":"d1"},{"entityType":"Person","id":"p2"}]"#,
            None,
        );
        assert!(
            matches!(flat, Ok(ref d) if d.flat && d.deleted.len() == 2 && d.deleted[0].1.len() == 2)
        );
        assert!(matches!(
            parse_deletions(br#"{"nothing":1}"#, None),
            Err(Unreadable::Shape(_))
        ));
        assert!(matches!(
            parse_deletions(br#"[{"id":"x"}]"#, None),
            Err(Unreadable::Shape(_))
        ));
        assert!(matches!(
            parse_deletions(br#"[{"id""#, None),
            Err(Unreadable::Malformed(_))
        ));
    }
}
