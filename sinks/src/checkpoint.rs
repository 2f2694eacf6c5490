//! What input the registers cover: per topic and partition, the offset a
//! restarted sink reads from. Written after the files it covers, so that
//! a sink stopped in between reads some records again (and finds their
//! revisions already written), never too few.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registers::{read_json, write_json};
use crate::SinkError;

/// `<out>/_sink/checkpoint.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Topic → partition → the next offset to read.
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
}

fn path(root: &Path) -> PathBuf {
    root.join("_sink").join("checkpoint.json")
}

impl Checkpoint {
    pub fn load(root: &Path) -> Result<Checkpoint, SinkError> {
        Ok(read_json(&path(root))?.unwrap_or_default())
    }

    pub fn save(&self, root: &Path) -> Result<(), SinkError> {
        write_json(&path(root), self)
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(topic)?.get(&partition).copied()
    }
}
