//! `/api/exporters`: each exporter's checkpoint, lag and parked events, and retrying a parked
//! event (after its cause was fixed).

use axum::Json;
use axum::extract::State;
use giamsat_exporter::{RetryError, checkpoint_name, parked};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::P;
use crate::{App, AppState, ExporterEntry};

/// Who may read exporter status: the operators and read-only tokens, not delegations or units.
const READERS: &[Role] = &[Role::Secretariat, Role::Viewer];

fn find<'a>(app: &'a App, id: &str) -> Result<&'a ExporterEntry, ApiError> {
    app.exporters.iter().find(|e| e.id == id).ok_or_else(|| {
        let ids: Vec<&str> = app.exporters.iter().map(|e| e.id.as_str()).collect();
        ApiError::not_found(
            "exporter_not_found",
            format!(
                "no exporter {id:?} (configured: {})",
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            ),
        )
    })
}

/// `GET /api/exporters`: type, enabled, checkpoint, lag (events, seconds), parked events and
/// what the runner counted since the daemon started.
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(READERS, "read exporter status")?;
    let mut out = Vec::new();
    for e in &app.exporters {
        let lag = e
            .runner
            .lag()
            .await
            .map_err(|err| ApiError::internal(err.to_string()))?;
        let parked = parked(&app.store, &e.id).await?.len();
        let checkpoint = app
            .store
            .load_checkpoint(&checkpoint_name(&e.id))
            .await?
            .unwrap_or(0);
        let status = e
            .runner
            .status()
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        out.push(json!({
            "id": e.id,
            "type": e.kind,
            "enabled": e.enabled,
            "checkpoint": checkpoint,
            "lag_events": lag.events,
            "lag_seconds": lag.seconds,
            "parked": parked,
            "handled": status.handled,
            "retries": status.retries,
            "last_error": status.last_error,
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /api/exporters/{id}/parked`: the events the exporter could not export, with errors.
async fn parked_list(app: &App, principal: &Principal, id: &str) -> Result<Value, ApiError> {
    principal.require(READERS, "read exporter status")?;
    find(app, id)?;
    Ok(serde_json::to_value(parked(&app.store, id).await?).unwrap_or_default())
}

pub async fn parked_events(
    State(app): State<AppState>,
    principal: Principal,
    P(id): P<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(parked_list(&app, &principal, &id).await?))
}

/// `POST /api/exporters/{id}/parked/{parked}/retry` (admin): exports the parked event again
/// now; on success it leaves the parked list, on failure it stays and the error is answered.
pub async fn retry(
    State(app): State<AppState>,
    principal: Principal,
    P((id, parked_id)): P<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[], "retry parked events")?;
    let entry = find(&app, &id)?;
    let parked_id: Uuid = parked_id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_parked_id",
            format!("parked id {parked_id:?} is not a UUID (see GET /api/exporters/{id}/parked)"),
        )
    })?;
    match entry.runner.retry_parked(parked_id).await {
        Ok(()) => {
            tracing::info!(exporter = %id, parked = %parked_id, token = %principal.0.name, "parked event exported on retry");
            Ok(Json(json!({ "exported": true, "parked": parked_id })))
        }
        Err(RetryError::NotParked(p)) => Err(ApiError::not_found(
            "parked_not_found",
            format!(
                "exporter {id} has no parked event {p} (already retried, or another exporter's)"
            ),
        )),
        Err(RetryError::Export(e)) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "export_failed",
            format!("exporter {id}: the export failed again: {e}"),
        )
        .with_details(json!({ "parked": parked_id, "still_parked": true }))),
        Err(RetryError::Runner(e)) => Err(ApiError::internal(e.to_string())),
    }
}
