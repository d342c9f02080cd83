//! Leases for the daemon's singleton tasks. Several daemons may share one database (PostgreSQL;
//! on SQLite, several on one file): all of them serve the API and accept commands, but only one
//! at a time runs the timer scheduler with the cron schedules (lease `scheduler`) and only one
//! runs each exporter (lease `exporter/<id>`).
//!
//! For each of its tasks a daemon tries to take the lease at start ([`Store::try_lease`]: a
//! PostgreSQL session advisory lock on a connection of its own, or an `flock`ed file next to the
//! SQLite database; see `giamsat_store::Lease`). While it holds it, it runs the task (restarted
//! after a failure, as any background task) and checks every [`CHECK`] that the lease is still
//! held; if not (the lease's connection broke), it stops the task, which saves its checkpoint,
//! and goes back to trying. A daemon that does not hold a lease tries again every [`RETRY`]. When
//! the holder stops, its leases are released as its tasks finish; when it dies, the database or
//! the operating system frees them with its connection or its file. Either way another daemon
//! takes over within a few seconds: at most [`RETRY`] after the release, plus, for a holder whose
//! machine vanished, PostgreSQL's keepalive timeout on the lease's connection (about 11 s).
//!
//! A lease is not a fence: a holder whose connection broke may still be finishing a firing or an
//! export while another takes over. Timers stay exactly-once in effect (appends carry the case's
//! expected version and a deterministic event id) and exporters at-least-once, as they are with
//! any number of processes.
//!
//! Which leases this daemon holds shows in `/readyz` (`leases`) and `/metrics`
//! (`giamsat_lease_held{name="scheduler"} 1`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use giamsat_scheduler::CronSchedule;
use giamsat_store::{Lease, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::AppState;

/// How often a daemon tries again to take a lease another daemon holds.
pub const RETRY: Duration = Duration::from_secs(2);
/// How often a holder checks that it still holds its lease.
pub const CHECK: Duration = Duration::from_secs(2);
/// The longest wait for the database when taking a lease.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The lease of the timer scheduler and the cron schedules.
pub const SCHEDULER: &str = "scheduler";

/// The lease of exporter `id`.
pub fn exporter(id: &str) -> String {
    format!("exporter/{id}")
}

/// The leases this daemon runs tasks under, and whether it holds each now.
#[derive(Debug, Default)]
pub struct LeaseBoard {
    held: Mutex<BTreeMap<String, bool>>,
}

impl LeaseBoard {
    fn set(&self, name: &str, held: bool) {
        self.lock().insert(name.to_owned(), held);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Each lease by name: held by this daemon or not.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        self.lock().clone()
    }

    /// The `giamsat_lease_held` gauge in the Prometheus text format (nothing without leases).
    pub fn render(&self, text: &mut String) {
        let held = self.snapshot();
        if held.is_empty() {
            return;
        }
        let _ = writeln!(
            text,
            "# HELP giamsat_lease_held Whether this daemon holds the lease and runs its task (1) or waits for another daemon to release it (0).\n# TYPE giamsat_lease_held gauge"
        );
        for (name, held) in held {
            let name = name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                text,
                "giamsat_lease_held{{name=\"{name}\"}} {}",
                u8::from(held)
            );
        }
    }
}

