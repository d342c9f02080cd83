//! `giamsat exporters ...`: the configured exporters, their lag and parked events, and running
//! them without the daemon.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use giamsat_exporter::{Exporter, Runner, RunnerOptions, lag, parked};
use giamsat_store::Store;
use serde_json::json;
use uuid::Uuid;

use crate::config::{Config, ExporterConfig};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ExportersCommand {
    /// The configured exporters: type, enabled, checkpoint, lag (events, seconds), parked events
    List(JsonArg),
    /// The events an exporter parked (could not export), with their errors
    Parked(ParkedArgs),
    /// Export one parked event again now (after fixing its cause)
    Retry(RetryArgs),
    /// Deliver again every event from a position on, at the exporter's next run
    Replay(ReplayArgs),
    /// Run the enabled exporters until interrupted; with --once, catch up to the end of the
    /// log and exit
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct JsonArg {
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct ParkedArgs {
    /// Exporter id
    pub(crate) id: String,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Exporter id
    pub(crate) id: String,
    /// Id of the parked record (from `giamsat exporters parked`)
    pub(crate) parked: Uuid,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Exporter id
    id: String,
    /// First log position to deliver again
    #[arg(long, value_name = "POS")]
    from: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Catch up to the end of the log, then exit
    #[arg(long)]
    once: bool,
}

/// Builds the plugin a configuration table names.
fn build(config: &ExporterConfig, store: &Store) -> Result<Arc<dyn Exporter>> {
    let settings = giamsat_cases::toml_to_json(toml::Value::Table(config.settings.clone()));
    match config.kind.as_str() {
        "documents" => {
            giamsat_documents::exporter::DocumentsExporter::from_config(settings, store.clone())
                .map(|e| Arc::new(e) as Arc<dyn Exporter>)
                .map_err(|e| {
                    anyhow!(
                        "configuration [[exporters]] id = {:?} (type documents): {e}",
                        config.id
                    )
                })
        }
        "archive" => giamsat_archive::ArchiveExporter::from_config(settings, store.clone())
            .map(|e| Arc::new(e) as Arc<dyn Exporter>)
            .map_err(|e| {
                anyhow!(
                    "configuration [[exporters]] id = {:?} (type archive): {e}",
                    config.id
                )
            }),
        "notifications" => {
            giamsat_notifications::NotificationsExporter::from_config(settings, store.clone())
                .map(|e| Arc::new(e) as Arc<dyn Exporter>)
                .map_err(|e| {
                    anyhow!(
                        "configuration [[exporters]] id = {:?} (type notifications): {e}",
                        config.id
                    )
                })
        }
        "jsonl" => giamsat_jsonl::JsonlExporter::from_config(settings)
            .map(|e| Arc::new(e) as Arc<dyn Exporter>)
            .map_err(|e| {
                anyhow!(
                    "configuration [[exporters]] id = {:?} (type jsonl): {e}",
                    config.id
                )
            }),
        // A plugin process: started, and its handshake completed, here, because the filter it
        // announces is needed before the first event. `build` is synchronous; the CLI's runtime
        // is multi-threaded, so blocking this worker for the handshake is allowed.
        "exec" => tokio::task::block_in_place(|| {
            let start = giamsat_exporter::exec::ExecExporter::start(&config.id, settings);
            tokio::runtime::Handle::current().block_on(start)
        })
        .map(|e| Arc::new(e) as Arc<dyn Exporter>)
        .map_err(|e| {
            anyhow!(
                "configuration [[exporters]] id = {:?} (type exec): {e}",
                config.id
            )
        }),
        other => bail!(
            "configuration [[exporters]] id = {:?}: unknown type {other:?}; known types: archive, documents, exec, jsonl, notifications",
            config.id
        ),
    }
}

fn find<'a>(config: &'a Config, id: &str) -> Result<&'a ExporterConfig> {
    config.exporters.iter().find(|e| e.id == id).ok_or_else(|| {
        let ids: Vec<&str> = config.exporters.iter().map(|e| e.id.as_str()).collect();
        anyhow!(
            "no exporter {id:?} in the configuration (configured: {})",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        )
    })
}

pub(crate) fn runner(store: &Store, config: &ExporterConfig) -> Result<Runner> {
    let options = RunnerOptions {
        max_attempts: config.max_attempts.max(1),
        initial_backoff: config.initial_backoff,
        ..RunnerOptions::default()
    };
    Ok(Runner::new(
        &config.id,
        store.clone(),
        build(config, store)?,
        options,
    ))
}

/// One line of `exporters list`: the status fields the daemon's `GET /api/exporters` has too
/// (`id`, `type`, `enabled`, `checkpoint`, `lag_events`, `lag_seconds`, `parked`).
pub(crate) fn print_status(status: &serde_json::Value, as_json: bool) -> Result<()> {
    let fields = [
        "id",
        "type",
        "enabled",
        "checkpoint",
        "lag_events",
        "lag_seconds",
        "parked",
    ];
    if as_json {
        let mut map = serde_json::Map::new();
        for f in fields {
            map.insert(f.to_owned(), status[f].clone());
        }
        return output::line(&serde_json::to_string(&map)?);
    }
    output::line(&format!(
        "{}\t{}\t{}\tcheckpoint {}\tlag {} events, {:.1} s\tparked {}",
        status["id"].as_str().unwrap_or_default(),
        status["type"].as_str().unwrap_or_default(),
        if status["enabled"] == true {
            "enabled"
        } else {
            "disabled"
        },
        status["checkpoint"],
        status["lag_events"],
        status["lag_seconds"].as_f64().unwrap_or_default(),
        status["parked"]
    ))
}

