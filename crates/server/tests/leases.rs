//! Several daemons on one database: all accept commands, exactly one runs the scheduler (with
//! cron) and each exporter, and when it stops or dies another takes over within seconds. The
//! daemons run in-process, each with a store of its own (as separate processes would have), on
//! 127.0.0.1:0; what each runs is read from its `/metrics` (`giamsat_lease_held`) and `/readyz`.
//! PostgreSQL runs when `GIAMSAT_TEST_POSTGRES_URL` is set (a fresh schema per test; required
//! under `CI=true`); SQLite always runs (two daemons on one file, the lease an `flock`ed file).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use giamsat_exporter::{Runner, RunnerOptions};
use giamsat_scheduler::{Clock, ManualClock, Scheduler, SchedulerOptions};
use giamsat_server::{ExporterEntry, Role, ServeError, ServeOptions, Server, create_token};
use giamsat_store::{Store, StoreOptions};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use support::{root, seed, t};

/// How long a takeover may take before the test fails: a bound against a hung test, not a
/// speed requirement (a daemon retries every 2 s).
const TAKEOVER: Duration = Duration::from_secs(15);
const LEASES: [&str; 2] = ["scheduler", "exporter/documents"];

/// One daemon: its own store on the shared database, a scheduler, the documents exporter.
struct Daemon {
    name: &'static str,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Daemon {
    async fn start(name: &'static str, url: &str, documents: &Path) -> Daemon {
        let store = Store::open(url, StoreOptions::default())
            .await
            .expect("a store");
        let clock = Clock::Manual(ManualClock::new(t("2024-03-25T08:00:00+07:00")));
        let calendar = giamsat_engine::Calendar::weekends_only();
        let scheduler = Scheduler::new(
            store.clone(),
            clock.clone(),
            calendar.clone(),
            SchedulerOptions::default(),
        );
        let exporter = giamsat_documents::exporter::DocumentsExporter::from_config(
            json!({"output": documents, "formats": ["md"]}),
            store.clone(),
        )
        .expect("the documents exporter");
        let runner = Runner::new(
            "documents",
            store.clone(),
            Arc::new(exporter),
            RunnerOptions::default(),
        );
        let mut options = ServeOptions::new(store, root().join("workflows"));
        options.listen = "127.0.0.1:0".parse().expect("an address");
        options.calendar = calendar;
        options.clock = clock;
        options.scheduler = Some(scheduler);
        options.exporters = vec![ExporterEntry {
            id: "documents".to_owned(),
            kind: "documents".to_owned(),
            enabled: true,
            runner: Arc::new(runner),
        }];
        options.documents_dir = Some(documents.to_path_buf());
        options.bootstrap_admin = false;
        let server = Server::bind(options).await.expect("the daemon binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Daemon {
            name,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it gracefully: requests finish, tasks stop and their leases are released.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the daemon task").expect("a clean stop");
        }
    }

