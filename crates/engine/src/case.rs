//! A case's state and its events. Events record the effects a command had, resolved to concrete
//! values, so `evolve` applies them without the definition: replay is the same code as live
//! application, and an old event means the same thing whatever the definition says today.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::timers::TimerRecord;

/// Who runs a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub role: String,
    /// For the `unit` role: the unit the actor belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Actor {
    /// Parses `ROLE:ID` or `ROLE:ID@UNIT`.
    pub fn parse(text: &str) -> Option<Actor> {
        let (role, rest) = text.split_once(':')?;
        let (id, unit) = match rest.split_once('@') {
            Some((id, unit)) => (id, Some(unit.to_owned())),
            None => (rest, None),
        };
        (!role.is_empty() && !id.is_empty()).then(|| Actor {
            id: id.to_owned(),
            role: role.to_owned(),
            unit,
        })
    }
}

/// The definition a case runs on, recorded in its first event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub workflow: String,
    pub version: u32,
    pub hash: String,
}

/// One resolved change, as recorded in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AppliedEffect {
    Stage {
        from: String,
        to: String,
    },
    Create {
        collection: String,
        key: String,
        state: String,
        data: Value,
    },
    Entity {
        collection: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        set: Map<String, Value>,
    },
    Case {
        set: Map<String, Value>,
    },
}

/// The data of every case event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEventData {
    /// The command that produced the event (`start` for the first event).
    pub command: String,
    /// The time of the command (RFC 3339, in the workflow's zone).
    pub at: String,
    pub actor: Actor,
    /// The command's input after NFC normalization (the start data for the first event).
    pub input: Value,
    pub effects: Vec<AppliedEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// Set when a timer issued the command (or when the event records a timer that was rejected
    /// or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<TimerRecord>,
}

/// An event the engine decided, ready to append.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseEvent {
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub data: CaseEventData,
}

/// An entity inside a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub state: String,
    pub data: Value,
    /// When the entity last changed state or data.
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageChange {
    pub stage: String,
    pub at: String,
    pub command: String,
}

/// What a case is now: the fold of its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CaseState {
    pub id: String,
    pub workflow: String,
    pub version: u32,
    pub definition_hash: String,
    pub stage: String,
    /// The start data, with later `set_case` effects applied.
    pub data: Value,
    pub entities: BTreeMap<String, BTreeMap<String, Entity>>,
    pub stages: Vec<StageChange>,
    /// The stream version of the last event applied (0: not started).
    pub stream_version: u64,
    pub started_at: String,
    pub updated_at: String,
    /// Timer instances that came due and were acted on, by instance id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<String, TimerRecord>,
}

impl CaseState {
    pub fn is_started(&self) -> bool {
        self.stream_version > 0
    }

    pub fn entity(&self, collection: &str, key: &str) -> Option<&Entity> {
        self.entities.get(collection)?.get(key)
    }

    /// Applies one event. Unknown effect kinds cannot occur: the data is typed.
    pub fn evolve(&mut self, data: &CaseEventData, stream_version: u64) {
        if let Some(pin) = &data.pin {
            self.workflow.clone_from(&pin.workflow);
            self.version = pin.version;
            self.definition_hash.clone_from(&pin.hash);
            self.data = data.input.clone();
            self.started_at.clone_from(&data.at);
        }
        for effect in &data.effects {
            self.apply(effect, data);
        }
        if let Some(record) = &data.timer {
            self.timers.insert(record.instance.clone(), record.clone());
        }
        self.stream_version = stream_version;
        self.updated_at.clone_from(&data.at);
    }

    pub(crate) fn apply(&mut self, effect: &AppliedEffect, data: &CaseEventData) {
        match effect {
            AppliedEffect::Stage { to, .. } => {
                self.stage.clone_from(to);
                self.stages.push(StageChange {
                    stage: to.clone(),
                    at: data.at.clone(),
                    command: data.command.clone(),
                });
            }
            AppliedEffect::Create {
                collection,
                key,
                state,
                data: entity,
            } => {
                self.entities.entry(collection.clone()).or_default().insert(
                    key.clone(),
                    Entity {
                        state: state.clone(),
                        data: entity.clone(),
                        updated_at: data.at.clone(),
                    },
                );
            }
            AppliedEffect::Entity {
                collection,
                key,
                to,
                set,
                ..
            } => {
                if let Some(entity) = self
                    .entities
                    .get_mut(collection)
                    .and_then(|c| c.get_mut(key))
                {
                    if let Some(to) = to {
                        entity.state.clone_from(to);
                    }
                    merge(&mut entity.data, set);
                    entity.updated_at.clone_from(&data.at);
                }
            }
            AppliedEffect::Case { set } => merge(&mut self.data, set),
        }
    }
}

fn merge(target: &mut Value, set: &Map<String, Value>) {
    if set.is_empty() {
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in set {
            map.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_parse() {
        let a = Actor::parse("unit:ubnd-xa@quai-to").expect("actor");
        assert_eq!(
            (a.role.as_str(), a.id.as_str(), a.unit.as_deref()),
            ("unit", "ubnd-xa", Some("quai-to"))
        );
        assert_eq!(
            Actor::parse("secretariat:huyen").map(|a| a.unit),
            Some(None)
        );
        assert!(Actor::parse("huyen").is_none());
        assert!(Actor::parse(":x").is_none());
    }
}
