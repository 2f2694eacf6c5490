//! What is taught: subjects per school year for compulsory school, courses
//! per programme and year for upper secondary, in weekly minutes. The
//! numbers follow the Swedish timetable (timplan) loosely and add up to
//! 21–23 hours a week.

/// One subject or course in a cohort's weekly plan.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    /// Short designation, e.g. `MA`.
    pub designation: &'static str,
    pub name: &'static str,
    /// Skolverket-style subject code, e.g. `GRGRMAT01`.
    pub subject_code: &'static str,
    /// Upper-secondary course code, e.g. `MATMAT01c`.
    pub course_code: Option<&'static str>,
    pub points: Option<u32>,
    pub weekly_minutes: u32,
    /// How the cohort is split for it.
    pub split: Split,
}

/// How pupils are grouped for a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The whole class.
    Class,
    /// Swedish: the class minus the pupils in Swedish as a second language,
    /// who are taught in a year-wide SVA group at the same time.
    SwedishOrSva,
    /// Modern languages: year-wide language groups by the pupils' choice.
    Language,
}

const fn gr(
    designation: &'static str,
    name: &'static str,
    subject_code: &'static str,
    weekly_minutes: u32,
) -> Item {
    Item {
        designation,
        name,
        subject_code,
        course_code: None,
        points: None,
        weekly_minutes,
        split: Split::Class,
    }
}

const fn split(mut item: Item, split: Split) -> Item {
    item.split = split;
    item
}

const LOW: &[Item] = &[
    split(gr("SV", "Svenska", "GRGRSVE01", 360), Split::SwedishOrSva),
    gr("MA", "Matematik", "GRGRMAT01", 240),
    gr("EN", "Engelska", "GRGRENG01", 60),
    gr("NO", "Naturorienterande ämnen", "GRGRNOA01", 120),
    gr("SO", "Samhällsorienterande ämnen", "GRGRSOA01", 120),
    gr("IDH", "Idrott och hälsa", "GRGRIDR01", 120),
    gr("MU", "Musik", "GRGRMUS01", 60),
    gr("BL", "Bild", "GRGRBIL01", 60),
    gr("SL", "Slöjd", "GRGRSLJ01", 60),
    gr("TK", "Teknik", "GRGRTEK01", 60),
];

const MIDDLE: &[Item] = &[
    split(gr("SV", "Svenska", "GRGRSVE01", 240), Split::SwedishOrSva),
    gr("MA", "Matematik", "GRGRMAT01", 240),
    gr("EN", "Engelska", "GRGRENG01", 120),
    gr("NO", "Naturorienterande ämnen", "GRGRNOA01", 180),
    gr("SO", "Samhällsorienterande ämnen", "GRGRSOA01", 180),
    gr("IDH", "Idrott och hälsa", "GRGRIDR01", 120),
    gr("MU", "Musik", "GRGRMUS01", 60),
    gr("BL", "Bild", "GRGRBIL01", 60),
    gr("SL", "Slöjd", "GRGRSLJ01", 60),
    gr("TK", "Teknik", "GRGRTEK01", 60),
];

const SIXTH: &[Item] = &[
    split(gr("SV", "Svenska", "GRGRSVE01", 180), Split::SwedishOrSva),
    gr("MA", "Matematik", "GRGRMAT01", 180),
    gr("EN", "Engelska", "GRGRENG01", 120),
    gr("NO", "Naturorienterande ämnen", "GRGRNOA01", 180),
    gr("SO", "Samhällsorienterande ämnen", "GRGRSOA01", 180),
    gr("IDH", "Idrott och hälsa", "GRGRIDR01", 100),
    gr("MU", "Musik", "GRGRMUS01", 60),
    gr("BL", "Bild", "GRGRBIL01", 60),
    gr("SL", "Slöjd", "GRGRSLJ01", 60),
    split(gr("M2", "Moderna språk", "GRGRMSP01", 100), Split::Language),
];

