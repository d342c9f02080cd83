//! The case list, the case page, command forms, numbering and downloads. Each page reads the
//! case through the API's own functions (`load_visible`, `case_json`, the documents list, the
//! history, verify) as the signed-in token, and each form runs its command through the API's
//! command handler, so pages show and do exactly what the API allows that token.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use giamsat_cases::LoadedCase;
use giamsat_engine::{Command, Workflow};
use serde::Deserialize;
use serde_json::{Value, json};

use super::forms::{CommandForm, Entered, FormContext, FormData, Problems};
use super::session::{self, check_origin};
use super::{PageError, Pages, User, render, schedule, see_other, view};
use crate::auth::Role;
use crate::cases::{AtQuery, case_json, command_time, load_visible};
use crate::error::ApiError;
use crate::extract::{JsonBody, P, Q};
use crate::scope::{Scope, unit_collections};

/// A case as the signed-in user sees it.
pub(crate) struct Seen {
    pub case: LoadedCase,
    pub workflow: Workflow,
    pub scope: Scope,
    /// The API's view of the case (`GET /api/cases/{id}`).
    pub json: Value,
}

pub(crate) async fn seen(pages: &Pages, user: &User, id: &str) -> Result<Seen, PageError> {
    let (case, workflow, scope) = load_visible(&pages.app, &user.principal, id).await?;
    let json = case_json(&pages.app, &user.principal, &workflow, &case.state, &scope);
    Ok(Seen {
        case,
        workflow,
        scope,
        json,
    })
}

pub(crate) fn case_url(id: &str) -> String {
    format!("/ho-so/{}", view::encode_segment(id))
}

/// Reads a posted body, answering the 413 page when it is larger than the daemon allows.
pub(crate) fn body_or_413(
    pages: &Pages,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, PageError> {
    body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => PageError::too_large(pages.app.max_body_bytes),
        _ => PageError::bad_request("Không đọc được dữ liệu gửi lên."),
    })
}

/// `GET /`: the cases the user may see, with stage, next deadline and warnings.
pub(crate) async fn list(State(pages): State<Pages>, user: User) -> Result<Response, PageError> {
    let app = &pages.app;
    let listed = crate::cases::list(State(app.clone()), user.principal.clone())
        .await?
        .0;
    let mut rows = Vec::new();
    for item in listed.as_array().into_iter().flatten() {
        let id = item["id"].as_str().unwrap_or_default();
        let Ok(seen) = seen(&pages, &user, id).await else {
            continue;
        };
        let tz = giamsat_engine::zone(&seen.workflow);
        let deadline = item.get("next_deadline").filter(|d| !d.is_null()).map(|d| {
            json!({
                "when": d["due"].as_str().and_then(|t| view::date_time_text(t, tz)),
                "label": d["label"],
            })
        });
        rows.push(json!({
            "id": id,
            "url": case_url(id),
            "topic": seen.case.state.data.get("topic").and_then(Value::as_str),
            "workflow": seen.workflow.definition.label,
            "stage": view::stage_label(&seen.workflow, &seen.case.state.stage),
            "deadline": deadline,
            "warnings": seen.json["warnings"].as_array().map_or(0, Vec::len),
        }));
    }
    let context = json!({
        "page": session::context(&user, "Danh sách hồ sơ giám sát"),
        "cases": rows,
        "is_unit": user.principal.role() == Role::Unit,
        "can_start": matches!(user.principal.role(), Role::Admin | Role::Secretariat),
    });
    Ok(render(StatusCode::OK, "cases", &context))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CaseQuery {
    /// The command just run (`?da=issue_notice`): its label is shown as done.
    da: Option<String>,
    /// The document just numbered (`?da-cap-so=thong-bao-lich`).
    #[serde(rename = "da-cap-so")]
    numbered: Option<String>,
    /// A form sent again after it was recorded (`?da-gui-truoc=issue_notice`).
    #[serde(rename = "da-gui-truoc")]
    sent_before: Option<String>,
    /// The case was just started from the form (`?da-tao=1`).
    #[serde(rename = "da-tao")]
    created: Option<String>,
}

/// The message after a redirect: the command just recorded, or a form recorded before.
pub(crate) fn done_message(
    workflow: &Workflow,
    done: Option<&str>,
    sent_before: Option<&str>,
) -> Option<String> {
    if let Some(c) = sent_before.and_then(|c| workflow.command(c)) {
        return Some(format!(
            "Biểu mẫu “{}” đã được ghi nhận từ lần gửi trước; lần gửi này không thay đổi gì. \
             Mở lại biểu mẫu nếu cần gửi nội dung khác.",
            c.label
        ));
    }
    done.and_then(|c| workflow.command(c))
        .map(|c| format!("Đã ghi nhận: {}.", c.label))
}

/// A state's colour on the page, read from its id: overdue red, late or partial amber, done
/// green, cancelled grey, waiting neutral.
fn state_class(state: &str) -> &'static str {
    let has = |part: &str| state.contains(part);
    if has("overdue") {
        "xau"
    } else if has("late")
        || has("supplement")
        || has("unsatisf")
        || has("partly")
        || has("not_completed")
    {
        "canh-bao"
    } else if has("cancel") || has("not_done") {
        "huy"
    } else if has("received")
        || has("completed")
        || has("held")
        || has("numbered")
        || has("recorded")
    {
        "tot"
    } else {
        "cho"
    }
}

