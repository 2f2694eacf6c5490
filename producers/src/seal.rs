//! Dead letters without personal data in clear.
//!
//! A dead letter must let a person fix the problem and must lose nothing,
//! yet the item it keeps may be a person with a name, an e-mail address
//! and a civic number. So a dead letter carries two things:
//!
//! - a **redacted** copy of the item: its shape, ids, dates, codes,
//!   counts and flags, with every other value replaced by `"<redacted>"`
//!   — enough to see which field failed and to find the item at the
//!   vendor;
//! - the **raw bytes encrypted** with [age](https://age-encryption.org) to
//!   the operator's X25519 recipients, configured per deployment, so that
//!   the item can be recovered and replayed by whoever holds the key, and
//!   by nobody else. Without a recipient the raw bytes are not kept.
//!
//! What is kept in clear is a closed list of field names ([`CLEAR`]), each
//! with a rule for its values (identifiers that do not look like civic
//! numbers or e-mail addresses, dates, short codes, values of the
//! standard's code lists, counts and flags); any other field is redacted,
//! so a vendor's extra fields, or free text where a code belongs, are
//! never leaked.

use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

/// How a field's values are kept in clear, by field name. A field not
/// named here is redacted, whatever it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clear {
    /// An identifier: kept unless it looks like a civic number, an e-mail
    /// address or free text (some systems use the civic number as id).
    Id,
    /// A date or date-time: kept when it is made of the characters dates
    /// are made of.
    Time,
    /// A code (`MA`, `MATMAT01a`, `0180`): kept when short and without
    /// spaces.
    Code,
    /// A value of one of the standard's code lists: kept only when it is
    /// one of the listed values.
    Vocabulary(&'static [&'static str]),
    /// An entity type or endpoint name, as deletion feeds write them.
    EntityType,
    /// A count or a flag: numbers and booleans kept, text redacted.
    Scalar,
}

const SCHOOL_TYPES: &[&str] = &[
    "FS", "FKLASS", "FTH", "OPPFTH", "GR", "GRS", "TR", "SP", "SAM", "GY", "GYS", "VUX", "VUXSFI",
    "VUXGR", "VUXGY", "VUXSARGR", "VUXSARTR", "VUXSARGY", "SFI", "SARVUX", "SARVUXGR", "SARVUXGY",
    "KU", "YH", "FHS", "STF", "KKU", "HS", "ABU", "AU",
];

