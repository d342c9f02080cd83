//! A unit's page: its report's state, the report received (with the uploaded file and the
//! Phụ lục 03 figures and their rates), and the form to submit it. A unit token sees and submits
//! only its own unit's; the secretariat records any unit's report here.
//!
//! An uploaded file is kept as `<uploads>/<case>/<unit>/<sha256>.<ext>` (written under a
//! temporary name, then renamed; a file with the same content is kept once) and the command's
//! `file` field holds its SHA-256. The body size limit is the daemon's; above it the answer is
//! the 413 page.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::case::{
    FormPage, FormState, Ran, Seen, allowed, body_or_413, case_url, done_message, form_context,
    form_view, nonce_of, run, seen,
};
use super::forms::{CommandForm, FormData, Upload};
use super::session::{self, check_origin};
use super::{PageError, Pages, User, render, see_other, uploads_dir, view};
use crate::scope::unit_collections;

/// The hidden field that keeps a file uploaded with a form that was refused.
const UPLOADED_FIELD: &str = "tep-da-tai";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct UnitQuery {
    da: Option<String>,
    #[serde(rename = "da-gui-truoc")]
    sent_before: Option<String>,
}

/// The unit's collection and its entity (as the user may see it); a unit token asking for
/// another unit gets 403, an unknown unit 404.
fn unit_of(user: &User, seen: &Seen, unit: &str) -> Result<(String, Value), PageError> {
    if let Some(own) = user.principal.unit()
        && own != unit
    {
        tracing::info!(token = %user.principal.0.name, unit = own, asked = unit, case = %seen.case.state.id, "page denied: another unit's page");
        return Err(PageError::forbidden(
            "Đơn vị chỉ được xem và gửi báo cáo của chính đơn vị mình.",
        ));
    }
    unit_collections(&seen.workflow)
        .into_iter()
        .find_map(|c| {
            let e = seen.json["entities"][&c].get(unit)?.clone();
            Some((c, e))
        })
        .ok_or_else(PageError::not_found)
}

/// The commands of this unit's page: those the user may run now on this unit.
fn unit_commands<'a>(
    seen: &'a Seen,
    collection: &str,
    entity: &Value,
) -> Vec<&'a giamsat_engine::Command> {
    let state = entity["state"].as_str().unwrap_or_default();
    seen.json["available_commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| allowed(seen, c["id"].as_str()?))
        .filter(|c| {
            c.target.as_ref().is_some_and(|t| {
                t.scoped_to_unit
                    && t.collection.value == collection
                    && (t.states.is_empty() || t.states.iter().any(|s| s.value == state))
            })
        })
        .collect()
}

fn target_field(command: &giamsat_engine::Command) -> Option<String> {
    command
        .target
        .as_ref()?
        .key
        .strip_prefix('/')
        .map(str::to_owned)
}

fn unit_url(id: &str, unit: &str) -> String {
    format!("{}/don-vi/{}", case_url(id), view::encode_segment(unit))
}

/// The Phụ lục 03 figures of a received report, with rates: years as columns, fields as rows.
fn figures_view(report: &Value) -> Option<Value> {
    let items = report.get("phu_luc_03")?.as_array()?;
    if items.is_empty() {
        return None;
    }
    let mut years: Vec<i64> = items.iter().filter_map(|i| i["year"].as_i64()).collect();
    years.sort_unstable();
    years.dedup();
    let mut fields: Vec<String> = ["all", "land", "construction"]
        .iter()
        .filter(|f| items.iter().any(|i| i["field"] == **f))
        .map(|f| (*f).to_owned())
        .collect();
    for i in items {
        if let Some(f) = i["field"].as_str()
            && !fields.iter().any(|x| x == f)
        {
            fields.push(f.to_owned());
        }
    }
    let rows: Vec<Value> = fields
        .iter()
        .map(|f| {
            let cells: Vec<Value> = years
                .iter()
                .map(|y| {
                    let item = items
                        .iter()
                        .find(|i| i["year"].as_i64() == Some(*y) && i["field"] == f.as_str());
                    match item {
                        Some(i) => {
                            let total = i["total"].as_u64().unwrap_or(0);
                            let on_time = i["on_time"].as_u64().unwrap_or(0);
                            json!({
                                "total": total,
                                "on_time": on_time,
                                "rate": view::rate_text(on_time, total).unwrap_or_else(|| "—".to_owned()),
                            })
                        }
                        None => json!({"total": "", "on_time": "", "rate": ""}),
                    }
                })
                .collect();
            json!({"label": view::choice_label("field", f), "cells": cells})
        })
        .collect();
    Some(json!({"years": years, "rows": rows}))
}

