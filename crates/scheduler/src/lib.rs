//! The scheduler: moves cases forward on time. It keeps an index of due timers derived from the
//! log (rebuilt from the log on start, kept current by following it), fires each timer through
//! the normal command path when its time comes ([`giamsat_cases::fire_timer`]), and runs cron
//! schedules with a high-water mark kept in the log. Clocks are injected ([`Clock`]).
//!
//! It changes nothing except by appending events with an expected version, so two schedulers on
//! one database never both act on the same timer or cron run.

#![allow(clippy::result_large_err)]

mod clock;
mod cron;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use giamsat_cases::{
    CaseCache, CaseError, Definitions, FireOutcome, TimerFiring, fire_timer, list_cases, load_case,
    timer_command_id,
};
use giamsat_engine::{Calendar, CaseState, TimerInstance, event_id, timers};
use giamsat_store::{EventFilter, Store, StoreError};
use giamsat_types::Position;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub use clock::{Clock, ManualClock, SimulatedClock};
pub use cron::{
    CRON_RAN_EVENT, CRON_REGISTERED_EVENT, CRON_SKIPPED_EVENT, CronError, CronRun, CronSchedule,
    CronState, cron_state, run_cron, run_crons,
};

const CASE_PREFIX: &str = "case/";
/// The most timers one round of [`Scheduler::fire_due`] takes up.
pub const MAX_ROUND: usize = 1024;
/// How long a timer whose firing failed waits before the next attempt.
const RETRY_AFTER_FAILURE: TimeDelta = TimeDelta::seconds(30);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error(transparent)]
    Cron(#[from] CronError),
    #[error("timer {instance} of case {case} failed: {message}")]
    Timer {
        case: String,
        instance: String,
        message: String,
    },
}

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Timers of different cases fired at the same time (one case's timers always fire one at a
    /// time, in due order).
    pub concurrency: usize,
    /// A timer with policy `skip` that is acted on later than this after its due time is skipped.
    pub skip_late_after: TimeDelta,
    /// How many folded cases the scheduler keeps in memory (its `CaseCache`, which a daemon on
    /// the same store shares); 0 keeps none.
    pub case_cache: usize,
}

impl Default for SchedulerOptions {
    fn default() -> SchedulerOptions {
        SchedulerOptions {
            concurrency: 16,
            skip_late_after: TimeDelta::minutes(5),
            case_cache: giamsat_cases::DEFAULT_CASE_CACHE,
        }
    }
}

/// One timer the scheduler acted on (or found already acted on).
#[derive(Debug, Clone)]
pub struct Firing {
    pub case: String,
    pub instance: String,
    pub due: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub outcome: FireOutcome,
}

impl Firing {
    /// The timer id, from the instance id (`timer:key@due`).
    pub fn timer(&self) -> &str {
        self.instance.split(':').next().unwrap_or_default()
    }

    /// The entity key, for per-entity timers.
    pub fn key(&self) -> Option<&str> {
        let rest = self.instance.split_once(':')?.1;
        let key = rest.split_once('@')?.0;
        (key != "-").then_some(key)
    }
}

/// Pending timers in due order, and which ones belong to each case (to replace them when the
/// case changes).
#[derive(Debug, Default)]
struct Index {
    due: BTreeSet<(DateTime<Utc>, String, String)>,
    by_case: HashMap<String, Vec<(DateTime<Utc>, String)>>,
    /// The case version each case's entries were derived from: an older derivation (a firing
    /// task's state, overtaken by another writer's event the follower already applied) never
    /// replaces a newer one.
    versions: HashMap<String, u64>,
}

impl Index {
    fn replace(&mut self, case: &str, version: u64, entries: Vec<(DateTime<Utc>, String)>) {
        match self.versions.get(case) {
            Some(known) if *known > version => return,
            _ => {
                self.versions.insert(case.to_owned(), version);
            }
        }
        if let Some(old) = self.by_case.remove(case) {
            for (due, instance) in old {
                self.due.remove(&(due, case.to_owned(), instance));
            }
        }
        if entries.is_empty() {
            return;
        }
        for (due, instance) in &entries {
            self.due.insert((*due, case.to_owned(), instance.clone()));
        }
        self.by_case.insert(case.to_owned(), entries);
    }

    fn remove(&mut self, case: &str, due: DateTime<Utc>, instance: &str) {
        self.due
            .remove(&(due, case.to_owned(), instance.to_owned()));
        if let Some(list) = self.by_case.get_mut(case) {
            list.retain(|(_, i)| i != instance);
        }
    }

    fn insert(&mut self, case: &str, due: DateTime<Utc>, instance: &str) {
        self.due.insert((due, case.to_owned(), instance.to_owned()));
        self.by_case
            .entry(case.to_owned())
            .or_default()
            .push((due, instance.to_owned()));
    }

