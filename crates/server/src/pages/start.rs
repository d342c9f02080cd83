//! `/ho-so-moi`: the secretariat starts a case from the web pages, as `giamsat case start` does:
//! a workflow, a case id (or one is made), and the case data as YAML or JSON, uploaded as the
//! file the office keeps (`examples/tuan-giao-2024.yaml` is one) or pasted. The data goes through
//! `POST /api/cases`, so the workflow's start schema and rules decide; a file that is not YAML
//! is refused with its line and column, a refusal of the workflow with its Vietnamese message.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::case::{body_or_413, case_url, nonce_of};
use super::forms::FormData;
use super::session::{self, check_origin};
use super::{PageError, Pages, User, render, see_other};
use crate::auth::Role;
use crate::cases::AtQuery;
use crate::extract::{JsonBody, Q};

/// What the form shows: the choices, what was entered, and why it was refused.
#[derive(Debug, Default)]
struct Entered {
    workflow: String,
    id: String,
    data: String,
    problems: Vec<String>,
    detail: Option<String>,
}

fn may_start(user: &User) -> Result<(), PageError> {
    match user.principal.role() {
        Role::Admin | Role::Secretariat => Ok(()),
        _ => Err(PageError::forbidden(
            "Chỉ Văn phòng (thư ký) và quản trị viên được tạo hồ sơ giám sát mới.",
        )),
    }
}

fn form_page(
    pages: &Pages,
    user: &User,
    entered: &Entered,
    nonce: &str,
    status: StatusCode,
) -> Response {
    let workflows: Vec<Value> = pages
        .app
        .workflows
        .values()
        .map(|w| {
            json!({
                "name": w.name(),
                "label": w.definition.label,
                "selected": w.name() == entered.workflow,
            })
        })
        .collect();
    let context = json!({
        "page": session::context(user, "Tạo hồ sơ giám sát mới"),
        "workflows": workflows,
        "id": entered.id,
        "data": entered.data,
        "problems": entered.problems,
        "detail": entered.detail,
        "csrf": user.csrf,
        "nonce": nonce,
    });
    render(status, "start", &context)
}

/// `GET /ho-so-moi`: the form.
pub(crate) async fn page(State(pages): State<Pages>, user: User) -> Result<Response, PageError> {
    may_start(&user)?;
    let entered = Entered {
        workflow: pages
            .app
            .workflows
            .keys()
            .next()
            .cloned()
            .unwrap_or_default(),
        ..Entered::default()
    };
    Ok(form_page(
        &pages,
        &user,
        &entered,
        &nonce_of(None)?,
        StatusCode::OK,
    ))
}

/// The case data from the uploaded file (`tep`), else the text field (`du-lieu`), parsed as
/// YAML (JSON is YAML too); a problem names the line and column.
fn read_data(form: &FormData, entered: &mut Entered) -> Option<Value> {
    let (text, source) = match form.file("tep") {
        Some(upload) => match String::from_utf8(upload.bytes.to_vec()) {
            Ok(text) => (text, format!("Tệp “{}”", upload.filename)),
            Err(_) => {
                entered.problems.push(format!(
                    "Tệp “{}” không phải văn bản UTF-8.",
                    upload.filename
                ));
                return None;
            }
        },
        None => (
            form.get("du-lieu").unwrap_or_default().to_owned(),
            "Dữ liệu".to_owned(),
        ),
    };
    entered.data = text.clone();
    if text.trim().is_empty() {
        entered.problems.push(
            "Vui lòng chọn tệp dữ liệu hồ sơ (YAML hoặc JSON) hoặc dán nội dung vào ô dữ liệu."
                .to_owned(),
        );
        return None;
    }
    match serde_saphyr::from_str::<Value>(&text) {
        Ok(value @ Value::Object(_)) => Some(value),
        Ok(_) => {
            entered.problems.push(format!(
                "{source} phải là một đối tượng (các mục như topic, units, visits...)."
            ));
            None
        }
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            entered.problems.push(match e.location() {
                Some(l) => format!(
                    "{source} không đúng cú pháp YAML ở dòng {}, cột {}: {first}",
                    l.line(),
                    l.column()
                ),
                None => format!("{source} không đúng cú pháp YAML: {first}"),
            });
            None
        }
    }
}

/// `POST /ho-so-moi` (multipart: `quy-trinh`, `ma-ho-so`, `tep` or `du-lieu`): starts the case
/// and goes to its page; a refusal shows the form again with what was entered.
pub(crate) async fn submit(
    State(pages): State<Pages>,
    user: User,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let body = body_or_413(&pages, body)?;
    let form = FormData::parse(&headers, &body)?;
    user.check_csrf(&form)?;
    may_start(&user)?;
    let nonce = nonce_of(Some(&form))?;
    let mut entered = Entered {
        workflow: form.get("quy-trinh").unwrap_or_default().trim().to_owned(),
        id: form.get("ma-ho-so").unwrap_or_default().trim().to_owned(),
        ..Entered::default()
    };
    let data = read_data(&form, &mut entered);
    if !pages.app.workflows.contains_key(&entered.workflow) {
        entered
            .problems
            .insert(0, "Vui lòng chọn quy trình.".to_owned());
    }
    let Some(data) = data.filter(|_| entered.problems.is_empty()) else {
        return Ok(form_page(
            &pages,
            &user,
            &entered,
            &nonce,
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    };
    let mut request = json!({"workflow": entered.workflow, "data": data});
    if !entered.id.is_empty() {
        request["id"] = json!(entered.id);
    }
    // The nonce is the Idempotency-Key: the same form sent twice starts the case once.
    let mut api_headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&nonce) {
        api_headers.insert("idempotency-key", v);
    }
    let started = crate::cases::start(
        State(pages.app.clone()),
        user.principal.clone(),
        api_headers,
        Q(AtQuery::default()),
        JsonBody(request),
    )
    .await;
    match started {
        Ok(response) => {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .map_err(|e| PageError::internal(e.to_string()))?;
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let id = answer["case"]["id"].as_str().unwrap_or(&entered.id);
            Ok(see_other(&format!("{}?da-tao=1", case_url(id))))
        }
        Err(e) => {
            let status = match e.status {
                StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => e.status,
                s if s.is_client_error() => StatusCode::UNPROCESSABLE_ENTITY,
                _ => return Err(e.into()),
            };
            let shown = PageError::from(e);
            entered.problems.push(shown.message);
            entered.detail = shown.detail;
            Ok(form_page(&pages, &user, &entered, &nonce, status))
        }
    }
}
