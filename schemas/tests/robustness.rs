//! Decoding arbitrary bytes returns an error and never panics.

// A test fails by panicking; helpers outside #[test] functions may too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;

use apache_avro::Schema;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use skolflode_schemas::catalogue;
use skolflode_schemas::codec::sample::Sample;
use skolflode_schemas::entities::{Activity, Attendance, CalendarEvent, Group, Person};
use skolflode_schemas::wire::{self, Decoder};
use skolflode_schemas::{AvroType, ChangeEvent};

fn decoder<T: AvroType>(subject: &str) -> Decoder<T> {
    let schema: Schema = catalogue::subject(subject)
        .and_then(|s| s.parse_latest().ok())
        .expect("schema");
    let mut d = Decoder::new(schema.clone());
    d.add_writer(1, &schema).expect("native plan");
    d
}

// Built once: a decoder's plans are meant to be made once, not per record.
static ATTENDANCE: LazyLock<Decoder<ChangeEvent<Attendance>>> =
    LazyLock::new(|| decoder("AttendanceChange"));
static ACTIVITY: LazyLock<Decoder<ChangeEvent<Activity>>> =
    LazyLock::new(|| decoder("ActivityChange"));
static PERSON: LazyLock<Decoder<ChangeEvent<Person>>> = LazyLock::new(|| decoder("PersonChange"));
static CALENDAR: LazyLock<Decoder<ChangeEvent<CalendarEvent>>> =
    LazyLock::new(|| decoder("CalendarEventChange"));
static GROUP: LazyLock<Decoder<ChangeEvent<Group>>> = LazyLock::new(|| decoder("GroupChange"));

fn valid<T: AvroType + Sample>(seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    wire::encode(1, &T::sample(&mut rng))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend_from_slice(&body);
        let _ = ATTENDANCE.decode(&framed);
        let _ = ACTIVITY.decode(&framed);
        let _ = PERSON.decode(&framed);
        let _ = ATTENDANCE.decode(&body);
        let mut reused = ChangeEvent::<Activity>::sample(&mut StdRng::seed_from_u64(body.len() as u64));
        let _ = ACTIVITY.decode_into(&framed, &mut reused);
    }

    #[test]
    fn mutated_valid_records_never_panic(
        seed in any::<u64>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = valid::<ChangeEvent<CalendarEvent>>(seed);
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        let _ = CALENDAR.decode(&bytes);
    }

    #[test]
    fn truncated_records_are_errors(seed in any::<u64>(), cut in any::<prop::sample::Index>()) {
        let bytes = valid::<ChangeEvent<Group>>(seed);
        let cut = cut.index(bytes.len());
        let result = GROUP.decode(&bytes[..cut]);
        prop_assert!(result.is_err(), "a record cut at {} of {} bytes decoded", cut, bytes.len());
    }
}

#[test]
fn huge_array_counts_do_not_allocate() {
    // An Activity change whose `before` claims 2^60 groups.
    let mut body = vec![0u8, 0, 0, 0, 1];
    body.push(0); // event_id: ""
    body.push(4); // op: UPDATE
    body.push(2); // before: Some
    body.push(0); // id: ""
    body.push(0); // meta: None
    body.push(0); // displayName: ""
    body.push(1); // calendarEventsRequired
    body.push(0); // startDate
    body.push(0); // endDate: None
    body.push(0); // activityType: None
    body.push(0); // minutesPlanned: None
    skolflode_schemas::codec::write_long(&mut body, 1 << 60); // groups count
    let result = ACTIVITY.decode(&body);
    assert!(result.is_err());
}