/// The order of a collection's keys: as the start data lists them, then the rest.
fn start_order(
    workflow: &Workflow,
    state: &giamsat_engine::CaseState,
    collection: &str,
) -> Vec<String> {
    let mut keys = Vec::new();
    for source in workflow
        .definition
        .start
        .entities
        .iter()
        .filter(|s| s.collection.value == collection)
    {
        let Some(items) = state
            .data
            .pointer(source.from.strip_prefix("/input").unwrap_or(&source.from))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for item in items {
            if let Some(key) = item.pointer(&source.key).and_then(Value::as_str)
                && !keys.iter().any(|k| k == key)
            {
                keys.push(key.to_owned());
            }
        }
    }
    if let Some(entities) = state.entities.get(collection) {
        for key in entities.keys() {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys
}

/// The unit collections as report grids: each unit's state, report and supplement.
fn unit_grids(user: &User, seen: &Seen) -> Vec<Value> {
    let workflow = &seen.workflow;
    let tz = giamsat_engine::zone(workflow);
    let id = &seen.case.state.id;
    let can_report = |collection: &str| {
        seen.json["available_commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| workflow.command(c["id"].as_str()?))
            .any(|c| {
                c.target
                    .as_ref()
                    .is_some_and(|t| t.scoped_to_unit && t.collection.value == collection)
            })
    };
    unit_collections(workflow)
        .into_iter()
        .map(|collection| {
            let entities = &seen.json["entities"][&collection];
            let rows: Vec<Value> = start_order(workflow, &seen.case.state, &collection)
                .into_iter()
                .filter_map(|key| {
                    let e = entities.get(&key)?;
                    let data = &e["data"];
                    let state = e["state"].as_str().unwrap_or_default();
                    let report = data.get("report");
                    let supplement = data.get("supplement").map(|s| {
                        let due = s["due_on"].as_str().and_then(view::date_text);
                        let reason = s["reason"].as_str().unwrap_or_default();
                        match due {
                            Some(due) => format!("Hạn {due}: {reason}"),
                            None => reason.to_owned(),
                        }
                    });
                    Some(json!({
                        "code": key,
                        "name": data["name"].as_str().unwrap_or(&key),
                        "state_label": view::state_label(workflow, &collection, state),
                        "state_class": state_class(state),
                        "received": report
                            .and_then(|r| r["received_at"].as_str())
                            .map(|t| view::when_text(t, tz)),
                        "channel": report
                            .and_then(|r| r["channel"].as_str())
                            .map(|c| view::choice_label("channel", c)),
                        "has_file": report.is_some_and(|r| r.get("file").is_some()),
                        "supplement": supplement,
                        "reminded": data["last_reminder_at"].as_str().map(|t| view::when_text(t, tz)),
                        "url": format!("{}/don-vi/{}", case_url(id), view::encode_segment(&key)),
                    }))
                })
                .collect();
            json!({
                "id": collection,
                "label": view::collection_label(workflow, &collection),
                "rows": rows,
                "can_report": can_report(&collection) && user.principal.role() != Role::Viewer,
            })
        })
        .collect()
}

/// The fields other collections show, in this order, when some entity has them.
const ENTITY_FIELDS: &[(&str, &str)] = &[
    ("member", "Thành viên"),
    ("text", "Nội dung"),
    ("responsible", "Cơ quan thực hiện"),
    ("deliverable", "Sản phẩm"),
    ("deadline", "Hạn thực hiện"),
];

/// Collections other than units, visits (the schedule) and documents: recommendations,
/// findings, ... with their states and deadlines.
fn other_collections(seen: &Seen, shown: &[String]) -> Vec<Value> {
    let workflow = &seen.workflow;
    let tz = giamsat_engine::zone(workflow);
    let mut out = Vec::new();
    for collection in &workflow.definition.entities {
        let name = &collection.id.value;
        if shown.contains(name) || name == "documents" {
            continue;
        }
        let Some(entities) = seen.json["entities"][name].as_object() else {
            continue;
        };
        if entities.is_empty() {
            continue;
        }
        let columns: Vec<(&str, &str)> = ENTITY_FIELDS
            .iter()
            .copied()
            .filter(|(f, _)| entities.values().any(|e| e["data"].get(*f).is_some()))
            .collect();
        let rows: Vec<Value> = start_order(workflow, &seen.case.state, name)
            .into_iter()
            .filter_map(|key| {
                let e = entities.get(&key)?;
                let data = &e["data"];
                let state = e["state"].as_str().unwrap_or_default();
                let cells: Vec<String> = columns
                    .iter()
                    .map(|(f, _)| match data.get(*f) {
                        Some(Value::String(s)) if *f == "deadline" => {
                            view::date_text(s).unwrap_or_else(|| s.clone())
                        }
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    })
                    .collect();
                let progress = data.get("last_progress").map(|p| {
                    let status = p["status"].as_str().unwrap_or_default();
                    let when = p["reported_at"].as_str().map(|t| view::when_text(t, tz));
                    let mut text = view::state_label(workflow, name, status);
                    if let Some(when) = when {
                        text = format!("{text} (báo cáo {when})");
                    }
                    if let Some(evidence) = p["evidence"].as_str() {
                        text = format!("{text}: {evidence}");
                    }
                    text
                });
                Some(json!({
                    "key": key,
                    "cells": cells,
                    "state_label": view::state_label(workflow, name, state),
                    "state_class": state_class(state),
                    "progress": progress,
                }))
            })
            .collect();
        out.push(json!({
            "id": name,
            "label": collection.label,
            "columns": columns.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            "rows": rows,
            "has_progress": rows.iter().any(|r| !r["progress"].is_null()),
        }));
    }
    out
}

/// The case's warnings in Vietnamese, a unit's code replaced by its name (`xa-quai-cang` →
/// `xã Quài Cang`).
fn warning_texts(seen: &Seen) -> Vec<String> {
    let names: Vec<(String, String)> = unit_collections(&seen.workflow)
        .iter()
        .filter_map(|c| seen.json["entities"][c].as_object())
        .flat_map(|entities| {
            entities.iter().filter_map(|(code, e)| {
                let name = e.pointer("/data/name")?.as_str()?;
                Some((code.clone(), name.to_owned()))
            })
        })
        .collect();
    seen.json["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| {
            let mut text = w["message"].as_str()?.to_owned();
            let key = w["entity"]
                .as_str()
                .and_then(|e| e.split_once('/'))
                .map(|(_, k)| k);
            if let Some(key) = key
                && let Some((_, name)) = names.iter().find(|(code, _)| code == key)
            {
                text = text.replace(&format!(" {key} "), &format!(" {name} "));
            }
            Some(text)
        })
        .collect()
}

fn stage_timeline(seen: &Seen) -> Vec<Value> {
    let workflow = &seen.workflow;
    let tz = giamsat_engine::zone(workflow);
    let state = &seen.case.state;
    workflow
        .definition
        .stages
        .iter()
        .map(|s| {
            let reached = state.stages.iter().rev().find(|c| c.stage == s.id.value);
            json!({
                "label": s.label,
                "reached": reached.is_some(),
                "current": state.stage == s.id.value,
                "date": reached.map(|c| view::when_text(&c.at, tz)),
            })
        })
        .collect()
}

async fn documents_view(pages: &Pages, user: &User, seen: &Seen) -> Result<Vec<Value>, PageError> {
    let id = seen.case.state.id.clone();
    let listed = crate::documents::list(
        State(pages.app.clone()),
        user.principal.clone(),
        P(id.clone()),
    )
    .await?
    .0;
    let listed: Vec<Value> = listed.as_array().cloned().unwrap_or_default();
    // A version numbered in the register shows its number at once, before the documents
    // exporter has rendered it again with the number.
    let mut registered: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut years: Vec<i32> = listed
        .iter()
        .filter(|d| d["symbol"].is_null())
        .filter_map(|d| d["date"].as_str()?.get(..4)?.parse().ok())
        .collect();
    years.sort_unstable();
    years.dedup();
    for year in years {
        let entries = giamsat_documents::register::register(&pages.app.store, year)
            .await
            .map_err(ApiError::from)?;
        for e in entries.into_iter().filter(|e| e.case == id) {
            registered.insert((e.document, u64::from(e.version)), e.symbol);
        }
    }
    let may_number = matches!(user.principal.role(), Role::Admin | Role::Secretariat);
    Ok(listed
        .iter()
        .map(|d| {
            let document = d["document"].as_str().unwrap_or_default();
            let version = d["version"].as_u64().unwrap_or(1);
            let downloads: Vec<Value> = ["html", "docx", "md"]
                .iter()
                .filter(|f| d["downloads"].get(**f).is_some())
                .map(|f| {
                    json!({
                        "format": f.to_uppercase(),
                        "url": format!(
                            "{}/van-ban/{}/{version}/{f}",
                            case_url(&id),
                            view::encode_segment(document)
                        ),
                    })
                })
                .collect();
            let pending = registered.get(&(document.to_owned(), version));
            let number = d["symbol"].as_str().or(pending.map(String::as_str));
            json!({
                "document": document,
                "label": d["label"],
                "version": version,
                "number": number.unwrap_or("Dự thảo"),
                "draft": number.is_none(),
                "rendering": d["symbol"].is_null() && pending.is_some(),
                "date": d["date"].as_str().and_then(view::date_text),
                "excerpt": d["excerpt"],
                "downloads": downloads,
                "can_number": number.is_none() && may_number,
                "number_url": format!(
                    "{}/van-ban/{}/cap-so",
                    case_url(&id),
                    view::encode_segment(document)
                ),
            })
        })
        .collect())
}

async fn history_view(
    pages: &Pages,
    user: &User,
    seen: &Seen,
) -> Result<(Vec<Value>, Value), PageError> {
    let id = seen.case.state.id.clone();
    let workflow = &seen.workflow;
    let tz = giamsat_engine::zone(workflow);
    let events = crate::cases::history(State(pages.app.clone()), user.principal.clone(), P(id))
        .await?
        .0;
    let rows = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let data = &e["data"];
            let actor = match (data.pointer("/actor/role").and_then(Value::as_str), data.pointer("/actor/id").and_then(Value::as_str)) {
                (Some(role), Some(id)) => format!("{} ({id})", view::workflow_role_label(workflow, role)),
                (Some(role), None) => view::workflow_role_label(workflow, role),
                _ => "—".to_owned(),
            };
            let hash = e["hash"].as_str().unwrap_or_default();
            json!({
                "version": e["stream_version"],
                "position": e["position"],
                "at": data["at"].as_str().map(|t| view::when_text(t, tz)),
                "label": view::event_label(workflow, e["event_type"].as_str().unwrap_or_default()),
                "command": view::command_label(workflow, data["command"].as_str().unwrap_or_default()),
                "actor": actor,
                "hash": hash.get(..16).unwrap_or(hash),
                "redacted": e.get("redacted").is_some(),
                "timer": data.get("timer").is_some(),
            })
        })
        .collect();
    let verified = crate::system::verify(State(pages.app.clone()), user.principal.clone())
        .await?
        .0;
    let verify = json!({
        "intact": verified["intact"] == Value::Bool(true),
        "checked": verified["events_checked"],
        "last_position": verified["last_position"],
        "message": verified["message"],
    });
    Ok((rows, verify))
}