fn unit_view(seen: &Seen, collection: &str, code: &str, entity: &Value) -> Value {
    let workflow = &seen.workflow;
    let tz = giamsat_engine::zone(workflow);
    let id = &seen.case.state.id;
    let data = &entity["data"];
    let state = entity["state"].as_str().unwrap_or_default();
    let report = data.get("report").filter(|r| r.is_object());
    let report_view = report.map(|r| {
        let file = r["file"].as_str().filter(|f| is_sha(f));
        json!({
            "received": r["received_at"].as_str().map(|t| view::when_text(t, tz)),
            "channel": r["channel"].as_str().map(|c| view::choice_label("channel", c)),
            "file_url": file.map(|f| format!("{}/tep/{f}", unit_url(id, code))),
            "file_sha": file,
            "figures": figures_view(r),
        })
    });
    let supplement = data.get("supplement").map(|s| {
        json!({
            "reason": s["reason"],
            "due": s["due_on"].as_str().and_then(view::date_text),
        })
    });
    json!({
        "code": code,
        "name": data["name"].as_str().unwrap_or(code),
        "collection": view::collection_label(workflow, collection),
        "state_label": view::state_label(workflow, collection, state),
        "report": report_view,
        "supplement": supplement,
        "reminded": data["last_reminder_at"].as_str().map(|t| view::when_text(t, tz)),
        "url": unit_url(id, code),
    })
}

fn is_sha(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A path segment that is safe as a folder name.
fn safe_segment(text: &str) -> Option<&str> {
    (!text.is_empty()
        && text.len() <= 100
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then_some(text)
}

fn upload_folder(root: &FsPath, case: &str, unit: &str) -> Result<PathBuf, PageError> {
    let (Some(case), Some(unit)) = (safe_segment(case), safe_segment(unit)) else {
        return Err(PageError::bad_request(
            "Mã hồ sơ hoặc mã đơn vị không dùng được làm tên thư mục lưu tệp.",
        ));
    };
    Ok(root.join(case).join(unit))
}

/// Stores an uploaded file by its SHA-256; returns the hash.
async fn store_upload(folder: &FsPath, upload: &Upload) -> Result<String, PageError> {
    let sha = hex::encode(Sha256::digest(&upload.bytes));
    let ext: String = upload
        .filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| (1..=10).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".to_owned());
    let failed = |e: std::io::Error| {
        PageError::internal(format!(
            "cannot store the upload in {}: {e}",
            folder.display()
        ))
    };
    tokio::fs::create_dir_all(folder).await.map_err(failed)?;
    if find_upload(folder, &sha).await.is_some() {
        return Ok(sha);
    }
    let path = folder.join(format!("{sha}.{ext}"));
    let temporary = folder.join(format!(".{sha}.{}.part", std::process::id()));
    tokio::fs::write(&temporary, &upload.bytes)
        .await
        .map_err(failed)?;
    tokio::fs::rename(&temporary, &path).await.map_err(failed)?;
    tracing::info!(file = %path.display(), bytes = upload.bytes.len(), "report file uploaded");
    Ok(sha)
}

/// The stored file with this hash, if any.
async fn find_upload(folder: &FsPath, sha: &str) -> Option<PathBuf> {
    let mut dir = tokio::fs::read_dir(folder).await.ok()?;
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == sha
            || name
                .strip_prefix(sha)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            return Some(entry.path());
        }
    }
    None
}

struct UnitPage<'a> {
    seen: &'a Seen,
    collection: String,
    code: String,
    entity: Value,
}

