//! Signing in with a token, sessions and form tokens.
//!
//! The cookie holds a random session id (32 bytes, hex), never the token: the token is a
//! long-lived bearer credential for the whole API, while a session id is worth nothing once the
//! session ends (sign-out, 8 hours idle, 24 hours old), and signing out really ends it on the
//! server. A session is recorded in the log (stream `sessions`: `SessionStarted` with the
//! SHA-256 of its id, the token's id and the time; `SessionEnded` on sign-out), never with the
//! token's secret or the session id itself, so a session survives a restart of the daemon and
//! works on every daemon of a shared database (one that does not know it reads the stream), and
//! who signed in when stays on record. Every request checks the token again by its id, so a
//! revoked token ends its sessions at once. Idleness is counted in memory, from the last request
//! a daemon served (or its start).
//!
//! Every form carries the session's form token (`csrf`, a hidden field; derived from the session
//! id, so it needs no storage) and a POST without the right one is refused; a POST whose
//! `Origin` or `Sec-Fetch-Site` says it comes from another site is refused before that. The
//! cookie is `HttpOnly; SameSite=Strict; Path=/` (and `Secure` behind a proxy that says the
//! request came over HTTPS).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use giamsat_store::{Direction, Store};
use giamsat_types::{EventMetadata, ExpectedVersion, NewEvent, StreamId};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::forms::FormData;
use super::{PageError, Pages, page_context, render, see_other};
use crate::auth::{Principal, SESSIONS_STREAM, TokenError, TokenInfo};

/// The session cookie's name.
pub(crate) const COOKIE_NAME: &str = "giamsat_phien";
/// The hidden field that carries the form token.
pub(crate) const CSRF_FIELD: &str = "csrf";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after sign-in, used or not.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const SESSION_STARTED: &str = "SessionStarted";
const SESSION_ENDED: &str = "SessionEnded";

/// A session: the id of the token it acts with, when it started, when it was last used here.
struct Session {
    token_id: String,
    started: DateTime<Utc>,
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) > IDLE
            || (Utc::now() - self.started).to_std().unwrap_or_default() > MAX_AGE
    }
}

#[derive(Default)]
struct Known {
    /// Live sessions by the SHA-256 of their id.
    live: HashMap<String, Session>,
    /// Sessions ended (signed out, expired, their token revoked), by hash.
    ended: HashSet<String>,
    /// The version of `sessions` folded so far.
    version: u64,
}

/// The signed-in browsers, as the log records them.
#[derive(Default)]
pub(crate) struct Sessions {
    known: Mutex<Known>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.lock().live.len())
            .finish()
    }
}

fn random_hex(bytes: usize) -> Result<String, PageError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| PageError::internal(format!("cannot read random bytes: {e}")))?;
    Ok(hex::encode(buf))
}

fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The form token of a session: derived from its id (which only the browser and no log holds).
fn csrf_of(id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("giamsat-form-token:{id}").as_bytes(),
    ))
}

fn stream() -> StreamId {
    StreamId::new(SESSIONS_STREAM.to_owned()).expect("a valid stream id")
}

