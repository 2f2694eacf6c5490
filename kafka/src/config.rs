//! Connection settings for Kafka.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::KafkaError;

/// The environment variable that names the bootstrap servers.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP";

/// Default bootstrap address: the broker that `scripts/kafka start` runs.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// How to reach Kafka.
///
/// ```toml
/// [kafka]
/// bootstrap_servers = "127.0.0.1:9092"   # default; KAFKA_BOOTSTRAP overrides
/// client_id = "skolflode"                # default
/// request_timeout_ms = 30000              # default
/// [kafka.properties]                      # passed to librdkafka as they are
/// "security.protocol" = "ssl"
/// ```
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Client id reported to the brokers (shows up in their logs and quotas).
    pub client_id: String,
    /// Upper bound for a single request to a broker, in milliseconds: the
    /// deadline of admin operations, and librdkafka's `request.timeout.ms`
    /// of producers (a producer-only property: consumers would warn that
    /// they ignore it).
    pub request_timeout_ms: u64,
    /// Extra librdkafka properties, for TLS, SASL and tuning. Keys that this
    /// struct sets itself are rejected by [`KafkaConfig::build`] so that the
    /// same setting cannot be given twice with different values.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: DEFAULT_BOOTSTRAP.to_owned(),
            client_id: "skolflode".to_owned(),
            request_timeout_ms: 30_000,
            properties: BTreeMap::new(),
        }
    }
}

const OWNED_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "request.timeout.ms",
    "transactional.id",
    "group.id",
];

impl KafkaConfig {
    /// The defaults, with the bootstrap servers taken from `KAFKA_BOOTSTRAP`
    /// when it is set.
    pub fn from_env() -> Self {
        let mut config = Self::default();
        config.apply_env();
        config
    }

    /// Let `KAFKA_BOOTSTRAP` override the configured bootstrap servers.
    pub fn apply_env(&mut self) {
        if let Ok(bootstrap) = std::env::var(BOOTSTRAP_ENV) {
            if !bootstrap.trim().is_empty() {
                self.bootstrap_servers = bootstrap.trim().to_owned();
            }
        }
    }

    /// The request timeout as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Validate the settings and return the common client config.
    pub fn build(&self) -> Result<ClientConfig, KafkaError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(KafkaError::InvalidConfig(
                "bootstrap_servers is empty".to_owned(),
            ));
        }
        for server in self.bootstrap_servers.split(',') {
            let server = server.trim();
            let port_ok = server
                .rsplit_once(':')
                .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !port_ok {
                return Err(KafkaError::InvalidConfig(format!(
                    "bootstrap server {server:?} is not host:port"
                )));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(KafkaError::InvalidConfig(
                "request_timeout_ms must be positive".to_owned(),
            ));
        }
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| OWNED_KEYS.contains(&k.as_str()))
        {
            return Err(KafkaError::InvalidConfig(format!(
                "property {key:?} is set by skolflode itself; use the dedicated setting"
            )));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        Ok(client)
    }

    /// A consumer that sees only committed records, commits nothing by
    /// itself and starts from the beginning when the group has no offsets:
    /// offsets are stored only together with the output they produced.
    pub fn consumer(&self, group_id: &str) -> Result<ClientConfig, KafkaError> {
        let mut client = self.build()?;
        client
            .set("group.id", group_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        // librdkafka stops fetching a partition once its prefetch queue
        // holds `queued.min.messages` and waits `fetch.queue.backoff.ms`
        // (1 s by default) before asking again: a stage that drains the
        // queue in a fraction of that then idles. A short backoff keeps a
        // replay reading; `properties` may still set either.
        for (key, value) in [("fetch.queue.backoff.ms", "10")] {
            if !self.properties.contains_key(key) {
                client.set(key, value);
            }
        }
        Ok(client)
    }

    /// An idempotent producer that waits for all in-sync replicas. Keys
    /// land where Java clients put them (`partitioner = murmur2_random`,
    /// unless `properties` say otherwise), so that topics join
    /// co-partitioned with Kafka Streams applications.
    pub fn producer(&self) -> Result<ClientConfig, KafkaError> {
        let mut client = self.build()?;
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("request.timeout.ms", self.request_timeout_ms.to_string());
        if !self.properties.contains_key("partitioner") {
            client.set("partitioner", "murmur2_random");
        }
        Ok(client)
    }

    /// A transactional producer. The transactional id must be stable across
    /// restarts of the same logical producer: that is how Kafka fences a
    /// zombie and aborts what it left open.
    pub fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<ClientConfig, KafkaError> {
        if transactional_id.is_empty() {
            return Err(KafkaError::InvalidConfig(
                "transactional id is empty".to_owned(),
            ));
        }
        let mut client = self.producer()?;
        client.set("transactional.id", transactional_id);
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        let client = KafkaConfig::default().build();
        assert!(client.is_ok());
    }

    #[test]
    fn rejects_bad_bootstrap() {
        let config = KafkaConfig {
            bootstrap_servers: "localhost".to_owned(),
            ..KafkaConfig::default()
        };
        let err = config.build().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid Kafka configuration: bootstrap server \"localhost\" is not host:port")
        );
    }

    #[test]
    fn rejects_owned_keys_in_properties() {
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("transactional.id".to_owned(), "x".to_owned());
        assert!(matches!(config.build(), Err(KafkaError::InvalidConfig(_))));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let parsed: Result<KafkaConfig, _> =
            serde_json::from_str(r#"{"bootstrap_servers":"a:1","bootsrap":"typo"}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn producer_properties_stay_out_of_consumers() {
        let config = KafkaConfig::default();
        let consumer = config.consumer("g").ok();
        assert_eq!(
            consumer.as_ref().and_then(|c| c.get("request.timeout.ms")),
            None
        );
        let producer = config.producer().ok();
        assert_eq!(
            producer.as_ref().and_then(|c| c.get("request.timeout.ms")),
            Some("30000")
        );
    }

    #[test]
    fn transactional_producer_sets_id() {
        let client = KafkaConfig::default().transactional_producer("tx-1");
        let id = client
            .ok()
            .and_then(|c| c.get("transactional.id").map(str::to_owned));
        assert_eq!(id.as_deref(), Some("tx-1"));
    }
}
