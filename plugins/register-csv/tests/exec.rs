//! The `exec` exporter with real plugin processes, under the real runner, on a real SQLite store:
//! the register-csv plugin writes its CSV in log order and exactly once (also when it crashes and
//! is restarted); a plugin that stops answering is killed and its event parked after the
//! runner's attempts; heartbeats keep a slow plugin alive; permanent errors, outcomes without an
//! id and stray lines on standard output are refused as the protocol says; failures to start name
//! the exporter, the command and the cause; and the Python example of plugins/README.md works end
//! to end (when python3 is installed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use giamsat_exporter::exec::{ExecError, ExecExporter};
use giamsat_exporter::{Exporter, Filter, Runner, RunnerOptions, parked};
use giamsat_store::{Direction, Store, StoreOptions};
use giamsat_types::{ExpectedVersion, NewEvent, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

const PLUGIN: &str = env!("CARGO_BIN_EXE_giamsat-register-csv");
const SERIES: &str = "register/hdnd-huyen-tuan-giao/2024";

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    (
        Store::open(&url, StoreOptions::default())
            .await
            .expect("open"),
        dir,
    )
}

async fn append(store: &Store, stream: &str, event_type: &str, data: Value) -> u64 {
    let stream = StreamId::new(stream.to_owned()).expect("stream");
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(event_type, &data)],
        )
        .await
        .expect("append")
        .last_position
}

/// A `DocumentRegistered` event as `giamsat documents number` appends it.
fn registered(number: u32, excerpt: &str, secret: bool) -> Value {
    json!({
        "year": 2024,
        "number": number,
        "symbol": format!("{number:02}/TB-ĐGS"),
        "secret": secret,
        "case": "tg2024",
        "document": format!("doc-{number}"),
        "version": 1,
        "kind": "thong-bao",
        "type_name": if number == 2 { "" } else { "THÔNG BÁO" },
        "date": format!("2024-03-{:02}", 20 + number),
        "excerpt": excerpt,
        "issuer": "HĐND huyện Tuần Giáo",
        "signer": "Trần Bình Trọng",
        "recipients": "Như trên",
        "actor": "secretariat:huyen",
        "at": "2024-03-25T08:00:00+07:00",
    })
}

