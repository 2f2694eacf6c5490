//! skolflode's processors: from the change topics to bitemporal history and
//! weekly register snapshots, exactly once.
//!
//! - [`weekly`]: the `skolflode process` job. Reads every change topic and
//!   the producers' heartbeats; drops duplicate versions; publishes the
//!   history of every entity the registers need; closes each ISO week once
//!   the vendor's clock has passed its end plus a grace period, and
//!   re-publishes it as the next revision after late corrections.

pub mod weekly;
