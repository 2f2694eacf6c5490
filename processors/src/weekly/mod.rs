//! `skolflode process`: change topics → history topics and weekly register
//! snapshots, exactly once.
//!
//! - **Input:** every SS 12000 change topic (key: connection + entity id)
//!   and `skolflode.heartbeats` (key: connection).
//! - **Output:** `skolflode.history.<entity>` (same key and partition as the
//!   change record it comes from), `skolflode.snapshot.teacher-student` and
//!   `skolflode.snapshot.attendance` (key: connection/week), quality
//!   findings, dead letters; the state store's changelog.
//! - **Guarantee:** exactly once. Outputs, changelog entries and the
//!   consumed offsets of every input go in one Kafka transaction; an abort
//!   drops the state and restores it from the changelog.
//! - **Determinism:** a week is closed only when a heartbeat says the
//!   vendor's clock passed its end plus the grace period, and only after
//!   every change committed before that heartbeat has been applied; the
//!   week's rows are computed as known at that instant. The outputs are
//!   the same whatever the interleaving of the input partitions: a replay
//!   gives the same bytes.
//!
//! The design, with its costs, is in `docs/processing.md`.

pub mod config;
pub mod input;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod rows;
pub mod run;
pub mod store;
pub mod time;

pub use config::ProcessConfig;
pub use operator::{Operator, Output, Settings};
