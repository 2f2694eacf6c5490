//! The sinks end to end: producer → processor → `skolflode sink` over four
//! weeks of a lively term. Parquet:
//! - the registers, read with pyarrow (`tests/registers_check.py`), equal
//!   the simulator's ground truth, weekly and yearly;
//! - the same records delivered again rewrite nothing;
//! - a second sink reading the same topics into an empty directory writes
//!   the same files, byte for byte;
//! - a sink killed with SIGKILL twenty times, each a random few
//!   milliseconds after one of its writes (so in the middle of the next),
//!   restarted each time, ends with the same files byte for byte as an
//!   undisturbed run, and after every kill each visible file is whole.
//!
//! PostgreSQL: the tables, read with SQL, equal the truth; a re-delivery
//! changes nothing; twenty SIGKILLs leave the tables as an undisturbed
//! run's.

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
use skolflode_testkit::{unique, Scratch, TestKafka};

const KEY: &str = "the sink test's pseudonym key, long enough for the contract";
const KILLS: usize = 20;

fn sink(binary: &str, config: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["sink", "--until-caught-up", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("TMPDIR", config.parent().unwrap_or(config))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Small enough that every yearly file is summed in many ranges of
/// school units, as a national year is.
const YEARLY_RANGE_ROWS: usize = 700;

fn sink_config(
    input: &Input,
    app: &str,
    name: &str,
    flush_bytes: usize,
    extra: &str,
) -> (PathBuf, PathBuf) {
    let out = input.dir.join(name);
    let config = input.dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n\n[sink]\nout_dir = \"{}\"\ntopic_suffix = \"{}\"\nflush_bytes = {flush_bytes}\nflush_interval_ms = 20\nyearly_range_rows = {YEARLY_RANGE_ROWS}\n{extra}",
            input.bootstrap,
            out.display(),
            app,
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

/// Run the sink over and over, each time killing it (SIGKILL) a random
/// few milliseconds after one of its writes, so that kills land in the
/// middle of the next; until `KILLS` kills have landed or a run ends on its
/// own with nothing left to write. `after_kill` looks at the output after
/// each kill. Returns the kills and the runs.
fn kill_after_writes(
    binary: &str,
    config: &Path,
    seed: u64,
    mut after_kill: impl FnMut(),
) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut landed, mut runs) = (0, 0);
    while landed < KILLS {
        runs += 1;
        let mut child = sink(binary, config)
            .env("RUST_LOG", "skolflode_sinks=debug")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("flushed") && tx.send(()).is_err() {
                    break;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {
                std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
                if child.try_wait().unwrap().is_none() {
                    kill(child);
                    landed += 1;
                    after_kill();
                    continue;
                }
                let status = child.wait().unwrap();
                assert!(status.success(), "run {runs}: {status}");
            }
            Err(_) => {
                // Ended without a write: nothing was left to do.
                let status = child.wait().unwrap();
                assert!(status.success(), "run {runs}: {status}");
                break;
            }
        }
    }
    (landed, runs)
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL: no chance to finish a write.
    child.wait().unwrap();
}

/// Snapshot topics of a processed term, and the truth behind them.
struct Input {
    dir: Scratch,
    bootstrap: String,
    /// The processor's application id: the snapshot topics' suffix.
    app: String,
    /// The same input processed with a grace of six hours: many more
    /// revisions (late reports, corrections), so many more writes for
    /// kills to land in.
    revised_app: String,
    connection: String,
    truth: Scratch,
    key_file: PathBuf,
    /// Weeks the truth has settled.
    weeks: usize,
}

/// `days` of a lively term from the Saturday before it, produced and
/// processed into the snapshot topics `<topic>.<app>`.
async fn input(name: &str, seed: u64, pupils: u32, days: u32) -> Input {
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
            name: name.into(),
            dated_assignments: true,
            end_date_memberships: true,
            deletion_feed: true,
            ..VendorBehaviour::default()
        },
        seed,
        pupils,
        days,
    )
    .await
    .unwrap();
    let dir = Scratch::new(name).unwrap();
    let bootstrap = kafka.config().bootstrap_servers.clone();
    let process = |grace: u32| {
        let path = dir.join(format!("process-{grace}.toml"));
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[process]\ngrace_hours = {grace}\nconnections = [\"{name}\"]\n\n[process.sources]\n\"{name}\" = \"{source}\"\n",
                name = term.name,
                source = term.source
            ),
        )
        .unwrap();
        let app = unique("sink-input");
        let status = Command::new(env!("CARGO_BIN_EXE_skolflode"))
            .args(["replay", "--config"])
            .arg(&path)
            .args(["--application-id", &app])
            .env("RUST_LOG", "warn")
            .env("TMPDIR", dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "processor: {status}");
        app
    };
    let app = process(240);
    let revised_app = process(6);
    let key_file = dir.join("key");
    std::fs::write(&key_file, KEY).unwrap();
    Input {
        dir,
        bootstrap,
        app,
        revised_app,
        connection: term.name,
        truth: term.truth,
        key_file,
        // The truth settles a week ten days after its Sunday; the first
        // Sunday is the eighth day.
        weeks: ((days as usize).saturating_sub(8 + 11) / 7) + 1,
    }
}

