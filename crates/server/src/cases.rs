//! `/api/cases`: list, start, show, history, timers and commands. Commands run through
//! `giamsat-cases` as the token's actor; the workflow decides what the role may do.

use axum::Json;
use axum::extract::State;
use axum::http::header::{ETAG, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, SecondsFormat};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use giamsat_cases::{CaseError, LoadedCase, list_cases, load_case, run_command_cached, start_case};
use giamsat_engine::{
    Actor, CaseEvent, CaseEventData, CommandRequest, Entity, StageChange, TimerState, Warning,
    Workflow, decide, event_id, nfc, timers, warnings, zone,
};
use giamsat_store::StoreError;
use giamsat_types::{EventMetadata, ExpectedVersion, NewEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{JsonBody, P, Q, idempotency_key, if_match};
use crate::scope::Scope;
use crate::{App, AppState};

/// The `at` query parameter: the time of a command (admin only; the default is now).
#[derive(Debug, Default, Deserialize)]
pub struct AtQuery {
    pub at: Option<String>,
}

/// A case, its pinned definition and the caller's view of it. A unit token asking for a case
/// its unit is not part of gets the same 404 as for a case that does not exist.
pub(crate) async fn load_visible(
    app: &App,
    principal: &Principal,
    id: &str,
) -> Result<(LoadedCase, Workflow, Scope), ApiError> {
    let (case, workflow, scope) = load_visible_shared(app, principal, id).await?;
    Ok((Arc::unwrap_or_clone(case), workflow, scope))
}

/// As [`load_visible`], the case as the daemon's case cache keeps it (not copied).
pub(crate) async fn load_visible_shared(
    app: &App,
    principal: &Principal,
    id: &str,
) -> Result<(Arc<LoadedCase>, Workflow, Scope), ApiError> {
    let case = app
        .cases
        .load(&app.store, id)
        .await?
        .ok_or_else(|| ApiError::case_not_found(id))?;
    let workflow = app.definitions.get(&app.store, &case.state).await?;
    let scope = Scope::new(principal, &workflow, &case.state);
    if !scope.is_member() {
        tracing::info!(token = %principal.0.name, unit = ?principal.unit(), case = id, "request denied: case of other units");
        return Err(ApiError::case_not_found(id));
    }
    Ok((case, workflow, scope))
}

/// The time of a command: `at` (admin only) or now on the daemon's clock, in the workflow's
/// zone.
pub(crate) fn command_time(
    app: &App,
    principal: &Principal,
    at: Option<&str>,
    workflow: &Workflow,
) -> Result<DateTime<FixedOffset>, ApiError> {
    match at {
        Some(text) => {
            principal.require(&[], "set the time of a command (at)")?;
            DateTime::parse_from_rfc3339(text).map_err(|e| {
                ApiError::bad_request(
                    "invalid_at",
                    format!("at {text:?} is not an RFC 3339 time: {e}"),
                )
            })
        }
        None => Ok(app
            .clock
            .now()
            .with_timezone(&zone(workflow))
            .fixed_offset()),
    }
}

/// The command id: derived from the token, the case and the `Idempotency-Key` when one is
/// given (so a retried request applies once), else new.
fn command_id(principal: &Principal, case: &str, key: Option<&str>) -> Uuid {
    match key {
        Some(key) => Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("giamsat:http:{}:{case}:{key}", principal.0.id).as_bytes(),
        ),
        None => Uuid::new_v4(),
    }
}

/// Whether the case already holds the command with this id: `Ok(true)` when it does with the
/// same command and input (a retry), 409 when the key was used for something else.
fn already_applied(
    case: &LoadedCase,
    command: Uuid,
    name: &str,
    input: &Value,
) -> Result<bool, ApiError> {
    let first = event_id(command, 0);
    let Some(event) = case.events.iter().find(|e| e.event_id == first) else {
        return Ok(false);
    };
    let same = serde_json::from_str::<CaseEventData>(&event.data)
        .map(|d| d.command == name && d.input == nfc(input))
        .unwrap_or(false);
    if same {
        Ok(true)
    } else {
        Err(ApiError::conflict(
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key was already used on case {} for another command or input (event {})",
                case.state.id, event.stream_version
            ),
        ))
    }
}

