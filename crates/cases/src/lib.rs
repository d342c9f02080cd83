//! Runs workflow commands against the event store. This is the imperative shell around the pure
//! engine: it registers the exact definition a case starts on in the log, folds a case's events
//! into its state, asks the engine to decide, and appends the events with the case's expected
//! version, retrying when another writer got there first. The CLI and the daemon both use it.
//!
//! Streams: `case/<id>` holds a case's events; `workflow/<name>/<hash>` holds the definition
//! (its YAML and schema files) that cases with that content hash are pinned to, so editing a file
//! never changes a running case and two versions run side by side.

#![allow(clippy::result_large_err)]

use chrono::{DateTime, FixedOffset};
use std::collections::HashMap;
use std::sync::Mutex;

use giamsat_engine::{
    Actor, Bundle, Calendar, CaseEvent, CaseEventData, CaseState, CommandRequest, LatePolicy,
    Rejection, SYSTEM_ROLE, TimerInstance, TimerOutcome, TimerRecord, TimerState, Workflow, decide,
    event_id, load, start, timers,
};
use giamsat_store::{Direction, Store, StoreError};
use giamsat_types::{EventMetadata, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use serde_json::Value;
use uuid::Uuid;

/// Event type of a registered definition.
pub const DEFINITION_EVENT: &str = "WorkflowDefinitionRegistered";
/// How often a command is retried after losing an optimistic-concurrency race. Each round has one
/// winner, so N commands racing on one case need up to N rounds; the pause between attempts grows
/// and is spread by the command id so that the losers do not collide again in lockstep.
const RETRIES: u32 = 40;
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{0}")]
    Rejected(Rejection),
    #[error("case {0:?} does not exist")]
    NotFound(String),
    #[error("invalid case id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("the definition {name} {hash} pinned by case {case} is not in the log")]
    MissingDefinition {
        case: String,
        name: String,
        hash: String,
    },
    #[error("the definition stored for {name} {hash} no longer loads: {problems}")]
    BrokenDefinition {
        name: String,
        hash: String,
        problems: String,
    },
    #[error("event {position} of case {case} is not a case event: {reason}")]
    BadEvent {
        case: String,
        position: u64,
        reason: String,
    },
    #[error("case {0:?} kept changing while the command was retried; try again")]
    Contended(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Calendar(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a workflow folder: its `workflow.yaml` and the schema and template files it names, as a
/// [`Bundle`].
pub fn read_workflow_dir(dir: &std::path::Path) -> Result<Bundle, CaseError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| CaseError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let file = dir.join("workflow.yaml");
    let text = read(file.clone())?;
    let mut files = std::collections::BTreeMap::new();
    for name in giamsat_engine::referenced_files(&text) {
        // A missing file is left out: loading reports it with the place that names it.
        let path = dir.join(&name);
        if !path.exists() {
            continue;
        }
        let content = read(path)?;
        files.insert(name, content);
    }
    Ok(Bundle {
        origin: file.display().to_string(),
        text,
        files,
    })
}

fn case_stream(id: &str) -> Result<StreamId, CaseError> {
    let valid = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        return Err(CaseError::InvalidId {
            id: id.to_owned(),
            reason: "use 1 to 100 ASCII letters, digits, '-', '_' or '.'".to_owned(),
        });
    }
    StreamId::new(format!("case/{id}")).map_err(|e| CaseError::InvalidId {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

fn definition_stream(name: &str, hash: &str) -> Result<StreamId, CaseError> {
    StreamId::new(format!("workflow/{name}/{hash}")).map_err(|e| CaseError::InvalidId {
        id: name.to_owned(),
        reason: e.to_string(),
    })
}

/// A case's state and the events it was folded from.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub state: CaseState,
    pub events: Vec<RecordedEvent>,
}

/// Reads and folds a case; `None` when it has no events.
pub async fn load_case(store: &Store, id: &str) -> Result<Option<LoadedCase>, CaseError> {
    load_case_until(store, id, u64::MAX).await
}

/// Reads and folds a case up to and including its event at stream version `until`: the case as
/// it was when that event was recorded (documents render it so, however often they are rendered
/// again).
pub async fn load_case_until(
    store: &Store,
    id: &str,
    until: u64,
) -> Result<Option<LoadedCase>, CaseError> {
    let stream = case_stream(id)?;
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(&stream, Direction::Forward, Some(from), PAGE)
            .await?;
        let done = page.len() < PAGE;
        from += page.len() as u64;
        let before = page.len();
        events.extend(page.into_iter().filter(|e| e.stream_version <= until));
        if done || events.len() < from as usize - 1 || before == 0 {
            break;
        }
    }
    if events.is_empty() {
        return Ok(None);
    }
    let mut state = CaseState {
        id: id.to_owned(),
        ..CaseState::default()
    };
    for event in &events {
        state.evolve(&event_data(id, event)?, event.stream_version);
    }
    Ok(Some(LoadedCase { state, events }))
}

fn event_data(case: &str, event: &RecordedEvent) -> Result<CaseEventData, CaseError> {
    serde_json::from_str(&event.data).map_err(|e| CaseError::BadEvent {
        case: case.to_owned(),
        position: event.position,
        reason: e.to_string(),
    })
}

/// How many cases a [`CaseCache`] keeps by default.
pub const DEFAULT_CASE_CACHE: usize = 1024;

/// Folded cases kept in memory, by case id, so that a request does not read and fold a case's
/// whole stream again. An entry is the case at some stream version; because the log is
/// append-only, that state stays true of those events forever, and [`CaseCache::load`] brings it
/// up to date by reading only the events after that version (usually none: one indexed query).
/// So nothing has to be invalidated, and appends by other processes are seen as soon as they
/// are committed. A newer version replaces an older one, never the reverse. The least recently
/// used case goes when more than `capacity` are kept; 0 keeps none.
///
/// A cache belongs to one store: the same case id in another database is another case.
#[derive(Debug)]
pub struct CaseCache {
    capacity: usize,
    inner: Mutex<CacheEntries>,
}

#[derive(Debug, Default)]
struct CacheEntries {
    /// Case id → (the case, when it was last used).
    cases: HashMap<String, (std::sync::Arc<LoadedCase>, u64)>,
    clock: u64,
}

impl Default for CaseCache {
    fn default() -> CaseCache {
        CaseCache::new(DEFAULT_CASE_CACHE)
    }
}

impl CaseCache {
    pub fn new(capacity: usize) -> CaseCache {
        CaseCache {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept state of a case, at whatever version it was kept.
    fn get(&self, id: &str) -> Option<std::sync::Arc<LoadedCase>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (case, used) = inner.cases.get_mut(id)?;
        *used = now;
        Some(case.clone())
    }

    /// Keeps `case` unless a newer version of it is kept already; returns `case`.
    pub fn insert(&self, case: std::sync::Arc<LoadedCase>) -> std::sync::Arc<LoadedCase> {
        if self.capacity == 0 {
            return case;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        match inner.cases.get_mut(&case.state.id) {
            Some((kept, used)) => {
                if kept.state.stream_version < case.state.stream_version {
                    *kept = case.clone();
                }
                *used = now;
            }
            None => {
                if inner.cases.len() >= self.capacity {
                    let oldest = inner
                        .cases
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(id, _)| id.clone());
                    if let Some(oldest) = oldest {
                        inner.cases.remove(&oldest);
                    }
                }
                inner
                    .cases
                    .insert(case.state.id.clone(), (case.clone(), now));
            }
        }
        case
    }

    /// The case as [`load_case`] would return it now: the kept state with the events appended
    /// since it was kept folded in (read from the store), or the whole stream when none is
    /// kept. `None` when the case has no events.
    pub async fn load(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Option<std::sync::Arc<LoadedCase>>, CaseError> {
        let Some(kept) = self.get(id) else {
            return Ok(load_case(store, id)
                .await?
                .map(|case| self.insert(std::sync::Arc::new(case))));
        };
        let new = read_after(store, id, kept.state.stream_version).await?;
        if new.is_empty() {
            return Ok(Some(kept));
        }
        // Evolved in place when nobody else holds the kept state (no copy), else on a copy.
        {
            let mut inner = self.lock();
            if inner
                .cases
                .get(id)
                .is_some_and(|(c, _)| std::sync::Arc::ptr_eq(c, &kept))
            {
                inner.cases.remove(id);
            }
        }
        let mut case = std::sync::Arc::unwrap_or_clone(kept);
        for event in new {
            case.state
                .evolve(&event_data(id, &event)?, event.stream_version);
            case.events.push(event);
        }
        Ok(Some(self.insert(std::sync::Arc::new(case))))
    }

    /// The case at stream version `version` or later: the kept state when it is that recent
    /// (no read), else as [`CaseCache::load`].
    pub async fn load_at_least(
        &self,
        store: &Store,
        id: &str,
        version: u64,
    ) -> Result<Option<std::sync::Arc<LoadedCase>>, CaseError> {
        if let Some(kept) = self.get(id)
            && kept.state.stream_version >= version
        {
            return Ok(Some(kept));
        }
        self.load(store, id).await
    }
}

/// The events of a case after stream version `after`, in order.
async fn read_after(store: &Store, id: &str, after: u64) -> Result<Vec<RecordedEvent>, CaseError> {
    let stream = case_stream(id)?;
    let mut out = Vec::new();
    loop {
        let from = after + 1 + out.len() as u64;
        let page = store
            .read_stream(&stream, Direction::Forward, Some(from), PAGE)
            .await?;
        let done = page.len() < PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Folds into `case` the events appended to it since it was read: what [`load_case`] would
/// return now, reading only the new events.
async fn catch_up(store: &Store, mut case: LoadedCase) -> Result<LoadedCase, CaseError> {
    let stream = case_stream(&case.state.id)?;
    loop {
        let page = store
            .read_stream(
                &stream,
                Direction::Forward,
                Some(case.state.stream_version + 1),
                PAGE,
            )
            .await?;
        let done = page.len() < PAGE;
        for event in page {
            case.state
                .evolve(&event_data(&case.state.id, &event)?, event.stream_version);
            case.events.push(event);
        }
        if done {
            return Ok(case);
        }
    }
}

/// Stores a definition's texts under its content hash (idempotent: the event id is derived from
/// the hash).
pub async fn register(store: &Store, workflow: &Workflow) -> Result<(), CaseError> {
    let stream = definition_stream(workflow.name(), &workflow.hash)?;
    // Where the files were read from is not part of the content (the hash leaves it out too), so
    // the same definition read from another folder registers as the same event.
    let mut bundle = (*workflow.bundle).clone();
    bundle.origin = format!("{}/workflow.yaml", workflow.name());
    let data = serde_json::json!({
        "name": workflow.name(),
        "version": workflow.version(),
        "hash": workflow.hash,
        "bundle": bundle,
    });
    let id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:{}", stream).as_bytes(),
    );
    let event = NewEvent::new(DEFINITION_EVENT, &data).with_id(id);
    match store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Loads the definition a case is pinned to, from the log.
///
/// Parsing and compiling a definition costs milliseconds (more than the rest of a command), so
/// each one is loaded once per process and kept by its stream id, which names the content hash:
/// only a definition whose loaded content has the hash it is registered under is kept, so a kept
/// definition is exactly the content that hash names, whichever store it was read from. A store
/// is still asked whether it holds the definition, so one without it gets `MissingDefinition`.
pub async fn pinned(store: &Store, state: &CaseState) -> Result<Workflow, CaseError> {
    let stream = definition_stream(&state.workflow, &state.definition_hash)?;
    let missing = || CaseError::MissingDefinition {
        case: state.id.clone(),
        name: state.workflow.clone(),
        hash: state.definition_hash.clone(),
    };
    let kept = loaded_definitions().get(stream.as_str()).cloned();
    if let Some(workflow) = kept {
        return match store.stream_version(&stream).await? {
            Some(_) => Ok(workflow),
            None => Err(missing()),
        };
    }
    let events = store
        .read_stream(&stream, Direction::Forward, Some(1), 1)
        .await?;
    let event = events.first().ok_or_else(missing)?;
    let value: Value = serde_json::from_str(&event.data).map_err(|_| missing())?;
    let bundle: Bundle = serde_json::from_value(value["bundle"].clone()).map_err(|_| missing())?;
    let workflow = load(bundle).map_err(|p| CaseError::BrokenDefinition {
        name: state.workflow.clone(),
        hash: state.definition_hash.clone(),
        problems: p.to_string(),
    })?;
    if workflow.hash == state.definition_hash && workflow.name() == state.workflow {
        loaded_definitions().insert(stream.as_str().to_owned(), workflow.clone());
    }
    Ok(workflow)
}

/// The definitions [`pinned`] has loaded in this process, by stream id (`workflow/<name>/<hash>`).
fn loaded_definitions() -> std::sync::MutexGuard<'static, HashMap<String, Workflow>> {
    static LOADED: std::sync::OnceLock<Mutex<HashMap<String, Workflow>>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The definitions cases are pinned to, loaded from the log once and kept (a definition stored
/// under a hash never changes).
#[derive(Debug, Default)]
pub struct Definitions {
    loaded: Mutex<HashMap<String, Workflow>>,
}

impl Definitions {
    pub fn new() -> Definitions {
        Definitions::default()
    }

    /// The definition `state` is pinned to.
    pub async fn get(&self, store: &Store, state: &CaseState) -> Result<Workflow, CaseError> {
        let key = format!("{}/{}", state.workflow, state.definition_hash);
        if let Some(w) = self.lock().get(&key) {
            return Ok(w.clone());
        }
        let workflow = pinned(store, state).await?;
        self.lock().insert(key, workflow.clone());
        Ok(workflow)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Workflow>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Event type recording a timer whose command the workflow refused.
pub const TIMER_REJECTED_EVENT: &str = "TimerRejected";
/// Event type recording a late timer skipped by its policy.
pub const TIMER_SKIPPED_EVENT: &str = "TimerSkipped";

/// The actor timers run as.
pub fn scheduler_actor() -> Actor {
    Actor {
        id: "scheduler".to_owned(),
        role: SYSTEM_ROLE.to_owned(),
        unit: None,
    }
}

/// The command id of a timer instance: the same for every scheduler, so two schedulers firing
/// the same timer produce the same event id and the store keeps one.
pub fn timer_command_id(case: &str, instance: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:timer:{case}:{instance}").as_bytes(),
    )
}

/// A firing's outcome and the case's state after it (as read, when nothing was appended).
#[derive(Debug, Clone)]
pub struct TimerFiring {
    pub outcome: FireOutcome,
    pub state: CaseState,
}

/// What happened when a timer was fired.
#[derive(Debug, Clone)]
pub enum FireOutcome {
    /// The command was accepted; these events were appended.
    Fired(Vec<CaseEvent>),
    /// The workflow refused the command; a `TimerRejected` event records it.
    Rejected(Rejection),
    /// Late, and its policy skips late timers; a `TimerSkipped` event records it.
    Skipped,
    /// Another scheduler (or an earlier attempt) already acted on it.
    AlreadyDone(TimerRecord),
    /// The case's dates changed and the timer no longer exists, or it is not due yet, or its
    /// command does not apply any more: nothing was done.
    NotDue,
}

/// Fires one timer instance of a case at `now`: re-derives it from the current state (so a moved
/// date or a changed stage is respected), then runs its command through the normal path with the
/// case's expected version, or records that the workflow refused it or that the policy skipped it.
/// A timer late by more than `skip_after` with policy `skip` is skipped. Safe to call from two
/// schedulers at once: exactly one of them records the instance.
#[allow(clippy::too_many_arguments)]
pub async fn fire_timer(
    store: &Store,
    definitions: &Definitions,
    calendar: &Calendar,
    case_id: &str,
    known: Option<CaseState>,
    instance: &str,
    now: DateTime<FixedOffset>,
    skip_after: chrono::TimeDelta,
) -> Result<TimerFiring, CaseError> {
    let stream = case_stream(case_id)?;
    let mut known = known;
    for attempt in 0..RETRIES {
        // A state the caller already holds is tried first; the expected version on the append
        // catches it being stale, and the retry reads the case afresh.
        let state = match known.take() {
            Some(state) => state,
            None => {
                load_case(store, case_id)
                    .await?
                    .ok_or_else(|| CaseError::NotFound(case_id.to_owned()))?
                    .state
            }
        };
        let done = |outcome: FireOutcome, state: CaseState| Ok(TimerFiring { outcome, state });
        let workflow = definitions.get(store, &state).await?;
        let now = now
            .with_timezone(&giamsat_engine::zone(&workflow))
            .fixed_offset();
        let all = timers(&workflow, &state, calendar);
        let Some(timer) = all.into_iter().find(|t| t.instance == instance) else {
            return done(FireOutcome::NotDue, state);
        };
        match &timer.state {
            TimerState::Done(record) => {
                let record = record.clone();
                return done(FireOutcome::AlreadyDone(record), state);
            }
            TimerState::Inactive => return done(FireOutcome::NotDue, state),
            TimerState::Pending if timer.due > now => return done(FireOutcome::NotDue, state),
            TimerState::Pending => {}
        }
        let command = timer_command_id(case_id, instance);
        let actor = scheduler_actor();
        let late = now - timer.due;
        let (events, outcome) = if timer.when_late == LatePolicy::Skip && late > skip_after {
            let record = timer.record(now, TimerOutcome::Skipped, None);
            (
                vec![timer_event(
                    &timer,
                    TIMER_SKIPPED_EVENT,
                    record,
                    &actor,
                    now,
                    command,
                )],
                FireOutcome::Skipped,
            )
        } else {
            let request = CommandRequest {
                id: command,
                name: timer.command.clone(),
                input: timer.input.clone(),
                actor: actor.clone(),
                at: now,
            };
            match decide(&workflow, &state, &request) {
                Ok(mut events) => {
                    if let Some(first) = events.first_mut() {
                        first.data.timer = Some(timer.record(now, TimerOutcome::Fired, None));
                    }
                    (events.clone(), FireOutcome::Fired(events))
                }
                Err(rejection) => {
                    let record =
                        timer.record(now, TimerOutcome::Rejected, Some(rejection.code.clone()));
                    (
                        vec![timer_event(
                            &timer,
                            TIMER_REJECTED_EVENT,
                            record,
                            &actor,
                            now,
                            command,
                        )],
                        FireOutcome::Rejected(rejection),
                    )
                }
            }
        };
        let new = events
            .iter()
            .map(|e| to_new_event(e, &actor, command))
            .collect();
        match store
            .append(&stream, ExpectedVersion::Exact(state.stream_version), new)
            .await
        {
            Ok(_) => {
                // The state after the append, without reading it back.
                let mut after = state;
                let base = after.stream_version;
                for (i, event) in events.iter().enumerate() {
                    after.evolve(&event.data, base + 1 + i as u64);
                }
                return done(outcome, after);
            }
            // Another scheduler appended first (this one's content differs by its firing time
            // when the event id is the same): re-read, and find the instance done.
            Err(StoreError::WrongExpectedVersion { .. } | StoreError::EventIdConflict { .. }) => {
                let spread = u64::from(command.as_bytes()[15] % 8);
                let pause = u64::from(attempt.min(10)) * 2 + spread;
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CaseError::Contended(case_id.to_owned()))
}

/// The event that records a rejected or skipped timer: no effects, the timer record.
fn timer_event(
    timer: &TimerInstance,
    event_type: &str,
    record: TimerRecord,
    actor: &Actor,
    now: DateTime<FixedOffset>,
    command: Uuid,
) -> CaseEvent {
    CaseEvent {
        event_id: event_id(command, 0),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: CaseEventData {
            command: timer.command.clone(),
            at: now.to_rfc3339(),
            actor: actor.clone(),
            input: timer.input.clone(),
            effects: Vec::new(),
            pin: None,
            timer: Some(record),
        },
    }
}

fn to_new_event(event: &CaseEvent, actor: &Actor, command: Uuid) -> NewEvent {
    let data = serde_json::to_value(&event.data).unwrap_or(Value::Null);
    let metadata = EventMetadata {
        actor: Some(format!("{}:{}", actor.role, actor.id)),
        correlation_id: Some(command.to_string()),
        source: Some("giamsat".to_owned()),
        ..EventMetadata::default()
    };
    NewEvent::new(event.event_type.clone(), &data)
        .with_id(event.event_id)
        .with_schema_version(event.schema_version)
        .with_metadata(&metadata)
}

/// Starts a case on `workflow` with `data`. The definition is registered first.
pub async fn start_case(
    store: &Store,
    workflow: &Workflow,
    id: &str,
    data: Value,
    actor: Actor,
    at: DateTime<FixedOffset>,
    command: Uuid,
) -> Result<LoadedCase, CaseError> {
    let stream = case_stream(id)?;
    register(store, workflow).await?;
    let existing = load_case(store, id).await?;
    let state = existing.map(|c| c.state).unwrap_or_default();
    let request = CommandRequest {
        id: command,
        name: "start".to_owned(),
        input: data,
        actor: actor.clone(),
        at,
    };
    let event = start(workflow, &state, id, &request).map_err(CaseError::Rejected)?;
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![to_new_event(&event, &actor, command)],
        )
        .await
        .map_err(|e| match e {
            StoreError::WrongExpectedVersion { .. } => CaseError::Rejected(Rejection {
                code: "case_exists".to_owned(),
                command: "start".to_owned(),
                stage: String::new(),
                entity: None,
                entity_state: None,
                message_en: format!("case {id} has already started"),
                message_vi: format!("Hồ sơ {id} đã được khởi tạo"),
            }),
            other => other.into(),
        })?;
    load_case(store, id)
        .await?
        .ok_or_else(|| CaseError::NotFound(id.to_owned()))
}

/// Runs a command on a case: decide on the current state, append with its version, and retry
/// from a fresh read if another writer appended in between. The command id makes retries (and a
/// caller's repeated request) idempotent.
pub async fn run_command(
    store: &Store,
    id: &str,
    request: CommandRequest,
) -> Result<(LoadedCase, Vec<CaseEvent>), CaseError> {
    let case = load_case(store, id)
        .await?
        .ok_or_else(|| CaseError::NotFound(id.to_owned()))?;
    run_command_on(store, case, request).await
}

/// As [`run_command`], on a case the caller has just read: decided on that state; if another
/// writer appended in between, the case is brought up to date (only the new events are read)
/// and the command decided again.
pub async fn run_command_on(
    store: &Store,
    mut case: LoadedCase,
    request: CommandRequest,
) -> Result<(LoadedCase, Vec<CaseEvent>), CaseError> {
    let stream = case_stream(&case.state.id)?;
    let mut attempt = 0;
    while attempt < RETRIES {
        // The same command again (a retry after a lost answer): it has already been applied.
        let first = event_id(request.id, 0);
        if case.events.iter().any(|e| e.event_id == first) {
            return Ok((case, Vec::new()));
        }
        let workflow = pinned(store, &case.state).await?;
        let events = decide(&workflow, &case.state, &request).map_err(CaseError::Rejected)?;
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| to_new_event(e, &request.actor, request.id))
            .collect();
        match store
            .append(
                &stream,
                ExpectedVersion::Exact(case.state.stream_version),
                new,
            )
            .await
        {
            Ok(_) => {
                // The case as it is now: the state it was decided on, with the events appended
                // since (these, and any another writer slipped in before them).
                let after = catch_up(store, case).await?;
                return Ok((after, events));
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {
                attempt += 1;
                let spread = u64::from(request.id.as_bytes()[15] % 8);
                let pause = u64::from(attempt.min(10)) * 2 + spread;
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                case = catch_up(store, case).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CaseError::Contended(case.state.id))
}

/// As [`run_command_on`], through `cache`: decided on `case` (as the cache gave it) with
/// `workflow`, the definition the case is pinned to; after a lost race the case is brought up to
/// date through the cache and the command decided again. Returns the case after the command (it
/// and any events another writer appended before the answer), which the cache keeps.
pub async fn run_command_cached(
    store: &Store,
    cache: &CaseCache,
    workflow: &Workflow,
    mut case: std::sync::Arc<LoadedCase>,
    request: CommandRequest,
) -> Result<(std::sync::Arc<LoadedCase>, Vec<CaseEvent>), CaseError> {
    let id = case.state.id.clone();
    let stream = case_stream(&id)?;
    let first = event_id(request.id, 0);
    let mut attempt = 0;
    while attempt < RETRIES {
        // The same command again (a retry after a lost answer): it has already been applied.
        if case.events.iter().any(|e| e.event_id == first) {
            return Ok((case, Vec::new()));
        }
        let events = decide(workflow, &case.state, &request).map_err(CaseError::Rejected)?;
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| to_new_event(e, &request.actor, request.id))
            .collect();
        let base = case.state.stream_version;
        match store
            .append(&stream, ExpectedVersion::Exact(base), new)
            .await
        {
            Ok(_) => {
                // Let go of the state decided on, so that the cache can evolve it in place.
                drop(case);
                // These events took the versions after `base`: any state at least that recent
                // holds them.
                let after = cache
                    .load_at_least(store, &id, base + events.len() as u64)
                    .await?
                    .ok_or_else(|| CaseError::NotFound(id.clone()))?;
                return Ok((after, events));
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {
                attempt += 1;
                let spread = u64::from(request.id.as_bytes()[15] % 8);
                let pause = u64::from(attempt.min(10)) * 2 + spread;
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                case = cache
                    .load(store, &id)
                    .await?
                    .ok_or_else(|| CaseError::NotFound(id.clone()))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CaseError::Contended(id))
}

/// Ids of every case, in id order.
pub async fn list_cases(store: &Store) -> Result<Vec<String>, CaseError> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_streams("case/", after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE;
        after = page.last().map(|s| s.stream_id.clone());
        ids.extend(
            page.into_iter()
                .filter_map(|s| s.stream_id.strip_prefix("case/").map(str::to_owned)),
        );
        if done {
            break;
        }
    }
    Ok(ids)
}

/// Reads every `*.toml` calendar file in `dir` (one year each); a missing folder means weekends
/// only. Errors name the file, line and column.
pub fn read_calendar_dir(dir: &std::path::Path) -> Result<Calendar, CaseError> {
    let bad = |message: String| CaseError::Calendar(message);
    if !dir.is_dir() {
        return Ok(Calendar::weekends_only());
    }
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| CaseError::Read {
            path: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut years = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| CaseError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let value: toml::Value = toml::from_str(&text).map_err(|e| {
            let place = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!(":{line}:{column}")
                })
                .unwrap_or_default();
            bad(format!(
                "invalid calendar file {}{place}: {}",
                path.display(),
                e.message()
            ))
        })?;
        let year: giamsat_engine::CalendarYear = serde_json::from_value(toml_to_json(value))
            .map_err(|e| bad(format!("invalid calendar file {}: {e}", path.display())))?;
        years.push(year);
    }
    Calendar::from_years(&years)
        .map_err(|e| bad(format!("invalid calendar in {}: {e}", dir.display())))
}

/// TOML as JSON: dates become `YYYY-MM-DD` strings, which the calendar types read; exporter
/// configuration tables are handed to plugins this way.
pub fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}
