//! `giamsat workflow ...` and `giamsat case ...` as a user runs them: the seed case taken through
//! every stage from the command line, rejections, bad input files and broken definitions.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::Sandbox;

fn workflows() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

fn seed() -> String {
    workflows()
        .join("giam-sat-chuyen-de/examples/tuan-giao-2024.yaml")
        .display()
        .to_string()
}

/// Runs `giamsat --workflows <repo>/workflows ARGS`.
fn gs(s: &Sandbox, args: &[&str]) -> crate::support::Run {
    let w = workflows().display().to_string();
    let mut all = vec!["--workflows", w.as_str()];
    all.extend_from_slice(args);
    s.run(&all)
}

fn ok(s: &Sandbox, args: &[&str]) -> crate::support::Run {
    let run = gs(s, args);
    assert_eq!(
        run.code, 0,
        "giamsat {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Copies a folder with everything in it (a workflow: definition, schemas, templates...).
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = dst.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

fn show(s: &Sandbox, case: &str) -> Value {
    ok(s, &["case", "show", case, "--json"])
        .json_lines()
        .remove(0)
}

#[test]
fn shipped_workflows_check_list_and_graph() {
    let s = Sandbox::sqlite();
    let check = ok(&s, &["workflow", "check"]);
    assert!(
        check.stdout.contains("ok giam-sat-chuyen-de version 1"),
        "{}",
        check.stdout
    );
    let list = ok(&s, &["workflow", "list"]);
    assert!(
        list.stdout.contains("giam-sat-chuyen-de\t1\t"),
        "{}",
        list.stdout
    );
    let mermaid = ok(
        &s,
        &[
            "workflow",
            "graph",
            "giam-sat-chuyen-de",
            "--format",
            "mermaid",
        ],
    );
    assert!(mermaid.stdout.starts_with("stateDiagram-v2"));
    assert!(
        mermaid
            .stdout
            .contains("established --> notified: issue_notice"),
        "{}",
        mermaid.stdout
    );
    assert!(
        mermaid.stdout.contains("visits --> findings"),
        "{}",
        mermaid.stdout
    );
    let dot = ok(
        &s,
        &["workflow", "graph", "giam-sat-chuyen-de", "--format", "dot"],
    );
    assert!(
        dot.stdout
            .contains("\"notified\" -> \"reports_due\" [label=\"mark_reports_overdue\"]"),
        "{}",
        dot.stdout
    );
}

#[test]
fn a_broken_definition_lists_every_problem_with_its_place() {
    let s = Sandbox::sqlite();
    s.write(
        "broken/workflow.yaml",
        "name: broken\nversion: 1\nlabel: Hỏng\nroles: [{id: a, label: A}]\n\
         start: {event: Started, stage: nowhere, schema: {type: object}}\n\
         stages: [{id: one, label: Một}]\nevents: [{type: Started, label: S}]\n\
         commands:\n  - id: go\n    label: Đi\n    roles: [b]\n    stages: [one]\n    emit: Gone\n",
    );
    let path = s.path("broken").display().to_string();
    let run = s.run(&["workflow", "check", &path]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("workflow.yaml:5:") && run.stderr.contains("unknown stage \"nowhere\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("workflow.yaml:11:") && run.stderr.contains("unknown role \"b\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("workflow.yaml:13:")
            && run.stderr.contains("unknown event type \"Gone\""),
        "{}",
        run.stderr
    );
}

#[test]
fn the_seed_case_goes_through_every_stage_from_the_cli() {
    let s = Sandbox::sqlite();
    let seed = seed();
    let sec = "secretariat:huyen";
    let start = ok(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed,
            "--id",
            "tg2024",
            "--as",
            sec,
            "--at",
            "2024-03-20T08:00:00+07:00",
        ],
    );
    assert_eq!(start.lines(), vec!["tg2024"]);
    let case = show(&s, "tg2024");
    assert_eq!(case["stage"], "established");
    assert_eq!(case["workflow"], "giam-sat-chuyen-de");
    assert_eq!(case["version"], 1);
    assert_eq!(
        case["entities"]["units"].as_object().map(|u| u.len()),
        Some(9)
    );
    assert_eq!(
        case["entities"]["visits"]["xa-quai-to"]["data"]["date"],
        "2024-04-26"
    );
    let codes: Vec<&str> = case["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"report_deadline_on_non_working_day"),
        "{codes:?}"
    );
    assert!(case["warnings"][0]["message"].as_str().is_some());

    let step = |args: &[&str]| ok(&s, args);
    step(&[
        "case",
        "do",
        "tg2024",
        "issue_notice",
        "--set",
        "issued_on=2024-03-25",
        "--set",
        "document=thong-bao-lich",
        "--as",
        sec,
        "--at",
        "2024-03-25T08:00:00+07:00",
    ]);
    let report = s.write("report.yaml", "unit: phong-noi-vu\nreceived_at: \"2024-04-18T09:00:00+07:00\"\nchannel: email\nphu_luc_03:\n  - { year: 2022, field: all, total: 120, on_time: 118 }\n");
    step(&[
        "case",
        "do",
        "tg2024",
        "receive_report",
        "--data",
        report.to_str().expect("path"),
        "--as",
        "unit:van-thu@phong-noi-vu",
        "--at",
        "2024-04-18T09:00:00+07:00",
    ]);
    step(&[
        "case",
        "do",
        "tg2024",
        "mark_reports_overdue",
        "--as",
        "system:scheduler",
        "--at",
        "2024-04-21T00:00:00+07:00",
    ]);
    step(&[
        "case",
        "do",
        "tg2024",
        "hold_meeting",
        "--set",
        "held_at=2024-04-24T07:30:00+07:00",
        "--as",
        "delegation:trong",
        "--at",
        "2024-04-24T07:30:00+07:00",
    ]);
    let case = show(&s, "tg2024");
    assert_eq!(case["stage"], "visits");
    assert_eq!(
        case["entities"]["units"]["phong-noi-vu"]["state"],
        "received"
    );
    assert_eq!(case["entities"]["units"]["xa-ta-ma"]["state"], "overdue");
    let visits: Vec<String> = case["entities"]["visits"]
        .as_object()
        .expect("visits")
        .keys()
        .cloned()
        .collect();
    for unit in &visits {
        step(&[
            "case",
            "do",
            "tg2024",
            "record_visit",
            "--set",
            &format!("unit={unit}"),
            "--set",
            "held_at=2024-05-13T08:00:00+07:00",
            "--set",
            "attendees=[\"Trần Bình Trọng\"]",
            "--set",
            "minutes_summary=Đã làm việc với đơn vị",
            "--as",
            "delegation:trong",
            "--at",
            "2024-05-13T17:00:00+07:00",
        ]);
    }
    assert_eq!(show(&s, "tg2024")["stage"], "findings");
    step(&[
        "case",
        "do",
        "tg2024",
        "record_finding",
        "--set",
        "id=f1",
        "--set",
        "member=Trần Bình Trọng",
        "--set",
        "text=Số hóa hồ sơ còn chậm",
        "--as",
        "delegation:trong",
        "--at",
        "2024-05-16T08:00:00+07:00",
    ]);
    step(&[
        "case",
        "do",
        "tg2024",
        "issue_findings_report",
        "--set",
        "issued_on=2024-05-25",
        "--set",
        "summary=Báo cáo kết quả giám sát",
        "--set",
        "recommendations=[{\"id\":\"kn-1\",\"text\":\"Đẩy nhanh số hóa\",\"to\":\"UBND huyện\"}]",
        "--as",
        sec,
        "--at",
        "2024-05-25T08:00:00+07:00",
    ]);
    step(&[
        "case",
        "do",
        "tg2024",
        "adopt_resolution",
        "--set",
        "number=20/NQ-HĐND",
        "--set",
        "date=2024-07-10",
        "--set",
        "recommendations=[{\"id\":\"kn-1\",\"text\":\"Đẩy nhanh số hóa\",\"responsible\":\"UBND huyện\",\"deliverable\":\"Báo cáo\",\"deadline\":\"2024-12-31\"}]",
        "--as",
        sec,
        "--at",
        "2024-07-10T08:00:00+07:00",
    ]);
    assert_eq!(show(&s, "tg2024")["stage"], "resolution");

    // Closing with an open recommendation is a rejection: exit 2, codes and both languages.
    let refused = gs(
        &s,
        &[
            "case",
            "do",
            "tg2024",
            "close_case",
            "--set",
            "closed_on=2024-08-01",
            "--as",
            sec,
            "--at",
            "2024-08-01T08:00:00+07:00",
        ],
    );
    refused.fails_with(
        2,
        &[
            "rejected: recommendations_open",
            "Còn kiến nghị chưa hoàn thành",
            "some recommendations are not settled",
        ],
    );

    let id = "5f0c8a53-8b8e-4d6c-9a61-1d2a3b4c5d6e";
    let progress = [
        "case",
        "do",
        "tg2024",
        "report_recommendation_progress",
        "--set",
        "recommendation=kn-1",
        "--set",
        "status=completed",
        "--set",
        "reported_at=2024-12-20T08:00:00+07:00",
        "--command-id",
        id,
        "--as",
        sec,
        "--at",
        "2024-12-20T08:00:00+07:00",
    ];
    step(&progress);
    let again = step(&progress);
    assert_eq!(
        again.lines(),
        vec!["already applied: nothing to do"],
        "the same command id is applied once"
    );
    step(&[
        "case",
        "do",
        "tg2024",
        "close_case",
        "--set",
        "closed_on=2025-01-05",
        "--as",
        sec,
        "--at",
        "2025-01-05T08:00:00+07:00",
    ]);
    step(&[
        "case",
        "do",
        "tg2024",
        "archive_case",
        "--set",
        "archived_on=2025-06-01",
        "--set",
        "file_code=HĐND-TG.2024.GS01",
        "--as",
        sec,
        "--at",
        "2025-06-01T08:00:00+07:00",
    ]);

    let case = show(&s, "tg2024");
    assert_eq!(case["stage"], "archived");
    let stages: Vec<&str> = case["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|x| x["stage"].as_str())
        .collect();
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

    let history = ok(&s, &["case", "history", "tg2024"]);
    assert_eq!(
        history.lines().len() as u64,
        case["stream_version"].as_u64().expect("version")
    );
    assert!(
        history.lines()[0].contains("CaseEstablished\tsecretariat:huyen\tstart"),
        "{}",
        history.stdout
    );
    let events = ok(&s, &["case", "history", "tg2024", "--json"]).json_lines();
    assert!(
        events
            .iter()
            .all(|e| e["metadata"]["actor"].is_string() && e["data"]["at"].is_string())
    );
    let list = ok(&s, &["case", "list", "--json"]).json_lines();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["stage"], "archived");
    s.ok(&["verify"]);
}

#[test]
fn case_input_errors_are_located_and_nothing_is_written() {
    let s = Sandbox::sqlite();
    let bad = s.write("bad.yaml", "level: huyện\nunits: [\n");
    let run = gs(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            bad.to_str().expect("path"),
            "--id",
            "x",
        ],
    );
    run.fails_with(1, &["bad.yaml:"]);
    let incomplete = s.write("incomplete.yaml", "level: huyện\n");
    let run = gs(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            incomplete.to_str().expect("path"),
            "--id",
            "x",
        ],
    );
    run.fails_with(2, &["rejected: invalid_input"]);
    gs(&s, &["case", "show", "nope"]).fails_with(1, &["case \"nope\" does not exist"]);
    gs(
        &s,
        &["case", "start", "no-such-workflow", "--data", &seed()],
    )
    .fails_with(1, &["no valid workflow named \"no-such-workflow\""]);
    gs(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed(),
            "--id",
            "bad id",
        ],
    )
    .fails_with(1, &["invalid case id"]);
    ok(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed(),
            "--id",
            "a",
        ],
    );
    gs(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed(),
            "--id",
            "a",
        ],
    )
    .fails_with(2, &["rejected: case_exists"]);
    gs(&s, &["case", "do", "a", "fly", "--as", "secretariat:x"])
        .fails_with(2, &["rejected: unknown_command"]);
    gs(
        &s,
        &[
            "case",
            "do",
            "a",
            "issue_notice",
            "--set",
            "issued_on=25/3/2024",
            "--set",
            "document=tb",
            "--as",
            "secretariat:x",
        ],
    )
    .fails_with(2, &["rejected: invalid_input", "/issued_on"]);
    assert_eq!(
        show(&s, "a")["stream_version"],
        1,
        "rejected commands append nothing"
    );
}

