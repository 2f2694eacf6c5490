//! The Swedish school year: terms, breaks and public holidays, ISO weeks,
//! and Swedish local time (CET/CEST) for lesson times.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Weekday};

/// One school year, 1 July to 30 June, named by its first calendar year.
#[derive(Clone, Debug)]
pub struct SchoolYear {
    pub start_year: i32,
    pub autumn: (NaiveDate, NaiveDate),
    pub spring: (NaiveDate, NaiveDate),
    closed: Vec<NaiveDate>,
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN)
}

/// Monday of ISO week `week` of `year`.
pub fn iso_monday(year: i32, week: u32) -> NaiveDate {
    NaiveDate::from_isoywd_opt(year, week, Weekday::Mon).unwrap_or(NaiveDate::MIN)
}

/// Easter Sunday (anonymous Gregorian algorithm).
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    date(year, month as u32, day as u32)
}

fn week_days(monday: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    (0..5).map(move |i| monday + Duration::days(i))
}

impl SchoolYear {
    /// The school year that starts in the autumn of `start_year`: autumn
    /// term from the Wednesday of week 34 to the Friday before Christmas;
    /// spring term from the Thursday of week 2 to the Friday of week 24.
    /// Closed: autumn break (week 44), sports break (week 9), Easter break
    /// (the week after Easter Sunday), Good Friday, Ascension Day and the
    /// day after, 1 May and 6 June when on weekdays, and two study days
    /// without pupils (Monday of week 45, Friday of week 19): about the 178
    /// days the school ordinance asks for.
    pub fn new(start_year: i32) -> Self {
        let spring_year = start_year + 1;
        let autumn_start = iso_monday(start_year, 34) + Duration::days(2);
        let christmas = date(start_year, 12, 24);
        let mut autumn_end = christmas - Duration::days(1);
        while autumn_end.weekday() != Weekday::Fri {
            autumn_end -= Duration::days(1);
        }
        let spring_start = iso_monday(spring_year, 2) + Duration::days(3);
        let spring_end = iso_monday(spring_year, 24) + Duration::days(4);

        let mut closed: Vec<NaiveDate> = Vec::new();
        closed.extend(week_days(iso_monday(start_year, 44)));
        closed.extend(week_days(iso_monday(spring_year, 9)));
        let easter = easter(spring_year);
        closed.extend(week_days(easter + Duration::days(1)));
        closed.push(easter - Duration::days(2));
        let ascension = easter + Duration::days(39);
        closed.push(ascension);
        closed.push(ascension + Duration::days(1));
        closed.push(iso_monday(start_year, 45));
        closed.push(iso_monday(spring_year, 19) + Duration::days(4));
        closed.push(date(spring_year, 5, 1));
        closed.push(date(spring_year, 6, 6));
        closed.sort();
        closed.dedup();
        Self {
            start_year,
            autumn: (autumn_start, autumn_end),
            spring: (spring_start, spring_end),
            closed,
        }
    }

    /// `2025-26` style label.
    pub fn label(&self) -> String {
        format!("{}-{:02}", self.start_year, (self.start_year + 1) % 100)
    }

    /// Whether lessons take place on `day`.
    pub fn is_school_day(&self, day: NaiveDate) -> bool {
        let in_term = (self.autumn.0..=self.autumn.1).contains(&day)
            || (self.spring.0..=self.spring.1).contains(&day);
        in_term
            && !matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
            && self.closed.binary_search(&day).is_err()
    }

    /// 1 July and 30 June.
    pub fn bounds(&self) -> (NaiveDate, NaiveDate) {
        (
            date(self.start_year, 7, 1),
            date(self.start_year + 1, 6, 30),
        )
    }

    /// Every school day of the year.
    pub fn school_days(&self) -> Vec<NaiveDate> {
        let (from, to) = self.bounds();
        from.iter_days()
            .take_while(|d| *d <= to)
            .filter(|d| self.is_school_day(*d))
            .collect()
    }
}