/// The commands the page offers as forms: those the role may run now, except the ones a unit's
/// page offers (a report for one unit) and document numbering (the documents' own button,
/// which numbers in the register first).
fn command_links(seen: &Seen) -> Vec<Value> {
    let id = &seen.case.state.id;
    seen.json["available_commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| seen.workflow.command(c["id"].as_str()?))
        .filter(|c| !c.target.as_ref().is_some_and(|t| t.scoped_to_unit))
        .filter(|c| c.id.value != "assign_number")
        .map(|c| {
            json!({
                "id": c.id.value,
                "label": c.label,
                "url": format!("{}/lenh/{}", case_url(id), view::encode_segment(&c.id.value)),
            })
        })
        .collect()
}

/// `GET /ho-so/{id}`: the case page.
pub(crate) async fn show(
    State(pages): State<Pages>,
    user: User,
    Path(id): Path<String>,
    Query(query): Query<CaseQuery>,
) -> Result<Response, PageError> {
    let seen = seen(&pages, &user, &id).await?;
    let workflow = &seen.workflow;
    let state = &seen.case.state;
    let tz = giamsat_engine::zone(workflow);
    let now = pages.app.clock.now();
    let entries = schedule::entries(workflow, &seen.case, &seen.scope, now);
    let units = unit_grids(&user, &seen);
    let mut shown: Vec<String> = unit_collections(workflow).into_iter().collect();
    for n in &workflow.definition.notifications {
        for c in &n.calendar {
            if let Some(each) = &c.each {
                shown.push(each.value.clone());
            }
        }
    }
    let documents = documents_view(&pages, &user, &seen).await?;
    let archive = archive_view(&pages, &user, &id).await?;
    let (history, verify) = history_view(&pages, &user, &seen).await?;
    let mut flash = done_message(workflow, query.da.as_deref(), query.sent_before.as_deref());
    if query.created.is_some() {
        flash = Some(format!("Đã tạo hồ sơ {id}."));
    }
    if let Some(doc) = query.numbered.as_deref()
        && let Some(d) = documents
            .iter()
            .find(|d| d["document"] == doc && !d["draft"].as_bool().unwrap_or(true))
    {
        flash = Some(format!(
            "Đã cấp số {} cho văn bản “{}”.",
            d["number"].as_str().unwrap_or_default(),
            d["label"].as_str().unwrap_or(doc)
        ));
    }
    let own_unit = user.principal.unit().map(|u| {
        json!({
            "code": u,
            "url": format!("{}/don-vi/{}", case_url(&id), view::encode_segment(u)),
        })
    });
    let title = format!("Hồ sơ {id}");
    let mut page = session::context(&user, &title);
    page["flash"] = json!(flash);
    page["live"] = json!(format!("{}/cap-nhat", case_url(&id)));
    let context = json!({
        "page": page,
        "case": {
            "id": id,
            "url": case_url(&id),
            "workflow": workflow.definition.label,
            "topic": state.data.get("topic").and_then(Value::as_str),
            "stage": view::stage_label(workflow, &state.stage),
            "started": view::when_text(&state.started_at, tz),
            "updated": view::when_text(&state.updated_at, tz),
            "version": state.stream_version,
        },
        "warnings": warning_texts(&seen),
        "timeline": stage_timeline(&seen),
        "unit_grids": units,
        "own_unit": own_unit,
        "schedule": schedule::view(&id, &entries),
        "documents": documents,
        "downloads_off": pages.app.documents_dir.is_none(),
        "archive": archive,
        "collections": other_collections(&seen, &shown),
        "commands": command_links(&seen),
        "history": history,
        "verify": verify,
        "csrf": user.csrf,
    });
    Ok(render(StatusCode::OK, "case", &context))
}

/// `GET /ho-so/{id}/cap-nhat`: the API's event stream of this case, for the page's script.
pub(crate) async fn updates(
    State(pages): State<Pages>,
    user: User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    load_visible(&pages.app, &user.principal, &id).await?;
    let query: crate::events::EventsQuery =
        serde_json::from_value(json!({ "stream": format!("case/{id}") }))
            .map_err(|e| PageError::internal(e.to_string()))?;
    let stream = crate::events::stream(
        State(pages.app.clone()),
        user.principal.clone(),
        headers,
        Q(query),
    )
    .await?;
    Ok(stream.into_response())
}

/// The form of a command on a case, as the user may run it.
pub(crate) struct FormPage<'a> {
    pub seen: &'a Seen,
    pub command: &'a Command,
    pub form: CommandForm,
    pub action: String,
    pub back: String,
}

