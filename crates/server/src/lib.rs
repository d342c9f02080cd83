//! The giamsat daemon: an HTTP API (axum) over one event store, running the timer scheduler,
//! the cron schedules and the exporters in the same process. Every change goes through the same
//! library calls the CLI makes (`giamsat-cases`, the documents register, the exporter runner);
//! this crate adds access control (tokens, see [`auth`]), the per-unit view of a case
//! ([`scope`]), JSON errors ([`error`]), server-sent events of the log and Prometheus metrics.
//!
//! Start it in two steps, so the caller can show the address and the first admin token before
//! it blocks: [`Server::bind`], then [`Server::run`] with a shutdown future. On shutdown the
//! listener closes, requests in flight finish, event streams end, and the scheduler and the
//! exporters stop after saving their checkpoints.

mod archive;
pub mod auth;
mod cases;
mod documents;
pub mod error;
mod events;
mod exporters;
mod extract;
pub mod lease;
pub mod metrics;
mod openapi;
mod pages;
pub mod scope;
mod system;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use giamsat_cases::{CaseCache, Definitions};
use giamsat_engine::{Calendar, Workflow};
use giamsat_exporter::Runner;
use giamsat_scheduler::{Clock, CronSchedule, Scheduler};
use giamsat_store::{EventFilter, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{NewToken, Role, TokenError, TokenInfo, create_token, list_tokens, revoke_token};
pub use error::ApiError;

use crate::auth::TokenRegistry;
use crate::metrics::Metrics;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The largest request body accepted unless told otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How much of a body declared too large is read and dropped before the 413 answer, so the
/// client sees the answer rather than a reset connection.
const DRAIN_LIMIT_FACTOR: usize = 16;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause before a failed background task (scheduler, cron, exporter) starts again.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(60);

/// One exporter the daemon runs (when enabled) and reports on. The caller builds the runner
/// from its configuration (the CLI's `[[exporters]]` tables), so the daemon knows no plugin.
#[derive(Debug, Clone)]
pub struct ExporterEntry {
    pub id: String,
    /// The plugin type (`documents`, `jsonl`, ...), for status pages.
    pub kind: String,
    pub enabled: bool,
    pub runner: Arc<Runner>,
}

/// Everything the daemon runs on.
#[derive(Debug)]
pub struct ServeOptions {
    pub store: Store,
    pub listen: SocketAddr,
    /// The folder of workflow definitions cases are started from.
    pub workflows_dir: PathBuf,
    /// The holiday calendar for warnings and timers, when no scheduler is given (with one, its
    /// calendar is used, so a reload reaches both).
    pub calendar: Calendar,
    pub clock: Clock,
    /// The timer scheduler to run; `None` runs none (another process does).
    pub scheduler: Option<Arc<Scheduler>>,
    /// Cron schedules to run (ignored without a scheduler).
    pub crons: Vec<CronSchedule>,
    pub exporters: Vec<ExporterEntry>,
    /// The documents exporter's output folder, for downloads (`None`: downloads answer 404).
    pub documents_dir: Option<PathBuf>,
    /// Where units' uploaded report files go (`None`: `uploads/` beside the documents folder).
    pub uploads_dir: Option<PathBuf>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Create an admin token on a first start (no token in the log yet).
    pub bootstrap_admin: bool,
    /// How many folded cases the daemon keeps in memory when it has no scheduler on the same
    /// store to share them with (then the scheduler's options decide); 0 keeps none.
    pub case_cache: usize,
}

impl ServeOptions {
    /// Options with the defaults: 127.0.0.1:8080, 1 MiB bodies, the system clock, weekends-only
    /// calendar, no scheduler, no exporters, no documents folder.
    pub fn new(store: Store, workflows_dir: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            store,
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            workflows_dir: workflows_dir.into(),
            calendar: Calendar::weekends_only(),
            clock: Clock::System,
            scheduler: None,
            crons: Vec::new(),
            exporters: Vec::new(),
            documents_dir: None,
            uploads_dir: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bootstrap_admin: true,
            case_cache: giamsat_cases::DEFAULT_CASE_CACHE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot read the workflows folder {dir}: {reason}")]
    Workflows { dir: String, reason: String },
    #[error("tokens: {0}")]
    Tokens(TokenError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

impl From<TokenError> for ServeError {
    fn from(e: TokenError) -> ServeError {
        ServeError::Tokens(e)
    }
}

/// A workflow folder that did not load, with its problems.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InvalidWorkflow {
    pub dir: String,
    pub problems: Vec<String>,
}

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    pub(crate) store: Store,
    pub(crate) clock: Clock,
    pub(crate) workflows: BTreeMap<String, Workflow>,
    pub(crate) invalid_workflows: Vec<InvalidWorkflow>,
    pub(crate) definitions: Definitions,
    /// Folded cases (the scheduler's, when it works on the same store).
    pub(crate) cases: Arc<CaseCache>,
    calendar: Arc<Calendar>,
    pub(crate) scheduler: Option<Arc<Scheduler>>,
    pub(crate) exporters: Vec<ExporterEntry>,
    pub(crate) documents_dir: Option<PathBuf>,
    pub(crate) uploads_dir: Option<PathBuf>,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Metrics,
    /// The leases of the scheduler and the exporters, and which this daemon holds.
    pub(crate) leases: lease::LeaseBoard,
    pub(crate) tokens: TokenRegistry,
    /// Turns true when the daemon stops: event streams end on it.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl App {
    /// The calendar in force (the scheduler's, which a reload replaces).
    pub(crate) fn calendar(&self) -> Arc<Calendar> {
        match &self.scheduler {
            Some(s) => s.calendar(),
            None => self.calendar.clone(),
        }
    }
}

pub type AppState = Arc<App>;

/// A bound, not yet running daemon.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: AppState,
    stop: watch::Sender<bool>,
    crons: Vec<CronSchedule>,
    initial_token: Option<NewToken>,
}

/// Workflow folders under `dir`: the folder itself when it holds a workflow.yaml, else its
/// subfolders that do.
fn workflow_dirs(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    if dir.join("workflow.yaml").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("workflow.yaml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Loads every workflow definition under `dir`; the ones with problems are kept aside with
/// their problems (file:line:column each).
fn load_workflows(
    dir: &Path,
) -> Result<(BTreeMap<String, Workflow>, Vec<InvalidWorkflow>), ServeError> {
    let dirs = workflow_dirs(dir).map_err(|e| ServeError::Workflows {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut loaded = BTreeMap::new();
    let mut invalid = Vec::new();
    for d in dirs {
        let result = giamsat_cases::read_workflow_dir(&d)
            .map_err(|e| vec![e.to_string()])
            .and_then(|bundle| {
                giamsat_engine::load(bundle)
                    .map_err(|p| p.0.iter().map(ToString::to_string).collect())
            });
        match result {
            Ok(w) if loaded.contains_key(w.name()) => invalid.push(InvalidWorkflow {
                dir: d.display().to_string(),
                problems: vec![format!(
                    "workflow {:?} is defined twice; this folder is ignored",
                    w.name()
                )],
            }),
            Ok(w) => {
                loaded.insert(w.name().to_owned(), w);
            }
            Err(problems) => invalid.push(InvalidWorkflow {
                dir: d.display().to_string(),
                problems,
            }),
        }
    }
    for w in &invalid {
        tracing::warn!(dir = %w.dir, problems = %w.problems.join("; "), "workflow definition not loaded");
    }
    Ok((loaded, invalid))
}

impl Server {
    /// Loads the workflows, reads the tokens (creating the first admin token when the log has
    /// none and `bootstrap_admin` is set) and binds the listener.
    pub async fn bind(options: ServeOptions) -> Result<Server, ServeError> {
        let (workflows, invalid_workflows) = load_workflows(&options.workflows_dir)?;
        // Bound before the first admin token is made: a start that cannot listen must not
        // create a token nobody is shown.
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|error| ServeError::Bind {
                    addr: options.listen,
                    error,
                })?;
        let tokens = TokenRegistry::default();
        let initial_token = if options.bootstrap_admin {
            auth::create_bootstrap_token(&options.store, options.clock.now()).await?
        } else {
            None
        };
        tokens.refresh(&options.store).await?;
        let (stop, shutdown) = watch::channel(false);
        let cases = match &options.scheduler {
            Some(s) if s.store().same_store(&options.store) => s.case_cache(),
            _ => Arc::new(CaseCache::new(options.case_cache)),
        };
        let app = Arc::new(App {
            store: options.store,
            clock: options.clock,
            workflows,
            invalid_workflows,
            definitions: Definitions::new(),
            cases,
            calendar: Arc::new(options.calendar),
            scheduler: options.scheduler,
            exporters: options.exporters,
            documents_dir: options.documents_dir,
            uploads_dir: options.uploads_dir,
            max_body_bytes: options.max_body_bytes,
            metrics: Metrics::default(),
            leases: lease::LeaseBoard::default(),
            tokens,
            shutdown,
        });
        Ok(Server {
            listener,
            app,
            stop,
            crons: options.crons,
            initial_token,
        })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin token created by this start, if the log had none: show it once.
    pub fn initial_admin_token(&self) -> Option<&NewToken> {
        self.initial_token.as_ref()
    }

    /// Serves until `shutdown` completes, running the scheduler, the cron schedules and the
    /// enabled exporters alongside. Then stops accepting connections, lets requests in flight
    /// finish, ends event streams, and waits for the background tasks to stop.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            listener,
            app,
            stop,
            crons,
            initial_token: _,
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        spawn_background(&mut tasks, &app, crons);
        let router = router(app.clone());
        let addr = listener.local_addr().ok();
        tracing::info!(address = ?addr, workflows = app.workflows.len(), "giamsat daemon listening");
        let stop_signal = stop.clone();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing requests in flight");
                let _ = stop_signal.send(true);
            })
            .await;
        let _ = stop.send(true);
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a background task panicked");
            }
        }
        tracing::info!("giamsat daemon stopped");
        served.map_err(ServeError::Serve)
    }
}

