//! Swedish personal identity numbers (personnummer) and coordination
//! numbers (samordningsnummer), as vendors send them.
//!
//! Accepted forms: `YYYYMMDDNNNC`, `YYYYMMDD-NNNC`, `YYMMDD-NNNC`,
//! `YYMMDD+NNNC` (`+`: 100 years or older) and `YYMMDDNNNC`. A 10-digit form
//! gets the most recent century that does not put the birth date after the
//! reference date (the day the number was read), or the one before that for
//! `+`. Coordination numbers have 60 added to the day.

use crate::ss12000::time::days_in_month;

/// A valid number, expanded to 12 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Civic {
    twelve: String,
    coordination: bool,
    birth: (i32, u32, u32),
}

// Civic numbers must not reach logs: Debug shows only what kind it is.
impl std::fmt::Debug for Civic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Civic")
            .field("coordination", &self.coordination)
            .field("birth_year", &self.birth.0)
            .finish_non_exhaustive()
    }
}

impl Civic {
    /// `YYYYMMDDNNNC`, the form the person key is computed from.
    pub fn twelve_digits(&self) -> &str {
        &self.twelve
    }

    /// A coordination number rather than a personal identity number.
    pub fn is_coordination(&self) -> bool {
        self.coordination
    }

    /// Year of birth.
    pub fn birth_year(&self) -> i32 {
        self.birth.0
    }
}

/// Why a number is not valid. Carries no digits of the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("empty")]
    Empty,
    #[error("not in any accepted form (12 or 10 digits, optional - or +)")]
    Form,
    #[error("letters in the serial part (a temporary number)")]
    Temporary,
    #[error("the date part is not a date")]
    Date,
    #[error("the birth date is after the day it was read")]
    Future,
    #[error("the check digit does not match")]
    CheckDigit,
}

