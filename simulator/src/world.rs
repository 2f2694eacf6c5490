//! The simulated municipality: its organisation, people, groups,
//! activities and timetable, generated deterministically from the seed.
//!
//! Two views are kept apart on purpose. The *vendor view* is what the
//! vendor's API shows: teacher lists that are overwritten, memberships that
//! may be deleted rather than end-dated. The *true history* (`taught_by`,
//! memberships with their real end dates) is what happened, and is what the
//! ground truth is computed from.

use chrono::{Datelike, Duration, NaiveDate};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::calendar::SchoolYear;
use crate::civic;
use crate::config::SimConfig;
use crate::ids::{self, entity_id, Kind};
use crate::plan::{self, Item, Split};

/// Compulsory school or upper secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    Gr,
    Gy,
}

impl Form {
    pub fn school_type(self) -> &'static str {
        match self {
            Self::Gr => "GR",
            Self::Gy => "GY",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    /// `Huvudman` or `Skolenhet`.
    pub kind: &'static str,
    pub school_unit_code: Option<String>,
    pub parent: Option<u32>,
    pub form: Option<Form>,
    /// Timetable and attendance come from the Skola24-style vendor rather
    /// than the SS 12000 one.
    pub skola24: bool,
    pub created: i64,
    pub modified: i64,
}

#[derive(Clone, Debug)]
pub struct Enrolment {
    pub unit: u32,
    pub school_year: u8,
    pub form: Form,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
}

/// The school year a vendor with implausible school years
/// (`quality.implausible_school_years`) serves for an enrolment: four years
/// off, the way that stays within the school form's years where it can.
/// Förskoleklass (year 0) keeps its year.
pub fn implausible_school_year(e: &Enrolment) -> u8 {
    match (e.form, e.school_year) {
        (Form::Gr, 0) => 0,
        (Form::Gr, y @ 1..=5) => y + 4,
        (Form::Gr, y) => y - 4,
        (Form::Gy, y) => y + 4,
    }
}

/// The `endDate` a vendor serves for an activity ending early
/// (`quality.activities_ending_early`): two weeks after its start.
pub fn early_end(a: &Activity) -> NaiveDate {
    (a.start + Duration::days(13)).min(a.end)
}

#[derive(Clone, Debug)]
pub struct Person {
    pub id: String,
    /// Clear-text 12-digit number; `None` when the vendor has none.
    pub civic: Option<String>,
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub birth: NaiveDate,
    pub male: bool,
    pub enrolments: Vec<Enrolment>,
    /// Share of lessons this pupil tends to miss.
    pub absence: f32,
    /// Index of the pupil's chosen language in `plan::LANGUAGES`, if any.
    pub language: Option<u8>,
    pub sva: bool,
    pub created: i64,
    pub modified: i64,
}

#[derive(Clone, Debug)]
pub struct Duty {
    pub id: String,
    pub person: u32,
    pub unit: u32,
    pub signature: String,
    pub start: NaiveDate,
    pub created: i64,
    pub modified: i64,
    pub deleted: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Membership {
    pub person: u32,
    pub start: NaiveDate,
    /// The real last day.
    pub end: Option<NaiveDate>,
    /// Deleted from the vendor's view (vendors that do not end-date).
    pub hidden: bool,
}

impl Membership {
    pub fn covers(&self, day: NaiveDate) -> bool {
        self.start <= day && self.end.is_none_or(|e| day <= e)
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// `Klass` or `Undervisning`.
    pub group_type: &'static str,
    pub unit: u32,
    pub form: Form,
    pub cohort: u32,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub members: Vec<Membership>,
    pub created: i64,
    pub modified: i64,
}

/// A teacher on an activity, as the vendor shows it.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub duty: u32,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
}

/// Who really taught an activity from when to when.
#[derive(Clone, Debug)]
pub struct Taught {
    pub duty: u32,
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
}

#[derive(Clone, Debug)]
pub struct Activity {
    pub id: String,
    pub name: String,
    pub unit: u32,
    pub cohort: u32,
    /// Index into the cohort's plan.
    pub item: u16,
    /// For language activities: the language.
    pub language: Option<u8>,
    pub groups: Vec<u32>,
    /// A group id that does not exist (data-quality fault).
    pub dangling_group: Option<String>,
    pub teachers: Vec<Assignment>,
    pub taught_by: Vec<Taught>,
    pub syllabus: u32,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub created: i64,
    pub modified: i64,
}

#[derive(Clone, Debug)]
pub struct Syllabus {
    pub id: String,
    pub item: Item,
    pub language: Option<u8>,
    pub form: Form,
    pub created: i64,
}

/// A weekly lesson slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// 0 = Monday.
    pub weekday: u8,
    /// Minutes after midnight, local time.
    pub start: u16,
    pub len: u16,
}

/// Pupils of one school year (and programme) at one unit, with their plan
/// and weekly timetable.
#[derive(Clone, Debug)]
pub struct Cohort {
    pub unit: u32,
    pub year: u8,
    pub programme: Option<&'static str>,
    pub plan: Vec<Item>,
    /// Slots per plan item.
    pub slots: Vec<Vec<Slot>>,
    /// Class groups, and for each class its Swedish group if any.
    pub classes: Vec<(u32, Option<u32>)>,
    pub sva_group: Option<u32>,
    pub language_groups: Vec<u32>,
}

/// (form, subject code, course code, language) of a syllabus.
type SyllabusKey = (Form, &'static str, Option<&'static str>, Option<u8>);

/// The whole simulated world at one moment.
#[derive(Clone, Debug)]
pub struct World {
    pub seed: u64,
    pub year: SchoolYear,
    pub organisations: Vec<Organisation>,
    pub persons: Vec<Person>,
    pub duties: Vec<Duty>,
    pub groups: Vec<Group>,
    pub activities: Vec<Activity>,
    pub syllabuses: Vec<Syllabus>,
    pub cohorts: Vec<Cohort>,
    /// Cohort plans' syllabus per (form, subject code, course code, language).
    syllabus_index: std::collections::HashMap<SyllabusKey, u32>,
}

/// The given names persons get (public so that tests can scan outputs for
/// them).
pub const GIVEN: &[&str] = &[
    "Alice", "Olivia", "Astrid", "Maja", "Vera", "Ebba", "Ella", "Wilma", "Alma", "Lilly", "Noah",
    "Hugo", "William", "Liam", "Lucas", "Adam", "Oliver", "Matteo", "Elias", "Ali", "Sara",
    "Fatima", "Leo", "Omar", "Nora", "Selma", "Elsa", "Isak", "Aron", "Juni",
];
/// The family names persons get.
pub const FAMILY: &[&str] = &[
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsson",
    "Persson",
    "Svensson",
    "Gustafsson",
    "Pettersson",
    "Jonsson",
    "Jansson",
    "Hansson",
    "Bengtsson",
    "Ahmed",
    "Hassan",
    "Mohammed",
    "Lindberg",
    "Berg",
    "Lindqvist",
    "Holm",
];

/// Simulated time at the start of the school year: 1 July, 00:00 local.
pub fn epoch_of(year: &SchoolYear) -> i64 {
    let (first, _) = year.bounds();
    crate::calendar::local_to_epoch_millis(first.and_hms_opt(0, 0, 0).unwrap_or_default())
}

struct Builder<'a> {
    config: &'a SimConfig,
    rng: ChaCha8Rng,
    world: World,
    created: i64,
    /// The unit being built, and where its persons, duties, groups and
    /// activities start: ids are numbered per unit, so that a unit comes
    /// out the same whether it is built alone or with the others.
    unit_n: u32,
    base: [usize; 4],
}

