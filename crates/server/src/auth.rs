//! Access tokens. A token is 32 random bytes shown once to whoever creates it; the log keeps
//! only its SHA-256, in the stream `tokens` (`TokenCreated` with the role, unit, name and who
//! created it; `TokenRevoked`). Requests carry it as `Authorization: Bearer <token>`; the token's
//! role and unit become the [`Actor`] of every command it runs, so the workflow's own `roles:`
//! decide what it may do.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, SecondsFormat, Utc};
use giamsat_engine::Actor;
use giamsat_store::{Direction, Store, StoreError};
use giamsat_types::{EventMetadata, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The stream of token records.
pub const TOKENS_STREAM: &str = "tokens";
/// The stream of web sessions (`pages::session`): like the tokens, for admins' eyes only.
pub const SESSIONS_STREAM: &str = "sessions";
pub const TOKEN_CREATED_EVENT: &str = "TokenCreated";
pub const TOKEN_REVOKED_EVENT: &str = "TokenRevoked";
/// Every token starts with this, so that a leaked one is easy to recognise.
pub const TOKEN_PREFIX: &str = "gs_";
/// The name of the admin token made on the first start.
pub const BOOTSTRAP_NAME: &str = "admin";
/// How often creating a token is retried when another writer appended to `tokens` first.
const RETRIES: usize = 20;

/// What a token may do. Which commands each role may run is the workflow's `roles:`; these are
/// the roles a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including `at` on commands, exporters and tokens.
    Admin,
    /// Runs cases: starts them, runs the secretariat's commands, numbers documents.
    Secretariat,
    /// The delegation's commands (meeting, visits, findings).
    Delegation,
    /// One unit: sees only the cases its unit is part of and only its own unit's items, and
    /// runs only the commands the workflow gives units, on its own unit.
    Unit,
    /// Reads everything a secretariat token reads, changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Secretariat,
        Role::Delegation,
        Role::Unit,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Secretariat => "secretariat",
            Role::Delegation => "delegation",
            Role::Unit => "unit",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Result<Role, TokenError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| TokenError::InvalidRole(text.to_owned()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token as the log describes it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub created_at: String,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl TokenInfo {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// The actor the token's commands are recorded as: its role, its name, its unit.
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.name.clone(),
            role: self.role.as_str().to_owned(),
            unit: self.unit.clone(),
        }
    }

    /// `role:name`, as in event metadata.
    pub fn actor_text(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }
}

/// A token just created: its record and the secret, which is shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub info: TokenInfo,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown role {0:?}; roles: admin, secretariat, delegation, unit, viewer")]
    InvalidRole(String),
    #[error("a unit token needs the unit's code (--unit CODE)")]
    UnitRequired,
    #[error("only a unit token has a unit; role {0} takes no --unit")]
    UnitNotAllowed(Role),
    #[error("invalid unit code {0:?}: use 1 to 100 ASCII letters, digits, '-', '_' or '.'")]
    InvalidUnit(String),
    #[error(
        "invalid token name {0:?}: use 1 to 64 characters without spaces, control characters, ':' or '@'"
    )]
    InvalidName(String),
    #[error("a token named {0:?} is already active; revoke it first or choose another name")]
    DuplicateName(String),
    #[error("no token with id {0:?} (see `giamsat token list`)")]
    NotFound(String),
    #[error("token {id} was already revoked at {at}")]
    AlreadyRevoked { id: String, at: String },
    #[error("tokens event {version} is unreadable: {reason}")]
    BadEvent { version: u64, reason: String },
    #[error("the tokens stream kept changing while a token was created; try again")]
    Contended,
    #[error("cannot read random bytes for a token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The SHA-256 of a token, as stored.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn stream() -> StreamId {
    StreamId::new(TOKENS_STREAM).expect("a valid stream id")
}

fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn valid_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn valid_name(text: &str) -> bool {
    let count = text.chars().count();
    (1..=64).contains(&count)
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '@')
}

