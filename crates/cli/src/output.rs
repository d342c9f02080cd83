//! Writing results to standard output: one line per item, JSON Lines on request, and a closed
//! pipe (`giamsat events tail | head`) treated as a normal end rather than an error.

use std::io::{self, Write};

use anyhow::Result;
use giamsat_types::RecordedEvent;

/// Writes one line to standard output and flushes it, so followers see events at once.
pub fn line(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Prints an event as a JSON object on one line, or as a tab-separated line for people.
pub fn event(event: &RecordedEvent, json: bool) -> Result<()> {
    if json {
        line(&serde_json::to_string(event)?)
    } else {
        line(&format!(
            "{}\t{}@{}\t{}\t{}\t{}",
            event.position,
            event.stream_id,
            event.stream_version,
            event
                .recorded_at()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            event.event_type,
            event.data
        ))
    }
}

/// Whether an error is only the reader of our output going away.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
