//! Health, readiness, metrics, chain verification, the daemon's clock and the workflow
//! definitions.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use giamsat_engine::{SchemaRef, Workflow};
use giamsat_scheduler::Clock;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{JsonBody, P};
use crate::metrics::Gauges;

/// `GET /healthz`: the process is up (no token needed).
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz` (no token needed): 200 when the store answers and at least one workflow is
/// loaded, else 503; the body says which part is not ready and lists definitions that did not
/// load.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let store = match app.store.head().await {
        Ok(head) => json!({ "ok": true, "head": head.map_or(0, |h| h.position) }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    };
    let store_ok = store["ok"] == Value::Bool(true);
    let workflows_ok = !app.workflows.is_empty();
    let ready = store_ok && workflows_ok;
    let body = json!({
        "ready": ready,
        "store": store,
        "workflows": {
            "ok": workflows_ok,
            "loaded": app.workflows.keys().collect::<Vec<_>>(),
            "invalid": app.invalid_workflows,
        },
        "scheduler": app.scheduler.is_some(),
        "exporters": app.exporters.iter().filter(|e| e.enabled).map(|e| &e.id).collect::<Vec<_>>(),
        // Which leased tasks this daemon runs now (true) or leaves to another daemon (false).
        "leases": app.leases.snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics` (no token needed): the Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let head = app.store.head().await?.map_or(0, |h| h.position);
    let mut exporters = Vec::new();
    for e in &app.exporters {
        let lag = e
            .runner
            .lag()
            .await
            .map_err(|err| ApiError::internal(err.to_string()))?;
        let parked = giamsat_exporter::parked(&app.store, &e.id).await?.len() as u64;
        let handled = e.runner.status().lock().map(|s| s.handled).unwrap_or(0);
        exporters.push((e.id.clone(), lag.events, lag.seconds, parked, handled));
    }
    let tokens_active = app.tokens.active_count();
    let gauges = Gauges {
        head_position: head,
        timers_pending: app.scheduler.as_ref().map(|s| s.pending()),
        exporters,
        tokens_active,
    };
    let mut text = app.metrics.render(&gauges);
    app.leases.render(&mut text);
    let mut response = text.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// `GET /api/verify`: walks the whole hash chain; `intact` false names the first bad position.
pub async fn verify(
    State(app): State<AppState>,
    _principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let report = app.store.verify().await?;
    let mut value = serde_json::to_value(&report).unwrap_or_default();
    value["intact"] = Value::Bool(report.is_intact());
    if let Some(problem) = &report.problem {
        value["message"] = Value::String(problem.to_string());
    }
    Ok(Json(value))
}

fn clock_value(clock: &Clock) -> Value {
    let kind = match clock {
        Clock::System => "system",
        Clock::Manual(_) => "manual",
        Clock::Simulated(_) => "simulated",
    };
    json!({
        "now": clock.now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "kind": kind,
        "description": clock.describe(),
    })
}

/// `GET /api/clock`: the daemon's time and what kind of clock gives it (any token).
pub async fn clock(State(app): State<AppState>, _principal: Principal) -> Json<Value> {
    Json(clock_value(&app.clock))
}

/// `POST /api/clock` `{"now": TIME}` (admin): moves a manual clock (`--clock manual:TIME`)
/// forward, for rehearsals and training; the scheduler then fires every timer that came due.
/// The system and simulated clocks cannot be moved (409); a manual clock never goes back (409).
pub async fn set_clock(
    State(app): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[], "move the daemon's clock")?;
    let Clock::Manual(manual) = &app.clock else {
        return Err(ApiError::conflict(
            "clock_not_manual",
            format!(
                "the daemon's clock is {}; only a manual clock (serve --clock manual:TIME) can be moved",
                app.clock.describe()
            ),
        ));
    };
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "now"))
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("/{extra} is not a field of a clock request (now)"),
        ));
    }
    let text = body.get("now").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("invalid_body", "/now: an RFC 3339 time is required")
    })?;
    let at = DateTime::parse_from_rfc3339(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("/now: {text:?} is not an RFC 3339 time: {e}"),
        )
    })?;
    let before = manual.now();
    if at < before {
        return Err(ApiError::conflict(
            "clock_backwards",
            format!(
                "the clock stands at {}; it does not go back to {text}",
                before.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        ));
    }
    manual.set(at.with_timezone(&Utc));
    tracing::info!(token = %principal.0.name, from = %before, to = %at, "clock moved");
    Ok(Json(clock_value(&app.clock)))
}

