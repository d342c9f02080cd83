//! Test support shared by giamsat's crates (a dev-dependency only): the shipped workflows and the
//! seed case, a real SQLite store in a folder, commands run as an actor at a time, the seed
//! supervision driven from its establishment to an overdue recommendation, and every accepted
//! golden scenario of a workflow replayed into a case of its own.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use giamsat_cases::{read_workflow_dir, run_command, start_case};
use giamsat_engine::golden::GoldenCase;
use giamsat_engine::{Actor, CommandRequest, Workflow, load};
use giamsat_store::{Store, StoreOptions};
use serde_json::{Value, json};
use uuid::Uuid;

/// The secretariat and the delegation of the seed case.
pub const SEC: &str = "secretariat:huyen";
pub const DEL: &str = "delegation:trong";

/// The repository's root folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A shipped workflow, loaded from `workflows/<name>`.
pub fn workflow(name: &str) -> Workflow {
    load(read_workflow_dir(&root().join("workflows").join(name)).expect("read workflow"))
        .expect("valid workflow")
}

/// A YAML (or JSON) file as a value.
pub fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seed case's start data (Tuần Giáo 2024).
pub fn seed() -> Value {
    yaml(&root().join("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml"))
}

/// A new SQLite store in `dir`.
pub async fn sqlite(dir: &Path) -> Store {
    Store::open(
        &format!("sqlite://{}", dir.join("g.db").display()),
        StoreOptions::default(),
    )
    .await
    .expect("open the store")
}

pub fn at(text: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text).expect("an RFC 3339 time")
}

/// Runs a command as `who` (ROLE:ID) at `when`; a rejection fails the test with its message.
pub async fn act(store: &Store, case: &str, who: &str, name: &str, input: Value, when: &str) {
    let request = CommandRequest {
        id: Uuid::new_v4(),
        name: name.into(),
        input,
        actor: Actor::parse(who).expect("actor"),
        at: at(when),
    };
    run_command(store, case, request)
        .await
        .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
}

/// Starts a case of `workflow` from `data` on 20/3/2024, as the secretariat.
pub async fn start(store: &Store, workflow: &Workflow, case: &str, data: Value) {
    start_case(
        store,
        workflow,
        case,
        data,
        Actor::parse(SEC).expect("actor"),
        at("2024-03-20T08:00:00+07:00"),
        Uuid::new_v4(),
    )
    .await
    .expect("start the case");
}

/// The units of the seed with the day each was visited (xã Quài Cang's visit moved to 6/5).
pub const SEED_VISITS: [(&str, &str); 9] = [
    ("thi-tran-tuan-giao", "2024-04-25"),
    ("xa-quai-to", "2024-04-26"),
    ("xa-quai-cang", "2024-05-06"),
    ("xa-quai-nua", "2024-05-02"),
    ("xa-quai-na-tong", "2024-05-03"),
    ("xa-phinh-sang", "2024-05-08"),
    ("xa-ta-ma", "2024-05-09"),
    ("phong-noi-vu", "2024-05-10"),
    ("ubnd-huyen", "2024-05-13"),
];

