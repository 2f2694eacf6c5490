//! The Parquet sink end to end: producer → processor → `skolflode sink`
//! over four weeks of a lively term, then
//! - the registers, read with pyarrow (`tests/registers_check.py`), equal
//!   the simulator's ground truth, weekly and yearly;
//! - the same records delivered again rewrite nothing;
//! - a second sink reading the same topics into an empty directory writes
//!   the same files, byte for byte;
//! - a sink killed with SIGKILL at random points twenty times, restarted
//!   each time, ends with the same files byte for byte, and after every
//!   kill each visible file is whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_simulator::config::VendorBehaviour;
use skolflode_testkit::term::produce_days;
use skolflode_testkit::{unique, TestKafka};

const KEY: &str = "the sink test's pseudonym key, long enough for the contract";
const KILLS: usize = 20;

fn sink(binary: &str, config: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["sink", "--until-caught-up", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn sink_config(
    dir: &Path,
    name: &str,
    bootstrap: &str,
    suffix: &str,
    flush_rows: usize,
) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[sink]\nout_dir = \"{}\"\ntopic_suffix = \"{suffix}\"\nflush_rows = {flush_rows}\nflush_interval_ms = 20\n",
            out.display()
        ),
    )
    .unwrap();
    (config, out)
}

/// Every register file and manifest under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if relative == "_sink" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// After a kill: every file a reader can see is whole.
fn visible_files_are_whole(root: &Path) -> usize {
    let mut files = 0;
    for (name, bytes) in tree(root) {
        let file_name = name.rsplit('/').next().unwrap_or_default().to_owned();
        if file_name.starts_with('.') {
            continue; // hidden: a write not yet renamed into place
        }
        if name.ends_with(".parquet") {
            let file = std::fs::File::open(root.join(&name)).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap_or_else(|e| panic!("{name} is not whole: {e}"))
                    .build()
                    .unwrap();
            for batch in reader {
                batch.unwrap_or_else(|e| panic!("{name} is not whole: {e}"));
            }
            files += 1;
        } else if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{name} is not whole: {e}"));
        }
    }
    files
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    let (a, b) = (tree(a), tree(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: different files"
    );
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{what}: {name} differs");
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL: no chance to finish a write.
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_equal_the_truth_and_kills_and_replays_give_the_same_bytes() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let pseudonymiser = Arc::new(Pseudonymiser::new(KEY.as_bytes()).unwrap());
    // 42 days from the Saturday before the term: the truth settles a week
    // ten days after its Sunday, and the processor (grace 240 h) closes it
    // then too, so the registers hold exactly the settled weeks.
    let term = produce_days(
        kafka.config(),
        &pseudonymiser,
        VendorBehaviour {
            name: "sink-sim".into(),
            dated_assignments: true,
            end_date_memberships: true,
            deletion_feed: true,
            ..VendorBehaviour::default()
        },
        41,
        150,
        42,
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(unique("sink-parquet"));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = kafka.config().bootstrap_servers.clone();
    let binary = env!("CARGO_BIN_EXE_skolflode");

    let process = dir.join("process.toml");
    std::fs::write(
        &process,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[process]\ngrace_hours = 240\nconnections = [\"{name}\"]\n\n[process.sources]\n\"{name}\" = \"{source}\"\n",
            name = term.name,
            source = term.source
        ),
    )
    .unwrap();
    let app = unique("sink-input");
    let status = Command::new(binary)
        .args(["replay", "--config"])
        .arg(&process)
        .args(["--application-id", &app])
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success(), "processor: {status}");

    // Undisturbed.
    let (calm_config, calm) = sink_config(&dir, "calm", &bootstrap, &app, 1_000_000);
    let status = sink(binary, &calm_config).status().unwrap();
    assert!(status.success(), "sink: {status}");
    let key_file = dir.join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let check = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registers_check.py"))
        .arg(&calm)
        .arg(&term.truth)
        .arg(&key_file)
        .arg(&term.name)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    eprintln!("{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        check.status.success() && said.contains("AGREE"),
        "pyarrow check failed"
    );
    assert!(said.contains("weeks in the truth: 4"), "{said}");

    // Everything delivered again (the checkpoint gone): nothing is rewritten.
    let before: Vec<_> = tree(&calm)
        .into_keys()
        .map(|name| {
            let modified = std::fs::metadata(calm.join(&name))
                .unwrap()
                .modified()
                .unwrap();
            (name, modified)
        })
        .collect();
    std::fs::remove_file(calm.join("_sink/checkpoint.json")).unwrap();
    assert!(sink(binary, &calm_config).status().unwrap().success());
    for (name, modified) in before {
        let now = std::fs::metadata(calm.join(&name))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(now, modified, "{name} was rewritten by a re-delivery");
    }

    // Replayed into an empty directory.
    let (replay_config, replayed) = sink_config(&dir, "replayed", &bootstrap, &app, 1_000_000);
    assert!(sink(binary, &replay_config).status().unwrap().success());
    assert_same(&calm, &replayed, "replay");

    // Killed: small flushes, so that kills land in the middle of writes.
    let (killed_config, killed) = sink_config(&dir, "killed", &bootstrap, &app, 200);
    let mut rng = StdRng::seed_from_u64(13);
    let mut landed = 0;
    let mut seen_files = 0;
    for k in 0..KILLS {
        let mut child = sink(binary, &killed_config).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(50..700)));
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "run {k}: {status}");
        } else {
            kill(child);
            landed += 1;
        }
        seen_files = visible_files_are_whole(&killed);
    }
    let status = sink(binary, &killed_config).status().unwrap();
    assert!(status.success(), "last run: {status}");
    eprintln!(
        "{landed} of {KILLS} kills hit a running sink; {seen_files} files visible after the last"
    );
    assert!(
        landed >= KILLS - 2,
        "only {landed} kills hit a running sink"
    );
    assert_same(&calm, &killed, "kills");
}
