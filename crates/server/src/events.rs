//! `GET /api/events`: committed events as server-sent events, from the store's subscription.
//! Each SSE event has `id: <position>` and the event's JSON (as `giamsat events read --json`) as
//! data; a client that reconnects with `Last-Event-ID` resumes after that position. The stream
//! ends when the daemon stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use giamsat_cases::load_case_until;
use giamsat_store::{EventFilter, Subscription};
use giamsat_types::RecordedEvent;
use serde::Deserialize;
use tokio::sync::watch;

use crate::AppState;
use crate::auth::{Principal, Role, SESSIONS_STREAM, TOKENS_STREAM};
use crate::cases::event_view;
use crate::error::ApiError;
use crate::extract::Q;
use crate::scope::Scope;

const CASE_PREFIX: &str = "case/";
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The first position to deliver (1: the whole log); default: only events committed from
    /// now on. `Last-Event-ID` takes precedence.
    from: Option<u64>,
    /// Only streams starting with this, e.g. `case/tg2024`.
    stream: Option<String>,
    /// Only these event types, comma-separated.
    #[serde(rename = "type")]
    types: Option<String>,
}

/// One client's feed.
struct Feed {
    app: AppState,
    principal: Principal,
    subscription: Subscription,
    shutdown: watch::Receiver<bool>,
    /// A unit token's view of each case seen so far.
    scopes: HashMap<String, Scope>,
}

impl Feed {
    /// The next event the client may see, as an SSE event; `None` when the daemon stops or the
    /// log cannot be read (the client reconnects with its Last-Event-ID).
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            let event = tokio::select! {
                next = self.subscription.next() => match next {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream ended: cannot read the log");
                        return None;
                    }
                },
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    continue;
                }
            };
            if let Some(value) = self.view(&event).await {
                return Some(
                    Event::default()
                        .id(event.position.to_string())
                        .data(value.to_string()),
                );
            }
        }
    }

    /// The event as the client may see it: token and session records only for admins; for a unit token
    /// only case events of its cases, redacted.
    async fn view(&mut self, event: &RecordedEvent) -> Option<serde_json::Value> {
        if (event.stream_id == TOKENS_STREAM || event.stream_id == SESSIONS_STREAM)
            && self.principal.role() != Role::Admin
        {
            return None;
        }
        let Some(unit) = self.principal.unit().map(str::to_owned) else {
            return serde_json::to_value(event).ok();
        };
        let case = event.stream_id.strip_prefix(CASE_PREFIX)?;
        let creates = event.data.contains("\"op\":\"create\"");
        if creates || !self.scopes.contains_key(case) {
            let scope = match load_case_until(&self.app.store, case, event.stream_version).await {
                Ok(Some(loaded)) => match self
                    .app
                    .definitions
                    .get(&self.app.store, &loaded.state)
                    .await
                {
                    Ok(workflow) => Scope::for_unit(&unit, &workflow, &loaded.state),
                    Err(_) => return None,
                },
                _ => return None,
            };
            self.scopes.insert(case.to_owned(), scope);
        }
        let scope = self.scopes.get(case)?;
        if !scope.is_member() {
            return None;
        }
        event_view(scope, event)
    }
}

/// `GET /api/events?from=POS&stream=PREFIX&type=A,B`.
pub async fn stream(
    State(app): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Q(query): Q<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "the Last-Event-ID header must be a log position (a whole number)",
                )
            })?,
        None => match query.from {
            Some(from) => from.saturating_sub(1),
            None => app.store.head().await?.map_or(0, |h| h.position),
        },
    };
    let mut prefix = query.stream.unwrap_or_default();
    if principal.unit().is_some() {
        if prefix.is_empty() {
            prefix = CASE_PREFIX.to_owned();
        } else if !prefix.starts_with(CASE_PREFIX) {
            return Err(ApiError::forbidden(
                "stream_not_allowed",
                format!("a unit token may follow only case streams (case/...), not {prefix:?}"),
            ));
        }
    }
    let filter = EventFilter {
        event_types: query
            .types
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        stream_prefix: prefix,
    };
    let feed = Feed {
        subscription: app.store.subscribe(after, filter),
        shutdown: app.shutdown.clone(),
        app,
        principal,
        scopes: HashMap::new(),
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next_event()
            .await
            .map(|event| (Ok::<_, Infallible>(event), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
