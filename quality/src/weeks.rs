//! ISO week labels (`2025-W36`): parsing, ordering and ranges.

/// `(year, week)` of a label `YYYY-Www`.
pub fn parse(label: &str) -> Option<(i32, u32)> {
    let (year, week) = label.split_once("-W")?;
    let year: i32 = year.parse().ok()?;
    let week: u32 = week.parse().ok()?;
    (year > 0 && (1..=53).contains(&week) && label.len() == 8).then_some((year, week))
}

/// Whether `week` lies in the inclusive range `from..=to`.
pub fn within(week: &str, from: (i32, u32), to: (i32, u32)) -> bool {
    parse(week).is_some_and(|w| from <= w && w <= to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_order() {
        assert_eq!(parse("2025-W36"), Some((2025, 36)));
        assert_eq!(parse("2025-W3"), None);
        assert_eq!(parse("2025-W54"), None);
        assert_eq!(parse("W36"), None);
        assert!(within("2026-W02", (2025, 36), (2026, 5)));
        assert!(!within("2025-W35", (2025, 36), (2026, 5)));
    }
}
