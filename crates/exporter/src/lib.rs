//! The exporter plugin API and its runner. An exporter consumes committed events in log order
//! (documents, notifications, archive packages) and may record what it did as events of its own.
//!
//! The runner gives each exporter its own task, subscription and checkpoint
//! (`exporter/<id>`): delivery is at-least-once (the checkpoint is saved after an event is
//! handled, so a crash in between delivers it again; outcome events carry deterministic ids, so a
//! second delivery records nothing new). A retryable error is retried with exponential backoff and
//! jitter; a permanent error, or a retryable one that outlasts `max_attempts`, parks the event
//! (an `ExportParked` event in `exporter/<id>/parked`) and the exporter moves on. One exporter
//! never waits for another, nor does the command path wait for any.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use giamsat_store::{EventFilter, Store, StoreError};
use giamsat_types::{ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

pub mod exec;

/// Event type recording a parked event.
pub const PARKED_EVENT: &str = "ExportParked";
/// Event type recording that a parked event was exported on a retry.
pub const RETRIED_EVENT: &str = "ExportRetried";

/// An event an exporter could not export, waiting for a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Parked {
    /// Id of the `ExportParked` record.
    pub id: Uuid,
    pub position: Position,
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub error: String,
    pub permanent: bool,
    pub attempts: u64,
}

/// The events an exporter has parked and not yet exported on a retry, in position order.
pub async fn parked(store: &Store, id: &str) -> Result<Vec<Parked>, StoreError> {
    let (all, retried) = read_parked(store, id).await?;
    Ok(all
        .into_iter()
        .filter(|p| !retried.contains(&p.id))
        .collect())
}

/// Every parked record of an exporter, retried or not.
async fn parked_records(store: &Store, id: &str) -> Result<Vec<Parked>, StoreError> {
    Ok(read_parked(store, id).await?.0)
}

async fn read_parked(
    store: &Store,
    id: &str,
) -> Result<(Vec<Parked>, std::collections::HashSet<Uuid>), StoreError> {
    let stream = parked_stream(id)?;
    let mut out: Vec<Parked> = Vec::new();
    let mut retried = std::collections::HashSet::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(&stream, giamsat_store::Direction::Forward, Some(from), 1000)
            .await?;
        let done = page.len() < 1000;
        from += page.len() as u64;
        for e in page {
            let d = e.data_value();
            match e.event_type.as_str() {
                PARKED_EVENT => out.push(Parked {
                    id: e.event_id,
                    position: d["position"].as_u64().unwrap_or_default(),
                    event_id: d["event_id"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_default(),
                    event_type: d["event_type"].as_str().unwrap_or_default().to_owned(),
                    stream_id: d["stream_id"].as_str().unwrap_or_default().to_owned(),
                    error: d["error"].as_str().unwrap_or_default().to_owned(),
                    permanent: d["permanent"].as_bool().unwrap_or_default(),
                    attempts: d["attempts"].as_u64().unwrap_or_default(),
                }),
                RETRIED_EVENT => {
                    if let Some(p) = d["parked"].as_str().and_then(|t| t.parse::<Uuid>().ok()) {
                        retried.insert(p);
                    }
                }
                _ => {}
            }
        }
        if done {
            break;
        }
    }
    Ok((out, retried))
}

/// Which events an exporter receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these event types; empty: every type.
    pub event_types: Vec<String>,
    /// Only streams starting with one of these; empty: every stream.
    pub stream_prefixes: Vec<String>,
}

impl Filter {
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && (self.stream_prefixes.is_empty()
                || self
                    .stream_prefixes
                    .iter()
                    .any(|p| event.stream_id.starts_with(p.as_str())))
    }
}

/// Why an export failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Worth trying again (a server down, a full disk).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Trying again cannot help (a template error, invalid data): the event is parked.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// An event an exporter wants recorded: give it a deterministic id (derived from the event it
/// handled), so a second delivery of the same event records nothing new.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stream: StreamId,
    pub event: NewEvent,
}

/// A plugin that consumes committed events.
#[async_trait]
pub trait Exporter: Send + Sync {
    /// The events it wants.
    fn filter(&self) -> Filter;

    /// Handles one event. Called in log order, one event at a time; the same event may arrive
    /// again after a crash, so handling must be idempotent.
    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError>;
}

