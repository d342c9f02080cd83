//! `giamsat demo` and `giamsat serve --demo`: the seed supervision (the Tuần Giáo 2024 example
//! case of `giam-sat-chuyen-de`) driven from its establishment to the archive.
//!
//! Both play one script of the people's steps ([`script`]): the secretariat, the delegation and
//! a few units acting at their dates, as the seed's schedule has them. Everything else happens by
//! itself, exactly as in production: the timer scheduler sends the reminders, marks reports
//! overdue, starts the visits, reminds of each visit, closes the findings period, reminds of the
//! recommendations' deadlines and marks an overdue one; the exporters render the documents, write
//! the e-mails and pack the archive.
//!
//! - `giamsat demo [--out DIR]` plays the script on a manual clock: before each step the
//!   scheduler fires every timer due by then (`Scheduler::advance_to`, as `giamsat simulate`
//!   does) and each exporter catches up (`Runner::run_once`). DIR becomes a working folder of its
//!   own (store, workflows, calendars, configuration, documents, outbox, archive), so `cd DIR`
//!   and every other command (`giamsat serve` too) work on what the demo made.
//! - `giamsat serve --demo` creates the case in the configured store and runs the daemon on a
//!   simulated clock from 25/3/2024; a task performs each step when the clock reaches its time,
//!   and the daemon's own scheduler and exporters do the rest.
//!
//! A demo store is marked by the stream `demo/tg2024` (written before the case starts), so that
//! `serve --demo` can tell a demo's case from a real case that happens to be called tg2024: it
//! resumes the former and refuses to touch the latter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use clap::Args;
use giamsat_cases::{FireOutcome, load_case, run_command, start_case};
use giamsat_documents::register;
use giamsat_engine::{Actor, CommandRequest, Workflow};
use giamsat_exporter::Runner;
use giamsat_scheduler::{Clock, Firing, ManualClock, Scheduler, SimulatedClock};
use giamsat_store::{Direction, Store};
use giamsat_types::{ExpectedVersion, NewEvent, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::{Config, ExporterConfig, load_calendar};
use crate::{output, workflows};

/// The demo's case id (as in the README's walk-through).
pub const CASE: &str = "tg2024";
const WORKFLOW: &str = "giam-sat-chuyen-de";
/// The seed's start data, in the workflow's folder.
const SEED: &str = "examples/tuan-giao-2024.yaml";
/// The stream that marks a store as a demo's.
const MARKER_STREAM: &str = "demo/tg2024";
const MARKER_EVENT: &str = "DemoCaseCreated";
/// When the case is established (the simulated clock of `giamsat demo` starts here).
const ESTABLISHED_AT: &str = "2024-03-20T08:00:00+07:00";
/// Where the simulated clock of `giamsat serve --demo` starts: the morning the notice is issued.
const SERVE_FROM: &str = "2024-03-25T07:30:00+07:00";
/// `giamsat serve --demo`'s default speed: one simulated day every 3 s, so the reports, the
/// visits and the findings pass in about three minutes.
pub const DEFAULT_SPEED: f64 = 28_800.0;
/// A stretch without a step of the people longer than this is a quiet one (the months of the
/// follow-up): `serve --demo` runs through it [`HURRY`] times faster, and slows down again
/// [`SLOW_BEFORE`] ahead of the next step, so the whole supervision is over in minutes.
const QUIET: TimeDelta = TimeDelta::days(10);
const SLOW_BEFORE: TimeDelta = TimeDelta::days(2);
const HURRY: f64 = 16.0;
const SECRETARIAT: &str = "secretariat:huyen";
const DELEGATION: &str = "delegation:trong";
/// The demo values of the archive exporter's two keys that have no default (DOMAIN.md leaves
/// both unconfirmed for council supervision files).
const DEMO_RETENTION: &str = "20 năm";
const DEMO_ACCESS: &str = "restricted";
/// The name of the demo's copy of the seed data, with example.org addresses.
const DEMO_DATA: &str = "tuan-giao-2024.demo.json";
/// Written into DIR first; `--force` replaces a folder only when it holds this file.
const DIR_MARKER: &str = ".giamsat-demo";
/// What `giamsat demo` writes into DIR (and what `--force` replaces).
const DIR_ENTRIES: &[&str] = &[
    "giamsat.db",
    "giamsat.db-wal",
    "giamsat.db-shm",
    "config",
    "workflows",
    "documents",
    "outbox",
    "archive",
    DEMO_DATA,
    DIR_MARKER,
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder to write everything into: the store, the workflows and calendars, the
    /// configuration, the documents, the outbox and the archive package (created when absent;
    /// it must be empty)
    #[arg(long, value_name = "DIR", default_value = "demo")]
    out: PathBuf,
    /// Use a non-empty DIR: the entries an earlier demo wrote there are replaced (giamsat.db,
    /// config/, workflows/, documents/, outbox/, archive/, tuan-giao-2024.demo.json); anything
    /// else is left alone. Refused when DIR has such entries that no demo wrote.
    #[arg(long)]
    force: bool,
}

/// What one step does.
#[derive(Debug, Clone)]
enum Action {
    /// A workflow command with its input.
    Command(&'static str, Value),
    /// Numbering a signed document in the register (then `assign_number` in the case), as
    /// `giamsat documents number` does.
    Number(&'static str),
}

/// One step a person takes, at its time.
#[derive(Debug, Clone)]
struct Step {
    at: &'static str,
    actor: &'static str,
    action: Action,
}

impl Step {
    fn at(&self) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(self.at).expect("the script's times are RFC 3339")
    }

    fn name(&self) -> &'static str {
        match &self.action {
            Action::Command(name, _) => name,
            Action::Number(_) => "number",
        }
    }
}

fn step(at: &'static str, actor: &'static str, name: &'static str, input: Value) -> Step {
    Step {
        at,
        actor,
        action: Action::Command(name, input),
    }
}

/// A unit's report, sent by its clerk, with its Phụ lục 03 figures (dossiers received and
/// resolved on time, all fields and, for communes, land and construction).
fn report(
    at: &'static str,
    actor: &'static str,
    unit: &str,
    channel: &str,
    figures: &[(i64, &str, i64, i64)],
) -> Step {
    let received_at = at;
    let rows: Vec<Value> = figures
        .iter()
        .map(|(year, field, total, on_time)| {
            json!({"year": year, "field": field, "total": total, "on_time": on_time})
        })
        .collect();
    step(
        at,
        actor,
        "receive_report",
        json!({
            "unit": unit,
            "received_at": received_at,
            "channel": channel,
            "file": format!("bao-cao-{unit}.pdf"),
            "phu_luc_03": rows,
        }),
    )
}

fn visit(at: &'static str, unit: &str, held_at: &str, summary: &str) -> Step {
    step(
        at,
        DELEGATION,
        "record_visit",
        json!({
            "unit": unit,
            "held_at": held_at,
            "attendees": ["Trần Bình Trọng", "Nguyễn Thị Huyền"],
            "minutes_summary": summary,
        }),
    )
}

/// The people's steps after the case is established, in time order. The timers do the rest.
fn script() -> Vec<Step> {
    let mut steps = vec![
        step(
            "2024-03-21T08:00:00+07:00",
            SECRETARIAT,
            "issue_plan",
            json!({"issued_on": "2024-03-21", "document": "ke-hoach"}),
        ),
        step(
            "2024-03-25T08:00:00+07:00",
            SECRETARIAT,
            "issue_notice",
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        ),
        // Signed, then numbered: the documents exporter renders it again with its number.
        Step {
            at: "2024-03-25T10:00:00+07:00",
            actor: SECRETARIAT,
            action: Action::Number("thong-bao-lich"),
        },
        // Monday 29/4/2024 is a day off that year (swapped with Saturday 4/5): the case warns
        // about the visit to xã Quài Cang, and the secretariat moves it.
        step(
            "2024-04-03T09:00:00+07:00",
            SECRETARIAT,
            "reschedule_visit",
            json!({
                "unit": "xa-quai-cang",
                "date": "2024-05-06",
                "start_time": "08:00",
                "reason": "Ngày 29/4/2024 là ngày nghỉ (hoán đổi với thứ Bảy 04/5/2024)",
            }),
        ),
        report(
            "2024-04-10T09:00:00+07:00",
            "unit:van-thu@phong-noi-vu",
            "phong-noi-vu",
            "email",
            &[(2022, "all", 186, 184), (2023, "all", 203, 203)],
        ),
        report(
            "2024-04-12T14:00:00+07:00",
            "unit:van-thu@thi-tran-tuan-giao",
            "thi-tran-tuan-giao",
            "email",
            &[
                (2022, "all", 1245, 1219),
                (2022, "land", 312, 298),
                (2022, "construction", 87, 85),
                (2023, "all", 1388, 1371),
                (2023, "land", 341, 333),
                (2023, "construction", 95, 95),
            ],
        ),
        // After the reminder of 16/4 08:00.
        report(
            "2024-04-16T10:00:00+07:00",
            "unit:van-thu@xa-quai-to",
            "xa-quai-to",
            "email",
            &[
                (2022, "all", 642, 630),
                (2022, "land", 158, 149),
                (2022, "construction", 21, 21),
                (2023, "all", 701, 695),
                (2023, "land", 172, 168),
                (2023, "construction", 25, 25),
            ],
        ),
        // On paper, received by the secretariat.
        report(
            "2024-04-19T15:00:00+07:00",
            SECRETARIAT,
            "ubnd-huyen",
            "paper",
            &[
                (2022, "all", 4820, 4711),
                (2022, "land", 1650, 1588),
                (2022, "construction", 412, 405),
                (2023, "all", 5133, 5087),
                (2023, "land", 1702, 1679),
                (2023, "construction", 437, 436),
            ],
        ),
        // After the deadline: recorded as late.
        report(
            "2024-04-23T09:00:00+07:00",
            "unit:van-thu@xa-ta-ma",
            "xa-ta-ma",
            "email",
            &[(2022, "all", 388, 371), (2023, "all", 402, 396)],
        ),
        // The meeting's timer has started the visits at 07:30; the delegation records the
        // meeting afterwards.
        step(
            "2024-04-24T10:30:00+07:00",
            DELEGATION,
            "hold_meeting",
            json!({
                "held_at": "2024-04-24T07:30:00+07:00",
                "attendees": ["Trần Bình Trọng", "Nguyễn Thị Huyền"],
                "notes": "Thống nhất lịch và phân công thành viên giám sát trực tiếp",
            }),
        ),
    ];
    for (at, unit, held_at, summary) in [
        (
            "2024-04-25T17:00:00+07:00",
            "thi-tran-tuan-giao",
            "2024-04-25T08:00:00+07:00",
            "Bộ phận một cửa hoạt động nền nếp; số hóa kết quả giải quyết TTHC còn chậm",
        ),
        (
            "2024-04-26T17:00:00+07:00",
            "xa-quai-to",
            "2024-04-26T08:00:00+07:00",
            "Còn hồ sơ đất đai giải quyết quá hạn, chưa có văn bản xin lỗi người dân",
        ),
        (
            "2024-05-02T17:00:00+07:00",
            "xa-quai-nua",
            "2024-05-02T08:00:00+07:00",
            "Chưa gửi báo cáo theo đề cương; đơn vị cam kết gửi bổ sung",
        ),
        (
            "2024-05-03T17:00:00+07:00",
            "xa-quai-na-tong",
            "2024-05-03T08:00:00+07:00",
            "Chưa gửi báo cáo theo đề cương; cơ sở vật chất bộ phận một cửa còn thiếu",
        ),
        (
            "2024-05-06T17:00:00+07:00",
            "xa-quai-cang",
            "2024-05-06T08:00:00+07:00",
            "Làm việc theo lịch điều chỉnh; công khai TTHC đầy đủ",
        ),
        (
            "2024-05-08T17:00:00+07:00",
            "xa-phinh-sang",
            "2024-05-08T08:00:00+07:00",
            "Tỷ lệ hồ sơ trực tuyến thấp; thiếu cán bộ công nghệ thông tin",
        ),
        (
            "2024-05-09T17:00:00+07:00",
            "xa-ta-ma",
            "2024-05-09T08:00:00+07:00",
            "Báo cáo gửi muộn; đã giải trình nguyên nhân",
        ),
        (
            "2024-05-10T17:00:00+07:00",
            "phong-noi-vu",
            "2024-05-10T08:00:00+07:00",
            "Tham mưu tốt công tác cải cách hành chính của huyện",
        ),
        (
            "2024-05-13T17:00:00+07:00",
            "ubnd-huyen",
            "2024-05-13T08:00:00+07:00",
            "Làm việc với UBND huyện về kết quả chung và kiến nghị của các đơn vị",
        ),
    ] {
        steps.push(visit(at, unit, held_at, summary));
    }
    steps.extend([
        step(
            "2024-05-15T09:00:00+07:00",
            DELEGATION,
            "record_finding",
            json!({
                "id": "f1",
                "member": "Trần Bình Trọng",
                "unit": "xa-quai-to",
                "text": "Việc số hóa kết quả giải quyết thủ tục hành chính còn chậm",
            }),
        ),
        step(
            "2024-05-16T09:00:00+07:00",
            DELEGATION,
            "record_finding",
            json!({
                "id": "f2",
                "member": "Trần Bình Trọng",
                "text": "Một số xã chưa gửi báo cáo đúng hạn theo đề cương của Đoàn giám sát",
            }),
        ),
        step(
            "2024-05-27T08:00:00+07:00",
            SECRETARIAT,
            "issue_findings_report",
            json!({
                "issued_on": "2024-05-27",
                "summary": "Báo cáo kết quả giám sát việc thực hiện kế hoạch cải cách hành chính Nhà nước trên địa bàn huyện từ 7/2021 đến 31/12/2023",
                "recommendations": [
                    {"id": "kn-1", "text": "Đẩy nhanh việc số hóa kết quả giải quyết thủ tục hành chính", "to": "UBND huyện"},
                    {"id": "kn-2", "text": "Chỉ đạo các xã gửi báo cáo đúng hạn và công khai tiến độ giải quyết hồ sơ", "to": "UBND các xã, thị trấn"},
                ],
            }),
        ),
        step(
            "2024-07-10T08:00:00+07:00",
            SECRETARIAT,
            "adopt_resolution",
            json!({
                "number": "20/NQ-HĐND",
                "date": "2024-07-10",
                "recommendations": [
                    {"id": "kn-1", "text": "Đẩy nhanh việc số hóa kết quả giải quyết thủ tục hành chính", "responsible": "UBND huyện", "deliverable": "Báo cáo kết quả số hóa", "deadline": "2024-10-31"},
                    {"id": "kn-2", "text": "Chỉ đạo các xã gửi báo cáo đúng hạn và công khai tiến độ giải quyết hồ sơ", "responsible": "UBND các xã, thị trấn", "deliverable": "Báo cáo của UBND huyện", "deadline": "2024-12-31"},
                ],
            }),
        ),
        // kn-1 is done before its deadline (after two reminders); kn-2 goes overdue first.
        step(
            "2024-10-25T09:00:00+07:00",
            SECRETARIAT,
            "report_recommendation_progress",
            json!({
                "recommendation": "kn-1",
                "status": "completed",
                "evidence": "Báo cáo số 215/BC-UBND của UBND huyện",
                "reported_at": "2024-10-25T09:00:00+07:00",
            }),
        ),
        step(
            "2025-01-20T09:00:00+07:00",
            SECRETARIAT,
            "report_recommendation_progress",
            json!({
                "recommendation": "kn-2",
                "status": "completed",
                "evidence": "Báo cáo số 12/BC-UBND của UBND huyện",
                "reported_at": "2025-01-20T09:00:00+07:00",
            }),
        ),
        step(
            "2025-02-03T08:00:00+07:00",
            SECRETARIAT,
            "close_case",
            json!({"closed_on": "2025-02-03"}),
        ),
        // After the archive-due warning of 4/1/2026.
        step(
            "2026-01-12T08:00:00+07:00",
            SECRETARIAT,
            "archive_case",
            json!({"archived_on": "2026-01-12", "file_code": "HĐND-TG.2024.GS01"}),
        ),
    ]);
    steps
}

fn parse_time(text: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text).expect("a constant RFC 3339 time")
}

