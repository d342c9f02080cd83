//! Golden cases: a YAML file says what happened before (`given`), what a person does (`when`) and
//! what must follow (`then`: the events, or the rejection code). Adding a case needs no Rust.
//!
//! `given` lists commands that must all be accepted; they stand for the events they produce, which
//! keeps cases short and keeps them true when an event's resolved effects change shape.

use chrono::DateTime;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::case::{Actor, CaseState};
use crate::decide::{CommandRequest, decide, start};
use crate::load::Workflow;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    pub description: String,
    /// Start data, by path relative to the workflow folder (resolved by the caller).
    pub start: String,
    #[serde(default)]
    pub given: Vec<Step>,
    pub when: Step,
    pub then: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub command: String,
    /// `ROLE:ID` or `ROLE:ID@UNIT`.
    #[serde(rename = "as")]
    pub actor: String,
    /// RFC 3339 time of the command.
    pub at: String,
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Event types, in order.
    #[serde(default)]
    pub events: Vec<String>,
    /// Each listed effect must appear among the events' effects (a subset match).
    #[serde(default)]
    pub effects: Vec<Value>,
    #[serde(default)]
    pub rejection: Option<String>,
    /// The stage after the `when` step.
    #[serde(default)]
    pub stage: Option<String>,
    /// Entity states after the `when` step: `collection/key: state`.
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, String>,
}

fn request(step: &Step, n: u128) -> Result<CommandRequest, String> {
    Ok(CommandRequest {
        id: Uuid::from_u128(n),
        name: step.command.clone(),
        input: step.input.clone(),
        actor: Actor::parse(&step.actor)
            .ok_or_else(|| format!("actor {:?} is not ROLE:ID", step.actor))?,
        at: DateTime::parse_from_rfc3339(&step.at)
            .map_err(|e| format!("time {:?}: {e}", step.at))?,
    })
}

/// Runs one golden case against `workflow` with the given start data; `Err` says what differed.
pub fn run(workflow: &Workflow, case: &GoldenCase, start_data: &Value) -> Result<(), String> {
    let mut state = CaseState {
        id: "golden".to_owned(),
        ..CaseState::default()
    };
    let first = CommandRequest {
        id: Uuid::from_u128(1),
        name: "start".to_owned(),
        input: start_data.clone(),
        actor: Actor::parse("secretariat:golden").ok_or("actor")?,
        at: DateTime::parse_from_rfc3339("2024-03-20T08:00:00+07:00").map_err(|e| e.to_string())?,
    };
    let event = start(workflow, &state, "golden", &first).map_err(|r| format!("start: {r}"))?;
    state.evolve(&event.data, 1);
    for (i, step) in case.given.iter().enumerate() {
        let req = request(step, 100 + i as u128)?;
        let events = decide(workflow, &state, &req)
            .map_err(|r| format!("given step {} ({}): {r}", i + 1, step.command))?;
        for e in &events {
            state.evolve(&e.data, state.stream_version + 1);
        }
    }
    let req = request(&case.when, 10_000)?;
    match (decide(workflow, &state, &req), &case.then.rejection) {
        (Err(rejection), Some(code)) if &rejection.code == code => Ok(()),
        (Err(rejection), Some(code)) => Err(format!(
            "expected rejection {code}, got {}: {rejection}",
            rejection.code
        )),
        (Err(rejection), None) => Err(format!("expected events, got rejection: {rejection}")),
        (Ok(events), Some(code)) => Err(format!(
            "expected rejection {code}, got events {:?}",
            events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
        )),
        (Ok(events), None) => {
            let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
            if types != case.then.events {
                return Err(format!(
                    "expected events {:?}, got {types:?}",
                    case.then.events
                ));
            }
            let effects: Vec<Value> = events
                .iter()
                .flat_map(|e| e.data.effects.iter())
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect();
            for wanted in &case.then.effects {
                if !effects.iter().any(|got| contains(got, wanted)) {
                    return Err(format!(
                        "no effect matches {wanted}; effects were {}",
                        Value::Array(effects.clone())
                    ));
                }
            }
            for e in &events {
                state.evolve(&e.data, state.stream_version + 1);
            }
            if let Some(stage) = &case.then.stage
                && &state.stage != stage
            {
                return Err(format!("expected stage {stage}, got {}", state.stage));
            }
            for (path, wanted) in &case.then.states {
                let (collection, key) = path
                    .split_once('/')
                    .ok_or_else(|| format!("state key {path:?} is not collection/key"))?;
                let got = state.entity(collection, key).map(|e| e.state.as_str());
                if got != Some(wanted.as_str()) {
                    return Err(format!("expected {path} in state {wanted}, got {got:?}"));
                }
            }
            Ok(())
        }
    }
}

/// Whether `got` has every field of `wanted` with the same value (recursively for objects).
fn contains(got: &Value, wanted: &Value) -> bool {
    match (got, wanted) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        (g, w) => g == w,
    }
}
