//! Where the registers go: Parquet files (`registers`) or PostgreSQL
//! tables (`postgres`). Each stores the input offsets it covers with what
//! it wrote, so that a restarted sink resumes where the output stands.

use crate::assemble::Completed;
use crate::checkpoint::Checkpoint;
use crate::table::Table;
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

/// An output of the sink.
pub trait Output: std::fmt::Debug {
    /// Write the revisions `completed` holds and, with them or after them,
    /// the offsets in `checkpoint`. `topic` names a table's input topic.
    fn apply(
        &mut self,
        completed: Vec<Completed>,
        checkpoint: &Checkpoint,
        topic: &(dyn Fn(Table) -> String + Sync),
    ) -> Result<Applied, SinkError>;
}