    fn next(&self) -> Option<DateTime<Utc>> {
        self.due.first().map(|(due, _, _)| *due)
    }
}

/// The timer scheduler of one process.
#[derive(Debug)]
pub struct Scheduler {
    store: Store,
    clock: Clock,
    calendar: RwLock<Arc<Calendar>>,
    definitions: Definitions,
    /// Folded cases, caught up as the log is followed (shared with a daemon on the same store).
    cases: Arc<CaseCache>,
    index: Mutex<Index>,
    wake: Notify,
    options: SchedulerOptions,
    /// Restrict to one case (`simulate --case`).
    only_case: Option<String>,
    /// Firings that failed since last taken (for simulations, which stop at the first).
    failures: Mutex<Vec<SchedulerError>>,
    /// Ids of events this scheduler's firings appended that the follower has not seen yet.
    own: Mutex<HashSet<Uuid>>,
}

impl Scheduler {
    pub fn new(
        store: Store,
        clock: Clock,
        calendar: Calendar,
        options: SchedulerOptions,
    ) -> Arc<Scheduler> {
        Scheduler::build(store, clock, calendar, options, None)
    }

    /// A scheduler that looks at one case only.
    pub fn for_case(
        store: Store,
        clock: Clock,
        calendar: Calendar,
        options: SchedulerOptions,
        case: &str,
    ) -> Arc<Scheduler> {
        Scheduler::build(store, clock, calendar, options, Some(case.to_owned()))
    }

