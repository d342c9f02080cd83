//! `giamsat notifications ...`: what the notifications exporter sent for a case (or the digest),
//! to whom, and who was skipped or refused, with the reasons.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use giamsat_notifications::read_sent;
use giamsat_store::Store;

use crate::output;

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Every delivery recorded for a case (`cron` for the daily digest): notification, channel,
    /// the event it was for, each message, and the recipients skipped or refused with the reason
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Case id, or `cron` for the digest
    case: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &Store, command: NotificationsCommand) -> Result<ExitCode> {
    match command {
        NotificationsCommand::List(args) => {
            let records = read_sent(store, &args.case)
                .await
                .map_err(|e| anyhow!("notifications of {}: {e}", args.case))?;
            for r in &records {
                if args.json {
                    output::line(&serde_json::to_string(r)?)?;
                    continue;
                }
                output::line(&format!(
                    "{}\t{}\t{}@{}\t{} sent, {} skipped, {} refused",
                    r.notification,
                    r.channel,
                    r.source.event_type,
                    r.source.position,
                    r.messages.len(),
                    r.skipped.len(),
                    r.rejected.len()
                ))?;
                for m in &r.messages {
                    let file = m
                        .file
                        .as_deref()
                        .map(|f| format!("\t{f}"))
                        .unwrap_or_default();
                    output::line(&format!(
                        "  sent\t{} <{}>\t{}{file}",
                        m.to.name, m.to.address, m.subject
                    ))?;
                }
                for s in &r.skipped {
                    output::line(&format!("  skipped\t{} ({})\t{}", s.name, s.to, s.reason))?;
                }
                for x in &r.rejected {
                    output::line(&format!(
                        "  refused\t{} <{}>\t{}",
                        x.to.name, x.to.address, x.reason
                    ))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
