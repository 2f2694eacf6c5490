//! A week streamed unit by unit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use skolflode_simulator::stream::stream_week;
use skolflode_simulator::SimConfig;

#[test]
fn a_week_streams_unit_by_unit() {
    let config = SimConfig {
        pupils: Some(1500),
        ..SimConfig::default()
    };
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let stats = stream_week(&config, 2025, 36, None, &mut out, |s| seen.push(s.units)).unwrap();
    assert_eq!(stats.units, 3);
    assert_eq!(seen, vec![1, 2, 3]);
    assert_eq!(stats.bytes as usize, out.len());
    let lines: Vec<serde_json::Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, stats.items);
    let huvudman = lines
        .iter()
        .filter(|l| l["endpoint"] == "organisations" && l["item"]["organisationType"] == "Huvudman")
        .count();
    assert_eq!(huvudman, 1);
    for l in lines.iter().filter(|l| l["endpoint"] == "calendarEvents") {
        let start = l["item"]["startTime"].as_str().unwrap();
        assert!(
            ("2025-09-01".."2025-09-08").contains(&&start[..10]),
            "{start}"
        );
    }
    // About 1500 pupils × 22 hours of lessons: tens of thousands of records.
    assert!(stats.attendances > 20_000, "{stats:?}");
    assert!(stats.calendar_events > 1_000, "{stats:?}");

    // Same seed, same bytes.
    let mut again = Vec::new();
    stream_week(&config, 2025, 36, None, &mut again, |_| {}).unwrap();
    assert_eq!(out, again);
}
