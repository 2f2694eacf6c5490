/// Why bytes could not be decoded. Decoding reports these and never panics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected end of input at byte {0}")]
    UnexpectedEof(usize),
    #[error("malformed variable-length integer at byte {0}")]
    BadVarint(usize),
    #[error("integer {value} at byte {at} does not fit an Avro int")]
    IntOutOfRange { at: usize, value: i64 },
    #[error("length {len} at byte {at} is negative or longer than the remaining input")]
    BadLength { at: usize, len: i64 },
    #[error("string at byte {0} is not valid UTF-8")]
    InvalidUtf8(usize),
    #[error("boolean byte {value} at byte {at} is neither 0 nor 1")]
    BadBool { at: usize, value: u8 },
    #[error("union branch {index} at byte {at} does not exist")]
    BadUnionIndex { at: usize, index: i64 },
    #[error("enum symbol {index} at byte {at} does not exist")]
    BadEnumIndex { at: usize, index: i64 },
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
    #[error("not in the Confluent wire format: {0}")]
    BadFraming(String),
    #[error("schema id {0} is not known to this decoder")]
    UnknownSchemaId(u32),
    #[error("schema resolution failed: {0}")]
    Resolution(String),
}

/// Problems with the schemas themselves or with the registry.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {subject} v{version} does not parse: {cause}")]
    Parse {
        subject: String,
        version: u32,
        cause: String,
    },
    #[error("{subject}: v{reader} cannot read data written with v{writer}: {cause}")]
    Incompatible {
        subject: String,
        writer: u32,
        reader: u32,
        cause: String,
    },
    #[error("writer schema is not compatible with the reader schema: {0}")]
    Unresolvable(String),
    #[error("schema registry at {url}: {cause}")]
    Registry { url: String, cause: String },
    #[error("schema registry at {url} answered {status}: {body}")]
    RegistryStatus {
        url: String,
        status: u16,
        body: String,
    },
}