/// The fields kept in clear, and how; see [`Clear`].
pub const CLEAR: &[(&str, Clear)] = &[
    ("id", Clear::Id),
    ("created", Clear::Time),
    ("modified", Clear::Time),
    ("startDate", Clear::Time),
    ("endDate", Clear::Time),
    ("startTime", Clear::Time),
    ("endTime", Clear::Time),
    ("reportedTimestamp", Clear::Time),
    ("deletedAt", Clear::Time),
    ("organisationCode", Clear::Code),
    ("schoolUnitCode", Clear::Code),
    ("municipalityCode", Clear::Code),
    ("subjectCode", Clear::Code),
    ("courseCode", Clear::Code),
    ("educationCode", Clear::Code),
    ("languageCode", Clear::Code),
    ("entityType", Clear::EntityType),
    (
        "organisationType",
        Clear::Vocabulary(&[
            "Huvudman",
            "Stadsdel",
            "Rektorsområde",
            "Skola",
            "Skolenhet",
            "Varumärke",
            "Bolag",
            "Övrigt",
        ]),
    ),
    ("schoolTypes", Clear::Vocabulary(SCHOOL_TYPES)),
    ("schoolType", Clear::Vocabulary(SCHOOL_TYPES)),
    (
        "groupType",
        Clear::Vocabulary(&[
            "Undervisning",
            "Klass",
            "Mentor",
            "Provgrupp",
            "Schema",
            "Avdelning",
            "Personalgrupp",
            "Övrigt",
        ]),
    ),
    (
        "dutyRole",
        Clear::Vocabulary(&[
            "Rektor",
            "Lärare",
            "Förskollärare",
            "Barnskötare",
            "Bibliotekarie",
            "Lärarassistent",
            "Fritidspedagog",
            "Annan personal",
            "Studie- och yrkesvägledare",
            "Förstelärare",
            "Kurator",
            "Skolsköterska",
            "Skolläkare",
            "Skolpsykolog",
            "Speciallärare/specialpedagog",
            "Skoladministratör",
            "Övrig arbetsledning",
            "Övrig pedagogisk personal",
            "Förskolechef",
        ]),
    ),
    (
        "assignmentRoleType",
        Clear::Vocabulary(&[
            "Mentor",
            "Förskollärare ansvarig för undervisningen",
            "Betygsättande lärare",
            "Lärare",
            "Elevassistent",
            "Barnskötare",
            "Fritidspedagog",
            "Annan personal",
            "Övrigt",
        ]),
    ),
    (
        "activityType",
        Clear::Vocabulary(&[
            "Undervisning",
            "Elevaktivitet",
            "Provaktivitet",
            "Läraraktivitet",
            "Övrigt",
        ]),
    ),
    ("personStatus", Clear::Vocabulary(&["Aktiv", "Inaktiv"])),
    ("schoolYear", Clear::Scalar),
    ("dutyPercent", Clear::Scalar),
    ("hoursPerYear", Clear::Scalar),
    ("calendarEventsRequired", Clear::Scalar),
    ("minutesPlanned", Clear::Scalar),
    ("cancelled", Clear::Scalar),
    ("participates", Clear::Scalar),
    ("grader", Clear::Scalar),
    ("teachingLength", Clear::Scalar),
    ("teachingLengthTeacher", Clear::Scalar),
    ("teachingLengthStudent", Clear::Scalar),
    ("isReported", Clear::Scalar),
    ("attendanceMinutes", Clear::Scalar),
    ("validAbsenceMinutes", Clear::Scalar),
    ("invalidAbsenceMinutes", Clear::Scalar),
    ("otherAttendanceMinutes", Clear::Scalar),
    ("points", Clear::Scalar),
    ("official", Clear::Scalar),
];

impl Clear {
    /// How the field `name` is kept, if it is.
    pub fn of(name: &str) -> Option<Self> {
        CLEAR.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// Whether the text may be kept under a field of this kind.
    fn keeps_text(self, text: &str) -> bool {
        if looks_personal(text) {
            return false;
        }
        match self {
            Self::Id => text.len() <= 64 && !text.chars().any(char::is_whitespace),
            Self::Time => {
                text.len() <= 35
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b"-:T+Z. ".contains(&b))
            }
            Self::Code => {
                text.len() <= 20
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            }
            Self::Vocabulary(values) => values.contains(&text),
            Self::EntityType => crate::endpoint::Endpoint::from_any_name(text).is_some(),
            Self::Scalar => false,
        }
    }
}

/// What replaces a value that is not kept in clear.
pub const REDACTED: &str = "<redacted>";

/// How dead letters are sealed (`[dead_letters]` in the producer's
/// configuration).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// age X25519 recipients (`age1…`) the raw bytes of dead letters are
    /// encrypted to; the operators hold the identities. Empty: the raw
    /// bytes are not kept, only the redacted copy.
    pub age_recipients: Vec<String>,
}

/// Why a seal configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "dead_letters.age_recipients[{index}] is not an age X25519 recipient (age1…): {cause}"
    )]
    Recipient { index: usize, cause: String },
    #[error("encrypting a dead letter failed: {0}")]
    Encrypt(String),
}

/// Redacts and encrypts what goes to the dead-letter topic.
pub struct Sealer {
    recipients: Vec<age::x25519::Recipient>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("recipients", &self.recipients.len())
            .finish()
    }
}

/// A dead letter's content, sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The item with personal data removed, as JSON; `None` when the bytes
    /// are not a JSON value.
    pub redacted: Option<String>,
    /// The raw bytes encrypted to the recipients; empty without any.
    pub raw: Vec<u8>,
    /// `Some("age")` when `raw` holds an age file.
    pub encryption: Option<&'static str>,
}

