//! The web pages: server-rendered Vietnamese HTML over the same handlers the API uses, for the
//! secretariat, the delegation, the units and viewers. A browser signs in with a token
//! (`/dang-nhap`) and gets a session cookie; every page then acts as that token's [`Principal`],
//! so what a page shows and what a form may do are exactly what the API allows the token.
//!
//! Pages work without JavaScript (forms post and redirect); `/static/app.js`, served from the
//! binary like the stylesheet, adds live updates from the event stream. Nothing is loaded from
//! elsewhere, and the Content-Security-Policy says so.
//!
//! Templates are handlebars files embedded in the binary with HTML escaping on (no triple
//! braces anywhere): every datum of a case reaches the page escaped.

mod api_docs;
mod case;
mod forms;
mod schedule;
mod session;
mod start;
mod unit;
mod view;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use handlebars::Handlebars;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{App, AppState};

pub(crate) use api_docs::api_reference;
pub(crate) use session::User;

/// What the page handlers share: the daemon and the signed-in browsers.
#[derive(Debug, Clone)]
pub(crate) struct Pages {
    pub(crate) app: AppState,
    pub(crate) sessions: Arc<session::Sessions>,
}

/// The pages' routes, to merge into the daemon's router.
pub(crate) fn router(app: AppState) -> Router<AppState> {
    let pages = Pages {
        app,
        sessions: Arc::new(session::Sessions::default()),
    };
    Router::new()
        .route("/", get(case::list))
        .route(
            "/dang-nhap",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/dang-xuat", post(session::sign_out))
        .route("/ho-so-moi", get(start::page).post(start::submit))
        .route("/ho-so/{id}", get(case::show))
        .route("/ho-so/{id}/cap-nhat", get(case::updates))
        .route(
            "/ho-so/{id}/lenh/{command}",
            get(case::command_form).post(case::command_submit),
        )
        .route("/ho-so/{id}/lich.ics", get(schedule::whole_ics))
        .route("/ho-so/{id}/lich/{entry}", get(schedule::entry_ics))
        .route(
            "/ho-so/{id}/van-ban/{document}/cap-so",
            post(case::number_document),
        )
        .route(
            "/ho-so/{id}/van-ban/{document}/{version}/{format}",
            get(case::download_document),
        )
        .route("/ho-so/{id}/nop-luu/{package}", get(case::download_package))
        .route("/ho-so/{id}/don-vi/{unit}", get(unit::page))
        .route(
            "/ho-so/{id}/don-vi/{unit}/lenh/{command}",
            post(unit::submit),
        )
        .route("/ho-so/{id}/don-vi/{unit}/tep/{file}", get(unit::download))
        .route("/static/app.css", get(stylesheet))
        .route("/static/app.js", get(script))
        .with_state(pages)
}

/// The folder uploaded report files are kept in: `uploads/` beside the documents exporter's
/// output folder (`documents/` → `uploads/`). Without a documents folder, uploads are off and
/// the report forms say so.
pub(crate) fn uploads_dir(app: &App) -> Option<PathBuf> {
    if let Some(dir) = &app.uploads_dir {
        return Some(dir.clone());
    }
    let documents = app.documents_dir.as_ref()?;
    let parent = documents
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    Some(parent.join("uploads"))
}

/// Whether a request is for a page rather than the API (its error answers are HTML).
pub(crate) fn is_page_request(request: &Request) -> bool {
    let path = request.uri().path();
    !(path.starts_with("/api/") || path == "/healthz" || path == "/readyz" || path == "/metrics")
}

/// The 413 page for a request body above the daemon's limit.
pub(crate) fn payload_too_large(limit: usize) -> Response {
    PageError::too_large(limit).into_response()
}

static VIEWS: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    let templates: [(&str, &str); 12] = [
        ("header", include_str!("assets/header.hbs")),
        ("footer", include_str!("assets/footer.hbs")),
        ("field", include_str!("assets/field.hbs")),
        ("form", include_str!("assets/form.hbs")),
        ("error", include_str!("assets/error.hbs")),
        ("start", include_str!("assets/start.hbs")),
        ("api-docs", include_str!("assets/api-docs.hbs")),
        ("sign-in", include_str!("assets/sign-in.hbs")),
        ("cases", include_str!("assets/cases.hbs")),
        ("case", include_str!("assets/case.hbs")),
        ("command", include_str!("assets/command.hbs")),
        ("unit", include_str!("assets/unit.hbs")),
    ];
    for (name, text) in templates {
        h.register_template_string(name, text)
            .unwrap_or_else(|e| panic!("page template {name}: {e}"));
    }
    h
});