async fn forms_of(
    pages: &Pages,
    user: &User,
    unit: &UnitPage<'_>,
    refused: Option<(&str, &FormState)>,
) -> Result<Vec<Value>, PageError> {
    let seen = unit.seen;
    let id = &seen.case.state.id;
    let mut out = Vec::new();
    for cmd in unit_commands(seen, &unit.collection, &unit.entity) {
        let mut fixed = BTreeMap::new();
        if let Some(field) = target_field(cmd) {
            fixed.insert(field, json!(unit.code));
        }
        let ctx = form_context(pages, user, seen, fixed)?;
        let form = CommandForm::new(cmd, seen.workflow.input_schemas.get(&cmd.id.value), &ctx);
        let page = FormPage {
            seen,
            command: cmd,
            form,
            action: format!(
                "{}/lenh/{}",
                unit_url(id, &unit.code),
                view::encode_segment(&cmd.id.value)
            ),
            back: unit_url(id, &unit.code),
        };
        let fresh;
        let state = match refused {
            Some((name, state)) if name == cmd.id.value => state,
            _ => {
                fresh = FormState {
                    nonce: nonce_of(None)?,
                    ..FormState::default()
                };
                &fresh
            }
        };
        let mut view = form_view(user, &page, state);
        // Always multipart: the page's forms are the unit's reports.
        view["multipart"] = json!(true);
        out.push(view);
    }
    Ok(out)
}

fn render_page(
    pages: &Pages,
    user: &User,
    unit: &UnitPage<'_>,
    forms: Vec<Value>,
    flash: Option<String>,
    status: StatusCode,
) -> Response {
    let seen = unit.seen;
    let id = &seen.case.state.id;
    let view = unit_view(seen, &unit.collection, &unit.code, &unit.entity);
    let title = format!(
        "{} — hồ sơ {id}",
        view["name"].as_str().unwrap_or(&unit.code)
    );
    let mut page = session::context(user, &title);
    page["flash"] = json!(flash);
    page["live"] = json!(format!("{}/cap-nhat", case_url(id)));
    let uploads = uploads_dir(&pages.app).is_some();
    let context = json!({
        "page": page,
        "case": {
            "id": id,
            "url": case_url(id),
            "stage": view::stage_label(&seen.workflow, &seen.case.state.stage),
            "topic": seen.case.state.data.get("topic").and_then(Value::as_str),
        },
        "unit": view,
        "forms": forms,
        "uploads_off": !uploads,
        "max_upload": view::size_text(pages.app.max_body_bytes),
    });
    render(status, "unit", &context)
}

/// `GET /ho-so/{id}/don-vi/{unit}`: the unit's page.
pub(crate) async fn page(
    State(pages): State<Pages>,
    user: User,
    Path((id, unit)): Path<(String, String)>,
    Query(query): Query<UnitQuery>,
) -> Result<Response, PageError> {
    let seen = seen(&pages, &user, &id).await?;
    let (collection, entity) = unit_of(&user, &seen, &unit)?;
    let page = UnitPage {
        seen: &seen,
        collection,
        code: unit,
        entity,
    };
    let forms = forms_of(&pages, &user, &page, None).await?;
    let flash = done_message(
        &seen.workflow,
        query.da.as_deref(),
        query.sent_before.as_deref(),
    );
    Ok(render_page(
        &pages,
        &user,
        &page,
        forms,
        flash,
        StatusCode::OK,
    ))
}

