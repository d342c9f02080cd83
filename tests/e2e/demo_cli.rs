//! `giamsat demo`: the seed supervision from establishment to the archive on a simulated clock,
//! written into a folder of its own (store, configuration, documents, outbox, archive package),
//! with a summary on standard output. The run's time is printed, never asserted.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use serde_json::Value;

use crate::support::{Run, Sandbox, files_under, only_package, reference_validates};

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

/// The repository's workflows and holiday calendars, as a newcomer's clone has them.
fn demo(s: &Sandbox, extra: &[&str]) -> Run {
    s.write(
        "giamsat.toml",
        &format!(
            "[calendar]\ndir = {}\n",
            serde_json::to_string(&repo("config/calendars")).expect("a TOML string")
        ),
    );
    let config = s.path("giamsat.toml").display().to_string();
    let workflows = repo("workflows");
    let mut args = vec![
        "--config",
        config.as_str(),
        "--workflows",
        workflows.as_str(),
        "demo",
    ];
    args.extend_from_slice(extra);
    s.run(&args)
}

/// Runs giamsat inside the demo's folder, with nothing but its own configuration.
fn inside(s: &Sandbox, dir: &Path, args: &[&str]) -> Output {
    s.command(args)
        .current_dir(dir)
        .env_remove("GIAMSAT_DB")
        .output()
        .expect("run giamsat")
}

