//! The workflow engine: definitions are data (YAML under `workflows/<name>/`), and
//! [`decide`]/[`CaseState::evolve`] turn commands into events and events into state, purely and
//! deterministically. No code here names a stage, command, event or field of a particular
//! workflow; everything comes from the definition.

// A rejection is an ordinary answer to a command and carries its messages; boxing it would only
// move the same bytes to the heap on a path that runs once per command.
#![allow(clippy::result_large_err)]

mod calendar;
mod case;
mod context;
mod decide;
mod definition;
pub mod golden;
mod load;
mod timers;
pub mod vn;
mod warnings;

pub use calendar::{Calendar, CalendarYear, Holiday, MakeUpDay};
pub use case::{
    Actor, AppliedEffect, CaseEvent, CaseEventData, CaseState, Entity, Pin, StageChange,
};
pub use decide::{ADMIN_ROLE, CommandRequest, Rejection, decide, event_id, holds, nfc, start};
pub use definition::*;
pub use load::{Bundle, Problem, Problems, Workflow, load, referenced_files};
pub use timers::{
    Amount, At, CompiledTimer, Offset, OffsetTerm, OffsetUnit, SYSTEM_ROLE, TimerInstance,
    TimerOutcome, TimerRecord, TimerState, local, parse_time_of_day, timers, zone,
};
pub use warnings::{Warning, warnings};
