//! `giamsat events ...` and `giamsat verify`: direct access to the log.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use giamsat_store::{Direction, EventFilter, Store};
use giamsat_types::{EventMetadata, ExpectedVersion, NewEvent, StreamId};
use uuid::Uuid;

use crate::{EXIT_TAMPERED, output};

/// Events printed per read from the store by `read` and `tail`.
const PAGE: usize = 1000;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Append one event to a stream and print its position
    Append(AppendArgs),
    /// Print the events of one stream
    Read(ReadArgs),
    /// Print the events of the whole log from a position, and follow new ones with --follow
    Tail(TailArgs),
    /// List streams (optionally those whose id starts with PREFIX) with their last version
    Streams(StreamsArgs),
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Stream id, e.g. case/2024/tuan-giao
    stream: String,
    /// Event type, e.g. ReportReceived
    #[arg(long = "type", value_name = "TYPE")]
    event_type: String,
    /// Event data as JSON text; @FILE reads a file, - reads standard input
    #[arg(long, value_name = "JSON")]
    data: String,
    /// Expected stream version: any, no-stream, exists, or the exact last version
    #[arg(long, default_value = "any", value_name = "any|no-stream|exists|N")]
    expected: ExpectedVersion,
    /// Event id (UUID); appending the same id and content again is a no-op
    #[arg(long, value_name = "UUID")]
    id: Option<Uuid>,
    /// Schema version of the event's data
    #[arg(long, default_value_t = 1, value_name = "N")]
    schema_version: u32,
    /// Who appends [default: $USER]
    #[arg(long)]
    actor: Option<String>,
    /// Correlation id recorded in the metadata
    #[arg(long)]
    correlation_id: Option<String>,
    /// Causation id recorded in the metadata
    #[arg(long)]
    causation_id: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Stream id
    stream: String,
    /// Start at this version (default: the first, or the last with --backward)
    #[arg(long, value_name = "VERSION")]
    from: Option<u64>,
    /// Read from the newest event back
    #[arg(long)]
    backward: bool,
    /// Print at most this many events
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// JSON Lines: one JSON object per event
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// First position to print
    #[arg(long, default_value_t = 1, value_name = "POS")]
    from: u64,
    /// Keep waiting for new events until interrupted
    #[arg(long)]
    follow: bool,
    /// Only events of this type (repeatable)
    #[arg(long = "type", value_name = "TYPE")]
    event_types: Vec<String>,
    /// Only streams whose id starts with this
    #[arg(long, value_name = "PREFIX", default_value = "")]
    stream_prefix: String,
    /// JSON Lines: one JSON object per event
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only streams whose id starts with this
    #[arg(default_value = "")]
    prefix: String,
    /// JSON Lines output
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

pub async fn run(store: &Store, command: EventsCommand) -> Result<ExitCode> {
    match command {
        EventsCommand::Append(args) => append(store, args).await,
        EventsCommand::Read(args) => read(store, args).await,
        EventsCommand::Tail(args) => tail(store, args).await,
        EventsCommand::Streams(args) => streams(store, args).await,
    }
}

fn read_data(arg: &str) -> Result<String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read event data from standard input")?;
        Ok(text)
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("cannot read event data from {path}"))
    } else {
        Ok(arg.to_owned())
    }
}