fn actor(text: &str) -> Actor {
    Actor::parse(text).expect("the script's actors are ROLE:ID")
}

/// Derived from the case and the step, so a step played twice (a resumed `serve --demo`) is
/// recognised as already applied.
fn command_id(index: usize, name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:demo:{CASE}:{index}:{name}").as_bytes(),
    )
}

/// The workflow and its folder (for the seed data) under the workflows folder.
fn workflow_and_dir(root: &Path) -> Result<(Workflow, PathBuf)> {
    for dir in workflows::find(root)? {
        if let Ok(bundle) = workflows::read_bundle(&dir)
            && let Ok(workflow) = giamsat_engine::load(bundle)
            && workflow.name() == WORKFLOW
        {
            return Ok((workflow, dir));
        }
    }
    bail!(
        "the demo needs the workflow {WORKFLOW:?}, which is not (valid) in {} (see `giamsat \
         workflow check`, or give the folder with --workflows)",
        root.display()
    )
}

/// The seed's start data with example.org addresses for every unit and member (the example
/// file itself is left as it is: the seed has no addresses).
fn demo_data(workflow_dir: &Path) -> Result<Value> {
    let path = workflow_dir.join(SEED);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the seed case {}", path.display()))?;
    let mut data: Value = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow!("{}: {e}", path.display()))
        .context("the seed case")?;
    for unit in data["units"].as_array_mut().into_iter().flatten() {
        if let Some(code) = unit["code"].as_str() {
            unit["email"] = json!(format!("{code}@example.org"));
        }
    }
    for member in data["members"].as_array_mut().into_iter().flatten() {
        if let Some(role) = member["role"].as_str() {
            member["email"] = json!(format!("{role}@example.org"));
        }
    }
    Ok(data)
}

