//! The keys of the producer's state topic (`StringKey` values):
//!
//! - `<connection>/<endpoint>/<entity id>`: an entity's last version;
//! - `<connection>/<endpoint>/#cursor`: where reading the endpoint stands
//!   (the deletion feed's endpoint is `#deletedEntities`);
//! - `<connection>/<endpoint>/#finding/<KIND>/<field>`: a dialect finding
//!   that was published, so that it is published once;
//! - `<connection>/<endpoint>/#delivery/<sha256>`: a delivered file that
//!   was ingested, so that it is ingested once.
//!
//! The connection is the prefix of every key, so that a producer finds its
//! own records, and it never contains `/`. Entity ids are the rest of the
//! key, `/` included; an id that begins with `#` is refused by the
//! producer, since it would read as one of the other kinds.

use crate::codec::write_long;
use crate::wire;

/// A parsed state key, borrowing from the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKey<'a> {
    Entity {
        connection: &'a str,
        endpoint: &'a str,
        id: &'a str,
    },
    Cursor {
        connection: &'a str,
        endpoint: &'a str,
    },
    Finding {
        connection: &'a str,
        endpoint: &'a str,
        kind: &'a str,
        field: &'a str,
    },
    Delivery {
        connection: &'a str,
        endpoint: &'a str,
        /// Lowercase hex SHA-256 of the file's bytes.
        checksum: &'a str,
    },
}

const CURSOR: &str = "#cursor";
const FINDING: &str = "#finding/";
const DELIVERY: &str = "#delivery/";

impl<'a> StateKey<'a> {
    /// Read a key; `None` for text of none of the forms.
    pub fn parse(text: &'a str) -> Option<Self> {
        let (connection, rest) = text.split_once('/')?;
        let (endpoint, rest) = rest.split_once('/')?;
        if connection.is_empty() || endpoint.is_empty() || rest.is_empty() {
            return None;
        }
        if rest == CURSOR {
            return Some(Self::Cursor {
                connection,
                endpoint,
            });
        }
        if let Some(finding) = rest.strip_prefix(FINDING) {
            let (kind, field) = finding.split_once('/')?;
            return Some(Self::Finding {
                connection,
                endpoint,
                kind,
                field,
            });
        }
        if let Some(checksum) = rest.strip_prefix(DELIVERY) {
            if checksum.is_empty() || checksum.contains('/') {
                return None;
            }
            return Some(Self::Delivery {
                connection,
                endpoint,
                checksum,
            });
        }
        if rest.starts_with('#') {
            return None;
        }
        Some(Self::Entity {
            connection,
            endpoint,
            id: rest,
        })
    }

    /// The connection the key belongs to.
    pub fn connection(&self) -> &'a str {
        match *self {
            Self::Entity { connection, .. }
            | Self::Cursor { connection, .. }
            | Self::Finding { connection, .. }
            | Self::Delivery { connection, .. } => connection,
        }
    }

    /// The key's text.
    pub fn text(&self) -> String {
        match *self {
            Self::Entity {
                connection,
                endpoint,
                id,
            } => format!("{connection}/{endpoint}/{id}"),
            Self::Cursor {
                connection,
                endpoint,
            } => format!("{connection}/{endpoint}/{CURSOR}"),
            Self::Finding {
                connection,
                endpoint,
                kind,
                field,
            } => format!("{connection}/{endpoint}/{FINDING}{kind}/{field}"),
            Self::Delivery {
                connection,
                endpoint,
                checksum,
            } => format!("{connection}/{endpoint}/{DELIVERY}{checksum}"),
        }
    }

    /// The key framed in the Confluent wire format with `schema_id` (the
    /// `StringKey` schema's).
    pub fn encode(&self, schema_id: u32) -> Vec<u8> {
        match *self {
            Self::Entity {
                connection,
                endpoint,
                id,
            } => encode_entity(schema_id, connection, endpoint, id),
            _ => wire::encode(schema_id, &self.text()),
        }
    }
}

/// An entity's key, framed, without building the text first (one per
/// change event).
pub fn encode_entity(schema_id: u32, connection: &str, endpoint: &str, id: &str) -> Vec<u8> {
    let len = connection.len() + endpoint.len() + id.len() + 2;
    let mut out = Vec::with_capacity(len + 16);
    wire::header_into(schema_id, &mut out);
    write_long(&mut out, len as i64);
    for part in [
        connection.as_bytes(),
        b"/",
        endpoint.as_bytes(),
        b"/",
        id.as_bytes(),
    ] {
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AvroType;

    #[test]
    fn every_kind_of_key_reads_back_as_written() {
        let keys = [
            StateKey::Entity {
                connection: "kommun-a",
                endpoint: "persons",
                id: "p/1",
            },
            StateKey::Cursor {
                connection: "kommun-a",
                endpoint: "#deletedEntities",
            },
            StateKey::Finding {
                connection: "kommun-a",
                endpoint: "activities",
                kind: "MISSING_FIELD",
                field: "teachers[].duty",
            },
            StateKey::Delivery {
                connection: "kommun-a",
                endpoint: "persons",
                checksum: "9f86d081884c7d65",
            },
        ];
        for key in keys {
            let text = key.text();
            assert_eq!(StateKey::parse(&text), Some(key), "{text}");
            let framed = key.encode(7);
            let (id, body) = wire::split(&framed).unwrap_or_default();
            assert_eq!(id, 7);
            assert_eq!(String::decode_all(body).ok(), Some(text));
        }
        assert_eq!(StateKey::parse("kommun-a/persons"), None);
        assert_eq!(StateKey::parse("kommun-a/persons/#other"), None);
        assert_eq!(StateKey::parse("/persons/p1"), None);
    }
}
