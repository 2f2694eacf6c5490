//! Weeks and days as the registers count them: ISO weeks of the local date
//! in Europe/Stockholm, where Swedish lessons take place.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Europe::Stockholm;

pub const DAY_MILLIS: i64 = 86_400_000;

/// The local date of a UTC instant (milliseconds).
pub fn local_date(millis: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(millis).map(|t| t.with_timezone(&Stockholm).date_naive())
}

/// Days since 1970-01-01 of a date (the Avro `date` logical type).
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The ISO week label of a date, e.g. `2025-W07`.
pub fn week_label(date: NaiveDate) -> String {
    let w = date.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

/// The ISO week label of a UTC instant's local date.
pub fn week_of(millis: i64) -> Option<String> {
    local_date(millis).map(week_label)
}

/// Local midnight at the start of `date`, as a UTC instant.
pub fn local_midnight(date: NaiveDate) -> Option<i64> {
    Stockholm
        .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// The instant (UTC milliseconds) at which a week label's week ends: the
/// following Monday at local midnight.
pub fn week_end(label: &str) -> Option<i64> {
    let (year, week) = label.split_once("-W")?;
    let monday =
        NaiveDate::from_isoywd_opt(year.parse().ok()?, week.parse().ok()?, chrono::Weekday::Mon)?;
    local_midnight(monday + Duration::days(7))
}

/// The instant a day-precision date starts (local midnight), from Avro
/// epoch days.
pub fn day_start(epoch_days: i32) -> Option<i64> {
    NaiveDate::default()
        .checked_add_signed(Duration::days(i64::from(epoch_days)))
        .and_then(local_midnight)
}

/// The calendar year in which the school year of a day (epoch days)
/// starts: school years start in July or later.
pub fn school_year_start(epoch_days: i32) -> Option<i32> {
    let date = NaiveDate::default().checked_add_signed(Duration::days(i64::from(epoch_days)))?;
    Some(if date.month() >= 7 {
        date.year()
    } else {
        date.year() - 1
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sunday_evening_belongs_to_its_week_by_local_time() {
        // 2025-02-16 23:30 in Stockholm is 22:30 UTC: still week 7.
        let t = DateTime::parse_from_rfc3339("2025-02-16T22:30:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(week_of(t).unwrap(), "2025-W07");
        let t = DateTime::parse_from_rfc3339("2025-02-16T23:30:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(week_of(t).unwrap(), "2025-W08");
    }

    #[test]
    fn a_week_ends_at_the_next_local_monday() {
        let end = week_end("2025-W07").unwrap();
        assert_eq!(
            DateTime::from_timestamp_millis(end).unwrap().to_rfc3339(),
            "2025-02-16T23:00:00+00:00"
        );
        // ISO year boundaries: 2026-W01 starts on Monday 2025-12-29.
        assert_eq!(
            week_label(NaiveDate::from_ymd_opt(2025, 12, 29).unwrap()),
            "2026-W01"
        );
    }
}
