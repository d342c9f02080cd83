//! The notifications exporter as a user runs it: in the default setup (no configuration file)
//! the seed notice's recipients are recorded as skipped, since the seed has no addresses and no
//! role has one; with addresses, messages land as `.eml` files in the outbox; with `[smtp]`, they
//! reach a real SMTP server on 127.0.0.1 with the credentials taken from the environment; and
//! `giamsat notifications list` shows what was sent, skipped and why.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Run, Sandbox};

fn workflows() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows")
        .display()
        .to_string()
}

fn seed_path() -> PathBuf {
    PathBuf::from(workflows()).join("giam-sat-chuyen-de/examples/tuan-giao-2024.yaml")
}

fn gs(s: &Sandbox, args: &[&str]) -> Run {
    let w = workflows();
    let mut all = vec!["--workflows", w.as_str()];
    all.extend_from_slice(args);
    s.ok(&all)
}

/// The seed start data with an example.org address for every unit, as JSON (which is YAML).
fn seed_with_addresses(s: &Sandbox) -> String {
    let text = std::fs::read_to_string(seed_path()).expect("seed");
    let mut data: Value = serde_saphyr::from_str(&text).expect("yaml");
    for unit in data["units"].as_array_mut().expect("units") {
        let code = unit["code"].as_str().expect("code").to_owned();
        unit["email"] = json!(format!("{code}@example.org"));
    }
    s.write("seed.json", &data.to_string())
        .display()
        .to_string()
}

fn start_and_notify(s: &Sandbox, config: Option<&str>, data: &str) {
    let mut pre: Vec<&str> = Vec::new();
    if let Some(c) = config {
        pre.extend(["--config", c]);
    }
    let with = |rest: &[&str]| -> Vec<String> {
        pre.iter().chain(rest).map(|a| (*a).to_owned()).collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        gs(s, &refs);
    };
    run(with(&[
        "case",
        "start",
        "giam-sat-chuyen-de",
        "--id",
        "tg2024",
        "--data",
        data,
        "--as",
        "secretariat:huyen",
    ]));
    run(with(&[
        "case",
        "do",
        "tg2024",
        "issue_notice",
        "--set",
        "issued_on=2024-03-25",
        "--set",
        "document=thong-bao-lich",
        "--as",
        "secretariat:huyen",
        "--at",
        "2024-03-25T08:00:00+07:00",
    ]));
}

#[test]
fn the_default_setup_records_recipients_without_an_address_as_skipped() {
    let s = Sandbox::sqlite();
    let seed = seed_path().display().to_string();
    start_and_notify(&s, None, &seed);
    gs(&s, &["exporters", "run", "--once"]);
    let listed = gs(&s, &["exporters", "list", "--json"]).json_lines();
    let notifications = listed
        .iter()
        .find(|e| e["id"] == "notifications")
        .expect("the notifications exporter is configured by default");
    assert_eq!(notifications["type"], "notifications");
    assert_eq!(notifications["parked"], 0);

    let human = gs(&s, &["notifications", "list", "tg2024"]);
    let first = human.lines()[0];
    assert!(
        first.starts_with("notice_to_units_and_members\toutbox\tNoticeIssued@"),
        "{first}"
    );
    assert!(first.ends_with("0 sent, 12 skipped, 0 refused"), "{first}");
    assert!(
        human.stdout.contains(
            "  skipped\txã Quài Tở (collection:units)\tno e-mail address in the case data (units xa-quai-to: email is empty)"
        ),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains(
            "  skipped\tĐoàn giám sát (delegation)\tno address configured for role delegation"
        ),
        "{}",
        human.stdout
    );
    assert!(
        !s.path("outbox").join("tg2024").exists(),
        "no message without an address"
    );
}

#[test]
fn with_addresses_messages_land_in_the_outbox() {
    let s = Sandbox::sqlite();
    let config = s
        .write(
            "giamsat.toml",
            "[[exporters]]\nid = \"notifications\"\ntype = \"notifications\"\n\
             from = \"Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>\"\n\
             outbox = \"thu-di\"\n\
             [exporters.roles]\nsecretariat = [\"vanphong@example.org\"]\n\
             delegation = [\"Trưởng đoàn <truongdoan@example.org>\"]\n",
        )
        .display()
        .to_string();
    let data = seed_with_addresses(&s);
    start_and_notify(&s, Some(&config), &data);
    gs(&s, &["--config", &config, "exporters", "run", "--once"]);
    let records = gs(
        &s,
        &[
            "--config",
            &config,
            "notifications",
            "list",
            "tg2024",
            "--json",
        ],
    )
    .json_lines();
    assert_eq!(records.len(), 1, "{records:?}");
    let messages = records[0]["messages"].as_array().expect("messages");
    assert_eq!(
        messages.len(),
        10,
        "nine units and the head of the delegation"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(s.path("thu-di/tg2024"))
        .expect("outbox folder")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 10);
    for m in messages {
        let file = m["file"].as_str().expect("file");
        let raw = std::fs::read_to_string(s.path("thu-di").join(file)).expect("eml");
        assert!(
            raw.contains(&format!(
                "Message-ID: <{}>",
                m["message_id"].as_str().expect("id")
            )),
            "{raw}"
        );
        assert!(raw.contains("Content-Type: text/calendar"), "{file}");
        assert!(
            raw.contains("filename=\"thong-bao-lich.du-thao.v1.docx\""),
            "{file}"
        );
    }
    // Run again: nothing new is written or recorded.
    gs(
        &s,
        &[
            "--config",
            &config,
            "exporters",
            "replay",
            "notifications",
            "--from",
            "1",
        ],
    );
    gs(&s, &["--config", &config, "exporters", "run", "--once"]);
    let again = gs(
        &s,
        &[
            "--config",
            &config,
            "notifications",
            "list",
            "tg2024",
            "--json",
        ],
    )
    .json_lines();
    assert_eq!(again, records);
}

