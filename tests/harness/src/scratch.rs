//! Directories that a test owns and that go away with it.
//!
//! A simulated term writes half a gigabyte of ground truth, and a killed
//! stage leaves its side store and state store behind; a test that
//! forgot them filled a CI machine's disk in a few runs. Every file a
//! test writes goes under a [`Scratch`], and child processes get it as
//! their `TMPDIR`, so what a SIGKILL leaves is removed too.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// Set to keep scratch directories after the test, to look at them.
pub const KEEP: &str = "SKOLFLODE_KEEP_TEST_DIRS";

/// A new directory under the temp dir, deleted with its contents when
/// dropped (also when the test panics), unless [`KEEP`] is set.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// `<temp dir>/<prefix>-<unique suffix>`, created empty.
    pub fn new(prefix: &str) -> Result<Self, HarnessError> {
        let path = std::env::temp_dir().join(crate::unique(prefix));
        std::fs::create_dir_all(&path)
            .map_err(|e| HarnessError::Environment(format!("creating {}: {e}", path.display())))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os(KEEP).is_some() {
            eprintln!("kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_directory_goes_with_its_contents() -> Result<(), HarnessError> {
        let scratch = Scratch::new("scratch-test")?;
        let path = scratch.path().to_owned();
        std::fs::create_dir_all(scratch.join("a/b"))
            .map_err(|e| HarnessError::Environment(e.to_string()))?;
        std::fs::write(scratch.join("a/b/c"), b"x")
            .map_err(|e| HarnessError::Environment(e.to_string()))?;
        assert!(path.is_dir());
        drop(scratch);
        if std::env::var_os(KEEP).is_none() {
            assert!(!path.exists());
        }
        Ok(())
    }
}