impl World {
    /// Generate the world as it stands on 1 July of the school year.
    pub fn generate(config: &SimConfig) -> Self {
        let mut builder = Builder::new(config);
        builder.build();
        builder.world
    }

    /// Generate the huvudman and one school unit (numbered from 1) of a
    /// larger configuration, exactly as [`World::generate`] would make it
    /// (except that no unit is given to the Skola24-style vendor): the way
    /// to stream a country one unit at a time.
    pub fn generate_unit(config: &SimConfig, n: u32) -> Option<Self> {
        let mut builder = Builder::new(config);
        let layout = builder.layout();
        let (form, pupils) = layout.get(n.checked_sub(1)? as usize).copied()?;
        builder.huvudman();
        builder.unit(n, form, pupils);
        Some(builder.world)
    }

    /// The number of school units a configuration has.
    pub fn unit_count(config: &SimConfig) -> u32 {
        (config.pupils() / 500).max(1)
    }

    /// Whether a unit's lessons and attendance come from the Skola24-style
    /// vendor.
    pub fn is_skola24(&self, unit: u32) -> bool {
        self.organisations
            .get(unit as usize)
            .is_some_and(|o| o.skola24)
    }

    /// The unit's school-unit code, if it has one.
    pub fn unit_code(&self, unit: u32) -> Option<&str> {
        self.organisations
            .get(unit as usize)
            .and_then(|o| o.school_unit_code.as_deref())
    }

    /// The subject or course an activity teaches, as its syllabus says.
    pub fn item_of(&self, activity: &Activity) -> &Item {
        &self.syllabuses[activity.syllabus as usize].item
    }

