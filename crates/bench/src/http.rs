//! The `http` scenario: the daemon (`giamsat-server`, in this process) on a fresh store with the
//! repository's workflows, driven over real HTTP/1.1 on 127.0.0.1 by N concurrent clients, each
//! with one keep-alive connection and a secretariat token.
//!
//! Setup (not measured): `--cases` seed cases (`giam-sat-chuyen-de`, the Tuần Giáo 2024 start
//! data) are started and given their notice through the API. Then three measured runs:
//!
//! 1. **commands**, closed loop for `--seconds`: each client owns its share of the cases and
//!    cycles each unit of each case through `receive_report` → `request_supplement` →
//!    `receive_report` ..., one command (one appended event) per request, waiting for each
//!    answer: the daemon's maximum command rate and its latency there.
//! 2. **reads**, closed loop: `GET /api/cases/{id}` of the clients' cases.
//! 3. **half rate**: the same commands offered open-loop at half the rate of run 1 (or at
//!    `--paced-rate`), each due at a fixed time; latency counts from the due time, so a daemon
//!    that falls behind shows it.
//!
//! The daemon runs the timer scheduler (on a manual clock at the notice date, so that no timer of
//! the cases comes due: it follows the log and re-derives each changed case's timers as it would
//! in production) and no exporters (rendering documents is the exporters' work, measured apart).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use giamsat_scheduler::{Clock, ManualClock, Scheduler, SchedulerOptions};
use giamsat_server::{Role, ServeOptions, Server, create_token};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::db::{Backend, DbArgs, Fresh};
use crate::measure::{percentile, process_cpu_seconds, rate, round3};
use crate::scenarios::report;

const WORKFLOW: &str = "giam-sat-chuyen-de";
const SEED: &str = "giam-sat-chuyen-de/examples/tuan-giao-2024.yaml";
/// Concurrent requests while the cases are set up.
const SETUP_CLIENTS: usize = 8;

/// The scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// Parent directory of the fresh SQLite directory. Keep it on a real disk.
    #[arg(long, default_value = "target/bench-tmp")]
    pub dir: PathBuf,
    /// PostgreSQL server (with --backend postgres); a fresh schema is made in it.
    #[arg(
        long,
        env = "GIAMSAT_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// The workflows folder (the seed case's definition and start data are read from it).
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Cases the clients share out (each client owns cases i, i + clients, ...).
    #[arg(long, default_value_t = 256)]
    pub cases: usize,
    /// Length of each measured run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The rate of the third run, commands per second [default: half the rate of the first].
    #[arg(long)]
    pub paced_rate: Option<f64>,
}

/// One client's connection to the daemon.
struct Client {
    addr: SocketAddr,
    token: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(addr: SocketAddr, token: &str) -> Client {
        Client {
            addr,
            token: token.to_owned(),
            sender: None,
        }
    }

    /// Sends one request on the kept-alive connection (opening it when needed) and returns the
    /// status and the body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        sender.ready().await?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token));
        let bytes = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response = sender.send_request(builder.body(Full::new(bytes))?).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends and insists on `expected`.
    async fn expect(
        &mut self,
        expected: u16,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Bytes> {
        let (status, bytes) = self.send(method, path, body).await?;
        if status != expected {
            bail!(
                "{method} {path} answered {status}, not {expected}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }
}

/// Where each unit of each case stands: the next command to send for it.
#[derive(Debug, Clone)]
struct Work {
    /// (case id, unit code, the next command is receive_report).
    items: Vec<(String, String, bool)>,
    next: usize,
}

impl Work {
    /// The next command: path and body; advances the item's cycle.
    fn next_command(&mut self) -> (String, Value) {
        let i = self.next % self.items.len();
        self.next += 1;
        let (case, unit, receive) = &mut self.items[i];
        let (command, input) = if *receive {
            (
                "receive_report",
                json!({"unit": unit, "received_at": "2024-04-18T09:00:00+07:00", "channel": "email"}),
            )
        } else {
            (
                "request_supplement",
                json!({"unit": unit, "reason": "Bổ sung số liệu Phụ lục 03", "due_on": "2024-04-25"}),
            )
        };
        *receive = !*receive;
        (format!("/api/cases/{case}/commands/{command}"), input)
    }

    fn next_read(&mut self) -> String {
        let i = self.next % self.items.len();
        self.next += 1;
        format!("/api/cases/{}", self.items[i].0)
    }
}

fn notice_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-25T08:00:00+07:00")
        .expect("a time")
        .with_timezone(&Utc)
}

fn seed(args: &HttpArgs) -> anyhow::Result<(Value, Vec<String>)> {
    let path = args.workflows.join(SEED);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the seed case {} (run from the repository root, or pass --workflows)",
            path.display()
        )
    })?;
    let data: Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let units = data["units"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|u| u["code"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    ensure!(!units.is_empty(), "the seed case has no units");
    Ok((data, units))
}

/// Latencies (ms) of one closed-loop run and how many requests failed.
struct Run {
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    seconds: f64,
}

/// Every client sends requests back to back for `seconds`; `read` selects GETs of cases instead
/// of commands.
async fn closed_loop(
    clients: Vec<(Client, Work)>,
    seconds: f64,
    read: bool,
) -> anyhow::Result<(Run, Vec<(Client, Work)>)> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (mut client, mut work) in clients {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = if read {
                    let path = work.next_read();
                    client.expect(200, "GET", &path, None).await
                } else {
                    let (path, input) = work.next_command();
                    client.expect(200, "POST", &path, Some(&input)).await
                };
                match result {
                    Ok(_) => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (client, work, latencies, errors, first_error)
        });
    }
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        seconds: 0.0,
    };
    let mut back = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (client, work, latencies, errors, first_error) = done?;
        run.latencies.extend(latencies);
        run.errors += errors;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
        back.push((client, work));
    }
    run.seconds = started.elapsed().as_secs_f64();
    Ok((run, back))
}

