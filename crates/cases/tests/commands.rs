//! Commands through the real store: concurrent commands on one case all land (optimistic
//! concurrency with retries), a rejected command appends nothing, and a repeated command id is
//! applied once.

use std::path::Path;

use chrono::DateTime;
use giamsat_cases::{
    CaseCache, CaseError, load_case, read_workflow_dir, run_command, run_command_cached, start_case,
};
use giamsat_engine::{Actor, CommandRequest, Workflow, load};
use giamsat_store::{Store, StoreOptions};
use serde_json::{Value, json};
use uuid::Uuid;

fn workflow() -> Workflow {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/giam-sat-chuyen-de");
    load(read_workflow_dir(&dir).expect("read")).expect("valid")
}

fn seed() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("example")).expect("yaml")
}

fn request(name: &str, input: Value, at: &str) -> CommandRequest {
    CommandRequest {
        id: Uuid::new_v4(),
        name: name.into(),
        input,
        actor: Actor::parse("secretariat:huyen").expect("actor"),
        at: DateTime::parse_from_rfc3339(at).expect("time"),
    }
}

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut out = vec![(
        Store::open(&url, StoreOptions::default())
            .await
            .expect("open"),
        Some(dir),
    )];
    if let Ok(base) = std::env::var("GIAMSAT_TEST_POSTGRES_URL") {
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}schema=cases_{}", Uuid::new_v4().simple());
        out.push((
            Store::open(&url, StoreOptions::default())
                .await
                .expect("open pg"),
            None,
        ));
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "GIAMSAT_TEST_POSTGRES_URL must be set in CI"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_case_all_land() {
    let wf = workflow();
    for (store, _dir) in stores().await {
        let actor = Actor::parse("secretariat:huyen").expect("actor");
        let at = DateTime::parse_from_rfc3339("2024-03-20T08:00:00+07:00").expect("time");
        start_case(&store, &wf, "tg", seed(), actor, at, Uuid::new_v4())
            .await
            .expect("start");
        run_command(
            &store,
            "tg",
            request(
                "issue_notice",
                json!({"issued_on": "2024-03-25", "document": "tb"}),
                "2024-03-25T08:00:00+07:00",
            ),
        )
        .await
        .expect("notice");
        let case = load_case(&store, "tg").await.expect("load").expect("case");
        let units: Vec<String> = case.state.entities["units"].keys().cloned().collect();
        let mut tasks = Vec::new();
        for unit in units.clone() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let input = json!({"unit": unit, "received_at": "2024-04-18T09:00:00+07:00", "channel": "email"});
                run_command(&store, "tg", request("receive_report", input, "2024-04-18T09:00:00+07:00")).await
            }));
        }
        for t in tasks {
            t.await
                .expect("join")
                .expect("every report lands despite the races");
        }
        let case = load_case(&store, "tg").await.expect("load").expect("case");
        assert_eq!(case.state.stream_version, 2 + units.len() as u64);
        assert!(
            case.state.entities["units"]
                .values()
                .all(|u| u.state == "received")
        );

        // A rejected command appends nothing.
        let err = run_command(
            &store,
            "tg",
            request(
                "archive_case",
                json!({"archived_on": "2024-05-01", "file_code": "x"}),
                "2024-05-01T08:00:00+07:00",
            ),
        )
        .await
        .expect_err("wrong stage");
        assert!(
            matches!(err, CaseError::Rejected(ref r) if r.code == "wrong_stage"),
            "{err}"
        );
        // The same command id twice is applied once.
        let mut again = request(
            "hold_meeting",
            json!({"held_at": "2024-04-24T07:30:00+07:00"}),
            "2024-04-24T07:30:00+07:00",
        );
        again.id = Uuid::from_u128(42);
        let (_, first) = run_command(&store, "tg", again.clone())
            .await
            .expect("meeting");
        let (after, second) = run_command(&store, "tg", again).await.expect("repeat");
        assert_eq!((first.len(), second.len()), (1, 0));
        assert_eq!(after.state.stream_version, 3 + units.len() as u64);
        assert!(store.verify().await.expect("verify").is_intact());
        store.close().await;
    }
}

#[tokio::test]
async fn the_case_cache_catches_up_with_appends_from_elsewhere_and_keeps_the_newest() {
    let wf = workflow();
    let actor = Actor::parse("secretariat:huyen").expect("actor");
    let at = DateTime::parse_from_rfc3339("2024-03-20T08:00:00+07:00").expect("t");
    for (store, _dir) in stores().await {
        for id in ["a", "b", "c"] {
            start_case(&store, &wf, id, seed(), actor.clone(), at, Uuid::new_v4())
                .await
                .expect("start");
        }
        let cache = CaseCache::new(2);
        let kept = cache.load(&store, "a").await.expect("load").expect("a");
        assert_eq!(kept.state.stream_version, 1);
        // Another process (here: a command straight on the store) appends to the case.
        run_command(
            &store,
            "a",
            request(
                "issue_notice",
                json!({"issued_on": "2024-03-25", "document": "tb"}),
                "2024-03-25T08:00:00+07:00",
            ),
        )
        .await
        .expect("notice");
        // Asked for a version it holds, the cache answers without reading; `load` reads what
        // was appended since, and gives what a full read gives.
        let old = cache
            .load_at_least(&store, "a", 1)
            .await
            .expect("load")
            .expect("a");
        assert_eq!(old.state.stream_version, 1);
        let now = cache.load(&store, "a").await.expect("load").expect("a");
        let full = load_case(&store, "a").await.expect("load").expect("a");
        assert_eq!(now.state.stream_version, full.state.stream_version);
        assert_eq!(now.state.stage, "notified");
        assert_eq!(
            serde_json::to_value(&now.state).expect("json"),
            serde_json::to_value(&full.state).expect("json")
        );
        assert_eq!(now.events.len(), full.events.len());
        // An older state never replaces a newer one.
        cache.insert(old);
        let again = cache
            .load_at_least(&store, "a", 2)
            .await
            .expect("load")
            .expect("a");
        assert_eq!(again.state.stream_version, 2);
        // A command through the cache answers with the case after it.
        let (after, events) = run_command_cached(
            &store,
            &cache,
            &wf,
            again,
            request(
                "send_reminder",
                json!({"unit": "xa-ta-ma"}),
                "2024-04-16T08:00:00+07:00",
            ),
        )
        .await
        .expect("reminder");
        assert_eq!(events.len(), 1);
        assert_eq!(after.state.stream_version, 3);
        // Two cases at most: the least recently used goes, and comes back from the store.
        cache.load(&store, "b").await.expect("load");
        cache.load(&store, "c").await.expect("load");
        let back = cache.load(&store, "a").await.expect("load").expect("a");
        assert_eq!(back.state.stream_version, 3);
        assert!(cache.load(&store, "nope").await.expect("load").is_none());
    }
}