fn summary(w: &Workflow) -> Value {
    json!({
        "name": w.name(),
        "version": w.version(),
        "hash": w.hash,
        "label": w.definition.label,
        "description": w.definition.description,
        "time_zone": w.definition.time_zone,
    })
}

/// `GET /api/workflows`: the loaded workflow definitions.
pub async fn workflows(State(app): State<AppState>, _principal: Principal) -> Json<Value> {
    Json(Value::Array(app.workflows.values().map(summary).collect()))
}

/// `GET /api/workflows/{name}`: a definition's roles, stages, collections, commands (with
/// input schemas), events and documents.
pub async fn workflow(
    State(app): State<AppState>,
    _principal: Principal,
    P(name): P<String>,
) -> Result<Json<Value>, ApiError> {
    let w = app.workflows.get(&name).ok_or_else(|| {
        ApiError::not_found("workflow_not_found", format!("no workflow named {name:?}"))
    })?;
    let d = &w.definition;
    let labelled = |items: &[giamsat_engine::Labelled]| -> Vec<Value> {
        items
            .iter()
            .map(|l| json!({"id": l.id.value, "label": l.label}))
            .collect()
    };
    macro_rules! values {
        ($items:expr) => {
            $items
                .iter()
                .map(|s| s.value.clone())
                .collect::<Vec<String>>()
        };
    }
    let mut value = summary(w);
    value["roles"] = json!(labelled(&d.roles));
    value["stages"] = json!(labelled(&d.stages));
    value["start"] = json!({
        "event": d.start.event.value,
        "stage": d.start.stage.value,
        "schema": *w.start_schema,
    });
    value["entities"] = json!(
        d.entities
            .iter()
            .map(|c| json!({"id": c.id.value, "label": c.label, "states": labelled(&c.states)}))
            .collect::<Vec<_>>()
    );
    value["commands"] = json!(
        d.commands
            .iter()
            .map(|c| json!({
                "id": c.id.value,
                "label": c.label,
                "roles": values!(c.roles),
                "stages": values!(c.stages),
                "input_schema": w.input_schemas.get(&c.id.value).cloned().or_else(|| match &c.input {
                    Some(SchemaRef::Inline(v)) => Some(v.clone()),
                    _ => None,
                }),
                "target": c.target.as_ref().map(|t| json!({
                    "collection": t.collection.value,
                    "key": t.key,
                    "states": values!(t.states),
                    "scoped_to_unit": t.scoped_to_unit,
                })),
                "emit": c.emit.value,
            }))
            .collect::<Vec<_>>()
    );
    value["events"] = json!(
        d.events
            .iter()
            .map(|e| json!({"type": e.event_type.value, "label": e.label, "schema_version": e.schema_version}))
            .collect::<Vec<_>>()
    );
    value["documents"] = json!(
        d.documents
            .iter()
            .map(|doc| json!({
                "id": doc.id.value,
                "label": doc.label,
                "type_code": doc.type_code,
                "on": values!(doc.on),
                "secret": doc.secret,
            }))
            .collect::<Vec<_>>()
    );
    value["parameters"] = json!(
        d.parameters
            .iter()
            .map(|p| json!({"id": p.id.value, "label": p.label, "default": p.default, "unconfirmed": p.unconfirmed}))
            .collect::<Vec<_>>()
    );
    Ok(Json(value))
}
