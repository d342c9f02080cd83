//! `giamsat events ...` and `giamsat verify` as a user runs them.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use sqlx::Connection;

use crate::support::Sandbox;

fn head(sandbox: &Sandbox) -> usize {
    sandbox.ok(&["events", "tail"]).lines().len()
}

#[test]
fn append_read_tail_and_streams() {
    let s = Sandbox::sqlite();
    let first = s.ok(&[
        "events",
        "append",
        "case/2024/tuan-giao",
        "--type",
        "CaseEstablished",
        "--data",
        r#"{"tiêu_đề": "Giám sát cải cách hành chính", "năm": 2024}"#,
        "--expected",
        "no-stream",
    ]);
    assert_eq!(first.lines(), vec!["1"]);
    s.ok(&[
        "events",
        "append",
        "unit/noi-vu",
        "--type",
        "UnitAdded",
        "--data",
        "{}",
    ]);
    let data_file = s.write(
        "report.json",
        r#"{"đơn_vị": "Phòng Nội vụ", "ngày": "2024-04-19"}"#,
    );
    let third = s.ok(&[
        "events",
        "append",
        "case/2024/tuan-giao",
        "--type",
        "ReportReceived",
        "--data",
        &format!("@{}", data_file.display()),
        "--expected",
        "1",
        "--json",
    ]);
    let result = &third.json_lines()[0];
    assert_eq!(result["first_position"], 3);
    assert_eq!(result["stream_version"], 2);
    assert_eq!(result["duplicate"], false);

    let read = s.ok(&["events", "read", "case/2024/tuan-giao"]);
    let lines = read.lines();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("1\tcase/2024/tuan-giao@1\t"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0]
            .ends_with(r#"CaseEstablished	{"năm":2024,"tiêu_đề":"Giám sát cải cách hành chính"}"#)
    );

    let json = s.ok(&[
        "events",
        "read",
        "case/2024/tuan-giao",
        "--json",
        "--backward",
        "--limit",
        "1",
    ]);
    let events = json.json_lines();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "ReportReceived");
    assert_eq!(events[0]["data"]["đơn_vị"], "Phòng Nội vụ");
    assert_eq!(events[0]["metadata"]["actor"], "thu-ky");
    assert_eq!(events[0]["metadata"]["source"], "cli");
    assert_eq!(events[0]["hash"].as_str().map(str::len), Some(64));

    let tail = s.ok(&["events", "tail", "--from", "2", "--json"]);
    let positions: Vec<u64> = tail
        .json_lines()
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(positions, vec![2, 3]);
    let filtered = s.ok(&["events", "tail", "--type", "ReportReceived"]);
    assert_eq!(filtered.lines().len(), 1);
    let by_prefix = s.ok(&["events", "tail", "--stream-prefix", "unit/"]);
    assert_eq!(by_prefix.lines().len(), 1);

    let streams = s.ok(&["events", "streams"]);
    assert_eq!(
        streams.lines(),
        vec!["case/2024/tuan-giao\t2", "unit/noi-vu\t1"]
    );
    let cases = s.ok(&["events", "streams", "case/"]);
    assert_eq!(cases.lines(), vec!["case/2024/tuan-giao\t2"]);
}