/// Builds the form context of a case for a user.
pub(crate) fn form_context<'a>(
    pages: &Pages,
    user: &User,
    seen: &'a Seen,
    fixed: BTreeMap<String, Value>,
) -> Result<FormContext<'a>, PageError> {
    let now = command_time(&pages.app, &user.principal, None, &seen.workflow)?;
    Ok(FormContext {
        workflow: &seen.workflow,
        entities: &seen.json["entities"],
        data: &seen.json["data"],
        now,
        tz: giamsat_engine::zone(&seen.workflow),
        fixed,
        times_are_now: user.principal.role() == Role::Unit,
        uploads: super::uploads_dir(&pages.app).is_some(),
    })
}

/// Whether the user may run `command` on the case now (the API's `available_commands`).
pub(crate) fn allowed<'a>(seen: &'a Seen, command: &str) -> Option<&'a Command> {
    let listed = seen.json["available_commands"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["id"] == command);
    listed.then(|| seen.workflow.command(command)).flatten()
}

fn not_allowed(seen: &Seen, command: &str) -> PageError {
    let label = seen
        .workflow
        .command(command)
        .map_or_else(|| command.to_owned(), |c| c.label.clone());
    PageError::forbidden(format!(
        "Không thể thực hiện “{label}”: thao tác này không dành cho vai trò của bạn hoặc không \
         thực hiện được ở giai đoạn hiện tại ({}).",
        view::stage_label(&seen.workflow, &seen.case.state.stage)
    ))
}

