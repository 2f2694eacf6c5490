//! Avro binary encoding for skolflode's types, written straight from and to
//! Rust structs.
//!
//! apache-avro's generic path builds a `Value` tree per record, which costs
//! more than the pipeline's volumes allow (a year's replay is over a billion
//! attendance events). Here each type writes and reads its Avro binary form
//! directly; the `tests/in_step.rs` test proves, for random instances of
//! every type, that these bytes are exactly what apache-avro writes and reads
//! for the checked-in `.avsc` files.

use crate::DecodeError;

/// A type with an Avro binary encoding.
pub trait AvroType: Sized {
    /// Append the Avro binary encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Read one value; never panics, whatever the input.
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Read one value into `self`, reusing its allocations (string and
    /// vector capacity). A consumer's hot loop decodes every record into the
    /// same value and so allocates nothing once capacities have grown. On
    /// error `self` holds a partly overwritten value.
    fn decode_into(&mut self, input: &mut Reader<'_>) -> Result<(), DecodeError> {
        *self = Self::decode(input)?;
        Ok(())
    }

    /// Decode a whole buffer, rejecting trailing bytes.
    fn decode_all(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = Self::decode(&mut reader)?;
        match reader.remaining() {
            0 => Ok(value),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Encode into a fresh buffer.
    fn to_avro_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode(&mut out);
        out
    }
}

/// A record type: its Avro field names, in schema order.
pub trait AvroRecord: AvroType {
    /// The record's full Avro name, e.g. `se.skolflode.ss12000.Activity`.
    const AVRO_NAME: &'static str;
    /// Field names in the order of the schema.
    const FIELDS: &'static [&'static str];
}

/// A bounds-checked cursor over Avro bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Current position, for error messages.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(DecodeError::UnexpectedEof(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    /// A zig-zag varint `long`.
    pub fn long(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::BadVarint(start));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError::BadVarint(start));
            }
        }
        Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
    }

    /// A zig-zag varint `int`.
    pub fn int(&mut self) -> Result<i32, DecodeError> {
        let at = self.pos;
        let value = self.long()?;
        i32::try_from(value).map_err(|_| DecodeError::IntOutOfRange { at, value })
    }

    /// A length that must fit in what is left of the input (`min_item`
    /// bytes per item), so that no allocation exceeds the input's size.
    pub fn length(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = self.long()?;
        let fits = usize::try_from(len)
            .ok()
            .filter(|n| n.saturating_mul(min_item) <= self.remaining());
        fits.ok_or(DecodeError::BadLength { at, len })
    }

    /// `len` raw bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(DecodeError::UnexpectedEof(self.pos))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The bytes of an Avro `bytes` or `string` value, as they are (a
    /// string's not checked for UTF-8).
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.length(1)?;
        self.take(len)
    }

    /// An Avro `string`, checked for UTF-8.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::InvalidUtf8(at))
    }

    /// A union branch index, checked against the number of branches.
    pub fn union_index(&mut self, branches: i64) -> Result<i64, DecodeError> {
        let at = self.pos;
        let index = self.long()?;
        if (0..branches).contains(&index) {
            Ok(index)
        } else {
            Err(DecodeError::BadUnionIndex { at, index })
        }
    }
}

/// Write an Avro string (length, then UTF-8 bytes).
#[inline]
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    write_long(out, value.len() as i64);
    out.extend_from_slice(value.as_bytes());
}

/// Append a zig-zag varint `long`.
#[inline]
pub fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

impl AvroType for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = input.position();
        match input.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadBool { at, value }),
        }
    }
}

impl AvroType for i32 {
    fn encode(&self, out: &mut Vec<u8>) {
        write_long(out, i64::from(*self));
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.int()
    }
}

impl AvroType for i64 {
    fn encode(&self, out: &mut Vec<u8>) {
        write_long(out, *self);
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.long()
    }
}

impl AvroType for String {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.str().map(str::to_owned)
    }
    fn decode_into(&mut self, input: &mut Reader<'_>) -> Result<(), DecodeError> {
        let s = input.str()?;
        self.clear();
        self.push_str(s);
        Ok(())
    }
}