fn options(max_attempts: u32) -> RunnerOptions {
    RunnerOptions {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

async fn start(id: &str, table: Value) -> Arc<ExecExporter> {
    Arc::new(
        ExecExporter::start(id, table)
            .await
            .unwrap_or_else(|e| panic!("start {id}: {e}")),
    )
}

fn csv(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split_terminator("\r\n")
        .map(str::to_owned)
        .collect()
}

fn row(number: u32, excerpt: &str) -> String {
    let type_name = if number == 2 {
        "Công văn"
    } else {
        "THÔNG BÁO"
    };
    format!(
        "{number:02},{number:02}/TB-ĐGS,{:02}/03/2024,{type_name},{excerpt},Trần Bình Trọng,Như trên,tg2024",
        20 + number
    )
}

const HEADER: &str = "Số,Ký hiệu,Ngày,Tên loại,Trích yếu,Người ký,Nơi nhận,Hồ sơ";

async fn stream_events(store: &Store, stream: &str) -> Vec<giamsat_types::RecordedEvent> {
    store
        .read_stream(
            &StreamId::new(stream.to_owned()).expect("stream"),
            Direction::Forward,
            Some(1),
            1000,
        )
        .await
        .expect("read")
}

#[tokio::test]
async fn the_register_is_written_in_log_order_once_per_event() {
    let (store, dir) = sqlite().await;
    let out = dir.path().join("exports/so-dang-ky.csv");
    append(
        &store,
        SERIES,
        "DocumentRegistered",
        registered(1, "Lịch giám sát", false),
    )
    .await;
    append(
        &store,
        "case/tg2024",
        "CaseEstablished",
        json!({"title": "x"}),
    )
    .await;
    append(
        &store,
        SERIES,
        "DocumentRegistered",
        registered(2, "Đôn đốc báo cáo", false),
    )
    .await;
    append(
        &store,
        &format!("{SERIES}/mat"),
        "DocumentRegistered",
        registered(1, "Báo cáo mật", true),
    )
    .await;
    append(&store, "documents/tg2024", "DocumentGenerated", json!({})).await;
    append(
        &store,
        SERIES,
        "DocumentRegistered",
        registered(3, "Kế hoạch \"giám sát\", khảo sát", false),
    )
    .await;

    let exporter = start(
        "register-csv",
        json!({"command": PLUGIN, "config": {"path": out.display().to_string()}}),
    )
    .await;
    assert_eq!(exporter.info().name, "giamsat-register-csv");
    assert_eq!(
        exporter.filter(),
        Filter {
            event_types: vec!["DocumentRegistered".to_owned()],
            stream_prefixes: vec!["register/".to_owned()],
        }
    );
    let runner = Runner::new("register-csv", store.clone(), exporter.clone(), options(3));
    assert_eq!(runner.run_once().await.expect("run"), 6);
    let status = runner.status().lock().expect("status").clone();
    assert_eq!((status.handled, status.parked, status.retries), (4, 0, 0));
    let expected = vec![
        HEADER.to_owned(),
        row(1, "Lịch giám sát"),
        row(2, "Đôn đốc báo cáo"),
        "01 (Mật),01/TB-ĐGS,21/03/2024,THÔNG BÁO,Báo cáo mật,Trần Bình Trọng,Như trên,tg2024"
            .to_owned(),
        row(3, "\"Kế hoạch \"\"giám sát\"\", khảo sát\""),
    ];
    assert_eq!(csv(&out), expected);

    // Delivered again from the start (a replay): nothing is written twice.
    runner.replay_from(1).await.expect("replay");
    runner.run_once().await.expect("run again");
    assert_eq!(csv(&out), expected);

    // A new event: one more row, by the same plugin process.
    let pid = exporter.pid().await;
    append(
        &store,
        SERIES,
        "DocumentRegistered",
        registered(4, "Biên bản", false),
    )
    .await;
    runner.run_once().await.expect("run");
    assert_eq!(csv(&out).len(), 6);
    assert_eq!(csv(&out)[5], row(4, "Biên bản"));
    assert_eq!(exporter.pid().await, pid);

    // Stopped: no process; a later delivery would start one again.
    exporter.stop().await;
    assert_eq!(exporter.pid().await, None);
    let pid = pid.expect("a pid");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the plugin (pid {pid}) still runs after stop()"
    );
}

#[tokio::test]
async fn a_crashing_plugin_is_restarted_and_every_row_is_written_once() {
    let (store, dir) = sqlite().await;
    let out = dir.path().join("register.csv");
    let excerpts: Vec<String> = (1..=7).map(|n| format!("Văn bản số {n}")).collect();
    for (n, excerpt) in (1..).zip(&excerpts) {
        append(
            &store,
            SERIES,
            "DocumentRegistered",
            registered(n, excerpt, false),
        )
        .await;
    }
    // It exits right after writing its second row, before acknowledging it: each process
    // writes two rows; the unacknowledged event comes again to the next one, which must not
    // write it again.
    let exporter = start(
        "register-csv",
        json!({
            "command": PLUGIN,
            "args": ["--crash-after", "2"],
            "restart-backoff": "10ms",
            "config": {"path": out.display().to_string()},
        }),
    )
    .await;
    let first = exporter.pid().await.expect("pid");
    let runner = Runner::new("register-csv", store.clone(), exporter.clone(), options(3));
    assert_eq!(runner.run_once().await.expect("run"), 7);
    let status = runner.status().lock().expect("status").clone();
    assert_eq!(status.parked, 0, "{status:?}");
    assert_eq!(status.handled, 7);
    assert_eq!(status.retries, 3, "crashes at rows 2, 4 and 6");
    let mut expected = vec![HEADER.to_owned()];
    expected.extend((1..).zip(&excerpts).map(|(n, e)| row(n, e)));
    assert_eq!(csv(&out), expected);
    assert_ne!(exporter.pid().await, Some(first), "a new process");
    assert!(
        parked(&store, "register-csv")
            .await
            .expect("parked")
            .is_empty()
    );
}

#[tokio::test]
async fn a_permanent_error_parks_the_event_at_once_and_the_rest_flows() {
    let (store, dir) = sqlite().await;
    let out = dir.path().join("register.csv");
    append(
        &store,
        SERIES,
        "DocumentRegistered",
        registered(1, "Một", false),
    )
    .await;
    let mut broken = registered(2, "Hai", false);
    broken.as_object_mut().expect("object").remove("symbol");
    let bad = append(&store, SERIES, "DocumentRegistered", broken).await;
    append(
        &store,
        SERIES,
        "DocumentRegistered",
        registered(3, "Ba", false),
    )
    .await;
    let exporter = start(
        "register-csv",
        json!({"command": PLUGIN, "config": {"path": out.display().to_string()}}),
    )
    .await;
    let runner = Runner::new("register-csv", store.clone(), exporter.clone(), options(5));
    runner.run_once().await.expect("run");
    let parked = parked(&store, "register-csv").await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, bad);
    assert!(parked[0].permanent);
    assert_eq!(parked[0].attempts, 1, "not retried");
    for part in ["register-csv", PLUGIN, "missing field `symbol`"] {
        assert!(
            parked[0].error.contains(part),
            "{part}: {}",
            parked[0].error
        );
    }
    assert_eq!(
        csv(&out),
        vec![HEADER.to_owned(), row(1, "Một"), row(3, "Ba")]
    );
}