/// `tests/registers_check.py` with `args` before the truth, key and
/// connection (and `after` them): it must find full agreement over the
/// settled weeks.
fn check_with_python(
    input: &Input,
    args: &[&std::ffi::OsStr],
    after: &[&std::ffi::OsStr],
) -> String {
    let mut check = Command::new("python3");
    if let Ok(url) = std::env::var("DATABASE_URL") {
        // Not on the command line: it may hold a password.
        check.env("REGISTERS_CHECK_DATABASE_URL", url);
    }
    let check = check
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registers_check.py"))
        .args(args)
        .arg(input.truth.path())
        .arg(&input.key_file)
        .arg(&input.connection)
        .args(after)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    eprintln!("{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        check.status.success() && said.contains("AGREE"),
        "the check failed"
    );
    assert!(
        said.contains(&format!("weeks in the truth: {}", input.weeks)),
        "{said}"
    );
    said.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_registers_equal_the_truth_and_kills_and_replays_give_the_same_bytes() {
    let input = input("sink-parquet", 41, 300, 42).await;
    let binary = env!("CARGO_BIN_EXE_skolflode");

    // Undisturbed.
    let (calm_config, calm) = sink_config(&input, &input.app, "calm", 1 << 28, "");
    let status = sink(binary, &calm_config).status().unwrap();
    assert!(status.success(), "sink: {status}");
    check_with_python(&input, &["parquet".as_ref(), calm.as_os_str()], &[]);

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

    // The input with many revisions: undisturbed, replayed into an empty
    // directory, and killed.
    let (steady_config, steady) = sink_config(&input, &input.revised_app, "steady", 1, "");
    let started = std::time::Instant::now();
    assert!(sink(binary, &steady_config).status().unwrap().success());
    let steady_time = started.elapsed();
    let (replay_config, replayed) = sink_config(&input, &input.revised_app, "replayed", 1, "");
    assert!(sink(binary, &replay_config).status().unwrap().success());
    assert_same(&steady, &replayed, "replay");

    // A write per revision, so that kills land in the middle of writes.
    let (killed_config, killed) = sink_config(&input, &input.revised_app, "killed", 1, "");
    let (landed, runs) = kill_after_writes(binary, &killed_config, 13, || {
        visible_files_are_whole(&killed);
    });
    let status = sink(binary, &killed_config).status().unwrap();
    assert!(status.success(), "last run: {status}");
    eprintln!("undisturbed {steady_time:?}; {landed} kills in {runs} runs");
    assert_eq!(
        landed, KILLS,
        "the sink finished before it could be killed {KILLS} times"
    );
    assert_same(&steady, &killed, "kills");
}

/// Every register table and the revisions of `schema`, as sorted text.
async fn dump(client: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for table in [
        "weekly_teacher_student",
        "weekly_attendance",
        "yearly_teacher_student",
        "yearly_attendance",
        "revisions",
    ] {
        let rows = client
            .query(
                &format!("SELECT t::text FROM {schema}.{table} AS t ORDER BY 1"),
                &[],
            )
            .await
            .unwrap();
        out.insert(
            table.to_owned(),
            rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_registers_equal_the_truth_and_kills_change_nothing() {
    let database = skolflode_testkit::TestDatabase::connect().await.unwrap();
    let input = input("sink-postgres", 43, 300, 42).await;
    let binary = env!("CARGO_BIN_EXE_skolflode");
    let schema = |name: &str| format!("{}_{name}", database.schema());
    let postgres = |name: &str| {
        format!(
            "output = \"postgres\"\n\n[sink.postgres]\nschema = \"{}\"\n",
            schema(name)
        )
    };

    let (calm_config, _) = sink_config(&input, &input.app, "calm", 1 << 28, &postgres("calm"));
    let status = sink(binary, &calm_config).status().unwrap();
    assert!(status.success(), "sink: {status}");
    check_with_python(&input, &["postgres".as_ref(), schema("calm").as_ref()], &[]);
    let calm = dump(database.client(), &schema("calm")).await;
    assert!(
        calm["weekly_attendance"].len() > 1000,
        "{}",
        calm["weekly_attendance"].len()
    );

    // Everything delivered again: nothing changes.
    database
        .client()
        .batch_execute(&format!("DELETE FROM {}.sink_offsets", schema("calm")))
        .await
        .unwrap();
    assert!(sink(binary, &calm_config).status().unwrap().success());
    assert!(
        dump(database.client(), &schema("calm")).await == calm,
        "a re-delivery changed the tables"
    );

    // The input with many revisions: undisturbed, and killed.
    let (steady_config, _) =
        sink_config(&input, &input.revised_app, "steady", 1, &postgres("steady"));
    let started = std::time::Instant::now();
    assert!(sink(binary, &steady_config).status().unwrap().success());
    let steady_time = started.elapsed();
    let steady = dump(database.client(), &schema("steady")).await;
    let (killed_config, _) =
        sink_config(&input, &input.revised_app, "killed", 1, &postgres("killed"));
    let (landed, runs) = kill_after_writes(binary, &killed_config, 14, || {});
    let status = sink(binary, &killed_config).status().unwrap();
    assert!(status.success(), "last run: {status}");
    eprintln!("undisturbed {steady_time:?}; {landed} kills in {runs} runs");
    assert_eq!(
        landed, KILLS,
        "the sink finished before it could be killed {KILLS} times"
    );
    let killed = dump(database.client(), &schema("killed")).await;
    for (table, rows) in &steady {
        assert!(
            rows == &killed[table],
            "{table}: {} rows undisturbed, {} with kills",
            rows.len(),
            killed[table].len()
        );
    }
    for name in ["calm", "steady", "killed"] {
        database
            .client()
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", schema(name)))
            .await
            .unwrap();
    }
    database.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_yearly_registers_integrate_the_pupil_register_of_15_october() {
    // 65 days: past 15 October, when the simulator writes the register.
    let input = input("sink-pupil-register", 45, 200, 65).await;
    let binary = env!("CARGO_BIN_EXE_skolflode");
    let register = input.truth.join("pupil_register/school_year=2025-26");
    let extra = format!(
        "\n[sink.pupil_register]\npseudonym_key_file = \"{}\"\n\n[sink.pupil_register.files]\n\"2025-26\" = \"{}\"\n",
        input.key_file.display(),
        register.join("pupil_register.csv").display()
    );
    let (config, out) = sink_config(&input, &input.app, "integrated", 1 << 28, &extra);
    assert!(sink(binary, &config).status().unwrap().success());
    let said = check_with_python(
        &input,
        &["parquet".as_ref(), out.as_os_str()],
        &[
            register.join("pupil_register.csv").as_os_str(),
            register.join("disagreements.csv").as_os_str(),
        ],
    );
    assert!(said.contains("register: "), "{said}");
    // The manifest names the register it integrated.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("yearly/school_year=2025-26/_manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(
        manifest["register"]["findings"].as_u64().unwrap() > 0,
        "{manifest}"
    );

    // The same integration into PostgreSQL, read with SQL.
    let database = skolflode_testkit::TestDatabase::connect().await.unwrap();
    let schema = format!("{}_integrated", database.schema());
    let postgres =
        format!("output = \"postgres\"\n{extra}\n[sink.postgres]\nschema = \"{schema}\"\n");
    let (config, _) = sink_config(&input, &input.app, "integrated-pg", 1 << 28, &postgres);
    assert!(sink(binary, &config).status().unwrap().success());
    let said = check_with_python(
        &input,
        &["postgres".as_ref(), schema.as_ref()],
        &[
            register.join("pupil_register.csv").as_os_str(),
            register.join("disagreements.csv").as_os_str(),
        ],
    );
    assert!(said.contains("register: "), "{said}");
    let findings: i32 = database
        .client()
        .query_one(
            &format!("SELECT findings FROM {schema}.pupil_registers WHERE school_year = '2025-26'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(findings > 0);
    database
        .client()
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    database.cleanup().await.unwrap();
}
