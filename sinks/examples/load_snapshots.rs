//! Load synthetic weekly snapshot rows into the snapshot topics, for the
//! sink benchmark (`scripts/bench-sink`): one week of `pupils` pupils in
//! municipalities of `pupils_per_connection`, each a connection with one
//! revision of the week, about eleven `teacher_student` and eleven
//! `attendance` rows per pupil, as a national week has, each revision in
//! the order the processor publishes it (by the grouping columns).
//! Deterministic: the same arguments give the same records.
//!
//! ```sh
//! cargo run --release -p skolflode-sinks --example load_snapshots -- BOOTSTRAP SUFFIX PUPILS
//! ```

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use skolflode_kafka::{Admin, KafkaConfig, TopicSpec};
use skolflode_schemas::processed::{AttendanceRow, TeacherStudentRow};
use skolflode_schemas::{catalogue, wire};

const PUPILS_PER_CONNECTION: u64 = 5_000;
const LINKS_PER_PUPIL: u64 = 11;
const SUBJECTS: [&str; 11] = [
    "SV", "MA", "EN", "NO", "SO", "BI", "HKK", "IDH", "MU", "BL", "TK",
];

/// A 64-hex-digit key from a number (SplitMix64, four rounds).
fn key(mut n: u64) -> String {
    let mut out = String::with_capacity(64);
    for _ in 0..4 {
        n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = n;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, suffix, pupils) = match args.as_slice() {
        [_, b, s, p] => (b.clone(), s.clone(), p.parse::<u64>()?),
        _ => return Err("usage: load_snapshots BOOTSTRAP SUFFIX PUPILS".into()),
    };
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap,
        ..KafkaConfig::default()
    };
    let topics = [
        format!("{}.{suffix}", catalogue::SNAPSHOT_TEACHER_STUDENT),
        format!("{}.{suffix}", catalogue::SNAPSHOT_ATTENDANCE),
    ];
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let admin = Admin::new(&kafka, Duration::from_secs(30))?;
        admin
            .ensure_topics(
                &topics
                    .iter()
                    .map(|t| TopicSpec::new(t, 6))
                    .collect::<Vec<_>>(),
            )
            .await
    })?;
    let mut client = kafka.producer()?;
    client
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000");
    let producer: BaseProducer = client.create()?;
    let ts_id = catalogue::local_schema_id("TeacherStudentRow").ok_or("no schema")?;
    let att_id = catalogue::local_schema_id("AttendanceRow").ok_or("no schema")?;
    let key_id = catalogue::local_schema_id("StringKey").ok_or("no schema")?;
    let started = Instant::now();
    let mut sent = 0u64;
    let connections = pupils.div_ceil(PUPILS_PER_CONNECTION);
    let send = |topic: &str, k: &[u8], v: &[u8], sent: &mut u64| {
        loop {
            match producer.send(BaseRecord::to(topic).key(k).payload(v)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        *sent += 1;
        if (*sent).is_multiple_of(100_000) {
            producer.poll(Duration::ZERO);
        }
    };
    for c in 0..connections {
        let connection = format!("municipality-{c:03}");
        let first = c * PUPILS_PER_CONNECTION;
        let last = (first + PUPILS_PER_CONNECTION).min(pupils);
        let n = i32::try_from((last - first) * LINKS_PER_PUPIL)?;
        let k = wire::encode(key_id, &connection);
        let mut ts_rows = Vec::new();
        let mut att_rows = Vec::new();
        for p in first..last {
            // A municipality's own school units, of 400 pupils each.
            let unit = format!("{:08}", 10_000_000 + c * 100 + (p - first) / 400);
            let student = key(p);
            for l in 0..LINKS_PER_PUPIL {
                let subject = SUBJECTS[l as usize];
                let ts = TeacherStudentRow {
                    connection: connection.clone(),
                    week: "2025-W36".into(),
                    revision: 1,
                    rows_in_revision: n,
                    school_unit_code: unit.clone(),
                    teacher_key: key(1 << 40 | (p / 25) << 4 | l),
                    student_key: student.clone(),
                    activity_id: format!("act-{}-{l}", p / 25),
                    group_id: format!("grp-{}", p / 25),
                    subject_code: subject.into(),
                    lessons: 3,
                    minutes: 150,
                    is_grader: l % 3 == 0,
                    source: "ss12000-sim".into(),
                };
                ts_rows.push(ts);
                let att = AttendanceRow {
                    connection: connection.clone(),
                    week: "2025-W36".into(),
                    revision: 1,
                    rows_in_revision: n,
                    school_unit_code: unit.clone(),
                    student_key: student.clone(),
                    subject_code: subject.into(),
                    lessons: 3,
                    minutes_scheduled: 150,
                    minutes_present: 150 - (p % 7) as i32 * 10,
                    minutes_valid_absence: (p % 7) as i32 * 5,
                    minutes_invalid_absence: (p % 7) as i32 * 5,
                    lessons_unreported: (p % 11 == 0) as i32,
                    source: "ss12000-sim".into(),
                };
                att_rows.push(att);
            }
        }
        // In the processor's order: by the grouping columns.
        ts_rows.sort_by(|a, b| {
            (
                &a.school_unit_code,
                &a.teacher_key,
                &a.student_key,
                &a.activity_id,
                &a.group_id,
                &a.subject_code,
                a.is_grader,
            )
                .cmp(&(
                    &b.school_unit_code,
                    &b.teacher_key,
                    &b.student_key,
                    &b.activity_id,
                    &b.group_id,
                    &b.subject_code,
                    b.is_grader,
                ))
        });
        att_rows.sort_by(|a, b| {
            (&a.school_unit_code, &a.student_key, &a.subject_code).cmp(&(
                &b.school_unit_code,
                &b.student_key,
                &b.subject_code,
            ))
        });
        for ts in &ts_rows {
            send(&topics[0], &k, &wire::encode(ts_id, ts), &mut sent);
        }
        for att in &att_rows {
            send(&topics[1], &k, &wire::encode(att_id, att), &mut sent);
        }
    }
    producer.flush(Duration::from_secs(300))?;
    println!(
        "loaded rows={sent} connections={connections} seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