const HIGH: &[Item] = &[
    split(gr("SV", "Svenska", "GRGRSVE01", 180), Split::SwedishOrSva),
    gr("MA", "Matematik", "GRGRMAT01", 180),
    gr("EN", "Engelska", "GRGRENG01", 120),
    gr("BI", "Biologi", "GRGRBIO01", 60),
    gr("FY", "Fysik", "GRGRFYS01", 60),
    gr("KE", "Kemi", "GRGRKEM01", 60),
    gr("GE", "Geografi", "GRGRGEO01", 60),
    gr("HI", "Historia", "GRGRHIS01", 60),
    gr("RE", "Religionskunskap", "GRGRREL01", 40),
    gr("SH", "Samhällskunskap", "GRGRSAM01", 60),
    gr("IDH", "Idrott och hälsa", "GRGRIDR01", 100),
    gr("MU", "Musik", "GRGRMUS01", 40),
    gr("BL", "Bild", "GRGRBIL01", 40),
    gr("SL", "Slöjd", "GRGRSLJ01", 40),
    gr("HKK", "Hem- och konsumentkunskap", "GRGRHKK01", 40),
    gr("TK", "Teknik", "GRGRTEK01", 40),
    split(gr("M2", "Moderna språk", "GRGRMSP01", 100), Split::Language),
];

/// Swedish as a second language: taught instead of Swedish.
pub const SVA: Item = gr("SVA", "Svenska som andraspråk", "GRGRSVA01", 0);

/// The language choices (språkval) in the modern-language slots, with
/// language codes (ISO 639-3) and the share of pupils choosing each. `SVEN`
/// is extra Swedish and English for pupils who take no modern language.
pub const LANGUAGES: &[(&str, &str, f64)] = &[
    ("SPA", "spa", 0.45),
    ("TYS", "deu", 0.25),
    ("FRA", "fra", 0.20),
    ("SVEN", "swe", 0.10),
];

/// Compulsory school plan for school year 0 (förskoleklass) to 9.
pub fn compulsory(year: u8) -> &'static [Item] {
    match year {
        0..=3 => LOW,
        4 | 5 => MIDDLE,
        6 => SIXTH,
        _ => HIGH,
    }
}

const fn gy(
    designation: &'static str,
    name: &'static str,
    subject_code: &'static str,
    course_code: &'static str,
) -> Item {
    Item {
        designation,
        name,
        subject_code,
        course_code: Some(course_code),
        points: Some(100),
        weekly_minutes: 160,
        split: Split::Class,
    }
}

/// Upper-secondary programmes.
pub const PROGRAMMES: &[&str] = &["NA", "SA", "EK", "TE"];