/// The seed case (of `workflow`, from `data`) from its establishment to an overdue
/// recommendation: plan, notice, a reminder to xã Ta Ma, xã Quài Cang's visit moved to 6/5, the
/// reports overdue, the meeting, every visit, a finding, the findings report, the resolution with
/// recommendation kn-1 due 31/12/2024, and kn-1 overdue on 2/1/2025.
pub async fn run_seed_case(store: &Store, workflow: &Workflow, case: &str, data: Value) {
    start(store, workflow, case, data).await;
    let s = store;
    act(
        s,
        case,
        SEC,
        "issue_plan",
        json!({"issued_on": "2024-03-21", "document": "ke-hoach"}),
        "2024-03-21T08:00:00+07:00",
    )
    .await;
    act(
        s,
        case,
        SEC,
        "issue_notice",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        "2024-03-25T08:00:00+07:00",
    )
    .await;
    act(
        s,
        case,
        "system:scheduler",
        "send_reminder",
        json!({"unit": "xa-ta-ma"}),
        "2024-04-17T08:00:00+07:00",
    )
    .await;
    act(s, case, SEC, "reschedule_visit", json!({"unit": "xa-quai-cang", "date": "2024-05-06", "start_time": "08:00", "reason": "Trùng lịch tiếp công dân của xã"}), "2024-04-18T08:00:00+07:00").await;
    act(
        s,
        case,
        "system:scheduler",
        "mark_reports_overdue",
        json!({}),
        "2024-04-21T00:00:00+07:00",
    )
    .await;
    act(
        s,
        case,
        DEL,
        "hold_meeting",
        json!({"held_at": "2024-04-24T07:30:00+07:00"}),
        "2024-04-24T07:30:00+07:00",
    )
    .await;
    for (unit, day) in SEED_VISITS {
        act(s, case, DEL, "record_visit", json!({"unit": unit, "held_at": format!("{day}T08:00:00+07:00"), "attendees": ["Trần Bình Trọng", "Nguyễn Thị Huyền"], "minutes_summary": "Đơn vị đã báo cáo; Đoàn đề nghị đẩy nhanh số hóa hồ sơ."}), &format!("{day}T17:00:00+07:00")).await;
    }
    act(s, case, DEL, "record_finding", json!({"id": "f1", "member": "Trần Bình Trọng", "unit": "ubnd-huyen", "text": "Tỷ lệ số hóa hồ sơ, kết quả giải quyết TTHC còn thấp."}), "2024-05-16T08:00:00+07:00").await;
    act(s, case, SEC, "issue_findings_report", json!({"issued_on": "2024-05-25", "summary": "Công tác cải cách hành chính có chuyển biến tích cực.", "recommendations": [{"id": "kn-1", "text": "Đẩy nhanh số hóa hồ sơ, kết quả giải quyết TTHC", "to": "UBND huyện"}]}), "2024-05-25T08:00:00+07:00").await;
    act(s, case, SEC, "adopt_resolution", json!({"number": "20/NQ-HĐND", "date": "2024-07-10", "recommendations": [{"id": "kn-1", "text": "Đẩy nhanh số hóa hồ sơ, kết quả giải quyết TTHC", "responsible": "UBND huyện", "deliverable": "Báo cáo kết quả số hóa", "deadline": "2024-12-31"}]}), "2024-07-10T08:00:00+07:00").await;
    act(
        s,
        case,
        "system:scheduler",
        "mark_recommendation_overdue",
        json!({"recommendation": "kn-1"}),
        "2025-01-02T00:00:00+07:00",
    )
    .await;
}

/// Replays every golden case of a shipped workflow that the workflow accepts (its `given` and
/// `when`) into a case of its own named by the file, and returns the case ids in file order.
pub async fn replay_golden_cases(store: &Store, name: &str) -> Vec<String> {
    replay_golden_cases_with(store, name, |_| {}).await
}

/// [`replay_golden_cases`] with each case's start data changed by `prepare` first (e.g. to give
/// the units e-mail addresses).
pub async fn replay_golden_cases_with(
    store: &Store,
    name: &str,
    prepare: impl Fn(&mut Value),
) -> Vec<String> {
    let dir = root().join("workflows").join(name);
    let workflow = workflow(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("cases"))
        .expect("golden cases")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let golden: GoldenCase =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).expect("case"))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if golden.then.rejection.is_some() {
            continue;
        }
        let mut data = yaml(&dir.join(&golden.start));
        prepare(&mut data);
        let id = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name")
            .to_owned();
        start_case(
            store,
            &workflow,
            &id,
            data,
            Actor::parse("secretariat:x").expect("actor"),
            at("2024-01-01T08:00:00+07:00"),
            Uuid::new_v4(),
        )
        .await
        .expect("start");
        for step in golden.given.iter().chain([&golden.when]) {
            let request = CommandRequest {
                id: Uuid::new_v4(),
                name: step.command.clone(),
                input: step.input.clone(),
                actor: Actor::parse(&step.actor).expect("actor"),
                at: at(&step.at),
            };
            run_command(store, &id, request)
                .await
                .unwrap_or_else(|e| panic!("{id}: {}: {e}", step.command));
        }
        cases.push(id);
    }
    cases
}