/// Delivery settings of one exporter.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Attempts of a retryable error before the event is parked.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RunnerOptions {
    fn default() -> RunnerOptions {
        RunnerOptions {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// What an exporter has done, for status pages and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExporterStatus {
    pub id: String,
    /// The last position handled (or parked).
    pub checkpoint: Position,
    pub handled: u64,
    pub parked: u64,
    pub retries: u64,
    /// The log's head when last looked at.
    pub head: Position,
    /// When the last handled event was recorded.
    pub last_recorded_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// How far behind the log an exporter is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lag {
    /// Events committed after its checkpoint.
    pub events: u64,
    /// How long ago the oldest of them was committed (0 when caught up).
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("exporter {id}: {source}")]
    Store {
        id: String,
        #[source]
        source: StoreError,
    },
}

/// Why a parked event could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no parked event {0} (already retried, or another exporter's)")]
    NotParked(Uuid),
    #[error("the export failed again: {0}")]
    Export(ExportError),
    #[error(transparent)]
    Runner(RunnerError),
}

/// Runs one exporter.
pub struct Runner {
    id: String,
    store: Store,
    exporter: Arc<dyn Exporter>,
    options: RunnerOptions,
    status: Arc<Mutex<ExporterStatus>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("id", &self.id).finish()
    }
}

/// How far behind the log's head an exporter's saved checkpoint is: events after it, and how
/// long ago the oldest of them was committed.
pub async fn lag(store: &Store, id: &str) -> Result<Lag, StoreError> {
    let checkpoint = store
        .load_checkpoint(&checkpoint_name(id))
        .await?
        .unwrap_or(0);
    let head = store.head().await?.map_or(0, |h| h.position);
    if head <= checkpoint {
        return Ok(Lag {
            events: 0,
            seconds: 0.0,
        });
    }
    let oldest = store
        .read_all(checkpoint + 1, Some(head), 1, &EventFilter::all())
        .await?;
    let seconds = oldest.first().map_or(0.0, |e| {
        (Utc::now() - e.recorded_at()).num_milliseconds().max(0) as f64 / 1000.0
    });
    Ok(Lag {
        events: head - checkpoint,
        seconds,
    })
}

/// The checkpoint name of an exporter.
pub fn checkpoint_name(id: &str) -> String {
    format!("exporter/{id}")
}

/// The stream of an exporter's parked events.
pub fn parked_stream(id: &str) -> Result<StreamId, StoreError> {
    StreamId::new(format!("exporter/{id}/parked")).map_err(StoreError::from)
}

impl Runner {
    pub fn new(
        id: &str,
        store: Store,
        exporter: Arc<dyn Exporter>,
        options: RunnerOptions,
    ) -> Runner {
        Runner {
            id: id.to_owned(),
            store,
            exporter,
            options,
            status: Arc::new(Mutex::new(ExporterStatus {
                id: id.to_owned(),
                ..ExporterStatus::default()
            })),
        }
    }