/// An `exec` configuration running a shell script in `dir`.
fn script(dir: &Path, text: &str, extra: Value) -> Value {
    let mut table = json!({
        "command": "sh",
        "args": ["-c", text],
        "working-dir": dir.display().to_string(),
        "restart-backoff": "10ms",
    });
    if let (Some(t), Some(e)) = (table.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    table
}

const HANG: &str = r#"read -r hello
echo '{"type":"ready","name":"hang","version":"0","filter":{"stream_prefixes":["case/"]}}'
read -r event
echo "$$" >> pids
echo "info: working on it" >&2
exec sleep 100"#;

#[tokio::test]
async fn a_plugin_that_does_not_answer_is_killed_and_its_event_parked_after_max_attempts() {
    let (store, dir) = sqlite().await;
    let position = append(&store, "case/a", "Something", json!({"n": 1})).await;
    let exporter = start(
        "hang",
        script(dir.path(), HANG, json!({"timeout": "300ms"})),
    )
    .await;
    let runner = Runner::new("hang", store.clone(), exporter.clone(), options(2));
    runner.run_once().await.expect("run");
    let parked = parked(&store, "hang").await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, position);
    assert!(!parked[0].permanent);
    assert_eq!(parked[0].attempts, 2);
    for part in [
        "exporter hang",
        "exec plugin sh",
        "no answer within 300 ms",
        "killed",
        "info: working on it",
    ] {
        assert!(
            parked[0].error.contains(part),
            "{part}: {}",
            parked[0].error
        );
    }
    // Each attempt had a process of its own, and each was killed.
    let pids = std::fs::read_to_string(dir.path().join("pids")).expect("pids");
    let pids: Vec<&str> = pids.lines().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
}

const SLOW: &str = r#"read -r hello
echo '{"type":"ready","name":"slow","version":"0","filter":{"stream_prefixes":["case/"]}}'
while read -r line; do
  pos=$(printf '%s\n' "$line" | sed 's/^{"type":"event","event":{"position":\([0-9]*\).*/\1/')
  echo '{"type":"heartbeat"}'
  for i in 1 2 3 4 5; do sleep 0.25; echo '{"type":"heartbeat"}'; done
  echo "{\"type\":\"ack\",\"position\":$pos}"
done"#;

#[tokio::test]
async fn heartbeats_keep_a_slow_plugin_alive_past_its_timeout() {
    let (store, dir) = sqlite().await;
    append(&store, "case/a", "Something", json!({"n": 1})).await;
    append(&store, "case/a", "Something", json!({"n": 2})).await;
    let exporter = start(
        "slow",
        script(
            dir.path(),
            SLOW,
            json!({"timeout": "400ms", "heartbeat-timeout": "2s"}),
        ),
    )
    .await;
    let pid = exporter.pid().await;
    let runner = Runner::new("slow", store.clone(), exporter.clone(), options(1));
    let started = std::time::Instant::now();
    runner.run_once().await.expect("run");
    let status = runner.status().lock().expect("status").clone();
    assert_eq!((status.handled, status.parked), (2, 0), "{status:?}");
    assert!(started.elapsed() > Duration::from_millis(2 * 1250));
    assert_eq!(exporter.pid().await, pid, "never restarted");
}