fn new_nonce() -> Result<String, PageError> {
    let mut buf = [0u8; 16];
    getrandom::fill(&mut buf)
        .map_err(|e| PageError::internal(format!("cannot read random bytes: {e}")))?;
    Ok(hex::encode(buf))
}

/// The submission's nonce (`lan-gui`): kept when valid, else new. It is the command's
/// Idempotency-Key, so a form sent twice records its command once.
pub(crate) fn nonce_of(form: Option<&FormData>) -> Result<String, PageError> {
    match form.and_then(|f| f.get(NONCE_FIELD)) {
        Some(n) if (16..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(n.to_owned())
        }
        _ => new_nonce(),
    }
}

pub(crate) const NONCE_FIELD: &str = "lan-gui";

/// What a form page shows besides its fields.
#[derive(Debug, Default)]
pub(crate) struct FormState {
    pub entered: Option<Entered>,
    pub problems: Problems,
    /// The workflow's Vietnamese rejection message.
    pub rejection: Option<String>,
    pub nonce: String,
    /// Extra context for the template (the unit page's file already uploaded).
    pub extra: Value,
}

pub(crate) fn form_view(user: &User, page: &FormPage<'_>, state: &FormState) -> Value {
    let entered = state
        .entered
        .clone()
        .unwrap_or_else(|| page.form.defaults());
    json!({
        "id": page.command.id.value,
        "label": page.command.label,
        // A unit sends its report; the workflow's label says what the office does with it.
        "submit": if user.principal.role() == Role::Unit
            && page.command.target.as_ref().is_some_and(|t| t.scoped_to_unit)
        {
            "Gửi báo cáo".to_owned()
        } else {
            page.command.label.clone()
        },
        "action": page.action,
        "back": page.back,
        "multipart": page.form.has_file(),
        "fields": page.form.fields(&entered, &state.problems),
        "empty": page.form.is_empty(),
        "problems": state.problems.messages(),
        "rejection": state.rejection,
        "csrf": user.csrf,
        "nonce": state.nonce,
        "extra": state.extra,
    })
}

