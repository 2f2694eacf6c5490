//! The validation rules: what `rule` in a quality finding may say. Ids
//! are a contract (reports, dashboards and organisers' fix lists name
//! them); `docs/quality.md` explains each.

/// How much a broken rule matters to the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The registers are wrong or incomplete where it holds.
    Error,
    /// The registers may be wrong; worth a look.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    /// Where it is evaluated: `producer` (as items are read, before
    /// pseudonymisation) or `processor` (per week, on the history).
    pub evaluated: &'static str,
    pub en: &'static str,
    pub sv: &'static str,
}

pub const INVALID_CIVIC_NUMBER: Rule = Rule {
    id: "INVALID_CIVIC_NUMBER",
    severity: Severity::Error,
    evaluated: "producer",
    en: "A person's civic number is not a valid personal identity or coordination number (wrong length, date or check digit). The person gets a fallback key and cannot be matched with other sources.",
    sv: "Personens person- eller samordningsnummer är ogiltigt (fel längd, datum eller kontrollsiffra). Personen får en ersättningsnyckel och kan inte matchas mot andra källor.",
};

pub const MISSING_CIVIC_NUMBER: Rule = Rule {
    id: "MISSING_CIVIC_NUMBER",
    severity: Severity::Error,
    evaluated: "producer",
    en: "A person has no civic number at all. The person gets a fallback key and cannot be matched with other sources.",
    sv: "Personen saknar person- eller samordningsnummer. Personen får en ersättningsnyckel och kan inte matchas mot andra källor.",
};

pub const MISSING_SCHOOL_UNIT_CODE: Rule = Rule {
    id: "MISSING_SCHOOL_UNIT_CODE",
    severity: Severity::Error,
    evaluated: "processor",
    en: "A school unit that has lessons has no school-unit code (skolenhetskod, eight digits). Its rows in the registers have an empty school_unit_code.",
    sv: "En skolenhet med lektioner saknar skolenhetskod (åtta siffror). Dess rader i registren får tom skolenhetskod.",
};

pub const MALFORMED_SCHOOL_UNIT_CODE: Rule = Rule {
    id: "MALFORMED_SCHOOL_UNIT_CODE",
    severity: Severity::Error,
    evaluated: "processor",
    en: "A school unit's school-unit code is not eight digits.",
    sv: "En skolenhets skolenhetskod består inte av åtta siffror.",
};

pub const ACTIVITY_WITHOUT_TEACHER: Rule = Rule {
    id: "ACTIVITY_WITHOUT_TEACHER",
    severity: Severity::Error,
    evaluated: "processor",
    en: "An activity with lessons in the week has no teacher assigned on the lessons' days. Nobody is registered as having taught its pupils.",
    sv: "En aktivitet med lektioner under veckan har ingen lärare tilldelad de dagarna. Ingen registreras som lärare för dess elever.",
};

pub const LESSON_WITHOUT_TEACHER: Rule = Rule {
    id: "LESSON_WITHOUT_TEACHER",
    severity: Severity::Error,
    evaluated: "processor",
    en: "A lesson that took place has no teacher: its activity had none assigned on the day. The lesson is missing from teacher_student.",
    sv: "En genomförd lektion saknar lärare: dess aktivitet hade ingen lärare tilldelad den dagen. Lektionen saknas i teacher_student.",
};

pub const GROUP_WITHOUT_MEMBERS: Rule = Rule {
    id: "GROUP_WITHOUT_MEMBERS",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "A group taught in the week had no members on the lesson's day. Its lessons count for no pupil.",
    sv: "En grupp som undervisades under veckan hade inga medlemmar den dagen. Dess lektioner räknas inte för någon elev.",
};

pub const ATTENDANCE_EXCEEDS_LESSON: Rule = Rule {
    id: "ATTENDANCE_EXCEEDS_LESSON",
    severity: Severity::Error,
    evaluated: "processor",
    en: "A pupil's reported minutes (present plus absent) exceed the lesson's length.",
    sv: "En elevs rapporterade minuter (närvaro plus frånvaro) överstiger lektionens längd.",
};

pub const LESSON_NOT_REPORTED: Rule = Rule {
    id: "LESSON_NOT_REPORTED",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "Nobody's attendance was reported for a lesson with pupils by the time its week closed (the week's end plus the processor's grace_hours, 72 hours by default). Resolved when reports arrive.",
    sv: "Ingen närvaro hade rapporterats för en lektion med elever när veckan stängdes (veckans slut plus processorns grace_hours, som standard 72 timmar). Löses när rapporter kommer.",
};

pub const DANGLING_REFERENCE: Rule = Rule {
    id: "DANGLING_REFERENCE",
    severity: Severity::Error,
    evaluated: "processor",
    en: "A reference leads nowhere: the lesson's activity, the activity's school unit, group, syllabus or teacher duty, a duty's person or a member is not in the vendor's data. What depends on it is missing from the registers.",
    sv: "En referens pekar inte på något: lektionens aktivitet, aktivitetens skolenhet, grupp, kursplan eller lärartjänst, en tjänsts person eller en gruppmedlem finns inte i leverantörens data. Det som beror på den saknas i registren.",
};

