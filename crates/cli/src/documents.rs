//! `giamsat documents ...`: a case's documents, numbering a signed document
//! (`assign_document_number`), corrections, and the register of outgoing documents.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Datelike, FixedOffset};
use clap::{Args, Subcommand};
use giamsat_cases::{load_case, run_command};
use giamsat_documents::register::{self, DocumentVersion, Registered};
use giamsat_engine::CommandRequest;
use giamsat_scheduler::Clock;
use giamsat_store::Store;
use serde_json::json;
use uuid::Uuid;

use crate::cases::{Who, actor, time};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum DocumentsCommand {
    /// A case's documents: each version with its number (or "draft") and files
    List(ListArgs),
    /// Number a signed document (assign_document_number): the next number of its issuing body's
    /// series for the document's year; the documents exporter renders it again with the number
    Number(NumberArgs),
    /// Ask for a corrected version of an issued document (the issued one is kept as it is)
    Correct(CorrectArgs),
    /// The register of outgoing documents (Sổ đăng ký văn bản đi) of a year
    Register(RegisterArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Case id
    pub(crate) case: String,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct NumberArgs {
    /// Case id
    pub(crate) case: String,
    /// Document id (from `giamsat documents list`)
    pub(crate) document: String,
    #[command(flatten)]
    pub(crate) who: Who,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct CorrectArgs {
    /// Case id
    pub(crate) case: String,
    /// Document id
    pub(crate) document: String,
    /// Why the document is corrected
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) who: Who,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Year [default: this year on the --clock]
    #[arg(long)]
    pub(crate) year: Option<i32>,
    #[arg(long)]
    pub(crate) json: bool,
}

/// One line of `documents list` (on the database and through `--server`).
pub(crate) fn print_version(v: &DocumentVersion, as_json: bool) -> Result<()> {
    if as_json {
        return output::line(&serde_json::to_string(v)?);
    }
    output::line(&format!(
        "{}\tv{}\t{}\t{}\t{}\t{}",
        v.document,
        v.version,
        v.symbol.as_deref().unwrap_or("draft"),
        v.date,
        v.label,
        v.files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// What `documents number` prints: the register entry.
pub(crate) fn print_numbered(entry: &Registered, as_json: bool) -> Result<()> {
    if as_json {
        return output::line(&serde_json::to_string(entry)?);
    }
    output::line(&format!(
        "{}\t{}\t{}\tv{}",
        entry.symbol, entry.date, entry.document, entry.version
    ))
}

/// One line of `documents register`.
pub(crate) fn print_registered(e: &Registered, as_json: bool) -> Result<()> {
    if as_json {
        return output::line(&serde_json::to_string(e)?);
    }
    output::line(&format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        e.symbol,
        e.date,
        if e.type_name.is_empty() {
            "Công văn"
        } else {
            &e.type_name
        },
        e.excerpt,
        e.signer,
        e.recipients,
        e.case
    ))
}

/// What `documents correct` prints.
pub(crate) fn print_correction(document: &str, version: impl std::fmt::Display) -> Result<()> {
    output::line(&format!(
        "{document} v{version} requested; the documents exporter renders it"
    ))
}

/// The case, who acts and when (`--at`, else now on the clock, in the case's time zone).
async fn acting(
    store: &Store,
    clock: &Clock,
    case: &str,
    who: &Who,
) -> Result<(
    giamsat_cases::LoadedCase,
    giamsat_engine::Actor,
    DateTime<FixedOffset>,
)> {
    let loaded = load_case(store, case)
        .await?
        .ok_or_else(|| anyhow!("case {case:?} does not exist"))?;
    let actor = actor(who)?;
    let workflow = giamsat_cases::pinned(store, &loaded.state).await?;
    let at = time(who, &workflow.definition.time_zone, clock)?;
    Ok((loaded, actor, at))
}

pub async fn run(store: &Store, clock: &Clock, command: DocumentsCommand) -> Result<ExitCode> {
    match command {
        DocumentsCommand::List(args) => {
            if load_case(store, &args.case).await?.is_none() {
                return Err(anyhow!("case {:?} does not exist", args.case));
            }
            for v in register::list(store, &args.case).await? {
                print_version(&v, args.json)?;
            }
        }
        DocumentsCommand::Number(args) => {
            let (case, who, at) = acting(store, clock, &args.case, &args.who).await?;
            let entry = register::assign_number(
                store,
                &args.case,
                &args.document,
                &format!("{}:{}", who.role, who.id),
                at,
            )
            .await?;
            // A document the workflow keeps as an entity records its number in the case too.
            let tracked = case
                .state
                .entity("documents", &args.document)
                .is_some_and(|e| e.state == "issued");
            if tracked {
                let request = CommandRequest {
                    id: Uuid::new_v5(
                        &Uuid::NAMESPACE_OID,
                        format!("giamsat:number:{}/{}", args.case, entry.symbol).as_bytes(),
                    ),
                    name: "assign_number".to_owned(),
                    input: json!({"document": args.document, "number": entry.symbol}),
                    actor: who,
                    at,
                };
                run_command(store, &args.case, request).await?;
            }
            print_numbered(&entry, args.json)?;
        }
        DocumentsCommand::Correct(args) => {
            let (_, who, at) = acting(store, clock, &args.case, &args.who).await?;
            let version = register::request_correction(
                store,
                &args.case,
                &args.document,
                &args.reason,
                &format!("{}:{}", who.role, who.id),
                at,
            )
            .await?;
            print_correction(&args.document, version)?;
        }
        DocumentsCommand::Register(args) => {
            let year = args.year.unwrap_or_else(|| clock.now().year());
            for e in register::register(store, year).await? {
                print_registered(&e, args.json)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
