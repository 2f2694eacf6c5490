//! The Skola24-style timetable vendor: its own JSON, not SS 12000. Lessons
//! per unit and ISO week name their subject by designation, their teachers
//! by **signature** and their groups by **name**, and carry the lesson's
//! absences; students have the vendor's own ids and a 10-digit civic number
//! with a separator. Linking this to the administration vendor's duties,
//! groups and persons is the producer's work.

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::calendar::iso_monday;
use crate::ids::{entity_id, Kind};
use crate::sim::Simulation;

impl Simulation {
    /// The vendor's id of a unit.
    pub fn skola24_unit_guid(&self, unit: u32) -> String {
        entity_id(self.world.seed, Kind::Skola24Unit, u64::from(unit))
    }

    fn skola24_unit(&self, guid: &str) -> Option<u32> {
        (0..self.world.organisations.len() as u32)
            .find(|u| self.world.is_skola24(*u) && self.skola24_unit_guid(*u) == guid)
    }

    /// `units`: the school units whose timetable this vendor holds.
    pub fn skola24_units(&self) -> Value {
        let units: Vec<Value> = (0..self.world.organisations.len() as u32)
            .filter(|u| self.world.is_skola24(*u))
            .map(|u| {
                let o = &self.world.organisations[u as usize];
                json!({
                    "unitGuid": self.skola24_unit_guid(u),
                    "unitId": o.name,
                    "schoolUnitCode": o.school_unit_code,
                })
            })
            .collect();
        json!({ "data": { "units": units }, "validation": [], "exception": null })
    }

    /// `students`: everyone enrolled at the unit this school year.
    pub fn skola24_students(&self, unit_guid: &str) -> Option<Value> {
        let unit = self.skola24_unit(unit_guid)?;
        let students: Vec<Value> = self
            .world
            .persons
            .iter()
            .enumerate()
            .filter(|(_, p)| p.enrolments.iter().any(|e| e.unit == unit))
            .map(|(i, p)| {
                json!({
                    "studentGuid": entity_id(self.world.seed, Kind::Skola24Student, i as u64),
                    "personalIdentityNumber": p.civic.as_deref().map(ten_digits),
                    "firstName": p.given_name,
                    "lastName": p.family_name,
                })
            })
            .collect();
        Some(json!({ "data": { "students": students }, "validation": [], "exception": null }))
    }

    /// `lessons`: one unit's lessons of one ISO week, as published so far.
    pub fn skola24_lessons(&self, unit_guid: &str, year: i32, week: u32) -> Option<Value> {
        let unit = self.skola24_unit(unit_guid)?;
        let monday = iso_monday(year, week);
        if monday == NaiveDate::MIN {
            return None;
        }
        let sunday = monday + chrono::Duration::days(6);
        let w = &self.world;
        let first = self.lessons.partition_point(|l| l.date < monday);
        let lessons: Vec<Value> = self.lessons[first..]
            .iter()
            .enumerate()
            .take_while(|(_, l)| l.date <= sunday)
            .filter(|(_, l)| w.activities[l.activity as usize].unit == unit)
            .map(|(offset, l)| {
                let n = first + offset;
                let a = &w.activities[l.activity as usize];
                let item = w.item_of(a);
                // The timetable shows the teachers the activity has now (or,
                // with dated assignments, had on the day).
                let teachers: Vec<&str> = a
                    .teachers
                    .iter()
                    .filter(|t| t.start.is_none_or(|s| s <= l.date) && t.end.is_none_or(|e| l.date <= e))
                    .map(|t| w.duties[t.duty as usize].signature.as_str())
                    .collect();
                let groups: Vec<&str> = a.groups.iter().map(|g| w.groups[*g as usize].name.as_str()).collect();
                let subject = match a.language {
                    Some(lang) => format!("M2 {}", crate::plan::LANGUAGES[lang as usize].0),
                    None => item.designation.to_owned(),
                };
                let records = l.records.map(|(from, to)| &self.records[from as usize..to as usize]);
                let absences: Vec<Value> = records
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| r.valid > 0 || r.invalid > 0)
                    .map(|r| {
                        json!({
                            "studentGuid": entity_id(w.seed, Kind::Skola24Student, u64::from(r.pupil)),
                            "validAbsenceMinutes": r.valid,
                            "invalidAbsenceMinutes": r.invalid,
                        })
                    })
                    .collect();
                json!({
                    "lessonGuid": entity_id(w.seed, Kind::Skola24Lesson, n as u64),
                    "date": l.date.format("%Y-%m-%d").to_string(),
                    "timeStart": l.start_local().format("%H:%M:%S").to_string(),
                    "timeEnd": l.end_local().format("%H:%M:%S").to_string(),
                    "subject": subject,
                    "courseCode": item.course_code,
                    "teachers": teachers,
                    "groups": groups,
                    "room": format!("{}{}", ["A", "B", "C"][(a.cohort % 3) as usize], 10 + a.cohort % 20),
                    "cancelled": l.cancelled,
                    "absenceReported": l.records.is_some(),
                    "absences": absences,
                })
            })
            .collect();
        Some(json!({ "data": { "lessons": lessons }, "validation": [], "exception": null }))
    }
}

/// `YYYYMMDDNNNC` as Skola24 shows it: `YYMMDD-NNNC`.
fn ten_digits(civic: &str) -> String {
    match (civic.get(2..8), civic.get(8..)) {
        (Some(date), Some(rest)) if civic.len() == 12 => format!("{date}-{rest}"),
        _ => civic.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civic_numbers_in_the_ten_digit_form() {
        assert_eq!(ten_digits("201203041234"), "120304-1234");
        assert_eq!(ten_digits("bad"), "bad");
    }
}
