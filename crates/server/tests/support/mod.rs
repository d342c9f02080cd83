//! What the API and the pages tests share: the daemon started in-process on 127.0.0.1:0 with a
//! fresh SQLite store, the repository's workflows and calendars, a manual clock at the seed's
//! notice date (25/3/2024 08:00, Asia/Ho_Chi_Minh), the scheduler and the documents exporter.
//! Each test file adds the requests it makes (`impl Daemon` blocks of its own).

// Each test file uses part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use giamsat_exporter::{Runner, RunnerOptions};
use giamsat_scheduler::{Clock, ManualClock, Scheduler, SchedulerOptions};
use giamsat_server::{ExporterEntry, Role, ServeError, ServeOptions, Server, create_token};
use giamsat_store::{Store, StoreOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CASE: &str = "tg2024";
/// A bound on waiting for something the daemon does by itself (an exporter's rendering, an
/// event on a stream): a safety net against a hung test, never an expected duration.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

/// The seed's example case data (the Tuần Giáo 2024 notice).
pub fn seed() -> Value {
    let path = root().join("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml");
    let text = std::fs::read_to_string(&path).expect("the seed case");
    serde_saphyr::from_str(&text).expect("the seed case parses")
}

/// A running daemon and what a test needs to talk to it.
pub struct Daemon {
    pub addr: SocketAddr,
    pub admin: String,
    pub store: Store,
    pub clock: ManualClock,
    pub dir: tempfile::TempDir,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Daemon {
    pub async fn start() -> Daemon {
        Daemon::start_with(|_| {}).await
    }

    /// Starts it with the test's changes to the options.
    pub async fn start_with(edit: impl FnOnce(&mut ServeOptions)) -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("giamsat.db").display());
        let store = Store::open(&url, StoreOptions::default())
            .await
            .expect("a store");
        let clock = ManualClock::new(t("2024-03-25T08:00:00+07:00"));
        let calendar = giamsat_cases::read_calendar_dir(&root().join("config/calendars"))
            .expect("the calendars");
        let scheduler = Scheduler::new(
            store.clone(),
            Clock::Manual(clock.clone()),
            calendar.clone(),
            SchedulerOptions::default(),
        );
        let output = dir.path().join("documents");
        let documents = giamsat_documents::exporter::DocumentsExporter::from_config(
            json!({"output": output, "formats": ["html", "md", "docx"]}),
            store.clone(),
        )
        .expect("the documents exporter");
        let runner = Runner::new(
            "documents",
            store.clone(),
            Arc::new(documents),
            RunnerOptions {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(10),
                ..RunnerOptions::default()
            },
        );
        let mut options = ServeOptions::new(store.clone(), root().join("workflows"));
        options.listen = "127.0.0.1:0".parse().expect("an address");
        options.calendar = calendar;
        options.clock = Clock::Manual(clock.clone());
        options.scheduler = Some(scheduler);
        options.exporters = vec![ExporterEntry {
            id: "documents".to_owned(),
            kind: "documents".to_owned(),
            enabled: true,
            runner: Arc::new(runner),
        }];
        options.documents_dir = Some(output);
        edit(&mut options);
        let server = Server::bind(options).await.expect("the daemon binds");
        let addr = server.local_addr();
        let admin = server
            .initial_admin_token()
            .expect("a first start creates an admin token")
            .secret
            .clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Daemon {
            addr,
            admin,
            store,
            clock,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it as SIGTERM does and waits until it has stopped cleanly.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the daemon task")
                .expect("the daemon stops cleanly");
        }
    }

    /// A token of a role, created as the CLI does (straight into the log).
    pub async fn token(&self, role: Role, unit: Option<&str>, name: &str) -> String {
        create_token(
            &self.store,
            role,
            unit,
            Some(name),
            "admin:test",
            self.clock.now(),
        )
        .await
        .expect("a token")
        .secret
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