    /// The code the registers use for an activity's subject: the course
    /// code for upper-secondary courses, else the subject code.
    pub fn subject_code_of(&self, activity: &Activity) -> &'static str {
        let item = self.item_of(activity);
        item.course_code.unwrap_or(item.subject_code)
    }

    /// Whether a duty teaches, on `day`, an activity other than `except`
    /// with a weekly slot overlapping one of `slots`.
    pub fn busy(&self, duty: u32, slots: &[Slot], day: NaiveDate, except: u32) -> bool {
        let unit = self.duties.get(duty as usize).map(|d| d.unit);
        self.activities.iter().enumerate().any(|(a, act)| {
            a as u32 != except
                && Some(act.unit) == unit
                && act
                    .taught_by
                    .iter()
                    .any(|t| t.duty == duty && t.from <= day && t.to.is_none_or(|to| day <= to))
                && overlapping(self.slots_of(act), slots)
        })
    }

    /// The weekly slots of an activity.
    pub fn slots_of(&self, activity: &Activity) -> &[Slot] {
        &self.cohorts[activity.cohort as usize].slots[activity.item as usize]
    }

    /// The pupils taking part in an activity on a day (true history), with
    /// the group through which each takes part.
    pub fn participants(&self, activity: &Activity, day: NaiveDate) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for g in &activity.groups {
            for m in &self.groups[*g as usize].members {
                if m.covers(day) && !out.iter().any(|(p, _)| *p == m.person) {
                    out.push((m.person, *g));
                }
            }
        }
        out
    }

    /// The duties that really taught an activity on a day.
    pub fn teachers_on(&self, activity: &Activity, day: NaiveDate) -> Vec<u32> {
        activity
            .taught_by
            .iter()
            .filter(|t| t.from <= day && t.to.is_none_or(|to| day <= to))
            .map(|t| t.duty)
            .collect()
    }
}

impl<'a> Builder<'a> {
    fn new(config: &'a SimConfig) -> Self {
        let year = SchoolYear::new(config.school_year);
        let created = epoch_of(&year);
        Builder {
            config,
            rng: ChaCha8Rng::seed_from_u64(ids::hash(&[config.seed, 0x5eed])),
            world: World {
                seed: config.seed,
                year,
                organisations: Vec::new(),
                persons: Vec::new(),
                duties: Vec::new(),
                groups: Vec::new(),
                activities: Vec::new(),
                syllabuses: Vec::new(),
                cohorts: Vec::new(),
                syllabus_index: Default::default(),
            },
            created,
            unit_n: 0,
            base: [0; 4],
        }
    }

    /// Form and pupils of every unit, in order.
    fn layout(&self) -> Vec<(Form, u32)> {
        let pupils = self.config.pupils();
        let units = World::unit_count(self.config);
        let gy_units = if units >= 3 {
            ((f64::from(units) * self.config.upper_secondary_share).round() as u32).max(1)
        } else {
            0
        };
        let per_unit = pupils / units;
        (0..units)
            .map(|u| {
                let form = if u >= units - gy_units {
                    Form::Gy
                } else {
                    Form::Gr
                };
                let extra = if u == units - 1 { pupils % units } else { 0 };
                (form, per_unit + extra)
            })
            .collect()
    }

    fn huvudman(&mut self) {
        let municipality = format!("{:04}", 100 + (self.config.seed % 2000));
        let huvudman = Organisation {
            id: entity_id(self.config.seed, Kind::Organisation, 0),
            name: format!("Simulerad kommun {municipality}"),
            kind: "Huvudman",
            school_unit_code: None,
            parent: None,
            form: None,
            skola24: false,
            created: self.created,
            modified: self.created,
        };
        self.world.organisations.push(huvudman);
    }

    fn build(&mut self) {
        let units = World::unit_count(self.config);
        self.huvudman();
        for (u, (form, pupils)) in self.layout().into_iter().enumerate() {
            self.unit(u as u32 + 1, form, pupils);
        }
        // Which units run their timetable and attendance in the
        // Skola24-style system: a seeded choice of round(share × units).
        let skola24 = (f64::from(units) * self.config.skola24_share).round() as usize;
        let mut order: Vec<usize> = (1..=units as usize).collect();
        order.shuffle(&mut self.rng);
        for u in order.into_iter().take(skola24) {
            self.world.organisations[u].skola24 = true;
        }
    }