fn store_error(e: giamsat_store::StoreError) -> PageError {
    PageError::from(crate::error::ApiError::from(e))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Folds the session events not seen yet (another daemon's sign-ins and sign-outs).
    async fn catch_up(&self, store: &Store) -> Result<(), PageError> {
        loop {
            let from = self.lock().version + 1;
            let page = store
                .read_stream(&stream(), Direction::Forward, Some(from), 1000)
                .await
                .map_err(store_error)?;
            let done = page.len() < 1000;
            let mut known = self.lock();
            for event in &page {
                if event.stream_version <= known.version {
                    continue;
                }
                known.version = event.stream_version;
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                let Some(hash) = data["session"].as_str().map(str::to_owned) else {
                    continue;
                };
                match event.event_type.as_str() {
                    SESSION_STARTED => {
                        let started = data["started_at"]
                            .as_str()
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.with_timezone(&Utc));
                        if !known.ended.contains(&hash) {
                            known.live.entry(hash).or_insert(Session {
                                token_id: data["token"].as_str().unwrap_or_default().to_owned(),
                                started,
                                last_seen: Instant::now(),
                            });
                        }
                    }
                    SESSION_ENDED => {
                        known.live.remove(&hash);
                        known.ended.insert(hash);
                    }
                    _ => {}
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Starts a session for a token and records it; returns the session id for the cookie.
    async fn start(&self, store: &Store, token: &TokenInfo) -> Result<String, PageError> {
        let id = random_hex(32)?;
        let hash = id_hash(&id);
        let started = Utc::now();
        let event = NewEvent::new(
            SESSION_STARTED,
            &json!({
                "session": hash,
                "token": token.id,
                "started_at": started.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
        )
        .with_metadata(&EventMetadata {
            actor: Some(token.actor_text()),
            source: Some("giamsat".to_owned()),
            ..EventMetadata::default()
        });
        store
            .append(&stream(), ExpectedVersion::Any, vec![event])
            .await
            .map_err(store_error)?;
        let now = Instant::now();
        let mut known = self.lock();
        known.live.retain(|_, s| !s.expired(now));
        known.live.insert(
            hash,
            Session {
                token_id: token.id.clone(),
                started,
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The token id and form token of a live session (and marks it used); a session this
    /// daemon does not know is looked for in the log.
    async fn touch(&self, store: &Store, id: &str) -> Option<(String, String)> {
        let key = id_hash(id);
        let known = {
            let k = self.lock();
            k.live.contains_key(&key) || k.ended.contains(&key)
        };
        if !known && let Err(e) = self.catch_up(store).await {
            tracing::warn!(error = %e.message, "sessions not read from the log");
        }
        let now = Instant::now();
        let mut k = self.lock();
        let session = k.live.get_mut(&key)?;
        if session.expired(now) {
            k.live.remove(&key);
            k.ended.insert(key);
            return None;
        }
        session.last_seen = now;
        Some((session.token_id.clone(), csrf_of(id)))
    }

    /// Ends a session here and records it, so that every daemon ends it.
    async fn end(&self, store: &Store, id: &str, actor: &str) {
        let hash = id_hash(id);
        {
            let mut k = self.lock();
            k.live.remove(&hash);
            k.ended.insert(hash.clone());
        }
        let event = NewEvent::new(SESSION_ENDED, &json!({ "session": hash })).with_metadata(
            &EventMetadata {
                actor: Some(actor.to_owned()),
                source: Some("giamsat".to_owned()),
                ..EventMetadata::default()
            },
        );
        if let Err(e) = store
            .append(&stream(), ExpectedVersion::Any, vec![event])
            .await
        {
            tracing::warn!(error = %e, "the end of a session was not recorded");
        }
    }
}

/// A signed-in browser: the token's principal and the session's form token.
#[derive(Clone)]
pub(crate) struct User {
    pub principal: Principal,
    pub csrf: String,
    session: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Refuses a form whose form token is not this session's.
    pub fn check_csrf(&self, form: &FormData) -> Result<(), PageError> {
        let sent = form.get(CSRF_FIELD).unwrap_or_default();
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            tracing::info!(token = %self.principal.0.name, "form refused: missing or wrong form token");
            Err(stale_form())
        }
    }
}

fn stale_form() -> PageError {
    PageError::forbidden(
        "Biểu mẫu không hợp lệ hoặc đã hết hạn (thiếu mã xác thực biểu mẫu). Vui lòng tải lại \
         trang rồi gửi lại.",
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session id in the request's cookies.
fn cookie_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Refuses a POST that says it comes from another site: an `Origin` other than this host, or
/// `Sec-Fetch-Site: cross-site`. (Without either header the form token decides.)
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let refused = || {
        tracing::info!("form refused: posted from another site");
        PageError::forbidden("Biểu mẫu được gửi từ một trang khác nên không được chấp nhận.")
    };
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return Err(refused());
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or_default();
    // This host as the browser addressed it: the Host header, or the one a proxy in front
    // forwarded.
    let same = [HOST.as_str(), "x-forwarded-host"].iter().any(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .is_some_and(|host| !host.is_empty() && origin_host.eq_ignore_ascii_case(host))
    });
    if same { Ok(()) } else { Err(refused()) }
}

/// A local path to go to after signing in: `/...`, never another site (`//host`, `/\host`).
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.chars().any(|c| c.is_control()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn sign_in_redirect(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let target = if here == "/" {
        "/dang-nhap".to_owned()
    } else {
        format!("/dang-nhap?tiep={}", super::view::encode_query(&here))
    };
    see_other(&target)
}

impl FromRequestParts<Pages> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, pages: &Pages) -> Result<User, Response> {
        let Some(id) = cookie_session(&parts.headers) else {
            return Err(sign_in_redirect(parts));
        };
        let Some((token, csrf)) = pages.sessions.touch(&pages.app.store, &id).await else {
            return Err(sign_in_redirect(parts));
        };
        match pages
            .app
            .tokens
            .active_by_id(&pages.app.store, &token)
            .await
        {
            Ok(Some(info)) => Ok(User {
                principal: Principal(info),
                csrf,
                session: id,
            }),
            Ok(None) => {
                tracing::info!(path = %parts.uri.path(), "session ended: its token was revoked");
                pages
                    .sessions
                    .end(&pages.app.store, &id, "system:giamsat")
                    .await;
                Err(sign_in_redirect(parts))
            }
            Err(TokenError::Store(e)) => {
                Err(PageError::from(crate::error::ApiError::from(e)).into_response())
            }
            Err(e) => Err(PageError::internal(e.to_string()).into_response()),
        }
    }
}

/// The browser's user when it has a live session, without redirecting.
async fn current_user(pages: &Pages, headers: &HeaderMap) -> Option<User> {
    let id = cookie_session(headers)?;
    let (token, csrf) = pages.sessions.touch(&pages.app.store, &id).await?;
    let info = pages
        .app
        .tokens
        .active_by_id(&pages.app.store, &token)
        .await
        .ok()??;
    Some(User {
        principal: Principal(info),
        csrf,
        session: id,
    })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SignInQuery {
    tiep: Option<String>,
    #[serde(rename = "da-dang-xuat")]
    signed_out: Option<String>,
}

fn sign_in_view(next: &str, error: Option<&str>, notice: Option<&str>) -> Value {
    let mut page = page_context(None, "Đăng nhập");
    page["flash"] = json!(notice);
    json!({ "page": page, "next": next, "error": error })
}

/// `GET /dang-nhap`: the sign-in form (or, when signed in already, on to the page asked for).
pub(crate) async fn sign_in_page(
    State(pages): State<Pages>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    let next = local_path(query.tiep.as_deref());
    if current_user(&pages, &headers).await.is_some() {
        return see_other(&next);
    }
    let notice = query.signed_out.is_some().then_some("Bạn đã đăng xuất.");
    render(
        StatusCode::OK,
        "sign-in",
        &sign_in_view(&next, None, notice),
    )
}

fn session_cookie(value: &str, headers: &HeaderMap, max_age: Option<u64>) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let mut cookie = format!("{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("giamsat_phien=; Path=/"))
}

/// `POST /dang-nhap` (`token`, `tiep`): a valid token starts a session.
pub(crate) async fn sign_in(
    State(pages): State<Pages>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let form = FormData::parse(&headers, &body)?;
    let next = local_path(form.get("tiep"));
    let token = form.get("token").unwrap_or_default().trim().to_owned();
    let refused = |message: &str| {
        render(
            StatusCode::UNAUTHORIZED,
            "sign-in",
            &sign_in_view(&next, Some(message), None),
        )
    };
    if token.is_empty() {
        return Ok(refused("Vui lòng nhập mã truy cập."));
    }
    match pages
        .app
        .tokens
        .authenticate(&pages.app.store, &token)
        .await
    {
        Ok(Some(info)) => {
            let id = pages.sessions.start(&pages.app.store, &info).await?;
            tracing::info!(token = %info.name, role = %info.role, "signed in to the web pages");
            let mut response = see_other(&next);
            response
                .headers_mut()
                .insert(SET_COOKIE, session_cookie(&id, &headers, None));
            Ok(response)
        }
        Ok(None) => {
            tracing::info!("sign-in refused: unknown or revoked token");
            Ok(refused(
                "Mã truy cập không đúng hoặc đã bị thu hồi. Vui lòng kiểm tra lại.",
            ))
        }
        Err(TokenError::Store(e)) => Err(crate::error::ApiError::from(e).into()),
        Err(e) => Err(PageError::internal(e.to_string())),
    }
}

/// `POST /dang-xuat`: ends the session.
pub(crate) async fn sign_out(
    State(pages): State<Pages>,
    user: User,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let form = FormData::parse(&headers, &body)?;
    user.check_csrf(&form)?;
    pages
        .sessions
        .end(
            &pages.app.store,
            &user.session,
            &user.principal.0.actor_text(),
        )
        .await;
    tracing::info!(token = %user.principal.0.name, "signed out of the web pages");
    let mut response = see_other("/dang-nhap?da-dang-xuat=1");
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie("", &headers, Some(0)));
    Ok(response)
}

/// The page context of a signed-in user.
pub(crate) fn context(user: &User, title: &str) -> Value {
    page_context(Some(user), title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths_stay_on_this_site() {
        assert_eq!(local_path(Some("/ho-so/tg2024")), "/ho-so/tg2024");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn form_tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }

    #[tokio::test]
    async fn sessions_are_in_the_log_without_their_ids_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("a folder");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url, giamsat_store::StoreOptions::default())
            .await
            .expect("a store");
        let token = crate::auth::create_token(
            &store,
            crate::auth::Role::Secretariat,
            None,
            Some("huyen"),
            "admin:test",
            Utc::now(),
        )
        .await
        .expect("a token");
        let here = Sessions::default();
        let id = here.start(&store, &token.info).await.expect("a session");
        let (token_id, csrf) = here.touch(&store, &id).await.expect("live");
        assert_eq!(token_id, token.info.id);
        assert_eq!(csrf, csrf_of(&id));
        // The log holds the session's hash and the token's id, neither secret.
        let events = store
            .read_stream(&stream(), Direction::Forward, Some(1), 10)
            .await
            .expect("the sessions");
        assert_eq!(events.len(), 1);
        assert!(!events[0].data.contains(&id) && !events[0].data.contains(&token.secret));
        assert!(events[0].data.contains(&id_hash(&id)));
        // Another daemon (or this one restarted) finds it in the log.
        let restarted = Sessions::default();
        assert_eq!(
            restarted.touch(&store, &id).await.map(|(t, _)| t),
            Some(token.info.id.clone())
        );
        assert!(restarted.touch(&store, "00ff").await.is_none());
        // Ended on one, ended on every one.
        here.end(&store, &id, "secretariat:huyen").await;
        assert!(here.touch(&store, &id).await.is_none());
        let third = Sessions::default();
        assert!(third.touch(&store, &id).await.is_none());
        restarted.catch_up(&store).await.expect("catch up");
        assert!(restarted.touch(&store, &id).await.is_none());
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=b; giamsat_phien=00ff; c=d"),
        );
        assert_eq!(cookie_session(&headers).as_deref(), Some("00ff"));
        headers.insert(COOKIE, HeaderValue::from_static("giamsat_phien=<x>"));
        assert_eq!(cookie_session(&headers), None);
    }
}
