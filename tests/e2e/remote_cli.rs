//! `giamsat --server URL --token TOKEN case ...|documents ...`: the same commands through a
//! running `giamsat serve` (the real binary, in the background on 127.0.0.1 with a port of its
//! choosing) as on a database, compared line for line with the same commands run directly on a
//! second database; rejections exit 2 with the same messages; usage and access errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{Daemon, PATIENCE, Run, Sandbox};

const AT: &str = "2024-03-25T08:00:00+07:00";

fn workflows() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows")
        .display()
        .to_string()
}

fn seed() -> String {
    format!(
        "{}/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml",
        workflows()
    )
}

/// Runs `giamsat --workflows <repo>/workflows ARGS` on the sandbox's database.
fn direct(s: &Sandbox, args: &[&str]) -> Run {
    let w = workflows();
    let mut all = vec!["--workflows", w.as_str()];
    all.extend_from_slice(args);
    s.run(&all)
}

/// Runs `giamsat --server URL --token TOKEN ARGS` (the sandbox's database is not used: its
/// GIAMSAT_DB points at another file than the daemon's).
fn remote(s: &Sandbox, daemon: &Daemon, token: &str, args: &[&str]) -> Run {
    let mut all = vec!["--server", daemon.url.as_str(), "--token", token];
    all.extend_from_slice(args);
    s.run(&all)
}

/// The same command on the database (acting as `--as admin:huyen`) and through the daemon (as
/// the admin token named huyen): same exit code, same output.
fn same(
    db: &Sandbox,
    client: &Sandbox,
    daemon: &Daemon,
    token: &str,
    args: &[&str],
    acts: bool,
) -> Run {
    let mut on_db = args.to_vec();
    if acts {
        on_db.extend_from_slice(&["--as", "admin:huyen"]);
    }
    let here = direct(db, &on_db);
    let there = remote(client, daemon, token, args);
    assert_eq!(
        (here.code, here.stdout.as_str(), here.stderr.as_str()),
        (there.code, there.stdout.as_str(), there.stderr.as_str()),
        "giamsat {args:?}: on the database (left) and through the daemon (right)"
    );
    there
}

