//! `start` and `decide`: pure functions from a definition, a case's state and a command to events
//! or a rejection. No clock, no I/O, no randomness: the time and the command id are inputs, and
//! event ids are derived from the command id, so a retried command yields the same events.

use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::Serialize;
use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::case::{Actor, AppliedEffect, CaseEvent, CaseEventData, CaseState, Pin};
use crate::context::Context;
use crate::definition::{
    CompareOp, Condition, Effect, EntitySource, EntityStates, Message, Operand,
};
use crate::load::Workflow;

/// Role that may run every command.
pub const ADMIN_ROLE: &str = "admin";

/// A command as a caller gives it.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// Identifies this command; event ids derive from it, so retrying it is idempotent.
    pub id: Uuid,
    pub name: String,
    pub input: Value,
    pub actor: Actor,
    pub at: DateTime<FixedOffset>,
}

/// Why a command was refused. The code is stable; the messages are for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub code: String,
    pub command: String,
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_state: Option<String>,
    pub message_en: String,
    pub message_vi: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command {} rejected ({}) in stage {}",
            self.command,
            self.code,
            if self.stage.is_empty() {
                "-"
            } else {
                &self.stage
            }
        )?;
        if let Some(entity) = &self.entity {
            write!(f, ", entity {entity}")?;
            if let Some(state) = &self.entity_state {
                write!(f, " in state {state}")?;
            }
        }
        write!(f, ": {} / {}", self.message_en, self.message_vi)
    }
}

impl std::error::Error for Rejection {}

struct Refuse<'a> {
    command: &'a str,
    stage: &'a str,
    entity: Option<String>,
    entity_state: Option<String>,
}

impl Refuse<'_> {
    fn with(&self, code: &str, en: String, vi: String) -> Rejection {
        Rejection {
            code: code.to_owned(),
            command: self.command.to_owned(),
            stage: self.stage.to_owned(),
            entity: self.entity.clone(),
            entity_state: self.entity_state.clone(),
            message_en: en,
            message_vi: vi,
        }
    }

    fn message(&self, code: &str, m: &Message) -> Rejection {
        self.with(code, m.en.clone(), m.vi.clone())
    }
}

