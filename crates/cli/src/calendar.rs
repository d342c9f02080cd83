//! `giamsat calendar ...`: look at the working-day calendar the warnings (and later the timers)
//! use.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{Datelike, Days, NaiveDate};
use clap::{Args, Subcommand};

use crate::{config, output};

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Validate the calendar files and list the days off and make-up days of a year (or all)
    Check(CheckArgs),
    /// Count and list the working days from FROM to TO (inclusive, YYYY-MM-DD)
    Workdays(WorkdaysArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    year: Option<i32>,
}

#[derive(Debug, Args)]
pub struct WorkdaysArgs {
    from: String,
    to: String,
}

fn date(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("{text:?} is not a date (YYYY-MM-DD)"))
}

pub fn run(dir: &Path, command: CalendarCommand) -> Result<ExitCode> {
    let calendar = config::load_calendar(dir)?;
    match command {
        CalendarCommand::Check(args) => {
            let years: Vec<i32> = match args.year {
                Some(y) => vec![y],
                None => (2000..=2100)
                    .filter(|y| {
                        calendar.covers(NaiveDate::from_ymd_opt(*y, 1, 1).unwrap_or_default())
                    })
                    .collect(),
            };
            if years.is_empty() {
                output::line(&format!(
                    "no calendar files in {}: only Saturdays and Sundays are days off",
                    dir.display()
                ))?;
            }
            for year in years {
                let first = NaiveDate::from_ymd_opt(year, 1, 1).context("year out of range")?;
                if !calendar.covers(first) {
                    output::line(&format!(
                        "{year}: no calendar file; only Saturdays and Sundays are days off"
                    ))?;
                    continue;
                }
                let mut day = first;
                let mut working = 0;
                while day.year() == year {
                    let weekend =
                        matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
                    match calendar.day_off_reason(day) {
                        Some(reason) if !weekend => {
                            output::line(&format!("{day}\tday off\t{reason}"))?;
                        }
                        None if weekend => output::line(&format!("{day}\tworking (make-up day)"))?,
                        _ => {}
                    }
                    if calendar.is_working_day(day) {
                        working += 1;
                    }
                    day = day + Days::new(1);
                }
                output::line(&format!("{year}: {working} working days"))?;
            }
        }
        CalendarCommand::Workdays(args) => {
            let (from, to) = (date(&args.from)?, date(&args.to)?);
            if to < from {
                bail!("calendar workdays: {to} is before {from}");
            }
            let mut day = from;
            let mut count = 0;
            while day <= to {
                if calendar.is_working_day(day) {
                    count += 1;
                    output::line(&day.to_string())?;
                }
                day = day + Days::new(1);
            }
            output::line(&format!("{count} working days"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
