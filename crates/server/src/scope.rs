//! What a unit token may see of a case. A unit belongs to a case when its code is the key of an
//! entity in a *unit collection*: a collection that some command targets with
//! `scoped_to_unit: true` (in the thematic supervision, `units`). Those keys are the case's unit
//! codes. An item (an entity, an array item of the case data, an event, a document's source
//! event) that names another unit's code and not the token's own unit is hidden; items that name
//! no unit code are shared by all. Nothing here names a collection or field of a particular
//! workflow: the rule reads the definition's `scoped_to_unit` and the codes in the data.

use std::collections::BTreeSet;

use giamsat_engine::{CaseState, Warning, Workflow};
use serde_json::{Map, Value};

use crate::auth::Principal;

/// The collections whose keys are unit codes.
pub fn unit_collections(workflow: &Workflow) -> BTreeSet<String> {
    workflow
        .definition
        .commands
        .iter()
        .filter_map(|c| c.target.as_ref())
        .filter(|t| t.scoped_to_unit)
        .map(|t| t.collection.value.clone())
        .collect()
}

/// Which unit codes a value names.
#[derive(Debug, Default, Clone, Copy)]
struct Mentions {
    mine: bool,
    others: bool,
}

impl Mentions {
    fn visible(self) -> bool {
        self.mine || !self.others
    }
}

/// A caller's view of one case.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The token's unit; `None`: everything is visible.
    unit: Option<String>,
    /// The case's unit codes.
    codes: BTreeSet<String>,
}

impl Scope {
    /// No restriction (every role but unit).
    pub fn everything() -> Scope {
        Scope::default()
    }

    /// The view of `principal` on the case `state` of `workflow`.
    pub fn new(principal: &Principal, workflow: &Workflow, state: &CaseState) -> Scope {
        match principal.unit() {
            None => Scope::everything(),
            Some(unit) => Scope::for_unit(unit, workflow, state),
        }
    }

    pub fn for_unit(unit: &str, workflow: &Workflow, state: &CaseState) -> Scope {
        let codes = unit_collections(workflow)
            .iter()
            .filter_map(|c| state.entities.get(c))
            .flat_map(|entities| entities.keys().cloned())
            .collect();
        Scope {
            unit: Some(unit.to_owned()),
            codes,
        }
    }

    pub fn is_restricted(&self) -> bool {
        self.unit.is_some()
    }

    /// Whether the caller may see the case at all: its unit is one of the case's units.
    pub fn is_member(&self) -> bool {
        match &self.unit {
            None => true,
            Some(unit) => self.codes.contains(unit),
        }
    }

