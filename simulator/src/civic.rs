//! Fake Swedish personal identity numbers (personnummer) and coordination
//! numbers (samordningsnummer), valid by construction unless a fault asks
//! for an invalid one. Written independently of the producer's validator:
//! the simulator is the oracle.

use chrono::{Datelike, NaiveDate};
use rand::Rng;

/// The Luhn check digit of the nine digits `YYMMDDNNN`.
pub fn check_digit(nine: &[u8; 9]) -> u8 {
    let sum: u32 = nine
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(*d) * if i % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// How a generated number should look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Personal,
    Coordination,
    /// Valid date, wrong check digit.
    BadCheckDigit,
}

/// A 12-digit number `YYYYMMDDNNNC` for someone born on `birth`; the serial's
/// second-to-last digit is odd for men and even for women.
pub fn generate<R: Rng>(rng: &mut R, birth: NaiveDate, male: bool, kind: Kind) -> String {
    let day = birth.day() + if kind == Kind::Coordination { 60 } else { 0 };
    let serial_hi: u32 = rng.random_range(0..100);
    let sex_digit: u32 = rng.random_range(0..5) * 2 + u32::from(male);
    let yy = (birth.year() % 100) as u32;
    let digits = [
        yy / 10,
        yy % 10,
        birth.month() / 10,
        birth.month() % 10,
        day / 10,
        day % 10,
        serial_hi / 10,
        serial_hi % 10,
        sex_digit,
    ];
    let nine: [u8; 9] = digits.map(|d| d as u8);
    let mut check = check_digit(&nine);
    if kind == Kind::BadCheckDigit {
        check = (check + 1 + rng.random_range(0..9)) % 10;
    }
    format!(
        "{:04}{:02}{:02}{:02}{}{}",
        birth.year(),
        birth.month(),
        day,
        serial_hi,
        sex_digit,
        check
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn known_example_checks() {
        // Skatteverket's example number 811218-9876.
        assert_eq!(check_digit(&[8, 1, 1, 2, 1, 8, 9, 8, 7]), 6);
    }

    #[test]
    fn generated_numbers_check_out() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let birth = NaiveDate::from_ymd_opt(2012, 3, 4).unwrap_or_default();
        for _ in 0..100 {
            let n = generate(&mut rng, birth, true, Kind::Personal);
            let b = n.as_bytes();
            let nine: [u8; 9] = std::array::from_fn(|i| b[i + 2] - b'0');
            assert_eq!(check_digit(&nine), b[11] - b'0', "{n}");
            assert_eq!((b[10] - b'0') % 2, 1, "men have an odd ninth digit");
            let c = generate(&mut rng, birth, false, Kind::Coordination);
            assert_eq!(&c[6..8], "64");
            let bad = generate(&mut rng, birth, false, Kind::BadCheckDigit);
            let b = bad.as_bytes();
            let nine: [u8; 9] = std::array::from_fn(|i| b[i + 2] - b'0');
            assert_ne!(check_digit(&nine), b[11] - b'0');
        }
    }
}