/// Commands offered at `rate` per second for `seconds`, each due at `start + k / rate`; a
/// client takes the next due command, waits for its time and sends it. Latency counts from the
/// due time.
async fn open_loop(
    clients: Vec<(Client, Work)>,
    rate_per_sec: f64,
    seconds: f64,
) -> anyhow::Result<Run> {
    let total = (rate_per_sec * seconds).round() as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (mut client, mut work) in clients {
        let next = next.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate_per_sec);
                tokio::time::sleep_until(due).await;
                let (path, input) = work.next_command();
                match client.expect(200, "POST", &path, Some(&input)).await {
                    Ok(_) => latencies.push(due.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        seconds: 0.0,
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors, first_error) = done?;
        run.latencies.extend(latencies);
        run.errors += errors;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

/// Starts and notices `cases` seed cases through the API, `SETUP_CLIENTS` at a time.
async fn set_up(addr: SocketAddr, token: &str, cases: usize, data: &Value) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let data = Arc::new(data.clone());
    let mut tasks = JoinSet::new();
    for _ in 0..SETUP_CLIENTS {
        let (next, data) = (next.clone(), data.clone());
        let mut client = Client::new(addr, token);
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cases {
                    return anyhow::Ok(());
                }
                let id = case_id(i);
                client
                    .expect(
                        201,
                        "POST",
                        "/api/cases",
                        Some(&json!({"workflow": WORKFLOW, "id": id, "data": *data})),
                    )
                    .await?;
                client
                    .expect(
                        200,
                        "POST",
                        &format!("/api/cases/{id}/commands/issue_notice"),
                        Some(&json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"})),
                    )
                    .await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn case_id(i: usize) -> String {
    format!("bench-{i:05}")
}

fn latency_summary(prefix: &str, run: &mut Run, out: &mut BTreeMap<String, Value>) {
    let n = run.latencies.len();
    out.insert(
        format!("{prefix}_p50_ms"),
        json!(percentile(&mut run.latencies, 50.0)),
    );
    out.insert(
        format!("{prefix}_p99_ms"),
        json!(percentile(&mut run.latencies, 99.0)),
    );
    out.insert(
        format!("{prefix}_max_ms"),
        json!(round3(run.latencies.iter().copied().fold(0.0, f64::max))),
    );
    out.insert(format!("{prefix}_count"), json!(n));
    out.insert(format!("{prefix}_errors"), json!(run.errors));
    if let Some(e) = &run.first_error {
        out.insert(format!("{prefix}_first_error"), json!(e));
    }
}

pub async fn http(args: &HttpArgs) -> anyhow::Result<Value> {
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(
        args.cases >= args.clients,
        "--cases must be at least --clients (each client owns its cases)"
    );
    let (data, units) = seed(args)?;
    let db = DbArgs {
        backend: args.backend,
        dir: args.dir.clone(),
        postgres_url: args.postgres_url.clone(),
    };
    let fresh = Fresh::new(&db)?;
    let store = fresh.open_store().await?;
    let clock = ManualClock::new(notice_time());
    let scheduler = Scheduler::new(
        store.clone(),
        Clock::Manual(clock.clone()),
        giamsat_engine::Calendar::weekends_only(),
        SchedulerOptions::default(),
    );
    let mut options = ServeOptions::new(store.clone(), &args.workflows);
    options.listen = "127.0.0.1:0".parse()?;
    options.clock = Clock::Manual(clock.clone());
    options.scheduler = Some(scheduler);
    options.bootstrap_admin = false;
    let token = create_token(
        &store,
        Role::Secretariat,
        None,
        Some("bench"),
        "admin:bench",
        notice_time(),
    )
    .await?
    .secret;
    let server = Server::bind(options).await?;
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    eprintln!("http: setting up {} cases...", args.cases);
    let setup = Instant::now();
    set_up(addr, &token, args.cases, &data).await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let clients: Vec<(Client, Work)> = (0..args.clients)
        .map(|c| {
            let items = (c..args.cases)
                .step_by(args.clients)
                .flat_map(|i| units.iter().map(move |u| (case_id(i), u.clone(), true)))
                .collect();
            (Client::new(addr, &token), Work { items, next: 0 })
        })
        .collect();

    eprintln!(
        "http: commands, closed loop, {} clients, {} s...",
        args.clients, args.seconds
    );
    let cpu = process_cpu_seconds();
    let (mut commands, clients) = closed_loop(clients, args.seconds, false).await?;
    let cpu_commands = process_cpu_seconds().zip(cpu).map(|(b, a)| b - a);
    let max_rate = commands.latencies.len() as f64 / commands.seconds;

    eprintln!("http: reads, closed loop...");
    let (mut reads, clients) = closed_loop(clients, args.seconds, true).await?;

    let half = args.paced_rate.unwrap_or(max_rate / 2.0).max(1.0);
    eprintln!("http: commands at {half:.0}/s, open loop...");
    let mut paced = open_loop(clients, half, args.seconds).await?;

    let _ = stop.send(());
    daemon.await??;
    let events = store.head().await?.map_or(0, |h| h.position);
    store.close().await;
    fresh.cleanup().await?;

    let mut results = BTreeMap::new();
    results.insert("setup_seconds".to_owned(), json!(round3(setup_seconds)));
    results.insert("events".to_owned(), json!(events));
    results.insert(
        "commands_per_sec".to_owned(),
        json!(rate(commands.latencies.len(), commands.seconds)),
    );
    if let Some(cpu) = cpu_commands {
        results.insert(
            "cpu_ms_per_command".to_owned(),
            json!(round3(
                cpu * 1000.0 / commands.latencies.len().max(1) as f64
            )),
        );
    }
    latency_summary("command", &mut commands, &mut results);
    results.insert(
        "reads_per_sec".to_owned(),
        json!(rate(reads.latencies.len(), reads.seconds)),
    );
    latency_summary("read", &mut reads, &mut results);
    results.insert("half_rate_offered_per_sec".to_owned(), json!(half.round()));
    results.insert(
        "half_rate_achieved_per_sec".to_owned(),
        json!(rate(paced.latencies.len(), paced.seconds)),
    );
    latency_summary("half_rate_command", &mut paced, &mut results);
    Ok(report(
        "http",
        &db,
        json!({
            "clients": args.clients,
            "cases": args.cases,
            "units_per_case": units.len(),
            "seconds": args.seconds,
            "paced_rate": args.paced_rate,
            "workflow": WORKFLOW,
            "scheduler": "manual clock, no timer due",
            "exporters": "none",
        }),
        Value::Object(results.into_iter().collect()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny run end to end: every request of every phase succeeds (no timing is checked).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_answers_every_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = HttpArgs {
            backend: Backend::Sqlite,
            dir: dir.path().to_path_buf(),
            postgres_url: String::new(),
            workflows: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows"),
            clients: 2,
            cases: 4,
            seconds: 0.3,
            paced_rate: None,
        };
        let line = http(&args).await.expect("the scenario runs");
        let r = &line["results"];
        assert_eq!(line["scenario"], "http");
        for phase in ["command", "read", "half_rate_command"] {
            assert_eq!(r[format!("{phase}_errors")], 0, "{line}");
            assert!(r[format!("{phase}_count")].as_u64() > Some(0), "{line}");
        }
        // The token, the registered definition, 4 cases started and noticed, then one event
        // per command.
        let commands = r["command_count"].as_u64().unwrap_or(0)
            + r["half_rate_command_count"].as_u64().unwrap_or(0);
        assert_eq!(r["events"].as_u64(), Some(2 + 8 + commands), "{line}");
    }
}
