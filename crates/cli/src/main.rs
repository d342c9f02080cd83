//! The `giamsat` command. It parses arguments, loads the configuration, opens the store and runs
//! one command; the rules live in the library crates. Errors go to standard error with a non-zero
//! exit code; nothing panics on bad input.

mod archive;
mod calendar;
mod cases;
mod config;
mod demo;
mod documents;
mod events;
mod exporters;
mod notifications;
mod output;
mod remote;
mod schedule;
mod serve;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use giamsat_store::Store;

use crate::config::{Config, LogFormat};

/// Exit code of `giamsat verify` when the chain is broken.
pub const EXIT_TAMPERED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "giamsat",
    version,
    about = "Event-sourced workflow engine for People's Council thematic supervisions",
    propagate_version = true
)]
struct Cli {
    /// Database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB[?schema=NAME]
    /// [default: the configuration's store.url, else sqlite://giamsat.db]
    #[arg(long, global = true, env = "GIAMSAT_DB", value_name = "URL")]
    db: Option<String>,

    /// Configuration file [default: config/giamsat.toml when it exists]
    #[arg(long, global = true, env = "GIAMSAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Folder of workflow definitions [default: the configuration's workflows.dir]
    #[arg(long, global = true, env = "GIAMSAT_WORKFLOWS", value_name = "DIR")]
    workflows: Option<PathBuf>,

    /// Clock: system, sim:TIME[,speed=N] (a simulated clock starting at TIME, N times faster)
    #[arg(
        long,
        global = true,
        env = "GIAMSAT_CLOCK",
        value_name = "CLOCK",
        default_value = "system"
    )]
    clock: String,

    /// A running daemon to talk to instead of the database, e.g. http://127.0.0.1:8080: case,
    /// documents, verify and exporters list|parked|retry go through its HTTP API (the commands
    /// that only work on a database are refused with it)
    #[arg(long, global = true, env = "GIAMSAT_SERVER", value_name = "URL")]
    server: Option<String>,

    /// The access token for --server (from `giamsat token create`)
    #[arg(
        long,
        global = true,
        env = "GIAMSAT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append, read and follow events of the log
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Check the hash chain of the whole log (exit 3 and the first bad position when broken)
    Verify(events::VerifyArgs),
    /// Check, list and draw workflow definitions
    #[command(subcommand)]
    Workflow(workflows::WorkflowCommand),
    /// Start cases, run their commands, show them (a rejected command exits with 2)
    #[command(subcommand)]
    Case(cases::CaseCommand),
    /// Check the holiday calendar and count working days
    #[command(subcommand)]
    Calendar(calendar::CalendarCommand),
    /// List the timers of cases
    #[command(subcommand)]
    Timers(schedule::TimersCommand),
    /// Fire every timer due up to a time, in order, on a simulated clock, and print what happened
    Simulate(schedule::SimulateArgs),
    /// Run the timer scheduler and cron schedules
    #[command(subcommand)]
    Scheduler(schedule::SchedulerCommand),
    /// The exporters: list with their lag, parked events, retry, replay, run
    #[command(subcommand)]
    Exporters(exporters::ExportersCommand),
    /// A case's documents, numbering after signature, corrections, the register of outgoing
    /// documents
    #[command(subcommand)]
    Documents(documents::DocumentsCommand),
    /// What the notifications exporter sent for a case, to whom, and who was skipped and why
    #[command(subcommand)]
    Notifications(notifications::NotificationsCommand),
    /// A case's BagIt archive package: build it, check one (exit 3 when it is invalid)
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Run the daemon: the HTTP API, the scheduler, cron and the exporters, until Ctrl-C
    Serve(serve::ServeArgs),
    /// The daemon's access tokens: create (shown once), list, revoke
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// The Tuần Giáo 2024 supervision from establishment to the archive on a simulated clock,
    /// with its documents, e-mails (outbox) and archive package, into a folder of its own; prints
    /// a summary
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, _path) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    if output::is_broken_pipe(error) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

