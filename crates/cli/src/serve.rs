//! `giamsat serve` (the daemon: HTTP API, scheduler, cron and exporters in one process) and
//! `giamsat token create|list|revoke` (the daemon's access tokens, kept as hashes in the log).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use giamsat_scheduler::{Clock, Scheduler};
use giamsat_server::{ExporterEntry, Role, ServeOptions, Server, TokenInfo};
use giamsat_store::Store;
use serde_json::json;

use crate::config::{Config, load_calendar, parse_size};
use crate::output;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: the configuration's server.listen,
    /// 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", env = "GIAMSAT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Largest accepted request body (bytes, or with KiB/MiB); larger ones get 413 [default: the
    /// configuration's server.max-body, 1MiB]
    #[arg(long, value_name = "SIZE")]
    max_body: Option<String>,
    /// Folder for files uploaded through the web pages [default: the configuration's
    /// server.uploads, uploads]
    #[arg(long, value_name = "DIR")]
    uploads: Option<PathBuf>,
    /// Run no timer scheduler and no cron schedules here (another process runs them)
    #[arg(long)]
    no_scheduler: bool,
    /// Run no exporters here (another process runs them)
    #[arg(long)]
    no_exporters: bool,
    /// Create the Tuần Giáo 2024 demo case (tg2024) in the store and play the seed supervision
    /// on a simulated clock from 25/3/2024 (this replaces --clock); a store whose tg2024 was
    /// made by an earlier demo is resumed, any other store holding a tg2024 is refused
    #[arg(long)]
    demo: bool,
    /// With --demo: how many times faster than real time the simulated clock runs (quiet
    /// stretches of more than ten simulated days without a step run 16 times faster still)
    #[arg(long, value_name = "N", default_value_t = crate::demo::DEFAULT_SPEED, requires = "demo")]
    demo_speed: f64,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its SHA-256 is kept)
    Create(CreateArgs),
    /// List the tokens: id, name, role, unit, created, revoked
    List(ListArgs),
    /// Revoke a token by id: it stops working at once
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// admin, secretariat, delegation, unit or viewer
    #[arg(long)]
    role: String,
    /// The unit's code, for a unit token (e.g. xa-quai-to)
    #[arg(long, value_name = "CODE")]
    unit: Option<String>,
    /// The name recorded as the actor of the token's commands [default: ROLE-ID]
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Token id (from `giamsat token list`)
    id: String,
}

/// Who runs a token command, as recorded in the tokens stream.
fn operator() -> String {
    format!(
        "admin:{}",
        std::env::var("USER").unwrap_or_else(|_| "cli".to_owned())
    )
}

fn describe(t: &TokenInfo) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        t.id,
        t.name,
        t.role,
        t.unit.as_deref().unwrap_or("-"),
        t.created_at,
        t.created_by,
        match &t.revoked_at {
            Some(at) => format!("revoked {at}"),
            None => "active".to_owned(),
        }
    )
}