fn stdout_ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[test]
fn the_demo_runs_the_seed_supervision_to_the_archive_in_a_folder_of_its_own() {
    let s = Sandbox::sqlite();
    let started = Instant::now();
    let run = demo(&s, &["--out", "out"]);
    let took = started.elapsed();
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    eprintln!("giamsat demo --out DIR took {:.1} s", took.as_secs_f64());
    println!("{}", run.stdout);

    // The summary: every stage, the timers, the documents, the e-mails, the archive, verify.
    let summary = &run.stdout;
    for fragment in [
        "Stages reached: 9 of 9",
        "reports_due",
        "by the scheduler",
        "archived",
        "Timers fired:",
        "report_reminder_before",
        "visit_reminder",
        "recommendation_overdue",
        "archive_due_warning",
        "Documents:",
        "01/TB-ĐGS thong-bao-lich",
        "Notifications:",
        "messages written to out/outbox/tg2024",
        "Archive: out/archive/tg2024-",
        "accepted by giamsat's BagIt verifier",
        "DEMO VALUES",
        "chain intact",
    ] {
        assert!(summary.contains(fragment), "the summary lacks {fragment:?}");
    }
    assert!(!summary.contains("parked"), "{summary}");

    // Documents in every format, the notice numbered.
    let out = s.path("out");
    let documents = out.join("documents/tg2024");
    for ext in ["html", "md", "docx"] {
        assert!(
            files_under(&documents, ext).len() >= 20,
            "{ext} files in {}",
            documents.display()
        );
    }
    assert!(
        documents
            .join("thong-bao-lich.so-01-TB-DGS.v1.docx")
            .is_file()
    );

    // The outbox: the notice to each unit with its calendar entry, and the reminders.
    let outbox = files_under(&out.join("outbox/tg2024"), "eml");
    assert!(outbox.len() >= 50, "{} messages", outbox.len());
    let to_quai_to: Vec<String> = outbox
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("eml"))
        .filter(|m| m.contains("xa-quai-to@example.org"))
        .collect();
    assert!(
        to_quai_to.iter().any(|m| m.contains("text/calendar")),
        "the notice to xã Quài Tở carries a calendar entry"
    );

    // The archive: one bag, which `giamsat archive verify` accepts as well.
    let bag = only_package(&out.join("archive"));
    let valid = s.ok(&["archive", "verify", &bag]);
    assert!(
        valid.stdout.starts_with("package valid"),
        "{}",
        valid.stdout
    );
    reference_validates(&bag);

    // The folder is a working folder: giamsat run there finds the store, the workflows, the
    // calendars and the exporters by itself.
    let show = stdout_ok(
        &inside(&s, &out, &["case", "show", "tg2024", "--json"]),
        "case show",
    );
    let case: Value = serde_json::from_str(show.trim()).expect("json");
    assert_eq!(case["stage"], "archived");
    assert_eq!(
        case["entities"]["units"]["xa-ta-ma"]["state"],
        "received_late"
    );
    assert_eq!(case["entities"]["units"]["xa-quai-nua"]["state"], "overdue");
    stdout_ok(&inside(&s, &out, &["verify"]), "verify");
    let exporters = stdout_ok(
        &inside(&s, &out, &["exporters", "list", "--json"]),
        "exporters list",
    );
    let kinds: Vec<Value> = exporters
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(kinds.len(), 3, "{exporters}");
    for e in &kinds {
        assert_eq!(e["parked"], 0, "{e}");
        assert_eq!(e["lag_events"], 0, "{e}");
    }

    // Again into the same folder: refused, and nothing changes; --force replaces it.
    let again = demo(&s, &["--out", "out"]);
    again.fails_with(1, &["out is not empty", "--force"]);
    assert!(Path::new(&bag).is_dir());
    let forced = demo(&s, &["--out", "out", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(
        forced
            .stdout
            .contains("accepted by giamsat's BagIt verifier")
    );
}

#[test]
fn the_demo_refuses_a_folder_that_is_not_empty_and_leaves_it_alone() {
    let s = Sandbox::sqlite();
    s.write("mine/notes.txt", "mine");
    let run = demo(&s, &["--out", "mine"]);
    run.fails_with(1, &["mine is not empty", "notes.txt", "--force"]);
    let left: Vec<String> = std::fs::read_dir(s.path("mine"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    // A folder of someone else's with entries named like the demo's is not replaced, even with
    // --force.
    s.write("mine/workflows/x.yaml", "mine");
    let forced = demo(&s, &["--out", "mine", "--force"]);
    forced.fails_with(1, &["no demo wrote"]);
    assert!(s.path("mine/workflows/x.yaml").is_file());
}

/// A GET over a plain HTTP/1.1 connection; the JSON body.
fn get_json(addr: &str, path: &str, token: &str) -> Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    let text = String::from_utf8(answer).expect("utf-8");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[test]
fn serve_demo_moves_the_case_on_its_clock_and_refuses_a_store_with_another_tg2024() {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let s = Sandbox::sqlite();
    s.write(
        "giamsat.toml",
        &format!(
            "[calendar]\ndir = {}\n",
            serde_json::to_string(&repo("config/calendars")).expect("a TOML string")
        ),
    );
    let config = s.path("giamsat.toml").display().to_string();
    let workflows = repo("workflows");
    let mut child = s
        .command(&[
            "--config",
            &config,
            "--workflows",
            &workflows,
            "serve",
            "--demo",
            "--demo-speed",
            "500000",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("giamsat serve --demo");
    let (lines, received) = mpsc::channel::<(bool, String)>();
    for (is_out, pipe) in [
        (
            true,
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        ),
        (false, Box::new(child.stderr.take().expect("stderr")) as _),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines.send((is_out, line));
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut addr, mut token, mut seen) = (None, None, Vec::new());
    while addr.is_none() || token.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((is_out, line)) = received.recv_timeout(left) else {
            let _ = child.kill();
            panic!(
                "no address and token from serve --demo:\n{}",
                seen.join("\n")
            );
        };
        if is_out && line.starts_with("gs_") {
            token = Some(line.clone());
        }
        if let Some(rest) = line.strip_prefix("giamsat listening on http://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        seen.push(line);
    }
    let (addr, token) = (addr.expect("address"), token.expect("token"));
    // The clock runs: the reports fall due, the scheduler marks them overdue, reminders go out.
    let mut case = Value::Null;
    while Instant::now() < deadline {
        case = get_json(&addr, "/api/cases/tg2024", &token);
        let stage = case["stage"].as_str().unwrap_or_default();
        if !["", "established", "notified"].contains(&stage) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let history = get_json(&addr, "/api/cases/tg2024/history", &token);
    let documents = get_json(&addr, "/api/cases/tg2024/documents", &token);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !["established", "notified"].contains(&case["stage"].as_str().unwrap_or("notified")),
        "the case did not move: {case}"
    );
    let types: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    for t in [
        "PlanIssued",
        "NoticeIssued",
        "ReportReceived",
        "ReportReminderSent",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    assert!(
        documents
            .as_array()
            .expect("documents")
            .iter()
            .any(|d| d["symbol"] == "01/TB-ĐGS"),
        "the notice is numbered: {documents}"
    );

    // A store whose tg2024 no demo created is left alone.
    let other = Sandbox::sqlite();
    let seed = repo("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml");
    other.ok(&[
        "--workflows",
        &workflows,
        "case",
        "start",
        "giam-sat-chuyen-de",
        "--id",
        "tg2024",
        "--data",
        &seed,
    ]);
    let refused = other.run(&[
        "--workflows",
        &workflows,
        "serve",
        "--demo",
        "--listen",
        "127.0.0.1:0",
    ]);
    refused.fails_with(1, &["already holds a case \"tg2024\" that no demo created"]);
}
