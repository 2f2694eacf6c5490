//! The findings as they stand: every event on the findings topics, each
//! finding reduced to its latest event.

use std::collections::BTreeMap;

use skolflode_kafka::KafkaConfig;
use skolflode_schemas::records::QualityFinding;

use crate::QualityError;

/// What identifies a finding: connection, rule, entity kind, entity id,
/// field and week.
pub type FindingKey = (String, String, String, String, String, String);

fn key(f: &QualityFinding) -> FindingKey {
    (
        f.connection.clone(),
        f.rule.clone().unwrap_or_default(),
        f.endpoint.clone(),
        f.entity_id.clone(),
        f.field.clone(),
        f.week.clone().unwrap_or_default(),
    )
}

/// The latest event of each rule finding: the one observed last, and of
/// those the last given (partitions are read interleaved, so only the
/// clock orders a finding's events across them); repairs without a rule
/// are left out.
pub fn reduce(
    events: impl IntoIterator<Item = QualityFinding>,
) -> BTreeMap<FindingKey, QualityFinding> {
    let mut latest: BTreeMap<FindingKey, QualityFinding> = BTreeMap::new();
    for f in events {
        if f.rule.is_none() {
            continue;
        }
        match latest.get(&key(&f)) {
            Some(seen) if seen.observed_at.0 > f.observed_at.0 => {}
            _ => {
                latest.insert(key(&f), f);
            }
        }
    }
    latest
}

/// Every finding event on `topics`, read committed, each topic from its
/// beginning to its end as it stands. Blocking.
pub fn read(kafka: &KafkaConfig, topics: &[String]) -> Result<Vec<QualityFinding>, QualityError> {
    let mut events = Vec::new();
    crate::topics::read_all(kafka, topics, "QualityFinding", "findings", |f| {
        events.push(f)
    })?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skolflode_schemas::TimestampMillis;

    fn finding(rule: Option<&str>, entity: &str, resolved: Option<i64>) -> QualityFinding {
        QualityFinding {
            observed_at: TimestampMillis(resolved.unwrap_or(1)),
            connection: "c".into(),
            endpoint: "calendarEvents".into(),
            entity_id: entity.into(),
            rule: rule.map(str::to_owned),
            week: Some("2025-W36".into()),
            resolved_at: resolved.map(TimestampMillis),
            ..QualityFinding::default()
        }
    }

    #[test]
    fn the_latest_event_of_a_finding_is_its_state() {
        let latest = reduce([
            finding(Some("LESSON_NOT_REPORTED"), "l1", None),
            finding(Some("LESSON_NOT_REPORTED"), "l2", None),
            finding(Some("LESSON_NOT_REPORTED"), "l1", Some(5)),
            finding(None, "l3", None),
            // Read later from another partition, but observed before.
            finding(Some("LESSON_NOT_REPORTED"), "l1", None),
        ]);
        let states: Vec<(&str, Option<i64>)> = latest
            .values()
            .map(|f| (f.entity_id.as_str(), f.resolved_at.map(|t| t.0)))
            .collect();
        assert_eq!(states, vec![("l1", Some(5)), ("l2", None)]);
    }
}
