//! `giamsat exporters run --once` with `exec` exporters: the register-csv plugin, run by the real
//! binary from a configuration file, writes the register of outgoing documents once per event
//! (also when it crashes and is restarted, and when the exporter replays), its standard error
//! reaches giamsat's log with the exporter id, and configuration mistakes name the exporter.

use std::path::{Path, PathBuf};

use crate::support::Sandbox;

/// The register-csv plugin binary. It belongs to another package (giamsat-register-csv), so this
/// test crate (package giamsat-cli) has no `CARGO_BIN_EXE_` for it: it is found next to the
/// giamsat binary, in the same target folder. `cargo test --workspace` builds every workspace
/// binary before it runs any test; running only this package's tests needs
/// `cargo build -p giamsat-register-csv` first (a stale plugin binary is used as it is).
fn plugin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_giamsat"))
        .parent()
        .expect("the target folder")
        .join(format!(
            "giamsat-register-csv{}",
            std::env::consts::EXE_SUFFIX
        ));
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (`cargo test --workspace` does, or \
         `cargo build -p giamsat-register-csv`), so that the register-csv plugin lies next to \
         the giamsat binary",
        bin.display()
    );
    bin
}

fn registered(number: u32, excerpt: &str) -> String {
    serde_json::json!({
        "year": 2024, "number": number, "symbol": format!("{number:02}/TB-ĐGS"), "secret": false,
        "case": "tg2024", "document": format!("doc-{number}"), "version": 1, "kind": "thong-bao",
        "type_name": "THÔNG BÁO", "date": format!("2024-04-{:02}", number), "excerpt": excerpt,
        "issuer": "HĐND huyện Tuần Giáo", "signer": "Trần Bình Trọng",
        "recipients": "Các xã, thị trấn", "actor": "secretariat:huyen",
        "at": "2024-04-01T08:00:00+07:00",
    })
    .to_string()
}

fn append(s: &Sandbox, stream: &str, event_type: &str, data: &str) {
    s.ok(&[
        "events", "append", stream, "--type", event_type, "--data", data,
    ]);
}

