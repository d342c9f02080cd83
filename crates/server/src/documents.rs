//! A case's documents (the documents exporter's records), their files, numbering after
//! signature, and the register of outgoing documents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use axum::Json;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Datelike;
use giamsat_cases::{LoadedCase, load_case, run_command};
use giamsat_documents::exporter::{FileRecord, OutputFormat, read_records};
use giamsat_documents::register;
use giamsat_engine::CommandRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::cases::{AtQuery, command_time, load_visible};
use crate::error::ApiError;
use crate::extract::{JsonBody, P, Q};
use crate::scope::Scope;
use crate::{App, AppState};

/// The documents of a case the caller may see: a document is visible when the case event it
/// was rendered from is (for a unit token: an event of its own unit or of no unit).
async fn visible_documents(
    app: &App,
    case: &LoadedCase,
    scope: &Scope,
) -> Result<BTreeSet<String>, ApiError> {
    let records = read_records(&app.store, &case.state.id)
        .await
        .map_err(|e| ApiError::internal(format!("documents of case {}: {e}", case.state.id)))?;
    let mut visible = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for r in records {
        if !seen.insert(r.document.clone()) {
            continue;
        }
        let source = case
            .events
            .iter()
            .find(|e| e.stream_version == r.source.stream_version);
        let ok = match source {
            Some(e) => scope.document_visible(&e.data_value()),
            None => !scope.is_restricted(),
        };
        if ok {
            visible.insert(r.document);
        }
    }
    Ok(visible)
}

/// `GET /api/cases/{id}/documents`: each document version with its number (or none: a
/// draft) and files.
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
    P(id): P<String>,
) -> Result<Json<Value>, ApiError> {
    let (case, _, scope) = load_visible(&app, &principal, &id).await?;
    let visible = visible_documents(&app, &case, &scope).await?;
    let versions = register::list(&app.store, &id).await?;
    let out: Vec<Value> = versions
        .iter()
        .filter(|v| visible.contains(&v.document))
        .map(|v| {
            let mut value = serde_json::to_value(v).unwrap_or(Value::Null);
            value["downloads"] = json!(
                v.files
                    .iter()
                    .map(|f| (
                        f.format.extension(),
                        format!(
                            "/api/cases/{id}/documents/{}/{}/{}",
                            v.document,
                            v.version,
                            f.format.extension()
                        )
                    ))
                    .collect::<BTreeMap<_, _>>()
            );
            value
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

fn content_type(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Html => "text/html; charset=utf-8",
        OutputFormat::Md => "text/markdown; charset=utf-8",
        OutputFormat::Docx => {
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        }
    }
}

/// The file a record names, under the output folder; `None` for a path that would leave it.
fn file_path(dir: &Path, record: &FileRecord) -> Option<std::path::PathBuf> {
    let relative = Path::new(&record.path);
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(relative))
}

/// `GET /api/cases/{id}/documents/{document}/{version}/{format}`: a rendered file (`version`
/// as `2` or `v2`; `format` html, md or docx). The file must still have the SHA-256 its record
/// gives; the ETag is that hash.
pub async fn download(
    State(app): State<AppState>,
    principal: Principal,
    P((id, document, version, format)): P<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let (case, _, scope) = load_visible(&app, &principal, &id).await?;
    let not_found = || {
        ApiError::not_found(
            "document_not_found",
            format!("case {id} has no document {document} version {version} as {format}"),
        )
    };
    let number: u32 = version
        .strip_prefix('v')
        .unwrap_or(&version)
        .parse()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_version",
                format!("document version {version:?} must be a number such as 1 or v1"),
            )
        })?;
    let format = match format.as_str() {
        "html" => OutputFormat::Html,
        "md" => OutputFormat::Md,
        "docx" => OutputFormat::Docx,
        other => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("format {other:?} is not one of html, md, docx"),
            ));
        }
    };
    if !visible_documents(&app, &case, &scope)
        .await?
        .contains(&document)
    {
        return Err(not_found());
    }
    let versions = register::list(&app.store, &id).await?;
    let record = versions
        .iter()
        .find(|v| v.document == document && v.version == number)
        .and_then(|v| v.files.iter().find(|f| f.format == format))
        .ok_or_else(not_found)?;
    let Some(dir) = &app.documents_dir else {
        return Err(ApiError::not_found(
            "documents_not_configured",
            "this daemon has no documents folder (no documents exporter is configured)",
        ));
    };
    let path = file_path(dir, record).ok_or_else(|| {
        ApiError::internal(format!(
            "the record of {document} names the path {:?}, outside the documents folder",
            record.path
        ))
    })?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::not_found(
            "document_file_missing",
            format!(
                "the file {} of {document} v{number} cannot be read: {e}",
                path.display()
            ),
        )
    })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != record.sha256 {
        return Err(ApiError::conflict(
            "document_file_changed",
            format!(
                "the file {} no longer matches its record (sha256 {} recorded, {actual} on disk); the documents exporter may be rendering it again",
                record.path, record.sha256
            ),
        ));
    }
    let name = Path::new(&record.path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("document")
        .replace('"', "");
    let disposition = match format {
        OutputFormat::Docx => format!("attachment; filename=\"{name}\""),
        _ => format!("inline; filename=\"{name}\""),
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(format)));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", record.sha256)) {
        headers.insert(ETAG, v);
    }
    Ok((headers, bytes).into_response())
}

