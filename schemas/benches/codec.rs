//! Encode+decode throughput of change events in the Confluent wire format,
//! on one core, beside apache-avro's generic path on the same bytes.
//!
//!     cargo bench -p skolflode-schemas --bench codec
//!
//! Prints records/s for ChangeEvent<Attendance> and ChangeEvent<Activity>.

// The allocator the skolflode binary runs with: decoding allocates a
// string per id, and the allocator is a large part of the cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use skolflode_schemas::catalogue;
use skolflode_schemas::entities::{Activity, Attendance, DutyAssignment, Meta, ObjectReference};
use skolflode_schemas::wire::{self, Decoder};
use skolflode_schemas::{AvroType, ChangeEvent, Date, Op, Source, TimestampMillis};

fn uuid(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        n as u32,
        (n >> 8) as u16,
        n & 0xfff,
        (n >> 4) & 0xfff,
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15) & 0xffff_ffff_ffff
    )
}

fn source() -> Source {
    Source {
        vendor: "ss12000".into(),
        connection: "kommun-0180-attendance".into(),
        endpoint: "/attendances".into(),
        cursor: Some("2025-02-14T08:00:00Z".into()),
        server_time: Some(TimestampMillis(1_739_520_000_000)),
    }
}

fn attendance(n: u64) -> ChangeEvent<Attendance> {
    let after = Attendance {
        id: uuid(n),
        meta: Some(Meta {
            created: Some(TimestampMillis(1_739_520_000_000)),
            modified: Some(TimestampMillis(1_739_523_600_000)),
        }),
        calendar_event: ObjectReference::new(uuid(n / 25)),
        student: ObjectReference::new(uuid(n % 10_000 + 1_000_000)),
        reporter: Some(ObjectReference::new(uuid(n % 700 + 2_000_000))),
        is_reported: true,
        attendance_minutes: 45,
        valid_absence_minutes: Some(0),
        invalid_absence_minutes: Some(15),
        other_attendance_minutes: None,
        reported_timestamp: Some(TimestampMillis(1_739_523_000_000)),
    };
    let mut before = after.clone();
    before.invalid_absence_minutes = Some(0);
    ChangeEvent {
        event_id: uuid(n ^ 0xdead_beef),
        op: Op::Update,
        before: Some(before),
        after: Some(after),
        source: source(),
        observed_at: TimestampMillis(1_739_523_700_000),
        content_hash: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
    }
}

fn activity(n: u64) -> ChangeEvent<Activity> {
    let after = Activity {
        id: uuid(n),
        meta: Some(Meta {
            created: Some(TimestampMillis(1_723_000_000_000)),
            modified: Some(TimestampMillis(1_739_523_600_000)),
        }),
        display_name: "Matematik 8B".into(),
        calendar_events_required: true,
        start_date: Date(20_300),
        end_date: Some(Date(20_600)),
        activity_type: Some("Undervisning".into()),
        minutes_planned: Some(5_400),
        groups: vec![
            ObjectReference::new(uuid(n + 1)),
            ObjectReference::new(uuid(n + 2)),
        ],
        teachers: vec![DutyAssignment {
            duty: ObjectReference::new(uuid(n + 3)),
            start_date: Some(Date(20_300)),
            end_date: None,
            minutes_planned: Some(5_400),
            grader: Some(true),
        }],
        syllabus: Some(ObjectReference::new(uuid(n + 4))),
        organisation: ObjectReference::new(uuid(7)),
        parent_activity: None,
    };
    let mut before = after.clone();
    before.teachers[0].duty = ObjectReference::new(uuid(n + 5));
    ChangeEvent {
        event_id: uuid(n ^ 0xfeed),
        op: Op::Update,
        before: Some(before),
        after: Some(after),
        source: source(),
        observed_at: TimestampMillis(1_739_523_700_000),
        content_hash: Some(
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
        ),
    }
}

fn measure<T: AvroType + PartialEq>(
    name: &str,
    subject: &str,
    make: impl Fn(u64) -> T,
) -> Result<(), Box<dyn std::error::Error>> {
    let schema = catalogue::subject(subject)
        .ok_or("no such subject")?
        .parse_latest()?;
    let mut decoder: Decoder<T> = Decoder::new(schema.clone());
    decoder.add_writer(1, &schema)?;
    let samples: Vec<T> = (0..1024).map(&make).collect();
    let size = wire::encode(1, &samples[0]).len();

    // Ours: encode into a reused buffer, decode back.
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for sample in &samples {
            buf.clear();
            wire::encode_into(1, sample, &mut buf);
            let back = decoder.decode(&buf)?;
            black_box(&back);
        }
        n += samples.len() as u64;
    }
    let ours = n as f64 / started.elapsed().as_secs_f64();

    // The same, decoding into one reused value, as a consumer loop does.
    let mut value = make(0);
    let mut n = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for sample in &samples {
            buf.clear();
            wire::encode_into(1, sample, &mut buf);
            decoder.decode_into(&buf, &mut value)?;
            black_box(&value);
        }
        n += samples.len() as u64;
    }
    let reused = n as f64 / started.elapsed().as_secs_f64();

    // Split: encode alone, decode alone.
    let started = Instant::now();
    let mut m = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for sample in &samples {
            buf.clear();
            wire::encode_into(1, sample, &mut buf);
            black_box(&buf);
        }
        m += samples.len() as u64;
    }
    let encode_only = m as f64 / started.elapsed().as_secs_f64();
    let framed: Vec<Vec<u8>> = samples.iter().map(|s| wire::encode(1, s)).collect();
    let started = Instant::now();
    let mut m = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for bytes in &framed {
            black_box(decoder.decode(bytes)?);
        }
        m += framed.len() as u64;
    }
    let decode_only = m as f64 / started.elapsed().as_secs_f64();

    // apache-avro's generic path on the same bytes: decode to Value, encode.
    let started = Instant::now();
    let mut g = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        for bytes in &framed {
            let mut body = &bytes[5..];
            let value = apache_avro::from_avro_datum(&schema, &mut body, None)?;
            let out = apache_avro::to_avro_datum(&schema, value)?;
            black_box(out);
        }
        g += framed.len() as u64;
    }
    let generic = g as f64 / started.elapsed().as_secs_f64();

    println!("{name} ({size} bytes framed)");
    println!("  encode + decode_into reused value {reused:>12.0} rec/s");
    println!("  encode + decode into new value    {ours:>12.0} rec/s");
    println!("  encode alone                      {encode_only:>12.0} rec/s");
    println!("  decode alone (new value)          {decode_only:>12.0} rec/s");
    println!(
        "  apache-avro Value path            {generic:>12.0} rec/s  (decode to Value + encode; ours is {:.0}x)",
        reused / generic
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with `cargo bench` for real figures");
    }
    println!("one thread; each figure is records per second");
    measure("ChangeEvent<Attendance>", "AttendanceChange", attendance)?;
    measure("ChangeEvent<Activity>", "ActivityChange", activity)?;
    Ok(())
}
