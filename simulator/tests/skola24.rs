//! The Skola24-style timetable vendor: its own ids and JSON, linkable to
//! the administration vendor only through signatures, group names and
//! civic numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use skolflode_simulator::config::Evolution;
use skolflode_simulator::SimConfig;
use support::{date, start};

async fn post(running: &support::Running, token: &str, op: &str, body: Value) -> Value {
    let response = running
        .http
        .post(format!("{}/skola24/v0/{op}", running.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{op}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn timetable_vendor_serves_its_units_and_links_by_signature_name_and_civic_number() {
    let config = SimConfig {
        pupils: Some(1500),
        skola24_share: 0.34,
        evolution: Evolution {
            teacher_reassignments_per_activity_and_term: 1.0,
            ..Evolution::default()
        },
        ..SimConfig::default()
    };
    let running = start(config, date(2025, 10, 13)).await;
    let token = running.token().await;
    let (skola24_units, signatures, group_names) = {
        let sim = running.state.sim();
        let units: Vec<u32> = (0..sim.world.organisations.len() as u32)
            .filter(|u| sim.world.is_skola24(*u))
            .collect();
        let signatures: HashSet<String> = sim
            .world
            .duties
            .iter()
            .map(|d| d.signature.clone())
            .collect();
        let names: HashSet<String> = sim.world.groups.iter().map(|g| g.name.clone()).collect();
        (units, signatures, names)
    };
    assert_eq!(skola24_units.len(), 1);

    let units = post(&running, &token, "units", json!({})).await;
    let listed = units["data"]["units"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let unit_guid = listed[0]["unitGuid"].as_str().unwrap().to_owned();

    let students = post(
        &running,
        &token,
        "students",
        json!({ "unitGuid": unit_guid }),
    )
    .await;
    let civic_of: HashMap<String, String> = students["data"]["students"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            Some((
                s["studentGuid"].as_str()?.to_owned(),
                s["personalIdentityNumber"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert!(civic_of.len() > 300);
    assert!(civic_of.values().all(|c| c.len() == 11 && &c[6..7] == "-"));

    let week = post(
        &running,
        &token,
        "lessons",
        json!({ "unitGuid": unit_guid, "year": 2025, "week": 38 }),
    )
    .await;
    let lessons = week["data"]["lessons"].as_array().unwrap();
    assert!(lessons.len() > 200, "{} lessons", lessons.len());
    let mut absent_minutes: HashMap<String, u64> = HashMap::new();
    for lesson in lessons {
        for t in lesson["teachers"].as_array().unwrap() {
            assert!(signatures.contains(t.as_str().unwrap()));
        }
        for g in lesson["groups"].as_array().unwrap() {
            assert!(group_names.contains(g.as_str().unwrap()));
        }
        for a in lesson["absences"].as_array().unwrap() {
            let guid = a["studentGuid"].as_str().unwrap();
            let civic = civic_of
                .get(guid)
                .cloned()
                .unwrap_or_else(|| format!("no civic: {guid}"));
            *absent_minutes.entry(civic).or_default() += a["validAbsenceMinutes"].as_u64().unwrap()
                + a["invalidAbsenceMinutes"].as_u64().unwrap();
        }
    }

    // The absences, linked by civic number, are what the simulation
    // recorded for that week at that unit.
    let expected: HashMap<String, u64> = {
        let sim = running.state.sim();
        let monday = date(2025, 9, 15);
        let mut out: HashMap<String, u64> = HashMap::new();
        for l in sim
            .lessons
            .iter()
            .filter(|l| l.date >= monday && l.date < monday + chrono::Duration::days(7))
        {
            if sim.world.activities[l.activity as usize].unit != skola24_units[0] {
                continue;
            }
            if let Some((a, b)) = l.records {
                for r in &sim.records[a as usize..b as usize] {
                    let minutes = u64::from(r.valid + r.invalid);
                    if minutes > 0 {
                        let civic = sim.world.persons[r.pupil as usize]
                            .civic
                            .as_deref()
                            .map(|c| format!("{}-{}", &c[2..8], &c[8..]))
                            .unwrap_or_else(|| "none".into());
                        *out.entry(civic).or_default() += minutes;
                    }
                }
            }
        }
        out
    };
    let linked: HashMap<String, u64> = absent_minutes
        .into_iter()
        .filter(|(c, _)| !c.starts_with("no civic"))
        .collect();
    let expected: HashMap<String, u64> =
        expected.into_iter().filter(|(c, _)| c != "none").collect();
    assert_eq!(linked, expected);

    // The SS 12000 vendor does not serve that unit's lessons.
    let events = running.all(&token, "calendarEvents", "").await;
    let guids: HashSet<String> = lessons
        .iter()
        .map(|l| l["lessonGuid"].as_str().unwrap().to_owned())
        .collect();
    assert!(events
        .iter()
        .all(|e| !guids.contains(e["id"].as_str().unwrap())));
    let sim = running.state.sim();
    let shown = (0..sim.lessons.len())
        .filter(|i| sim.render("calendarEvents", *i).is_some())
        .count();
    assert_eq!(events.len(), shown);
    assert!(shown < sim.lessons.len());
}

#[tokio::test]
async fn past_lessons_show_the_overwriting_teacher() {
    let config = SimConfig {
        pupils: Some(600),
        skola24_share: 1.0,
        evolution: Evolution {
            teacher_reassignments_per_activity_and_term: 2.0,
            ..Evolution::default()
        },
        ..SimConfig::default()
    };
    let running = start(config, date(2025, 10, 20)).await;
    let token = running.token().await;
    let (unit_guid, groups, subject, old_signature, new_signature, switch) = {
        let sim = running.state.sim();
        let a = sim
            .world
            .activities
            .iter()
            .find(|a| {
                a.taught_by.len() == 2
                    && a.taught_by[1].from > date(2025, 9, 22)
                    && a.language.is_none()
            })
            .expect("an activity with one reassignment after week 38");
        let sig = |d: u32| sim.world.duties[d as usize].signature.clone();
        let groups: Vec<String> = a
            .groups
            .iter()
            .map(|g| sim.world.groups[*g as usize].name.clone())
            .collect();
        (
            sim.skola24_unit_guid(a.unit),
            groups,
            sim.world.item_of(a).designation.to_owned(),
            sig(a.taught_by[0].duty),
            sig(a.taught_by[1].duty),
            a.taught_by[1].from,
        )
    };
    assert!(switch > date(2025, 9, 21));
    assert_ne!(old_signature, new_signature);
    let week = post(
        &running,
        &token,
        "lessons",
        json!({ "unitGuid": unit_guid, "year": 2025, "week": 38 }),
    )
    .await;
    let of_activity: Vec<&Value> = week["data"]["lessons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["subject"] == subject.as_str()
                && l["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    == groups
        })
        .collect();
    assert!(!of_activity.is_empty());
    // Week 38 was taught by the old teacher, yet the vendor now shows the
    // new one for it.
    for lesson in of_activity {
        assert_eq!(lesson["teachers"], json!([new_signature]));
    }
}