fn render_form(
    user: &User,
    page: &FormPage<'_>,
    state: &FormState,
    status: StatusCode,
) -> Response {
    let seen = page.seen;
    let id = &seen.case.state.id;
    let mut context_page = session::context(user, &page.command.label);
    context_page["live"] = json!(format!("{}/cap-nhat", case_url(id)));
    let context = json!({
        "page": context_page,
        "case": {
            "id": id,
            "url": case_url(id),
            "stage": view::stage_label(&seen.workflow, &seen.case.state.stage),
            "topic": seen.case.state.data.get("topic").and_then(Value::as_str),
        },
        "form": form_view(user, page, state),
    });
    render(status, "command", &context)
}

/// `GET /ho-so/{id}/lenh/{command}`: a command's form.
pub(crate) async fn command_form(
    State(pages): State<Pages>,
    user: User,
    Path((id, command)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let seen = seen(&pages, &user, &id).await?;
    let Some(cmd) = allowed(&seen, &command) else {
        return Err(not_allowed(&seen, &command));
    };
    let ctx = form_context(&pages, &user, &seen, BTreeMap::new())?;
    let form = CommandForm::new(cmd, seen.workflow.input_schemas.get(&command), &ctx);
    let page = FormPage {
        seen: &seen,
        command: cmd,
        form,
        action: format!("{}/lenh/{}", case_url(&id), view::encode_segment(&command)),
        back: case_url(&id),
    };
    let state = FormState {
        nonce: nonce_of(None)?,
        ..FormState::default()
    };
    Ok(render_form(&user, &page, &state, StatusCode::OK))
}

/// What running a form's command came to.
pub(crate) enum Ran {
    Done,
    /// This very form (its submission id) was recorded before: nothing more was done.
    SentBefore,
    /// Not run or refused: show the form again with this.
    Again(Box<FormState>, StatusCode),
}

/// Runs a form's command through the API's command handler, with the form's nonce as the
/// Idempotency-Key; a refusal becomes the form again with the workflow's Vietnamese message.
pub(crate) async fn run(
    pages: &Pages,
    user: &User,
    page: &FormPage<'_>,
    formdata: &FormData,
    ctx: &FormContext<'_>,
    file: Option<&str>,
    extra: Value,
) -> Result<Ran, PageError> {
    let nonce = nonce_of(Some(formdata))?;
    let entered = page.form.entered(formdata);
    let again =
        |problems: Problems, rejection: Option<String>, status: StatusCode, nonce: String| {
            Ran::Again(
                Box::new(FormState {
                    entered: Some(entered.clone()),
                    problems,
                    rejection,
                    nonce,
                    extra: extra.clone(),
                }),
                status,
            )
        };
    if page.form.adds_row(formdata) {
        return Ok(again(Problems::default(), None, StatusCode::OK, nonce));
    }
    let input = match page.form.input(&entered, file, ctx) {
        Ok(input) => input,
        Err(problems) => {
            return Ok(again(
                problems,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
                nonce,
            ));
        }
    };
    let id = page.seen.case.state.id.clone();
    let command = page.command.id.value.clone();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&nonce) {
        headers.insert("idempotency-key", v);
    }
    let result = crate::cases::command(
        State(pages.app.clone()),
        user.principal.clone(),
        P((id, command)),
        headers,
        Q(AtQuery::default()),
        JsonBody(input),
    )
    .await;
    match result {
        Ok(_) => Ok(Ran::Done),
        Err(e) if e.code == "idempotency_key_reused" => Ok(Ran::SentBefore),
        Err(e) => refused(e, page, nonce)
            .map(|(problems, rejection, status, nonce)| again(problems, rejection, status, nonce)),
    }
}

