//! `giamsat archive ...`: a case's BagIt package on demand (`build`), and checking a package
//! (`verify`, exit 3 when it is invalid, like `giamsat verify`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use giamsat_archive::{ArchiveConfig, BuildRequest, Packing, build_package, verify_bag};
use giamsat_scheduler::Clock;
use giamsat_store::Store;
use serde_json::json;

use crate::config::Config;
use crate::{EXIT_TAMPERED, output};

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Build a case's BagIt package (its documents, events and record metadata) with the
    /// archive exporter's settings; it is never written over an existing one
    Build(BuildArgs),
    /// Check a package (a folder, .zip or .tar): bagit.txt, manifests, Payload-Oxum, tag
    /// manifests, the events' hashes and the documents' records; exit 3 when it is invalid
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Case id
    case: String,
    /// Folder the package goes into [default: the archive exporter's output]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Pack the package into one .zip file
    #[arg(long, conflicts_with = "tar")]
    zip: bool,
    /// Pack the package into one .tar file
    #[arg(long)]
    tar: bool,
    /// The [[exporters]] table (type "archive") whose retention, access and documents-output
    /// apply [default: the only one configured]
    #[arg(long, value_name = "ID")]
    exporter: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The package: a folder, or a .zip or .tar file
    bag: PathBuf,
    #[arg(long)]
    json: bool,
}

/// The archive exporter's table: the one `id` names, else the only one of type "archive".
fn archive_config(config: &Config, id: Option<&str>) -> Result<ArchiveConfig> {
    let tables: Vec<_> = config
        .exporters
        .iter()
        .filter(|e| e.kind == "archive")
        .collect();
    let table = match id {
        Some(id) => tables.iter().find(|e| e.id == id).ok_or_else(|| {
            anyhow!(
                "no [[exporters]] table with id = {id:?} and type = \"archive\" in the \
                 configuration"
            )
        })?,
        None => match tables.as_slice() {
            [one] => one,
            [] => bail!(
                "no [[exporters]] table with type = \"archive\" in the configuration: the package \
                 takes its retention, access and documents-output from it (see config/giamsat.toml)"
            ),
            several => bail!(
                "several archive exporters are configured ({}); choose one with --exporter",
                several
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let settings = giamsat_cases::toml_to_json(toml::Value::Table(table.settings.clone()));
    ArchiveConfig::from_table(settings).map_err(|e| {
        anyhow!(
            "configuration [[exporters]] id = {:?} (type archive): {e}",
            table.id
        )
    })
}

pub async fn run(
    store: &Store,
    config: &Config,
    clock: &Clock,
    command: ArchiveCommand,
) -> Result<ExitCode> {
    match command {
        ArchiveCommand::Build(args) => {
            let settings = archive_config(config, args.exporter.as_deref())?;
            let request = BuildRequest {
                case: args.case.clone(),
                until: None,
                now: clock.now(),
                output: args.out.clone().unwrap_or_else(|| settings.output.clone()),
                packing: Packing::from_flags(args.zip, args.tar, settings.packing),
            };
            let package = build_package(store, &settings, &request)
                .await
                .with_context(|| format!("archive package of case {:?}", args.case))?;
            if args.json {
                output::line(&serde_json::to_string(&json!({
                    "case": args.case,
                    "name": package.name,
                    "path": package.path.display().to_string(),
                    "packing": package.packing.name(),
                    "sha256": package.sha256,
                    "checksum_of": package.checksum_of,
                    "payload_oxum": package.payload_oxum,
                    "payload_files": package.payload_files,
                    "documents": package.documents,
                    "bagging_date": package.bagging_date.to_string(),
                    "file_code": package.file_code,
                    "chain_head": package.chain_head.to_hex(),
                    "chain_head_position": package.chain_head_position,
                }))?)?;
            } else {
                output::line(&format!(
                    "{}\tsha256 {} ({})\tPayload-Oxum {}\t{} documents\tBagging-Date {}",
                    package.path.display(),
                    package.sha256,
                    package.checksum_of,
                    package.payload_oxum,
                    package.documents,
                    package.bagging_date
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ArchiveCommand::Verify(args) => verify(&args),
    }
}

/// `giamsat archive verify`: needs no database.
pub fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let report =
        verify_bag(&args.bag).with_context(|| format!("cannot check {}", args.bag.display()))?;
    if args.json {
        output::line(&serde_json::to_string(&json!({
            "valid": report.is_valid(),
            "path": report.path.display().to_string(),
            "name": report.name,
            "packing": report.packing.name(),
            "problems": report.problems,
            "payload_oxum": report.payload_oxum(),
            "payload_files": report.payload_files,
            "payload_bytes": report.payload_bytes,
            "events_checked": report.events_checked,
            "documents_checked": report.documents_checked,
            "sha256": report.sha256,
            "checksum_of": report.checksum_of,
        }))?)?;
    } else if report.is_valid() {
        output::line(&format!(
            "package valid: {} ({}), {} payload files, {} bytes, {} events with their hashes, {} \
             document files against their records; sha256 {} ({})",
            report.name,
            report.packing.name(),
            report.payload_files,
            report.payload_bytes,
            report.events_checked,
            report.documents_checked,
            report.sha256.as_deref().unwrap_or("-"),
            report.checksum_of
        ))?;
    } else {
        for problem in &report.problems {
            output::line(&format!("invalid: {problem}"))?;
        }
    }
    Ok(match report.problems.first() {
        None => ExitCode::SUCCESS,
        Some(first) => {
            eprintln!(
                "error: the package {} is invalid: {} problem(s), the first: {first}",
                args.bag.display(),
                report.problems.len()
            );
            ExitCode::from(EXIT_TAMPERED)
        }
    })
}