    /// How far behind the log's head the exporter is now (read from the store, so a stuck
    /// exporter shows its growing lag).
    /// The exporter's id (its `[[exporters]]` table's `id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn lag(&self) -> Result<Lag, RunnerError> {
        lag(&self.store, &self.id).await.map_err(|e| self.err(e))
    }

    /// A handle on the status, updated as the runner works.
    pub fn status(&self) -> Arc<Mutex<ExporterStatus>> {
        self.status.clone()
    }

    fn err(&self, source: StoreError) -> RunnerError {
        RunnerError::Store {
            id: self.id.clone(),
            source,
        }
    }

    fn update(&self, f: impl FnOnce(&mut ExporterStatus)) {
        f(&mut self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Handles everything up to the log's head at the time of the call, then returns the
    /// checkpoint reached.
    pub async fn run_once(&self) -> Result<Position, RunnerError> {
        let (_stop, shutdown) = watch::channel(false);
        self.run_inner(shutdown, true).await
    }

    /// Handles events as they are committed until `shutdown` turns true; the checkpoint is
    /// saved after every event, so stopping loses nothing.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) -> Result<Position, RunnerError> {
        self.run_inner(shutdown, false).await
    }

    async fn run_inner(
        &self,
        mut shutdown: watch::Receiver<bool>,
        once: bool,
    ) -> Result<Position, RunnerError> {
        let name = checkpoint_name(&self.id);
        let start = self
            .store
            .load_checkpoint(&name)
            .await
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        let head = |h: Option<giamsat_store::Head>| h.map_or(0, |h| h.position);
        let until = head(self.store.head().await.map_err(|e| self.err(e))?);
        self.update(|s| {
            s.checkpoint = start;
            s.head = until;
        });
        let filter = self.exporter.filter();
        let store_filter = EventFilter {
            event_types: filter.event_types.clone(),
            stream_prefix: match filter.stream_prefixes.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
        };
        let mut subscription = self.store.subscribe(start, store_filter);
        let mut position = start;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let event = if once {
                if position >= until {
                    break;
                }
                match subscription.try_next().await.map_err(|e| self.err(e))? {
                    Some(event) if event.position <= until => event,
                    _ => break,
                }
            } else {
                match subscription.try_next().await.map_err(|e| self.err(e))? {
                    Some(event) => event,
                    None => {
                        // Idle: the events committed since the last one delivered did not
                        // match the filter. They count as handled, so the checkpoint and the
                        // lag say how much is really left to do.
                        let seen = subscription.seen();
                        if seen > position {
                            position = seen;
                            self.store
                                .save_checkpoint(&name, position)
                                .await
                                .map_err(|e| self.err(e))?;
                            self.update(|s| {
                                s.checkpoint = position;
                                s.head = s.head.max(position);
                            });
                        }
                        tokio::select! {
                            _ = subscription.wait_for_commits() => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                }
            };
            if filter.matches(&event) {
                self.deliver(&event, &mut shutdown).await?;
            }
            position = event.position;
            self.store
                .save_checkpoint(&name, position)
                .await
                .map_err(|e| self.err(e))?;
            let now_head = self.store.head().await.map_err(|e| self.err(e))?;
            self.update(|s| {
                s.checkpoint = position;
                s.head = head(now_head).max(position);
            });
        }
        // Events skipped by the filter after the last delivered one still count as seen.
        if once && position < until {
            position = until;
            self.store
                .save_checkpoint(&name, position)
                .await
                .map_err(|e| self.err(e))?;
            self.update(|s| s.checkpoint = position);
        }
        Ok(position)
    }

    /// Delivers one event: retries retryable errors with backoff, records outcomes, parks the
    /// event when it cannot be exported.
    async fn deliver(
        &self,
        event: &RecordedEvent,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), RunnerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.exporter.export(event).await;
            let error = match result {
                Ok(outcomes) => match self.record(outcomes).await {
                    Ok(()) => {
                        self.update(|s| {
                            s.handled += 1;
                            s.last_recorded_at = Some(event.recorded_at());
                            s.last_error = None;
                        });
                        return Ok(());
                    }
                    // Recording failed: the export is retried (outcome ids are deterministic).
                    // The same outcome id with other content: the exporter is not
                    // deterministic for this event; trying again cannot help.
                    Err(e @ StoreError::EventIdConflict { .. }) => {
                        ExportError::Permanent(format!("recording the outcome: {e}"))
                    }
                    Err(e) => ExportError::Retryable(format!("recording the outcome: {e}")),
                },
                Err(e) => e,
            };
            let permanent = matches!(error, ExportError::Permanent(_));
            self.update(|s| s.last_error = Some(error.to_string()));
            if permanent || attempt >= self.options.max_attempts {
                return self.park(event, &error, attempt).await;
            }
            self.update(|s| s.retries += 1);
            tracing::warn!(exporter = %self.id, position = event.position, attempt, error = %error, "export failed; retrying");
            let pause = backoff(&self.options, attempt, event.event_id);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {
                    // Stopping: the event is delivered again from the checkpoint next time.
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Exports a parked event again, now. On success its outcomes are recorded and an
    /// `ExportRetried` record takes it off the parked list; on failure it stays parked and the
    /// error is returned.
    pub async fn retry_parked(&self, parked_id: Uuid) -> Result<(), RetryError> {
        let list = parked(&self.store, &self.id)
            .await
            .map_err(|e| RetryError::Runner(self.err(e)))?;
        let item = list
            .into_iter()
            .find(|p| p.id == parked_id)
            .ok_or(RetryError::NotParked(parked_id))?;
        let events = self
            .store
            .read_all(item.position, Some(item.position), 1, &EventFilter::all())
            .await
            .map_err(|e| RetryError::Runner(self.err(e)))?;
        let event = events
            .into_iter()
            .next()
            .ok_or(RetryError::NotParked(parked_id))?;
        let outcomes = self
            .exporter
            .export(&event)
            .await
            .map_err(RetryError::Export)?;
        self.record(outcomes)
            .await
            .map_err(|e| RetryError::Runner(self.err(e)))?;
        let stream = parked_stream(&self.id).map_err(|e| RetryError::Runner(self.err(e)))?;
        let record = NewEvent::new(
            RETRIED_EVENT,
            &json!({ "exporter": self.id, "parked": parked_id, "position": item.position }),
        )
        .with_id(Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("giamsat:retried:{parked_id}").as_bytes(),
        ));
        self.store
            .append(&stream, ExpectedVersion::Any, vec![record])
            .await
            .map_err(|e| RetryError::Runner(self.err(e)))?;
        Ok(())
    }

    /// Makes the exporter deliver again every event from `position` on (for example after a
    /// template was fixed): its checkpoint moves back to just before it. Takes effect at the
    /// runner's next start.
    pub async fn replay_from(&self, position: Position) -> Result<(), RunnerError> {
        let to = position.saturating_sub(1);
        self.store
            .save_checkpoint(&checkpoint_name(&self.id), to)
            .await
            .map_err(|e| self.err(e))?;
        self.update(|s| s.checkpoint = to);
        Ok(())
    }

    async fn record(&self, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        for outcome in outcomes {
            self.store
                .append(&outcome.stream, ExpectedVersion::Any, vec![outcome.event])
                .await?;
        }
        Ok(())
    }

    async fn park(
        &self,
        event: &RecordedEvent,
        error: &ExportError,
        attempts: u32,
    ) -> Result<(), RunnerError> {
        tracing::error!(exporter = %self.id, position = event.position, error = %error, "event parked");
        let stream = parked_stream(&self.id).map_err(|e| self.err(e))?;
        // Still parked from an earlier delivery (a crash before the checkpoint): one record is
        // enough. Parked again after a retry took it off the list: a record of its own, so the
        // id counts the earlier ones.
        let earlier: Vec<Parked> = parked_records(&self.store, &self.id)
            .await
            .map_err(|e| self.err(e))?
            .into_iter()
            .filter(|p| p.event_id == event.event_id)
            .collect();
        let open = parked(&self.store, &self.id)
            .await
            .map_err(|e| self.err(e))?;
        if open.iter().any(|p| p.event_id == event.event_id) {
            self.update(|s| s.parked += 1);
            return Ok(());
        }
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!(
                "giamsat:parked:{}:{}:{}:{}",
                self.id,
                event.event_id,
                attempts,
                earlier.len()
            )
            .as_bytes(),
        );
        let parked = NewEvent::new(
            PARKED_EVENT,
            &json!({
                "exporter": self.id,
                "position": event.position,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "stream_id": event.stream_id,
                "error": error.to_string(),
                "permanent": matches!(error, ExportError::Permanent(_)),
                "attempts": attempts,
            }),
        )
        .with_id(id);
        self.store
            .append(&stream, ExpectedVersion::Any, vec![parked])
            .await
            .map_err(|e| self.err(e))?;
        self.update(|s| s.parked += 1);
        Ok(())
    }
}

/// Exponential backoff with jitter spread by the event id: `initial × 2^(attempt-1)`, capped,
/// plus up to a quarter more.
fn backoff(options: &RunnerOptions, attempt: u32, event: Uuid) -> Duration {
    let exp = options
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = exp.min(options.max_backoff);
    let jitter = f64::from(event.as_bytes()[15]) / 255.0 / 4.0;
    base + base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let o = RunnerOptions {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let id = Uuid::from_u128(0xff);
        let b1 = backoff(&o, 1, id);
        let b3 = backoff(&o, 3, id);
        let b9 = backoff(&o, 9, id);
        assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(125));
        assert!(b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(500));
        assert!(b9 >= Duration::from_secs(1) && b9 <= Duration::from_millis(1250));
    }
}
