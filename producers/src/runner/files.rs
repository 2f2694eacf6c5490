//! Connections fed by files: SS 12000 JSON exports dropped in a directory
//! (`[connections.files]`), for vendors and schools that can only deliver
//! files.
//!
//! Each file is one entity type's whole export, shaped as an API page. A
//! file is read whole and checked whole before anything of it is published:
//! one that cannot be read is quarantined (moved aside with its reason, and
//! a dead letter published), and nothing of it reaches the change topics.
//! One that can is ingested as a full read of its endpoint: what changed
//! since the previous delivery becomes change events, what is missing from
//! it is deleted. Its SHA-256 is recorded in the state topic in the same
//! transaction as its last events, so a file delivered again, or found
//! again after a crash, publishes nothing a second time; a crash part-way
//! through reads the file again, and the content hashes absorb what was
//! published before it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use skolflode_schemas::records::{Cursor, ProducerState};
use skolflode_schemas::state_key::StateKey;
use skolflode_schemas::wire;
use skolflode_schemas::TimestampMillis;

use super::config::FileDrop;
use super::id_map::{CompactId, Key};
use super::prepare::{self, now_millis};
use super::txn::{self, Txn};
use super::{target, Read, RunError, Runner, PRODUCER_STATE};
use crate::endpoint::Endpoint;
use crate::ss12000::client::Page;

/// Items prepared per batch on the blocking pool.
const BATCH: usize = 1_000;

/// A file waiting in the drop directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Delivery {
    pub path: PathBuf,
    /// The file's name.
    pub name: String,
    /// The endpoint its name gives, if any.
    pub endpoint: Option<Endpoint>,
}

/// Create the drop's directories for ingested and quarantined files; the
/// drop directory itself must exist.
pub(super) fn prepare_dirs(drop: &FileDrop) -> Result<(), String> {
    if !drop.dir.is_dir() {
        return Err(format!(
            "files.dir {} is not a directory",
            drop.dir.display()
        ));
    }
    for dir in [drop.done(), drop.quarantine()] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("creating {}: {}", dir.display(), e.kind()))?;
    }
    Ok(())
}

/// The endpoint a file's name gives: `<endpoint>.json` or
/// `<endpoint>-<anything>.json`.
pub(super) fn endpoint_of(name: &str) -> Option<Endpoint> {
    let stem = name.strip_suffix(".json")?;
    let endpoint = stem.split_once('-').map_or(stem, |(e, _)| e);
    Endpoint::from_name(endpoint)
}

/// The files waiting, in the order they are ingested: by endpoint (in
/// [`Endpoint::ALL`]'s order, which puts what others refer to first), then
/// by name, so that deliveries named by date come in date order. Files
/// named for no endpoint come last.
pub(super) fn waiting(drop: &FileDrop) -> std::io::Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&drop.dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".json") || !entry.file_type()?.is_file() {
            continue;
        }
        out.push(Delivery {
            path: entry.path(),
            endpoint: endpoint_of(&name),
            name,
        });
    }
    let rank = |d: &Delivery| {
        d.endpoint
            .and_then(|e| Endpoint::ALL.iter().position(|a| *a == e))
            .unwrap_or(Endpoint::ALL.len())
    };
    out.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// Move a file into `dir` (replacing one of the same name), and write
/// `reason` beside it when there is one.
fn move_into(path: &Path, dir: &Path, reason: Option<&str>) -> std::io::Result<()> {
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let to = dir.join(name);
    if let Some(reason) = reason {
        let mut note = to.clone().into_os_string();
        note.push(".reason.txt");
        std::fs::write(note, format!("{reason}\n"))?;
    }
    std::fs::rename(path, to)
}