/// Recursively normalizes every string (keys and values) to NFC.
pub fn nfc(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.nfc().collect()),
        Value::Array(items) => Value::Array(items.iter().map(nfc).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.nfc().collect::<String>(), nfc(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn at_text(at: &DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The id of the `index`-th event a command produces: derived, so a retried command produces the
/// same ids and the store recognises the retry.
pub fn event_id(command: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&command, format!("event-{index}").as_bytes())
}

/// Compiles a schema with `format` checked (draft 2020-12 treats it as a label by default, which
/// would let "25/3/2024" through as a `date`).
pub(crate) fn compile(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
}

/// Checks `input` against a compiled JSON Schema; the error names the JSON path.
fn schema_errors(validator: &jsonschema::Validator, input: &Value) -> Option<(String, String)> {
    let error = validator.iter_errors(input).next()?;
    let path = error.instance_path().to_string();
    Some((
        if path.is_empty() {
            "/".to_owned()
        } else {
            path
        },
        error.to_string(),
    ))
}

/// The first event of a case.
pub fn start(
    workflow: &Workflow,
    state: &CaseState,
    case_id: &str,
    request: &CommandRequest,
) -> Result<CaseEvent, Rejection> {
    let def = &workflow.definition;
    let refuse = Refuse {
        command: "start",
        stage: &state.stage,
        entity: None,
        entity_state: None,
    };
    if state.is_started() {
        return Err(refuse.with(
            "case_exists",
            format!("case {case_id} has already started"),
            format!("Hồ sơ {case_id} đã được khởi tạo"),
        ));
    }
    let input = nfc(&request.input);
    if let Some((path, message)) = workflow
        .validators
        .start
        .as_ref()
        .and_then(|v| schema_errors(v, &input))
    {
        return Err(refuse.with(
            "invalid_input",
            format!("start data at {path}: {message}"),
            format!("Dữ liệu khởi tạo tại {path} không hợp lệ: {message}"),
        ));
    }
    let at = at_text(&request.at);
    let today = at.get(..10).unwrap_or_default().to_owned();
    let mut members = Map::new();
    members.insert("input".to_owned(), input.clone());
    members.insert("now".to_owned(), Value::String(at.clone()));
    members.insert("today".to_owned(), Value::String(today));
    members.insert("stage".to_owned(), Value::String(String::new()));
    let context = Context::new(&input, members);
    let mut effects = vec![AppliedEffect::Stage {
        from: String::new(),
        to: def.start.stage.value.clone(),
    }];
    let scratch = CaseState::default();
    for source in &def.start.entities {
        effects.extend(create_entities(source, &context, &scratch, &refuse)?);
    }
    Ok(CaseEvent {
        event_id: event_id(request.id, 0),
        event_type: def.start.event.value.clone(),
        schema_version: schema_version(workflow, &def.start.event.value),
        data: CaseEventData {
            command: "start".to_owned(),
            at,
            actor: request.actor.clone(),
            input,
            effects,
            pin: Some(Pin {
                workflow: workflow.name().to_owned(),
                version: workflow.version(),
                hash: workflow.hash.clone(),
            }),
            timer: None,
        },
    })
}

fn schema_version(workflow: &Workflow, event_type: &str) -> u32 {
    workflow
        .definition
        .events
        .iter()
        .find(|e| e.event_type.value == event_type)
        .map_or(1, |e| e.schema_version)
}

fn create_entities(
    source: &EntitySource,
    context: &Context<'_>,
    state: &CaseState,
    refuse: &Refuse<'_>,
) -> Result<Vec<AppliedEffect>, Rejection> {
    // An array creates one entity per item; an object creates one entity.
    let items = match context.pointer(&source.from) {
        Some(Value::Array(items)) => items.clone(),
        Some(item @ Value::Object(_)) => vec![item.clone()],
        _ => Vec::new(),
    };
    let collection = &source.collection.value;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for item in items {
        let key = match item.pointer(&source.key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(refuse.with(
                    "invalid_input",
                    format!("an item of {} has no key at {}", source.from, source.key),
                    format!("Một mục của {} thiếu khóa {}", source.from, source.key),
                ));
            }
        };
        if !seen.insert(key.clone()) || state.entity(collection, &key).is_some() {
            return Err(refuse.with(
                "duplicate_entity",
                format!("{collection} {key} appears twice"),
                format!("{collection} {key} bị trùng"),
            ));
        }
        out.push(AppliedEffect::Create {
            collection: collection.clone(),
            key,
            state: source.state.value.clone(),
            data: item,
        });
    }
    Ok(out)
}

/// Decides a command against a started case.
pub fn decide(
    workflow: &Workflow,
    state: &CaseState,
    request: &CommandRequest,
) -> Result<Vec<CaseEvent>, Rejection> {
    let mut refuse = Refuse {
        command: &request.name,
        stage: &state.stage,
        entity: None,
        entity_state: None,
    };
    if !state.is_started() {
        return Err(refuse.with(
            "case_not_started",
            "the case has not started".to_owned(),
            "Hồ sơ chưa được khởi tạo".to_owned(),
        ));
    }
    let Some(command) = workflow.command(&request.name) else {
        return Err(refuse.with(
            "unknown_command",
            format!(
                "workflow {} has no command {}",
                workflow.name(),
                request.name
            ),
            format!("Quy trình không có thao tác {}", request.name),
        ));
    };
    let role = request.actor.role.as_str();
    if role != ADMIN_ROLE && !command.roles.iter().any(|r| r.value == role) {
        return Err(refuse.with(
            "role_not_allowed",
            format!("role {role} may not run {}", request.name),
            format!(
                "Vai trò {role} không được thực hiện thao tác “{}”",
                command.label
            ),
        ));
    }
    if !command.stages.iter().any(|s| s.value == state.stage) {
        return Err(refuse.with(
            "wrong_stage",
            format!("{} is not allowed in stage {}", request.name, state.stage),
            format!(
                "Không thể thực hiện “{}” ở giai đoạn {}",
                command.label,
                stage_label(workflow, &state.stage)
            ),
        ));
    }
    let input = nfc(&request.input);
    if let Some(validator) = workflow.validators.inputs.get(&request.name)
        && let Some((path, message)) = schema_errors(validator, &input)
    {
        return Err(refuse.with(
            "invalid_input",
            format!("input at {path}: {message}"),
            format!("Dữ liệu nhập tại {path} không hợp lệ: {message}"),
        ));
    }

    let at = at_text(&request.at);
    let params = parameters(workflow, state);
    // The case data is borrowed, not copied into the context.
    let mut members = Map::new();
    members.insert("input".to_owned(), input.clone());
    members.insert("stage".to_owned(), Value::String(state.stage.clone()));
    members.insert("now".to_owned(), Value::String(at.clone()));
    members.insert(
        "today".to_owned(),
        Value::String(at.get(..10).unwrap_or_default().to_owned()),
    );
    members.insert("actor".to_owned(), json!(request.actor));
    members.insert("params".to_owned(), params);
    let mut context = Context::new(&state.data, members);

    let target = match &command.target {
        None => None,
        Some(target) => {
            let key = match context.pointer(&format!("/input{}", target.key)) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(refuse.with(
                        "invalid_input",
                        format!("input has no entity key at {}", target.key),
                        format!("Dữ liệu nhập thiếu khóa tại {}", target.key),
                    ));
                }
            };
            let collection = target.collection.value.clone();
            refuse.entity = Some(format!("{collection}/{key}"));
            let Some(entity) = state.entity(&collection, &key) else {
                return Err(refuse.with(
                    "unknown_entity",
                    format!("the case has no {collection} {key}"),
                    format!(
                        "Hồ sơ không có {} “{key}”",
                        collection_label(workflow, &collection)
                    ),
                ));
            };
            refuse.entity_state = Some(entity.state.clone());
            if target.scoped_to_unit && request.actor.unit.as_ref().is_some_and(|unit| *unit != key)
            {
                return Err(refuse.with(
                    "not_own_unit",
                    format!("a unit may act only on its own {collection}"),
                    "Đơn vị chỉ được thực hiện thao tác cho chính đơn vị mình".to_owned(),
                ));
            }
            if !target.states.is_empty() && !target.states.iter().any(|s| s.value == entity.state) {
                return Err(refuse.with(
                    "wrong_entity_state",
                    format!(
                        "{} is not allowed while {collection} {key} is {}",
                        request.name, entity.state
                    ),
                    format!(
                        "Không thể thực hiện “{}” khi {} “{key}” đang ở trạng thái {}",
                        command.label,
                        collection_label(workflow, &collection),
                        state_label(workflow, &collection, &entity.state)
                    ),
                ));
            }
            let mut data = entity.data.clone();
            if let Value::Object(map) = &mut data {
                map.insert("key".to_owned(), Value::String(key.clone()));
                map.insert("state".to_owned(), Value::String(entity.state.clone()));
            }
            context.set("target", data);
            Some((collection, key, entity.state.clone()))
        }
    };

    for check in &command.checks {
        if !holds_in(&check.require, &context, state) {
            return Err(refuse.message(&check.code, &check.message));
        }
    }

    let mut effects = Vec::new();
    for effect in &command.effects {
        if effect
            .when
            .as_ref()
            .is_some_and(|c| !holds_in(c, &context, state))
        {
            continue;
        }
        effects.extend(resolve(effect, &context, state, target.as_ref(), &refuse)?);
    }
    let data = CaseEventData {
        command: request.name.clone(),
        at,
        actor: request.actor.clone(),
        input,
        effects,
        pin: None,
        timer: None,
    };
    // Stage changes that follow from the new state, recorded in the same event. The state
    // after the effects is only needed (and copied) when a transition leaves its stage.
    let stage_after = data
        .effects
        .iter()
        .rev()
        .find_map(|e| match e {
            AppliedEffect::Stage { to, .. } => Some(to),
            _ => None,
        })
        .unwrap_or(&state.stage);
    let transitions = &workflow.definition.transitions;
    if !transitions.iter().any(|t| t.from.value == *stage_after) {
        return Ok(vec![CaseEvent {
            event_id: event_id(request.id, 0),
            event_type: command.emit.value.clone(),
            schema_version: schema_version(workflow, &command.emit.value),
            data,
        }]);
    }
    let mut members = context.into_members();
    let mut after = state.clone();
    for effect in &data.effects {
        after.apply(effect, &data);
    }
    let mut data = data;
    for _ in 0..workflow.definition.stages.len() {
        members.insert("stage".to_owned(), Value::String(after.stage.clone()));
        let context = Context::new(&after.data, members);
        let next = transitions
            .iter()
            .find(|t| t.from.value == after.stage && holds_in(&t.when, &context, &after));
        members = context.into_members();
        let Some(t) = next else { break };
        let effect = AppliedEffect::Stage {
            from: after.stage.clone(),
            to: t.to.value.clone(),
        };
        after.apply(&effect, &data);
        data.effects.push(effect);
    }
    Ok(vec![CaseEvent {
        event_id: event_id(request.id, 0),
        event_type: command.emit.value.clone(),
        schema_version: schema_version(workflow, &command.emit.value),
        data,
    }])
}