/// `POST /ho-so/{id}/don-vi/{unit}/lenh/{command}`: runs a unit's command (its report) from the
/// form, with the uploaded file stored first.
pub(crate) async fn submit(
    State(pages): State<Pages>,
    user: User,
    Path((id, unit, command)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let body = body_or_413(&pages, body)?;
    let formdata = FormData::parse(&headers, &body)?;
    user.check_csrf(&formdata)?;
    let seen = seen(&pages, &user, &id).await?;
    let (collection, entity) = unit_of(&user, &seen, &unit)?;
    let unit_page = UnitPage {
        seen: &seen,
        collection,
        code: unit.clone(),
        entity,
    };
    let Some(cmd) = unit_commands(&seen, &unit_page.collection, &unit_page.entity)
        .into_iter()
        .find(|c| c.id.value == command)
    else {
        tracing::info!(token = %user.principal.0.name, case = %id, unit = %unit, command = %command, "page form refused: command not available for the unit");
        return Err(PageError::forbidden(format!(
            "Không thể thực hiện thao tác này cho {} lúc này (giai đoạn {}, trạng thái {}).",
            unit_page.entity["data"]["name"].as_str().unwrap_or(&unit),
            view::stage_label(&seen.workflow, &seen.case.state.stage),
            view::state_label(
                &seen.workflow,
                &unit_page.collection,
                unit_page.entity["state"].as_str().unwrap_or_default()
            ),
        )));
    };
    let mut fixed = BTreeMap::new();
    if let Some(field) = target_field(cmd) {
        fixed.insert(field, json!(unit));
    }
    let ctx = form_context(&pages, &user, &seen, fixed)?;
    let form = CommandForm::new(cmd, seen.workflow.input_schemas.get(&command), &ctx);
    let mut file = None;
    let mut extra = Value::Null;
    if let Some(field) = form.file_field() {
        let root = uploads_dir(&pages.app).ok_or_else(|| {
            PageError::bad_request("Máy chủ chưa cấu hình thư mục lưu tệp tải lên.")
        })?;
        let folder = upload_folder(&root, &id, &unit)?;
        if let Some(upload) = formdata.file(field) {
            let sha = store_upload(&folder, upload).await?;
            extra = json!({"uploaded": {"sha": sha, "name": upload.filename}});
            file = Some(sha);
        } else if let Some(sha) = formdata.get(UPLOADED_FIELD).filter(|s| is_sha(s))
            && find_upload(&folder, sha).await.is_some()
        {
            extra = json!({"uploaded": {"sha": sha, "name": Value::Null}});
            file = Some(sha.to_owned());
        }
    }
    let page = FormPage {
        seen: &seen,
        command: cmd,
        form,
        action: format!(
            "{}/lenh/{}",
            unit_url(&id, &unit),
            view::encode_segment(&command)
        ),
        back: unit_url(&id, &unit),
    };
    match run(
        &pages,
        &user,
        &page,
        &formdata,
        &ctx,
        file.as_deref(),
        extra,
    )
    .await?
    {
        Ran::Done => Ok(see_other(&format!(
            "{}?da={}",
            unit_url(&id, &unit),
            view::encode_query(&command)
        ))),
        Ran::SentBefore => Ok(see_other(&format!(
            "{}?da-gui-truoc={}",
            unit_url(&id, &unit),
            view::encode_query(&command)
        ))),
        Ran::Again(state, status) => {
            let forms = forms_of(&pages, &user, &unit_page, Some((&command, &state))).await?;
            Ok(render_page(&pages, &user, &unit_page, forms, None, status))
        }
    }
}

/// `GET /ho-so/{id}/don-vi/{unit}/tep/{sha256}`: a report file uploaded for the unit, checked
/// against its hash.
pub(crate) async fn download(
    State(pages): State<Pages>,
    user: User,
    Path((id, unit, file)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let seen = seen(&pages, &user, &id).await?;
    unit_of(&user, &seen, &unit)?;
    let sha = file.split('.').next().unwrap_or_default();
    if !is_sha(sha) {
        return Err(PageError::not_found());
    }
    let root = uploads_dir(&pages.app).ok_or_else(PageError::not_found)?;
    let folder = upload_folder(&root, &id, &unit)?;
    let path = find_upload(&folder, sha)
        .await
        .ok_or_else(PageError::not_found)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| PageError::internal(format!("cannot read {}: {e}", path.display())))?;
    if hex::encode(Sha256::digest(&bytes)) != sha {
        return Err(PageError::internal(format!(
            "the uploaded file {} no longer matches its SHA-256",
            path.display()
        )));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("bin")
        .to_owned();
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"bao-cao-{}-{}.{ext}\"",
        safe_segment(&unit).unwrap_or("don-vi"),
        &sha[..12]
    )) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok((headers, bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_show_rates_by_year_and_field() {
        let report = json!({"phu_luc_03": [
            {"year": 2023, "field": "all", "total": 120, "on_time": 118},
            {"year": 2022, "field": "land", "total": 40, "on_time": 38},
            {"year": 2022, "field": "all", "total": 0, "on_time": 0},
        ]});
        let v = figures_view(&report).expect("figures");
        assert_eq!(v["years"], json!([2022, 2023]));
        assert_eq!(v["rows"][0]["label"], "Tất cả hồ sơ thủ tục hành chính");
        assert_eq!(v["rows"][0]["cells"][0]["rate"], "—");
        assert_eq!(v["rows"][0]["cells"][1]["rate"], "98,3%");
        assert_eq!(v["rows"][1]["cells"][0]["rate"], "95,0%");
        assert_eq!(v["rows"][1]["cells"][1]["rate"], "");
    }

    #[test]
    fn folder_names_are_plain() {
        assert_eq!(safe_segment("xa-quai-to"), Some("xa-quai-to"));
        assert_eq!(safe_segment(".."), None);
        assert_eq!(safe_segment("a/b"), None);
        assert_eq!(safe_segment(""), None);
    }
}