#[test]
fn a_running_case_keeps_the_definition_it_started_with() {
    let s = Sandbox::sqlite();
    // A private copy of the workflow that this test edits after a case has started.
    let src = workflows().join("giam-sat-chuyen-de");
    let dst = s.path("wf/giam-sat-chuyen-de");
    copy_dir(&src, &dst);
    let wf = s.path("wf").display().to_string();
    let data = dst
        .join("examples/tuan-giao-2024.yaml")
        .display()
        .to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--workflows", wf.as_str()];
        all.extend_from_slice(args);
        s.run(&all)
    };
    assert_eq!(
        run(&[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &data,
            "--id",
            "old",
            "--as",
            "secretariat:a"
        ])
        .code,
        0
    );
    let old_hash = show(&s, "old")["definition_hash"].clone();
    // The same definition read through another path is the same pinned definition.
    let relative = s.run(&[
        "--workflows",
        "wf",
        "case",
        "start",
        "giam-sat-chuyen-de",
        "--data",
        &data,
        "--id",
        "old2",
        "--as",
        "secretariat:a",
    ]);
    assert_eq!(relative.code, 0, "{}", relative.stderr);
    assert_eq!(show(&s, "old2")["definition_hash"], old_hash);

    // Version 2 renames issue_notice to thong_bao_lich.
    let text = std::fs::read_to_string(dst.join("workflow.yaml")).expect("read");
    let v2 = text
        .replace("version: 1", "version: 2")
        .replace("id: issue_notice", "id: thong_bao_lich");
    std::fs::write(dst.join("workflow.yaml"), v2).expect("write");
    assert_eq!(
        run(&[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &data,
            "--id",
            "new",
            "--as",
            "secretariat:a"
        ])
        .code,
        0
    );
    let new = show(&s, "new");
    assert_eq!(new["version"], 2);
    assert_ne!(new["definition_hash"], old_hash);

    // The old case still runs version 1's commands; the new one runs version 2's.
    let notice = [
        "--set",
        "issued_on=2024-03-25",
        "--set",
        "document=thong-bao-lich",
        "--as",
        "secretariat:a",
    ];
    let mut old_cmd = vec!["case", "do", "old", "issue_notice"];
    old_cmd.extend_from_slice(&notice);
    assert_eq!(
        run(&old_cmd).code,
        0,
        "version 1 still applies to the old case"
    );
    let mut new_cmd = vec!["case", "do", "new", "issue_notice"];
    new_cmd.extend_from_slice(&notice);
    run(&new_cmd).fails_with(2, &["rejected: unknown_command"]);
    let mut renamed = vec!["case", "do", "new", "thong_bao_lich"];
    renamed.extend_from_slice(&notice);
    assert_eq!(run(&renamed).code, 0);
    assert_eq!(show(&s, "old")["version"], 1);
}

