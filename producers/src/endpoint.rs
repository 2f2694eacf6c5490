//! The SS 12000 endpoints the producer reads: one closed set, so that an
//! unknown name is refused where it is read (configuration, state records)
//! instead of falling through to some entity type.

use serde::{Deserialize, Deserializer};

/// An SS 12000 entity endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Organisations,
    Persons,
    Duties,
    Groups,
    Syllabuses,
    Activities,
    CalendarEvents,
    Attendances,
}

impl Endpoint {
    /// Every endpoint, in the order a poll reads them: what a later
    /// endpoint refers to is read first (activities resolve teachers
    /// through duties).
    pub const ALL: [Endpoint; 8] = [
        Self::Organisations,
        Self::Persons,
        Self::Duties,
        Self::Groups,
        Self::Syllabuses,
        Self::Activities,
        Self::CalendarEvents,
        Self::Attendances,
    ];

    /// The path segment, e.g. `calendarEvents`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Organisations => "organisations",
            Self::Persons => "persons",
            Self::Duties => "duties",
            Self::Groups => "groups",
            Self::Syllabuses => "syllabuses",
            Self::Activities => "activities",
            Self::CalendarEvents => "calendarEvents",
            Self::Attendances => "attendances",
        }
    }

    /// The singular type name vendors use in flat deletion lists, e.g.
    /// `CalendarEvent`.
    pub const fn type_name(self) -> &'static str {
        match self {
            Self::Organisations => "Organisation",
            Self::Persons => "Person",
            Self::Duties => "Duty",
            Self::Groups => "Group",
            Self::Syllabuses => "Syllabus",
            Self::Activities => "Activity",
            Self::CalendarEvents => "CalendarEvent",
            Self::Attendances => "Attendance",
        }
    }

    /// The endpoint of a path segment.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The endpoint of a name as deletion feeds write it: the path segment
    /// (`persons`) or the type (`Person`), in any case; and `activitites`,
    /// as the specification's `deletedEntities` schema spells it.
    pub fn from_any_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("activitites") {
            return Some(Self::Activities);
        }
        Self::ALL.into_iter().find(|e| {
            e.name().eq_ignore_ascii_case(name) || e.type_name().eq_ignore_ascii_case(name)
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|e| e.name()).collect();
            serde::de::Error::custom(format!(
                "unknown endpoint {name:?} (known: {})",
                known.join(", ")
            ))
        })
    }
}

/// Evaluate `$body` with the type name `$E` bound to the entity type of an
/// [`Endpoint`].
#[macro_export]
macro_rules! with_entity {
    ($endpoint:expr, $E:ident => $body:expr) => {{
        use $crate::__entities as __e;
        use $crate::endpoint::Endpoint as __Ep;
        match $endpoint {
            __Ep::Organisations => {
                type $E = __e::Organisation;
                $body
            }
            __Ep::Persons => {
                type $E = __e::Person;
                $body
            }
            __Ep::Duties => {
                type $E = __e::Duty;
                $body
            }
            __Ep::Groups => {
                type $E = __e::Group;
                $body
            }
            __Ep::Syllabuses => {
                type $E = __e::Syllabus;
                $body
            }
            __Ep::Activities => {
                type $E = __e::Activity;
                $body
            }
            __Ep::CalendarEvents => {
                type $E = __e::CalendarEvent;
                $body
            }
            __Ep::Attendances => {
                type $E = __e::Attendance;
                $body
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
            assert_eq!(Endpoint::from_any_name(e.type_name()), Some(e));
        }
        assert_eq!(Endpoint::from_name("attendance"), None);
        assert_eq!(
            Endpoint::from_any_name("CALENDAREVENTS"),
            Some(Endpoint::CalendarEvents)
        );
        let parsed: Result<Vec<Endpoint>, _> = serde_json::from_str(r#"["persons", "rooms"]"#);
        assert!(parsed.is_err_and(|e| e.to_string().contains("rooms")));
    }
}
