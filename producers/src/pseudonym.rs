//! Person keys, as the design contract defines them: the lowercase hex of
//! `HMAC-SHA256(secret, civic12)`; for a person without a valid number,
//! of `"<source>:<person id>"`, and the person is flagged.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::civic::{self, Civic, Invalid};

/// The environment variable holding the secret.
pub const KEY_ENV: &str = "SKOLFLODE_PSEUDONYM_KEY";

/// Why a pseudonymiser could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no pseudonym key: set {KEY_ENV} or give a key file")]
    Missing,
    #[error("the pseudonym key is shorter than 32 bytes")]
    TooShort,
    #[error("cannot read the pseudonym key file {path}: {cause}")]
    File { path: String, cause: String },
}

/// What the producer found in a person's civic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Valid,
    ValidCoordination,
    Invalid(Invalid),
    Missing,
}

/// A person key and how it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonKey {
    /// 64 lowercase hex digits.
    pub key: String,
    pub validity: Validity,
    /// From the civic number, when valid.
    pub birth_year: Option<i32>,
}

/// Holds the secret; never prints it.
pub struct Pseudonymiser {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser { secret: <redacted> }")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser with a secret of at least 32 bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let secret = secret.into();
        if secret.len() < 32 {
            return Err(KeyError::TooShort);
        }
        Ok(Self { secret })
    }

    /// The secret from a key file if given, else from `SKOLFLODE_PSEUDONYM_KEY`.
    /// Surrounding whitespace (a trailing newline) is not part of the key.
    pub fn from_config(key_file: Option<&std::path::Path>) -> Result<Self, KeyError> {
        let text = match key_file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| KeyError::File {
                path: path.display().to_string(),
                cause: e.kind().to_string(),
            })?,
            None => std::env::var(KEY_ENV).map_err(|_| KeyError::Missing)?,
        };
        Self::new(text.trim().as_bytes().to_vec())
    }

    fn hmac_hex(&self, message: &[u8]) -> String {
        // A key of any length is accepted by HMAC; new_from_slice cannot fail.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The key of a valid civic number.
    pub fn civic_key(&self, civic: &Civic) -> String {
        self.hmac_hex(civic.twelve_digits().as_bytes())
    }

    /// A keyed hash of a free-text name (a group's or an activity's display
    /// name, which often carries a teacher's name): 32 hex digits of
    /// `HMAC-SHA256(secret, "name:" + text)`, the text trimmed, lowercased
    /// and its whitespace runs made single spaces, so that the same name
    /// written by two vendors (a timetable's group name, an administration
    /// system's) links without being readable.
    pub fn name_key(&self, text: &str) -> String {
        let normal: Vec<String> = text.split_whitespace().map(|w| w.to_lowercase()).collect();
        let mut key = self.hmac_hex(format!("name:{}", normal.join(" ")).as_bytes());
        key.truncate(32);
        key
    }

    /// The key of a person without a valid number.
    pub fn fallback_key(&self, source: &str, person_id: &str) -> String {
        self.hmac_hex(format!("{source}:{person_id}").as_bytes())
    }

    /// The key of a person as a vendor sent them: `civic` as read on
    /// `today`, `source` the connection and `person_id` the vendor's id.
    pub fn person(
        &self,
        civic: Option<&str>,
        today: (i32, u32, u32),
        source: &str,
        person_id: &str,
    ) -> PersonKey {
        let parsed = civic.map(|c| civic::parse(c, today));
        match parsed {
            Some(Ok(c)) => PersonKey {
                key: self.civic_key(&c),
                validity: if c.is_coordination() {
                    Validity::ValidCoordination
                } else {
                    Validity::Valid
                },
                birth_year: Some(c.birth_year()),
            },
            Some(Err(Invalid::Empty)) | None => PersonKey {
                key: self.fallback_key(source, person_id),
                validity: Validity::Missing,
                birth_year: None,
            },
            Some(Err(why)) => PersonKey {
                key: self.fallback_key(source, person_id),
                validity: Validity::Invalid(why),
                birth_year: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const TODAY: (i32, u32, u32) = (2025, 9, 1);

    #[test]
    fn the_contract_s_test_vectors() {
        // Computed independently with Python's hmac and hashlib modules.
        let p = Pseudonymiser::new(SECRET).unwrap_or_else(|_| unreachable!());
        let key = p.person(Some("811218-9876"), TODAY, "kommun-a", "p1");
        assert_eq!(key.validity, Validity::Valid);
        assert_eq!(key.birth_year, Some(1981));
        assert_eq!(
            key.key,
            "f28aa66c4f122da40d8f1240051777fedf0c27c56cf460cfadc08076d62b2cce"
        );
        let fallback = p.person(Some("20130101TF01"), TODAY, "kommun-a", "p1");
        assert_eq!(fallback.validity, Validity::Invalid(Invalid::Temporary));
        assert_eq!(
            fallback.key,
            "a9b376f91277e9dac00e1b4a359e9642da864190f3505b5dbcb7cc7308c76478"
        );
    }

    #[test]
    fn every_form_of_one_number_gets_one_key() {
        let p = Pseudonymiser::new(SECRET).unwrap_or_else(|_| unreachable!());
        let keys: Vec<String> = ["198112189876", "19811218-9876", "811218-9876", "8112189876"]
            .iter()
            .map(|c| p.person(Some(c), TODAY, "s", "id").key)
            .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn invalid_and_missing_numbers_fall_back_and_are_flagged() {
        let p = Pseudonymiser::new(SECRET).unwrap_or_else(|_| unreachable!());
        let bad = p.person(Some("198112189875"), TODAY, "kommun-a", "p1");
        assert_eq!(bad.validity, Validity::Invalid(Invalid::CheckDigit));
        assert_eq!(bad.key, p.hmac_hex(b"kommun-a:p1"));
        let none = p.person(None, TODAY, "kommun-a", "p1");
        assert_eq!(none.validity, Validity::Missing);
        assert_eq!(none.key, bad.key);
        assert_ne!(p.person(None, TODAY, "kommun-b", "p1").key, none.key);
    }

    #[test]
    fn names_are_keyed_hashes_that_ignore_case_and_spacing() {
        let p = Pseudonymiser::new(SECRET).unwrap_or_else(|_| unreachable!());
        // Computed independently with Python's hmac and hashlib modules.
        assert_eq!(
            p.name_key("Matematik 7A"),
            "6b588ae686a35a6998b7ce3c8822425a"
        );
        assert_eq!(p.name_key("  matematik\t 7a "), p.name_key("Matematik 7A"));
        assert_ne!(p.name_key("Matematik 7B"), p.name_key("Matematik 7A"));
    }

    #[test]
    fn short_keys_are_refused_and_the_secret_is_never_printed() {
        assert!(matches!(
            Pseudonymiser::new(b"short".to_vec()),
            Err(KeyError::TooShort)
        ));
        let p = Pseudonymiser::new(SECRET).unwrap_or_else(|_| unreachable!());
        assert!(!format!("{p:?}").contains("0123456789"));
    }
}
