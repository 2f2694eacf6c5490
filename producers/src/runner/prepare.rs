//! Fetching and preparing pages ahead of the runner.
//!
//! Everything that needs no state — the HTTP request, JSON parsing, mapping
//! to skolflode's entities, pseudonymisation, the content hash and the
//! encoded image — happens here, on other threads, a few pages ahead. The
//! runner is left with comparing hashes with its state and writing records,
//! in page order.

use std::collections::HashSet;
use std::sync::Arc;

use crate::detect::{report_digest, Version};
use crate::endpoint::Endpoint;
use crate::pseudonym::Pseudonymiser;
use crate::seal::{Sealed, Sealer};
use crate::ss12000::client::{FetchError, Filters, Page, Ss12000Client};
use crate::ss12000::json::Json;
use crate::ss12000::map::{Context, DutyIndex, Finding, Ss12000Entity};
use crate::ss12000::time;

/// Pages fetched or being prepared ahead of the one processed. While the
/// loop waits for a commit, preparing goes on, and what is prepared is
/// what the loop resumes with: 16 gave medians of 0.60–0.62 of the perf
/// tool in `scripts/bench-produce`, 8 gave 0.56–0.65 with single rounds as
/// low as 0.46; memory grows by about 10 MiB.
const AHEAD: usize = 16;

/// One item of a page, ready for the runner.
#[derive(Debug)]
pub(super) enum Prepared {
    /// A version of an entity, and what had to be repaired to read it.
    Version(Version, Vec<Finding>),
    /// An item that cannot be understood: it goes to the dead-letter topic,
    /// sealed.
    Rejected {
        id: Option<String>,
        reason: String,
        /// Of the reason and the raw bytes: the dead letter is published
        /// again only when it changes.
        digest: u64,
        sealed: Sealed,
    },
}

/// What preparing a page needs besides the page: the same for every page
/// of a read.
#[derive(Clone, Debug)]
pub(super) struct Preparer {
    pub pseudonymiser: Arc<Pseudonymiser>,
    pub sealer: Arc<Sealer>,
    pub connection: Arc<str>,
    pub zone: time::Zone,
    /// The connection's duties, for teachers given as persons.
    pub duties: Option<Arc<DutyIndex>>,
    /// Items longer than this are dead letters.
    pub max_item_bytes: usize,
}

/// A prepared page.
#[derive(Debug)]
pub(super) struct PreparedPage {
    pub items: Vec<Prepared>,
    /// Whether another page follows.
    pub more: bool,
    /// The vendor's clock when it answered.
    pub server_time: Option<i64>,
}

/// What a page read yields: the page token that fetched it (for
/// `source.cursor`) and the page, or why it could not be had.
pub(super) type Fetched = (
    Option<String>,
    Result<tokio::task::JoinHandle<PreparedPage>, FetchError>,
);

/// The UTC date of an instant, for reading 10-digit civic numbers.
pub(super) fn civil_today(millis: i64) -> (i32, u32, u32) {
    let (y, m, d) = time::civil_from_days(millis.div_euclid(86_400_000));
    (y as i32, m as u32, d as u32)
}

pub(super) use crate::ss12000::time::now_millis;

/// Map every item of a page.
pub(super) fn prepare(endpoint: Endpoint, page: Page, preparer: &Preparer) -> PreparedPage {
    PreparedPage {
        items: prepare_items(endpoint, page.items(), page.server_time, preparer),
        more: page.next.is_some(),
        server_time: page.server_time,
    }
}

/// Map items read at the vendor's `server_time` (else now).
fn prepare_items<'a>(
    endpoint: Endpoint,
    items: impl Iterator<Item = &'a str>,
    server_time: Option<i64>,
    preparer: &Preparer,
) -> Vec<Prepared> {
    let cx = Context {
        pseudonymiser: &preparer.pseudonymiser,
        source: &preparer.connection,
        today: civil_today(server_time.unwrap_or_else(now_millis)),
        zone: preparer.zone,
        duties: preparer.duties.as_deref(),
    };
    items
        .map(|item| {
            crate::with_entity!(endpoint, E => prepare_item::<E>(item, &cx, &preparer.sealer, preparer.max_item_bytes))
        })
        .collect()
}

/// Prepare the items of a page held whole (a delivered file) in batches of
/// `batch` on the blocking pool, at most [`AHEAD`] batches ahead of their
/// processing; they arrive in order.
pub(super) fn prepare_ahead(
    page: Arc<Page>,
    preparer: Preparer,
    endpoint: Endpoint,
    batch: usize,
) -> tokio::sync::mpsc::Receiver<tokio::task::JoinHandle<Vec<Prepared>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    tokio::spawn(async move {
        let batch = batch.max(1);
        let mut from = 0;
        while from < page.len() {
            let to = (from + batch).min(page.len());
            let (page, preparer) = (Arc::clone(&page), preparer.clone());
            let job = tokio::task::spawn_blocking(move || {
                prepare_items(
                    endpoint,
                    page.items().skip(from).take(to - from),
                    page.server_time,
                    &preparer,
                )
            });
            if tx.send(job).await.is_err() {
                return;
            }
            from = to;
        }
    });
    rx
}