    fn build(
        store: Store,
        clock: Clock,
        calendar: Calendar,
        options: SchedulerOptions,
        only_case: Option<String>,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            store,
            clock,
            calendar: RwLock::new(Arc::new(calendar)),
            definitions: Definitions::new(),
            cases: Arc::new(CaseCache::new(options.case_cache)),
            index: Mutex::new(Index::default()),
            wake: Notify::new(),
            options,
            only_case,
            failures: Mutex::new(Vec::new()),
            own: Mutex::new(HashSet::new()),
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store the scheduler works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The cases the scheduler keeps folded; a daemon on the same store shares them.
    pub fn case_cache(&self) -> Arc<CaseCache> {
        self.cases.clone()
    }

    pub fn calendar(&self) -> Arc<Calendar> {
        self.calendar
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the calendar (new holiday files) and re-derives every case's timers. Dates of
    /// the cases never change; only timers counted in working days may move.
    pub async fn set_calendar(&self, calendar: Calendar) -> Result<(), SchedulerError> {
        *self
            .calendar
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(calendar);
        let cases: Vec<String> = self.lock().versions.keys().cloned().collect();
        for case in cases {
            self.refresh_case(&case).await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    fn own_events(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pending timers in the index.
    pub fn pending(&self) -> usize {
        self.lock().due.len()
    }

    /// The earliest pending due time.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.lock().next()
    }

    /// Builds the index from the log: loads each case in turn (memory holds one case at a time,
    /// however many there are), derives its timers and keeps the pending ones. Returns the log
    /// position it was built at; following the log from there misses nothing.
    pub async fn rebuild(&self) -> Result<Position, SchedulerError> {
        let head = self.store.head().await?.map_or(0, |h| h.position);
        let cases = match &self.only_case {
            Some(case) => vec![case.clone()],
            None => list_cases(&self.store).await?,
        };
        for case in cases {
            // Not through the cache: memory holds one case at a time.
            let refreshed = match load_case(&self.store, &case).await {
                Ok(Some(loaded)) => self.schedule(&loaded.state).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = refreshed {
                tracing::warn!(case = %case, error = %e, "case skipped by the scheduler");
            }
        }
        Ok(head)
    }

    /// Re-derives one case's timers from its current state.
    pub async fn refresh_case(&self, case: &str) -> Result<(), SchedulerError> {
        self.refresh_case_since(case, None).await
    }

    /// Re-derives one case's timers from a state at stream version `version` or later (the
    /// cached one when it is that recent), or from its current state.
    async fn refresh_case_since(
        &self,
        case: &str,
        version: Option<u64>,
    ) -> Result<(), SchedulerError> {
        let loaded = match version {
            Some(version) => self.cases.load_at_least(&self.store, case, version).await?,
            None => self.cases.load(&self.store, case).await?,
        };
        let Some(loaded) = loaded else {
            self.lock().replace(case, 0, Vec::new());
            return Ok(());
        };
        self.schedule(&loaded.state).await
    }

    /// Derives a case's pending timers from a state of it and puts them in the index (unless
    /// the index already holds a derivation from a newer version).
    async fn schedule(&self, state: &CaseState) -> Result<(), SchedulerError> {
        let workflow = self.definitions.get(&self.store, state).await?;
        let entries = pending(&timers(&workflow, state, &self.calendar()));
        self.lock()
            .replace(&state.id, state.stream_version, entries);
        Ok(())
    }

    /// The timers of one case as they stand now (pending, inactive and done).
    pub async fn case_timers(&self, case: &str) -> Result<Vec<TimerInstance>, SchedulerError> {
        let Some(loaded) = self.cases.load(&self.store, case).await? else {
            return Err(CaseError::NotFound(case.to_owned()).into());
        };
        let workflow = self.definitions.get(&self.store, &loaded.state).await?;
        Ok(timers(&workflow, &loaded.state, &self.calendar()))
    }

    /// Fires the pending timers due at or before `now` (the earliest [`MAX_ROUND`] of them: a
    /// backlog after a long stop is worked off in rounds, so memory stays bounded), in due order
    /// per case, several cases at a time. Returns what happened, in due order.
    pub async fn fire_due(self: &Arc<Self>, now: DateTime<Utc>) -> Vec<Firing> {
        let due: Vec<(DateTime<Utc>, String, String)> = {
            let index = self.lock();
            index
                .due
                .iter()
                .take_while(|(due, _, _)| *due <= now)
                .take(MAX_ROUND)
                .cloned()
                .collect()
        };
        if due.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<String> = Vec::new();
        let mut per_case: HashMap<String, Vec<(DateTime<Utc>, String)>> = HashMap::new();
        for (due, case, instance) in due {
            let list = per_case.entry(case.clone()).or_default();
            if list.is_empty() {
                order.push(case);
            }
            list.push((due, instance));
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(self.options.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for case in order {
            let instances = per_case.remove(&case).unwrap_or_default();
            let this = self.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                this.fire_case(&case, instances).await
            });
        }
        let mut out = Vec::new();
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(firings) => out.extend(firings),
                Err(e) => tracing::error!(error = %e, "a timer task failed"),
            }
        }
        out.sort_by(|a, b| (a.due, &a.case, &a.instance).cmp(&(b.due, &b.case, &b.instance)));
        out
    }

    async fn fire_case(&self, case: &str, instances: Vec<(DateTime<Utc>, String)>) -> Vec<Firing> {
        let calendar = self.calendar();
        let mut out = Vec::new();
        let mut failed = Vec::new();
        let mut state: Option<CaseState> = None;
        for (due, instance) in instances {
            let fired_at = self.clock.now();
            let now: DateTime<FixedOffset> = fired_at.fixed_offset();
            // The first event a firing appends has this id; the follower skips it (this task
            // refreshes the case itself below) instead of loading the case once more.
            let first = event_id(timer_command_id(case, &instance), 0);
            self.own_events().insert(first);
            let result = fire_timer(
                &self.store,
                &self.definitions,
                &calendar,
                case,
                state.take(),
                &instance,
                now,
                self.options.skip_late_after,
            )
            .await;
            self.lock().remove(case, due, &instance);
            let appended = matches!(
                result,
                Ok(TimerFiring {
                    outcome: FireOutcome::Fired(_)
                        | FireOutcome::Rejected(_)
                        | FireOutcome::Skipped,
                    ..
                })
            );
            if !appended {
                self.own_events().remove(&first);
            }
            match result {
                Ok(TimerFiring {
                    outcome,
                    state: after,
                }) => {
                    state = Some(after);
                    log_firing(case, &instance, due, fired_at, &outcome);
                    out.push(Firing {
                        case: case.to_owned(),
                        instance,
                        due,
                        fired_at,
                        outcome,
                    });
                }
                Err(e) => {
                    // A failure (the database unreachable, a definition missing) is retried
                    // after a pause rather than at once, so it cannot spin.
                    let retry = self.clock.now() + RETRY_AFTER_FAILURE;
                    tracing::error!(case, instance, error = %e, retry_at = %retry, "timer failed");
                    self.failures
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(SchedulerError::Timer {
                            case: case.to_owned(),
                            instance: instance.clone(),
                            message: e.to_string(),
                        });
                    failed.push((retry, instance));
                }
            }
        }
        if !failed.is_empty() {
            let mut index = self.lock();
            for (retry, instance) in failed {
                index.insert(case, retry, &instance);
            }
            return out;
        }
        // Reschedule from the state the firings left (no read back); should another writer
        // have appended meanwhile, the follower's derivation from the newer version wins.
        let rescheduled = match &state {
            Some(state) => self.schedule(state).await,
            None => self.refresh_case(case).await,
        };
        if let Err(e) = rescheduled {
            tracing::warn!(case, error = %e, "cannot refresh the case's timers");
        }
        out
    }

    /// Runs until `shutdown` turns true: rebuilds the index, fires timers as they come due
    /// (those that came due while no scheduler ran fire at once, in due order, recorded as late),
    /// and follows the log so that new and changed cases are scheduled.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), SchedulerError> {
        let position = self.rebuild().await?;
        tracing::info!(pending = self.pending(), clock = %self.clock.describe(), "scheduler started");
        let follower = tokio::spawn(self.clone().follow(position));
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wake = self.wake.notified();
            self.fire_due(self.clock.now()).await;
            // Failures were logged and are retried after a pause; nothing here waits on them.
            self.failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            let next = self.next_due();
            tokio::select! {
                _ = async {
                    match next {
                        Some(at) => self.clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = wake => {}
                _ = shutdown.changed() => {}
            }
        }
        follower.abort();
        Ok(())
    }

    async fn follow(self: Arc<Self>, after: Position) {
        let filter = EventFilter {
            event_types: Vec::new(),
            stream_prefix: CASE_PREFIX.to_owned(),
        };
        let mut subscription = self.store.subscribe(after, filter);
        loop {
            // Each changed case, with the newest version of it seen.
            let mut cases = BTreeMap::new();
            match subscription.next().await {
                Ok(event) => {
                    if !self.own_events().remove(&event.event_id) {
                        seen(&mut cases, event.stream_id, event.stream_version);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler cannot read the log; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
            while subscription.buffered() > 0 {
                if let Ok(Some(event)) = subscription.try_next().await
                    && !self.own_events().remove(&event.event_id)
                {
                    seen(&mut cases, event.stream_id, event.stream_version);
                }
            }
            for (stream, version) in cases {
                let Some(case) = stream.strip_prefix(CASE_PREFIX) else {
                    continue;
                };
                if self.only_case.as_deref().is_some_and(|c| c != case) {
                    continue;
                }
                // A state at least as new as the event suffices: a later event comes here too.
                if let Err(e) = self.refresh_case_since(case, Some(version)).await {
                    tracing::warn!(case, error = %e, "cannot schedule the case's timers");
                }
            }
            self.wake.notify_one();
        }
    }

    /// For simulations on a manual clock: moves the clock to each pending due time up to
    /// `until`, in order, and fires what is due there. Returns everything that happened; stops
    /// at the first timer that fails (with that error).
    pub async fn advance_to(
        self: &Arc<Self>,
        clock: &ManualClock,
        until: DateTime<Utc>,
    ) -> Result<Vec<Firing>, SchedulerError> {
        let mut out = Vec::new();
        loop {
            match self.next_due() {
                Some(next) if next <= until => {
                    clock.set(next);
                    let firings = self.fire_due(clock.now()).await;
                    let failure = self
                        .failures
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .drain(..)
                        .next();
                    if let Some(failure) = failure {
                        return Err(failure);
                    }
                    out.extend(firings);
                }
                _ => break,
            }
        }
        clock.set(until);
        Ok(out)
    }
}

/// Notes that `stream` reached `version`.
fn seen(cases: &mut BTreeMap<String, u64>, stream: String, version: u64) {
    let newest = cases.entry(stream).or_default();
    *newest = (*newest).max(version);
}

fn pending(timers: &[TimerInstance]) -> Vec<(DateTime<Utc>, String)> {
    timers
        .iter()
        .filter(|t| t.is_pending())
        .map(|t| (t.due.with_timezone(&Utc), t.instance.clone()))
        .collect()
}

fn log_firing(
    case: &str,
    instance: &str,
    due: DateTime<Utc>,
    fired_at: DateTime<Utc>,
    outcome: &FireOutcome,
) {
    let late_ms = (fired_at - due).num_milliseconds();
    match outcome {
        FireOutcome::Fired(events) => tracing::info!(
            case,
            instance,
            late_ms,
            events = ?events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
            "timer fired"
        ),
        FireOutcome::Rejected(r) => {
            tracing::info!(case, instance, late_ms, code = %r.code, "timer's command no longer applies")
        }
        FireOutcome::Skipped => {
            tracing::info!(case, instance, late_ms, "late timer skipped by its policy")
        }
        FireOutcome::AlreadyDone(_) => {
            tracing::debug!(case, instance, "timer already handled by another scheduler")
        }
        FireOutcome::NotDue => tracing::debug!(case, instance, "timer moved or no longer applies"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn an_older_derivation_never_replaces_a_newer_one() {
        let mut index = Index::default();
        let newer = vec![(
            at("2024-04-26T01:00:00Z"),
            "visit_reminder:a@new".to_owned(),
        )];
        let older = vec![(
            at("2024-04-24T01:00:00Z"),
            "visit_reminder:a@old".to_owned(),
        )];
        index.replace("tg", 7, newer);
        index.replace("tg", 6, older);
        assert_eq!(index.next(), Some(at("2024-04-26T01:00:00Z")));
        assert_eq!(index.due.len(), 1);
        // The same version again (a calendar reload) does replace.
        index.replace("tg", 7, Vec::new());
        assert_eq!(index.next(), None);
        assert!(index.by_case.is_empty());
    }
}