    /// The unit of a restricted scope.
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }

    fn note(&self, text: &str, m: &mut Mentions) {
        if !self.codes.contains(text) {
            return;
        }
        if self.unit.as_deref() == Some(text) {
            m.mine = true;
        } else {
            m.others = true;
        }
    }

    /// Codes named by a value itself or by its top-level members (strings, or arrays of
    /// strings).
    fn note_value(&self, value: &Value, m: &mut Mentions) {
        match value {
            Value::String(s) => self.note(s, m),
            Value::Object(map) => {
                for v in map.values() {
                    match v {
                        Value::String(s) => self.note(s, m),
                        Value::Array(items) => {
                            for item in items {
                                if let Value::String(s) = item {
                                    self.note(s, m);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn mentions(&self, value: &Value) -> Mentions {
        let mut m = Mentions::default();
        self.note_value(value, &mut m);
        m
    }

    /// Whether an entity (its key and data) is visible.
    pub fn entity_visible(&self, key: &str, data: &Value) -> bool {
        if !self.is_restricted() {
            return true;
        }
        let mut m = Mentions::default();
        self.note(key, &mut m);
        self.note_value(data, &mut m);
        m.visible()
    }

    /// A copy of `value` without the parts that belong to other units: array items that name
    /// another unit's code (and not the caller's), and object members keyed by another unit's
    /// code; recursively.
    pub fn redact(&self, value: &Value) -> Value {
        if !self.is_restricted() {
            return value.clone();
        }
        match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .filter(|item| self.mentions(item).visible())
                    .map(|item| self.redact(item))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| {
                        let mut m = Mentions::default();
                        self.note(k, &mut m);
                        m.visible()
                    })
                    .map(|(k, v)| (k.clone(), self.redact(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The case's entities the caller may see, as JSON (collection → key → entity).
    pub fn entities(&self, state: &CaseState) -> Value {
        let mut out = Map::new();
        for (collection, entities) in &state.entities {
            let mut visible = Map::new();
            for (key, entity) in entities {
                if self.entity_visible(key, &entity.data) {
                    let mut value = serde_json::to_value(entity).unwrap_or(Value::Null);
                    if let Some(data) = value.get_mut("data") {
                        *data = self.redact(data);
                    }
                    visible.insert(key.clone(), value);
                }
            }
            out.insert(collection.clone(), Value::Object(visible));
        }
        Value::Object(out)
    }

    /// Whether a warning about an entity (`collection/key`) is visible.
    pub fn warning_visible(&self, state: &CaseState, warning: &Warning) -> bool {
        let Some(entity) = &warning.entity else {
            return true;
        };
        let Some((collection, key)) = entity.split_once('/') else {
            return true;
        };
        match state.entity(collection, key) {
            Some(e) => self.entity_visible(key, &e.data),
            None => self.entity_visible(key, &Value::Null),
        }
    }

    /// Which codes a case event's data names: its actor's unit, its input, the entities its
    /// effects create or change, its timer's entity; and whether it changes the case itself
    /// (stage or case data).
    fn event_mentions(&self, data: &Value) -> (Mentions, bool) {
        let mut m = Mentions::default();
        if let Some(unit) = data.pointer("/actor/unit").and_then(Value::as_str) {
            self.note(unit, &mut m);
        }
        if let Some(input) = data.get("input") {
            self.note_value(input, &mut m);
        }
        if let Some(key) = data.pointer("/timer/key").and_then(Value::as_str) {
            self.note(key, &mut m);
        }
        let mut case_level = false;
        for effect in data
            .get("effects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match effect.get("op").and_then(Value::as_str) {
                Some("create") | Some("entity") => {
                    if let Some(key) = effect.get("key").and_then(Value::as_str) {
                        self.note(key, &mut m);
                    }
                    for field in ["data", "set"] {
                        if let Some(v) = effect.get(field) {
                            self.note_value(v, &mut m);
                        }
                    }
                }
                _ => case_level = true,
            }
        }
        (m, case_level)
    }

    /// Whether a document rendered from the case event with this data is visible: the event
    /// names no other unit, or names the caller's.
    pub fn document_visible(&self, event_data: &Value) -> bool {
        !self.is_restricted() || self.event_mentions(event_data).0.visible()
    }

    /// A case event's data as the caller may see it: `None` when it concerns other units only;
    /// otherwise its data with other units' parts removed (the input when it names another
    /// unit, the effects on other units' entities, another unit's actor and timer), and
    /// whether anything was removed. An event that changed the case's stage or data stays
    /// visible (redacted) even when it acted on another unit, so the case's course can be
    /// followed.
    pub fn event_data(&self, data: &Value) -> Option<(Value, bool)> {
        if !self.is_restricted() {
            return Some((data.clone(), false));
        }
        let (m, case_level) = self.event_mentions(data);
        if !m.visible() && !case_level {
            return None;
        }
        let mut out = data.clone();
        let Value::Object(map) = &mut out else {
            return Some((out, false));
        };
        let mut redacted = false;
        if let Some(input) = map.get_mut("input") {
            if self.mentions(input).visible() {
                let clean = self.redact(input);
                redacted |= clean != *input;
                *input = clean;
            } else {
                *input = Value::Object(Map::new());
                redacted = true;
            }
        }
        if let Some(Value::Array(effects)) = map.get_mut("effects") {
            let before = effects.len();
            effects.retain(|effect| match effect.get("op").and_then(Value::as_str) {
                Some("create") | Some("entity") => {
                    let key = effect.get("key").and_then(Value::as_str).unwrap_or("");
                    let mut em = Mentions::default();
                    self.note(key, &mut em);
                    for field in ["data", "set"] {
                        if let Some(v) = effect.get(field) {
                            self.note_value(v, &mut em);
                        }
                    }
                    em.visible()
                }
                _ => true,
            });
            redacted |= effects.len() != before;
            for effect in effects.iter_mut() {
                if let Some(v) = effect.get_mut("data") {
                    *v = self.redact(v);
                }
            }
        }
        let actor_unit = map
            .get("actor")
            .and_then(|a| a.get("unit"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(unit) = actor_unit {
            let mut am = Mentions::default();
            self.note(&unit, &mut am);
            if !am.visible()
                && let Some(Value::Object(actor)) = map.get_mut("actor")
            {
                actor.remove("id");
                actor.remove("unit");
                redacted = true;
            }
        }
        let timer_key = map
            .get("timer")
            .and_then(|t| t.get("key"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(key) = timer_key {
            let mut tm = Mentions::default();
            self.note(&key, &mut tm);
            if !tm.visible() {
                map.remove("timer");
                redacted = true;
            }
        }
        Some((out, redacted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope(unit: &str) -> Scope {
        Scope {
            unit: Some(unit.to_owned()),
            codes: ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn array_items_of_other_units_are_removed() {
        let data = json!({
            "topic": "x",
            "units": [{"code": "a", "name": "A"}, {"code": "b", "name": "B"}],
            "visits": [{"unit": "b", "date": "2024-04-25"}, {"unit": "a"}],
            "members": [{"name": "Trọng"}],
            "per_unit": {"a": 1, "b": 2},
        });
        let out = scope("a").redact(&data);
        assert_eq!(
            out,
            json!({
                "topic": "x",
                "units": [{"code": "a", "name": "A"}],
                "visits": [{"unit": "a"}],
                "members": [{"name": "Trọng"}],
                "per_unit": {"a": 1},
            })
        );
        assert_eq!(Scope::everything().redact(&data), data);
    }

    #[test]
    fn events_of_other_units_are_hidden_unless_they_move_the_case() {
        let s = scope("a");
        let report_b = json!({
            "command": "receive_report", "actor": {"role": "unit", "id": "x", "unit": "b"},
            "input": {"unit": "b"},
            "effects": [{"op": "entity", "collection": "units", "key": "b", "to": "received"}],
        });
        assert!(s.event_data(&report_b).is_none());
        assert!(!s.document_visible(&report_b));
        let last_visit_b = json!({
            "command": "record_visit", "actor": {"role": "delegation", "id": "t"},
            "input": {"unit": "b", "minutes_summary": "..."},
            "effects": [
                {"op": "entity", "collection": "visits", "key": "b", "to": "held"},
                {"op": "stage", "from": "visits", "to": "findings"},
            ],
        });
        let (data, redacted) = s.event_data(&last_visit_b).expect("visible");
        assert!(redacted);
        assert_eq!(data["input"], json!({}));
        assert_eq!(
            data["effects"],
            json!([{"op": "stage", "from": "visits", "to": "findings"}])
        );
        assert!(!s.document_visible(&last_visit_b));
        let notice = json!({
            "command": "issue_notice", "actor": {"role": "secretariat", "id": "h"},
            "input": {"document": "thong-bao-lich"},
            "effects": [{"op": "create", "collection": "documents", "key": "thong-bao-lich", "data": {}}],
        });
        assert_eq!(s.event_data(&notice), Some((notice.clone(), false)));
        assert!(s.document_visible(&notice));
    }
}
