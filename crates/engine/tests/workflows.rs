//! The shipped workflows: they load, the seed case runs through every stage, and every golden
//! case under `workflows/*/cases/` passes.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use giamsat_engine::{
    Actor, Bundle, Calendar, CaseState, CommandRequest, Workflow, decide, golden, load,
    referenced_files, start, warnings,
};
use serde_json::{Value, json};
use uuid::Uuid;

fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

fn bundle(dir: &Path) -> Bundle {
    let text = std::fs::read_to_string(dir.join("workflow.yaml")).expect("workflow.yaml");
    let files = referenced_files(&text)
        .into_iter()
        .map(|f| {
            let content = std::fs::read_to_string(dir.join(&f)).expect("referenced file");
            (f, content)
        })
        .collect();
    Bundle {
        origin: dir.join("workflow.yaml").display().to_string(),
        text,
        files,
    }
}

fn workflow(name: &str) -> Workflow {
    load(bundle(&workflows_dir().join(name))).unwrap_or_else(|p| panic!("{p}"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Runner {
    workflow: Workflow,
    state: CaseState,
    n: u128,
}

impl Runner {
    fn start(workflow: Workflow, data: Value) -> Runner {
        let mut state = CaseState::default();
        let req = CommandRequest {
            id: Uuid::from_u128(1),
            name: "start".into(),
            input: data,
            actor: Actor::parse("secretariat:huyen").expect("actor"),
            at: DateTime::parse_from_rfc3339("2024-03-20T08:00:00+07:00").expect("time"),
        };
        let event =
            start(&workflow, &state, "tuan-giao-2024", &req).unwrap_or_else(|r| panic!("{r}"));
        state.evolve(&event.data, 1);
        Runner {
            workflow,
            state,
            n: 1,
        }
    }

    fn run(
        &mut self,
        command: &str,
        actor: &str,
        at: &str,
        input: Value,
    ) -> Result<String, String> {
        self.n += 1;
        let req = CommandRequest {
            id: Uuid::from_u128(self.n),
            name: command.into(),
            input,
            actor: Actor::parse(actor).expect("actor"),
            at: DateTime::parse_from_rfc3339(at).expect("time"),
        };
        let events = decide(&self.workflow, &self.state, &req).map_err(|r| r.code.clone())?;
        for e in &events {
            self.state.evolve(&e.data, self.state.stream_version + 1);
        }
        Ok(events
            .first()
            .map(|e| e.event_type.clone())
            .unwrap_or_default())
    }

    fn ok(&mut self, command: &str, actor: &str, at: &str, input: Value) {
        if let Err(code) = self.run(command, actor, at, input) {
            panic!("{command} rejected: {code} (stage {})", self.state.stage);
        }
    }
}

#[test]
fn the_seed_case_goes_through_every_stage() {
    let wf = workflow("giam-sat-chuyen-de");
    let data = yaml(&workflows_dir().join("giam-sat-chuyen-de/examples/tuan-giao-2024.yaml"));
    let mut r = Runner::start(wf, data);
    assert_eq!(r.state.stage, "established");
    assert_eq!(r.state.entities["units"].len(), 9);
    assert_eq!(r.state.entities["visits"].len(), 9);
    let codes: Vec<String> = warnings(&r.workflow, &r.state, &Calendar::weekends_only())
        .into_iter()
        .map(|w| w.code)
        .collect();
    // 20/4/2024, the report deadline printed in the seed, is a Saturday.
    assert!(
        codes.contains(&"report_deadline_on_non_working_day".to_string()),
        "{codes:?}"
    );

    let sec = "secretariat:huyen";
    r.ok(
        "issue_notice",
        sec,
        "2024-03-25T08:00:00+07:00",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
    );
    assert_eq!(r.state.stage, "notified");
    r.ok(
        "assign_number",
        sec,
        "2024-03-26T08:00:00+07:00",
        json!({"document": "thong-bao-lich", "number": "12/TB-ĐGS"}),
    );
    r.ok("receive_report", "unit:vt@phong-noi-vu", "2024-04-18T09:00:00+07:00",
        json!({"unit": "phong-noi-vu", "received_at": "2024-04-18T09:00:00+07:00", "channel": "email",
               "phu_luc_03": [{"year": 2022, "field": "all", "total": 120, "on_time": 118}]}));
    assert_eq!(
        r.state
            .entity("units", "phong-noi-vu")
            .map(|u| u.state.as_str()),
        Some("received")
    );
    r.ok(
        "mark_reports_overdue",
        "system:scheduler",
        "2024-04-21T00:00:00+07:00",
        json!({}),
    );
    assert_eq!(r.state.stage, "reports_due");
    assert_eq!(
        r.state
            .entity("units", "xa-ta-ma")
            .map(|u| u.state.as_str()),
        Some("overdue")
    );
    r.ok(
        "receive_report",
        sec,
        "2024-04-22T10:00:00+07:00",
        json!({"unit": "xa-ta-ma", "received_at": "2024-04-22T10:00:00+07:00", "channel": "paper"}),
    );
    assert_eq!(
        r.state
            .entity("units", "xa-ta-ma")
            .map(|u| u.state.as_str()),
        Some("received_late")
    );
    r.ok(
        "hold_meeting",
        "delegation:trong",
        "2024-04-24T07:30:00+07:00",
        json!({"held_at": "2024-04-24T07:30:00+07:00"}),
    );
    assert_eq!(r.state.stage, "visits");
    let visits: Vec<String> = r.state.entities["visits"].keys().cloned().collect();
    for (i, unit) in visits.iter().enumerate() {
        assert_eq!(r.state.stage, "visits");
        if i == 3 {
            r.ok(
                "cancel_visit",
                sec,
                "2024-05-01T08:00:00+07:00",
                json!({"unit": unit, "reason": "Đơn vị xin lùi lịch"}),
            );
        } else {
            r.ok("record_visit", "delegation:trong", "2024-05-13T17:00:00+07:00",
                json!({"unit": unit, "held_at": "2024-05-13T08:00:00+07:00", "attendees": ["Trần Bình Trọng"], "minutes_summary": "Đã làm việc"}));
        }
    }
    assert_eq!(
        r.state.stage, "findings",
        "the last visit moves the case to findings"
    );
    r.ok(
        "record_finding",
        "delegation:trong",
        "2024-05-16T08:00:00+07:00",
        json!({"id": "f1", "member": "Trần Bình Trọng", "text": "Số hóa hồ sơ còn chậm"}),
    );
    r.ok("issue_findings_report", sec, "2024-05-25T08:00:00+07:00", json!({"issued_on": "2024-05-25", "summary": "Báo cáo kết quả", "recommendations": [{"id": "kn-1", "text": "Đẩy nhanh số hóa", "to": "UBND huyện"}]}));
    r.ok("adopt_resolution", sec, "2024-07-10T08:00:00+07:00", json!({"number": "20/NQ-HĐND", "date": "2024-07-10", "recommendations": [{"id": "kn-1", "text": "Đẩy nhanh số hóa", "responsible": "UBND huyện", "deliverable": "Báo cáo kết quả số hóa", "deadline": "2024-12-31"}]}));
    assert_eq!(r.state.stage, "resolution");
    assert_eq!(
        r.run(
            "close_case",
            sec,
            "2024-08-01T08:00:00+07:00",
            json!({"closed_on": "2024-08-01"})
        ),
        Err("recommendations_open".into())
    );
    r.ok("report_recommendation_progress", sec, "2024-12-20T08:00:00+07:00", json!({"recommendation": "kn-1", "status": "completed", "reported_at": "2024-12-20T08:00:00+07:00"}));
    assert_eq!(r.state.stage, "follow_up");
    r.ok(
        "close_case",
        sec,
        "2025-01-05T08:00:00+07:00",
        json!({"closed_on": "2025-01-05"}),
    );
    r.ok(
        "archive_case",
        sec,
        "2025-06-01T08:00:00+07:00",
        json!({"archived_on": "2025-06-01", "file_code": "HĐND-TG.2024.GS01"}),
    );
    assert_eq!(r.state.stage, "archived");
    let stages: Vec<&str> = r.state.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        [
            "established",
            "notified",
            "reports_due",
            "visits",
            "findings",
            "resolution",
            "follow_up",
            "closed",
            "archived"
        ]
    );
}

#[test]
fn every_golden_case_passes() {
    let mut ran = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(workflows_dir()).expect("workflows") {
        let dir = entry.expect("entry").path();
        let cases = dir.join("cases");
        if !dir.join("workflow.yaml").exists() || !cases.exists() {
            continue;
        }
        let wf = load(bundle(&dir)).unwrap_or_else(|p| panic!("{p}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cases)
            .expect("cases")
            .map(|e| e.expect("e").path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("case");
            let case: golden::GoldenCase =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let data = yaml(&dir.join(&case.start));
            if let Err(e) = golden::run(&wf, &case, &data) {
                failures.push(format!("{}: {e}", file.display()));
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 10, "only {ran} golden cases found");
}

#[test]
fn a_definition_with_wrong_references_lists_every_problem_with_its_place() {
    let text = "name: x\nversion: 1\nlabel: X\nroles: [{id: a, label: A}]\nstart: {event: Started, stage: nowhere, schema: {type: object}}\nstages: [{id: one, label: Một}]\nevents: [{type: Started, label: S}]\ncommands:\n  - id: go\n    label: Đi\n    roles: [b]\n    stages: [one, two]\n    emit: Gone\n";
    let problems = load(Bundle {
        origin: "x.yaml".into(),
        text: text.into(),
        files: Default::default(),
    })
    .expect_err("invalid");
    let lines: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("x.yaml:5:") && l.contains("unknown stage \"nowhere\"")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("x.yaml:11:") && l.contains("unknown role \"b\"")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("x.yaml:12:") && l.contains("unknown stage \"two\"")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("x.yaml:13:") && l.contains("unknown event type \"Gone\"")),
        "{lines:?}"
    );
    let parse = load(Bundle {
        origin: "y.yaml".into(),
        text: "name: x\nversion: one\n".into(),
        files: Default::default(),
    })
    .expect_err("bad");
    assert!(parse.to_string().starts_with("y.yaml:2:"), "{parse}");
}

#[test]
fn warnings_flag_days_off_and_short_notice_without_refusing() {
    let wf = workflow("giam-sat-chuyen-de");
    let data = yaml(&workflows_dir().join("giam-sat-chuyen-de/examples/tuan-giao-2024.yaml"));
    let mut r = Runner::start(wf, data);
    let codes = |r: &Runner| -> Vec<(String, Option<String>)> {
        warnings(&r.workflow, &r.state, &Calendar::weekends_only())
            .into_iter()
            .map(|w| (w.code, w.entity))
            .collect()
    };
    assert!(
        !codes(&r)
            .iter()
            .any(|(c, _)| c == "short_notice" || c == "visit_on_non_working_day")
    );
    // A notice issued on 20/4 for a meeting on 24/4: 4 days, fewer than the 10 configured.
    r.ok(
        "issue_notice",
        "secretariat:huyen",
        "2024-04-20T08:00:00+07:00",
        json!({"issued_on": "2024-04-20", "document": "tb"}),
    );
    let short = warnings(&r.workflow, &r.state, &Calendar::weekends_only())
        .into_iter()
        .find(|w| w.code == "short_notice")
        .expect("short notice");
    assert_eq!(
        short.message,
        "Thông báo lịch ngày 20/4/2024 chỉ trước buổi làm việc đầu tiên (24/4/2024) 4 ngày, ít hơn 10 ngày"
    );
    // Moving a visit to Saturday 11/5/2024 is accepted, with a warning on that visit.
    r.ok("reschedule_visit", "secretariat:huyen", "2024-04-22T08:00:00+07:00", json!({"unit": "xa-ta-ma", "date": "2024-05-11", "start_time": "08:00", "reason": "Theo đề nghị của xã"}));
    assert!(
        codes(&r).contains(&(
            "visit_on_non_working_day".to_string(),
            Some("visits/xa-ta-ma".to_string())
        )),
        "{:?}",
        codes(&r)
    );
}