/// `2025-W07` style ISO week label.
pub fn iso_week_label(day: NaiveDate) -> String {
    let w = day.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

/// Swedish local time's offset from UTC in hours on `local`: CEST (+2)
/// from the last Sunday of March 02:00 to the last Sunday of October 03:00,
/// CET (+1) otherwise.
pub fn stockholm_offset_hours(local: NaiveDateTime) -> i32 {
    let year = local.year();
    let last_sunday = |month: u32| {
        let end = date(year, month, 31);
        end - Duration::days(i64::from(end.weekday().num_days_from_sunday()))
    };
    let summer_from = last_sunday(3).and_hms_opt(2, 0, 0).unwrap_or_default();
    let summer_to = last_sunday(10).and_hms_opt(3, 0, 0).unwrap_or_default();
    if local >= summer_from && local < summer_to {
        2
    } else {
        1
    }
}

/// RFC 3339 with Swedish local offset, e.g. `2025-02-14T08:10:00+01:00`.
///
/// Written digit by digit: the simulator writes two or three of these per
/// item it serves, and chrono's `format` was a quarter of its CPU time.
pub fn rfc3339_local(local: NaiveDateTime) -> String {
    let mut out = Vec::with_capacity(25);
    write_rfc3339_local(&mut out, local);
    // Only ASCII is written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`rfc3339_local`], appended to a buffer.
pub fn write_rfc3339_local(out: &mut Vec<u8>, local: NaiveDateTime) {
    write_wall_time(out, local);
    out.push(b'+');
    two(out, stockholm_offset_hours(local) as u32);
    out.extend_from_slice(b":00");
}

fn two(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// A wall time without a zone, `2025-02-14T08:10:00`, appended to a
/// buffer.
pub fn write_wall_time(out: &mut Vec<u8>, local: NaiveDateTime) {
    let year = local.year();
    if (0..=9999).contains(&year) {
        let year = year as u32;
        two(out, year / 100);
        two(out, year % 100);
    } else {
        out.extend_from_slice(format!("{year:+05}").as_bytes());
    }
    out.push(b'-');
    two(out, local.month());
    out.push(b'-');
    two(out, local.day());
    out.push(b'T');
    two(out, local.hour());
    out.push(b':');
    two(out, local.minute());
    out.push(b':');
    two(out, local.second());
}

/// Milliseconds since the epoch of a Swedish local time.
pub fn local_to_epoch_millis(local: NaiveDateTime) -> i64 {
    (local - Duration::hours(i64::from(stockholm_offset_hours(local))))
        .and_utc()
        .timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_dates() {
        assert_eq!(easter(2025), date(2025, 4, 20));
        assert_eq!(easter(2026), date(2026, 4, 5));
        assert_eq!(easter(2024), date(2024, 3, 31));
    }

    #[test]
    fn a_school_year_has_about_178_days() {
        let year = SchoolYear::new(2025);
        let days = year.school_days().len();
        assert!((176..=181).contains(&days), "{days} school days");
        assert_eq!(year.label(), "2025-26");
        assert!(!year.is_school_day(date(2025, 10, 29)), "autumn break");
        assert!(year.is_school_day(date(2025, 8, 20)));
        assert!(!year.is_school_day(date(2025, 8, 18)));
        assert!(!year.is_school_day(date(2026, 4, 6)), "Easter Monday");
    }

    #[test]
    fn local_time_offsets() {
        let winter = date(2026, 2, 10).and_hms_opt(8, 0, 0).unwrap_or_default();
        let summer = date(2025, 9, 10).and_hms_opt(8, 0, 0).unwrap_or_default();
        assert_eq!(rfc3339_local(winter), "2026-02-10T08:00:00+01:00");
        assert_eq!(rfc3339_local(summer), "2025-09-10T08:00:00+02:00");
        assert_eq!(local_to_epoch_millis(winter), 1_770_706_800_000);
    }

    #[test]
    fn rfc3339_is_what_chrono_writes() {
        let mut t = date(2019, 1, 1).and_hms_opt(0, 0, 0).unwrap_or_default();
        let end = date(2031, 1, 1).and_hms_opt(0, 0, 0).unwrap_or_default();
        while t < end {
            let chrono = format!(
                "{}+{:02}:00",
                t.format("%Y-%m-%dT%H:%M:%S"),
                stockholm_offset_hours(t)
            );
            assert_eq!(rfc3339_local(t), chrono);
            t += Duration::seconds(7_919);
        }
    }

    #[test]
    fn summer_time_starts_and_ends_on_the_last_sundays() {
        let at = |y, m, d, h| date(y, m, d).and_hms_opt(h, 0, 0).unwrap_or_default();
        assert_eq!(stockholm_offset_hours(at(2025, 3, 30, 1)), 1);
        assert_eq!(stockholm_offset_hours(at(2025, 3, 30, 3)), 2);
        assert_eq!(stockholm_offset_hours(at(2025, 10, 26, 2)), 2);
        assert_eq!(stockholm_offset_hours(at(2025, 10, 26, 3)), 1);
        // 31 March and 31 October themselves are Sundays in 2024 and 2027.
        assert_eq!(stockholm_offset_hours(at(2024, 3, 31, 3)), 2);
        assert_eq!(stockholm_offset_hours(at(2027, 10, 31, 3)), 1);
        assert_eq!(stockholm_offset_hours(at(2027, 10, 30, 3)), 2);
    }
}