/// `["null", T]`: the only union shape skolflode's schemas use.
impl<T: AvroType> AvroType for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(2);
                value.encode(out);
            }
        }
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match input.union_index(2)? {
            0 => Ok(None),
            _ => Ok(Some(T::decode(input)?)),
        }
    }
    fn decode_into(&mut self, input: &mut Reader<'_>) -> Result<(), DecodeError> {
        match (input.union_index(2)?, self.as_mut()) {
            (0, _) => *self = None,
            (_, Some(value)) => value.decode_into(input)?,
            (_, None) => *self = Some(T::decode(input)?),
        }
        Ok(())
    }
}

/// Avro arrays: written as one block; read in any block layout, including
/// negative block counts with byte sizes.
impl<T: AvroType> AvroType for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        if !self.is_empty() {
            write_long(out, self.len() as i64);
            for item in self {
                item.encode(out);
            }
        }
        out.push(0);
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut items = Vec::new();
        items.decode_into(input)?;
        Ok(items)
    }
    fn decode_into(&mut self, input: &mut Reader<'_>) -> Result<(), DecodeError> {
        // Items already here are decoded into; the rest are pushed; extra
        // ones are cut off at the end.
        let mut used = 0;
        loop {
            let at = input.position();
            let count = input.long()?;
            if count == 0 {
                self.truncate(used);
                return Ok(());
            }
            if count < 0 {
                // The block's size in bytes follows; we read item by item.
                input.long()?;
            }
            // Every item of every type here takes at least one byte, so a
            // count beyond the remaining input is malformed; checking it first
            // keeps a hostile count from reserving memory.
            let count = count.unsigned_abs();
            if count > input.remaining() as u64 {
                return Err(DecodeError::BadLength {
                    at,
                    len: count as i64,
                });
            }
            for _ in 0..count {
                match self.get_mut(used) {
                    Some(item) => item.decode_into(input)?,
                    None => self.push(T::decode(input)?),
                }
                used += 1;
            }
        }
    }
}

/// Avro `bytes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bytes(pub Vec<u8>);

impl AvroType for Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        write_long(out, self.0.len() as i64);
        out.extend_from_slice(&self.0);
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.bytes().map(|b| Bytes(b.to_vec()))
    }
    fn decode_into(&mut self, input: &mut Reader<'_>) -> Result<(), DecodeError> {
        let bytes = input.bytes()?;
        self.0.clear();
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Avro `{"type": "int", "logicalType": "date"}`: days since 1970-01-01.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

impl AvroType for Date {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.int().map(Date)
    }
}

impl Date {
    /// The date for a proleptic Gregorian year, month and day; `None` when
    /// there is no such day.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Days from civil, after Howard Hinnant's algorithm.
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        i32::try_from(era * 146_097 + doe - 719_468).ok().map(Date)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Avro `{"type": "long", "logicalType": "timestamp-millis"}`: a UTC
/// instant in milliseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMillis(pub i64);

impl AvroType for TimestampMillis {
    fn encode(&self, out: &mut Vec<u8>) {
        write_long(out, self.0);
    }
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.long().map(TimestampMillis)
    }
}

/// Random instances, for the tests that hold the codec to apache-avro and
/// for benchmarks.
#[cfg(feature = "sample")]
pub mod sample {
    use rand::Rng;

    /// A type that can make a random instance of itself.
    pub trait Sample {
        fn sample<R: Rng>(rng: &mut R) -> Self;
    }

    impl Sample for bool {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            rng.random()
        }
    }
    impl Sample for i32 {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            match rng.random_range(0..4) {
                0 => rng.random(),
                1 => rng.random_range(-100..100),
                2 => i32::MIN,
                _ => rng.random_range(0..2000),
            }
        }
    }
    impl Sample for i64 {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            match rng.random_range(0..3) {
                0 => rng.random(),
                1 => i64::MAX,
                _ => rng.random_range(0..2_000_000_000_000),
            }
        }
    }
    impl Sample for String {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            const ALPHABET: &[&str] = &["a", "Z", "0", "-", "å", "Ö", "é", "☃", " ", "𝄞"];
            let len = rng.random_range(0..12);
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect()
        }
    }
    impl<T: Sample> Sample for Option<T> {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            rng.random_bool(0.6).then(|| T::sample(rng))
        }
    }
    impl<T: Sample> Sample for Vec<T> {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            let len = rng.random_range(0..4);
            (0..len).map(|_| T::sample(rng)).collect()
        }
    }
    impl Sample for super::Bytes {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            let len = rng.random_range(0..16);
            super::Bytes((0..len).map(|_| rng.random()).collect())
        }
    }
    impl Sample for super::Date {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            super::Date(i32::sample(rng))
        }
    }
    impl Sample for super::TimestampMillis {
        fn sample<R: Rng>(rng: &mut R) -> Self {
            super::TimestampMillis(i64::sample(rng))
        }
    }
}