    fn unit(&mut self, n: u32, form: Form, pupils: u32) {
        let seed = self.config.seed;
        self.rng = ChaCha8Rng::seed_from_u64(ids::hash(&[seed, 0x0417, u64::from(n)]));
        self.unit_n = n;
        self.base = [
            self.world.persons.len(),
            self.world.duties.len(),
            self.world.groups.len(),
            self.world.activities.len(),
        ];
        let index = self.world.organisations.len() as u32;
        let code = if self
            .rng
            .random_bool(self.config.quality.missing_school_unit_codes)
        {
            None
        } else {
            let code = 10_000_000 + ids::mix(ids::hash(&[seed, 77, u64::from(n)])) % 89_999_999;
            // Drawn from a hash, not the world's generator: the rate does
            // not change the rest of the world.
            let draw = ids::mix(ids::hash(&[seed, 78, u64::from(n)])) as f64 / u64::MAX as f64;
            if draw < self.config.quality.malformed_school_unit_codes {
                Some(format!("{:07}", code / 10))
            } else {
                Some(format!("{code:08}"))
            }
        };
        let name = match form {
            Form::Gr => format!(
                "{} skola",
                ["Ek", "Björk", "Lind", "Rönn", "Al", "Asp", "Gran", "Tall"][(n as usize) % 8]
                    .to_owned()
                    + ["backe", "dals", "hags", "ängs", "viks"][(n as usize / 8) % 5]
            ),
            Form::Gy => format!(
                "{}gymnasiet",
                ["Stads", "Norra ", "Södra ", "Tekniska ", "Kungs"][(n as usize) % 5]
            ),
        };
        self.world.organisations.push(Organisation {
            id: entity_id(seed, Kind::Organisation, u64::from(n)),
            name: format!("{name} {n}"),
            kind: "Skolenhet",
            school_unit_code: code,
            parent: Some(0),
            form: Some(form),
            skola24: false,
            created: self.created,
            modified: self.created,
        });

        let cohorts: Vec<(u8, Option<&'static str>)> = match form {
            Form::Gr => (0..=9).map(|y| (y, None)).collect(),
            Form::Gy => (1..=3)
                .flat_map(|y| plan::PROGRAMMES.iter().map(move |p| (y, Some(*p))))
                .collect(),
        };
        let per_cohort = (pupils / cohorts.len() as u32).max(1);
        let first_cohort = self.world.cohorts.len();
        for (year, programme) in &cohorts {
            self.cohort(index, form, *year, *programme, per_cohort);
        }
        self.staff(index, form, first_cohort);
    }