pub async fn token(store: &Store, clock: &Clock, command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => {
            let role = Role::parse(&args.role)?;
            let created = giamsat_server::create_token(
                store,
                role,
                args.unit.as_deref(),
                args.name.as_deref(),
                &operator(),
                clock.now(),
            )
            .await?;
            if args.json {
                let mut value = serde_json::to_value(&created.info)?;
                value["token"] = json!(created.secret);
                output::line(&value.to_string())?;
            } else {
                output::line(&created.secret)?;
                eprintln!(
                    "token {} ({} {}) created; it is shown only this once",
                    created.info.id, created.info.role, created.info.name
                );
            }
        }
        TokenCommand::List(args) => {
            for t in giamsat_server::list_tokens(store).await? {
                if args.json {
                    output::line(&serde_json::to_string(&t)?)?;
                } else {
                    output::line(&describe(&t))?;
                }
            }
        }
        TokenCommand::Revoke(args) => {
            let t = giamsat_server::revoke_token(store, &args.id, &operator(), clock.now()).await?;
            output::line(&format!("revoked {}", describe(&t)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The documents exporter's output folder, for downloads through the API.
fn documents_dir(config: &Config) -> Option<PathBuf> {
    config
        .exporters
        .iter()
        .find(|e| e.kind == "documents" && e.enabled)
        .and_then(|e| e.settings.get("output"))
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
}

/// Runs the daemon until SIGINT or SIGTERM; SIGHUP reloads the holiday calendar.
pub async fn serve(
    store: &Store,
    config: &Config,
    root: &Path,
    clock: Clock,
    args: ServeArgs,
) -> Result<ExitCode> {
    let demo = match args.demo {
        true => Some(crate::demo::prepare_serve(store, config, root, args.demo_speed).await?),
        false => None,
    };
    let (config, clock) = match &demo {
        Some(demo) => (&demo.config, demo.clock.clone()),
        None => (config, clock),
    };
    let calendar = load_calendar(&config.calendar.dir)?;
    let max_body = match &args.max_body {
        Some(text) => parse_size(text).context("--max-body")?,
        None => config.server.max_body,
    };
    let mut options = ServeOptions::new(store.clone(), root);
    options.listen = args.listen.unwrap_or(config.server.listen);
    options.max_body_bytes = max_body;
    options.case_cache = config.server.case_cache;
    options.calendar = calendar.clone();
    options.clock = clock.clone();
    options.documents_dir = documents_dir(config);
    options.uploads_dir = Some(
        args.uploads
            .clone()
            .unwrap_or_else(|| config.server.uploads.clone()),
    );
    if !args.no_scheduler {
        let mut scheduler_options = config.scheduler.options();
        scheduler_options.case_cache = config.server.case_cache;
        options.scheduler = Some(Scheduler::new(
            store.clone(),
            clock.clone(),
            calendar,
            scheduler_options,
        ));
        options.crons = config
            .cron
            .iter()
            .map(|c| c.schedule())
            .collect::<Result<Vec<_>>>()?;
    }
    if !args.no_exporters {
        let mut ids = HashSet::new();
        for e in &config.exporters {
            if !ids.insert(e.id.as_str()) {
                bail!("configuration [[exporters]]: id {:?} appears twice", e.id);
            }
            // A disabled exporter is not built: an exec plugin would start its process.
            if !e.enabled {
                continue;
            }
            options.exporters.push(ExporterEntry {
                id: e.id.clone(),
                kind: e.kind.clone(),
                enabled: true,
                runner: Arc::new(crate::exporters::runner(store, e)?),
            });
        }
    }
    let scheduler = options.scheduler.clone();
    let server = Server::bind(options).await?;
    eprintln!(
        "giamsat listening on http://{} (clock {}); Ctrl-C stops it",
        server.local_addr(),
        clock.describe()
    );
    if let Some(token) = server.initial_admin_token() {
        eprintln!(
            "first start: created the admin token {} below; it is shown only this once (more: giamsat token create)",
            token.info.id
        );
        output::line(&token.secret)?;
    }
    let demo_task = match &demo {
        Some(demo) => {
            let url = format!("http://{}", server.local_addr());
            let created = server.initial_admin_token().is_some();
            Some(demo.start(store, &url, created).await?)
        }
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let calendar_dir = config.calendar.dir.clone();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hangup.recv() => {
                    let Some(scheduler) = &scheduler else { continue };
                    match load_calendar(&calendar_dir) {
                        Ok(new) => match scheduler.set_calendar(new).await {
                            Ok(()) => eprintln!("calendar reloaded from {}", calendar_dir.display()),
                            Err(e) => eprintln!("calendar reloaded, but rescheduling failed: {e}"),
                        },
                        Err(e) => eprintln!("calendar not reloaded: {e:#}"),
                    }
                }
            }
        }
        eprintln!("stopping: finishing requests in flight");
    };
    let served = server.run(shutdown).await;
    if let Some(task) = demo_task {
        task.abort();
    }
    served.map_err(|e| anyhow!("the daemon failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
