//! A connection's configuration (`[[connections]]`), with its defaults and
//! the checks made before anything is read.

use serde::Deserialize;

use crate::endpoint::Endpoint;
use crate::ss12000::client::ClientConfig;
use crate::ss12000::time::Zone;

use super::RunError;

/// Records after which a transaction is committed before the read goes on
/// (the default of `max_transaction_records`). A commit waits for the
/// broker to acknowledge the transaction's tail, and the connection's loop
/// idles meanwhile; see `docs/performance.md` for the measurements behind
/// the value.
const MAX_TXN_RECORDS: usize = 24_000;

/// One vendor connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// The connection's name: `source.connection` of its events, part of
    /// every key, and of the fallback person keys. Never change it.
    pub name: String,
    /// Endpoints to read (default: all of them).
    #[serde(default = "ConnectionConfig::default_endpoints")]
    pub endpoints: Vec<Endpoint>,
    /// Seconds between polls (default 300).
    #[serde(default = "ConnectionConfig::default_poll")]
    pub poll_interval_secs: u64,
    /// Every this many polls an endpoint is read in full and compared with
    /// what is held, to find deletions and changes the vendor did not
    /// announce (default 12).
    #[serde(default = "ConnectionConfig::default_full")]
    pub full_read_every: i64,
    /// Incremental reads start this many seconds before the newest
    /// `meta.modified` seen, for clock skew and equal timestamps (default
    /// 300).
    #[serde(default = "ConnectionConfig::default_overlap")]
    pub overlap_secs: i64,
    /// Read `/deletedEntities` (default true).
    #[serde(default = "ConnectionConfig::default_true")]
    pub deletion_feed: bool,
    /// Records after which a transaction is committed before the read
    /// goes on (default 24 000, at least 100). Larger means fewer commits
    /// and more memory; a transaction must commit within librdkafka's
    /// `transaction.timeout.ms`.
    #[serde(default = "ConnectionConfig::default_txn_records")]
    pub max_transaction_records: usize,
    /// A read that returns more than this many times the entities held for
    /// its endpoint (counted as at least `max_read_floor`) is stopped as
    /// runaway, and its open transaction is aborted (default 10); the
    /// entities held are counted after the last read that ended. The first
    /// read of an endpoint has nothing to compare with and is not bounded
    /// this way.
    #[serde(default = "ConnectionConfig::default_read_factor")]
    pub max_read_factor: u32,
    /// The least count of entities held that `max_read_factor` multiplies
    /// (default 100 000): lessons and attendance records grow by a whole
    /// school day at once, from nothing at the start of a term.
    #[serde(default = "ConnectionConfig::default_read_floor")]
    pub max_read_floor: u64,
    /// An item longer than this (bytes of JSON, default 256 KiB) goes to
    /// the dead-letter topic, cut, with its size and SHA-256, and the read
    /// goes on. Its change event carries it twice (before and after), so
    /// twice this must fit Kafka's record size: at most about 450 KiB unless
    /// `message.max.bytes` is raised in `[kafka.properties]` (and on the
    /// broker).
    #[serde(default = "ConnectionConfig::default_item_bytes")]
    pub max_item_bytes: usize,
    /// The zone of the vendor's date-times that carry none:
    /// `"Europe/Stockholm"` (default) or `"UTC"`. Each field read this way
    /// is reported once as a `ZONE_ASSUMED` finding.
    #[serde(default)]
    pub timestamps_without_zone: Zone,
    /// Which lessons are read: the standard requires a `startTime` window
    /// on `/calendarEvents`. Its `past_weeks` also bounds attendance
    /// records, by their creation: older ones are retired.
    #[serde(default)]
    pub calendar_events: CalendarWindow,
    /// Directory of the connection's side store: the images of the
    /// entities held, which become the `before` of the next event (default:
    /// the system's temporary directory). The store is rebuilt from the
    /// state topic at every start and deleted at stop; it takes about the
    /// size of the images held (roughly 0.4 KiB an entity).
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
    /// The vendor's API. Left out for a connection fed by files.
    #[serde(default)]
    pub client: ClientConfig,
    /// Read SS 12000 JSON files dropped in a directory instead of an API
    /// (`docs/vendors.md`, "Files").
    #[serde(default)]
    pub files: Option<FileDrop>,
}

