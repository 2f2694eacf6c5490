//! Dates and instants as vendors send them, normalised: dates to days
//! since 1970-01-01, instants to UTC milliseconds. A date-time without a
//! zone is read in the zone the connection says its vendor writes (Swedish
//! local time, CET/CEST, unless configured as UTC), and that repair is
//! reported.

use serde::Deserialize;

/// The zone of a vendor's date-times that carry none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Zone {
    /// Swedish local time: CET in winter, CEST in summer.
    #[default]
    #[serde(rename = "Europe/Stockholm")]
    Stockholm,
    #[serde(rename = "UTC")]
    Utc,
}

/// A parsed instant and whether a missing zone had to be assumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instant {
    pub millis: i64,
    pub zone_assumed: bool,
}

/// Now, in UTC milliseconds since the epoch (0 for a clock before it).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Days in a month of the proleptic Gregorian calendar (0 for no month).
pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01: the
/// inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn number(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` (anything after the tenth character is ignored only when
/// it is a time part, which is reported by the caller).
pub fn parse_date(text: &str) -> Option<(i64, i64, i64)> {
    let bytes = text.as_bytes();
    if text.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (y, m, d) = (
        number(&text[..4])?,
        number(&text[5..7])?,
        number(&text[8..10])?,
    );
    ((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)).then_some((y, m, d))
}

/// The day of a date; `Some((days, repaired))` where `repaired` says a time
/// part was cut off.
pub fn date_days(text: &str) -> Option<(i32, bool)> {
    let (y, m, d) = parse_date(text)?;
    let repaired = match text.len() {
        10 => false,
        _ if text.as_bytes()[10] == b'T' || text.as_bytes()[10] == b' ' => true,
        _ => return None,
    };
    i32::try_from(days_from_civil(y, m, d))
        .ok()
        .map(|days| (days, repaired))
}

/// Swedish local offset in hours at a local date and hour: +2 from the last
/// Sunday of March 02:00 to the last Sunday of October 03:00, else +1.
fn stockholm_offset(y: i64, m: i64, d: i64, hour: i64) -> i64 {
    let last_sunday = |month: i64| {
        let last = days_from_civil(y, month, 31);
        // 1970-01-01 was a Thursday: weekday 0 = Monday.
        let weekday = (last + 3).rem_euclid(7);
        31 - (weekday + 1) % 7
    };
    let key = (m, d, hour);
    let start = (3, last_sunday(3), 2);
    let end = (10, last_sunday(10), 3);
    if key >= start && key < end {
        2
    } else {
        1
    }
}

/// An RFC 3339 date-time (`2025-02-14T08:10:00+01:00`, `…Z`, fractions
/// allowed); without a zone it is read as Swedish local time.
pub fn parse_instant(text: &str) -> Option<Instant> {
    parse_instant_in(text, Zone::Stockholm)
}

/// An RFC 3339 date-time; without a zone it is read in `zone`.
pub fn parse_instant_in(text: &str, zone: Zone) -> Option<Instant> {
    let (y, mo, d) = parse_date(text)?;
    let rest = text.get(10..)?;
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (h, mi, s) = (
        number(rest.get(0..2)?)?,
        number(rest.get(3..5)?)?,
        number(rest.get(6..8)?)?,
    );
    if rest.as_bytes().get(2) != Some(&b':')
        || rest.as_bytes().get(5) != Some(&b':')
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let mut tail = &rest[8..];
    let mut millis = 0;
    if let Some(frac) = tail.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3 = &frac[..digits.min(3)];
        millis = number(first3)? * 10_i64.pow(3 - first3.len() as u32);
        tail = &frac[digits..];
    }
    let local = (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + millis;
    let (offset_minutes, zone_assumed) = match tail {
        "Z" | "z" => (0, false),
        "" => match zone {
            Zone::Stockholm => (stockholm_offset(y, mo, d, h) * 60, true),
            Zone::Utc => (0, true),
        },
        offset => {
            let sign = match offset.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let hh = number(offset.get(1..3)?)?;
            let mm = match offset.get(3..) {
                Some(":00") | Some("00") | Some("") => 0,
                Some(other) => number(other.trim_start_matches(':'))?,
                None => 0,
            };
            if hh > 14 || mm > 59 {
                return None;
            }
            (sign * (hh * 60 + mm), false)
        }
    };
    Some(Instant {
        millis: local - offset_minutes * 60_000,
        zone_assumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_468, -1, 0, 20_133, 19_782, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(20_133), (2025, 2, 14));
    }

    #[test]
    fn dates() {
        assert_eq!(date_days("1970-01-01"), Some((0, false)));
        assert_eq!(date_days("2025-02-14"), Some((20133, false)));
        assert_eq!(date_days("2025-02-14T00:00:00"), Some((20133, true)));
        assert_eq!(date_days("2025-02-30"), None);
        assert_eq!(date_days("14/02/2025"), None);
        assert_eq!(date_days("2025-02-14x"), None);
    }

    #[test]
    fn instants() {
        let utc = |t: &str| parse_instant(t).map(|i| (i.millis, i.zone_assumed));
        assert_eq!(
            utc("2026-02-10T07:00:00Z"),
            Some((1_770_706_800_000, false))
        );
        assert_eq!(
            utc("2026-02-10T08:00:00+01:00"),
            Some((1_770_706_800_000, false))
        );
        assert_eq!(
            utc("2026-02-10T08:00:00.250+0100"),
            Some((1_770_706_800_250, false))
        );
        // No zone: Swedish winter time, reported as assumed.
        assert_eq!(utc("2026-02-10T08:00:00"), Some((1_770_706_800_000, true)));
        // Summer time.
        assert_eq!(
            utc("2025-09-10T08:00:00"),
            utc("2025-09-10T06:00:00Z").map(|(m, _)| (m, true))
        );
        assert_eq!(
            utc("2025-09-10 08:00:00+02:00"),
            utc("2025-09-10T06:00:00Z")
        );
        assert_eq!(utc("2025-09-10T25:00:00Z"), None);
        assert_eq!(utc("2025-09-10T08:00:00+1"), None);
        assert_eq!(utc("yesterday"), None);
    }

    #[test]
    fn zone_less_instants_are_read_in_the_configured_zone() {
        let utc = parse_instant_in("2025-09-10T06:00:00", Zone::Utc);
        assert_eq!(
            utc.map(|i| (i.millis, i.zone_assumed)),
            parse_instant("2025-09-10T06:00:00Z").map(|i| (i.millis, true))
        );
        // A zone in the text wins over the configured one.
        assert_eq!(
            parse_instant_in("2025-09-10T08:00:00+02:00", Zone::Utc),
            parse_instant("2025-09-10T06:00:00Z")
        );
    }

    #[test]
    fn summer_time_switches_on_the_last_sundays() {
        // 2026: 29 March and 25 October.
        assert_eq!(stockholm_offset(2026, 3, 29, 1), 1);
        assert_eq!(stockholm_offset(2026, 3, 29, 3), 2);
        assert_eq!(stockholm_offset(2026, 10, 25, 2), 2);
        assert_eq!(stockholm_offset(2026, 10, 25, 3), 1);
        assert_eq!(stockholm_offset(2026, 7, 1, 12), 2);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = parse_instant(&text);
            let _ = date_days(&text);
        }
    }
}