/// A case as JSON, as `giamsat case show --json` prints it, seen through `scope`; plus the
/// commands the caller's role may run in the current stage.
pub(crate) fn case_json(
    app: &App,
    principal: &Principal,
    workflow: &Workflow,
    state: &giamsat_engine::CaseState,
    scope: &Scope,
) -> Value {
    serde_json::to_value(case_view(app, principal, workflow, state, scope)).unwrap_or(Value::Null)
}

/// What [`case_json`] gives, borrowing the case instead of copying it, to be serialized
/// straight into an answer. The fields are in the order of the JSON object's keys (serde_json
/// sorts them), so both give the same text.
#[derive(Serialize)]
pub(crate) struct CaseView<'a> {
    available_commands: Vec<CommandView<'a>>,
    data: Cow<'a, Value>,
    definition_hash: &'a str,
    entities: EntitiesView<'a>,
    id: &'a str,
    stage: &'a str,
    stage_label: Option<&'a str>,
    stages: Vec<StageView<'a>>,
    started_at: &'a str,
    stream_version: u64,
    updated_at: &'a str,
    version: u32,
    warnings: Vec<Warning>,
    workflow: &'a str,
}

#[derive(Serialize)]
struct CommandView<'a> {
    id: &'a str,
    label: &'a str,
}

/// A stage change with its keys in JSON order.
#[derive(Serialize)]
struct StageView<'a> {
    at: &'a str,
    command: &'a str,
    stage: &'a str,
}

impl<'a> From<&'a StageChange> for StageView<'a> {
    fn from(s: &'a StageChange) -> StageView<'a> {
        StageView {
            at: &s.at,
            command: &s.command,
            stage: &s.stage,
        }
    }
}

/// An entity with its keys in JSON order.
#[derive(Serialize)]
struct EntityView<'a> {
    data: &'a Value,
    state: &'a str,
    updated_at: &'a str,
}

/// The entities: all of them as they are, or those a restricted scope lets through.
enum EntitiesView<'a> {
    All(&'a BTreeMap<String, BTreeMap<String, Entity>>),
    Scoped(Value),
}

impl Serialize for EntitiesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EntitiesView::Scoped(value) => value.serialize(serializer),
            EntitiesView::All(all) => serializer.collect_map(all.iter().map(|(collection, m)| {
                (
                    collection,
                    m.iter()
                        .map(|(key, e)| {
                            (
                                key,
                                EntityView {
                                    data: &e.data,
                                    state: &e.state,
                                    updated_at: &e.updated_at,
                                },
                            )
                        })
                        .collect::<BTreeMap<_, _>>(),
                )
            })),
        }
    }
}

/// The case as [`case_json`] shows it, borrowed.
pub(crate) fn case_view<'a>(
    app: &App,
    principal: &Principal,
    workflow: &'a Workflow,
    state: &'a giamsat_engine::CaseState,
    scope: &Scope,
) -> CaseView<'a> {
    view_of(
        workflow,
        state,
        scope,
        &app.calendar(),
        principal.role().as_str(),
    )
}

fn view_of<'a>(
    workflow: &'a Workflow,
    state: &'a giamsat_engine::CaseState,
    scope: &Scope,
    calendar: &giamsat_engine::Calendar,
    role: &str,
) -> CaseView<'a> {
    let warnings: Vec<_> = warnings(workflow, state, calendar)
        .into_iter()
        .filter(|w| scope.warning_visible(state, w))
        .collect();
    let stage_label = workflow
        .definition
        .stages
        .iter()
        .find(|x| x.id.value == state.stage)
        .map(|x| x.label.as_str());
    let available_commands = workflow
        .definition
        .commands
        .iter()
        .filter(|c| c.stages.iter().any(|s| s.value == state.stage))
        .filter(|c| role == "admin" || c.roles.iter().any(|r| r.value == role))
        .map(|c| CommandView {
            id: &c.id.value,
            label: &c.label,
        })
        .collect();
    let (data, entities) = if scope.is_restricted() {
        (
            Cow::Owned(scope.redact(&state.data)),
            EntitiesView::Scoped(scope.entities(state)),
        )
    } else {
        (
            Cow::Borrowed(&state.data),
            EntitiesView::All(&state.entities),
        )
    };
    CaseView {
        available_commands,
        data,
        definition_hash: &state.definition_hash,
        entities,
        id: &state.id,
        stage: &state.stage,
        stage_label,
        stages: state.stages.iter().map(StageView::from).collect(),
        started_at: &state.started_at,
        stream_version: state.stream_version,
        updated_at: &state.updated_at,
        version: state.version,
        warnings,
        workflow: &state.workflow,
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a valid header value")
}