/// Whether the store's case tg2024 was created by a demo.
async fn is_demo_store(store: &Store) -> Result<bool> {
    let stream = StreamId::new(MARKER_STREAM).map_err(|e| anyhow!("{e}"))?;
    let events = store
        .read_stream(&stream, Direction::Forward, Some(1), 1)
        .await?;
    Ok(events.iter().any(|e| e.event_type == MARKER_EVENT))
}

/// Marks the store as a demo's (before the case exists, so a crash in between leaves a store
/// that is still recognised).
async fn mark_demo_store(store: &Store, by: &str) -> Result<()> {
    if is_demo_store(store).await? {
        return Ok(());
    }
    let stream = StreamId::new(MARKER_STREAM).map_err(|e| anyhow!("{e}"))?;
    let event = NewEvent::new(
        MARKER_EVENT,
        &json!({"case": CASE, "workflow": WORKFLOW, "by": by, "seed": SEED}),
    );
    store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await?;
    Ok(())
}

async fn start_demo_case(store: &Store, workflow: &Workflow, data: Value) -> Result<()> {
    let at = parse_time(ESTABLISHED_AT);
    let id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:demo:{CASE}:start").as_bytes(),
    );
    start_case(store, workflow, CASE, data, actor(SECRETARIAT), at, id)
        .await
        .with_context(|| format!("starting the demo case {CASE}"))?;
    Ok(())
}

