//! The topic catalogue, the AsyncAPI document and the code agree.

// A test fails by panicking; helpers outside #[test] functions may too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use skolflode_schemas::catalogue::{self, SUBJECTS, TOPICS};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("schemas/ has a parent")
        .to_path_buf()
}

fn asyncapi() -> String {
    std::fs::read_to_string(repo_root().join("schemas/asyncapi.yaml")).expect("asyncapi.yaml")
}

/// The `address:` of every channel.
fn asyncapi_addresses(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix("address:"))
        .map(|a| a.trim().trim_matches('\'').trim_matches('"').to_owned())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every `skolflode.<...>` topic-like string literal in the workspace's
/// Rust sources.
fn topic_literals_in_code() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&repo_root(), &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, _) in text.match_indices("\"skolflode.") {
            let rest = &text[i + 1..];
            let end = rest.find('"').unwrap_or(rest.len());
            let literal = &rest[..end];
            // A subject names its topic: `<topic>-value`, `<topic>-key`.
            let literal = literal
                .strip_suffix("-value")
                .or_else(|| literal.strip_suffix("-key"))
                .unwrap_or(literal);
            if literal
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && literal.split('.').count() >= 3
            {
                found.insert(literal.to_owned());
            }
        }
    }
    found
}

#[test]
fn asyncapi_lists_exactly_the_catalogue_topics() {
    let listed = asyncapi_addresses(&asyncapi());
    let catalogue: BTreeSet<String> = TOPICS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(listed, catalogue);
}

#[test]
fn every_topic_the_code_names_is_in_the_catalogue() {
    let listed = asyncapi_addresses(&asyncapi());
    let used = topic_literals_in_code();
    assert!(!used.is_empty(), "found no topic names in the code");
    let missing: Vec<&String> = used.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "topics used in code but missing from asyncapi.yaml: {missing:?}"
    );
}

#[test]
fn asyncapi_describes_each_topic_fully() {
    let doc = asyncapi();
    for topic in TOPICS {
        let Some(start) = doc.find(&format!("address: {}", topic.name)) else {
            panic!("{} not in asyncapi.yaml", topic.name)
        };
        let block: String = doc[start..].lines().take(20).collect::<Vec<_>>().join("\n");
        assert!(
            block.contains(&format!("partitions: {}", topic.partitions)),
            "{}",
            topic.name
        );
        assert!(
            block.contains(&format!("retention.ms: {}", topic.retention_ms)),
            "{}",
            topic.name
        );
        assert!(
            block.contains(&format!("#/components/messages/{}", topic.value)),
            "{}",
            topic.name
        );
        let subject = catalogue::subject(topic.value).expect("value subject");
        assert!(
            doc.contains(&format!(
                "avro/{}/v{}.avsc",
                topic.value,
                subject.latest_version()
            )),
            "{} does not point at the newest schema",
            topic.name
        );
    }
}

#[test]
fn every_topic_names_known_subjects() {
    for topic in TOPICS {
        assert!(catalogue::subject(topic.key).is_some(), "{}", topic.key);
        assert!(catalogue::subject(topic.value).is_some(), "{}", topic.value);
    }
}

#[test]
fn every_schema_file_is_in_the_catalogue() {
    let avro = repo_root().join("schemas/avro");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(&avro).expect("schemas/avro").flatten() {
        let subject = entry.file_name().to_string_lossy().into_owned();
        let versions = std::fs::read_dir(entry.path())
            .expect("subject folder")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".avsc"))
            .count();
        on_disk.insert((subject, versions));
    }
    let listed: BTreeSet<(String, usize)> = SUBJECTS
        .iter()
        .map(|s| (s.name.to_owned(), s.versions.len()))
        .collect();
    assert_eq!(on_disk, listed);
    for subject in SUBJECTS {
        for (i, text) in subject.versions.iter().enumerate() {
            let file = avro.join(subject.name).join(format!("v{}.avsc", i + 1));
            assert_eq!(
                std::fs::read_to_string(&file)
                    .expect("version file")
                    .as_str(),
                *text,
                "{}",
                file.display()
            );
        }
    }
}