/// Lowercase hex SHA-256.
fn checksum(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The file as a page, or why it is not one (scrubbed: a parser's message
/// may quote the file's content).
fn parse(bytes: Vec<u8>) -> Result<Page, String> {
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    Page::parse_export(text).map_err(|e| crate::seal::scrub(&e))
}

/// The first 16 hex digits of a SHA-256.
fn short(sum: &str) -> &str {
    sum.get(..16).unwrap_or(sum)
}

/// A file's name as logs and errors show it: as it is when it has the
/// shape deliveries are named in, else only a hash of it (a school may
/// name a file after a pupil).
pub(super) fn shown(name: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let long_number = name
        .split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() >= 10);
    if plain && !long_number && name.len() <= 100 {
        name.to_owned()
    } else {
        format!(
            "(a file whose name hashes to {})",
            short(&checksum(name.as_bytes()))
        )
    }
}

impl Runner {
    /// Ingest or quarantine one delivered file; whether it was (a file
    /// left for a later poll, too fresh or changed while read, was not).
    /// A read or move that fails leaves the file for the next poll.
    pub(super) async fn ingest(
        &mut self,
        files: &FileDrop,
        delivery: Delivery,
    ) -> Result<bool, RunError> {
        let shown = shown(&delivery.name);
        let io = |what: &str, e: std::io::Error| RunError::Files {
            file: shown.clone(),
            reason: format!("{what}: {}", e.kind()),
        };
        let Some(endpoint) = delivery.endpoint else {
            let reason = format!(
                "the file's name (SHA-256 of the name {}) names no endpoint: name it \
                 <endpoint>[-anything].json, the endpoint one of {}",
                short(&checksum(delivery.name.as_bytes())),
                Endpoint::ALL.map(|e| e.name()).join(", ")
            );
            // Not read: its bytes are not the connection's to publish.
            self.quarantine(files, &delivery, None, &reason, &[])
                .await?;
            return Ok(true);
        };
        // One handle for the size, the time and the bytes: a file that
        // grows while read is not read past the limit.
        let mut file = std::fs::File::open(&delivery.path).map_err(|e| io("opening it", e))?;
        let before = file.metadata().map_err(|e| io("reading its size", e))?;
        let fresh = before
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age.as_secs() < files.settle_secs);
        if fresh {
            return Ok(false);
        }
        let mut bytes = Vec::with_capacity(before.len().min(files.max_file_bytes) as usize);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut file, files.max_file_bytes.saturating_add(1)),
            &mut bytes,
        )
        .map_err(|e| io("reading it", e))?;
        if bytes.len() as u64 > files.max_file_bytes {
            let reason = format!(
                "more than files.max_file_bytes = {} bytes (SHA-256 of the name {})",
                files.max_file_bytes,
                short(&checksum(delivery.name.as_bytes()))
            );
            self.quarantine(files, &delivery, Some(endpoint), &reason, &[])
                .await?;
            return Ok(true);
        }
        let sum = checksum(&bytes);
        let unchanged = || {
            // Replaced or rewritten since it was read: the new content is
            // the next poll's to read.
            let now = std::fs::metadata(&delivery.path).ok();
            now.is_some_and(|m| {
                m.len() == before.len() && m.modified().ok() == before.modified().ok()
            })
        };
        if self.delivered.contains(&(endpoint, sum.clone())) {
            tracing::info!(connection = %self.config.name, file = %shown, "delivered before: nothing published");
            if unchanged() {
                move_into(&delivery.path, &files.done(), None)
                    .map_err(|e| io("moving it to done", e))?;
            }
            return Ok(true);
        }
        let last = self
            .cursors
            .get(endpoint.name())
            .and_then(|c| c.modified_after.clone());
        if last.as_ref().is_some_and(|last| delivery.name < *last) {
            let reason = format!(
                "older than the delivery of {} already ingested (file names order deliveries; \
                 SHA-256 {sum}): ingested, it would take the data back",
                endpoint.name()
            );
            self.quarantine(files, &delivery, Some(endpoint), &reason, &[])
                .await?;
            return Ok(true);
        }
        // What a dead letter keeps of the file; the file itself goes to
        // quarantine whole.
        let head = bytes[..bytes.len().min(prepare::DEAD_LETTER_RAW_BYTES)].to_vec();
        let page = match parse(bytes) {
            Ok(page) if page.next.is_some() => Err(
                "a page of a paged export (it has a pageToken): deliver the whole export in one \
                 file"
                    .to_owned(),
            ),
            other => other,
        };
        let page = match page.and_then(|page| self.deletes_too_much(files, endpoint, page)) {
            Ok(page) => page,
            Err(reason) => {
                let reason = format!("not ingested (SHA-256 {sum}): {reason}");
                self.quarantine(files, &delivery, Some(endpoint), &reason, &head)
                    .await?;
                return Ok(true);
            }
        };
        let items = page.len();
        self.read_file(endpoint, &delivery.name, page, &sum).await?;
        tracing::info!(connection = %self.config.name, file = %shown, endpoint = endpoint.name(), items, "file ingested");
        if unchanged() {
            move_into(&delivery.path, &files.done(), None)
                .map_err(|e| io("moving it to done", e))?;
        } else {
            tracing::warn!(connection = %self.config.name, file = %shown, "the file changed while it was read; it is read again at the next poll");
        }
        Ok(true)
    }

    /// The page, unless ingesting it would delete more than
    /// `max_delete_share` of the entities held for the endpoint.
    fn deletes_too_much(
        &self,
        files: &FileDrop,
        endpoint: Endpoint,
        page: Page,
    ) -> Result<Page, String> {
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        let in_file: HashSet<CompactId> = page
            .items()
            .filter_map(|raw| serde_json::from_str::<IdOnly<'_>>(raw).ok()?.id)
            .map(|id| *Key::new(&id).compact())
            .collect();
        let held = || {
            self.holding
                .entries(endpoint)
                .filter(|e| !e.is_placeholder())
        };
        let (held_count, gone) = (
            held().count(),
            held().filter(|e| !in_file.contains(e.id())).count(),
        );
        if held_count > 0 && gone as f64 > files.max_delete_share * held_count as f64 {
            return Err(format!(
                "it would delete {gone} of the {held_count} {} held, more than \
                 files.max_delete_share = {}: an empty or partial export? Deliver the whole \
                 export, or raise the share for this delivery",
                endpoint.name(),
                files.max_delete_share
            ));
        }
        Ok(page)
    }

    /// A file that cannot be ingested: a dead letter with the reason (and
    /// the bytes, sealed), published once per file, and the file moved to
    /// the quarantine directory beside its reason.
    async fn quarantine(
        &mut self,
        files: &FileDrop,
        delivery: &Delivery,
        endpoint: Option<Endpoint>,
        reason: &str,
        bytes: &[u8],
    ) -> Result<(), RunError> {
        let mut txn = Txn::default();
        let endpoint_name = endpoint.map_or("files", |e| e.name());
        let (digest, sealed_reason, sealed) = prepare::seal(&self.sealer, reason, bytes);
        let key = super::DialectKey {
            endpoint: endpoint_name.to_owned(),
            kind: "QUARANTINED_FILE".to_owned(),
            field: format!("{digest:016x}"),
        };
        if self.once(&mut txn, key) {
            self.dead_letter(
                &mut txn,
                &format!("/{endpoint_name}"),
                &sealed_reason,
                None,
                sealed,
            );
        }
        self.commit(&mut txn).await?;
        tracing::warn!(connection = %self.config.name, file = %shown(&delivery.name), reason, "file quarantined");
        move_into(&delivery.path, &files.quarantine(), Some(reason)).map_err(|e| RunError::Files {
            file: shown(&delivery.name),
            reason: format!("moving it to quarantine: {}", e.kind()),
        })
    }

    /// A full read of `endpoint` from a file's items: change events for
    /// what changed since the previous delivery, deletes for what is no
    /// longer in it, and the file's checksum with the last of them.
    async fn read_file(
        &mut self,
        endpoint: Endpoint,
        name: &str,
        page: Page,
        sum: &str,
    ) -> Result<(), RunError> {
        let cursor = self.cursors.get(endpoint.name()).cloned();
        let initial = cursor.as_ref().is_none_or(|c| c.full_reads == 0);
        self.full_reads += 1;
        let number = self.full_reads;
        let mut read = Read {
            endpoint,
            target: target(endpoint)?,
            initial,
            full: Some(number),
            newest: None,
            window: None,
            retire_before: None,
            dialects_seen: Vec::new(),
            items: 0,
            max_items: None,
        };
        let preparer = self.preparer(endpoint)?;
        let source = self.source(
            endpoint.name(),
            Some(&format!("sha256:{}", short(sum))),
            None,
        );
        let page = Arc::new(page);
        let mut batches = prepare::prepare_ahead(Arc::clone(&page), preparer, endpoint, BATCH);
        let mut txn = Txn::default();
        while let Some(job) = batches.recv().await {
            let prepared = job.await?;
            let observed_at = TimestampMillis(now_millis());
            self.stats.items += prepared.len() as u64;
            read.items += prepared.len() as u64;
            self.prepared(&mut read, prepared, &source, observed_at, &mut txn)?;
            if txn.len() >= self.config.max_transaction_records || txn.age() > txn::TXN_MAX_AGE {
                self.commit(&mut txn).await?;
            } else {
                self.send(&mut txn).await?;
            }
        }
        let observed_at = TimestampMillis(now_millis());
        self.reconcile(&read, number, &source, observed_at, &mut txn)?;
        let delivery = StateKey::Delivery {
            connection: &self.config.name,
            endpoint: endpoint.name(),
            checksum: sum,
        };
        txn.push((
            PRODUCER_STATE,
            delivery.encode(self.ids.string_key),
            Some(wire::encode(
                self.ids.producer_state,
                &ProducerState {
                    entity: None,
                    cursor: None,
                },
            )),
        ));
        txn.delivered.push((endpoint, sum.to_owned()));
        txn.cursors.insert(
            endpoint.name().to_owned(),
            Cursor {
                // The name of the delivery last ingested: an older one
                // found later is not ingested over it.
                modified_after: Some(name.to_owned()),
                full_reads: cursor.as_ref().map_or(0, |c| c.full_reads) + 1,
                polls: cursor.as_ref().map_or(0, |c| c.polls) + 1,
                updated_at: observed_at,
            },
        );
        self.commit(&mut txn).await?;
        self.held_after_read.insert(endpoint, self.held(endpoint));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_may_be_personal_are_not_shown() {
        assert_eq!(shown("persons-2025-09-01.json"), "persons-2025-09-01.json");
        for personal in [
            "persons-201203041234.json",
            "anna.a@skola.se.json",
            "persons åsa.json",
        ] {
            assert!(
                shown(personal).starts_with("(a file whose name hashes to "),
                "{personal}"
            );
        }
    }

    #[test]
    fn a_file_s_name_gives_its_endpoint() {
        assert_eq!(endpoint_of("persons.json"), Some(Endpoint::Persons));
        assert_eq!(
            endpoint_of("calendarEvents-2025-W36.json"),
            Some(Endpoint::CalendarEvents)
        );
        assert_eq!(endpoint_of("persons.json.part"), None);
        assert_eq!(endpoint_of("pupils.json"), None);
    }

    #[test]
    fn files_wait_in_endpoint_then_name_order() {
        let dir = std::env::temp_dir().join(format!("skolflode-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        for name in [
            "groups-2.json",
            "persons-2.json",
            "persons-1.json",
            "notes.json",
            ".persons-3.json",
            "organisations.json.tmp",
        ] {
            std::fs::write(dir.join(name), "{}").unwrap_or_default();
        }
        let names: Vec<String> = waiting(&FileDrop::new(&dir))
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.name)
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            names,
            [
                "persons-1.json",
                "persons-2.json",
                "groups-2.json",
                "notes.json"
            ]
        );
    }
}