/// What a step did, for the timeline.
struct Applied {
    text: String,
}

/// Performs one step of the script.
async fn apply(store: &Store, index: usize, step: &Step) -> Result<Applied> {
    let at = step.at();
    let who = actor(step.actor);
    match &step.action {
        Action::Command(name, input) => {
            let request = CommandRequest {
                id: command_id(index, name),
                name: (*name).to_owned(),
                input: input.clone(),
                actor: who,
                at,
            };
            let (case, events) = run_command(store, CASE, request)
                .await
                .with_context(|| format!("{name} at {}", step.at))?;
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            Ok(Applied {
                text: if types.is_empty() {
                    "already applied".to_owned()
                } else {
                    format!("{} (stage {})", types.join(", "), case.state.stage)
                },
            })
        }
        Action::Number(document) => {
            let entry = register::assign_number(store, CASE, document, step.actor, at)
                .await
                .with_context(|| format!("numbering {document}"))?;
            // The same rule and command id as `giamsat documents number`.
            let case = load_case(store, CASE)
                .await?
                .ok_or_else(|| anyhow!("case {CASE} does not exist"))?;
            let tracked = case
                .state
                .entity("documents", document)
                .is_some_and(|e| e.state == "issued");
            if tracked {
                let request = CommandRequest {
                    id: Uuid::new_v5(
                        &Uuid::NAMESPACE_OID,
                        format!("giamsat:number:{CASE}/{}", entry.symbol).as_bytes(),
                    ),
                    name: "assign_number".to_owned(),
                    input: json!({"document": document, "number": entry.symbol}),
                    actor: who,
                    at,
                };
                run_command(store, CASE, request).await?;
            }
            Ok(Applied {
                text: format!("{document} numbered {}", entry.symbol),
            })
        }
    }
}

fn local(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
        .format("%d/%m/%Y %H:%M")
        .to_string()
}

fn firing_text(firing: &Firing) -> (String, String) {
    let what = match &firing.outcome {
        FireOutcome::Fired(events) => events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        FireOutcome::Rejected(r) => format!("rejected: {}", r.code),
        FireOutcome::Skipped => "skipped (late)".to_owned(),
        FireOutcome::AlreadyDone(_) => "already done".to_owned(),
        FireOutcome::NotDue => "no longer applies".to_owned(),
    };
    let outcome = match &firing.outcome {
        FireOutcome::Fired(_) => "fired",
        FireOutcome::Rejected(_) => "rejected",
        FireOutcome::Skipped => "skipped",
        FireOutcome::AlreadyDone(_) => "already-done",
        FireOutcome::NotDue => "not-due",
    };
    (outcome.to_owned(), what)
}