#[derive(Debug, Serialize, Deserialize)]
struct CreatedData {
    token_id: String,
    name: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    sha256: String,
    created_at: String,
    created_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RevokedData {
    token_id: String,
    revoked_at: String,
    revoked_by: String,
}

/// Every token the log records, with its hash, folded from `tokens`.
#[derive(Debug, Default, Clone)]
struct Tokens {
    /// The stream version folded so far.
    version: u64,
    /// By id: the record and the hash.
    all: BTreeMap<String, (TokenInfo, String)>,
}

impl Tokens {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), TokenError> {
        let bad = |e: serde_json::Error| TokenError::BadEvent {
            version: event.stream_version,
            reason: e.to_string(),
        };
        match event.event_type.as_str() {
            TOKEN_CREATED_EVENT => {
                let d: CreatedData = serde_json::from_str(&event.data).map_err(bad)?;
                let info = TokenInfo {
                    id: d.token_id.clone(),
                    name: d.name,
                    role: d.role,
                    unit: d.unit,
                    created_at: d.created_at,
                    created_by: d.created_by,
                    revoked_at: None,
                    revoked_by: None,
                };
                self.all.insert(d.token_id, (info, d.sha256));
            }
            TOKEN_REVOKED_EVENT => {
                let d: RevokedData = serde_json::from_str(&event.data).map_err(bad)?;
                if let Some((info, _)) = self.all.get_mut(&d.token_id) {
                    info.revoked_at = Some(d.revoked_at);
                    info.revoked_by = Some(d.revoked_by);
                }
            }
            _ => {}
        }
        self.version = event.stream_version;
        Ok(())
    }

