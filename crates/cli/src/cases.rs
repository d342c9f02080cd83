//! `giamsat case ...`: start cases, run commands on them, and show them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, FixedOffset};
use clap::{Args, Subcommand};
use giamsat_cases::{
    CaseError, LoadedCase, list_cases, load_case, pinned, run_command, start_case,
};
use giamsat_engine::{Actor, CommandRequest, Rejection, warnings};
use giamsat_scheduler::Clock;
use giamsat_store::Store;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{output, workflows};

/// Exit code of a command the workflow rejected.
pub const EXIT_REJECTED: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// Start a case of a workflow from a start-data file (YAML or JSON); prints the case id
    Start(StartArgs),
    /// Run a workflow command on a case
    Do(DoArgs),
    /// Show a case: stage, entities, warnings
    Show(ShowArgs),
    /// List cases with their stage
    List(ListArgs),
    /// Show a case's events
    History(ShowArgs),
}

#[derive(Debug, Args)]
pub struct Who {
    /// Who acts: ROLE:ID or ROLE:ID@UNIT [default: admin:$USER]
    #[arg(long = "as", value_name = "ACTOR")]
    pub(crate) actor: Option<String>,
    /// Time of the command (RFC 3339) [default: now, on the --clock]
    #[arg(long, value_name = "TIME")]
    pub(crate) at: Option<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Workflow name, e.g. giam-sat-chuyen-de
    pub(crate) workflow: String,
    /// Start data (YAML or JSON)
    #[arg(long, value_name = "FILE")]
    pub(crate) data: PathBuf,
    /// Case id [default: generated]
    #[arg(long)]
    pub(crate) id: Option<String>,
    #[command(flatten)]
    pub(crate) who: Who,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct DoArgs {
    /// Case id
    pub(crate) case: String,
    /// Command id from the workflow, e.g. receive_report
    pub(crate) command: String,
    /// Input (YAML or JSON file)
    #[arg(long, value_name = "FILE", conflicts_with = "set")]
    pub(crate) data: Option<PathBuf>,
    /// Input field: key=value (value read as JSON when it parses, else as text; dots nest)
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Command id: running the same id again does nothing [default: generated]
    #[arg(long, value_name = "UUID")]
    pub(crate) command_id: Option<Uuid>,
    #[command(flatten)]
    pub(crate) who: Who,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Case id
    pub(crate) case: String,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub(crate) json: bool,
}

/// Result of a case command: success, or a workflow rejection (exit 2).
pub async fn run(
    store: &Store,
    root: &Path,
    calendar_dir: &Path,
    clock: &Clock,
    command: CaseCommand,
) -> Result<ExitCode> {
    let result = match command {
        CaseCommand::Start(args) => start(store, root, calendar_dir, clock, args).await,
        CaseCommand::Do(args) => act(store, calendar_dir, clock, args).await,
        CaseCommand::Show(args) => show(store, calendar_dir, args).await,
        CaseCommand::List(args) => list(store, args).await,
        CaseCommand::History(args) => history(store, args).await,
    };
    match result {
        Err(e) => match e.downcast::<CaseError>() {
            Ok(CaseError::Rejected(r)) => {
                print_rejection(&r);
                Ok(ExitCode::from(EXIT_REJECTED))
            }
            Ok(other) => Err(other.into()),
            Err(e) => Err(e),
        },
        ok => ok,
    }
}

pub(crate) fn print_rejection(r: &Rejection) {
    eprintln!("rejected: {} ({})", r.code, r.command);
    eprintln!("  {}", r.message_vi);
    eprintln!("  {}", r.message_en);
    eprintln!(
        "  stage: {}{}",
        if r.stage.is_empty() { "-" } else { &r.stage },
        match (&r.entity, &r.entity_state) {
            (Some(e), Some(s)) => format!(", {e} is {s}"),
            (Some(e), None) => format!(", {e}"),
            _ => String::new(),
        }
    );
}

pub(crate) fn actor(who: &Who) -> Result<Actor> {
    match &who.actor {
        Some(text) => Actor::parse(text)
            .ok_or_else(|| anyhow!("--as {text:?} must be ROLE:ID or ROLE:ID@UNIT")),
        None => Ok(Actor {
            id: std::env::var("USER").unwrap_or_else(|_| "admin".to_owned()),
            role: "admin".to_owned(),
            unit: None,
        }),
    }
}

/// `--at`, else the clock's now, in the workflow's zone.
pub(crate) fn time(who: &Who, zone_name: &str, clock: &Clock) -> Result<DateTime<FixedOffset>> {
    let zone: chrono_tz::Tz = zone_name
        .parse()
        .map_err(|_| anyhow!("time zone {zone_name:?} is not an IANA time zone name"))?;
    match &who.at {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--at {text:?} is not an RFC 3339 time")),
        None => Ok(clock.now().with_timezone(&zone).fixed_offset()),
    }
}

/// Reads YAML or JSON; errors name the file, line and column.
pub(crate) fn read_data(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_saphyr::from_str::<Value>(&text).map_err(|e| match e.location() {
        Some(l) => anyhow!(
            "{}:{}:{}: {}",
            path.display(),
            l.line(),
            l.column(),
            e.to_string().lines().next().unwrap_or_default()
        ),
        None => anyhow!("{}: {e}", path.display()),
    })
}

pub(crate) fn set_fields(sets: &[String]) -> Result<Value> {
    let mut root = Map::new();
    for item in sets {
        let (key, raw) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {item:?} must be KEY=VALUE"))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let parts: Vec<&str> = key.split('.').collect();
        let mut map = &mut root;
        for part in &parts[..parts.len() - 1] {
            let entry = map
                .entry((*part).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            map = entry
                .as_object_mut()
                .ok_or_else(|| anyhow!("--set {key}: {part} is not an object"))?;
        }
        map.insert(parts[parts.len() - 1].to_owned(), value);
    }
    Ok(Value::Object(root))
}

async fn start(
    store: &Store,
    root: &Path,
    calendar_dir: &Path,
    clock: &Clock,
    args: StartArgs,
) -> Result<ExitCode> {
    let workflow = workflows::by_name(root, &args.workflow)?;
    let data = read_data(&args.data)?;
    let id = args
        .id
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string()[..12].to_owned());
    let at = time(&args.who, &workflow.definition.time_zone, clock)?;
    let case = start_case(
        store,
        &workflow,
        &id,
        data,
        actor(&args.who)?,
        at,
        Uuid::new_v4(),
    )
    .await?;
    if args.json {
        output::line(&case_json(store, &case, calendar_dir).await?.to_string())?;
    } else {
        output::line(&id)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(store: &Store, calendar_dir: &Path, clock: &Clock, args: DoArgs) -> Result<ExitCode> {
    let input = match &args.data {
        Some(path) => read_data(path)?,
        None => set_fields(&args.set)?,
    };
    let existing = load_case(store, &args.case)
        .await?
        .ok_or_else(|| CaseError::NotFound(args.case.clone()))?;
    let workflow = pinned(store, &existing.state).await?;
    let request = CommandRequest {
        id: args.command_id.unwrap_or_else(Uuid::new_v4),
        name: args.command.clone(),
        input,
        actor: actor(&args.who)?,
        at: time(&args.who, &workflow.definition.time_zone, clock)?,
    };
    let (case, events) = run_command(store, &args.case, request).await?;
    if args.json {
        output::line(&case_json(store, &case, calendar_dir).await?.to_string())?;
    } else if events.is_empty() {
        output::line("already applied: nothing to do")?;
    } else {
        for e in &events {
            output::line(&format!("{} → stage {}", e.event_type, case.state.stage))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn case_json(store: &Store, case: &LoadedCase, calendar_dir: &Path) -> Result<Value> {
    let workflow = pinned(store, &case.state).await?;
    let s = &case.state;
    let calendar = crate::config::load_calendar(calendar_dir)?;
    let warnings = warnings(&workflow, s, &calendar);
    let stage_label = workflow
        .definition
        .stages
        .iter()
        .find(|x| x.id.value == s.stage)
        .map(|x| x.label.clone());
    Ok(json!({
        "id": s.id,
        "workflow": s.workflow,
        "version": s.version,
        "definition_hash": s.definition_hash,
        "stage": s.stage,
        "stage_label": stage_label,
        "stages": s.stages,
        "entities": s.entities,
        "data": s.data,
        "warnings": warnings,
        "stream_version": s.stream_version,
        "started_at": s.started_at,
        "updated_at": s.updated_at,
    }))
}

async fn show(store: &Store, calendar_dir: &Path, args: ShowArgs) -> Result<ExitCode> {
    let case = load_case(store, &args.case)
        .await?
        .ok_or_else(|| CaseError::NotFound(args.case.clone()))?;
    let value = case_json(store, &case, calendar_dir).await?;
    if args.json {
        output::line(&value.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = &case.state;
    output::line(&format!(
        "case {} — {} v{} — stage {} ({})",
        s.id,
        s.workflow,
        s.version,
        s.stage,
        value["stage_label"].as_str().unwrap_or_default()
    ))?;
    for (collection, entities) in &s.entities {
        output::line(&format!("{collection}:"))?;
        for (key, e) in entities {
            output::line(&format!("  {key}\t{}", e.state))?;
        }
    }
    for w in value["warnings"].as_array().into_iter().flatten() {
        output::line(&format!(
            "warning {}: {}",
            w["code"].as_str().unwrap_or_default(),
            w["message"].as_str().unwrap_or_default()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &Store, args: ListArgs) -> Result<ExitCode> {
    for id in list_cases(store).await? {
        let Some(case) = load_case(store, &id).await? else {
            continue;
        };
        let s = &case.state;
        if args.json {
            output::line(
                &json!({"id": s.id, "workflow": s.workflow, "version": s.version,
                        "stage": s.stage, "updated_at": s.updated_at})
                .to_string(),
            )?;
        } else {
            output::line(&format!(
                "{}\t{}\t{}\t{}",
                s.id, s.workflow, s.stage, s.updated_at
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(store: &Store, args: ShowArgs) -> Result<ExitCode> {
    let case = load_case(store, &args.case)
        .await?
        .ok_or_else(|| CaseError::NotFound(args.case.clone()))?;
    for e in &case.events {
        if args.json {
            output::line(&serde_json::to_string(e)?)?;
        } else {
            let data = e.data_value();
            output::line(&format!(
                "{}\t{}\t{}\t{}\t{}",
                e.stream_version,
                data["at"].as_str().unwrap_or_default(),
                e.event_type,
                e.metadata_value().actor.unwrap_or_default(),
                data["command"].as_str().unwrap_or_default()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