/// Refuses a non-empty folder unless `force`; with `force`, removes what an earlier demo wrote
/// (and only that), refusing a folder whose demo entries no demo wrote.
fn prepare_dir(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "{} exists and is not a folder; choose another --out",
            out.display()
        );
    }
    let entries: Vec<String> = match std::fs::read_dir(out) {
        Ok(read) => read
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    if !entries.is_empty() {
        if !force {
            let mut shown: Vec<&str> = entries.iter().map(String::as_str).take(5).collect();
            shown.sort_unstable();
            bail!(
                "{} is not empty (it holds {}{}); giamsat demo writes into an empty folder: \
                 choose another with --out DIR, or pass --force to replace an earlier demo's \
                 files there",
                out.display(),
                shown.join(", "),
                if entries.len() > 5 { ", ..." } else { "" }
            );
        }
        let ours: Vec<&String> = entries
            .iter()
            .filter(|e| DIR_ENTRIES.contains(&e.as_str()))
            .collect();
        if !ours.is_empty() && !out.join(DIR_MARKER).is_file() {
            bail!(
                "{} holds {} that no demo wrote (there is no {DIR_MARKER}); --force replaces \
                 only an earlier demo's files: choose another --out DIR",
                out.display(),
                ours.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for name in ours {
            let path = out.join(name);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let read =
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
    for entry in read {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).with_context(|| {
                format!("cannot copy {} to {}", path.display(), target.display())
            })?;
        }
    }
    Ok(())
}

/// The configuration the demo writes into DIR and runs with.
fn demo_config_text() -> String {
    format!(
        r#"# Written by `giamsat demo` for the Tuần Giáo 2024 demonstration. Run giamsat from this folder
# and this file is read by default (config/giamsat.toml); keys not listed keep their defaults
# (the repository's config/giamsat.toml lists them all).

[store]
url = "sqlite://giamsat.db"

[workflows]
dir = "workflows"

[calendar]
dir = "config/calendars"

[[exporters]]
id = "documents"
type = "documents"
output = "documents"
formats = ["html", "md", "docx"]

# No [exporters.smtp]: every message is written to outbox/<case>/ as an .eml file. The units'
# and members' addresses are example.org addresses added to the demo's copy of the seed data
# ({DEMO_DATA}).
[[exporters]]
id = "notifications"
type = "notifications"
from = "Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>"
outbox = "outbox"
calendar-dir = "config/calendars"
[exporters.roles]
secretariat = ["Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>"]
delegation = []

# DEMO VALUES. The retention period (thời hạn bảo quản) and the access regime (chế độ sử dụng)
# of council supervision files are not settled (DOMAIN.md); these two stand in for the demo
# only. Take the real ones from the agency's file list before archiving a real case.
[[exporters]]
id = "archive"
type = "archive"
output = "archive"
documents-output = "documents"
retention = "{DEMO_RETENTION}"
access = "{DEMO_ACCESS}"
"#
    )
}

/// The exporters in the order they catch up: documents first (the notifications attach them,
/// and the archive waits for their checkpoint), then the others.
fn runners(store: &Store, config: &Config) -> Result<Vec<(String, Runner)>> {
    let mut tables: Vec<&ExporterConfig> = config.exporters.iter().filter(|e| e.enabled).collect();
    tables.sort_by_key(|e| match e.kind.as_str() {
        "documents" => 0,
        "archive" => 2,
        _ => 1,
    });
    tables
        .into_iter()
        .map(|e| Ok((e.id.clone(), crate::exporters::runner(store, e)?)))
        .collect()
}

async fn catch_up(runners: &[(String, Runner)]) -> Result<()> {
    for (id, runner) in runners {
        runner
            .run_once()
            .await
            .map_err(|e| anyhow!("exporter {id}: {e}"))?;
    }
    Ok(())
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    timers: BTreeMap<String, usize>,
    outcomes: BTreeMap<String, usize>,
}

impl Tally {
    fn firings(&mut self, firings: &[Firing]) -> Result<()> {
        for f in firings {
            let (outcome, what) = firing_text(f);
            if outcome == "fired" {
                *self.timers.entry(f.timer().to_owned()).or_default() += 1;
            }
            *self.outcomes.entry(outcome).or_default() += 1;
            output::line(&format!(
                "  {}  {:<32} {:<36} {}",
                local(f.due),
                "timer",
                format!("{} {}", f.timer(), f.key().unwrap_or("")).trim_end(),
                what
            ))?;
        }
        Ok(())
    }
}

/// `giamsat demo`.
pub async fn run(root: &Path, config: &Config, args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let out = args.out.clone();
    prepare_dir(&out, args.force)?;
    let (_, workflow_dir) = workflow_and_dir(root)?;
    let data = demo_data(&workflow_dir)?;
    // DIR becomes a working folder of its own.
    std::fs::write(
        out.join(DIR_MARKER),
        "Written by `giamsat demo`; `giamsat demo --force` may replace this folder's giamsat.db, \
         config/, workflows/, documents/, outbox/, archive/ and tuan-giao-2024.demo.json.\n",
    )?;
    if root.join("workflow.yaml").is_file() {
        let name = root.file_name().unwrap_or_else(|| WORKFLOW.as_ref());
        copy_dir(root, &out.join("workflows").join(name))?;
    } else {
        copy_dir(root, &out.join("workflows"))?;
    }
    if config.calendar.dir.is_dir() {
        copy_dir(&config.calendar.dir, &out.join("config/calendars"))?;
    } else {
        std::fs::create_dir_all(out.join("config/calendars"))?;
        eprintln!(
            "warning: no holiday calendars in {}: the demo counts Saturdays and Sundays only",
            config.calendar.dir.display()
        );
    }
    std::fs::write(out.join("config/giamsat.toml"), demo_config_text())?;
    std::fs::write(out.join(DEMO_DATA), serde_json::to_string_pretty(&data)?)?;
    // Everything from here on runs inside DIR with DIR's own configuration, exactly as a command
    // run there later does; the records (the archive package's path, say) are relative to it.
    std::env::set_current_dir(&out).with_context(|| format!("cannot enter {}", out.display()))?;
    let (config, _) = Config::load(Some(Path::new(crate::config::DEFAULT_CONFIG_PATH)))?;
    let store = Store::open(&config.store.url, config.store.options())
        .await
        .context("cannot create the demo's store")?;
    let result = play(&store, &config, &out, started).await;
    store.close().await;
    result
}

async fn play(store: &Store, config: &Config, out: &Path, started: Instant) -> Result<ExitCode> {
    let (workflow, _) = workflow_and_dir(&config.workflows.dir)?;
    let calendar = load_calendar(&config.calendar.dir)?;
    let data: Value = serde_json::from_str(&std::fs::read_to_string(DEMO_DATA)?)?;
    let established = parse_time(ESTABLISHED_AT).with_timezone(&Utc);
    let clock = ManualClock::new(established);
    let scheduler = Scheduler::for_case(
        store.clone(),
        Clock::Manual(clock.clone()),
        calendar,
        config.scheduler.options(),
        CASE,
    );
    let runners = runners(store, config)?;
    let mut tally = Tally::default();

    output::line(&format!(
        "giamsat demo: the Tuần Giáo 2024 supervision (case {CASE}, workflow {WORKFLOW}) on a \
         simulated clock from {}, into {}",
        local(established),
        out.display()
    ))?;
    output::line("")?;
    output::line("Timeline (people's steps, and the timers the scheduler fired in between)")?;
    mark_demo_store(store, "giamsat demo").await?;
    start_demo_case(store, &workflow, data).await?;
    output::line(&format!(
        "  {}  {:<32} {:<36} CaseEstablished (stage established)",
        local(established),
        SECRETARIAT,
        "start"
    ))?;
    scheduler.rebuild().await?;
    catch_up(&runners).await?;
    for (index, step) in script().iter().enumerate() {
        let at = step.at().with_timezone(&Utc);
        let firings = scheduler
            .advance_to(&clock, at)
            .await
            .context("the scheduler failed")?;
        tally.firings(&firings)?;
        catch_up(&runners).await?;
        let applied = apply(store, index, step).await?;
        output::line(&format!(
            "  {}  {:<32} {:<36} {}",
            local(at),
            step.actor,
            step.name(),
            applied.text
        ))?;
        scheduler.refresh_case(CASE).await?;
        catch_up(&runners).await?;
    }
    // Anything still due on the last day (nothing, once the case is archived).
    let last = clock.now() + TimeDelta::hours(12);
    let firings = scheduler.advance_to(&clock, last).await?;
    tally.firings(&firings)?;
    catch_up(&runners).await?;
    let calendar = scheduler.calendar();
    summary(
        store,
        (&workflow, &calendar),
        out,
        &runners,
        &tally,
        scheduler.pending(),
        started,
    )
    .await
}

/// The files under `dir` whose name ends with `ext`.
fn count_files(dir: &Path, ext: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            n += count_files(&path, ext);
        } else if path.to_string_lossy().ends_with(ext) {
            n += 1;
        }
    }
    n
}

