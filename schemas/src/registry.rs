//! A client for the Confluent-compatible schema-registry REST API (served by
//! Confluent Schema Registry, Apicurio Registry's `/apis/ccompat/v7`,
//! Karapace, Redpanda). Subjects follow the TopicNameStrategy:
//! `<topic>-key` and `<topic>-value`. Ids and schemas are cached: a schema
//! is registered or fetched once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use serde::Deserialize;

use crate::SchemaError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Compatibility levels of the Confluent API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Compatibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }
}

/// A registered schema version.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Deserialize)]
struct CompatibilityResponse {
    is_compatible: bool,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error_code: Option<i64>,
}

/// Confluent's "subject not found" and "version not found" error codes.
const SUBJECT_NOT_FOUND: i64 = 40401;
const VERSION_NOT_FOUND: i64 = 40402;

/// The registry client. Cheap to clone; clones share the caches.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    by_id: Arc<Mutex<HashMap<u32, Arc<Schema>>>>,
    ids: Arc<Mutex<HashMap<(String, String), u32>>>,
}

impl RegistryClient {
    /// A client for the registry at `base_url` (e.g.
    /// `http://127.0.0.1:8081` or `http://host/apis/ccompat/v7`), with a
    /// per-request timeout.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, SchemaError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SchemaError::Registry {
                url: base_url.to_owned(),
                cause: e.to_string(),
            })?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            by_id: Arc::default(),
            ids: Arc::default(),
        })
    }

    /// The registry's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Register `schema` under `subject` (idempotent on the registry's side:
    /// the same schema gets the same id) and return its global id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, SchemaError> {
        let text = validated(schema)?;
        let cache_key = (subject.to_owned(), text.clone());
        if let Some(id) = self
            .ids
            .lock()
            .ok()
            .and_then(|m| m.get(&cache_key).copied())
        {
            return Ok(id);
        }
        let url = format!("{}/subjects/{}/versions", self.base, encode_path(subject));
        let body = serde_json::json!({ "schema": text, "schemaType": "AVRO" });
        let response: IdResponse = self.send(self.http.post(&url).json(&body), &url).await?;
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(cache_key, response.id);
        }
        Ok(response.id)
    }

    /// The schema with a global id, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, SchemaError> {
        if let Some(schema) = self.by_id.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(schema);
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let response: SchemaResponse = self.send(self.http.get(&url), &url).await?;
        let schema =
            Arc::new(
                Schema::parse_str(&response.schema).map_err(|e| SchemaError::Registry {
                    url: url.clone(),
                    cause: format!("schema {id} does not parse: {e}"),
                })?,
            );
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.insert(id, Arc::clone(&schema));
        }
        Ok(schema)
    }

    /// Whether `schema` may be registered under `subject` given the
    /// subject's compatibility level. A subject that does not exist yet
    /// accepts anything.
    pub async fn is_compatible(&self, subject: &str, schema: &str) -> Result<bool, SchemaError> {
        let url = format!(
            "{}/compatibility/subjects/{}/versions/latest",
            self.base,
            encode_path(subject)
        );
        let body = serde_json::json!({ "schema": validated(schema)?, "schemaType": "AVRO" });
        match self
            .send::<CompatibilityResponse>(self.http.post(&url).json(&body), &url)
            .await
        {
            Ok(r) => Ok(r.is_compatible),
            Err(SchemaError::RegistryStatus {
                status: 404, body, ..
            }) if not_found_code(&body).is_some() => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Set a subject's compatibility level.
    pub async fn set_compatibility(
        &self,
        subject: &str,
        level: Compatibility,
    ) -> Result<(), SchemaError> {
        let url = format!("{}/config/{}", self.base, encode_path(subject));
        let body = serde_json::json!({ "compatibility": level.as_str() });
        let _: serde_json::Value = self.send(self.http.put(&url).json(&body), &url).await?;
        Ok(())
    }

    /// The newest version under a subject, or `None` if there is none.
    pub async fn latest(&self, subject: &str) -> Result<Option<SubjectVersion>, SchemaError> {
        let url = format!(
            "{}/subjects/{}/versions/latest",
            self.base,
            encode_path(subject)
        );
        match self.send::<SubjectVersion>(self.http.get(&url), &url).await {
            Ok(v) => Ok(Some(v)),
            Err(SchemaError::RegistryStatus {
                status: 404, body, ..
            }) if not_found_code(&body).is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, SchemaError> {
        let response = request
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| SchemaError::Registry {
                url: url.to_owned(),
                cause: e.to_string(),
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| SchemaError::Registry {
            url: url.to_owned(),
            cause: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(SchemaError::RegistryStatus {
                url: url.to_owned(),
                status: status.as_u16(),
                body: text.chars().take(500).collect(),
            });
        }
        serde_json::from_str(&text).map_err(|e| SchemaError::Registry {
            url: url.to_owned(),
            cause: format!(
                "unexpected answer ({e}): {}",
                text.chars().take(200).collect::<String>()
            ),
        })
    }
}

fn not_found_code(body: &str) -> Option<i64> {
    serde_json::from_str::<ErrorResponse>(body)
        .ok()
        .and_then(|e| e.error_code)
        .filter(|c| *c == SUBJECT_NOT_FOUND || *c == VERSION_NOT_FOUND)
}

/// The schema text, once it is known to parse. The full text is sent, not
/// the Parsing Canonical Form: that form drops `default`, which readers need
/// for schema resolution, and `doc`, which consumers read. Registries
/// normalise on their side to decide whether a schema is already known.
fn validated(schema: &str) -> Result<String, SchemaError> {
    Schema::parse_str(schema)
        .map(|_| schema.to_owned())
        .map_err(|e| SchemaError::Unresolvable(format!("schema does not parse: {e}")))
}

/// Subjects contain dots and dashes only, but be safe with anything else.
fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