#[test]
fn conflicts_and_idempotent_retries() {
    let s = Sandbox::sqlite();
    s.ok(&["events", "append", "case-1", "--type", "A", "--data", "{}"]);
    let conflict = s.run(&[
        "events",
        "append",
        "case-1",
        "--type",
        "B",
        "--data",
        "{}",
        "--expected",
        "no-stream",
    ]);
    conflict.fails_with(
        1,
        &[
            "case-1",
            "expected no-stream",
            "actual 1",
            "wrong expected version",
        ],
    );
    let stale = s.run(&[
        "events",
        "append",
        "case-1",
        "--type",
        "B",
        "--data",
        "{}",
        "--expected",
        "5",
    ]);
    stale.fails_with(1, &["expected 5, actual 1"]);
    assert_eq!(head(&s), 1, "a refused append writes nothing");

    let id = "0b7c3f7e-9d1e-4c55-9a57-6f1d2b3c4d5e";
    let args = [
        "events",
        "append",
        "case-2",
        "--type",
        "Noted",
        "--data",
        r#"{"a":1}"#,
        "--id",
        id,
    ];
    assert_eq!(s.ok(&args).lines(), vec!["2"]);
    assert_eq!(
        s.ok(&args).lines(),
        vec!["2"],
        "the retry returns the original position"
    );
    assert_eq!(head(&s), 2);
    let changed = s.run(&[
        "events",
        "append",
        "case-2",
        "--type",
        "Noted",
        "--data",
        r#"{"a":2}"#,
        "--id",
        id,
    ]);
    changed.fails_with(
        1,
        &[id, "already recorded at position 2", "different content"],
    );
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let s = Sandbox::sqlite();
    s.ok(&["events", "append", "case-1", "--type", "A", "--data", "{}"]);
    s.run(&[
        "events", "append", "case-1", "--type", "A", "--data", "{\"a\":",
    ])
    .fails_with(
        1,
        &["invalid --data", "data is not valid JSON", "line 1 column"],
    );
    s.run(&["events", "append", "", "--type", "A", "--data", "{}"])
        .fails_with(1, &["invalid stream id", "stream id is empty"]);
    let long = "x".repeat(300);
    s.run(&["events", "append", &long, "--type", "A", "--data", "{}"])
        .fails_with(1, &["300 bytes long, the limit is 256"]);
    s.run(&[
        "events", "append", "case-1", "--type", "A B", "--data", "{}",
    ])
    .fails_with(1, &["event type \"A B\" contains whitespace"]);
    s.run(&[
        "events",
        "append",
        "case-1",
        "--type",
        "A",
        "--data",
        "{}",
        "--expected",
        "soon",
    ])
    .fails_with(
        2,
        &["expected version \"soon\" is not any, no-stream, exists or a number"],
    );
    s.run(&[
        "events",
        "append",
        "case-1",
        "--type",
        "A",
        "--data",
        "@missing.json",
    ])
    .fails_with(1, &["cannot read event data from missing.json"]);
    s.run(&["events", "tail", "--from", "0"])
        .fails_with(1, &["--from must be a position"]);

    // A configured size limit, and a configuration mistake named by file, line and column.
    let config = s.write("small.toml", "[store]\nmax-event-size = \"1KiB\"\n");
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(2000));
    s.run(&[
        "--config",
        config.to_str().expect("path"),
        "events",
        "append",
        "case-1",
        "--type",
        "A",
        "--data",
        &big,
    ])
    .fails_with(1, &["bytes (data and metadata), the limit is 1024"]);
    let wrong = s.write(
        "wrong.toml",
        "[store]\nurl = \"sqlite://x.db\"\nmax-batchs = 3\n",
    );
    s.run(&["--config", wrong.to_str().expect("path"), "verify"])
        .fails_with(1, &["wrong.toml:3:1", "max-batchs"]);
    s.run(&["--config", "nope.toml", "verify"])
        .fails_with(1, &["cannot read configuration file nope.toml"]);
    s.run(&["--db", "mysql://localhost/x", "verify"])
        .fails_with(
            1,
            &[
                "cannot open the event store",
                "expected sqlite://PATH or postgres://",
            ],
        );
    assert_eq!(head(&s), 1, "nothing was written by any refused command");
}

#[test]
fn database_chosen_by_flag_env_or_config() {
    let s = Sandbox::sqlite();
    // The default configuration file in the working directory names the database.
    s.write(
        "config/giamsat.toml",
        "[store]\nurl = \"sqlite://from-config.db\"\n",
    );
    let mut cmd = s.command(&["events", "append", "x", "--type", "A", "--data", "{}"]);
    cmd.env_remove("GIAMSAT_DB");
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.path("from-config.db").exists());
    // --db wins over GIAMSAT_DB.
    let flag_db = format!("sqlite://{}", s.path("flag.db").display());
    s.ok(&[
        "--db", &flag_db, "events", "append", "x", "--type", "A", "--data", "{}",
    ]);
    assert!(s.path("flag.db").exists());
    assert!(
        !s.sqlite_file().exists(),
        "GIAMSAT_DB was overridden by --db"
    );
}