async fn summary(
    store: &Store,
    (workflow, calendar): (&Workflow, &giamsat_engine::Calendar),
    out: &Path,
    runners: &[(String, Runner)],
    tally: &Tally,
    pending: usize,
    started: Instant,
) -> Result<ExitCode> {
    let case = load_case(store, CASE)
        .await?
        .ok_or_else(|| anyhow!("case {CASE} does not exist"))?;
    let mut ok = true;
    output::line("")?;
    output::line("Summary")?;

    // Stages, with who moved the case there.
    output::line(&format!(
        "  Stages reached: {} of {}",
        case.state.stages.len(),
        workflow.definition.stages.len()
    ))?;
    for change in &case.state.stages {
        let label = workflow
            .definition
            .stages
            .iter()
            .find(|s| s.id.value == change.stage)
            .map_or("", |s| s.label.as_str());
        let by_timer = case.events.iter().any(|e| {
            let data = e.data_value();
            data["command"] == change.command
                && data["at"] == change.at
                && e.metadata_value()
                    .actor
                    .is_some_and(|a| a.starts_with("system:"))
        });
        let when = DateTime::parse_from_rfc3339(&change.at)
            .map(|t| local(t.with_timezone(&Utc)))
            .unwrap_or_else(|_| change.at.clone());
        output::line(&format!(
            "    {when}  {:<12} {label} ({}{})",
            change.stage,
            change.command,
            if by_timer { ", by the scheduler" } else { "" }
        ))?;
    }

    let warnings = giamsat_engine::warnings(workflow, &case.state, calendar);
    output::line(&format!(
        "  Warnings now: {}",
        if warnings.is_empty() {
            "none".to_owned()
        } else {
            warnings
                .iter()
                .map(|w| format!("{} ({})", w.code, w.message_en))
                .collect::<Vec<_>>()
                .join("; ")
        }
    ))?;

    // Timers.
    let fired: usize = tally.timers.values().sum();
    output::line(&format!(
        "  Timers fired: {fired} ({}); outcomes: {}; pending now: {pending}",
        tally
            .timers
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        tally
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;

    // Documents.
    let versions = register::list(store, CASE).await?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &versions {
        *kinds.entry(v.kind.as_str()).or_default() += 1;
    }
    let numbered: Vec<String> = versions
        .iter()
        .filter_map(|v| v.symbol.as_ref().map(|s| format!("{s} {}", v.document)))
        .collect();
    let files: usize = versions
        .iter()
        .map(|v| v.files.len() + v.draft_files.len())
        .sum();
    output::line(&format!(
        "  Documents: {} ({}), {files} files in {}",
        versions.len(),
        kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        out.join("documents").join(CASE).display()
    ))?;
    output::line(&format!(
        "    numbered: {}; the others stay drafts (\"Số:    /…\") until someone numbers them",
        if numbered.is_empty() {
            "none".to_owned()
        } else {
            numbered.join(", ")
        }
    ))?;

    // Notifications.
    let sent = giamsat_notifications::read_sent(store, CASE)
        .await
        .map_err(|e| anyhow!("notifications of {CASE}: {e}"))?;
    let messages: usize = sent.iter().map(|r| r.messages.len()).sum();
    let rejected: usize = sent.iter().map(|r| r.rejected.len()).sum();
    let mut by_notification: BTreeMap<&str, usize> = BTreeMap::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for r in &sent {
        *by_notification.entry(r.notification.as_str()).or_default() += r.messages.len();
        for s in &r.skipped {
            *skipped
                .entry(format!("{}: {}", s.to, s.reason))
                .or_default() += 1;
        }
    }
    output::line(&format!(
        "  Notifications: {} deliveries, {messages} messages written to {} ({} .eml files), {} \
         recipients skipped, {rejected} refused",
        sent.len(),
        out.join("outbox").join(CASE).display(),
        count_files(&Path::new("outbox").join(CASE), ".eml"),
        skipped.values().sum::<usize>()
    ))?;
    output::line(&format!(
        "    {}",
        by_notification
            .iter()
            .map(|(n, m)| format!("{n} {m}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    for (reason, n) in &skipped {
        output::line(&format!("    skipped {n}×: {reason}"))?;
    }

    // The archive package.
    let stream = giamsat_archive::archive_stream(CASE).map_err(|e| anyhow!("{e}"))?;
    let built = store
        .read_stream(&stream, Direction::Forward, Some(1), 100)
        .await?
        .into_iter()
        .rfind(|e| e.event_type == giamsat_archive::PACKAGE_BUILT_EVENT);
    match built {
        Some(event) => {
            let record = event.data_value();
            let path = PathBuf::from(record["path"].as_str().unwrap_or_default());
            let report = giamsat_archive::verify_bag(&path)
                .with_context(|| format!("cannot check {}", path.display()))?;
            ok &= report.is_valid();
            output::line(&format!(
                "  Archive: {} ({}), {}",
                out.join(&path).display(),
                report.packing.name(),
                if report.is_valid() {
                    format!(
                        "accepted by giamsat's BagIt verifier: {} payload files, {} events with \
                         their hashes, {} document files against their records",
                        report.payload_files, report.events_checked, report.documents_checked
                    )
                } else {
                    format!(
                        "REFUSED by giamsat's BagIt verifier: {}",
                        report
                            .problems
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
            ))?;
            output::line(&format!(
                "    retention \"{DEMO_RETENTION}\", access \"{DEMO_ACCESS}\": DEMO VALUES, not \
                 confirmed for council supervision files (see config/giamsat.toml there)"
            ))?;
        }
        None => {
            ok = false;
            output::line("  Archive: no package was built")?;
        }
    }

    // Exporters and the log.
    for (id, _) in runners {
        let parked = giamsat_exporter::parked(store, id).await?;
        if !parked.is_empty() {
            ok = false;
            output::line(&format!(
                "  Exporter {id}: {} event(s) parked, the first: {}",
                parked.len(),
                parked[0].error
            ))?;
        }
    }
    let report = store.verify().await.context("verify failed")?;
    ok &= report.is_intact();
    output::line(&format!(
        "  verify: {} events, chain {} (head {} at position {})",
        report.events_checked,
        match &report.problem {
            None => "intact".to_owned(),
            Some(p) => format!("BROKEN: {p}"),
        },
        report.last_hash.to_hex(),
        report.last_position
    ))?;
    output::line(&format!(
        "  Took {:.1} s (real time).",
        started.elapsed().as_secs_f64()
    ))?;
    output::line("")?;
    output::line(&format!(
        "Look around: cd {} && giamsat case history {CASE}   (also: case show, documents list, \
         notifications list, archive verify, verify; giamsat serve runs the HTTP API on this \
         store)",
        out.display()
    ))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `giamsat serve --demo`: the demo case in the daemon's store, and the task that plays the
/// script on the daemon's simulated clock.
#[derive(Debug)]
pub struct ServeDemo {
    pub clock: Clock,
    /// The daemon's configuration with an archive exporter (demo values) when none is configured.
    pub config: Config,
    from: DateTime<Utc>,
    speed: f64,
    resumed: bool,
}

/// Creates the demo case in `store` (or resumes the one an earlier demo created there) and the
/// simulated clock the daemon runs on. A store whose case tg2024 no demo created is refused.
pub async fn prepare_serve(
    store: &Store,
    config: &Config,
    root: &Path,
    speed: f64,
) -> Result<ServeDemo> {
    if !(speed.is_finite() && speed > 0.0) {
        bail!("--demo-speed {speed} must be a positive number");
    }
    let existing = load_case(store, CASE).await?;
    let demo_store = is_demo_store(store).await?;
    let mut from = parse_time(SERVE_FROM).with_timezone(&Utc);
    let resumed = match existing {
        Some(case) if demo_store => {
            // Continue where the last run stopped.
            if let Ok(last) = DateTime::parse_from_rfc3339(&case.state.updated_at) {
                from = from.max(last.with_timezone(&Utc));
            }
            true
        }
        Some(_) => bail!(
            "the store already holds a case {CASE:?} that no demo created; `serve --demo` \
             would play its steps on it. Run the demo on a store of its own, for example \
             giamsat --db sqlite://demo.db serve --demo"
        ),
        None => {
            let (workflow, dir) = workflow_and_dir(root)?;
            let data = demo_data(&dir)?;
            mark_demo_store(store, "giamsat serve --demo").await?;
            start_demo_case(store, &workflow, data).await?;
            false
        }
    };
    // The steps before the clock's start (the plan), and on a resumed store whatever an
    // interrupted run left undone (a step already applied is recognised by its command id).
    for (index, step) in script().iter().enumerate() {
        if step.at().with_timezone(&Utc) > from {
            break;
        }
        if let Err(e) = apply(store, index, step).await {
            tracing::debug!(error = %format!("{e:#}"), "demo step not applied");
        }
    }
    let mut config = config.clone();
    if !config.exporters.iter().any(|e| e.kind == "archive") {
        let documents = config
            .exporters
            .iter()
            .find(|e| e.kind == "documents")
            .and_then(|e| e.settings.get("output"))
            .and_then(|v| v.as_str())
            .unwrap_or("documents")
            .to_owned();
        let mut settings = toml::Table::new();
        settings.insert("output".to_owned(), "archive".into());
        settings.insert("documents-output".to_owned(), documents.into());
        settings.insert("retention".to_owned(), DEMO_RETENTION.into());
        settings.insert("access".to_owned(), DEMO_ACCESS.into());
        config.exporters.push(ExporterConfig {
            id: "archive".to_owned(),
            kind: "archive".to_owned(),
            enabled: true,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            settings,
        });
    }
    Ok(ServeDemo {
        clock: Clock::Simulated(SimulatedClock::new(from, speed)),
        config,
        from,
        speed,
        resumed,
    })
}

impl ServeDemo {
    /// Says what will happen when (on standard error), gives an admin token when this start
    /// created none (a resumed demo store), and starts playing the script.
    pub async fn start(
        &self,
        store: &Store,
        url: &str,
        has_token: bool,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let day = 86_400.0 / self.speed;
        eprintln!(
            "demo: case {CASE} (Tuần Giáo 2024) {} on a simulated clock from {} at {}x (one \
             simulated day every {day:.1} s)",
            if self.resumed { "resumed" } else { "created" },
            local(self.from),
            self.speed
        );
        let steps: Vec<DateTime<Utc>> = script()
            .iter()
            .map(|s| s.at().with_timezone(&Utc))
            .collect();
        for (label, at) in [
            ("reports due (20/04/2024)", "2024-04-21T00:00:00+07:00"),
            ("visits begin (24/04/2024)", "2024-04-24T07:30:00+07:00"),
            ("findings report (27/05/2024)", "2024-05-27T08:00:00+07:00"),
            ("resolution (10/07/2024)", "2024-07-10T08:00:00+07:00"),
            ("closed (03/02/2025)", "2025-02-03T08:00:00+07:00"),
            ("archived (12/01/2026)", "2026-01-12T08:00:00+07:00"),
        ] {
            let at = parse_time(at).with_timezone(&Utc);
            if at > self.from {
                eprintln!(
                    "demo:   {label} in about {:.1} min",
                    paced_seconds(self.from, at, &steps, self.speed) / 60.0
                );
            }
        }
        eprintln!(
            "demo: open {url}/ho-so/{CASE} and sign in with the admin token (printed on \
             standard output), or follow {url}/api/cases/{CASE} (and its /history, /timers, \
             /documents) and the event stream {url}/api/events?from=1 with it"
        );
        if !has_token {
            let name = format!("demo-admin-{}", &Uuid::new_v4().simple().to_string()[..8]);
            let token = giamsat_server::create_token(
                store,
                giamsat_server::Role::Admin,
                None,
                Some(&name),
                "admin:demo",
                Utc::now(),
            )
            .await?;
            eprintln!(
                "demo: created the admin token {} ({name}) below for this demo store; it is shown \
                 only this once",
                token.info.id
            );
            output::line(&token.secret)?;
        }
        let store = store.clone();
        let clock = self.clock.clone();
        Ok(tokio::spawn(drive(store, clock, self.from)))
    }
}

/// The real seconds the paced demo clock takes from `from` to `to`: quiet stretches between the
/// steps (longer than [`QUIET`]) run [`HURRY`] times faster until [`SLOW_BEFORE`] ahead of the
/// next step.
fn paced_seconds(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    steps: &[DateTime<Utc>],
    speed: f64,
) -> f64 {
    let mut total = 0.0;
    let mut at = from;
    for &next in steps
        .iter()
        .filter(|&&t| t > from)
        .chain(std::iter::once(&to))
    {
        let end = next.min(to);
        if end <= at {
            continue;
        }
        let gap = (end - at).num_seconds() as f64;
        total += if next - at > QUIET {
            let slow = SLOW_BEFORE.num_seconds() as f64;
            let hurried = (next - at).num_seconds() as f64 - slow;
            let hurried_part = hurried.min(gap);
            hurried_part / (speed * HURRY) + (gap - hurried_part) / speed
        } else {
            gap / speed
        };
        at = end;
        if at >= to {
            break;
        }
    }
    total
}

/// Waits until the clock reaches `at`; a quiet stretch runs [`HURRY`] times faster on a
/// simulated clock, back to its own speed [`SLOW_BEFORE`] ahead of `at`.
async fn wait_for(clock: &Clock, at: DateTime<Utc>) {
    if let Clock::Simulated(sim) = clock
        && at - clock.now() > QUIET
    {
        let speed = sim.speed();
        let slow_down = at - SLOW_BEFORE;
        sim.set_speed(speed * HURRY);
        while clock.now() < slow_down {
            clock.sleep_until(slow_down).await;
        }
        sim.set_speed(speed);
    }
    while clock.now() < at {
        clock.sleep_until(at).await;
    }
}

/// Plays the script on the daemon's clock: each step after `from` when the clock reaches its
/// time (the earlier ones were played before the daemon started).
async fn drive(store: Store, clock: Clock, from: DateTime<Utc>) {
    for (index, step) in script().iter().enumerate() {
        let at = step.at().with_timezone(&Utc);
        if at <= from {
            continue;
        }
        wait_for(&clock, at).await;
        // Numbering waits for the documents exporter to render the draft first.
        let mut attempts = 0;
        loop {
            match apply(&store, index, step).await {
                Ok(applied) => {
                    eprintln!(
                        "demo: {}  {}  {}  {}",
                        local(at),
                        step.actor,
                        step.name(),
                        applied.text
                    );
                    break;
                }
                Err(e) if matches!(step.action, Action::Number(_)) && attempts < 60 => {
                    attempts += 1;
                    tracing::debug!(error = %format!("{e:#}"), "numbering waits for the documents exporter");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    eprintln!("demo: {} {} not applied: {e:#}", local(at), step.name());
                    break;
                }
            }
        }
    }
    eprintln!("demo: every step is done; the case is archived (the daemon keeps running)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_demo_hurries_through_the_quiet_months_only() {
        let from = parse_time(SERVE_FROM).with_timezone(&Utc);
        let steps: Vec<DateTime<Utc>> = script()
            .iter()
            .map(|s| s.at().with_timezone(&Utc))
            .collect();
        let linear = |to: DateTime<Utc>| (to - from).num_seconds() as f64 / DEFAULT_SPEED;
        // Up to the reports' deadline no stretch is quiet: one simulated day every 3 s.
        let due = parse_time("2024-04-21T00:00:00+07:00").with_timezone(&Utc);
        let paced = paced_seconds(from, due, &steps, DEFAULT_SPEED);
        assert!(
            (paced - linear(due)).abs() < 1e-6,
            "{paced} vs {}",
            linear(due)
        );
        // The archive: half an hour at the steady speed, a few minutes paced.
        let archived = steps.last().copied().expect("steps");
        let paced = paced_seconds(from, archived, &steps, DEFAULT_SPEED);
        assert!(linear(archived) > 25.0 * 60.0, "{}", linear(archived));
        assert!(
            (3.0 * 60.0..8.0 * 60.0).contains(&paced),
            "{paced} s to the archive"
        );
    }

    #[test]
    fn the_script_is_in_time_order_after_the_establishment() {
        let steps = script();
        let mut last = parse_time(ESTABLISHED_AT);
        for s in &steps {
            assert!(s.at() > last, "{} comes after the step before it", s.at);
            assert!(Actor::parse(s.actor).is_some(), "{}", s.actor);
            last = s.at();
        }
        assert!(parse_time(SERVE_FROM) > parse_time(ESTABLISHED_AT));
    }

    #[test]
    fn the_written_configuration_is_valid_with_demo_archive_values() {
        let config = Config::parse(&demo_config_text(), "demo/config/giamsat.toml").expect("valid");
        let kinds: Vec<&str> = config.exporters.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["documents", "notifications", "archive"]);
        let archive = &config.exporters[2].settings;
        assert_eq!(archive["retention"].as_str(), Some(DEMO_RETENTION));
        assert_eq!(archive["access"].as_str(), Some(DEMO_ACCESS));
        assert_eq!(config.store.url, "sqlite://giamsat.db");
    }

    #[test]
    fn the_demo_data_gives_every_unit_and_member_an_address_and_leaves_the_example_alone() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/giam-sat-chuyen-de");
        let before = std::fs::read_to_string(dir.join(SEED)).expect("seed");
        let data = demo_data(&dir).expect("the demo data");
        for unit in data["units"].as_array().expect("units") {
            let email = unit["email"].as_str().expect("an address");
            assert!(email.ends_with("@example.org"), "{email}");
        }
        for member in data["members"].as_array().expect("members") {
            assert!(
                member["email"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("@example.org"))
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.join(SEED)).expect("seed"),
            before
        );
    }

    #[test]
    fn a_non_empty_folder_is_refused_and_force_replaces_only_a_demos_files() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("demo");
        prepare_dir(&out, false).expect("an absent folder is fine");
        std::fs::write(out.join("notes.txt"), "mine").expect("write");
        let err = prepare_dir(&out, false).expect_err("not empty");
        assert!(err.to_string().contains("is not empty"), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        // --force with only foreign files: they stay, nothing is removed.
        prepare_dir(&out, true).expect("forced");
        assert!(out.join("notes.txt").is_file());
        // A folder named like the demo's but not written by a demo is not replaced.
        std::fs::create_dir(out.join("workflows")).expect("mkdir");
        let err = prepare_dir(&out, true).expect_err("foreign workflows/");
        assert!(err.to_string().contains("no demo wrote"), "{err}");
        assert!(out.join("workflows").is_dir());
        // With the marker, the demo's entries go and the rest stays.
        std::fs::write(out.join(DIR_MARKER), "").expect("write");
        prepare_dir(&out, true).expect("forced");
        assert!(!out.join("workflows").exists());
        assert!(!out.join(DIR_MARKER).exists());
        assert!(out.join("notes.txt").is_file());
    }
}
