//! The Confluent wire format: magic byte 0, the writer schema's registry id
//! as a 4-byte big-endian integer, then the Avro binary body. Any
//! Confluent-compatible deserializer reads what [`encode`] writes.

use std::collections::HashMap;
use std::marker::PhantomData;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

use crate::codec::{AvroType, Reader};
use crate::{DecodeError, SchemaError};

const MAGIC: u8 = 0;
const HEADER: usize = 5;

/// Append the framing header (magic byte and schema id) to `out`, for
/// bodies encoded by other means than [`AvroType`].
pub fn header_into(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Append a framed record to `out` (which is not cleared).
pub fn encode_into<T: AvroType>(schema_id: u32, value: &T, out: &mut Vec<u8>) {
    header_into(schema_id, out);
    value.encode(out);
}

/// A framed record in a fresh buffer.
pub fn encode<T: AvroType>(schema_id: u32, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(schema_id, value, &mut out);
    out
}

/// Split a framed record into its schema id and Avro body.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [] => Err(DecodeError::BadFraming("empty record".to_owned())),
        [other, ..] if *other != MAGIC => Err(DecodeError::BadFraming(format!(
            "magic byte is {other}, not 0"
        ))),
        _ => Err(DecodeError::BadFraming(format!(
            "{} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        ))),
    }
}

/// How to read bodies written with one writer schema.
#[derive(Debug)]
enum Plan {
    /// The writer schema is the reader schema: decode directly.
    Native,
    /// An older or newer compatible schema: let apache-avro resolve the
    /// datum to the reader schema, re-encode it in the reader schema and
    /// decode that. Slow, but only for data written with another version.
    Resolve(Box<Schema>),
}

/// Decodes framed records into `T`, whatever registered schema version
/// wrote them. The plan for each writer schema is worked out once, when the
/// schema is added, never per record.
#[derive(Debug)]
pub struct Decoder<T> {
    reader: Schema,
    reader_form: String,
    plans: HashMap<u32, Plan>,
    _type: PhantomData<fn() -> T>,
}

impl<T: AvroType> Decoder<T> {
    /// A decoder whose reader schema is `reader` (the schema `T` encodes).
    pub fn new(reader: Schema) -> Self {
        let reader_form = reader.canonical_form();
        Self {
            reader,
            reader_form,
            plans: HashMap::new(),
            _type: PhantomData,
        }
    }

    /// Whether records written with this schema id can be decoded yet.
    pub fn knows(&self, schema_id: u32) -> bool {
        self.plans.contains_key(&schema_id)
    }

    /// Register the writer schema behind a registry id. Fails when data
    /// written with it cannot be read as `T`.
    pub fn add_writer(&mut self, schema_id: u32, writer: &Schema) -> Result<(), SchemaError> {
        let plan = if writer.canonical_form() == self.reader_form {
            Plan::Native
        } else {
            SchemaCompatibility::can_read(writer, &self.reader)
                .map_err(|e| SchemaError::Unresolvable(e.to_string()))?;
            Plan::Resolve(Box::new(writer.clone()))
        };
        self.plans.insert(schema_id, plan);
        Ok(())
    }

    /// Decode one framed record into `value`, reusing its allocations
    /// when the record was written with the reader's own schema.
    pub fn decode_into(&self, bytes: &[u8], value: &mut T) -> Result<(), DecodeError> {
        let (schema_id, body) = split(bytes)?;
        match self.plans.get(&schema_id) {
            Some(Plan::Native) => {
                let mut reader = Reader::new(body);
                value.decode_into(&mut reader)?;
                match reader.remaining() {
                    0 => Ok(()),
                    n => Err(DecodeError::TrailingBytes(n)),
                }
            }
            Some(Plan::Resolve(_)) => {
                *value = self.decode(bytes)?;
                Ok(())
            }
            None => Err(DecodeError::UnknownSchemaId(schema_id)),
        }
    }

    /// Decode one framed record.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        let (schema_id, body) = split(bytes)?;
        match self.plans.get(&schema_id) {
            Some(Plan::Native) => T::decode_all(body),
            Some(Plan::Resolve(writer)) => {
                let mut cursor = body;
                let value = apache_avro::from_avro_datum(writer, &mut cursor, Some(&self.reader))
                    .map_err(|e| DecodeError::Resolution(e.to_string()))?;
                if !cursor.is_empty() {
                    return Err(DecodeError::TrailingBytes(cursor.len()));
                }
                let native = apache_avro::to_avro_datum(&self.reader, value)
                    .map_err(|e| DecodeError::Resolution(e.to_string()))?;
                T::decode_all(&native)
            }
            None => Err(DecodeError::UnknownSchemaId(schema_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trip() {
        let bytes = encode(258, &"hej".to_owned());
        assert_eq!(&bytes[..5], &[0, 0, 0, 1, 2]);
        let (id, body) = split(&bytes).unwrap_or_default();
        assert_eq!(id, 258);
        assert_eq!(String::decode_all(body), Ok("hej".to_owned()));
    }

    #[test]
    fn bad_framing_is_an_error() {
        assert!(split(&[]).is_err());
        assert!(split(&[1, 0, 0, 0, 1]).is_err());
        assert!(split(&[0, 0, 0]).is_err());
    }
}