/// Define a record struct and its Avro encoding in one place. Fields are
/// encoded in the order written, which must be the schema's order (the
/// `in_step` test checks it against the `.avsc` files).
#[macro_export]
macro_rules! avro_record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident = $avro_name:literal {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty = $avro:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $crate::codec::AvroType for $name {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                $( $crate::codec::AvroType::encode(&self.$field, out); )*
            }
            #[inline]
            fn decode(input: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                // Struct expressions evaluate their fields in source order.
                Ok(Self { $( $field: $crate::codec::AvroType::decode(input)?, )* })
            }
            #[inline]
            fn decode_into(&mut self, input: &mut $crate::codec::Reader<'_>) -> Result<(), $crate::DecodeError> {
                $( $crate::codec::AvroType::decode_into(&mut self.$field, input)?; )*
                Ok(())
            }
        }

        impl $crate::codec::AvroRecord for $name {
            const AVRO_NAME: &'static str = $avro_name;
            const FIELDS: &'static [&'static str] = &[$($avro),*];
        }

        #[cfg(feature = "sample")]
        impl $crate::codec::sample::Sample for $name {
            fn sample<R: rand::Rng>(rng: &mut R) -> Self {
                Self { $( $field: $crate::codec::sample::Sample::sample(rng), )* }
            }
        }
    };
}

/// Define an Avro enum with a default symbol (the first), so that a reader
/// maps symbols it does not know to it.
#[macro_export]
macro_rules! avro_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $default:ident = $default_sym:literal $(, $variant:ident = $sym:literal)* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            #[default]
            $default,
            $($variant,)*
        }

        impl $name {
            /// Symbols in schema order.
            pub const SYMBOLS: &'static [&'static str] = &[$default_sym, $($sym),*];
            const ALL: &'static [$name] = &[$name::$default, $($name::$variant),*];

            /// The Avro symbol.
            pub fn symbol(self) -> &'static str {
                Self::SYMBOLS[self as usize]
            }
        }

        impl $crate::codec::AvroType for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                $crate::codec::write_long(out, *self as i64);
            }
            fn decode(input: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                let at = input.position();
                let index = input.long()?;
                usize::try_from(index)
                    .ok()
                    .and_then(|i| Self::ALL.get(i).copied())
                    .ok_or($crate::DecodeError::BadEnumIndex { at, index })
            }
        }

        #[cfg(feature = "sample")]
        impl $crate::codec::sample::Sample for $name {
            fn sample<R: rand::Rng>(rng: &mut R) -> Self {
                Self::ALL[rng.random_range(0..Self::ALL.len())]
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(Reader::new(&out).long(), Ok(v));
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let bytes = [0xffu8; 11];
        assert_eq!(Reader::new(&bytes).long(), Err(DecodeError::BadVarint(0)));
    }

    #[test]
    fn hostile_lengths_are_rejected_before_allocating() {
        let mut bytes = Vec::new();
        write_long(&mut bytes, i64::MAX / 2);
        assert!(matches!(
            String::decode_all(&bytes),
            Err(DecodeError::BadLength { .. })
        ));
        assert!(matches!(
            Vec::<String>::decode_all(&bytes),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn dates_from_civil() {
        assert_eq!(Date::from_ymd(1970, 1, 1), Some(Date(0)));
        assert_eq!(Date::from_ymd(2025, 2, 14), Some(Date(20133)));
        assert_eq!(Date::from_ymd(2024, 2, 29), Some(Date(19782)));
        assert_eq!(Date::from_ymd(2025, 2, 29), None);
        assert_eq!(Date::from_ymd(1969, 12, 31), Some(Date(-1)));
    }
}