impl SealConfig {
    /// Check the recipients.
    pub fn build(&self) -> Result<Sealer, SealError> {
        let recipients = self
            .age_recipients
            .iter()
            .enumerate()
            .map(|(index, text)| {
                age::x25519::Recipient::from_str(text.trim()).map_err(|cause| {
                    SealError::Recipient {
                        index,
                        cause: cause.to_string(),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Sealer { recipients })
    }
}

impl Sealer {
    /// A sealer that keeps no raw bytes.
    pub fn redact_only() -> Self {
        Self {
            recipients: Vec::new(),
        }
    }

    /// Whether raw bytes are kept (encrypted).
    pub fn keeps_raw(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// Redact and encrypt one dead letter's bytes.
    pub fn seal(&self, raw: &[u8]) -> Result<Sealed, SealError> {
        let redacted = redact(raw);
        if self.recipients.is_empty() {
            return Ok(Sealed {
                redacted,
                raw: Vec::new(),
                encryption: None,
            });
        }
        let recipients = self.recipients.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(recipients)
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
        let mut out = Vec::with_capacity(raw.len() + 256);
        let mut writer = encryptor
            .wrap_output(&mut out)
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
        std::io::Write::write_all(&mut writer, raw)
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
        Ok(Sealed {
            redacted,
            raw: out,
            encryption: Some("age"),
        })
    }
}

/// Whether a text looks like a civic number (10 or 12 digits, with or
/// without `-`/`+`) or an e-mail address.
fn looks_personal(text: &str) -> bool {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let civic_like = (digits == 10 || digits == 12)
        && text
            .trim()
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-+ ".contains(&b));
    civic_like || text.contains('@')
}

/// A vendor's text (an error body, a parser's message quoting it) with
/// anything that looks like a civic number or an e-mail address replaced,
/// for logs and error messages.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_personal(word) || word.bytes().filter(u8::is_ascii_digit).count() >= 10 {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || "\"',;:()[]{}<>".contains(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The item with every value that [`CLEAR`] does not keep replaced by
/// [`REDACTED`]; `None` if the bytes are not JSON.
pub fn redact(raw: &[u8]) -> Option<String> {
    let mut value: Value = serde_json::from_slice(raw).ok()?;
    redact_value(&mut value, None);
    serde_json::to_string(&value).ok()
}

/// Redact in place; `clear` says how the field the value sits under is
/// kept, if it is.
fn redact_value(value: &mut Value, clear: Option<Clear>) {
    let kept = match (&*value, clear) {
        (Value::Object(_) | Value::Array(_) | Value::Null, _) => true,
        (Value::Bool(_), Some(_)) => true,
        // A number is kept as a count, or where its text would be.
        (Value::Number(n), Some(Clear::Scalar)) => !looks_personal(&n.to_string()),
        (Value::Number(n), Some(c)) => c.keeps_text(&n.to_string()),
        (Value::String(text), Some(c)) => c.keeps_text(text),
        _ => false,
    };
    if !kept {
        *value = Value::String(REDACTED.to_owned());
        return;
    }
    match value {
        Value::Object(map) => {
            // A map keyed by civic numbers or e-mail addresses keeps its
            // shape, not its keys.
            if map.keys().any(|k| looks_personal(k)) {
                let entries = std::mem::take(map);
                for (i, (key, v)) in entries.into_iter().enumerate() {
                    let key = if looks_personal(&key) {
                        format!("{REDACTED}{i}")
                    } else {
                        key
                    };
                    map.insert(key, v);
                }
            }
            for (key, v) in map.iter_mut() {
                redact_value(v, Clear::of(key));
            }
        }
        Value::Array(items) => {
            for v in items {
                redact_value(v, clear);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERSON: &str = r#"{"id":"p1","givenName":"Astrid","familyName":"Lindgren",
        "civicNo":{"value":"190711148005","nationality":"SE"},
        "emails":[{"value":"astrid@example.se","type":"Privat"}],
        "meta":{"created":"2025-08-01T08:00:00+02:00"},
        "enrolments":[{"enroledAt":{"id":"u1"},"schoolYear":7,"schoolType":"GR"}]}"#;

    #[test]
    fn names_contacts_and_civic_numbers_are_redacted_and_the_shape_kept() {
        let redacted = redact(PERSON.as_bytes()).unwrap_or_default();
        for secret in [
            "Astrid",
            "Lindgren",
            "190711148005",
            "astrid@example.se",
            "Privat",
        ] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        let v: Value = serde_json::from_str(&redacted).unwrap_or_default();
        assert_eq!(v["id"], "p1");
        assert_eq!(v["civicNo"]["value"], REDACTED);
        assert_eq!(v["meta"]["created"], "2025-08-01T08:00:00+02:00");
        assert_eq!(v["enrolments"][0]["enroledAt"]["id"], "u1");
        assert_eq!(v["enrolments"][0]["schoolYear"], 7);
        assert_eq!(redact(b"{\"id\":"), None);
    }

    #[test]
    fn clear_fields_keep_only_values_of_their_kind() {
        let item = br#"{"id":"19811218-9876","dutyRole":"Anna Andersson","groupType":"Klass",
            "subjectCode":"Matematik med Anna","attendanceMinutes":"Anna","startDate":"Anna",
            "duty":{"id":"anna@example.se"},"activity":{"id":"a-1"},"minutesPlanned":40}"#;
        let v: Value = serde_json::from_str(&redact(item).unwrap_or_default()).unwrap_or_default();
        for field in [
            "id",
            "dutyRole",
            "subjectCode",
            "attendanceMinutes",
            "startDate",
        ] {
            assert_eq!(v[field], REDACTED, "{field}");
        }
        assert_eq!(v["duty"]["id"], REDACTED);
        assert_eq!(v["groupType"], "Klass");
        assert_eq!(v["activity"]["id"], "a-1");
        assert_eq!(v["minutesPlanned"], 40);
    }

    #[test]
    fn numbers_and_keys_that_look_personal_are_redacted_too() {
        let item = br#"{"id":198112189876,"organisationCode":8112189876,"attendanceMinutes":45,
            "points":198112189876,"byPerson":{"19811218-9876":{"id":"x"},"a@b.se":1}}"#;
        let text = redact(item).unwrap_or_default();
        assert!(
            !text.contains("8112189876") && !text.contains("a@b.se"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["id"], REDACTED);
        assert_eq!(v["attendanceMinutes"], 45);
        assert_eq!(v["byPerson"].as_object().map(|o| o.len()), Some(2));
    }

    #[test]
    fn vendor_text_is_scrubbed_of_civic_numbers_and_e_mail_addresses() {
        let body = r#"{"error":"person 19811218-9876 (anna@example.se) unknown","code":400}"#;
        let scrubbed = scrub(body);
        assert!(
            !scrubbed.contains("9876") && !scrubbed.contains("anna@"),
            "{scrubbed}"
        );
        assert!(
            scrubbed.contains("unknown") && scrubbed.contains("400"),
            "{scrubbed}"
        );
        assert_eq!(
            scrub("invalid type: string \"8112189876\", expected i32"),
            "invalid type: string \"<redacted>\", expected i32"
        );
    }

    #[test]
    fn sealed_raw_bytes_open_with_the_operator_s_identity_only() {
        let identity = age::x25519::Identity::generate();
        let config = SealConfig {
            age_recipients: vec![identity.to_public().to_string()],
        };
        let sealer = config.build().unwrap_or_else(|_| unreachable!());
        let sealed = sealer
            .seal(PERSON.as_bytes())
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(sealed.encryption, Some("age"));
        assert!(!String::from_utf8_lossy(&sealed.raw).contains("Lindgren"));
        let opened = age::decrypt(&identity, &sealed.raw).unwrap_or_default();
        assert_eq!(opened, PERSON.as_bytes());
        let other = age::x25519::Identity::generate();
        assert!(age::decrypt(&other, &sealed.raw).is_err());
    }

    #[test]
    fn bad_recipients_are_refused_with_their_place() {
        let config = SealConfig {
            age_recipients: vec!["age1notakey".into()],
        };
        assert!(matches!(
            config.build(),
            Err(SealError::Recipient { index: 0, .. })
        ));
        let none = Sealer::redact_only().seal(PERSON.as_bytes());
        assert!(none.is_ok_and(|s| s.raw.is_empty() && s.encryption.is_none()));
    }
}
