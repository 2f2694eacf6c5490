//! The served SS 12000 JSON validates against the OpenAPI specification in
//! `../shared/reference/ss12000-v2.0-draft/` for every endpoint served
//! (in the standard dialect: a vendor dialect deviates on purpose), and the
//! simulator's table of query parameters is the specification's.
//!
//! The specification is OpenAPI 3.0 in YAML across several files. Its
//! schemas are read as JSON Schema draft 4 (which OpenAPI 3.0 extends),
//! after two mechanical translations: `nullable: true` becomes a `null`
//! type, and the misplaced `required: true` on one property is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonschema::{Draft, Retrieve, Uri};
use serde_json::Value;
use skolflode_simulator::config::{Evolution, VendorBehaviour};
use skolflode_simulator::ss12000::{query_parameters, Param, QUERY_PARAMETERS};
use skolflode_simulator::SimConfig;
use support::{date, start, window};

const BASE: &str = "file:///ss12000/";

fn spec_dir() -> Option<PathBuf> {
    skolflode_simulator::spec::dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn translate(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("required").is_some_and(Value::is_boolean) {
                map.remove("required");
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert(
                        "type".into(),
                        Value::Array(vec![Value::String(t), Value::String("null".into())]),
                    );
                }
            }
            for v in map.values_mut() {
                translate(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(translate),
        _ => {}
    }
}

struct Spec {
    files: HashMap<String, Value>,
}

impl Spec {
    fn load(dir: &Path) -> Self {
        let mut files = HashMap::new();
        for sub in ["", "paths/"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(entry.path()).unwrap();
                let mut value: Value =
                    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{sub}{name}: {e}"));
                translate(&mut value);
                files.insert(format!("{sub}{name}"), value);
            }
        }
        Self { files }
    }
}

impl Retrieve for Spec {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri
            .as_str()
            .strip_prefix(BASE)
            .ok_or("outside the specification")?;
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| format!("no file {path}").into())
    }
}

fn validator(dir: &Path, reference: &str) -> jsonschema::Validator {
    let schema = serde_json::json!({ "$ref": format!("{BASE}{reference}") });
    jsonschema::options()
        .with_draft(Draft::Draft4)
        .with_retriever(Spec::load(dir))
        .build(&schema)
        .unwrap_or_else(|e| panic!("{reference}: {e}"))
}

#[tokio::test]
async fn every_endpoint_validates_against_the_specification() {
    let Some(dir) = spec_dir() else {
        panic!("the SS 12000 specification is not at ../shared/reference/ss12000-v2.0-draft");
    };
    let config = SimConfig {
        evolution: Evolution {
            teacher_departures_per_term: 2.0,
            ..Evolution::default()
        },
        vendor: VendorBehaviour {
            dated_assignments: true,
            ..VendorBehaviour::default()
        },
        ..SimConfig::default()
    };
    let running = start(config, date(2025, 10, 6)).await;
    let token = running.token().await;
    let endpoints = [
        ("organisations", "Organisation.yaml#/Organisations"),
        ("persons", "Person.yaml#/PersonsExpanded"),
        ("duties", "Duty.yaml#/Duties"),
        ("groups", "Group.yaml#/GroupsExpanded"),
        ("syllabuses", "Syllabus.yaml#/Syllabuses"),
        ("activities", "Activity.yaml#/Activities"),
        ("calendarEvents", "CalendarEvent.yaml#/CalendarEvents"),
        ("attendances", "Attendance.yaml#/Attendances"),
    ];
    for (endpoint, reference) in endpoints {
        let validator = validator(&dir, reference);
        let mut path = format!("/ss12000/v2/{endpoint}?limit=250{}", window(endpoint));
        let mut pages = 0;
        loop {
            let page: Value = running.get(&token, &path).await.json().await.unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&page)
                .take(5)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{endpoint}: {errors:#?}");
            pages += 1;
            match page["pageToken"].as_str() {
                Some(next) if pages < 6 => {
                    path = format!("/ss12000/v2/{endpoint}?limit=250&pageToken={next}")
                }
                _ => break,
            }
        }
    }
    let validator = validator(&dir, "paths/deletedEntities.yaml#/DeletedEntities");
    let feed: Value = running
        .get(&token, "/ss12000/v2/deletedEntities")
        .await
        .json()
        .await
        .unwrap();
    assert!(feed["data"]["duties"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
    let errors: Vec<String> = validator
        .iter_errors(&feed)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "deletedEntities: {errors:?}");
}

#[test]
fn the_validator_rejects_what_the_standard_forbids() {
    let Some(dir) = spec_dir() else {
        panic!("the SS 12000 specification is missing");
    };
    let validator = validator(&dir, "Activity.yaml#/Activities");
    let bad =
        serde_json::json!({ "data": [{ "id": "x", "displayName": "MA 7A" }], "pageToken": null });
    assert!(
        !validator.is_valid(&bad),
        "an activity without its required fields passed"
    );
    let bad_enum = serde_json::json!({ "data": [{
        "id": "x", "displayName": "MA 7A", "calendarEventsRequired": true, "startDate": "2025-08-20",
        "groups": [{ "id": "g" }], "organisation": { "id": "o" }, "activityType": "Lektion"
    }], "pageToken": null });
    assert!(
        !validator.is_valid(&bad_enum),
        "an unknown activityType passed"
    );
}

/// The query parameters of `GET /{endpoint}`: name → `required`.
fn spec_query_parameters(dir: &Path, endpoint: &str) -> HashMap<String, bool> {
    skolflode_simulator::spec::query_parameters(dir, endpoint).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_parameter_table_is_the_specifications() {
    let Some(dir) = spec_dir() else {
        panic!("the SS 12000 specification is missing");
    };
    let mut endpoints: Vec<&str> = skolflode_simulator::ss12000::ENDPOINTS.to_vec();
    endpoints.push("deletedEntities");
    assert_eq!(
        QUERY_PARAMETERS.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
        endpoints
    );
    let mut implemented = 0;
    for (endpoint, table) in QUERY_PARAMETERS {
        let spec = spec_query_parameters(&dir, endpoint);
        for param in *table {
            let required = spec
                .get(param.name())
                .unwrap_or_else(|| panic!("{endpoint}: the specification has no {}", param.name()));
            assert_eq!(param.required(), *required, "{endpoint}: {}", param.name());
            implemented += usize::from(param.implemented());
        }
        for (name, required) in &spec {
            let param = table
                .iter()
                .find(|p| p.name() == name)
                .unwrap_or_else(|| panic!("{endpoint}: the table lacks {name}"));
            assert!(
                !required || param.required(),
                "{endpoint}: {name} is required"
            );
        }
        assert_eq!(table.len(), spec.len(), "{endpoint}");
        for always in [Param::Limit, Param::PageToken] {
            assert!(table.contains(&always), "{endpoint}: {}", always.name());
        }
    }
    // limit, pageToken and meta.modified.after on the 8 entity endpoints,
    // the window on calendarEvents, meta.created.after on attendances,
    // after/limit/pageToken on deletions.
    assert_eq!(implemented, 8 * 3 + 2 + 1 + 3);
    assert_eq!(
        query_parameters("calendarEvents")
            .unwrap()
            .iter()
            .filter(|p| p.required())
            .map(|p| p.name())
            .collect::<Vec<_>>(),
        ["startTime.onOrAfter", "startTime.onOrBefore"]
    );
}