/// A directory where a vendor or school drops SS 12000 JSON exports: one
/// file per entity type and delivery, named `<endpoint>[-anything].json`
/// (`persons-2025-09-01.json`), shaped as an API page (`{"data": [...]}`),
/// each the whole of that entity type as it stands. Files whose names
/// begin with `.` or do not end in `.json` are left alone (uploads in
/// progress).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDrop {
    pub dir: std::path::PathBuf,
    /// Where ingested files are moved (default `<dir>/done`).
    #[serde(default)]
    pub done_dir: Option<std::path::PathBuf>,
    /// Where files that cannot be read are moved, each beside a
    /// `<file>.reason.txt` (default `<dir>/quarantine`).
    #[serde(default)]
    pub quarantine_dir: Option<std::path::PathBuf>,
    /// A larger file is quarantined unread (default 1 GiB): a file is read
    /// whole, and checked whole, before anything of it is published.
    #[serde(default = "FileDrop::default_max_bytes")]
    pub max_file_bytes: u64,
    /// A file modified less than this many seconds ago is left for a later
    /// poll (default 10): one still being written is not read half-way.
    #[serde(default = "FileDrop::default_settle")]
    pub settle_secs: u64,
    /// A delivery that would delete more than this share of the entities
    /// held for its endpoint is quarantined instead (default 0.5): an empty
    /// or partial export is a mistake more often than a school closing
    /// half its classes.
    #[serde(default = "FileDrop::default_delete_share")]
    pub max_delete_share: f64,
}

impl FileDrop {
    fn default_max_bytes() -> u64 {
        1 << 30
    }

    fn default_settle() -> u64 {
        10
    }

    fn default_delete_share() -> f64 {
        0.5
    }

    /// A drop in `dir` with every default.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            done_dir: None,
            quarantine_dir: None,
            max_file_bytes: Self::default_max_bytes(),
            settle_secs: Self::default_settle(),
            max_delete_share: Self::default_delete_share(),
        }
    }

    pub fn done(&self) -> std::path::PathBuf {
        self.done_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("done"))
    }

    pub fn quarantine(&self) -> std::path::PathBuf {
        self.quarantine_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("quarantine"))
    }
}

/// The span of lessons read from `/calendarEvents`, around the vendor's
/// today, in slices of bounded size. Lessons that have left the window are
/// final for the producer: a change to them is not read, and they are
/// never reported deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarWindow {
    /// Whole weeks before today (default 4): how late a vendor may still
    /// change a lesson and be heard.
    pub past_weeks: u32,
    /// Whole weeks after today (default 2): how far ahead the timetable
    /// is read.
    pub future_weeks: u32,
    /// Days per request window (default 7): each slice is read with its
    /// own `startTime.onOrAfter`/`onOrBefore`, so that one read never asks
    /// a vendor for months of lessons at once.
    pub slice_days: u32,
}

impl Default for CalendarWindow {
    fn default() -> Self {
        Self {
            past_weeks: 4,
            future_weeks: 2,
            slice_days: 7,
        }
    }
}

const DAY_MILLIS: i64 = 86_400_000;

impl CalendarWindow {
    /// The window's start around `now` (UTC milliseconds): the UTC
    /// midnight `past_weeks` weeks before today's. Lessons that started,
    /// and attendance records created, before it are final for the
    /// producer.
    pub fn start(&self, now: i64) -> i64 {
        let today = now.div_euclid(DAY_MILLIS) * DAY_MILLIS;
        today - i64::from(self.past_weeks) * 7 * DAY_MILLIS
    }

    /// The window around the instant `now` (UTC milliseconds): from the
    /// start of the UTC day `past_weeks` weeks back to the end of the UTC
    /// day `future_weeks` weeks ahead, as half-open millisecond ranges of
    /// at most `slice_days` days each, oldest first.
    pub fn slices(&self, now: i64) -> Vec<(i64, i64)> {
        let today = now.div_euclid(DAY_MILLIS) * DAY_MILLIS;
        let start = today - i64::from(self.past_weeks) * 7 * DAY_MILLIS;
        let end = today + (i64::from(self.future_weeks) * 7 + 1) * DAY_MILLIS;
        let step = i64::from(self.slice_days.max(1)) * DAY_MILLIS;
        let mut out = Vec::new();
        let mut from = start;
        while from < end {
            let to = (from + step).min(end);
            out.push((from, to));
            from = to;
        }
        out
    }
}

impl ConnectionConfig {
    fn default_endpoints() -> Vec<Endpoint> {
        Endpoint::ALL.to_vec()
    }
    fn default_poll() -> u64 {
        300
    }
    fn default_full() -> i64 {
        12
    }
    fn default_overlap() -> i64 {
        300
    }
    fn default_true() -> bool {
        true
    }
    fn default_txn_records() -> usize {
        MAX_TXN_RECORDS
    }
    fn default_read_factor() -> u32 {
        10
    }
    fn default_read_floor() -> u64 {
        100_000
    }
    fn default_item_bytes() -> usize {
        256 << 10
    }