type Refusal = (Problems, Option<String>, StatusCode, String);

/// A refused command as what the form shows: the Vietnamese message, on the field it names
/// when the input did not fit the schema.
fn refused(e: ApiError, page: &FormPage<'_>, nonce: String) -> Result<Refusal, PageError> {
    let rejected = e.details.get("rejected") == Some(&Value::Bool(true));
    if rejected {
        let vi = e.details["message_vi"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut problems = Problems::default();
        if e.code == "invalid_input"
            && let Some(rest) = e.message.strip_prefix("input at ")
            && let Some((pointer, detail)) = rest.split_once(": ")
            && let Some((label, field)) = page.form.locate(pointer)
        {
            problems.fields.insert(
                field,
                format!("Dữ liệu tại {label} không hợp lệ ({detail})."),
            );
            return Ok((problems, None, e.status, nonce));
        }
        return Ok((problems, Some(vi), e.status, nonce));
    }
    match e.code.as_str() {
        "case_contended" | "version_conflict" => Ok((
            Problems::default(),
            Some("Hồ sơ vừa được cập nhật bởi người khác. Vui lòng gửi lại.".to_owned()),
            StatusCode::CONFLICT,
            nonce,
        )),
        _ => Err(e.into()),
    }
}

/// `POST /ho-so/{id}/lenh/{command}`: runs a command from its form; back to the case page when
/// recorded, the form again (with what was entered) when not.
pub(crate) async fn command_submit(
    State(pages): State<Pages>,
    user: User,
    Path((id, command)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let body = body_or_413(&pages, body)?;
    let formdata = FormData::parse(&headers, &body)?;
    user.check_csrf(&formdata)?;
    let seen = seen(&pages, &user, &id).await?;
    let Some(cmd) = allowed(&seen, &command) else {
        tracing::info!(token = %user.principal.0.name, case = %id, command = %command, "page form refused: command not available");
        return Err(not_allowed(&seen, &command));
    };
    if cmd.target.as_ref().is_some_and(|t| t.scoped_to_unit) {
        return Err(PageError::bad_request(
            "Thao tác này được thực hiện trên trang của từng đơn vị.",
        ));
    }
    let ctx = form_context(&pages, &user, &seen, BTreeMap::new())?;
    let form = CommandForm::new(cmd, seen.workflow.input_schemas.get(&command), &ctx);
    let page = FormPage {
        seen: &seen,
        command: cmd,
        form,
        action: format!("{}/lenh/{}", case_url(&id), view::encode_segment(&command)),
        back: case_url(&id),
    };
    match run(&pages, &user, &page, &formdata, &ctx, None, Value::Null).await? {
        Ran::Done => Ok(see_other(&format!(
            "{}?da={}",
            case_url(&id),
            view::encode_query(&command)
        ))),
        Ran::SentBefore => Ok(see_other(&format!(
            "{}?da-gui-truoc={}",
            case_url(&id),
            view::encode_query(&command)
        ))),
        Ran::Again(state, status) => Ok(render_form(&user, &page, &state, status)),
    }
}

/// `POST /ho-so/{id}/van-ban/{document}/cap-so`: numbers a signed document in the register
/// (as `POST /api/cases/{id}/documents/{document}/number`).
pub(crate) async fn number_document(
    State(pages): State<Pages>,
    user: User,
    Path((id, document)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let body = body_or_413(&pages, body)?;
    let formdata = FormData::parse(&headers, &body)?;
    user.check_csrf(&formdata)?;
    let numbered = crate::documents::number(
        State(pages.app.clone()),
        user.principal.clone(),
        P((id.clone(), document.clone())),
        Q(AtQuery::default()),
    )
    .await?;
    tracing::debug!(case = %id, document = %document, entry = %numbered.0["entry"]["symbol"], "numbered from the case page");
    Ok(see_other(&format!(
        "{}?da-cap-so={}#van-ban",
        case_url(&id),
        view::encode_query(&document)
    )))
}

/// `GET /ho-so/{id}/van-ban/{document}/{version}/{format}`: a rendered document, as the API's
/// download (same visibility, same checks of the recorded SHA-256).
/// The case's archive packages with a fresh check, for the roles that may see them (not a
/// unit's clerk: a package holds every unit's data).
async fn archive_view(pages: &Pages, user: &User, id: &str) -> Result<Vec<Value>, PageError> {
    if user.principal.role() == Role::Unit {
        return Ok(Vec::new());
    }
    let listed = crate::archive::list(
        State(pages.app.clone()),
        user.principal.clone(),
        P(id.to_owned()),
    )
    .await?;
    Ok(listed
        .0
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let package = p["package"].as_str().unwrap_or_default();
            let format = match p["packing"].as_str() {
                Some("zip") => "zip",
                _ => "tar",
            };
            json!({
                "package": package,
                "file_code": p["file_code"],
                "date": p["bagging_date"],
                "valid": p["check"]["valid"],
                "problems": p["check"]["problems"],
                "format": format,
                "url": format!("{}/nop-luu/{}", case_url(id), view::encode_segment(package)),
            })
        })
        .collect())
}

/// `GET /ho-so/{id}/nop-luu/{package}`: an archive package (as
/// `GET /api/cases/{id}/archive/{package}`).
pub(crate) async fn download_package(
    State(pages): State<Pages>,
    user: User,
    Path((id, package)): Path<(String, String)>,
) -> Result<Response, PageError> {
    Ok(crate::archive::download(
        State(pages.app.clone()),
        user.principal.clone(),
        P((id, package)),
    )
    .await?)
}

pub(crate) async fn download_document(
    State(pages): State<Pages>,
    user: User,
    Path((id, document, version, format)): Path<(String, String, String, String)>,
) -> Result<Response, PageError> {
    let mut response = crate::documents::download(
        State(pages.app.clone()),
        user.principal.clone(),
        P((id, document, version, format)),
    )
    .await?;
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A rendered HTML document is shown as a document of this site, with nothing from
    // elsewhere and no script.
    response.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    Ok(response)
}