    /// Reads the events after the ones already folded.
    async fn catch_up(&mut self, store: &Store) -> Result<(), TokenError> {
        loop {
            let page = store
                .read_stream(&stream(), Direction::Forward, Some(self.version + 1), 1000)
                .await?;
            let done = page.len() < 1000;
            for event in &page {
                self.apply(event)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    fn active_by_name(&self, name: &str) -> Option<&TokenInfo> {
        self.all
            .values()
            .map(|(info, _)| info)
            .find(|i| i.name == name && !i.is_revoked())
    }
}

async fn read_tokens(store: &Store) -> Result<Tokens, TokenError> {
    let mut tokens = Tokens::default();
    tokens.catch_up(store).await?;
    Ok(tokens)
}

/// Every token the log records, revoked ones included, in id order.
pub async fn list_tokens(store: &Store) -> Result<Vec<TokenInfo>, TokenError> {
    Ok(read_tokens(store)
        .await?
        .all
        .into_values()
        .map(|(info, _)| info)
        .collect())
}

/// Creates a token: checks the role, unit and name, appends `TokenCreated` with the token's
/// hash, and returns the secret (the only time it exists outside the caller's hands).
pub async fn create_token(
    store: &Store,
    role: Role,
    unit: Option<&str>,
    name: Option<&str>,
    created_by: &str,
    at: DateTime<Utc>,
) -> Result<NewToken, TokenError> {
    create(store, role, unit, name, created_by, at, false)
        .await
        .map(|t| t.expect("created unless only_if_none"))
}

/// The admin token of a first start: created only when the log has no token at all (two
/// daemons starting at once create one between them).
pub async fn create_bootstrap_token(
    store: &Store,
    at: DateTime<Utc>,
) -> Result<Option<NewToken>, TokenError> {
    create(
        store,
        Role::Admin,
        None,
        Some(BOOTSTRAP_NAME),
        "system:bootstrap",
        at,
        true,
    )
    .await
}

async fn create(
    store: &Store,
    role: Role,
    unit: Option<&str>,
    name: Option<&str>,
    created_by: &str,
    at: DateTime<Utc>,
    only_if_none: bool,
) -> Result<Option<NewToken>, TokenError> {
    match (role, unit) {
        (Role::Unit, None) => return Err(TokenError::UnitRequired),
        (Role::Unit, Some(code)) if !valid_code(code) => {
            return Err(TokenError::InvalidUnit(code.to_owned()));
        }
        (Role::Unit, Some(_)) => {}
        (other, Some(_)) => return Err(TokenError::UnitNotAllowed(other)),
        (_, None) => {}
    }
    if let Some(name) = name
        && !valid_name(name)
    {
        return Err(TokenError::InvalidName(name.to_owned()));
    }
    for _ in 0..RETRIES {
        let tokens = read_tokens(store).await?;
        if only_if_none && !tokens.all.is_empty() {
            return Ok(None);
        }
        let mut id = random_hex(6)?;
        while tokens.all.contains_key(&id) {
            id = random_hex(6)?;
        }
        let name = match name {
            Some(n) => n.to_owned(),
            None => format!("{role}-{id}"),
        };
        if tokens.active_by_name(&name).is_some() {
            return Err(TokenError::DuplicateName(name));
        }
        let secret = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let data = CreatedData {
            token_id: id.clone(),
            name: name.clone(),
            role,
            unit: unit.map(str::to_owned),
            sha256: hash_token(&secret),
            created_at: time_text(at),
            created_by: created_by.to_owned(),
        };
        let event = NewEvent::new(
            TOKEN_CREATED_EVENT,
            &serde_json::to_value(&data).unwrap_or_default(),
        )
        .with_metadata(&metadata(created_by));
        let expected = if tokens.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(tokens.version)
        };
        match store.append(&stream(), expected, vec![event]).await {
            Ok(_) => {
                let info = TokenInfo {
                    id,
                    name,
                    role,
                    unit: data.unit,
                    created_at: data.created_at,
                    created_by: data.created_by,
                    revoked_at: None,
                    revoked_by: None,
                };
                return Ok(Some(NewToken { info, secret }));
            }
            // Another token was created meanwhile: read again (names and ids are checked
            // against the stream as it is when the append succeeds).
            Err(StoreError::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(TokenError::Contended)
}

fn metadata(actor: &str) -> EventMetadata {
    EventMetadata {
        actor: Some(actor.to_owned()),
        source: Some("giamsat".to_owned()),
        ..EventMetadata::default()
    }
}

/// Revokes a token by id: it stops working at once in this process and within the store's poll
/// interval in a daemon that follows the log.
pub async fn revoke_token(
    store: &Store,
    id: &str,
    revoked_by: &str,
    at: DateTime<Utc>,
) -> Result<TokenInfo, TokenError> {
    let tokens = read_tokens(store).await?;
    let Some((info, _)) = tokens.all.get(id) else {
        return Err(TokenError::NotFound(id.to_owned()));
    };
    if let Some(when) = &info.revoked_at {
        return Err(TokenError::AlreadyRevoked {
            id: id.to_owned(),
            at: when.clone(),
        });
    }
    let data = RevokedData {
        token_id: id.to_owned(),
        revoked_at: time_text(at),
        revoked_by: revoked_by.to_owned(),
    };
    let event = NewEvent::new(
        TOKEN_REVOKED_EVENT,
        &serde_json::to_value(&data).unwrap_or_default(),
    )
    .with_metadata(&metadata(revoked_by));
    store
        .append(&stream(), ExpectedVersion::Exists, vec![event])
        .await?;
    let mut info = info.clone();
    info.revoked_at = Some(data.revoked_at);
    info.revoked_by = Some(data.revoked_by);
    Ok(info)
}

/// The daemon's view of the tokens: active tokens by hash, kept current from the log (a token
/// created or revoked by the CLI in another process is seen on the next miss or by the
/// follower).
#[derive(Debug, Default)]
pub(crate) struct TokenRegistry {
    state: RwLock<(Tokens, HashMap<String, TokenInfo>)>,
}

impl TokenRegistry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Tokens, HashMap<String, TokenInfo>)> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Folds the events of `tokens` not seen yet.
    pub(crate) async fn refresh(&self, store: &Store) -> Result<(), TokenError> {
        let mut tokens = self.read().0.clone();
        let before = tokens.version;
        tokens.catch_up(store).await?;
        if tokens.version == before {
            return Ok(());
        }
        let active = tokens
            .all
            .values()
            .filter(|(info, _)| !info.is_revoked())
            .map(|(info, hash)| (hash.clone(), info.clone()))
            .collect();
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two refreshes may race; the one that folded further wins.
        if tokens.version > state.0.version {
            *state = (tokens, active);
        }
        Ok(())
    }

    /// The active token with this id (a web session holds the id, never the secret); an unknown
    /// one makes the registry read the log once more.
    pub(crate) async fn active_by_id(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Option<TokenInfo>, TokenError> {
        let find = |registry: &TokenRegistry| {
            registry
                .read()
                .0
                .all
                .get(id)
                .map(|(info, _)| info.clone())
                .filter(|info| !info.is_revoked())
        };
        if let Some(info) = find(self) {
            return Ok(Some(info));
        }
        self.refresh(store).await?;
        Ok(find(self))
    }

    /// How many tokens are active.
    pub(crate) fn active_count(&self) -> usize {
        self.read().1.len()
    }

    /// The active token with this secret; an unknown one makes the registry read the log once
    /// more, so a token created a moment ago elsewhere works at once.
    pub(crate) async fn authenticate(
        &self,
        store: &Store,
        secret: &str,
    ) -> Result<Option<TokenInfo>, TokenError> {
        let hash = hash_token(secret);
        if let Some(info) = self.read().1.get(&hash) {
            return Ok(Some(info.clone()));
        }
        self.refresh(store).await?;
        Ok(self.read().1.get(&hash).cloned())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal(pub TokenInfo);

impl Principal {
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// The unit of a unit token.
    pub fn unit(&self) -> Option<&str> {
        match self.0.role {
            Role::Unit => self.0.unit.as_deref(),
            _ => None,
        }
    }

    /// Refuses the request unless the token has one of `roles` (admin always passes).
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if self.0.role == Role::Admin || roles.contains(&self.0.role) {
            return Ok(());
        }
        let allowed: Vec<&str> = std::iter::once("admin")
            .chain(roles.iter().map(|r| r.as_str()))
            .collect();
        tracing::info!(token = %self.0.name, role = %self.0.role, what, "request denied: role not allowed");
        Err(ApiError::forbidden(
            "role_not_allowed",
            format!("role {} may not {what}", self.0.role),
        )
        .with_details(serde_json::json!({ "allowed_roles": allowed })))
    }
}

impl FromRequestParts<crate::AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Principal, ApiError> {
        let unauthorized = |code: &str, message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, code, message.to_owned())
        };
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(unauthorized(
                "missing_token",
                "this endpoint needs a token: send the header Authorization: Bearer <token>",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "invalid_authorization",
                    "the Authorization header must be \"Bearer <token>\"",
                )
            })?;
        match state.tokens.authenticate(&state.store, secret).await {
            Ok(Some(info)) => Ok(Principal(info)),
            Ok(None) => {
                tracing::info!(path = %parts.uri.path(), "request denied: unknown or revoked token");
                Err(unauthorized(
                    "invalid_token",
                    "the token is unknown or has been revoked",
                ))
            }
            Err(TokenError::Store(e)) => Err(e.into()),
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_names_are_checked() {
        assert_eq!(Role::parse("unit").expect("role"), Role::Unit);
        assert!(
            Role::parse("system")
                .unwrap_err()
                .to_string()
                .contains("unknown role \"system\"")
        );
        assert!(valid_name("van-thu.quai-to"));
        assert!(valid_name("Nguyễn"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
        assert!(valid_code("xa-quai-to"));
        assert!(!valid_code("xã"));
    }

    #[test]
    fn the_stored_hash_is_the_sha256_of_the_token() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