/// `POST /api/cases/{id}/documents/{document}/corrections` `{reason}` (admin, secretariat): asks
/// for a corrected version of an issued (numbered) document, as `giamsat documents correct`
/// does; the issued version is kept as it is and the documents exporter renders the next one.
pub async fn correct(
    State(app): State<AppState>,
    principal: Principal,
    P((id, document)): P<(String, String)>,
    Q(query): Q<AtQuery>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require(&[Role::Secretariat], "correct documents")?;
    let (_, workflow, _) = load_visible(&app, &principal, &id).await?;
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "reason"))
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("/{extra} is not a field of a correction request (reason)"),
        ));
    }
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_body",
                "/reason: why the document is corrected is required",
            )
        })?;
    let at = command_time(&app, &principal, query.at.as_deref(), &workflow)?;
    let version = register::request_correction(
        &app.store,
        &id,
        &document,
        reason,
        &principal.0.actor_text(),
        at,
    )
    .await
    .map_err(|e| match e {
        register::RegisterError::Invalid(message) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "document_not_correctable",
            message,
        ),
        other => other.into(),
    })?;
    app.metrics.events_appended(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"document": document, "version": version, "reason": reason})),
    ))
}

/// `POST /api/cases/{id}/documents/{document}/number` (admin, secretariat): numbers the
/// latest version of a signed document in its issuing body's series, and records the number
/// in the case when the workflow tracks the document, as `giamsat documents number` does.
pub async fn number(
    State(app): State<AppState>,
    principal: Principal,
    P((id, document)): P<(String, String)>,
    Q(query): Q<AtQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Secretariat], "number documents")?;
    let (case, workflow, _) = load_visible(&app, &principal, &id).await?;
    let at = command_time(&app, &principal, query.at.as_deref(), &workflow)?;
    let actor = principal.0.actor();
    let entry =
        register::assign_number(&app.store, &id, &document, &principal.0.actor_text(), at).await?;
    app.metrics.events_appended(1);
    // The same rule and command id as the CLI, so numbering from either records it once.
    let tracked = case
        .state
        .entity("documents", &document)
        .is_some_and(|e| e.state == "issued");
    let mut recorded = false;
    if tracked {
        let request = CommandRequest {
            id: Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("giamsat:number:{id}/{}", entry.symbol).as_bytes(),
            ),
            name: "assign_number".to_owned(),
            input: json!({"document": document, "number": entry.symbol}),
            actor,
            at,
        };
        let (_, events) = run_command(&app.store, &id, request).await?;
        recorded = !events.is_empty();
        app.metrics.events_appended(events.len());
    }
    tracing::info!(case = %id, document = %document, symbol = %entry.symbol, token = %principal.0.name, "document numbered");
    Ok(Json(json!({
        "entry": entry,
        "recorded_in_case": recorded,
    })))
}

#[derive(Debug, Deserialize)]
pub struct YearQuery {
    year: Option<i32>,
}

/// `GET /api/register?year=YYYY`: the register of outgoing documents of a year (default: this
/// year on the daemon's clock). A unit token sees the entries of its cases' documents it may
/// see.
pub async fn register(
    State(app): State<AppState>,
    principal: Principal,
    Q(query): Q<YearQuery>,
) -> Result<Json<Value>, ApiError> {
    let year = query.year.unwrap_or_else(|| app.clock.now().year());
    let entries = register::register(&app.store, year).await?;
    if principal.unit().is_none() {
        return Ok(Json(serde_json::to_value(entries).unwrap_or_default()));
    }
    let mut visible: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for entry in entries {
        if !visible.contains_key(&entry.case) {
            let documents = match load_case(&app.store, &entry.case).await? {
                Some(case) => {
                    let workflow = app.definitions.get(&app.store, &case.state).await?;
                    let scope = Scope::new(&principal, &workflow, &case.state);
                    if scope.is_member() {
                        visible_documents(&app, &case, &scope).await?
                    } else {
                        BTreeSet::new()
                    }
                }
                None => BTreeSet::new(),
            };
            visible.insert(entry.case.clone(), documents);
        }
        if visible
            .get(&entry.case)
            .is_some_and(|d| d.contains(&entry.document))
        {
            out.push(entry);
        }
    }
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}