/// Luhn over the ten digits `YYMMDDNNNC`: valid when the sum is a multiple
/// of ten.
fn luhn_ok(ten: &[u8]) -> bool {
    let sum: u32 = ten
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(*d) * if i % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Parse and validate `text` as read on `today` (year, month, day).
pub fn parse(text: &str, today: (i32, u32, u32)) -> Result<Civic, Invalid> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Invalid::Empty);
    }
    let (body, plus) = match text.len() {
        13 if text.as_bytes()[8] == b'-' => (format!("{}{}", &text[..8], &text[9..]), false),
        11 if matches!(text.as_bytes()[6], b'-' | b'+') => (
            format!("{}{}", &text[..6], &text[7..]),
            text.as_bytes()[6] == b'+',
        ),
        12 | 10 => (text.to_owned(), false),
        _ => return Err(Invalid::Form),
    };
    if !body.is_ascii() {
        return Err(Invalid::Form);
    }
    let date_len = body.len() - 4;
    if !body[..date_len].bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::Form);
    }
    if !body[date_len..].bytes().all(|b| b.is_ascii_digit()) {
        return if body[date_len..].bytes().any(|b| b.is_ascii_alphabetic()) {
            Err(Invalid::Temporary)
        } else {
            Err(Invalid::Form)
        };
    }
    let digits: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
    let num = |range: std::ops::Range<usize>| -> u32 {
        digits[range]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(*d))
    };
    let (year, rest) = if date_len == 8 {
        (num(0..4) as i32, 4)
    } else {
        let yy = num(0..2) as i32;
        let mut year = (today.0 / 100) * 100 + yy;
        let month = num(2..4);
        let day = num(4..6) % 60;
        if (year, month, day) > today {
            year -= 100;
        }
        if plus {
            year -= 100;
        }
        (year, 2)
    };
    let month = num(rest..rest + 2);
    let raw_day = num(rest + 2..rest + 4);
    let coordination = raw_day > 60;
    let day = if coordination { raw_day - 60 } else { raw_day };
    if !(1..=12).contains(&month)
        || day == 0
        || i64::from(day) > days_in_month(i64::from(year), i64::from(month))
    {
        return Err(Invalid::Date);
    }
    if (year, month, day) > today {
        return Err(Invalid::Future);
    }
    let ten = &digits[digits.len() - 10..];
    if !luhn_ok(ten) {
        return Err(Invalid::CheckDigit);
    }
    let serial = &body[date_len..];
    let twelve = format!("{year:04}{month:02}{raw_day:02}{serial}");
    Ok(Civic {
        twelve,
        coordination,
        birth: (year, month, day),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (i32, u32, u32) = (2025, 9, 1);

    /// `head` (nine digits `YYMMDDNNN`) with its check digit appended.
    fn with_check(head: &str) -> String {
        let digits: Vec<u8> = head.bytes().map(|b| b - b'0').collect();
        let check = (0..10u8)
            .find(|c| {
                let mut ten = digits.clone();
                ten.push(*c);
                luhn_ok(&ten)
            })
            .unwrap_or(0);
        format!("{head}{check}")
    }

    #[test]
    fn accepted_forms_expand_to_twelve_digits() {
        // Skatteverket's example number.
        for form in ["198112189876", "19811218-9876", "811218-9876", "8112189876"] {
            let civic = parse(form, TODAY);
            assert_eq!(
                civic.as_ref().map(Civic::twelve_digits),
                Ok("198112189876"),
                "{form}"
            );
        }
    }

    #[test]
    fn the_century_is_the_latest_that_is_not_in_the_future() {
        let child = with_check("120304123");
        assert_eq!(parse(&child, TODAY).map(|c| c.birth_year()), Ok(2012));
        // 18 December is later in the year than 1 September: 1925, not 2025.
        let old = with_check("251218123");
        assert_eq!(parse(&old, TODAY).map(|c| c.birth_year()), Ok(1925));
        // A plus sign means a hundred years more.
        let ancient = with_check("120304123");
        let plus = format!("{}+{}", &ancient[..6], &ancient[6..]);
        assert_eq!(parse(&plus, TODAY).map(|c| c.birth_year()), Ok(1912));
        assert_eq!(
            parse(&plus, TODAY).map(|c| c.twelve_digits().to_owned()),
            Ok(format!("19{ancient}"))
        );
    }

    #[test]
    fn coordination_numbers() {
        // Born 18 December 1981: day 78.
        let ten = with_check("811278123");
        let civic = parse(&format!("19{ten}"), TODAY);
        assert_eq!(civic.as_ref().map(Civic::is_coordination), Ok(true));
        assert_eq!(civic.as_ref().map(Civic::birth_year), Ok(1981));
        assert_eq!(
            civic.map(|c| c.twelve_digits().to_owned()),
            Ok(format!("19{ten}"))
        );
        assert_eq!(parse(&with_check("811292123"), TODAY), Err(Invalid::Date));
    }

    #[test]
    fn invalid_numbers_say_why() {
        assert_eq!(parse("", TODAY), Err(Invalid::Empty));
        assert_eq!(parse("198112189875", TODAY), Err(Invalid::CheckDigit));
        assert_eq!(parse("198113189876", TODAY), Err(Invalid::Date));
        assert_eq!(parse("20130101TF01", TODAY), Err(Invalid::Temporary));
        assert_eq!(
            parse(&format!("20{}", with_check("300101123")), TODAY),
            Err(Invalid::Future)
        );
        assert_eq!(parse("1981-12-18", TODAY), Err(Invalid::Form));
        assert_eq!(parse("19811218\u{2013}9876", TODAY), Err(Invalid::Form));
    }

    #[test]
    fn debug_never_shows_the_number() {
        let shown = parse("198112189876", TODAY)
            .map(|c| format!("{c:?}"))
            .unwrap_or_default();
        assert!(shown.starts_with("Civic"));
        assert!(
            !shown.contains("9876") && !shown.contains("811218"),
            "{shown}"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,20}") {
            let _ = parse(&text, TODAY);
        }

        #[test]
        fn valid_numbers_round_trip_in_every_form(
            year in 1926i32..2025, month in 1u32..=12, day in 1u32..=28, serial in 0u32..1000,
        ) {
            let ten = with_check(&format!("{:02}{month:02}{day:02}{serial:03}", year % 100));
            let twelve = format!("{year:04}{}", &ten[2..]);
            proptest::prop_assert_eq!(parse(&twelve, TODAY).map(|c| c.twelve_digits().to_owned()), Ok(twelve.clone()));
            // The short form means the latest century not in the future:
            // within the last hundred years that is `year` itself.
            let dashed = format!("{}-{}", &ten[..6], &ten[6..]);
            proptest::prop_assert_eq!(parse(&dashed, TODAY).map(|c| c.twelve_digits().to_owned()), Ok(twelve));
        }
    }
}