const STYLESHEET: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// Nothing from elsewhere: scripts, styles, images, connections and form targets are this
/// daemon's own.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Renders a page template with `context` (which carries `page`, see [`page_context`]).
pub(crate) fn render(status: StatusCode, template: &str, context: &Value) -> Response {
    match VIEWS.render(template, context) {
        Ok(html) => with_page_headers(
            (
                status,
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                html,
            )
                .into_response(),
        ),
        Err(e) => {
            tracing::error!(template, error = %e, "page template failed");
            with_page_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    )],
                    "Lỗi máy chủ khi hiển thị trang.",
                )
                    .into_response(),
            )
        }
    }
}

/// The `page` part of every template's context: title, the signed-in user (with the form
/// token for signing out), an optional message and the live-updates address.
pub(crate) fn page_context(user: Option<&User>, title: &str) -> Value {
    let user = user.map(|u| {
        let p = &u.principal;
        json!({
            "name": p.0.name,
            "role": p.role().as_str(),
            "role_label": view::role_label(p.role()),
            "unit": p.unit(),
            "csrf": u.csrf,
        })
    });
    json!({
        "title": title,
        "user": user,
        "flash": Value::Null,
        "live": Value::Null,
    })
}

/// A redirect after a POST (303: the browser follows with GET).
pub(crate) fn see_other(location: &str) -> Response {
    let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    with_page_headers((StatusCode::SEE_OTHER, [(LOCATION, value)]).into_response())
}

async fn stylesheet() -> Response {
    static_asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", SCRIPT)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A page that could not be shown: a status and a Vietnamese explanation, rendered as the error
/// page.
#[derive(Debug, Clone)]
pub(crate) struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    /// The API's error code and English message, for whoever reports the problem.
    pub detail: Option<String>,
}

impl PageError {
    pub fn new(status: StatusCode, title: &str, message: impl Into<String>) -> PageError {
        PageError {
            status,
            title: title.to_owned(),
            message: message.into(),
            detail: None,
        }
    }

    pub fn not_found() -> PageError {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Không tìm thấy",
            "Không tìm thấy hồ sơ hoặc trang được yêu cầu.",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, "Không có quyền", message)
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, "Yêu cầu không hợp lệ", message)
    }

    pub fn too_large(limit: usize) -> PageError {
        PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Tệp quá lớn",
            format!(
                "Dữ liệu gửi lên vượt quá giới hạn {} của máy chủ. Vui lòng chọn tệp nhỏ hơn \
                 (hoặc nén tệp) rồi gửi lại.",
                view::size_text(limit)
            ),
        )
    }

    pub fn internal(detail: impl Into<String>) -> PageError {
        let detail = detail.into();
        tracing::error!(error = %detail, "page failed");
        PageError {
            detail: Some(detail),
            ..PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Lỗi máy chủ",
                "Máy chủ gặp lỗi khi xử lý yêu cầu. Vui lòng thử lại sau.",
            )
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        if let Some(vi) = e.details.get("message_vi").and_then(Value::as_str) {
            return PageError {
                detail: Some(format!("{}: {}", e.code, e.message)),
                ..PageError::new(e.status, "Không thực hiện được", vi)
            };
        }
        let (title, message) = match e.status {
            StatusCode::NOT_FOUND => (
                "Không tìm thấy",
                "Không tìm thấy hồ sơ hoặc trang được yêu cầu.",
            ),
            StatusCode::FORBIDDEN => (
                "Không có quyền",
                "Bạn không có quyền thực hiện thao tác này.",
            ),
            StatusCode::CONFLICT => (
                "Hồ sơ vừa thay đổi",
                "Hồ sơ vừa được cập nhật bởi người khác. Vui lòng tải lại trang rồi thử lại.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => return PageError::too_large(0),
            StatusCode::SERVICE_UNAVAILABLE => (
                "Tạm thời không phục vụ được",
                "Kho dữ liệu tạm thời không phản hồi. Vui lòng thử lại sau ít phút.",
            ),
            s if s.is_server_error() => (
                "Lỗi máy chủ",
                "Máy chủ gặp lỗi khi xử lý yêu cầu. Vui lòng thử lại sau.",
            ),
            _ => ("Yêu cầu không hợp lệ", "Yêu cầu không hợp lệ."),
        };
        PageError {
            detail: Some(format!("{}: {}", e.code, e.message)),
            ..PageError::new(e.status, title, message)
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), detail = ?self.detail, "page error");
        }
        let context = json!({
            "page": {"title": self.title, "user": Value::Null, "flash": Value::Null, "live": Value::Null},
            "status": self.status.as_u16(),
            "message": self.message,
            "detail": self.detail,
        });
        render(self.status, "error", &context)
    }
}
