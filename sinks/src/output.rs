//! Where the registers go: Parquet files (`registers`) or PostgreSQL
//! tables (`postgres`). Each stores the input offsets it covers with what
//! it wrote, so that a restarted sink resumes where the output stands.

use crate::assemble::Completed;
use crate::checkpoint::Checkpoint;
use crate::SinkError;

/// What one write of whole revisions did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Applied {
    /// Weekly partitions (files, or a connection's week in PostgreSQL)
    /// written.
    pub weekly_files: usize,
    /// Yearly partitions rebuilt.
    pub yearly_files: usize,
    /// Weekly rows written.
    pub rows: usize,
}

/// An output of the sink. Whole revisions are staged as they complete;
/// a commit writes them, with (or before) the input offsets they cover.
pub trait Output: std::fmt::Debug {
    /// Take a whole revision read from `topic`.
    fn stage(&mut self, completed: Completed, topic: &str) -> Result<(), SinkError>;
    /// Memory held by what is staged.
    fn staged_bytes(&self) -> usize;
    /// Whether anything waits for a commit: staged revisions, or derived
    /// tables (yearly) behind the weekly ones.
    fn behind(&self) -> bool;
    /// Write what is staged and the offsets in `checkpoint`. `settled`:
    /// the input is caught up or the sink stops, so derived tables are
    /// brought up to date too.
    fn commit(&mut self, checkpoint: &Checkpoint, settled: bool) -> Result<Applied, SinkError>;
}