#[test]
fn case_warnings_use_the_holiday_calendar() {
    let s = Sandbox::sqlite();
    ok(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed(),
            "--id",
            "tg",
        ],
    );
    // Without calendar files only weekends count, and the case says so.
    let codes = |case: &Value| -> Vec<(String, String)> {
        case["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .map(|w| {
                (
                    w["code"].as_str().unwrap_or_default().to_owned(),
                    w["entity"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let before = codes(&show(&s, "tg"));
    assert!(
        before.contains(&("calendar_year_missing".into(), String::new())),
        "{before:?}"
    );
    assert!(!before.iter().any(|(c, _)| c == "visit_on_non_working_day"));
    // 2024: Monday 29/4 was given off in exchange for Saturday 4/5 (DOMAIN.md §4); the seed
    // scheduled the visit to xã Quài Cang on 29/4/2024.
    s.write(
        "config/calendars/2024.toml",
        "year = 2024\n[[holidays]]\nname = \"Ngày Chiến thắng và Quốc tế Lao động\"\nfrom = 2024-04-27\nto = 2024-05-01\n\
         [[make_up_days]]\ndate = 2024-05-04\nreplaces = 2024-04-29\nname = \"Làm bù ngày 29/4\"\n",
    );
    let case = show(&s, "tg");
    let after = codes(&case);
    assert!(
        after.contains(&(
            "visit_on_non_working_day".into(),
            "visits/xa-quai-cang".into()
        )),
        "{after:?}"
    );
    assert!(
        !after.iter().any(|(c, _)| c == "calendar_year_missing"),
        "{after:?}"
    );
    let message = case["warnings"]
        .as_array()
        .expect("w")
        .iter()
        .find(|w| w["code"] == "visit_on_non_working_day")
        .expect("w")["message"]
        .clone();
    assert_eq!(
        message,
        "Buổi giám sát tại xa-quai-cang vào ngày 29/4/2024 không phải ngày làm việc"
    );
    // The schedule itself is unchanged: a warning never moves anything.
    assert_eq!(
        case["entities"]["visits"]["xa-quai-cang"]["data"]["date"],
        "2024-04-29"
    );
}

#[test]
fn calendar_commands_show_days_off_and_count_working_days() {
    let s = Sandbox::sqlite();
    let calendars = workflows()
        .join("../config/calendars")
        .display()
        .to_string();
    let config = s.write("cal.toml", &format!("[calendar]\ndir = \"{calendars}\"\n"));
    let config = config.to_str().expect("path");
    let check = s.ok(&["--config", config, "calendar", "check", "2024"]);
    assert!(
        check
            .lines()
            .contains(&"2024-04-29\tday off\tNgày Chiến thắng 30/4 và Ngày Quốc tế Lao động 1/5"),
        "{}",
        check.stdout
    );
    assert!(
        check.lines().contains(&"2024-05-04\tworking (make-up day)"),
        "{}",
        check.stdout
    );
    let days = s.ok(&[
        "--config",
        config,
        "calendar",
        "workdays",
        "2024-04-25",
        "2024-05-06",
    ]);
    assert_eq!(
        days.lines(),
        [
            "2024-04-25",
            "2024-04-26",
            "2024-05-02",
            "2024-05-03",
            "2024-05-04",
            "2024-05-06",
            "6 working days"
        ]
    );
    let none = s.ok(&["calendar", "check", "2030"]);
    assert!(
        none.stdout.contains("2030: no calendar file"),
        "{}",
        none.stdout
    );
    s.run(&["calendar", "workdays", "2024-05-06", "2024-05-01"])
        .fails_with(1, &["is before"]);
    s.run(&["calendar", "workdays", "6/5/2024", "2024-05-07"])
        .fails_with(1, &["is not a date (YYYY-MM-DD)"]);
}