    /// Drops it on the floor, as a crash would: its tasks are aborted and whatever they held
    /// (connections, files) is dropped without any goodbye.
    async fn kill(&mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, String) {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = if body.is_null() {
            Vec::new()
        } else {
            builder = builder.header("content-type", "application/json");
            body.to_string().into_bytes()
        };
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The leases it holds now, from `/metrics`.
    async fn held(&self) -> Vec<String> {
        let (status, text) = self.send("GET", "/metrics", None, Value::Null).await;
        assert_eq!(status, 200, "{text}");
        let mut held = Vec::new();
        for name in LEASES {
            let prefix = format!("giamsat_lease_held{{name=\"{name}\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("{}: no {prefix} in /metrics:\n{text}", self.name));
            if line[prefix.len()..].trim() == "1" {
                held.push(name.to_owned());
            }
        }
        held
    }

    async fn readyz(&self) -> Value {
        let (status, text) = self.send("GET", "/readyz", None, Value::Null).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("JSON")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until every lease is held by exactly one of `daemons` and returns, per lease, the
/// index of its holder. With `strict`, fails as soon as a lease is held by two daemons at once.
async fn holders(daemons: &[&Daemon], strict: bool) -> Vec<usize> {
    let started = Instant::now();
    loop {
        let mut held = Vec::new();
        for d in daemons {
            held.push(d.held().await);
        }
        let mut by_lease = Vec::new();
        for name in LEASES {
            let who: Vec<usize> = (0..daemons.len())
                .filter(|i| held[*i].iter().any(|x| x == name))
                .collect();
            assert!(
                !strict || who.len() <= 1,
                "lease {name} held by several daemons at once: {held:?}"
            );
            if let [one] = who[..] {
                by_lease.push(one);
            }
        }
        if by_lease.len() == LEASES.len() {
            return by_lease;
        }
        assert!(
            started.elapsed() < TAKEOVER,
            "the leases were not each taken by one daemon within {TAKEOVER:?}: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An admin token, created straight in the log (as `giamsat token create` does) before the
/// daemons start, so each reads it at start.
async fn admin_token(url: &str) -> String {
    let store = Store::open(url, StoreOptions::default())
        .await
        .expect("a store");
    let token = create_token(
        &store,
        Role::Admin,
        None,
        Some("huyen"),
        "admin:test",
        t("2024-03-25T08:00:00+07:00"),
    )
    .await
    .expect("a token")
    .secret;
    store.close().await;
    token
}

/// Both daemons accept commands: the case is started through one and moved on through the
/// other (and each sees what the other did).
async fn commands_are_accepted_by(a: &Daemon, b: &Daemon, token: &str, case: &str) {
    let (status, text) = a
        .send(
            "POST",
            "/api/cases",
            Some(token),
            json!({"workflow": "giam-sat-chuyen-de", "id": case, "data": seed()}),
        )
        .await;
    assert_eq!(status, 201, "start through {}: {text}", a.name);
    let (status, text) = b
        .send(
            "POST",
            &format!("/api/cases/{case}/commands/issue_notice"),
            Some(token),
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        )
        .await;
    assert_eq!(status, 200, "command through {}: {text}", b.name);
    let (status, text) = a
        .send(
            "GET",
            &format!("/api/cases/{case}"),
            Some(token),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let shown: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(shown["stage"], "notified", "{text}");
}

fn postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("GIAMSAT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "GIAMSAT_TEST_POSTGRES_URL must be set in CI"
        );
        eprintln!("skipping: GIAMSAT_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("leases_{}", uuid::Uuid::new_v4().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}schema={schema}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_daemon_runs_the_scheduler_and_exporters_and_another_takes_over() {
    let Some(url) = postgres_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let documents = dir.path().join("documents");
    let token = admin_token(&url).await;
    let mut daemons = vec![
        Daemon::start("a", &url, &documents).await,
        Daemon::start("b", &url, &documents).await,
    ];
    let running: Vec<&Daemon> = daemons.iter().collect();
    let by_lease = holders(&running, true).await;
    // /readyz says what /metrics says.
    for (i, d) in daemons.iter().enumerate() {
        let ready = d.readyz().await;
        for (name, holder) in LEASES.iter().zip(&by_lease) {
            assert_eq!(
                ready["leases"][name],
                json!(*holder == i),
                "{}: {ready}",
                d.name
            );
        }
    }
    commands_are_accepted_by(&daemons[0], &daemons[1], &token, "case-1").await;
    commands_are_accepted_by(&daemons[1], &daemons[0], &token, "case-2").await;

    // The scheduler's holder stops: the other daemon takes every lease.
    let mut stopped = daemons.remove(by_lease[0]);
    stopped.stop().await;
    assert_eq!(holders(&[&daemons[0]], true).await, vec![0; LEASES.len()]);

    // A third daemon joins and waits; then the holder dies without a goodbye (its tasks are
    // dropped, its lease connections closed): PostgreSQL frees the locks with the sessions, and
    // the third daemon takes every lease.
    daemons.push(Daemon::start("c", &url, &documents).await);
    assert_eq!(
        holders(&[&daemons[0], &daemons[1]], true).await,
        vec![0; LEASES.len()]
    );
    let mut dead = daemons.remove(0);
    dead.kill().await;
    assert_eq!(holders(&[&daemons[0]], true).await, vec![0; LEASES.len()]);
    commands_are_accepted_by(&daemons[0], &daemons[0], &token, "case-3").await;
    daemons[0].stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_second_daemon_on_the_same_file_waits_for_the_lease_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("giamsat.db");
    let url = format!("sqlite://{}", file.display());
    let documents = dir.path().join("documents");
    let token = admin_token(&url).await;
    let mut daemons = vec![
        Daemon::start("a", &url, &documents).await,
        Daemon::start("b", &url, &documents).await,
    ];
    holders(&[&daemons[0], &daemons[1]], true).await;
    // The leases are lock files next to the database.
    let canonical = std::fs::canonicalize(&file).expect("canonical");
    for name in LEASES {
        assert!(
            giamsat_store::lock_file(&canonical, name).is_file(),
            "{name}"
        );
    }
    commands_are_accepted_by(&daemons[0], &daemons[1], &token, "case-1").await;
    commands_are_accepted_by(&daemons[1], &daemons[0], &token, "case-2").await;

    // Someone removes the lock files under the running daemons: a holder's next check finds its
    // file gone and stops the task, and each lease is taken again, on a new file, by one daemon.
    // (For a moment both may run a task: a lease is not a fence, and the check runs every 2 s;
    // hence no at-most-one-holder check during this step.)
    for name in LEASES {
        std::fs::remove_file(giamsat_store::lock_file(&canonical, name)).expect("remove");
    }
    let started = Instant::now();
    while !LEASES
        .iter()
        .all(|name| giamsat_store::lock_file(&canonical, name).is_file())
    {
        assert!(
            started.elapsed() < TAKEOVER,
            "the leases were not taken again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_lease = holders(&[&daemons[0], &daemons[1]], false).await;

    // The scheduler's holder dies without stopping anything: closing its files frees the
    // leases, and the other daemon takes every one.
    let mut dead = daemons.remove(by_lease[0]);
    dead.kill().await;
    assert_eq!(holders(&[&daemons[0]], true).await, vec![0; LEASES.len()]);
    commands_are_accepted_by(&daemons[0], &daemons[0], &token, "case-3").await;
    daemons[0].stop().await;
}