/// Raw bytes a dead letter keeps at most: a record must fit Kafka's
/// message size whatever the vendor sent.
pub(super) const DEAD_LETTER_RAW_BYTES: usize = 64 << 10;

/// A dead letter's content, cut to [`DEAD_LETTER_RAW_BYTES`], redacted and
/// sealed; its digest; and its reason, which says the size and SHA-256 of
/// what was cut.
pub(super) fn seal(sealer: &Sealer, reason: &str, raw: &[u8]) -> (u64, String, Sealed) {
    let (reason, raw) = if raw.len() > DEAD_LETTER_RAW_BYTES {
        use sha2::Digest;
        (
            format!(
                "{reason} ({} bytes, SHA-256 {}; the first {DEAD_LETTER_RAW_BYTES} kept)",
                raw.len(),
                hex::encode(sha2::Sha256::digest(raw))
            ),
            &raw[..DEAD_LETTER_RAW_BYTES],
        )
    } else {
        (reason.to_owned(), raw)
    };
    let digest = report_digest([reason.as_bytes(), raw]);
    let sealed = sealer.seal(raw).unwrap_or_else(|e| {
        // Encrypting to valid recipients does not fail; should it, the
        // letter still says what failed, without the bytes.
        tracing::error!(error = %e, "a dead letter's raw bytes could not be encrypted; they are left out");
        Sealed {
            redacted: crate::seal::redact(raw),
            raw: Vec::new(),
            encryption: None,
        }
    });
    (digest, reason, sealed)
}

fn prepare_item<E: Ss12000Entity>(
    raw: &str,
    cx: &Context<'_>,
    sealer: &Sealer,
    max_item_bytes: usize,
) -> Prepared {
    let rejected = |id: Option<&str>, reason: String| {
        let (digest, reason, sealed) = seal(sealer, &reason, raw.as_bytes());
        Prepared::Rejected {
            id: id.map(str::to_owned),
            reason,
            digest,
            sealed,
        }
    };
    if raw.len() > max_item_bytes {
        // Not mapped: its change event, with the before image, would not
        // fit a Kafka record, and one item must not block the endpoint.
        // Its id is read, so that the entity still counts as served.
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        let id = serde_json::from_str::<IdOnly<'_>>(raw)
            .ok()
            .and_then(|i| i.id);
        return rejected(
            id.as_deref().filter(|id| !id.starts_with('#')),
            format!("an item longer than max_item_bytes = {max_item_bytes}"),
        );
    }
    // The page was checked to be JSON when it was read; this cannot fail
    // but for nesting deeper than the parser allows.
    let item = match Json::parse(raw) {
        Ok(item) => item,
        Err(e) => return rejected(None, format!("not JSON: {e}")),
    };
    match E::map(&item, cx) {
        // The state topic's keys set `#` apart for the producer's own
        // records: such an id cannot be held.
        Ok(mapped) if mapped.entity.id().starts_with('#') => rejected(
            None,
            "the id begins with '#', which skolflode cannot key".into(),
        ),
        Ok(mapped) => {
            let time = mapped.entity.window_time();
            Prepared::Version(Version::of(mapped.entity).aged(time), mapped.findings)
        }
        Err(e) => rejected(item.get("id").and_then(Json::as_str), e.to_string()),
    }
}

/// Fetch the pages of one query in a task of their own and prepare each on
/// the blocking pool, at most [`AHEAD`] ahead of their processing; they
/// arrive in order.
pub(super) fn fetch_ahead(
    client: Arc<Ss12000Client>,
    preparer: Preparer,
    endpoint: Endpoint,
    filters: Filters,
) -> tokio::sync::mpsc::Receiver<Fetched> {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    tokio::spawn(async move {
        let mut token: Option<String> = None;
        // A token handed out again would read the same pages for ever.
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            let fetched = client
                .page(endpoint.name(), token.as_deref(), &filters)
                .await;
            let (next, prepared) = match fetched {
                Ok(page) => {
                    let next = page.next.clone();
                    let preparer = preparer.clone();
                    let job =
                        tokio::task::spawn_blocking(move || prepare(endpoint, page, &preparer));
                    (next, Ok(job))
                }
                Err(e) => (None, Err(e)),
            };
            // A closed channel means the reader gave up: stop fetching.
            if tx.send((token, prepared)).await.is_err() {
                return;
            }
            match next {
                Some(n) if !seen.insert(n.clone()) => {
                    let loop_error = FetchError::Runaway {
                        endpoint: endpoint.name().to_owned(),
                        reason: format!(
                            "the vendor handed out a page token it had handed out before, \
                             after {} pages: its paging goes round in circles",
                            seen.len()
                        ),
                    };
                    let _ = tx.send((Some(n), Err(loop_error))).await;
                    return;
                }
                Some(n) => token = Some(n),
                None => return,
            }
        }
    });
    rx
}