async fn append(store: &Store, args: AppendArgs) -> Result<ExitCode> {
    let stream = StreamId::new(args.stream.clone()).context("events append: invalid stream id")?;
    let data = read_data(&args.data)?;
    let metadata = EventMetadata {
        actor: args.actor.or_else(|| std::env::var("USER").ok()),
        correlation_id: args.correlation_id,
        causation_id: args.causation_id,
        source: Some("cli".to_owned()),
        ..EventMetadata::default()
    };
    let mut event = NewEvent::from_json_text(args.event_type, &data)
        .context("events append: invalid --data")?
        .with_schema_version(args.schema_version)
        .with_metadata(&metadata);
    if let Some(id) = args.id {
        event = event.with_id(id);
    }
    let result = store
        .append(&stream, args.expected, vec![event])
        .await
        .with_context(|| format!("events append to {stream} failed"))?;
    if args.json {
        output::line(
            &serde_json::json!({
                "stream": stream.as_str(),
                "first_position": result.first_position,
                "last_position": result.last_position,
                "stream_version": result.stream_version,
                "duplicate": result.duplicate,
            })
            .to_string(),
        )?;
    } else {
        for position in result.positions() {
            output::line(&position.to_string())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn read(store: &Store, args: ReadArgs) -> Result<ExitCode> {
    let stream = StreamId::new(args.stream.clone()).context("events read: invalid stream id")?;
    let direction = if args.backward {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut from = args.from;
    while remaining > 0 {
        let page = store
            .read_stream(&stream, direction, from, remaining.min(PAGE))
            .await
            .with_context(|| format!("events read {stream} failed"))?;
        let Some(last) = page.last() else { break };
        from = match direction {
            Direction::Forward => Some(last.stream_version + 1),
            Direction::Backward if last.stream_version <= 1 => None,
            Direction::Backward => Some(last.stream_version - 1),
        };
        let full = page.len() == remaining.min(PAGE);
        remaining -= page.len();
        for event in &page {
            output::event(event, args.json)?;
        }
        if !full || from.is_none() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tail(store: &Store, args: TailArgs) -> Result<ExitCode> {
    if args.from == 0 {
        bail!("events tail: --from must be a position of at least 1");
    }
    let filter = EventFilter {
        event_types: args.event_types,
        stream_prefix: args.stream_prefix,
    };
    let mut subscription = store.subscribe(args.from - 1, filter);
    if !args.follow {
        while let Some(event) = subscription
            .try_next()
            .await
            .context("events tail failed")?
        {
            output::event(&event, args.json)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            event = subscription.next() => {
                output::event(&event.context("events tail failed")?, args.json)?;
            }
            _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn streams(store: &Store, args: StreamsArgs) -> Result<ExitCode> {
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_streams(&args.prefix, after.as_deref(), PAGE)
            .await
            .context("events streams failed")?;
        for s in &page {
            if args.json {
                output::line(
                    &serde_json::json!({"stream": s.stream_id, "version": s.version}).to_string(),
                )?;
            } else {
                output::line(&format!("{}\t{}", s.stream_id, s.version))?;
            }
        }
        if page.len() < PAGE {
            break;
        }
        after = page.last().map(|s| s.stream_id.clone());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(store: &Store, args: VerifyArgs) -> Result<ExitCode> {
    let report = store.verify().await.context("verify failed")?;
    print_verify(
        &serde_json::json!({
            "intact": report.is_intact(),
            "events_checked": report.events_checked,
            "last_position": report.last_position,
            "last_hash": report.last_hash,
            "problem": report.problem,
            "message": report.problem.as_ref().map(ToString::to_string),
        }),
        args.json,
    )
}

/// Prints a verification report (as the store gives it, or as the daemon's `GET /api/verify`
/// does): exit 0 when the chain is intact, else 3 with the first bad position.
pub(crate) fn print_verify(report: &serde_json::Value, as_json: bool) -> Result<ExitCode> {
    if as_json {
        output::line(&serde_json::to_string(&serde_json::json!({
            "intact": report["intact"],
            "events_checked": report["events_checked"],
            "last_position": report["last_position"],
            "last_hash": report["last_hash"],
            "problem": report["problem"],
        }))?)?;
    } else if report["intact"] != true {
        output::line(&format!(
            "chain broken at {}",
            report["message"].as_str().unwrap_or_default()
        ))?;
    } else {
        output::line(&format!(
            "chain intact: {} events, head position {} hash {}",
            report["events_checked"],
            report["last_position"],
            report["last_hash"].as_str().unwrap_or_default()
        ))?;
    }
    if report["intact"] == true {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "error: the event log was altered: first bad position {}",
        report["problem"]["position"]
    );
    Ok(ExitCode::from(EXIT_TAMPERED))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