fn resolve(
    effect: &Effect,
    context: &Context<'_>,
    state: &CaseState,
    target: Option<&(String, String, String)>,
    refuse: &Refuse<'_>,
) -> Result<Vec<AppliedEffect>, Rejection> {
    let mut out = Vec::new();
    if let Some(stage) = &effect.stage
        && stage.value != state.stage
    {
        out.push(AppliedEffect::Stage {
            from: state.stage.clone(),
            to: stage.value.clone(),
        });
    }
    if let Some((collection, key, from)) = target
        && (effect.target_state.is_some() || !effect.set_target.is_empty())
    {
        out.push(AppliedEffect::Entity {
            collection: collection.clone(),
            key: key.clone(),
            from: effect.target_state.as_ref().map(|_| from.clone()),
            to: effect.target_state.as_ref().map(|s| s.value.clone()),
            set: fields(&effect.set_target, context),
        });
    }
    if !effect.set_case.is_empty() {
        out.push(AppliedEffect::Case {
            set: fields(&effect.set_case, context),
        });
    }
    if let Some(m) = &effect.move_all {
        let collection = &m.collection.value;
        if let Some(entities) = state.entities.get(collection) {
            for (key, entity) in entities {
                if m.states.iter().any(|s| s.value == entity.state) {
                    out.push(AppliedEffect::Entity {
                        collection: collection.clone(),
                        key: key.clone(),
                        from: Some(entity.state.clone()),
                        to: Some(m.to.value.clone()),
                        set: fields(&m.set, context),
                    });
                }
            }
        }
    }
    if let Some(create) = &effect.create {
        out.extend(create_entities(create, context, state, refuse)?);
    }
    Ok(out)
}