fn init_logging(config: &Config) {
    let filter = std::env::var("GIAMSAT_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run(cli: Cli, config: Config) -> Result<ExitCode> {
    let root = cli
        .workflows
        .clone()
        .unwrap_or_else(|| config.workflows.dir.clone());
    // Definitions need no database.
    let cli = match cli.command {
        Command::Workflow(command) => return workflows::run(&root, command),
        Command::Calendar(command) => return calendar::run(&config.calendar.dir, command),
        Command::Archive(archive::ArchiveCommand::Verify(args)) => return archive::verify(&args),
        // The demo makes a store of its own in its folder.
        Command::Demo(args) => return demo::run(&root, &config, args).await,
        _ => cli,
    };
    // With --server, the case and documents commands go to the daemon, not the database.
    let server = cli.server.clone().unwrap_or_default();
    let cli = match cli.command {
        Command::Case(command) if cli.server.is_some() => {
            return remote::run_case(&server, cli.token.as_deref(), command).await;
        }
        Command::Documents(command) if cli.server.is_some() => {
            return remote::run_documents(&server, cli.token.as_deref(), command).await;
        }
        Command::Verify(args) if cli.server.is_some() => {
            return remote::run_verify(&server, cli.token.as_deref(), args).await;
        }
        Command::Exporters(command) if cli.server.is_some() => {
            return remote::run_exporters(&server, cli.token.as_deref(), command).await;
        }
        Command::Events(_) if cli.server.is_some() => return Ok(remote::refuse("events")),
        Command::Timers(_) if cli.server.is_some() => return Ok(remote::refuse("timers")),
        Command::Simulate(_) if cli.server.is_some() => return Ok(remote::refuse("simulate")),
        Command::Scheduler(_) if cli.server.is_some() => return Ok(remote::refuse("scheduler")),
        Command::Notifications(_) if cli.server.is_some() => {
            return Ok(remote::refuse("notifications"));
        }
        Command::Archive(_) if cli.server.is_some() => return Ok(remote::refuse("archive build")),
        Command::Serve(_) if cli.server.is_some() => return Ok(remote::refuse("serve")),
        Command::Token(_) if cli.server.is_some() => return Ok(remote::refuse("token")),
        _ => cli,
    };
    let clock =
        giamsat_scheduler::Clock::parse(&cli.clock).map_err(|e| anyhow::anyhow!("--clock: {e}"))?;
    let url = cli.db.clone().unwrap_or_else(|| config.store.url.clone());
    let store = Store::open(&url, config.store.options())
        .await
        .with_context(|| {
            format!(
                "cannot open the event store {}",
                giamsat_store::redact_url(&url)
            )
        })?;
    let result = match cli.command {
        Command::Events(command) => events::run(&store, command).await,
        Command::Verify(args) => events::verify(&store, args).await,
        Command::Case(command) => {
            cases::run(&store, &root, &config.calendar.dir, &clock, command).await
        }
        Command::Timers(schedule::TimersCommand::List(args)) => {
            schedule::list(&store, &config, &clock, args).await
        }
        Command::Simulate(args) => schedule::simulate(&store, &config, &clock, args).await,
        Command::Scheduler(schedule::SchedulerCommand::Run) => {
            schedule::run(&store, &config, clock, &config.calendar.dir).await
        }
        Command::Exporters(command) => exporters::run(&store, &config, command).await,
        Command::Documents(command) => documents::run(&store, &clock, command).await,
        Command::Notifications(command) => notifications::run(&store, command).await,
        Command::Archive(command) => archive::run(&store, &config, &clock, command).await,
        Command::Serve(args) => serve::serve(&store, &config, &root, clock, args).await,
        Command::Token(command) => serve::token(&store, &clock, command).await,
        Command::Workflow(_) | Command::Calendar(_) | Command::Demo(_) => Ok(ExitCode::SUCCESS),
    };
    store.close().await;
    result
}