/// Runs `task` again after a failure, pausing 1 s, then twice as long each time up to a minute,
/// until the daemon stops.
async fn supervise<F, Fut>(name: String, mut shutdown: watch::Receiver<bool>, task: F)
where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut pause = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match task(shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(task = %name, error = %e, retry_in_s = pause.as_secs(), "background task failed; restarting")
            }
        }
        if *shutdown.borrow() {
            return;
        }
        if started.elapsed() > MAX_RESTART_PAUSE {
            pause = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        pause = (pause * 2).min(MAX_RESTART_PAUSE);
    }
}

fn spawn_background(
    tasks: &mut tokio::task::JoinSet<()>,
    app: &AppState,
    crons: Vec<CronSchedule>,
) {
    // The scheduler (with cron) and each exporter run under a lease, so that of several
    // daemons on one database only one runs each.
    lease::spawn_leased(tasks, app, crons);
    // Tokens created or revoked by another process (the CLI) take effect without a restart.
    let app = app.clone();
    tasks.spawn(async move {
        let mut shutdown = app.shutdown.clone();
        let after = match app.store.head().await {
            Ok(head) => head.map_or(0, |h| h.position),
            Err(e) => {
                tracing::error!(error = %e, "cannot follow the tokens stream");
                return;
            }
        };
        let filter = EventFilter {
            event_types: Vec::new(),
            stream_prefix: auth::TOKENS_STREAM.to_owned(),
        };
        let mut subscription = app.store.subscribe(after, filter);
        loop {
            tokio::select! {
                next = subscription.next() => match next {
                    Ok(event) if event.stream_id == auth::TOKENS_STREAM => {
                        if let Err(e) = app.tokens.refresh(&app.store).await {
                            tracing::warn!(error = %e, "cannot read the tokens stream");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow the tokens stream; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// The API's routes.
pub(crate) fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/docs", get(openapi::reference))
        .route("/api/verify", get(system::verify))
        .route("/api/clock", get(system::clock).post(system::set_clock))
        .route("/api/workflows", get(system::workflows))
        .route("/api/workflows/{name}", get(system::workflow))
        .route("/api/cases", get(cases::list).post(cases::start))
        .route("/api/cases/{id}", get(cases::show))
        .route("/api/cases/{id}/history", get(cases::history))
        .route("/api/cases/{id}/timers", get(cases::case_timers))
        .route("/api/cases/{id}/commands/{command}", post(cases::command))
        .route("/api/cases/{id}/documents", get(documents::list))
        .route(
            "/api/cases/{id}/documents/{document}/number",
            post(documents::number),
        )
        .route(
            "/api/cases/{id}/documents/{document}/corrections",
            post(documents::correct),
        )
        .route(
            "/api/cases/{id}/documents/{document}/{version}/{format}",
            get(documents::download),
        )
        .route("/api/cases/{id}/archive", get(archive::list))
        .route("/api/cases/{id}/archive/{package}", get(archive::download))
        .route("/api/register", get(documents::register))
        .route("/api/exporters", get(exporters::list))
        .route("/api/exporters/{id}/parked", get(exporters::parked_events))
        .route(
            "/api/exporters/{id}/parked/{parked}/retry",
            post(exporters::retry),
        )
        .route("/api/events", get(events::stream))
        .merge(pages::router(app.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// An unknown path: the "not found" page for a page address, a JSON error for the API.
async fn not_found(request: Request) -> Response {
    if pages::is_page_request(&request) {
        return pages::PageError::not_found().into_response();
    }
    ApiError::not_found(
        "not_found",
        format!(
            "no such endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    if pages::is_page_request(&request) {
        return pages::PageError::new(
            status,
            "Không thực hiện được",
            format!(
                "Trang {} không nhận yêu cầu {}.",
                request.uri().path(),
                request.method()
            ),
        )
        .into_response();
    }
    ApiError::new(
        status,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

/// Counts and times every request by route, and refuses a body declared larger than the limit
/// before any handler reads it.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    app.metrics.request_started();
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let response = match declared {
        Some(length) if length > app.max_body_bytes => {
            let page = pages::is_page_request(&request);
            drain(request, length, app.max_body_bytes).await;
            if page {
                pages::payload_too_large(app.max_body_bytes)
            } else {
                ApiError::payload_too_large(app.max_body_bytes).into_response()
            }
        }
        _ => next.run(request).await,
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics
        .request_finished(&route, &method, status, elapsed);
    tracing::debug!(
        method,
        route,
        status,
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Reads and drops a too-large body (when it is not absurdly large), so the 413 answer reaches
/// a client that is still sending it instead of a reset connection.
async fn drain(request: Request, length: usize, limit: usize) {
    if length > limit.saturating_mul(DRAIN_LIMIT_FACTOR) {
        return;
    }
    let mut body = request.into_body().into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}
