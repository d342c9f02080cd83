//! Every document template of every shipped workflow renders in every golden scenario: each golden
//! case that the workflow accepts is replayed into its own case on a real SQLite store, the
//! documents exporter runs over the whole log, and nothing may be parked; every declared document
//! kind must have been produced in HTML, Markdown and DOCX.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::DateTime;
use giamsat_cases::{read_workflow_dir, run_command, start_case};
use giamsat_documents::exporter::{DocumentsExporter, read_records};
use giamsat_engine::golden::GoldenCase;
use giamsat_engine::{Actor, CommandRequest, load};
use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_store::{Store, StoreOptions};
use serde_json::{Value, json};
use uuid::Uuid;

fn workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

async fn render_every_golden_scenario(name: &str) {
    let dir = workflows().join(name);
    let workflow = load(read_workflow_dir(&dir).expect("read")).expect("valid");
    let tmp = tempfile::tempdir().expect("dir");
    let store = Store::open(
        &format!("sqlite://{}", tmp.path().join("g.db").display()),
        StoreOptions::default(),
    )
    .await
    .expect("open");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("cases"))
        .expect("cases")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let golden: GoldenCase =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).expect("case")).expect("yaml");
        if golden.then.rejection.is_some() {
            continue;
        }
        let data: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(dir.join(&golden.start)).expect("start data"),
        )
        .expect("yaml");
        let id = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        start_case(
            &store,
            &workflow,
            &id,
            data,
            Actor::parse("secretariat:x").expect("actor"),
            DateTime::parse_from_rfc3339("2024-01-01T08:00:00+07:00").expect("time"),
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
                at: DateTime::parse_from_rfc3339(&step.at).expect("time"),
            };
            run_command(&store, &id, request)
                .await
                .unwrap_or_else(|e| panic!("{id}: {}: {e}", step.command));
        }
        cases.push(id);
    }
    let out = tmp.path().join("documents");
    let exporter =
        DocumentsExporter::from_config(json!({"output": out.display().to_string()}), store.clone())
            .expect("config");
    let runner = Runner::new(
        "documents",
        store.clone(),
        Arc::new(exporter),
        RunnerOptions {
            max_attempts: 1,
            ..RunnerOptions::default()
        },
    );
    runner.run_once().await.expect("run");
    let parked = parked(&store, "documents").await.expect("parked");
    assert!(
        parked.is_empty(),
        "{name}: {}",
        parked
            .iter()
            .map(|p| format!("{} {}: {}", p.stream_id, p.event_type, p.error))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut kinds = BTreeSet::new();
    let mut count = 0;
    for case in &cases {
        for r in read_records(&store, case).await.expect("records") {
            assert_eq!(r.files.len(), 3, "{case} {}", r.document);
            for f in &r.files {
                assert!(out.join(&f.path).is_file(), "{}", f.path);
            }
            kinds.insert(r.kind);
            count += 1;
        }
    }
    let declared: BTreeSet<String> = workflow
        .definition
        .documents
        .iter()
        .map(|d| d.id.value.clone())
        .collect();
    assert_eq!(
        kinds, declared,
        "{name}: kinds rendered in the golden scenarios"
    );
    println!(
        "{name}: {count} documents rendered from {} golden scenarios",
        cases.len()
    );
}

#[tokio::test]
async fn every_supervision_document_renders_in_every_golden_scenario() {
    render_every_golden_scenario("giam-sat-chuyen-de").await;
}

#[tokio::test]
async fn every_explanation_session_document_renders_in_every_golden_scenario() {
    render_every_golden_scenario("phien-giai-trinh").await;
}