/// One line of `exporters parked`.
pub(crate) fn print_parked(p: &giamsat_exporter::Parked, as_json: bool) -> Result<()> {
    if as_json {
        return output::line(&serde_json::to_string(p)?);
    }
    output::line(&format!(
        "{}\t{}\t{}@{}\t{}\t{} attempt(s)\t{}",
        p.id,
        p.position,
        p.stream_id,
        p.event_type,
        if p.permanent {
            "permanent"
        } else {
            "retryable"
        },
        p.attempts,
        p.error
    ))
}

/// What `exporters retry` says when the event went out.
pub(crate) fn print_retried(parked: Uuid) -> Result<()> {
    output::line(&format!("exported {parked}; it is no longer parked"))
}

pub async fn run(store: &Store, config: &Config, command: ExportersCommand) -> Result<ExitCode> {
    let mut ids = std::collections::HashSet::new();
    for e in &config.exporters {
        if !ids.insert(e.id.as_str()) {
            bail!("configuration [[exporters]]: id {:?} appears twice", e.id);
        }
    }
    match command {
        ExportersCommand::List(args) => {
            for e in &config.exporters {
                build(e, store)?;
                let lag = lag(store, &e.id).await?;
                let parked = parked(store, &e.id).await?.len();
                let checkpoint = store
                    .load_checkpoint(&giamsat_exporter::checkpoint_name(&e.id))
                    .await?
                    .unwrap_or(0);
                print_status(
                    &json!({
                        "id": e.id, "type": e.kind, "enabled": e.enabled, "checkpoint": checkpoint,
                        "lag_events": lag.events, "lag_seconds": lag.seconds, "parked": parked,
                    }),
                    args.json,
                )?;
            }
        }
        ExportersCommand::Parked(args) => {
            find(config, &args.id)?;
            for p in parked(store, &args.id).await? {
                print_parked(&p, args.json)?;
            }
        }
        ExportersCommand::Retry(args) => {
            let runner = runner(store, find(config, &args.id)?)?;
            runner
                .retry_parked(args.parked)
                .await
                .with_context(|| format!("exporter {}: retry of {}", args.id, args.parked))?;
            print_retried(args.parked)?;
        }
        ExportersCommand::Replay(args) => {
            let runner = runner(store, find(config, &args.id)?)?;
            runner.replay_from(args.from).await?;
            output::line(&format!(
                "{} will deliver again from position {} at its next run",
                args.id, args.from
            ))?;
        }
        ExportersCommand::Run(args) => {
            let runners = config
                .exporters
                .iter()
                .filter(|e| e.enabled)
                .map(|e| runner(store, e).map(Arc::new))
                .collect::<Result<Vec<_>>>()?;
            if args.once {
                let mut tasks = tokio::task::JoinSet::new();
                for r in runners {
                    // An exporter another process runs now (a daemon) is left to it.
                    let name = giamsat_server::lease::exporter(r.id());
                    let Some(lease) = store.try_lease(&name).await? else {
                        output::line(&format!(
                            "{}\tskipped: another process (a daemon?) runs it now (lease {name})",
                            r.id()
                        ))?;
                        continue;
                    };
                    tasks.spawn(async move {
                        let reached = r.run_once().await;
                        lease.release().await;
                        (r, reached)
                    });
                }
                let mut failed = false;
                while let Some(joined) = tasks.join_next().await {
                    let (r, reached) = joined.context("exporter task")?;
                    let status = r.status().lock().map(|s| s.clone()).unwrap_or_default();
                    match reached {
                        Ok(position) => output::line(&format!(
                            "{}\tcaught up to {position}\thandled {}\tparked {}",
                            status.id, status.handled, status.parked
                        ))?,
                        Err(e) => {
                            failed = true;
                            eprintln!("error: {e}");
                        }
                    }
                }
                if failed {
                    return Ok(ExitCode::FAILURE);
                }
            } else {
                let (stop, shutdown) = tokio::sync::watch::channel(false);
                let mut tasks = tokio::task::JoinSet::new();
                for r in runners {
                    let mut shutdown = shutdown.clone();
                    let store = store.clone();
                    // Each exporter runs in one process at a time: this one waits while
                    // another (a daemon) holds its lease.
                    tasks.spawn(async move {
                        let name = giamsat_server::lease::exporter(r.id());
                        let stopped = async {
                            let _ = shutdown.wait_for(|stop| *stop).await;
                        };
                        let waiting = || {
                            eprintln!(
                                "{}: waiting, another process (a daemon?) runs it now (lease {name})",
                                r.id()
                            )
                        };
                        let Some(lease) = giamsat_server::lease::wait_for_lease(
                            &store,
                            &name,
                            waiting,
                            stopped,
                        )
                        .await
                        .map_err(|source| giamsat_exporter::RunnerError::Store {
                            id: r.id().to_owned(),
                            source,
                        })?
                        else {
                            return Ok(0);
                        };
                        let ran = r.run(shutdown).await;
                        lease.release().await;
                        ran
                    });
                }
                eprintln!("exporters running; Ctrl-C stops them");
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .context("cannot listen for SIGTERM")?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                let _ = stop.send(true);
                while let Some(joined) = tasks.join_next().await {
                    joined.context("exporter task")??;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