    fn cohort(
        &mut self,
        unit: u32,
        form: Form,
        year: u8,
        programme: Option<&'static str>,
        pupils: u32,
    ) {
        let cohort_index = self.world.cohorts.len() as u32;
        let plan: Vec<Item> = match form {
            Form::Gr => plan::compulsory(year).to_vec(),
            Form::Gy => plan::upper_secondary(programme.unwrap_or("NA"), year).to_vec(),
        };
        let slots = timetable(&plan);
        let (autumn, _) = self.world.year.autumn;
        let (_, spring_end) = self.world.year.spring;
        let school_year_start = self.world.year.start_year;

        // Pupils.
        let first_person = self.world.persons.len() as u32;
        for _ in 0..pupils {
            let birth_year =
                school_year_start - 6 - i32::from(year) - if form == Form::Gy { 9 } else { 0 };
            let birth = NaiveDate::from_yo_opt(birth_year, self.rng.random_range(1..=365))
                .unwrap_or_default();
            let sva = form == Form::Gr && year >= 1 && self.rng.random_bool(0.10);
            let language = if form == Form::Gr && year >= 6 {
                let draw: f64 = self.rng.random();
                let mut acc = 0.0;
                let choice = plan::LANGUAGES
                    .iter()
                    .position(|(_, _, share)| {
                        acc += share;
                        draw < acc
                    })
                    .unwrap_or(plan::LANGUAGES.len() - 1);
                Some(choice as u8)
            } else {
                None
            };
            let absence = match self.rng.random_range(0..100) {
                0..=84 => self.rng.random_range(0.01..0.06),
                85..=96 => self.rng.random_range(0.06..0.15),
                _ => self.rng.random_range(0.20..0.50),
            };
            let person = self.person(
                birth,
                Some(Enrolment {
                    unit,
                    school_year: year,
                    form,
                    start: autumn,
                    end: None,
                }),
            );
            let p = &mut self.world.persons[person as usize];
            p.sva = sva;
            p.language = language;
            p.absence = absence;
        }
        let people: Vec<u32> = (first_person..first_person + pupils).collect();

        // Groups.
        let classes = pupils.div_ceil(28).max(1);
        let label = match (form, programme) {
            (Form::Gr, _) if year == 0 => "F".to_owned(),
            (Form::Gr, _) => year.to_string(),
            (Form::Gy, p) => format!(
                "{}{}",
                p.unwrap_or("NA"),
                (school_year_start + 1 - i32::from(year)) % 100
            ),
        };
        let has_swedish = plan.iter().any(|i| i.split == Split::SwedishOrSva);
        let mut class_groups = Vec::new();
        for c in 0..classes {
            let letter = (b'A' + (c % 26) as u8) as char;
            // A pupil in two classes (`quality.pupils_in_two_classes`) is
            // also in the next one.
            let two_classes = |p: u32| {
                classes > 1
                    && crate::config::Quality::drawn(
                        self.config.quality.pupils_in_two_classes,
                        self.config.seed,
                        0x2c1a,
                        u64::from(p),
                    )
            };
            let members: Vec<u32> = people
                .iter()
                .copied()
                .filter(|p| {
                    let own = (p - first_person) % classes;
                    own == c || (two_classes(*p) && (own + 1) % classes == c)
                })
                .collect();
            let class = self.group(
                format!("{label}{letter}"),
                "Klass",
                unit,
                form,
                cohort_index,
                &members,
            );
            let swedish = has_swedish.then(|| {
                let sv: Vec<u32> = members
                    .iter()
                    .copied()
                    .filter(|p| !self.world.persons[*p as usize].sva)
                    .collect();
                self.group(
                    format!("{label}{letter} SV"),
                    "Undervisning",
                    unit,
                    form,
                    cohort_index,
                    &sv,
                )
            });
            class_groups.push((class, swedish));
        }
        let sva_group = has_swedish.then(|| {
            let sva: Vec<u32> = people
                .iter()
                .copied()
                .filter(|p| self.world.persons[*p as usize].sva)
                .collect();
            self.group(
                format!("{label} SVA"),
                "Undervisning",
                unit,
                form,
                cohort_index,
                &sva,
            )
        });
        let has_languages = plan.iter().any(|i| i.split == Split::Language);
        let language_groups: Vec<u32> = if has_languages {
            (0..plan::LANGUAGES.len())
                .map(|l| {
                    let members: Vec<u32> = people
                        .iter()
                        .copied()
                        .filter(|p| self.world.persons[*p as usize].language == Some(l as u8))
                        .collect();
                    self.group(
                        format!("{label} {}", plan::LANGUAGES[l].0),
                        "Undervisning",
                        unit,
                        form,
                        cohort_index,
                        &members,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        self.world.cohorts.push(Cohort {
            unit,
            year,
            programme,
            plan: plan.clone(),
            slots,
            classes: class_groups.clone(),
            sva_group,
            language_groups: language_groups.clone(),
        });

        // Activities: teachers are assigned in `staff`.
        for (item_index, item) in plan.iter().enumerate() {
            match item.split {
                Split::Class => {
                    for (class, _) in &class_groups {
                        let name = format!(
                            "{} {}",
                            item.designation, self.world.groups[*class as usize].name
                        );
                        self.activity(
                            name,
                            cohort_index,
                            item_index,
                            None,
                            vec![*class],
                            (autumn, spring_end),
                        );
                    }
                }
                Split::SwedishOrSva => {
                    for (class, swedish) in &class_groups {
                        let group = swedish.unwrap_or(*class);
                        let name = format!("SV {}", self.world.groups[*class as usize].name);
                        self.activity(
                            name,
                            cohort_index,
                            item_index,
                            None,
                            vec![group],
                            (autumn, spring_end),
                        );
                    }
                    if let Some(sva) = sva_group.filter(|g| self.taught(*g)) {
                        self.activity(
                            format!("SVA {label}"),
                            cohort_index,
                            item_index,
                            None,
                            vec![sva],
                            (autumn, spring_end),
                        );
                        // Taught in the Swedish slots, from its own syllabus.
                        let sva_syllabus = self.syllabus(form, &plan::SVA, None);
                        if let Some(last) = self.world.activities.last_mut() {
                            last.syllabus = sva_syllabus;
                        }
                    }
                }
                Split::Language => {
                    for (l, group) in language_groups.iter().enumerate() {
                        if !self.taught(*group) {
                            continue;
                        }
                        let name = format!("{} {label}", plan::LANGUAGES[l].0);
                        self.activity(
                            name,
                            cohort_index,
                            item_index,
                            Some(l as u8),
                            vec![*group],
                            (autumn, spring_end),
                        );
                    }
                }
            }
        }
    }

    /// Whether a teaching group gets its activity: always when it has
    /// members, else as `quality.taught_empty_groups` draws.
    fn taught(&mut self, group: u32) -> bool {
        let empty = self
            .world
            .groups
            .get(group as usize)
            .is_none_or(|g| g.members.is_empty());
        !empty
            || self
                .rng
                .random_bool(self.config.quality.taught_empty_groups)
    }

    /// The id of the `index`-th entity of a kind (global index), numbered
    /// within the current unit; `base` picks the unit's starting index
    /// (0 persons, 1 duties, 2 groups, 3 activities).
    fn local_id(&self, kind: Kind, index: usize, base: usize) -> String {
        let local = index.saturating_sub(self.base[base]) as u64;
        entity_id(
            self.config.seed,
            kind,
            (u64::from(self.unit_n) << 32) | local,
        )
    }

    fn person(&mut self, birth: NaiveDate, enrolment: Option<Enrolment>) -> u32 {
        let n = self.world.persons.len() as u64;
        let male = self.rng.random_bool(0.5);
        let q = &self.config.quality;
        let draw: f64 = self.rng.random();
        let civic = if draw < q.missing_civic_numbers {
            None
        } else if draw < q.missing_civic_numbers + q.invalid_civic_numbers {
            Some(civic::generate(
                &mut self.rng,
                birth,
                male,
                civic::Kind::BadCheckDigit,
            ))
        } else if draw < q.missing_civic_numbers + q.invalid_civic_numbers + q.coordination_numbers
        {
            Some(civic::generate(
                &mut self.rng,
                birth,
                male,
                civic::Kind::Coordination,
            ))
        } else {
            Some(civic::generate(
                &mut self.rng,
                birth,
                male,
                civic::Kind::Personal,
            ))
        };
        self.world.persons.push(Person {
            id: self.local_id(Kind::Person, n as usize, 0),
            civic,
            given_name: GIVEN[self.rng.random_range(0..GIVEN.len())],
            family_name: FAMILY[self.rng.random_range(0..FAMILY.len())],
            birth,
            male,
            enrolments: enrolment.into_iter().collect(),
            absence: 0.0,
            language: None,
            sva: false,
            created: self.created,
            modified: self.created,
        });
        n as u32
    }

    fn group(
        &mut self,
        name: String,
        group_type: &'static str,
        unit: u32,
        form: Form,
        cohort: u32,
        members: &[u32],
    ) -> u32 {
        let n = self.world.groups.len() as u32;
        let (start, _) = self.world.year.autumn;
        let (_, end) = self.world.year.spring;
        self.world.groups.push(Group {
            id: self.local_id(Kind::Group, n as usize, 2),
            name,
            group_type,
            unit,
            form,
            cohort,
            start,
            end,
            members: members
                .iter()
                .map(|p| Membership {
                    person: *p,
                    start,
                    end: None,
                    hidden: false,
                })
                .collect(),
            created: self.created,
            modified: self.created,
        });
        n
    }

    fn syllabus(&mut self, form: Form, item: &Item, language: Option<u8>) -> u32 {
        let key = (form, item.subject_code, item.course_code, language);
        if let Some(s) = self.world.syllabus_index.get(&key) {
            return *s;
        }
        let n = self.world.syllabuses.len() as u32;
        self.world.syllabuses.push(Syllabus {
            id: entity_id(
                self.config.seed,
                Kind::Syllabus,
                ids::hash(&[
                    form as u64,
                    ids::hash(&item.subject_code.bytes().map(u64::from).collect::<Vec<_>>()),
                    ids::hash(
                        &item
                            .course_code
                            .unwrap_or("")
                            .bytes()
                            .map(u64::from)
                            .collect::<Vec<_>>(),
                    ),
                    language.map_or(0, |l| u64::from(l) + 1),
                ]),
            ),
            item: *item,
            language,
            form,
            created: self.created,
        });
        self.world.syllabus_index.insert(key, n);
        n
    }

    fn activity(
        &mut self,
        name: String,
        cohort: u32,
        item: usize,
        language: Option<u8>,
        groups: Vec<u32>,
        (start, end): (NaiveDate, NaiveDate),
    ) {
        let n = self.world.activities.len() as u64;
        let unit = self.world.cohorts[cohort as usize].unit;
        let plan_item = self.world.cohorts[cohort as usize].plan[item];
        let form = self.world.groups[groups[0] as usize].form;
        let syllabus = self.syllabus(form, &plan_item, language);
        let dangling_group = self
            .rng
            .random_bool(self.config.quality.dangling_references)
            .then(|| self.local_id(Kind::Group, 1_000_000_000 + n as usize, 3));
        self.world.activities.push(Activity {
            id: self.local_id(Kind::Activity, n as usize, 3),
            name,
            unit,
            cohort,
            item: item as u16,
            language,
            groups,
            dangling_group,
            teachers: Vec::new(),
            taught_by: Vec::new(),
            syllabus,
            start,
            end,
            created: self.created,
            modified: self.created,
        });
    }

    /// A new teacher with a duty at `unit`, hired before `school_start`.
    fn hire(
        &mut self,
        unit: u32,
        school_start: NaiveDate,
        used_signatures: &mut std::collections::HashSet<String>,
    ) -> u32 {
        let birth = NaiveDate::from_yo_opt(
            self.rng.random_range(1960..=1998),
            self.rng.random_range(1..=365),
        )
        .unwrap_or_default();
        let person = self.person(birth, None);
        let p = &self.world.persons[person as usize];
        let mut signature = format!(
            "{}{}",
            &p.given_name[..1],
            &p.family_name[..2].to_uppercase()
        )
        .to_uppercase();
        let mut k = 1;
        while !used_signatures.insert(signature.clone()) {
            k += 1;
            signature = format!("{}{k}", &signature[..3.min(signature.len())]);
        }
        let d = self.world.duties.len() as u32;
        let started = school_start - Duration::days(self.rng.random_range(0..3000));
        self.world.duties.push(Duty {
            id: self.local_id(Kind::Duty, d as usize, 1),
            person,
            unit,
            signature,
            start: started,
            created: self.created,
            modified: self.created,
            deleted: None,
        });
        d
    }

    /// Teachers for a unit: enough for about 17 teaching hours each, then
    /// every activity gets the least-loaded teacher free at its times (one
    /// more is hired when nobody is).
    fn staff(&mut self, unit: u32, _form: Form, first_cohort: usize) {
        let activities: Vec<u32> = (0..self.world.activities.len() as u32)
            .filter(|a| self.world.activities[*a as usize].unit == unit)
            .collect();
        let minutes: Vec<u32> = activities
            .iter()
            .map(|a| {
                let act = &self.world.activities[*a as usize];
                self.world.cohorts[act.cohort as usize].plan[act.item as usize].weekly_minutes
            })
            .collect();
        let total: u32 = minutes.iter().sum();
        let teachers = total.div_ceil(1020).max(1);
        let school_start = self.world.year.autumn.0;
        let mut duties = Vec::new();
        let mut used_signatures = std::collections::HashSet::new();
        for _ in 0..teachers {
            let d = self.hire(unit, school_start, &mut used_signatures);
            duties.push(d);
        }
        let mut load = vec![0u32; duties.len()];
        // Each teacher's weekly slots so far: nobody teaches two lessons
        // at once, unless `quality.double_booked_teachers` draws it.
        let mut taken: Vec<Vec<Slot>> = vec![Vec::new(); duties.len()];
        let mut order: Vec<usize> = (0..activities.len()).collect();
        order.shuffle(&mut self.rng);
        for i in order {
            let a = activities[i] as usize;
            if self
                .rng
                .random_bool(self.config.quality.activities_without_teachers)
            {
                continue;
            }
            let slots = self.world.slots_of(&self.world.activities[a]).to_vec();
            // Drawn from a hash: the rate leaves the other draws alone.
            let draw = crate::ids::mix(crate::ids::hash(&[self.config.seed, 79, a as u64])) as f64
                / u64::MAX as f64;
            let anyone = draw < self.config.quality.double_booked_teachers;
            let free = load
                .iter()
                .enumerate()
                .filter(|(t, _)| anyone || !overlapping(&taken[*t], &slots))
                .min_by_key(|(t, l)| (**l, *t))
                .map(|(t, _)| t);
            let t = match free {
                Some(t) => t,
                // Everyone is busy then: the school hires.
                None => {
                    let d = self.hire(unit, school_start, &mut used_signatures);
                    duties.push(d);
                    load.push(0);
                    taken.push(Vec::new());
                    duties.len() - 1
                }
            };
            load[t] += minutes[i];
            taken[t].extend_from_slice(&slots);
            let duty = duties[t];
            let activity = &mut self.world.activities[a];
            activity.teachers.push(Assignment {
                duty,
                start: None,
                end: None,
            });
            activity.taught_by.push(Taught {
                duty,
                from: activity.start,
                to: None,
            });
        }
        let _ = first_cohort;
    }
}

/// Whether two sets of weekly slots share a moment.
pub fn overlapping(a: &[Slot], b: &[Slot]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| {
            x.weekday == y.weekday && x.start < y.start + y.len && y.start < x.start + x.len
        })
    })
}

/// Place a cohort's lessons in the week: longest first, each on the day
/// with the fewest minutes so far; then each day runs from 08:10 with
/// 10-minute breaks and 40 minutes of lunch after three hours.
pub fn timetable(plan: &[Item]) -> Vec<Vec<Slot>> {
    let mut lessons: Vec<(usize, u32)> = plan
        .iter()
        .enumerate()
        .flat_map(|(i, item)| {
            plan::lesson_lengths(item.weekly_minutes)
                .into_iter()
                .map(move |l| (i, l))
        })
        .collect();
    lessons.sort_by_key(|(i, l)| (std::cmp::Reverse(*l), *i));
    let mut days: Vec<Vec<(usize, u32)>> = vec![Vec::new(); 5];
    for lesson in lessons {
        let day = (0..5)
            .min_by_key(|d| {
                (
                    days[*d].iter().map(|(_, l)| l).sum::<u32>(),
                    days[*d].iter().filter(|(i, _)| *i == lesson.0).count(),
                    *d,
                )
            })
            .unwrap_or(0);
        days[day].push(lesson);
    }
    let mut slots = vec![Vec::new(); plan.len()];
    for (weekday, lessons) in days.iter_mut().enumerate() {
        lessons.sort_by_key(|(i, l)| (*i, *l));
        let mut t: u32 = 8 * 60 + 10;
        let mut taught = 0;
        let mut lunched = false;
        for (item, len) in lessons.iter() {
            if !lunched && taught >= 180 {
                t += 40;
                lunched = true;
            }
            slots[*item].push(Slot {
                weekday: weekday as u8,
                start: t as u16,
                len: *len as u16,
            });
            t += len + 10;
            taught += len;
        }
    }
    slots
}

/// The weekday index (0 = Monday) of a date.
pub fn weekday_index(day: NaiveDate) -> u8 {
    day.weekday().num_days_from_monday() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_world_is_complete() {
        let world = World::generate(&SimConfig::default());
        assert_eq!(world.organisations.len(), 2);
        let pupils = world
            .persons
            .iter()
            .filter(|p| !p.enrolments.is_empty())
            .count();
        assert_eq!(pupils, 100);
        assert!(!world.duties.is_empty());
        assert!(
            world
                .activities
                .iter()
                .filter(|a| !a.teachers.is_empty())
                .count()
                > 0
        );
        // Every pupil is in exactly one class.
        for p in 0..world.persons.len() as u32 {
            if world.persons[p as usize].enrolments.is_empty() {
                continue;
            }
            let classes = world
                .groups
                .iter()
                .filter(|g| g.group_type == "Klass" && g.members.iter().any(|m| m.person == p))
                .count();
            assert_eq!(classes, 1);
        }
    }

    #[test]
    fn timetables_do_not_overlap_within_a_day() {
        for year in 0..=9 {
            let plan = plan::compulsory(year);
            let slots = timetable(plan);
            let mut all: Vec<Slot> = slots.iter().flatten().copied().collect();
            all.sort_by_key(|s| (s.weekday, s.start));
            for pair in all.windows(2) {
                if pair[0].weekday == pair[1].weekday {
                    assert!(pair[0].start + pair[0].len <= pair[1].start, "{pair:?}");
                }
            }
            let total: u32 = all.iter().map(|s| u32::from(s.len)).sum();
            assert_eq!(total, plan.iter().map(|i| i.weekly_minutes).sum::<u32>());
        }
    }

    #[test]
    fn a_unit_alone_is_the_same_unit() {
        let config = SimConfig {
            pupils: Some(2000),
            ..SimConfig::default()
        };
        let whole = World::generate(&config);
        for n in 1..=World::unit_count(&config) {
            let alone = World::generate_unit(&config, n).unwrap_or_else(|| panic!("unit {n}"));
            let unit = &alone.organisations[1];
            let same = whole
                .organisations
                .iter()
                .position(|o| o.id == unit.id)
                .unwrap_or(0);
            assert_eq!(whole.organisations[same].name, unit.name);
            let ids = |w: &World, u: u32| -> Vec<String> {
                w.activities
                    .iter()
                    .filter(|a| a.unit == u)
                    .map(|a| a.id.clone())
                    .collect()
            };
            assert_eq!(ids(&whole, same as u32), ids(&alone, 1));
            let pupils = |w: &World, u: u32| -> Vec<(String, Option<String>)> {
                w.persons
                    .iter()
                    .filter(|p| p.enrolments.iter().any(|e| e.unit == u))
                    .map(|p| (p.id.clone(), p.civic.clone()))
                    .collect()
            };
            assert_eq!(pupils(&whole, same as u32), pupils(&alone, 1));
        }
        assert!(World::generate_unit(&config, 0).is_none());
        assert!(World::generate_unit(&config, 5).is_none());
    }

    #[test]
    fn same_seed_same_world() {
        let a = World::generate(&SimConfig::default());
        let b = World::generate(&SimConfig::default());
        assert_eq!(format!("{:?}", a.persons), format!("{:?}", b.persons));
        let other = World::generate(&SimConfig {
            seed: 8,
            ..SimConfig::default()
        });
        assert_ne!(a.persons[0].id, other.persons[0].id);
    }
}
