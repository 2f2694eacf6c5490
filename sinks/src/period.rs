//! ISO weeks and school years, as the registers label them.

use chrono::{Datelike, NaiveDate, Weekday};

/// An ISO week, labelled `2025-W07`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week {
    pub year: i32,
    pub week: u32,
}

impl Week {
    /// Parse `YYYY-Www`; `None` for anything else or a week the year does
    /// not have.
    pub fn parse(label: &str) -> Option<Week> {
        let (year, week) = label.split_once("-W")?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(week, 2) || year.starts_with('0') {
            return None;
        }
        let year: i32 = year.parse().ok()?;
        let week: u32 = week.parse().ok()?;
        NaiveDate::from_isoywd_opt(year, week, Weekday::Mon)?;
        Some(Week { year, week })
    }

    pub fn label(self) -> String {
        format!("{}-W{:02}", self.year, self.week)
    }

    /// The school year (1 July – 30 June) the week belongs to: the one its
    /// Thursday falls in, as ISO assigns a week to the year of its
    /// Thursday. Labelled `2025-26`.
    pub fn school_year(self) -> String {
        let thursday = NaiveDate::from_isoywd_opt(self.year, self.week, Weekday::Thu)
            .unwrap_or(NaiveDate::MIN);
        let start = if thursday.month() >= 7 {
            thursday.year()
        } else {
            thursday.year() - 1
        };
        format!("{start}-{:02}", (start + 1).rem_euclid(100))
    }
}

/// Week labels that bound school year `year` (`2025-26`): every week of
/// it sorts between them, as labels compare; a few of the years around
/// it do too.
pub fn school_year_bounds(year: &str) -> Option<(String, String)> {
    let start: i32 = year.get(..4)?.parse().ok()?;
    Some((format!("{start}-W26"), format!("{}-W27", start + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_parse_and_fall_in_school_years() {
        let w = Week::parse("2025-W36").unwrap_or(Week { year: 0, week: 0 });
        assert_eq!(w.label(), "2025-W36");
        assert_eq!(w.school_year(), "2025-26");
        // 2026-W26: Monday 22 June, Thursday 25 June: still 2025-26.
        assert_eq!(
            Week::parse("2026-W26").map(Week::school_year).as_deref(),
            Some("2025-26")
        );
        // 2026-W27: Thursday 2 July: 2026-27.
        assert_eq!(
            Week::parse("2026-W27").map(Week::school_year).as_deref(),
            Some("2026-27")
        );
        // 2025-W01 starts on 30 December 2024: its Thursday is in 2025.
        assert_eq!(
            Week::parse("2025-W01").map(Week::school_year).as_deref(),
            Some("2024-25")
        );
        assert_eq!(
            Week::parse("2099-W01").map(Week::school_year).as_deref(),
            Some("2098-99")
        );
        for bad in [
            "2025-W54", "2025-W7", "25-W07", "2025W07", "2025-W00", "", "0999-W01", "+202-W36",
            "2025-W+1",
        ] {
            assert_eq!(Week::parse(bad), None, "{bad}");
        }
        // Every week of a school year lies within its bounds.
        let (lo, hi) = school_year_bounds("2020-21").unwrap_or_default();
        for label in ["2020-W27", "2020-W53", "2021-W01", "2021-W25"] {
            assert!(lo.as_str() <= label && label <= hi.as_str(), "{label}");
            assert_eq!(
                Week::parse(label).map(Week::school_year).as_deref(),
                Some("2020-21")
            );
        }
        assert_eq!(school_year_bounds("20x0-21"), None);
        // 2025 has no week 53; 2026 (starting on a Thursday) has.
        assert_eq!(Week::parse("2025-W53"), None);
        assert!(Week::parse("2026-W53").is_some());
        assert!(Week::parse("2020-W53").is_some());
    }
}