const DELAYED: &str = r#"read -r hello
echo '{"type":"ready","name":"delayed","version":"0","filter":{"stream_prefixes":["case/"]}}'
while read -r line; do
  pos=$(printf '%s\n' "$line" | sed 's/^{"type":"event","event":{"position":\([0-9]*\).*/\1/')
  sleep 0.3
  echo "{\"type\":\"ack\",\"position\":$pos}"
done"#;

#[tokio::test]
async fn an_exchange_cancelled_midway_restarts_the_plugin_before_the_next_event() {
    let (store, dir) = sqlite().await;
    append(&store, "case/a", "Something", json!({"n": 1})).await;
    append(&store, "case/a", "Something", json!({"n": 2})).await;
    let events = store
        .read_all(1, None, 10, &giamsat_store::EventFilter::all())
        .await
        .expect("read");
    let exporter = start("delayed", script(dir.path(), DELAYED, json!({}))).await;
    let first = exporter.pid().await;
    // The caller gives up on the first event before the plugin answers it ...
    let cancelled =
        tokio::time::timeout(Duration::from_millis(50), exporter.export(&events[0])).await;
    assert!(cancelled.is_err(), "the plugin answers only after 300 ms");
    // ... so its late `ack` of position 1 must not be taken for the answer about position 2.
    let outcomes = exporter.export(&events[1]).await.expect("exported");
    assert!(outcomes.is_empty());
    assert_ne!(exporter.pid().await, first, "a fresh process");
}

const CHATTY: &str = r#"read -r hello
echo '{"type":"ready","name":"chatty","version":"0","filter":{"stream_prefixes":["case/"]}}'
while read -r line; do echo "debug: got an event"; done"#;

const NO_ID: &str = r#"read -r hello
echo '{"type":"ready","name":"no-id","version":"0","filter":{"stream_prefixes":["case/"]}}'
while read -r line; do
  pos=$(printf '%s\n' "$line" | sed 's/^{"type":"event","event":{"position":\([0-9]*\).*/\1/')
  echo "{\"type\":\"ack\",\"position\":$pos,\"outcomes\":[{\"stream\":\"plugin/x\",\"event_type\":\"Done\",\"data\":{}}]}"
done"#;

#[tokio::test]
async fn stray_lines_and_outcomes_without_an_id_are_refused() {
    let (store, dir) = sqlite().await;
    append(&store, "case/a", "Something", json!({"n": 1})).await;

    // A line that is not a protocol message: the plugin is restarted and the event retried;
    // the parked error quotes the line.
    let chatty = start("chatty", script(dir.path(), CHATTY, json!({}))).await;
    let first = chatty.pid().await;
    let runner = Runner::new("chatty", store.clone(), chatty.clone(), options(2));
    runner.run_once().await.expect("run");
    let list = parked(&store, "chatty").await.expect("parked");
    assert_eq!(list.len(), 1);
    assert!(!list[0].permanent);
    assert_eq!(list[0].attempts, 2);
    for part in [
        "protocol error",
        "not a protocol message",
        "\"debug: got an event\"",
    ] {
        assert!(list[0].error.contains(part), "{part}: {}", list[0].error);
    }
    assert_ne!(
        chatty.pid().await,
        first,
        "restarted after the protocol error"
    );

    // An outcome without an id: permanent, at once.
    let no_id = start("no-id", script(dir.path(), NO_ID, json!({}))).await;
    let runner = Runner::new("no-id", store.clone(), no_id.clone(), options(5));
    runner.run_once().await.expect("run");
    let list = parked(&store, "no-id").await.expect("parked");
    assert_eq!(list.len(), 1);
    assert!(list[0].permanent);
    assert_eq!(list[0].attempts, 1);
    assert!(
        list[0].error.contains("outcome 1") && list[0].error.contains("has no `id`"),
        "{}",
        list[0].error
    );
    assert!(stream_events(&store, "plugin/x").await.is_empty());
}