fn fields(
    spec: &std::collections::BTreeMap<String, String>,
    context: &Context<'_>,
) -> Map<String, Value> {
    spec.iter()
        .filter_map(|(field, pointer)| {
            context
                .pointer(pointer)
                .filter(|v| !v.is_null())
                .map(|v| (field.clone(), v.clone()))
        })
        .collect()
}

fn parameters(workflow: &Workflow, state: &CaseState) -> Value {
    let mut out = Map::new();
    for p in &workflow.definition.parameters {
        if let Some(v) = workflow.parameter(&p.id.value, &state.data) {
            out.insert(p.id.value.clone(), v);
        }
    }
    Value::Object(out)
}

fn operand<'v>(o: &'v Operand, context: &'v Context<'_>) -> Option<&'v Value> {
    match o {
        Operand::Pointer(p) => context.pointer(p),
        Operand::Literal { value } => Some(value),
    }
}

fn compare(left: &Value, op: CompareOp, right: &Value) -> bool {
    let ordering = match (left, right) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) => {
            return match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                _ => false,
            };
        }
    };
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        CompareOp::Eq => ordering.is_eq(),
        CompareOp::Ne => ordering.is_ne(),
        CompareOp::Lt => ordering.is_lt(),
        CompareOp::Le => ordering.is_le(),
        CompareOp::Gt => ordering.is_gt(),
        CompareOp::Ge => ordering.is_ge(),
    }
}

