//! Every document template of every shipped workflow renders in every golden scenario: each golden
//! case that the workflow accepts is replayed into its own case on a real SQLite store, the
//! documents exporter runs over the whole log, and nothing may be parked; every declared document
//! kind must have been produced in HTML, Markdown and DOCX.

use std::collections::BTreeSet;
use std::sync::Arc;

use giamsat_documents::exporter::{DocumentsExporter, read_records};
use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_testkit as testkit;
use serde_json::json;

async fn render_every_golden_scenario(name: &str) {
    let workflow = testkit::workflow(name);
    let tmp = tempfile::tempdir().expect("dir");
    let store = testkit::sqlite(tmp.path()).await;
    let cases = testkit::replay_golden_cases(&store, name).await;
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