#[test]
fn exporters_run_once_drives_the_register_csv_plugin_through_crashes_and_replays() {
    let s = Sandbox::sqlite();
    let plugin = plugin();
    // Two exporters on the same plugin: a steady one, and one that crashes after every row it
    // writes (before acknowledging it), so each event costs it a restart.
    let cfg = s.write(
        "giamsat.toml",
        &format!(
            "[[exporters]]\nid = \"register-csv\"\ntype = \"exec\"\ncommand = {plugin:?}\n\
             config = {{ path = \"exports/so-dang-ky.csv\" }}\n\n\
             [[exporters]]\nid = \"flaky\"\ntype = \"exec\"\ncommand = {plugin:?}\n\
             args = [\"--crash-after\", \"1\"]\nrestart-backoff = \"1ms\"\n\
             initial-backoff = \"1ms\"\nmax-attempts = 3\n\
             config = {{ path = \"exports/flaky.csv\" }}\n",
            plugin = plugin.display().to_string()
        ),
    );
    let cfg = cfg.display().to_string();
    append(
        &s,
        "register/hdnd-huyen-tuan-giao/2024",
        "DocumentRegistered",
        &registered(1, "Lịch giám sát chuyên đề"),
    );
    append(
        &s,
        "case/tg2024",
        "CaseEstablished",
        r#"{"title": "Cải cách hành chính"}"#,
    );
    append(
        &s,
        "register/hdnd-huyen-tuan-giao/2024",
        "DocumentRegistered",
        &registered(2, "Kế hoạch \"giám sát\""),
    );

    let run = s.ok(&["--config", &cfg, "exporters", "run", "--once"]);
    for line in [
        "register-csv\tcaught up to 3\thandled 2\tparked 0",
        "flaky\tcaught up to 3\thandled 2\tparked 0",
    ] {
        assert!(run.stdout.contains(line), "{line}:\n{}", run.stdout);
    }
    // The plugin's standard error, in giamsat's log (the exporter id is a field of each line, and
    // the crash's warning quotes it).
    assert!(
        run.stderr.contains("plugin: crashing on purpose")
            && run
                .stderr
                .contains("(exporter flaky): its standard output ended"),
        "{}",
        run.stderr
    );
    let expected = "Số,Ký hiệu,Ngày,Tên loại,Trích yếu,Người ký,Nơi nhận,Hồ sơ\r\n\
        01,01/TB-ĐGS,01/04/2024,THÔNG BÁO,Lịch giám sát chuyên đề,Trần Bình Trọng,\"Các xã, thị trấn\",tg2024\r\n\
        02,02/TB-ĐGS,02/04/2024,THÔNG BÁO,\"Kế hoạch \"\"giám sát\"\"\",Trần Bình Trọng,\"Các xã, thị trấn\",tg2024\r\n";
    let read = |name: &str| std::fs::read_to_string(s.path(name)).expect("the CSV");
    assert_eq!(read("exports/so-dang-ky.csv"), expected);
    assert_eq!(read("exports/flaky.csv"), expected);

    let list = s
        .ok(&["--config", &cfg, "exporters", "list", "--json"])
        .json_lines();
    for e in &list {
        assert_eq!(e["type"], "exec");
        assert_eq!(e["checkpoint"], 3);
        assert_eq!(e["lag_events"], 0);
        assert_eq!(e["parked"], 0);
    }

    // Delivered again from the start: the plugin acknowledges without writing twice.
    s.ok(&[
        "--config",
        &cfg,
        "exporters",
        "replay",
        "register-csv",
        "--from",
        "1",
    ]);
    let run = s.ok(&["--config", &cfg, "exporters", "run", "--once"]);
    assert!(
        run.stdout
            .contains("register-csv\tcaught up to 3\thandled 2\tparked 0"),
        "{}",
        run.stdout
    );
    assert_eq!(read("exports/so-dang-ky.csv"), expected);

    // A new number: one more row.
    append(
        &s,
        "register/hdnd-huyen-tuan-giao/2024",
        "DocumentRegistered",
        &registered(3, "Biên bản làm việc"),
    );
    s.ok(&["--config", &cfg, "exporters", "run", "--once"]);
    let rows = read("exports/so-dang-ky.csv");
    assert_eq!(rows.lines().count(), 4);
    assert!(rows.ends_with(
        "03,03/TB-ĐGS,03/04/2024,THÔNG BÁO,Biên bản làm việc,Trần Bình Trọng,\"Các xã, thị trấn\",tg2024\r\n"
    ));
}

#[test]
fn exec_configuration_mistakes_name_the_exporter_the_command_and_the_cause() {
    let s = Sandbox::sqlite();
    let plugin = plugin().display().to_string();
    let cfg = s.write(
        "missing.toml",
        "[[exporters]]\nid = \"reg\"\ntype = \"exec\"\ncommand = \"bin/no-such-plugin\"\n",
    );
    s.run(&[
        "--config",
        &cfg.display().to_string(),
        "exporters",
        "run",
        "--once",
    ])
    .fails_with(
        1,
        &[
            "[[exporters]] id = \"reg\" (type exec)",
            "no-such-plugin",
            "cannot start it",
        ],
    );
    let cfg = s.write(
        "typo.toml",
        &format!(
            "[[exporters]]\nid = \"reg\"\ntype = \"exec\"\ncommand = {plugin:?}\ntimout = \"1s\"\n"
        ),
    );
    s.run(&["--config", &cfg.display().to_string(), "exporters", "list"])
        .fails_with(1, &["[[exporters]] id = \"reg\"", "timout"]);
    let cfg = s.write(
        "refused.toml",
        &format!("[[exporters]]\nid = \"reg\"\ntype = \"exec\"\ncommand = {plugin:?}\n"),
    );
    s.run(&["--config", &cfg.display().to_string(), "exporters", "list"])
        .fails_with(
            1,
            &[
                "id = \"reg\"",
                "refused the handshake",
                "missing field `path`",
            ],
        );
}