#[tokio::test]
async fn start_failures_name_the_exporter_the_command_and_the_cause() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("no-such-plugin");
    let err = ExecExporter::start("x", json!({"command": missing.display().to_string()}))
        .await
        .expect_err("missing program")
        .to_string();
    for part in ["exporter x", "no-such-plugin", "cannot start it"] {
        assert!(err.contains(part), "{part}: {err}");
    }

    let err = ExecExporter::start("register-csv", json!({"command": PLUGIN, "config": {}}))
        .await
        .expect_err("no path")
        .to_string();
    for part in [
        "exporter register-csv",
        "refused the handshake",
        "missing field `path`",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }

    let err = ExecExporter::start("x", json!({"command": "sh", "args": ["-c", "exit 7"]}))
        .await
        .expect_err("exits at once")
        .to_string();
    assert!(err.contains("exit status: 7"), "{err}");

    let err = ExecExporter::start("x", json!({"command": PLUGIN, "timeout": "soon"}))
        .await
        .expect_err("bad duration");
    assert!(
        matches!(err, ExecError::Config(ref m) if m.contains("soon")),
        "{err}"
    );
}

/// The ```python block of plugins/README.md.
fn readme_python() -> String {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("plugins/README.md");
    let start = text.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + text[start..].find("\n```").expect("its end");
    text[start..end].to_owned()
}

#[tokio::test]
async fn python_example_from_the_readme() {
    let available = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("skipping python_example_from_the_readme: python3 is not installed");
        return;
    }
    let (store, dir) = sqlite().await;
    let file = dir.path().join("titles.py");
    std::fs::write(&file, readme_python()).expect("write the example");
    let one = append(
        &store,
        "case/a",
        "CaseEstablished",
        json!({"title": "Việc cải cách"}),
    )
    .await;
    append(
        &store,
        "other/b",
        "Elsewhere",
        json!({"title": "not for it"}),
    )
    .await;
    let untitled = append(&store, "case/a", "Untitled", json!({})).await;
    let two = append(&store, "case/b", "Renamed", json!({"title": "Kế hoạch"})).await;

    let exporter = start(
        "titles",
        json!({
            "command": "python3",
            "args": [file.display().to_string()],
            "config": {"stream-prefix": "case/"},
        }),
    )
    .await;
    assert_eq!(exporter.info().name, "titles");
    assert_eq!(exporter.filter().stream_prefixes, vec!["case/".to_owned()]);
    let runner = Runner::new("titles", store.clone(), exporter.clone(), options(3));
    runner.run_once().await.expect("run");

    let seen = stream_events(&store, "plugin/titles").await;
    assert_eq!(seen.len(), 2);
    let events = store
        .read_all(1, None, 100, &giamsat_store::EventFilter::all())
        .await
        .expect("read");
    for (outcome, (position, title)) in seen.iter().zip([(one, "VIỆC CẢI CÁCH"), (two, "KẾ HOẠCH")])
    {
        let source = events
            .iter()
            .find(|e| e.position == position)
            .expect("source");
        assert_eq!(outcome.event_type, "TitleSeen");
        assert_eq!(
            outcome.event_id,
            Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("titles:{}", source.event_id).as_bytes()
            )
        );
        assert_eq!(
            outcome.data_value(),
            json!({"position": position, "title": title})
        );
        let meta = outcome.metadata_value();
        assert_eq!(meta.actor.as_deref(), Some("exporter:titles"));
        assert_eq!(meta.causation_id, Some(source.event_id.to_string()));
    }
    let list = parked(&store, "titles").await.expect("parked");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].position, untitled);
    assert!(
        list[0].permanent && list[0].error.contains("KeyError: 'title'"),
        "{}",
        list[0].error
    );

    // Delivered again: the deterministic ids record nothing new.
    runner.replay_from(1).await.expect("replay");
    runner.run_once().await.expect("run again");
    assert_eq!(stream_events(&store, "plugin/titles").await.len(), 2);
}
