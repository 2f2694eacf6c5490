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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use skolflode_schemas::records::{Cursor, ProducerState};
use skolflode_schemas::state_key::StateKey;
use skolflode_schemas::wire;
use skolflode_schemas::TimestampMillis;

use super::config::FileDrop;
use super::prepare::{self, now_millis, Prepared, Preparer};
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

/// The file as a page, or why it is not one.
fn parse(bytes: Vec<u8>) -> Result<Page, String> {
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    Page::parse_export(text).map_err(|e| e.to_string())
}

impl Runner {
    /// Ingest or quarantine one delivered file. A read or move that fails
    /// leaves the file for the next poll.
    pub(super) async fn ingest(
        &mut self,
        files: &FileDrop,
        delivery: Delivery,
    ) -> Result<(), RunError> {
        let io = |what: &str, e: std::io::Error| RunError::Files {
            file: delivery.name.clone(),
            reason: format!("{what}: {}", e.kind()),
        };
        let Some(endpoint) = delivery.endpoint else {
            let reason = format!(
                "the file's name names no endpoint: name it <endpoint>[-anything].json, the \
                 endpoint one of {}",
                Endpoint::ALL.map(|e| e.name()).join(", ")
            );
            // Not read: its bytes are not the connection's to publish.
            return self.quarantine(files, &delivery, None, &reason, &[]).await;
        };
        let size = std::fs::metadata(&delivery.path)
            .map_err(|e| io("reading its size", e))?
            .len();
        if size > files.max_file_bytes {
            let reason = format!(
                "{size} bytes, more than files.max_file_bytes = {}",
                files.max_file_bytes
            );
            return self
                .quarantine(files, &delivery, Some(endpoint), &reason, &[])
                .await;
        }
        let bytes = std::fs::read(&delivery.path).map_err(|e| io("reading it", e))?;
        let sum = checksum(&bytes);
        if self.delivered.contains(&(endpoint, sum.clone())) {
            tracing::info!(connection = %self.config.name, file = %delivery.name, "delivered before: nothing published");
            return move_into(&delivery.path, &files.done(), None)
                .map_err(|e| io("moving it to done", e));
        }
        // What a dead letter keeps of the file; the file itself goes to
        // quarantine whole.
        let head = bytes[..bytes.len().min(prepare::DEAD_LETTER_RAW_BYTES)].to_vec();
        let page = match parse(bytes) {
            Ok(page) => page,
            Err(reason) => {
                let reason = format!("not an SS 12000 export (SHA-256 {sum}): {reason}");
                return self
                    .quarantine(files, &delivery, Some(endpoint), &reason, &head)
                    .await;
            }
        };
        let items = page.len();
        self.read_file(endpoint, &delivery.name, page, &sum).await?;
        tracing::info!(connection = %self.config.name, file = %delivery.name, endpoint = endpoint.name(), items, "file ingested");
        move_into(&delivery.path, &files.done(), None).map_err(|e| io("moving it to done", e))
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
        tracing::warn!(connection = %self.config.name, file = %delivery.name, reason, "file quarantined");
        move_into(&delivery.path, &files.quarantine(), Some(reason)).map_err(|e| RunError::Files {
            file: delivery.name.clone(),
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
        let preparer = Preparer {
            pseudonymiser: Arc::clone(&self.pseudonymiser),
            sealer: Arc::clone(&self.sealer),
            connection: Arc::from(self.config.name.as_str()),
            zone: self.config.timestamps_without_zone,
            duties: match endpoint {
                Endpoint::Activities => Some(Arc::new(self.duty_index()?)),
                _ => None,
            },
            max_item_bytes: self.config.max_item_bytes,
        };
        let source = self.source(endpoint.name(), Some(name), None);
        let page = Arc::new(page);
        let mut batches = prepare::prepare_ahead(Arc::clone(&page), preparer, endpoint, BATCH);
        let mut txn = Txn::default();
        while let Some(job) = batches.recv().await {
            let prepared = job.await?;
            let observed_at = TimestampMillis(now_millis());
            self.stats.items += prepared.len() as u64;
            read.items += prepared.len() as u64;
            for item in prepared {
                match item {
                    Prepared::Version(version, findings) => {
                        self.version(&mut read, version, findings, &source, observed_at, &mut txn)?
                    }
                    Prepared::Rejected {
                        id,
                        reason,
                        digest,
                        sealed,
                    } => {
                        self.rejected(&read, id, &reason, digest, sealed, observed_at, &mut txn)?
                    }
                }
            }
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
                modified_after: None,
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