#[test]
fn verify_reports_the_first_altered_position() {
    let s = Sandbox::sqlite();
    for i in 0..6 {
        s.ok(&[
            "events",
            "append",
            "case-v",
            "--type",
            "Step",
            "--data",
            &format!("{{\"i\":{i}}}"),
        ]);
    }
    let intact = s.ok(&["verify"]);
    assert!(
        intact
            .stdout
            .starts_with("chain intact: 6 events, head position 6"),
        "{}",
        intact.stdout
    );
    let json = s.ok(&["verify", "--json"]).json_lines().remove(0);
    assert_eq!(json["intact"], true);
    assert_eq!(json["events_checked"], 6);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&s.db)
            .await
            .expect("connect");
        for sql in [
            "DROP TRIGGER events_no_update",
            "UPDATE events SET data = '{\"i\":40}' WHERE position = 4",
        ] {
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
        }
    });
    let broken = s.run(&["verify"]);
    broken.fails_with(3, &["first bad position 4"]);
    assert!(
        broken
            .stdout
            .starts_with("chain broken at position 4: stored hash"),
        "{}",
        broken.stdout
    );
    let json = s.run(&["verify", "--json"]);
    assert_eq!(json.code, 3);
    let report = json.json_lines().remove(0);
    assert_eq!(report["intact"], false);
    assert_eq!(report["problem"]["position"], 4);
    assert_eq!(report["problem"]["kind"], "content_changed");
}

#[test]
fn newer_schema_is_refused_by_the_cli() {
    let s = Sandbox::sqlite();
    s.ok(&["verify"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&s.db).await.expect("connect");
        sqlx::raw_sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (2, 'future', 1, X'00', 0)",
        )
        .execute(&mut conn)
        .await
        .expect("insert");
    });
    s.run(&["events", "tail"]).fails_with(
        1,
        &["database schema version 2 is newer than this binary supports (1)"],
    );
}

/// Follows the log in one process while another appends; the follower prints each event once
/// and stops cleanly on SIGTERM.
fn follow_across_processes(s: &Sandbox, config: &str) {
    let config = s.write("follow.toml", config);
    s.ok(&[
        "events", "append", "case-f", "--type", "Before", "--data", "{}",
    ]);
    let mut follower = s
        .command(&[
            "--config",
            config.to_str().expect("path"),
            "events",
            "tail",
            "--follow",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn follower");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("catch-up event");
    assert!(first.contains("\"Before\""), "{first}");
    for i in 0..3 {
        s.ok(&[
            "events",
            "append",
            "case-f",
            "--type",
            "After",
            "--data",
            &format!("{{\"i\":{i}}}"),
        ]);
    }
    for i in 0..3 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("live event");
        let event: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(event["data"]["i"], i);
        assert_eq!(event["position"], i + 2);
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = follower.wait().expect("wait");
    assert!(exit.success(), "follower exited with {exit:?}");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "no duplicates"
    );
}

#[test]
fn tail_follow_sees_appends_of_other_processes_on_sqlite() {
    let s = Sandbox::sqlite();
    follow_across_processes(&s, "[store]\npoll-interval = \"100ms\"\n");
}

#[test]
fn tail_follow_is_woken_by_postgres_notifications() {
    let Some(s) = Sandbox::postgres() else { return };
    // An hour-long poll interval: only LISTEN/NOTIFY can deliver the events in time.
    follow_across_processes(&s, "[store]\npoll-interval = \"1h\"\n");
    s.ok(&["verify"]);
}

#[test]
fn postgres_backend_from_the_cli() {
    let Some(s) = Sandbox::postgres() else { return };
    assert_eq!(
        s.ok(&[
            "events",
            "append",
            "case/pg",
            "--type",
            "A",
            "--data",
            r#"{"huyện":"Tuần Giáo"}"#,
            "--expected",
            "no-stream"
        ])
        .lines(),
        vec!["1"]
    );
    s.run(&[
        "events",
        "append",
        "case/pg",
        "--type",
        "A",
        "--data",
        "{}",
        "--expected",
        "no-stream",
    ])
    .fails_with(1, &["expected no-stream, actual 1"]);
    let read = s.ok(&["events", "read", "case/pg", "--json"]).json_lines();
    assert_eq!(read[0]["data"]["huyện"], "Tuần Giáo");
    s.ok(&["verify"]);
}