/// `GET /api/cases`: id, workflow, stage and the next pending timer of every case the caller
/// may see.
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let calendar = app.calendar();
    let mut out = Vec::new();
    for id in list_cases(&app.store).await? {
        let Some(case) = app.cases.load(&app.store, &id).await? else {
            continue;
        };
        let state = &case.state;
        let workflow = match app.definitions.get(&app.store, state).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(case = %id, error = %e, "case left out of the list");
                continue;
            }
        };
        let scope = Scope::new(&principal, &workflow, state);
        if !scope.is_member() {
            continue;
        }
        let next = timers(&workflow, state, &calendar)
            .into_iter()
            .filter(|t| t.state == TimerState::Pending)
            .filter(|t| {
                t.key
                    .as_deref()
                    .is_none_or(|k| scope.entity_visible(k, &Value::Null))
            })
            .min_by_key(|t| t.due);
        let stage_label = workflow
            .definition
            .stages
            .iter()
            .find(|x| x.id.value == state.stage)
            .map(|x| x.label.clone());
        out.push(json!({
            "id": state.id,
            "workflow": state.workflow,
            "version": state.version,
            "stage": state.stage,
            "stage_label": stage_label,
            "stream_version": state.stream_version,
            "updated_at": state.updated_at,
            "next_deadline": next.map(|t| json!({
                "due": t.due.to_rfc3339_opts(SecondsFormat::Secs, true),
                "timer": t.timer,
                "label": t.label,
                "key": t.key,
                "command": t.command,
            })),
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /api/cases/{id}`: the case with its warnings; the ETag is its version.
pub async fn show(
    State(app): State<AppState>,
    principal: Principal,
    P(id): P<String>,
) -> Result<Response, ApiError> {
    let (case, workflow, scope) = load_visible_shared(&app, &principal, &id).await?;
    let body = case_view(&app, &principal, &workflow, &case.state, &scope);
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(ETAG, etag(case.state.stream_version));
    Ok(response)
}

/// `GET /api/cases/{id}/history`: the case's events (as `giamsat case history --json`); for a
/// unit token without the events of other units and with other units' parts removed
/// (`"redacted": true`).
pub async fn history(
    State(app): State<AppState>,
    principal: Principal,
    P(id): P<String>,
) -> Result<Json<Value>, ApiError> {
    let (case, _, scope) = load_visible_shared(&app, &principal, &id).await?;
    let mut out = Vec::new();
    for event in &case.events {
        if let Some(value) = event_view(&scope, event) {
            out.push(value);
        }
    }
    Ok(Json(Value::Array(out)))
}

/// An event as `scope` may see it, `None` when hidden.
pub(crate) fn event_view(scope: &Scope, event: &giamsat_types::RecordedEvent) -> Option<Value> {
    let mut value = serde_json::to_value(event).ok()?;
    if !scope.is_restricted() {
        return Some(value);
    }
    let (data, redacted) = scope.event_data(&event.data_value())?;
    if redacted {
        if data.pointer("/actor/id").is_none()
            && let Some(Value::Object(metadata)) = value.get_mut("metadata")
        {
            metadata.remove("actor");
        }
        value["redacted"] = Value::Bool(true);
    }
    value["data"] = data;
    Some(value)
}

/// `GET /api/cases/{id}/timers`: every timer of the case with its due time and state.
async fn timers_of(app: &App, principal: &Principal, id: &str) -> Result<Vec<Value>, ApiError> {
    let (case, workflow, scope) = load_visible_shared(app, principal, id).await?;
    let now = app.clock.now();
    Ok(timers(&workflow, &case.state, &app.calendar())
        .into_iter()
        .filter(|t| {
            t.key
                .as_deref()
                .is_none_or(|k| scope.entity_visible(k, &Value::Null))
        })
        .map(|t| {
            let due_now = t.state == TimerState::Pending && t.due <= now;
            let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
            v["due_now"] = Value::Bool(due_now);
            v
        })
        .collect())
}

pub async fn case_timers(
    State(app): State<AppState>,
    principal: Principal,
    P(id): P<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(timers_of(&app, &principal, &id).await?)))
}

/// `POST /api/cases`: `{workflow, id?, data}` starts a case (admin, secretariat). 201 with the
/// case; a repeat with the same `Idempotency-Key` answers 200 with the case as it is.
pub async fn start(
    State(app): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Q(query): Q<AtQuery>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Secretariat], "start cases")?;
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request(
            "invalid_input",
            "the body must be a JSON object {\"workflow\": ..., \"id\": ..., \"data\": {...}}",
        ));
    };
    let name = match body.remove("workflow") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "/workflow must be a string (a workflow name)",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "/workflow is required (a workflow name)",
            ));
        }
    };
    let id = match body.remove("id") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => Uuid::new_v4().simple().to_string()[..12].to_owned(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "/id must be a string (the case id)",
            ));
        }
    };
    let data = match body.remove("data") {
        Some(d @ Value::Object(_)) => d,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "/data must be an object (the workflow's start data)",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "/data is required (the workflow's start data)",
            ));
        }
    };
    if let Some(extra) = body.keys().next() {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!("/{extra} is not a field of a start request (workflow, id, data)"),
        ));
    }
    let workflow = app.workflows.get(&name).ok_or_else(|| {
        ApiError::not_found(
            "workflow_not_found",
            format!(
                "no workflow named {name:?} (loaded: {})",
                app.workflows.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let at = command_time(&app, &principal, query.at.as_deref(), workflow)?;
    let key = idempotency_key(&headers)?;
    let command = command_id(&principal, &id, key.as_deref());
    if key.is_some()
        && let Some(existing) = load_case(&app.store, &id).await?
        && already_applied(&existing, command, "start", &data)?
    {
        app.metrics.command_already_applied();
        let workflow = app.definitions.get(&app.store, &existing.state).await?;
        let scope = Scope::new(&principal, &workflow, &existing.state);
        let body = json!({
            "applied": false,
            "command_id": command,
            "case": case_json(&app, &principal, &workflow, &existing.state, &scope),
        });
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let case = match start_case(
        &app.store,
        workflow,
        &id,
        data,
        principal.0.actor(),
        at,
        command,
    )
    .await
    {
        Ok(case) => case,
        Err(CaseError::Rejected(r)) if r.code == "case_exists" => {
            let mut e = ApiError::rejection(&r);
            e.status = StatusCode::CONFLICT;
            return Err(e);
        }
        Err(CaseError::Rejected(r)) => {
            app.metrics.command_rejected(&r.code);
            return Err(ApiError::rejection(&r));
        }
        Err(e) => return Err(e.into()),
    };
    app.metrics.case_started();
    tracing::info!(case = %id, workflow = %name, token = %principal.0.name, "case started");
    let case = app.cases.insert(Arc::new(case));
    let scope = Scope::new(&principal, workflow, &case.state);
    let body = StartAnswer {
        applied: true,
        case: case_view(&app, &principal, workflow, &case.state, &scope),
        command_id: command,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/cases/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
        .headers_mut()
        .insert(ETAG, etag(case.state.stream_version));
    Ok(response)
}

/// `POST /api/cases/{id}/commands/{command}`: the body is the command's input. Optional
/// `Idempotency-Key` (a retry applies once; the key reused for another input is 409) and
/// `If-Match` (the case's version the caller saw; 409 when it has changed since).
pub async fn command(
    State(app): State<AppState>,
    principal: Principal,
    P((id, name)): P<(String, String)>,
    headers: HeaderMap,
    Q(query): Q<AtQuery>,
    JsonBody(input): JsonBody,
) -> Result<Response, ApiError> {
    let (case, workflow, scope) = load_visible_shared(&app, &principal, &id).await?;
    let at = command_time(&app, &principal, query.at.as_deref(), &workflow)?;
    let key = idempotency_key(&headers)?;
    let expected = if_match(&headers)?;
    let command = command_id(&principal, &id, key.as_deref());
    let request = CommandRequest {
        id: command,
        name: name.clone(),
        input,
        actor: principal.0.actor(),
        at,
    };
    if key.is_some() && already_applied(&case, command, &name, &request.input)? {
        app.metrics.command_already_applied();
        return Ok(command_answer(
            &app,
            &principal,
            &workflow,
            &case,
            &scope,
            command,
            &[],
        ));
    }
    let result = match expected {
        Some(expected) => run_at_version(&app, case, &workflow, request, expected).await,
        // On the case just read (not read again unless another writer got in first).
        None => run_command_cached(&app.store, &app.cases, &workflow, case, request)
            .await
            .map_err(ApiError::from),
    };
    let (after, events) = match result {
        Ok(done) => done,
        Err(e) => {
            if e.details.get("rejected") == Some(&Value::Bool(true)) {
                app.metrics.command_rejected(&e.code);
                if e.status == StatusCode::FORBIDDEN {
                    tracing::info!(token = %principal.0.name, role = %principal.role(), case = %id, command = %name, code = %e.code, "request denied by the workflow");
                }
            }
            return Err(e);
        }
    };
    if events.is_empty() {
        app.metrics.command_already_applied();
    } else {
        app.metrics.command_accepted(events.len());
        tracing::info!(case = %id, command = %name, token = %principal.0.name, events = events.len(), "command accepted");
    }
    let scope = Scope::new(&principal, &workflow, &after.state);
    Ok(command_answer(
        &app, &principal, &workflow, &after, &scope, command, &events,
    ))
}

/// A start's answer (keys in JSON order).
#[derive(Serialize)]
struct StartAnswer<'a> {
    applied: bool,
    case: CaseView<'a>,
    command_id: Uuid,
}

/// A command's answer (keys in JSON order, as the object `{applied, command_id, events, case}`
/// prints).
#[derive(Serialize)]
struct CommandAnswer<'a> {
    applied: bool,
    case: CaseView<'a>,
    command_id: Uuid,
    events: Vec<EventRef<'a>>,
}

#[derive(Serialize)]
struct EventRef<'a> {
    event_id: Uuid,
    event_type: &'a str,
}

fn command_answer(
    app: &App,
    principal: &Principal,
    workflow: &Workflow,
    case: &LoadedCase,
    scope: &Scope,
    command: Uuid,
    events: &[CaseEvent],
) -> Response {
    let body = CommandAnswer {
        applied: !events.is_empty(),
        case: case_view(app, principal, workflow, &case.state, scope),
        command_id: command,
        events: events
            .iter()
            .map(|e| EventRef {
                event_id: e.event_id,
                event_type: &e.event_type,
            })
            .collect(),
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(ETAG, etag(case.state.stream_version));
    response
}

/// Runs a command only on the case version the caller saw: decided on that state and appended
/// with exactly that expected version, so nothing is applied to a case that changed meanwhile.
async fn run_at_version(
    app: &App,
    case: Arc<LoadedCase>,
    workflow: &Workflow,
    request: CommandRequest,
    expected: u64,
) -> Result<(Arc<LoadedCase>, Vec<CaseEvent>), ApiError> {
    let id = case.state.id.clone();
    let conflict = |actual: u64| {
        ApiError::conflict(
            "version_conflict",
            format!("case {id} is at version {actual}, not the expected {expected}"),
        )
        .with_details(json!({ "expected_version": expected, "actual_version": actual }))
    };
    if case.state.stream_version != expected {
        return Err(conflict(case.state.stream_version));
    }
    let events = decide(workflow, &case.state, &request).map_err(|r| ApiError::rejection(&r))?;
    let stream = StreamId::new(format!("case/{id}"))
        .map_err(|e| ApiError::bad_request("invalid_case_id", e.to_string()))?;
    let new = events
        .iter()
        .map(|e| new_event(e, &request.actor, request.id))
        .collect();
    match app
        .store
        .append(&stream, ExpectedVersion::Exact(expected), new)
        .await
    {
        Ok(_) => {}
        Err(StoreError::WrongExpectedVersion { actual, .. }) => return Err(conflict(actual)),
        Err(e) => return Err(e.into()),
    }
    // The events took the versions after `expected`: any state at least that recent holds them.
    let after = app
        .cases
        .load_at_least(&app.store, &id, expected + events.len() as u64)
        .await?
        .ok_or_else(|| ApiError::case_not_found(&id))?;
    Ok((after, events))
}

/// The stored form of a decided event, as `giamsat-cases` appends it: its data, and metadata
/// naming the actor (`role:id`) and the command as correlation id.
fn new_event(event: &CaseEvent, actor: &Actor, command: Uuid) -> NewEvent {
    let data = serde_json::to_value(&event.data).unwrap_or(Value::Null);
    let metadata = EventMetadata {
        actor: Some(format!("{}:{}", actor.role, actor.id)),
        correlation_id: Some(command.to_string()),
        source: Some("giamsat".to_owned()),
        ..EventMetadata::default()
    };
    NewEvent::new(event.event_type.clone(), &data)
        .with_id(event.event_id)
        .with_schema_version(event.schema_version)
        .with_metadata(&metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use giamsat_engine::{Calendar, CaseState, start};

    /// `case_json` as it was written before `CaseView`: a `json!` object built from copies.
    fn reference(
        workflow: &Workflow,
        state: &CaseState,
        scope: &Scope,
        calendar: &Calendar,
        role: &str,
    ) -> Value {
        let warnings: Vec<_> = warnings(workflow, state, calendar)
            .into_iter()
            .filter(|w| scope.warning_visible(state, w))
            .collect();
        let stage_label = workflow
            .definition
            .stages
            .iter()
            .find(|x| x.id.value == state.stage)
            .map(|x| x.label.clone());
        let commands: Vec<Value> = workflow
            .definition
            .commands
            .iter()
            .filter(|c| c.stages.iter().any(|s| s.value == state.stage))
            .filter(|c| role == "admin" || c.roles.iter().any(|r| r.value == role))
            .map(|c| json!({"id": c.id.value, "label": c.label}))
            .collect();
        json!({
            "id": state.id,
            "workflow": state.workflow,
            "version": state.version,
            "definition_hash": state.definition_hash,
            "stage": state.stage,
            "stage_label": stage_label,
            "stages": state.stages,
            "entities": scope.entities(state),
            "data": scope.redact(&state.data),
            "warnings": warnings,
            "stream_version": state.stream_version,
            "started_at": state.started_at,
            "updated_at": state.updated_at,
            "available_commands": commands,
        })
    }

    #[test]
    fn the_view_serializes_as_the_json_object_did() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let dir = root.join("giam-sat-chuyen-de");
        let workflow = giamsat_engine::load(
            giamsat_cases::read_workflow_dir(&dir).expect("the workflow folder"),
        )
        .expect("the workflow loads");
        let text = std::fs::read_to_string(dir.join("examples/tuan-giao-2024.yaml"))
            .expect("the seed case");
        let data: Value = serde_saphyr::from_str(&text).expect("the seed data");
        let actor = Actor::parse("secretariat:huyen").expect("an actor");
        let at = |t: &str| DateTime::parse_from_rfc3339(t).expect("a time");
        let mut state = CaseState {
            id: "tg".to_owned(),
            ..CaseState::default()
        };
        let request = |name: &str, input: Value, when: &str, n: u128| CommandRequest {
            id: Uuid::from_u128(n),
            name: name.to_owned(),
            input,
            actor: actor.clone(),
            at: at(when),
        };
        let first = start(
            &workflow,
            &state,
            "tg",
            &request("start", data, "2024-03-20T08:00:00+07:00", 1),
        )
        .expect("the case starts");
        state.evolve(&first.data, 1);
        let commands = [
            (
                "issue_notice",
                json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
            ),
            (
                "receive_report",
                json!({"unit": "xa-quai-to", "received_at": "2024-04-18T09:00:00+07:00", "channel": "email"}),
            ),
        ];
        for (i, (name, input)) in commands.into_iter().enumerate() {
            let n = 2 + i as u128;
            let events = decide(
                &workflow,
                &state,
                &request(name, input, "2024-04-18T09:00:00+07:00", n),
            )
            .expect("the command is accepted");
            for e in events {
                let version = state.stream_version + 1;
                state.evolve(&e.data, version);
            }
        }
        let calendar = Calendar::weekends_only();
        let unit = state
            .entities
            .get("units")
            .and_then(|u| u.keys().next().cloned())
            .expect("a unit");
        for (scope, role) in [
            (Scope::everything(), "secretariat"),
            (Scope::everything(), "admin"),
            (Scope::for_unit(&unit, &workflow, &state), "unit"),
        ] {
            let view = serde_json::to_string(&view_of(&workflow, &state, &scope, &calendar, role))
                .expect("serializes");
            let old = serde_json::to_string(&reference(&workflow, &state, &scope, &calendar, role))
                .expect("serializes");
            assert_eq!(view, old, "role {role}");
            assert!(
                view.contains("\"warnings\":[{"),
                "some warnings are compared too"
            );
        }
    }
}
