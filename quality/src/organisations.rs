//! Which school units belong to an organiser (huvudman), from the vendors'
//! organisation trees as the organisations change topic last showed them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::message::Message;
use skolflode_kafka::KafkaConfig;
use skolflode_schemas::catalogue;
use skolflode_schemas::entities::Organisation;
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::ChangeEvent;

use crate::QualityError;

/// An organisation as last shown, per connection and vendor id.
pub type Organisations = BTreeMap<(String, String), Organisation>;

/// A school unit of the organiser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Empty when the vendor shows none.
    pub code: String,
    pub name: String,
    /// The school form the unit's types name (`GR`, `GY`, …), `FKLASS`
    /// only when it is the unit's only type; empty when none is given.
    pub form: String,
}

/// An organiser and its units, in every connection that shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organiser {
    pub name: String,
    /// Its vendor ids, per connection.
    pub ids: BTreeMap<String, String>,
    /// Its school units, by connection and vendor id.
    pub units: BTreeMap<(String, String), Unit>,
}

impl Organiser {
    /// The unit a finding is about: by its school-unit code, or, for a
    /// finding about the unit itself, by its id.
    pub fn unit_of(
        &self,
        connection: &str,
        code: &str,
        organisation_id: Option<&str>,
    ) -> Option<&Unit> {
        if let Some(id) = organisation_id {
            if let Some(u) = self.units.get(&(connection.to_owned(), id.to_owned())) {
                return Some(u);
            }
        }
        if code.is_empty() {
            return None;
        }
        self.units
            .iter()
            .find(|((c, _), u)| c == connection && u.code == code)
            .map(|(_, u)| u)
    }

    /// The school-unit codes of its units (those that have one).
    pub fn codes(&self) -> BTreeSet<&str> {
        self.units
            .values()
            .filter(|u| !u.code.is_empty())
            .map(|u| u.code.as_str())
            .collect()
    }
}

/// The report's consumer group. It commits nothing: every report reads
/// its topics from the beginning.
pub const GROUP: &str = "skolflode-quality-report";

/// Read the organisations change topic to its end. Blocking.
pub fn read(kafka: &KafkaConfig) -> Result<Organisations, QualityError> {
    let topic = catalogue::change_topic::<Organisation>().ok_or_else(|| {
        QualityError::Config("no organisations change topic in the catalogue".into())
    })?;
    let decoder = catalogue::decoder::<ChangeEvent<Organisation>>(Organisation::CHANGE_SUBJECT)?;
    let client = kafka.consumer(GROUP)?;
    let mut out = Organisations::new();
    skolflode_kafka::read_to_end::<QualityError>(
        client,
        topic.name,
        Duration::from_secs(120),
        |m| {
            let Some(Ok(change)) = m.payload().map(|p| decoder.decode(p)) else {
                return Ok(());
            };
            let connection = change.source.connection.clone();
            match change.after {
                Some(after) => {
                    out.insert((connection, after.id.clone()), after);
                }
                None => {
                    if let Some(before) = change.before {
                        out.remove(&(connection, before.id));
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// The organiser `wanted` names (its organisation number, code, vendor id
/// or display name; case does not matter), with every school unit below
/// it. Several connections may show the same organiser; `connections`, when
/// not empty, keeps only those.
pub fn organiser(
    all: &Organisations,
    wanted: &str,
    connections: &[String],
) -> Result<Organiser, QualityError> {
    let wanted_lower = wanted.to_lowercase();
    let matches = |o: &Organisation| {
        o.id == wanted
            || o.organisation_number.as_deref() == Some(wanted)
            || o.organisation_code.as_deref() == Some(wanted)
            || o.display_name.to_lowercase() == wanted_lower
    };
    let ids: BTreeMap<String, String> = all
        .iter()
        .filter(|((connection, _), o)| {
            o.organisation_type == "Huvudman"
                && matches(o)
                && (connections.is_empty() || connections.contains(connection))
        })
        .map(|((connection, id), _)| (connection.clone(), id.clone()))
        .collect();
    let Some(name) = ids
        .iter()
        .next()
        .and_then(|(c, id)| all.get(&(c.clone(), id.clone())))
        .map(|o| o.display_name.clone())
    else {
        return Err(QualityError::UnknownOrganiser(wanted.to_owned()));
    };
    let mut units = BTreeMap::new();
    for ((connection, id), o) in all {
        if o.organisation_type != "Skolenhet" {
            continue;
        }
        let Some(top) = ids.get(connection) else {
            continue;
        };
        // Up the tree, at most a few levels (a cycle in vendor data ends it).
        let mut parent = o.parent_organisation.as_ref().map(|p| p.id.clone());
        for _ in 0..8 {
            match parent {
                Some(p) if &p == top => {
                    units.insert((connection.clone(), id.clone()), unit(o));
                    break;
                }
                Some(p) => {
                    parent = all
                        .get(&(connection.clone(), p))
                        .and_then(|o| o.parent_organisation.as_ref().map(|r| r.id.clone()));
                }
                None => break,
            }
        }
    }
    Ok(Organiser { name, ids, units })
}

fn unit(o: &Organisation) -> Unit {
    let form = o
        .school_types
        .iter()
        .find(|t| t.as_str() != "FKLASS")
        .or_else(|| o.school_types.first())
        .cloned()
        .unwrap_or_default();
    Unit {
        code: o.school_unit_code.clone().unwrap_or_default(),
        name: o.display_name.clone(),
        form,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skolflode_schemas::entities::ObjectReference;

    fn org(id: &str, kind: &str, parent: Option<&str>, code: Option<&str>) -> Organisation {
        Organisation {
            id: id.into(),
            display_name: format!("{id} name"),
            organisation_type: kind.into(),
            parent_organisation: parent.map(ObjectReference::new),
            school_unit_code: code.map(str::to_owned),
            school_types: vec!["FKLASS".into(), "GR".into()],
            ..Organisation::default()
        }
    }

    #[test]
    fn the_units_below_an_organiser_are_its_own() {
        let mut all = Organisations::new();
        for o in [
            org("kommun", "Huvudman", None, None),
            org("skola", "Skola", Some("kommun"), None),
            org("u1", "Skolenhet", Some("skola"), Some("11111111")),
            org("u2", "Skolenhet", Some("kommun"), None),
            org("other", "Huvudman", None, None),
            org("u3", "Skolenhet", Some("other"), Some("33333333")),
        ] {
            all.insert(("c".into(), o.id.clone()), o);
        }
        let o = organiser(&all, "KOMMUN NAME", &[]).unwrap_or_else(|e| panic!("{e}"));
        let units: Vec<&str> = o.units.keys().map(|(_, id)| id.as_str()).collect();
        assert_eq!(units, vec!["u1", "u2"]);
        assert_eq!(o.units[&("c".into(), "u1".into())].form, "GR");
        assert_eq!(
            o.unit_of("c", "11111111", None).map(|u| u.name.as_str()),
            Some("u1 name")
        );
        assert_eq!(
            o.unit_of("c", "", Some("u2")).map(|u| u.name.as_str()),
            Some("u2 name")
        );
        assert!(o.unit_of("c", "33333333", None).is_none());
        assert!(organiser(&all, "nobody", &[]).is_err());
        assert!(organiser(&all, "kommun", &["another".into()]).is_err());
    }
}