    /// A connection with every default, reading `client`.
    pub fn new(name: impl Into<String>, client: ClientConfig) -> Self {
        Self {
            name: name.into(),
            endpoints: Self::default_endpoints(),
            poll_interval_secs: Self::default_poll(),
            full_read_every: Self::default_full(),
            overlap_secs: Self::default_overlap(),
            deletion_feed: true,
            max_transaction_records: MAX_TXN_RECORDS,
            max_read_factor: Self::default_read_factor(),
            max_read_floor: Self::default_read_floor(),
            max_item_bytes: Self::default_item_bytes(),
            timestamps_without_zone: Zone::default(),
            calendar_events: CalendarWindow::default(),
            state_dir: None,
            client,
            files: None,
        }
    }

    /// A connection with every default, fed by files dropped in `drop.dir`.
    pub fn from_files(name: impl Into<String>, drop: FileDrop) -> Self {
        Self {
            deletion_feed: false,
            files: Some(drop),
            ..Self::new(name, ClientConfig::default())
        }
    }

    /// Check what can be checked before reading.
    pub fn validate(&self) -> Result<(), RunError> {
        let bad = |what: String| {
            Err(RunError::Config(format!(
                "connection {:?}: {what}",
                self.name
            )))
        };
        if self.name.is_empty() || self.name.contains('/') {
            return bad("a connection needs a name without '/'".into());
        }
        if self.endpoints.is_empty() {
            return bad("endpoints is empty".into());
        }
        if self.max_transaction_records < 100 {
            return bad("max_transaction_records must be at least 100".into());
        }
        if self.max_read_factor < 2 {
            return bad("max_read_factor must be at least 2".into());
        }
        if self.full_read_every < 1 {
            return bad("full_read_every must be at least 1".into());
        }
        match &self.files {
            Some(_) if !self.client.base_url.is_empty() => {
                return bad(
                    "a connection reads an API ([client]) or files ([files]), not both".into(),
                )
            }
            Some(drop) if drop.max_file_bytes == 0 => {
                return bad("files.max_file_bytes must be positive".into())
            }
            Some(drop) if !(0.0..=1.0).contains(&drop.max_delete_share) => {
                return bad("files.max_delete_share must be between 0 and 1".into())
            }
            Some(_) if self.deletion_feed => {
                return bad(
                    "deletion_feed: a connection fed by files has no deletion feed (each file \
                     is the whole of its entity type; set deletion_feed = false)"
                        .into(),
                )
            }
            _ => {}
        }
        let w = &self.calendar_events;
        if w.slice_days == 0 || w.past_weeks + w.future_weeks > 520 {
            return bad(
                "calendar_events: slice_days must be positive and the window at most 520 weeks"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_sliced_around_today() {
        let window = CalendarWindow {
            past_weeks: 1,
            future_weeks: 1,
            slice_days: 4,
        };
        // 2025-09-10T12:00:00Z
        let now = 1_757_505_600_000;
        let slices = window.slices(now);
        let today = 1_757_462_400_000; // 2025-09-10T00:00:00Z
        assert_eq!(slices.first().map(|s| s.0), Some(today - 7 * DAY_MILLIS));
        assert_eq!(slices.last().map(|s| s.1), Some(today + 8 * DAY_MILLIS));
        assert!(slices.windows(2).all(|w| w[0].1 == w[1].0));
        assert!(slices.iter().all(|(a, b)| b - a <= 4 * DAY_MILLIS && a < b));
        assert_eq!(slices.len(), 4);
    }

    #[test]
    fn unknown_fields_and_endpoints_are_refused() {
        let parsed: Result<ConnectionConfig, _> = toml::from_str(
            "name = \"a\"\nendpoints = [\"rooms\"]\n[client]\nbase_url = \"http://x\"\n",
        );
        assert!(parsed.is_err());
        let parsed: Result<ConnectionConfig, _> = toml::from_str(
            "name = \"a\"\ntimestamps_without_zone = \"UTC\"\n[calendar_events]\npast_weeks = 8\n[client]\nbase_url = \"http://x\"\n",
        );
        assert!(parsed.is_ok_and(|c| c.timestamps_without_zone == Zone::Utc
            && c.calendar_events.past_weeks == 8
            && c.calendar_events.slice_days == 7));
    }
}