/// Messages an SMTP server accepted: (recipient, data).
type Inbox = Arc<Mutex<Vec<(String, String)>>>;

/// A one-connection-at-a-time SMTP server on 127.0.0.1 (std threads), requiring AUTH PLAIN.
fn smtp_server(expected_auth: &'static str) -> (u16, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut w = stream.try_clone().expect("clone");
            let mut r = BufReader::new(stream);
            let mut say = |text: &str| {
                let _ = w.write_all(text.as_bytes());
            };
            say("220 127.0.0.1 ESMTP test\r\n");
            let (mut to, mut authed) = (String::new(), false);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let upper = line.trim_end().to_ascii_uppercase();
                if upper.starts_with("EHLO") {
                    say("250-127.0.0.1\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN\r\n");
                } else if upper.starts_with("AUTH PLAIN") {
                    authed = line.trim_end()[10..].trim() == expected_auth;
                    say(if authed { "235 ok\r\n" } else { "535 no\r\n" });
                } else if upper.starts_with("MAIL FROM") {
                    say(if authed {
                        "250 ok\r\n"
                    } else {
                        "530 auth first\r\n"
                    });
                } else if upper.starts_with("RCPT TO:") {
                    to = line.trim_end()[8..]
                        .trim()
                        .trim_matches(['<', '>'])
                        .to_owned();
                    say("250 ok\r\n");
                } else if upper == "DATA" {
                    say("354 go on\r\n");
                    let mut data = String::new();
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                            break;
                        }
                        data.push_str(&l);
                    }
                    store.lock().expect("lock").push((to.clone(), data));
                    say("250 queued\r\n");
                } else if upper == "QUIT" {
                    say("221 bye\r\n");
                    break;
                } else {
                    say("250 ok\r\n");
                }
            }
        }
    });
    (port, received)
}

#[test]
fn with_smtp_messages_reach_the_server_with_credentials_from_the_environment() {
    let s = Sandbox::sqlite();
    // AUTH PLAIN of "\0giamsat\0bí-mật" in base64.
    let (port, received) = smtp_server("AGdpYW1zYXQAYsOtLW3huq10");
    let config = s
        .write(
            "giamsat.toml",
            &format!(
                "[[exporters]]\nid = \"notifications\"\ntype = \"notifications\"\n\
                 from = \"Văn phòng HĐND <vanphong@example.org>\"\nmax-attempts = 1\n\
                 [exporters.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
                 username-env = \"E2E_SMTP_USER\"\npassword-env = \"E2E_SMTP_PASSWORD\"\n\
                 [exporters.roles]\ndelegation = [\"truongdoan@example.org\"]\n"
            ),
        )
        .display()
        .to_string();
    let data = seed_with_addresses(&s);
    start_and_notify(&s, Some(&config), &data);
    // Without the variables the exporter is not built, and the error names them.
    let w = workflows();
    s.run(&[
        "--workflows",
        &w,
        "--config",
        &config,
        "exporters",
        "run",
        "--once",
    ])
    .fails_with(1, &["(type notifications)", "E2E_SMTP_USER"]);
    let output = s
        .command(&[
            "--workflows",
            &w,
            "--config",
            &config,
            "exporters",
            "run",
            "--once",
        ])
        .env("E2E_SMTP_USER", "giamsat")
        .env("E2E_SMTP_PASSWORD", "bí-mật")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 10, "nine units and the delegation");
    let to: Vec<&str> = got.iter().map(|(to, _)| to.as_str()).collect();
    assert!(to.contains(&"xa-ta-ma@example.org") && to.contains(&"truongdoan@example.org"));
    assert!(
        got.iter()
            .all(|(_, data)| data.contains("X-Giamsat-Notification: notice_to_units_and_members"))
    );
    let records = gs(
        &s,
        &[
            "--config",
            &config,
            "notifications",
            "list",
            "tg2024",
            "--json",
        ],
    )
    .json_lines();
    assert_eq!(records[0]["channel"], "email");
    assert_eq!(records[0]["messages"].as_array().map(Vec::len), Some(10));
}
