//! Items of the two bulk endpoints, lessons and attendance records, written
//! straight into a page body.
//!
//! A municipality's first read is about 600 000 such items. Building each
//! as a `serde_json::Value` (a B-tree and a `String` per field) and then
//! serialising it was most of the simulator's CPU in the producer
//! benchmark, CPU the producer and the broker share on a small machine.
//! The output is byte for byte what `serde_json` writes for the
//! corresponding `Value` — keys in sorted order, the same escapes — which
//! a test checks for every item of a simulated term.

/// A JSON object being written: keys must be given in sorted order, as a
/// `serde_json::Map` (a B-tree) would write them.
#[derive(Debug)]
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Write `key` and the colon; the value follows.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) {
        string(self.key(key), value);
    }

    pub fn int(&mut self, key: &str, value: impl itoa::Integer) {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(value);
        self.key(key).extend_from_slice(text.as_bytes());
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.key(key).extend_from_slice(text);
    }

    /// `{"id": id}`, the standard's reference to another entity.
    pub fn reference(&mut self, key: &str, id: &str) {
        let mut r = Obj::start(self.key(key));
        r.str("id", id);
        r.end();
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// A JSON string. Ids and timestamps need no escaping; anything else goes
/// through `serde_json` so that escapes stay identical.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; keep the output valid regardless.
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}",
            "åäö",
            "\u{7f}",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap_or_default(), "{s:?}");
        }
    }

    #[test]
    fn objects_match_serde_json() {
        let mut out = Vec::new();
        let mut o = Obj::start(&mut out);
        o.bool("a", true);
        o.int("b", -12_i64);
        o.reference("c", "x");
        o.str("d", "y");
        o.end();
        let expected = serde_json::json!({"d": "y", "c": {"id": "x"}, "b": -12, "a": true});
        assert_eq!(out, serde_json::to_vec(&expected).unwrap_or_default());
    }
}
