//! Deterministic identifiers: the same seed gives the same ids.

/// SplitMix64: a small, well-mixed hash for deriving ids and draws from
/// (seed, kind, number) without keeping random state around.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash several numbers into one.
pub fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x5851_f42d_4c95_7f2d, |acc, p| mix(acc ^ mix(*p)))
}

/// A version-4-shaped UUID string from a 128-bit seed pair.
pub fn uuid(a: u64, b: u64) -> String {
    let hi = mix(a);
    let lo = mix(b ^ 0x2545_f491_4f6c_dd1d);
    // Hex digits by hand: `format!` was a tenth of the simulator's CPU
    // when serving attendance records, whose ids are derived per request.
    let mut out = String::with_capacity(36);
    hex(&mut out, hi >> 32, 8);
    out.push('-');
    hex(&mut out, hi >> 16, 4);
    out.push_str("-4");
    hex(&mut out, hi, 3);
    out.push('-');
    hex(&mut out, 8 + (lo >> 62), 1);
    hex(&mut out, lo >> 48, 3);
    out.push('-');
    hex(&mut out, lo, 12);
    out
}

/// The low `digits` hex digits of `v`, zero-padded.
fn hex(out: &mut String, v: u64, digits: u32) {
    for shift in (0..digits).rev() {
        let d = ((v >> (4 * shift)) & 0xf) as u8;
        out.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
    }
}

/// Entity kinds, for id derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Organisation = 1,
    Person = 2,
    Duty = 3,
    Group = 4,
    Activity = 5,
    Syllabus = 6,
    CalendarEvent = 7,
    Attendance = 8,
    /// The timetable vendor's own ids.
    Skola24Unit = 9,
    Skola24Student = 10,
    Skola24Lesson = 11,
}

/// The id of entity number `n` of a kind in a world with `seed`.
pub fn entity_id(seed: u64, kind: Kind, n: u64) -> String {
    uuid(hash(&[seed, kind as u64, n]), hash(&[n, kind as u64, seed]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let a = entity_id(7, Kind::Person, 1);
        let b = entity_id(7, Kind::Person, 2);
        let c = entity_id(8, Kind::Person, 1);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(a, entity_id(7, Kind::Person, 1));
    }

    #[test]
    fn uuids_are_what_the_format_string_gave() {
        let formatted = |a: u64, b: u64| {
            let hi = mix(a);
            let lo = mix(b ^ 0x2545_f491_4f6c_dd1d);
            format!(
                "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
                (hi >> 32) as u32,
                (hi >> 16) as u16,
                hi & 0xfff,
                8 + (lo >> 62),
                (lo >> 48) & 0xfff,
                lo & 0xffff_ffff_ffff
            )
        };
        for n in 0..20_000_u64 {
            let (a, b) = (mix(n), n.wrapping_mul(0x9e37_79b9) ^ u64::MAX);
            assert_eq!(uuid(a, b), formatted(a, b));
        }
    }
}
