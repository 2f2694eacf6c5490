//! Unique names for topics, consumer groups and transactional ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `prefix-<pid>-<millis>-<counter>-<random>`: unique across tests in one
/// process, across processes, and across runs against a broker that was
/// not wiped in between. Valid as a topic name (only `[a-z0-9-]` is added).
pub fn unique(prefix: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::rng().random();
    format!("{prefix}-{}-{millis}-{n}-{salt:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_and_are_valid_topic_names() {
        let a = unique("t");
        let b = unique("t");
        assert_ne!(a, b);
        assert!(a.len() < 249);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
    }
}