#[test]
fn case_and_documents_commands_through_the_daemon_match_the_database() {
    // The daemon's database, with an admin token made as an operator makes one.
    let served = Sandbox::sqlite();
    let created = served.ok(&["token", "create", "--role", "admin", "--name", "huyen"]);
    let token = created.lines()[0].to_owned();
    // The clock of the daemon's scheduler stands at the seed's notice date, so no timer of the
    // case comes due while the test runs and changes it behind the comparison's back.
    let mut daemon = Daemon::start(&served, &[], &["--clock", "sim:2024-03-25T08:00:00+07:00"]);
    // The same commands straight on a database of their own, for comparison.
    let db = Sandbox::sqlite();
    // Where the remote commands run: no database of the daemon's in sight.
    let client = Sandbox::sqlite();
    let seed = seed();

    let started = same(
        &db,
        &client,
        &daemon,
        &token,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--id",
            "tg2024",
            "--data",
            &seed,
            "--at",
            AT,
            "--json",
        ],
        true,
    );
    let case: serde_json::Value = serde_json::from_str(&started.stdout).expect("JSON");
    assert_eq!(case["stage"], "established");
    same(
        &db,
        &client,
        &daemon,
        &token,
        &[
            "case",
            "do",
            "tg2024",
            "issue_notice",
            "--set",
            "issued_on=2024-03-25",
            "--set",
            "document=thong-bao-lich",
            "--at",
            AT,
        ],
        true,
    );
    let id = "0191e0a6-6f6e-7b4c-9d2a-3c1f0e5a7b21";
    let receive: &[&str] = &[
        "case",
        "do",
        "tg2024",
        "receive_report",
        "--set",
        "unit=phong-noi-vu",
        "--set",
        "received_at=2024-04-18T09:00:00+07:00",
        "--set",
        "channel=email",
        "--command-id",
        id,
        "--at",
        "2024-04-18T09:00:00+07:00",
        "--json",
    ];
    same(&db, &client, &daemon, &token, receive, true);
    // The same command id again does nothing, on either side.
    let again: Vec<&str> = receive.iter().copied().filter(|a| *a != "--json").collect();
    let repeated = same(&db, &client, &daemon, &token, &again, true);
    assert_eq!(repeated.stdout, "already applied: nothing to do\n");

    for args in [
        &["case", "show", "tg2024", "--json"][..],
        &["case", "show", "tg2024"],
        &["case", "list"],
        &["case", "list", "--json"],
        &["case", "history", "tg2024"],
    ] {
        same(&db, &client, &daemon, &token, args, false);
    }

    // A command the workflow refuses: exit 2, the code with both messages, the same lines.
    let rejected = same(
        &db,
        &client,
        &daemon,
        &token,
        &[
            "case",
            "do",
            "tg2024",
            "close_case",
            "--set",
            "closed_on=2025-01-05",
            "--at",
            AT,
        ],
        true,
    );
    rejected.fails_with(
        2,
        &["rejected: wrong_stage (close_case)", "stage: notified"],
    );
    assert_eq!(rejected.stderr.lines().count(), 4, "{}", rejected.stderr);
    // Starting it again is a rejection too.
    same(
        &db,
        &client,
        &daemon,
        &token,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--id",
            "tg2024",
            "--data",
            &seed,
            "--at",
            AT,
        ],
        true,
    )
    .fails_with(2, &["rejected: case_exists"]);

    // Documents: the daemon's exporter renders them by itself; on the database they are
    // rendered with `exporters run --once`. Then the notice is numbered on both sides.
    direct(&db, &["exporters", "run", "--once"]);
    let listed = direct(&db, &["documents", "list", "tg2024"]);
    assert!(
        listed.stdout.contains("thong-bao-lich"),
        "{}",
        listed.stdout
    );
    let started = Instant::now();
    loop {
        let there = remote(&client, &daemon, &token, &["documents", "list", "tg2024"]);
        if there.stdout == listed.stdout {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the daemon's documents never matched:\n{}\n---\n{}",
            there.stdout,
            listed.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    same(
        &db,
        &client,
        &daemon,
        &token,
        &["documents", "list", "tg2024", "--json"],
        false,
    );
    let numbered = same(
        &db,
        &client,
        &daemon,
        &token,
        &[
            "documents",
            "number",
            "tg2024",
            "thong-bao-lich",
            "--at",
            AT,
        ],
        true,
    );
    assert!(
        numbered.stdout.starts_with("01/TB-ĐGS\t"),
        "{}",
        numbered.stdout
    );
    for args in [
        &["documents", "register", "--year", "2024"][..],
        &["documents", "register", "--year", "2024", "--json"],
    ] {
        same(&db, &client, &daemon, &token, args, false);
    }

    // What only the command line can get wrong.
    let w = workflows();
    client
        .run(&["--server", &daemon.url, "case", "list"])
        .fails_with(2, &["--server needs --token"]);
    remote(
        &client,
        &daemon,
        &token,
        &[
            "case",
            "do",
            "tg2024",
            "send_reminder",
            "--set",
            "unit=x",
            "--as",
            "secretariat:huyen",
        ],
    )
    .fails_with(2, &["--as cannot be used with --server"]);
    remote(&client, &daemon, "not-a-token", &["case", "list"]).fails_with(1, &["HTTP 401"]);
    remote(&client, &daemon, &token, &["case", "show", "nope"])
        .fails_with(1, &["case \"nope\" does not exist", "HTTP 404"]);
    // A correction of the numbered notice through the daemon: the next version is asked for
    // and the daemon's exporter renders it (on the database the version depends on when its
    // exporter ran, so this side is checked on its own).
    let corrected = remote(
        &client,
        &daemon,
        &token,
        &[
            "documents",
            "correct",
            "tg2024",
            "thong-bao-lich",
            "--reason",
            "Sửa địa điểm làm việc với xã Quài Cang",
        ],
    );
    assert_eq!(corrected.code, 0, "{}", corrected.stderr);
    let version = corrected
        .stdout
        .strip_prefix("thong-bao-lich v")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", corrected.stdout))
        .to_owned();
    assert!(
        corrected
            .stdout
            .ends_with("requested; the documents exporter renders it\n")
    );
    let started = Instant::now();
    loop {
        let listed = remote(&client, &daemon, &token, &["documents", "list", "tg2024"]);
        if listed
            .lines()
            .iter()
            .any(|l| l.starts_with(&format!("thong-bao-lich\tv{version}\t")))
        {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "v{version} was never rendered:\n{}",
            listed.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    remote(
        &client,
        &daemon,
        &token,
        &[
            "documents",
            "correct",
            "tg2024",
            "khong-co",
            "--reason",
            "x",
        ],
    )
    .fails_with(1, &["HTTP 404"]);
    // The log's chain and the exporters, as the daemon sees them.
    let verified = remote(&client, &daemon, &token, &["verify"]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified.stdout.starts_with("chain intact: "),
        "{}",
        verified.stdout
    );
    let verified = remote(&client, &daemon, &token, &["verify", "--json"]).json_lines();
    assert_eq!(verified[0]["intact"], true);
    let exporters = remote(&client, &daemon, &token, &["exporters", "list"]);
    assert_eq!(exporters.code, 0, "{}", exporters.stderr);
    assert!(
        exporters
            .lines()
            .iter()
            .any(|l| l.starts_with("documents\tdocuments\tenabled\tcheckpoint ")),
        "{}",
        exporters.stdout
    );
    let parked = remote(
        &client,
        &daemon,
        &token,
        &["exporters", "parked", "documents"],
    );
    assert_eq!(
        (parked.code, parked.stdout.as_str()),
        (0, ""),
        "{}",
        parked.stderr
    );
    remote(
        &client,
        &daemon,
        &token,
        &["exporters", "parked", "khong-co"],
    )
    .fails_with(1, &["HTTP 404"]);
    // What works only on a database is refused, not run on a database nobody meant.
    for args in [
        &["events", "streams"][..],
        &["token", "list"],
        &["timers", "list"],
        &["exporters", "run", "--once"],
    ] {
        remote(&client, &daemon, &token, args).fails_with(2, &["not available through --server"]);
    }
    // The environment variables work as the flags do; other commands still use the database.
    let by_env = client
        .command(&["--workflows", &w, "case", "list"])
        .env("GIAMSAT_SERVER", &daemon.url)
        .env("GIAMSAT_TOKEN", &token)
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&by_env.stdout),
        direct(&db, &["case", "list"]).stdout
    );
    daemon.stop();
}