/// Upper-secondary courses for a programme and year (1–3): 8 courses of
/// 100 points, 160 minutes a week each.
pub fn upper_secondary(programme: &str, year: u8) -> [Item; 8] {
    let common: [Item; 5] = match year {
        1 => [
            gy("SVE", "Svenska 1", "SVE", "SVESVE01"),
            gy("ENG", "Engelska 5", "ENG", "ENGENG05"),
            gy("MAT", "Matematik 1c", "MAT", "MATMAT01c"),
            gy("IDR", "Idrott och hälsa 1", "IDR", "IDRIDR01"),
            gy("HIS", "Historia 1b", "HIS", "HISHIS01b"),
        ],
        2 => [
            gy("SVE", "Svenska 2", "SVE", "SVESVE02"),
            gy("ENG", "Engelska 6", "ENG", "ENGENG06"),
            gy("MAT", "Matematik 2c", "MAT", "MATMAT02c"),
            gy("REL", "Religionskunskap 1", "REL", "RELREL01"),
            gy("SAM", "Samhällskunskap 1b", "SAM", "SAMSAM01b"),
        ],
        _ => [
            gy("SVE", "Svenska 3", "SVE", "SVESVE03"),
            gy("MAT", "Matematik 3c", "MAT", "MATMAT03c"),
            gy("GYA", "Gymnasiearbete", "GYA", "GYARBE00"),
            gy("SAM", "Samhällskunskap 2", "SAM", "SAMSAM02"),
            gy("FIL", "Filosofi 1", "FIL", "FIOFIO01"),
        ],
    };
    let own: [Item; 3] = match (programme, year) {
        ("NA", 1) => [
            gy("BIO", "Biologi 1", "BIO", "BIOBIO01"),
            gy("KEM", "Kemi 1", "KEM", "KEMKEM01"),
            gy("FYS", "Fysik 1a", "FYS", "FYSFYS01a"),
        ],
        ("NA", 2) => [
            gy("BIO", "Biologi 2", "BIO", "BIOBIO02"),
            gy("KEM", "Kemi 2", "KEM", "KEMKEM02"),
            gy("FYS", "Fysik 2", "FYS", "FYSFYS02"),
        ],
        ("NA", _) => [
            gy("MAT", "Matematik 4", "MAT", "MATMAT04"),
            gy("BIO", "Bioteknik", "BIO", "BIOBIT00"),
            gy("NAK", "Naturkunskap 2", "NAK", "NAKNAK02"),
        ],
        ("SA", 1) => [
            gy("PSK", "Psykologi 1", "PSK", "PSKPSY01"),
            gy("GEO", "Geografi 1", "GEO", "GEOGEO01"),
            gy("NAK", "Naturkunskap 1b", "NAK", "NAKNAK01b"),
        ],
        ("SA", 2) => [
            gy("PSK", "Psykologi 2a", "PSK", "PSKPSY02a"),
            gy("SOC", "Sociologi", "SOC", "SOCSOC00"),
            gy("MOD", "Moderna språk 3", "MOD", "MODMOD03"),
        ],
        ("SA", _) => [
            gy("SAM", "Samhällskunskap 3", "SAM", "SAMSAM03"),
            gy("LED", "Ledarskap", "LED", "LEDLED0"),
            gy("HIS", "Historia 2a", "HIS", "HISHIS02a"),
        ],
        ("EK", 1) => [
            gy("FÖR", "Företagsekonomi 1", "FÖR", "FÖRFÖR01"),
            gy("PRI", "Privatjuridik", "JUR", "JURPRI00"),
            gy("NAK", "Naturkunskap 1b", "NAK", "NAKNAK01b"),
        ],
        ("EK", 2) => [
            gy("FÖR", "Företagsekonomi 2", "FÖR", "FÖRFÖR02"),
            gy("PSK", "Psykologi 1", "PSK", "PSKPSY01"),
            gy("MOD", "Moderna språk 3", "MOD", "MODMOD03"),
        ],
        ("EK", _) => [
            gy("ENT", "Entreprenörskap", "ENT", "ENTENR0"),
            gy("MAT", "Matematik 4", "MAT", "MATMAT04"),
            gy("INT", "Internationell ekonomi", "INE", "INEINT0"),
        ],
        (_, 1) => [
            gy("TEK", "Teknik 1", "TEK", "TEKTEK01"),
            gy("FYS", "Fysik 1a", "FYS", "FYSFYS01a"),
            gy("KEM", "Kemi 1", "KEM", "KEMKEM01"),
        ],
        (_, 2) => [
            gy("PRR", "Programmering 1", "PRR", "PRRPRR01"),
            gy("CAD", "CAD 1", "CAD", "CADCAD01"),
            gy("FYS", "Fysik 2", "FYS", "FYSFYS02"),
        ],
        _ => [
            gy("TEK", "Teknik specialisering", "TEK", "TEKTEK00S"),
            gy("PRR", "Programmering 2", "PRR", "PRRPRR02"),
            gy("MAT", "Matematik 4", "MAT", "MATMAT04"),
        ],
    };
    [
        common[0], common[1], common[2], common[3], common[4], own[0], own[1], own[2],
    ]
}

/// Split weekly minutes into lessons: 60-minute lessons, a remainder of up
/// to 90 minutes as one lesson, and 91 to 119 minutes as two halves.
pub fn lesson_lengths(weekly_minutes: u32) -> Vec<u32> {
    let mut left = weekly_minutes;
    let mut out = Vec::new();
    while left > 0 {
        let len = if left >= 120 || left == 60 {
            60
        } else if left <= 90 {
            left
        } else {
            left / 2
        };
        out.push(len);
        left -= len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_hours_are_21_to_23_for_a_typical_pupil() {
        for year in 0..=9u8 {
            let minutes: u32 = compulsory(year).iter().map(|i| i.weekly_minutes).sum();
            assert!((1200..=1420).contains(&minutes), "year {year}: {minutes}");
        }
        for p in PROGRAMMES {
            for y in 1..=3 {
                let minutes: u32 = upper_secondary(p, y).iter().map(|i| i.weekly_minutes).sum();
                assert_eq!(minutes, 1280);
            }
        }
    }

    #[test]
    fn lessons_add_up() {
        for m in [40, 60, 100, 120, 150, 160, 180, 240, 360] {
            let lessons = lesson_lengths(m);
            assert_eq!(lessons.iter().sum::<u32>(), m);
            assert!(
                lessons.iter().all(|l| (40..=90).contains(l)),
                "{m}: {lessons:?}"
            );
        }
    }
}