pub const TEACHER_DOUBLE_BOOKED: Rule = Rule {
    id: "TEACHER_DOUBLE_BOOKED",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "A teacher is assigned to two lessons that overlap in time in the week. At most one of them can have been taught by them as registered.",
    sv: "En lärare är tilldelad två lektioner som överlappar i tid under veckan. Högst en av dem kan ha hållits av läraren så som den registreras.",
};

pub const PUPIL_DOUBLE_BOOKED: Rule = Rule {
    id: "PUPIL_DOUBLE_BOOKED",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "A pupil is in the groups of two lessons that overlap in time in the week. The pupil's scheduled minutes count both.",
    sv: "En elev ingår i grupperna för två lektioner som överlappar i tid under veckan. Elevens schemalagda minuter räknar båda.",
};

pub const LESSON_OUTSIDE_ACTIVITY_DATES: Rule = Rule {
    id: "LESSON_OUTSIDE_ACTIVITY_DATES",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "A lesson took place before its activity's startDate or after its endDate. Either the lesson or the activity's dates are wrong; the lesson still counts in the registers.",
    sv: "En lektion hölls före aktivitetens startdatum eller efter dess slutdatum. Antingen lektionen eller aktivitetens datum är fel; lektionen räknas ändå i registren.",
};

pub const PUPIL_WITHOUT_SCHOOL_YEAR: Rule = Rule {
    id: "PUPIL_WITHOUT_SCHOOL_YEAR",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "A pupil in the week's lessons is enrolled on the lesson's day, but none of the enrolments in force gives a school year (schoolYear). Statistics by grade cannot count the pupil.",
    sv: "En elev i veckans lektioner är inskriven den dagen, men ingen av de gällande inskrivningarna anger årskurs (schoolYear). Statistik per årskurs kan inte räkna eleven.",
};

pub const IMPLAUSIBLE_AGE: Rule = Rule {
    id: "IMPLAUSIBLE_AGE",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "A pupil's age does not fit the school year of the enrolment in force: born more than one year later or more than three years earlier than the year's usual age (6 in förskoleklass, 6 plus the school year in compulsory school, 15 plus the school year in upper secondary school, by the calendar year the school year starts in). Either the school year or the birth date is likely wrong.",
    sv: "Elevens ålder passar inte årskursen i den gällande inskrivningen: född mer än ett år senare eller mer än tre år tidigare än årskursens vanliga ålder (6 i förskoleklass, 6 plus årskursen i grundskolan, 15 plus årskursen i gymnasieskolan, räknat på det kalenderår läsåret börjar). Troligen är årskursen eller födelsedatumet fel.",
};

pub const MODIFIED_NOT_UPDATED: Rule = Rule {
    id: "MODIFIED_NOT_UPDATED",
    severity: Severity::Warning,
    evaluated: "processor",
    en: "An entity's content changed but its meta.modified did not. Incremental reads (meta.modified.after) miss such changes until the next full read, and the history dates the change to when it was seen rather than when it was made. The finding is in the week the change was seen.",
    sv: "En posts innehåll ändrades men inte dess meta.modified. Inkrementella läsningar (meta.modified.after) missar sådana ändringar fram till nästa fullständiga läsning, och historiken daterar ändringen till när den sågs i stället för när den gjordes. Avvikelsen hör till veckan då ändringen sågs.",
};

/// Every rule, in the order reports list them.
pub const RULES: &[Rule] = &[
    INVALID_CIVIC_NUMBER,
    MISSING_CIVIC_NUMBER,
    MISSING_SCHOOL_UNIT_CODE,
    MALFORMED_SCHOOL_UNIT_CODE,
    ACTIVITY_WITHOUT_TEACHER,
    LESSON_WITHOUT_TEACHER,
    GROUP_WITHOUT_MEMBERS,
    ATTENDANCE_EXCEEDS_LESSON,
    LESSON_NOT_REPORTED,
    TEACHER_DOUBLE_BOOKED,
    PUPIL_DOUBLE_BOOKED,
    LESSON_OUTSIDE_ACTIVITY_DATES,
    PUPIL_WITHOUT_SCHOOL_YEAR,
    IMPLAUSIBLE_AGE,
    MODIFIED_NOT_UPDATED,
    DANGLING_REFERENCE,
];

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_rule_is_explained_in_both_languages() {
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
        for r in RULES {
            assert!(r.en.len() > 20 && r.sv.len() > 20, "{}", r.id);
            assert!(matches!(r.evaluated, "producer" | "processor"));
            assert_eq!(rule(r.id), Some(r));
        }
    }

    #[test]
    fn docs_quality_explains_every_rule_as_the_code_does() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/quality.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        for r in RULES {
            assert!(docs.contains(&format!("### `{}`", r.id)), "{}", r.id);
            assert!(docs.contains(r.en) && docs.contains(r.sv), "{}", r.id);
        }
    }
}