fn in_states(state: &CaseState, es: &EntityStates) -> (usize, usize) {
    let Some(entities) = state.entities.get(&es.collection.value) else {
        return (0, 0);
    };
    let matching = entities
        .values()
        .filter(|e| es.states.iter().any(|s| s.value == e.state))
        .count();
    (matching, entities.len())
}

/// Evaluates a condition against the context document and the case's entities.
pub fn holds(condition: &Condition, context: &Value, state: &CaseState) -> bool {
    holds_in(condition, &Context::of(context), state)
}

fn holds_in(condition: &Condition, context: &Context<'_>, state: &CaseState) -> bool {
    match condition {
        Condition::Stage(s) => state.stage == s.value,
        Condition::StageIn(list) => list.iter().any(|s| s.value == state.stage),
        Condition::All(list) => list.iter().all(|c| holds_in(c, context, state)),
        Condition::Any(list) => list.iter().any(|c| holds_in(c, context, state)),
        Condition::Not(c) => !holds_in(c, context, state),
        Condition::Every(es) => {
            let (matching, total) = in_states(state, es);
            total > 0 && matching == total
        }
        Condition::Some(es) => in_states(state, es).0 > 0,
        Condition::None(es) => in_states(state, es).0 == 0,
        Condition::Exists(p) => context.pointer(p).is_some_and(|v| !v.is_null()),
        Condition::Compare(c) => match (operand(&c.left, context), operand(&c.right, context)) {
            (Some(l), Some(r)) => compare(l, c.op, r),
            _ => false,
        },
        Condition::Each(each) => match context.pointer(&each.array) {
            Some(Value::Array(items)) => items.iter().all(|item| {
                let mut scoped = context.clone();
                scoped.set("item", item.clone());
                holds_in(&each.require, &scoped, state)
            }),
            _ => true,
        },
    }
}

fn stage_label(workflow: &Workflow, stage: &str) -> String {
    workflow
        .definition
        .stages
        .iter()
        .find(|s| s.id.value == stage)
        .map_or_else(|| stage.to_owned(), |s| format!("“{}”", s.label))
}

fn collection_label(workflow: &Workflow, collection: &str) -> String {
    workflow
        .definition
        .entities
        .iter()
        .find(|c| c.id.value == collection)
        .map_or_else(|| collection.to_owned(), |c| c.label.to_lowercase())
}

fn state_label(workflow: &Workflow, collection: &str, state: &str) -> String {
    workflow
        .definition
        .entities
        .iter()
        .find(|c| c.id.value == collection)
        .and_then(|c| c.states.iter().find(|s| s.id.value == state))
        .map_or_else(|| state.to_owned(), |s| format!("“{}”", s.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_normalizes_keys_and_values() {
        // "Quài Tở" typed with combining marks (NFD).
        let decomposed = "Qua\u{300}i T\u{1a1}\u{309}";
        let v = nfc(&json!({ decomposed: [decomposed] }));
        let composed = "Quài Tở";
        assert_eq!(v, json!({ composed: [composed] }));
    }

    #[test]
    fn comparisons() {
        assert!(compare(&json!(3), CompareOp::Le, &json!(3.0)));
        assert!(!compare(&json!(4), CompareOp::Le, &json!(3)));
        assert!(compare(
            &json!("2024-04-19"),
            CompareOp::Lt,
            &json!("2024-04-20")
        ));
        assert!(!compare(&json!("x"), CompareOp::Lt, &json!(1)));
        assert!(compare(&json!(null), CompareOp::Eq, &json!(null)));
    }

    #[test]
    fn derived_event_ids_are_stable() {
        let c = Uuid::from_u128(7);
        assert_eq!(event_id(c, 0), event_id(c, 0));
        assert_ne!(event_id(c, 0), event_id(c, 1));
    }
}