/// For a process of its own that runs one of the daemon's singleton tasks (`giamsat scheduler
/// run`, `giamsat exporters run`): takes the lease `name`, trying again every [`RETRY`] while
/// another process (a daemon, or the same command run twice) holds it; `waiting` is called
/// once, the first time the lease is found taken. `None` when `cancel` finishes first.
pub async fn wait_for_lease(
    store: &Store,
    name: &str,
    waiting: impl FnOnce(),
    cancel: impl Future<Output = ()>,
) -> Result<Option<Lease>, giamsat_store::StoreError> {
    let mut waiting = Some(waiting);
    tokio::pin!(cancel);
    loop {
        if let Some(lease) = store.try_lease(name).await? {
            return Ok(Some(lease));
        }
        if let Some(say) = waiting.take() {
            say();
        }
        tokio::select! {
            () = &mut cancel => return Ok(None),
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// A background task: runs until the receiver turns true, an error restarts it.
type Task =
    Arc<dyn Fn(watch::Receiver<bool>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Starts the scheduler with the cron schedules, and each enabled exporter, each under its lease.
pub(crate) fn spawn_leased(tasks: &mut JoinSet<()>, app: &AppState, crons: Vec<CronSchedule>) {
    if let Some(scheduler) = &app.scheduler {
        let mut under: Vec<(String, Task)> = Vec::new();
        let scheduler = scheduler.clone();
        under.push((
            "scheduler".to_owned(),
            Arc::new(move |rx| {
                let scheduler = scheduler.clone();
                Box::pin(async move { scheduler.run(rx).await.map_err(|e| e.to_string()) })
            }),
        ));
        if !crons.is_empty() {
            let store = app.store.clone();
            let clock = app.clock.clone();
            under.push((
                "cron".to_owned(),
                Arc::new(move |rx| {
                    let (store, clock, crons) = (store.clone(), clock.clone(), crons.clone());
                    Box::pin(async move {
                        giamsat_scheduler::run_crons(store, clock, crons, rx)
                            .await
                            .map_err(|e| e.to_string())
                    })
                }),
            ));
        }
        app.leases.set(SCHEDULER, false);
        tasks.spawn(hold(app.clone(), SCHEDULER.to_owned(), under));
    }
    for entry in app.exporters.iter().filter(|e| e.enabled) {
        let runner = entry.runner.clone();
        let task: Task = Arc::new(move |rx| {
            let runner = runner.clone();
            Box::pin(async move { runner.run(rx).await.map(|_| ()).map_err(|e| e.to_string()) })
        });
        let name = exporter(&entry.id);
        app.leases.set(&name, false);
        tasks.spawn(hold(
            app.clone(),
            name,
            vec![(format!("exporter {}", entry.id), task)],
        ));
    }
}

/// Takes the lease `name` whenever it is free and runs `under` while it is held, until the
/// daemon stops.
async fn hold(app: AppState, name: String, under: Vec<(String, Task)>) {
    let mut shutdown = app.shutdown.clone();
    loop {
        let Some(mut lease) = acquire(&app.store, &name, &mut shutdown).await else {
            return;
        };
        app.leases.set(&name, true);
        tracing::info!(lease = %name, "lease taken: running its tasks here");
        let (stop, stopped) = watch::channel(false);
        let mut running = JoinSet::new();
        for (task_name, task) in &under {
            let task = task.clone();
            running.spawn(crate::supervise(
                task_name.clone(),
                stopped.clone(),
                move |rx| task(rx),
            ));
        }
        let lost = loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK) => {
                    if let Err(e) = lease.check().await {
                        tracing::warn!(lease = %name, error = %e, "lease lost: stopping its tasks here");
                        break true;
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break false;
                    }
                }
            }
        };
        // The tasks finish what they are doing and save their checkpoints before the lease goes.
        let _ = stop.send(true);
        while let Some(joined) = running.join_next().await {
            if let Err(e) = joined {
                tracing::error!(lease = %name, error = %e, "a leased task panicked");
            }
        }
        app.leases.set(&name, false);
        lease.release().await;
        if !lost {
            tracing::info!(lease = %name, "lease released");
            return;
        }
    }
}

/// Tries to take the lease every [`RETRY`] until it is taken (`Some`) or the daemon stops
/// (`None`).
async fn acquire(store: &Store, name: &str, shutdown: &mut watch::Receiver<bool>) -> Option<Lease> {
    let mut told = false;
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match tokio::time::timeout(TRY_TIMEOUT, store.try_lease(name)).await {
            Ok(Ok(Some(lease))) => return Some(lease),
            Ok(Ok(None)) => {
                if !told {
                    tracing::info!(lease = %name, retry_s = RETRY.as_secs(), "lease held by another daemon: waiting for it");
                    told = true;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %name, error = %e, "cannot take the lease; trying again")
            }
            Err(_) => {
                tracing::warn!(lease = %name, timeout_s = TRY_TIMEOUT.as_secs(), "taking the lease timed out; trying again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_names_each_lease() {
        let board = LeaseBoard::default();
        let mut text = String::new();
        board.render(&mut text);
        assert_eq!(text, "");
        board.set(SCHEDULER, true);
        board.set(&exporter("documents"), false);
        board.render(&mut text);
        assert!(text.contains("# TYPE giamsat_lease_held gauge\n"));
        assert!(text.contains("giamsat_lease_held{name=\"scheduler\"} 1\n"));
        assert!(text.contains("giamsat_lease_held{name=\"exporter/documents\"} 0\n"));
    }
}
