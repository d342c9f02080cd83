//! `giamsat exporters ...` as a user runs it, with the `jsonl` exporter: run once, list with
//! lag, parked events, a failed retry, replay, and configuration errors that name the key.

use serde_json::Value;

use crate::support::Sandbox;

fn config(s: &Sandbox, extra: &str) -> String {
    let path = s.write(
        "giamsat.toml",
        &format!(
            "[[exporters]]\nid = \"file\"\ntype = \"jsonl\"\npath = \"exports/events.jsonl\"\n\
             stream-prefixes = [\"case/\"]\n{extra}"
        ),
    );
    path.display().to_string()
}

fn lines(s: &Sandbox) -> Vec<Value> {
    std::fs::read_to_string(s.path("exports/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn the_jsonl_exporter_runs_once_lists_its_lag_parks_failures_and_replays() {
    let s = Sandbox::sqlite();
    // The second exporter cannot write (a file cannot be a folder): every event is parked after
    // two attempts.
    let cfg = config(
        &s,
        "[[exporters]]\nid = \"broken\"\ntype = \"jsonl\"\npath = \"blocker/events.jsonl\"\n\
         stream-prefixes = [\"case/\"]\nmax-attempts = 2\ninitial-backoff = \"1ms\"\n",
    );
    s.write("blocker", "a file where the exporter wants a folder");
    for n in 0..3 {
        s.ok(&[
            "events",
            "append",
            "case/a",
            "--type",
            "Something",
            "--data",
            &format!("{{\"n\": {n}}}"),
        ]);
    }
    s.ok(&[
        "events",
        "append",
        "other/b",
        "--type",
        "Elsewhere",
        "--data",
        "{}",
    ]);

    let before = s
        .ok(&["--config", &cfg, "exporters", "list", "--json"])
        .json_lines();
    assert_eq!(before[0]["lag_events"], 4);
    assert_eq!(before[0]["checkpoint"], 0);

    let run = s.ok(&["--config", &cfg, "exporters", "run", "--once"]);
    assert!(
        run.stdout
            .contains("file\tcaught up to 4\thandled 3\tparked 0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("broken\tcaught up to 4\thandled 0\tparked 3"),
        "{}",
        run.stdout
    );
    let written = lines(&s);
    let positions: Vec<u64> = written
        .iter()
        .map(|l| l["position"].as_u64().expect("pos"))
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert!(written.iter().all(|l| l["stream_id"] == "case/a"));

    let list = s
        .ok(&["--config", &cfg, "exporters", "list", "--json"])
        .json_lines();
    let file = list.iter().find(|e| e["id"] == "file").expect("file");
    // Only the broken exporter's parked records follow its checkpoint.
    assert_eq!(file["checkpoint"], 4);
    assert_eq!(file["parked"], 0);
    let broken = list.iter().find(|e| e["id"] == "broken").expect("broken");
    assert_eq!(broken["parked"], 3);

    let parked = s
        .ok(&["--config", &cfg, "exporters", "parked", "broken", "--json"])
        .json_lines();
    assert_eq!(parked.len(), 3);
    assert_eq!(parked[0]["position"], 1);
    assert!(
        parked[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("blocker"),
        "{}",
        parked[0]
    );
    // Still broken: the retry fails and says why; the event stays parked.
    let id = parked[0]["id"].as_str().expect("id").to_owned();
    s.run(&["--config", &cfg, "exporters", "retry", "broken", &id])
        .fails_with(1, &["retry of", "export failed again"]);
    // Fixed: the folder can be made now, and the retry exports it.
    std::fs::remove_file(s.path("blocker")).expect("remove the blocker");
    s.ok(&["--config", &cfg, "exporters", "retry", "broken", &id]);
    let parked = s
        .ok(&["--config", &cfg, "exporters", "parked", "broken", "--json"])
        .json_lines();
    assert_eq!(parked.len(), 2);

    // Replay from position 2: events 2 and 3 are written again (at-least-once; each line says
    // its position).
    s.ok(&[
        "--config",
        &cfg,
        "exporters",
        "replay",
        "file",
        "--from",
        "2",
    ]);
    s.ok(&["--config", &cfg, "exporters", "run", "--once"]);
    let positions: Vec<u64> = lines(&s)
        .iter()
        .map(|l| l["position"].as_u64().expect("pos"))
        .collect();
    assert_eq!(positions, vec![1, 2, 3, 2, 3]);
}

#[test]
fn exporter_configuration_errors_name_the_exporter_and_the_key() {
    let s = Sandbox::sqlite();
    let cfg = config(&s, "pathh = \"typo\"\n");
    s.run(&["--config", &cfg, "exporters", "list"])
        .fails_with(1, &["[[exporters]] id = \"file\"", "pathh"]);
    let cfg = s.write(
        "other.toml",
        "[[exporters]]\nid = \"x\"\ntype = \"carrier-pigeon\"\n",
    );
    s.run(&[
        "--config",
        &cfg.display().to_string(),
        "exporters",
        "run",
        "--once",
    ])
    .fails_with(1, &["unknown type \"carrier-pigeon\"", "jsonl"]);
    let cfg = config(&s, "");
    s.run(&["--config", &cfg, "exporters", "parked", "nope"])
        .fails_with(1, &["no exporter \"nope\"", "file"]);
}
