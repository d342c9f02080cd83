//! Request extractors whose failures answer with the API's JSON errors instead of axum's plain
//! text: a JSON body (an empty body is `{}`), query parameters and path segments; and the
//! request headers the command endpoints read.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// The longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// A JSON request body; an empty body reads as `{}`.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<JsonBody, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|r| match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(state.max_body_bytes),
                _ => ApiError::bad_request(
                    "unreadable_body",
                    format!("cannot read the request body: {}", r.body_text()),
                ),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Default::default())));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}"))
        })
    }
}

/// Query parameters.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Q<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|r| ApiError::bad_request("invalid_query", r.body_text()))
    }
}

/// Path segments.
#[derive(Debug)]
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<P<T>, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|r| ApiError::bad_request("invalid_path", r.body_text()))
    }
}

/// The `Idempotency-Key` header: 1 to 200 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty()
        || text.len() > MAX_IDEMPOTENCY_KEY
        || !text.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// The `If-Match` header as a case's stream version: `"7"`, `7` or `W/"7"`.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_if_match",
            format!(
                "the If-Match header {text:?} must be the case's version (its ETag), such as \"7\""
            ),
        )
    })
}
