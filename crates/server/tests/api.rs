//! The HTTP API over real HTTP/1.1: each test starts the daemon in-process on 127.0.0.1:0 with
//! a fresh SQLite store, the repository's workflows and calendars, a manual clock at the seed's
//! notice date (25/3/2024 08:00, Asia/Ho_Chi_Minh), the scheduler and the documents exporter,
//! and talks to it with hyper's client.

mod support;

use std::time::Duration;

use giamsat_scheduler::Clock;
use giamsat_server::{Role, ServeOptions, Server, create_token};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use support::{CASE, Daemon, PATIENCE, root, seed, t};

/// An answer: status, headers and the body (JSON when it parses, else a string).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Value,
    text: String,
}

impl Daemon {
    async fn connect(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        sender
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> hyper::http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut sender = self.connect().await;
        let mut builder = self.request(method, path, token, headers);
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = sender.send_request(request).await.expect("a response");
        answer(response).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token, &[], Vec::new()).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.post_with(path, token, &[], body).await
    }

    async fn post_with(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        self.send(
            "POST",
            path,
            Some(token),
            headers,
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn command(&self, token: &str, command: &str, input: Value) -> Answer {
        self.post(
            &format!("/api/cases/{CASE}/commands/{command}"),
            token,
            input,
        )
        .await
    }

    /// Starts the seed case as `tg2024` with the given token.
    async fn start_seed(&self, token: &str) -> Answer {
        self.post(
            "/api/cases",
            token,
            json!({"workflow": "giam-sat-chuyen-de", "id": CASE, "data": seed()}),
        )
        .await
    }
}

async fn answer(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("the body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn assert_status(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "unexpected answer: {}", answer.text);
}

/// The ids of every event of a case, in order.
async fn history_types(daemon: &Daemon, token: &str) -> Vec<String> {
    let history = daemon
        .get(&format!("/api/cases/{CASE}/history"), Some(token))
        .await;
    assert_status(&history, 200);
    history
        .body
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_workflows() {
    let mut daemon = Daemon::start().await;
    let health = daemon.get("/healthz", None).await;
    assert_status(&health, 200);
    assert_eq!(health.body["status"], "ok");
    let ready = daemon.get("/readyz", None).await;
    assert_status(&ready, 200);
    assert_eq!(ready.body["ready"], true);
    assert!(
        ready.body["workflows"]["loaded"]
            .as_array()
            .expect("a list")
            .contains(&json!("giam-sat-chuyen-de"))
    );

    let list = daemon.get("/api/workflows", Some(&daemon.admin)).await;
    assert_status(&list, 200);
    assert!(
        list.body
            .as_array()
            .expect("a list")
            .iter()
            .any(|w| w["name"] == "phien-giai-trinh")
    );
    let one = daemon
        .get("/api/workflows/giam-sat-chuyen-de", Some(&daemon.admin))
        .await;
    assert_status(&one, 200);
    let receive = one.body["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .find(|c| c["id"] == "receive_report")
        .expect("receive_report")
        .clone();
    assert_eq!(receive["roles"], json!(["secretariat", "unit"]));
    assert_eq!(receive["target"]["scoped_to_unit"], true);
    assert_eq!(
        receive["input_schema"]["required"],
        json!(["unit", "received_at", "channel"])
    );
    let missing = daemon
        .get("/api/workflows/khong-co", Some(&daemon.admin))
        .await;
    assert_status(&missing, 404);
    assert_eq!(missing.body["code"], "workflow_not_found");
    let nowhere = daemon.get("/api/khong-co", Some(&daemon.admin)).await;
    assert_status(&nowhere, 404);
    assert_eq!(nowhere.body["code"], "not_found");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_roles_are_the_workflows() {
    let mut daemon = Daemon::start().await;
    // No token, a malformed header, an unknown token.
    let none = daemon.get("/api/cases", None).await;
    assert_status(&none, 401);
    assert_eq!(none.body["code"], "missing_token");
    assert!(
        none.headers
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("Bearer"))
    );
    let basic = daemon
        .send(
            "GET",
            "/api/cases",
            None,
            &[("authorization", "Basic eDp5")],
            Vec::new(),
        )
        .await;
    assert_status(&basic, 401);
    assert_eq!(basic.body["code"], "invalid_authorization");
    let unknown = daemon.get("/api/cases", Some("gs_0000")).await;
    assert_status(&unknown, 401);
    assert_eq!(unknown.body["code"], "invalid_token");

    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let viewer = daemon.token(Role::Viewer, None, "xem").await;
    let delegation = daemon.token(Role::Delegation, None, "trong").await;

    // A viewer may not start a case; the secretariat may.
    let refused = daemon.start_seed(&viewer).await;
    assert_status(&refused, 403);
    assert_eq!(refused.body["code"], "role_not_allowed");
    let started = daemon.start_seed(&secretariat).await;
    assert_status(&started, 201);
    assert_eq!(started.body["case"]["stage"], "established");
    assert_eq!(
        started
            .headers
            .get("location")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("/api/cases/tg2024")
    );
    let again = daemon.start_seed(&secretariat).await;
    assert_status(&again, 409);
    assert_eq!(again.body["code"], "case_exists");

    // The viewer reads but cannot act: the workflow's roles refuse it (403, both messages).
    let shown = daemon
        .get(&format!("/api/cases/{CASE}"), Some(&viewer))
        .await;
    assert_status(&shown, 200);
    assert_eq!(shown.body["available_commands"], json!([]));
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});
    let denied = daemon
        .command(&viewer, "issue_notice", notice.clone())
        .await;
    assert_status(&denied, 403);
    assert_eq!(denied.body["code"], "role_not_allowed");
    assert_eq!(denied.body["details"]["rejected"], true);
    assert!(
        denied.body["details"]["message_vi"]
            .as_str()
            .expect("a Vietnamese message")
            .starts_with("Vai trò viewer không được thực hiện thao tác")
    );

    // The delegation may issue the notice; the command is recorded with the token's name.
    let issued = daemon
        .command(&delegation, "issue_notice", notice.clone())
        .await;
    assert_status(&issued, 200);
    assert_eq!(issued.body["applied"], true);
    assert_eq!(issued.body["events"][0]["event_type"], "NoticeIssued");
    assert_eq!(issued.body["case"]["stage"], "notified");
    let history = daemon
        .get(&format!("/api/cases/{CASE}/history"), Some(&viewer))
        .await;
    let last = history
        .body
        .as_array()
        .expect("events")
        .last()
        .cloned()
        .expect("an event");
    assert_eq!(last["metadata"]["actor"], "delegation:trong");
    assert_eq!(
        last["data"]["actor"],
        json!({"role": "delegation", "id": "trong"})
    );

    // Rejected by the workflow: 422 with the rejection code and the Vietnamese message.
    let twice = daemon.command(&secretariat, "issue_notice", notice).await;
    assert_status(&twice, 422);
    assert_eq!(twice.body["code"], "wrong_stage");
    assert_eq!(twice.body["details"]["stage"], "notified");
    assert!(
        twice.body["details"]["message_vi"]
            .as_str()
            .expect("vi")
            .starts_with("Không thể thực hiện “Thông báo thời gian, lịch giám sát” ở giai đoạn")
    );
    assert_eq!(
        twice.body["message"], twice.body["details"]["message_en"],
        "the English message is the error's message"
    );
    let bad_input = daemon
        .command(
            &secretariat,
            "receive_report",
            json!({"unit": "xa-quai-to", "received_at": "18/4/2024", "channel": "email"}),
        )
        .await;
    assert_status(&bad_input, 422);
    assert_eq!(bad_input.body["code"], "invalid_input");
    assert!(
        bad_input.body["message"]
            .as_str()
            .expect("message")
            .contains("/received_at")
    );
    let unknown_command = daemon.command(&secretariat, "khong_co", json!({})).await;
    assert_status(&unknown_command, 404);
    assert_eq!(unknown_command.body["code"], "unknown_command");
    let not_json = daemon
        .send(
            "POST",
            &format!("/api/cases/{CASE}/commands/send_reminder"),
            Some(&secretariat),
            &[],
            b"{unit: xa-quai-to".to_vec(),
        )
        .await;
    assert_status(&not_json, 400);
    assert_eq!(not_json.body["code"], "invalid_json");
    assert!(
        not_json.body["message"]
            .as_str()
            .expect("message")
            .contains("line 1 column 2")
    );
    let no_case = daemon
        .post(
            "/api/cases/khong-co/commands/issue_notice",
            &secretariat,
            json!({}),
        )
        .await;
    assert_status(&no_case, 404);
    assert_eq!(no_case.body["code"], "case_not_found");

    // Only an admin may set a command's time.
    let at = "2024-04-21T00:00:00+07:00";
    let early = daemon
        .post(
            &format!(
                "/api/cases/{CASE}/commands/mark_reports_overdue?at={}",
                at.replace('+', "%2B")
            ),
            &secretariat,
            json!({}),
        )
        .await;
    assert_status(&early, 403);
    let overdue = daemon
        .post(
            &format!(
                "/api/cases/{CASE}/commands/mark_reports_overdue?at={}",
                at.replace('+', "%2B")
            ),
            &daemon.admin,
            json!({}),
        )
        .await;
    assert_status(&overdue, 200);
    assert_eq!(overdue.body["case"]["stage"], "reports_due");

    // A revoked token stops working (the daemon follows the tokens stream).
    let tokens = giamsat_server::list_tokens(&daemon.store)
        .await
        .expect("tokens");
    let viewer_id = tokens
        .iter()
        .find(|t| t.name == "xem")
        .expect("the viewer")
        .id
        .clone();
    giamsat_server::revoke_token(&daemon.store, &viewer_id, "admin:test", daemon.clock.now())
        .await
        .expect("revoked");
    let revoked = tokio::time::timeout(PATIENCE, async {
        loop {
            let a = daemon.get("/api/cases", Some(&viewer)).await;
            if a.status == 401 {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the revocation takes effect");
    assert_eq!(revoked.body["code"], "invalid_token");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_and_version_conflicts() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let started = daemon.start_seed(&secretariat).await;
    assert_status(&started, 201);
    let version = started.body["case"]["stream_version"]
        .as_u64()
        .expect("a version");
    assert_eq!(
        started
            .headers
            .get("etag")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some(format!("\"{version}\""))
    );
    let path = format!("/api/cases/{CASE}/commands/issue_notice");
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});

    // A stale If-Match: 409, nothing appended.
    let stale = format!("\"{}\"", version + 5);
    let conflict = daemon
        .post_with(&path, &secretariat, &[("if-match", &stale)], notice.clone())
        .await;
    assert_status(&conflict, 409);
    assert_eq!(conflict.body["code"], "version_conflict");
    assert_eq!(conflict.body["details"]["actual_version"], version);
    let bad = daemon
        .post_with(
            &path,
            &secretariat,
            &[("if-match", "latest")],
            notice.clone(),
        )
        .await;
    assert_status(&bad, 400);
    assert_eq!(bad.body["code"], "invalid_if_match");

    // The same request twice with one Idempotency-Key (and the right If-Match): applied once.
    let current = format!("\"{version}\"");
    let headers = [
        ("idempotency-key", "notice-1"),
        ("if-match", current.as_str()),
    ];
    let first = daemon
        .post_with(&path, &secretariat, &headers, notice.clone())
        .await;
    assert_status(&first, 200);
    assert_eq!(first.body["applied"], true);
    let second = daemon
        .post_with(&path, &secretariat, &headers, notice.clone())
        .await;
    assert_status(&second, 200);
    assert_eq!(second.body["applied"], false);
    assert_eq!(second.body["command_id"], first.body["command_id"]);
    assert_eq!(
        history_types(&daemon, &secretariat).await,
        ["CaseEstablished", "NoticeIssued"]
    );
    // The same key for another input is refused.
    let reused = daemon
        .post_with(
            &path,
            &secretariat,
            &[("idempotency-key", "notice-1")],
            json!({"issued_on": "2024-03-26", "document": "thong-bao-lich"}),
        )
        .await;
    assert_status(&reused, 409);
    assert_eq!(reused.body["code"], "idempotency_key_reused");

    // A start repeated with its key answers the case instead of 409.
    let other = json!({"workflow": "giam-sat-chuyen-de", "id": "tg-2", "data": seed()});
    let key = [("idempotency-key", "start-tg-2")];
    let created = daemon
        .post_with("/api/cases", &secretariat, &key, other.clone())
        .await;
    assert_status(&created, 201);
    let repeated = daemon
        .post_with("/api/cases", &secretariat, &key, other)
        .await;
    assert_status(&repeated, 200);
    assert_eq!(repeated.body["applied"], false);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_token_sees_only_its_unit() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let quai_to = daemon
        .token(Role::Unit, Some("xa-quai-to"), "van-thu-quai-to")
        .await;
    let ta_ma = daemon
        .token(Role::Unit, Some("xa-ta-ma"), "van-thu-ta-ma")
        .await;
    assert_status(&daemon.start_seed(&secretariat).await, 201);
    // A second case without xã Quài Tở.
    let mut data = seed();
    data["units"] = json!(
        data["units"]
            .as_array()
            .expect("units")
            .iter()
            .filter(|u| u["code"] != "xa-quai-to")
            .cloned()
            .collect::<Vec<_>>()
    );
    data["visits"] = json!(
        data["visits"]
            .as_array()
            .expect("visits")
            .iter()
            .filter(|v| v["unit"] != "xa-quai-to")
            .cloned()
            .collect::<Vec<_>>()
    );
    let other = daemon
        .post(
            "/api/cases",
            &secretariat,
            json!({"workflow": "giam-sat-chuyen-de", "id": "khac", "data": data}),
        )
        .await;
    assert_status(&other, 201);
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});
    assert_status(
        &daemon.command(&secretariat, "issue_notice", notice).await,
        200,
    );

    // The list and the case: only its own unit's entities and start data.
    let list = daemon.get("/api/cases", Some(&quai_to)).await;
    assert_status(&list, 200);
    let ids: Vec<&str> = list
        .body
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, [CASE]);
    let all = daemon.get("/api/cases", Some(&secretariat)).await;
    assert_eq!(all.body.as_array().expect("cases").len(), 2);
    let hidden = daemon.get("/api/cases/khac", Some(&quai_to)).await;
    assert_status(&hidden, 404);
    assert_eq!(hidden.body["code"], "case_not_found");
    let case = daemon
        .get(&format!("/api/cases/{CASE}"), Some(&quai_to))
        .await;
    assert_status(&case, 200);
    let units: Vec<&String> = case.body["entities"]["units"]
        .as_object()
        .expect("units")
        .keys()
        .collect();
    assert_eq!(units, ["xa-quai-to"]);
    let visits: Vec<&String> = case.body["entities"]["visits"]
        .as_object()
        .expect("visits")
        .keys()
        .collect();
    assert_eq!(visits, ["xa-quai-to"]);
    assert!(case.body["entities"]["documents"]["thong-bao-lich"].is_object());
    assert_eq!(
        case.body["data"]["units"].as_array().expect("units").len(),
        1
    );
    assert_eq!(
        case.body["data"]["visits"]
            .as_array()
            .expect("visits")
            .len(),
        1
    );
    assert_eq!(case.body["data"]["topic"], seed()["topic"]);
    assert!(
        !case.text.contains("xa-ta-ma") && !case.text.contains("Quài Cang"),
        "another unit's data leaked: {}",
        case.text
    );
    let full = daemon
        .get(&format!("/api/cases/{CASE}"), Some(&secretariat))
        .await;
    assert_eq!(
        full.body["entities"]["units"]
            .as_object()
            .expect("units")
            .len(),
        9
    );

    // It submits its own report, not another unit's; it cannot issue anything.
    let report = |unit: &str| json!({"unit": unit, "received_at": "2024-03-25T08:00:00+07:00", "channel": "email"});
    let others = daemon
        .command(&quai_to, "receive_report", report("xa-ta-ma"))
        .await;
    assert_status(&others, 403);
    assert_eq!(others.body["code"], "not_own_unit");
    assert_eq!(
        others.body["details"]["message_vi"],
        "Đơn vị chỉ được thực hiện thao tác cho chính đơn vị mình"
    );
    let own = daemon
        .command(&quai_to, "receive_report", report("xa-quai-to"))
        .await;
    assert_status(&own, 200);
    assert_eq!(
        own.body["case"]["entities"]["units"]["xa-quai-to"]["state"],
        "received"
    );
    let reminder = daemon
        .command(&quai_to, "send_reminder", json!({"unit": "xa-quai-to"}))
        .await;
    assert_status(&reminder, 403);
    assert_eq!(reminder.body["code"], "role_not_allowed");
    assert_status(
        &daemon
            .command(&ta_ma, "receive_report", report("xa-ta-ma"))
            .await,
        200,
    );
    assert_status(
        &daemon
            .command(
                &secretariat,
                "send_reminder",
                json!({"unit": "xa-quai-cang"}),
            )
            .await,
        200,
    );

    // The history: its own report, the shared events, not the other units' reports or the
    // reminder to another unit.
    let types = history_types(&daemon, &quai_to).await;
    assert_eq!(types, ["CaseEstablished", "NoticeIssued", "ReportReceived"]);
    let history = daemon
        .get(&format!("/api/cases/{CASE}/history"), Some(&quai_to))
        .await;
    let first = &history.body[0];
    assert_eq!(first["redacted"], true);
    assert_eq!(
        first["data"]["input"]["units"]
            .as_array()
            .expect("units")
            .len(),
        1
    );
    assert!(!history.text.contains("xa-ta-ma"), "{}", history.text);
    assert_eq!(
        history_types(&daemon, &secretariat).await.len(),
        5,
        "the secretariat sees every event"
    );
    // Its timers: none of other units'.
    let timers = daemon
        .get(&format!("/api/cases/{CASE}/timers"), Some(&quai_to))
        .await;
    assert_status(&timers, 200);
    assert!(
        timers
            .body
            .as_array()
            .expect("timers")
            .iter()
            .all(|t| t["key"].is_null() || t["key"] == "xa-quai-to")
    );

    // Documents: the notice, but not the reminder letter to xã Quài Cang.
    let documents = wait_for_documents(&daemon, &secretariat, 3).await;
    let names: Vec<&str> = documents
        .iter()
        .filter_map(|d| d["document"].as_str())
        .collect();
    assert!(
        names.contains(&"cong-van-don-doc-xa-quai-cang"),
        "{names:?}"
    );
    let seen = daemon
        .get(&format!("/api/cases/{CASE}/documents"), Some(&quai_to))
        .await;
    assert_status(&seen, 200);
    let names: Vec<&str> = seen
        .body
        .as_array()
        .expect("documents")
        .iter()
        .filter_map(|d| d["document"].as_str())
        .collect();
    assert!(names.contains(&"thong-bao-lich"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("quai-cang")), "{names:?}");
    let letter = daemon
        .get(
            &format!("/api/cases/{CASE}/documents/cong-van-don-doc-xa-quai-cang/1/html"),
            Some(&quai_to),
        )
        .await;
    assert_status(&letter, 404);
    daemon.shutdown().await;
}

/// Waits until the documents exporter has recorded at least `n` documents of the case.
async fn wait_for_documents(daemon: &Daemon, token: &str, n: usize) -> Vec<Value> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let list = daemon
                .get(&format!("/api/cases/{CASE}/documents"), Some(token))
                .await;
            assert_status(&list, 200);
            let items = list.body.as_array().cloned().unwrap_or_default();
            if items.len() >= n {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the documents exporter renders the documents")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_download_number_and_register() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let delegation = daemon.token(Role::Delegation, None, "trong").await;
    assert_status(&daemon.start_seed(&secretariat).await, 201);
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});
    assert_status(
        &daemon.command(&secretariat, "issue_notice", notice).await,
        200,
    );
    let documents = wait_for_documents(&daemon, &secretariat, 2).await;
    let notice = documents
        .iter()
        .find(|d| d["document"] == "thong-bao-lich")
        .expect("the notice");
    assert!(notice["number"].is_null());
    let html = daemon
        .get(
            notice["downloads"]["html"]
                .as_str()
                .expect("a download link"),
            Some(&secretariat),
        )
        .await;
    assert_status(&html, 200);
    assert_eq!(
        html.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/html; charset=utf-8")
    );
    assert!(
        html.text
            .contains("<title>Thông báo thời gian, lịch giám sát")
            && html.text.contains("TM. ĐOÀN GIÁM SÁT"),
        "not the notice: {}",
        &html.text[..300.min(html.text.len())]
    );
    let docx = daemon
        .get(
            &format!("/api/cases/{CASE}/documents/thong-bao-lich/v1/docx"),
            Some(&secretariat),
        )
        .await;
    assert_status(&docx, 200);
    assert_eq!(
        docx.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    );
    assert!(docx.text.starts_with("PK"), "a zip file");
    let pdf = daemon
        .get(
            &format!("/api/cases/{CASE}/documents/thong-bao-lich/1/pdf"),
            Some(&secretariat),
        )
        .await;
    assert_status(&pdf, 400);
    assert_eq!(pdf.body["code"], "invalid_format");
    let v9 = daemon
        .get(
            &format!("/api/cases/{CASE}/documents/thong-bao-lich/9/md"),
            Some(&secretariat),
        )
        .await;
    assert_status(&v9, 404);
    assert_eq!(v9.body["code"], "document_not_found");

    // A draft is not corrected (its data is); the reason is required.
    let corrections = format!("/api/cases/{CASE}/documents/thong-bao-lich/corrections");
    let reason = json!({"reason": "Sửa địa điểm làm việc"});
    let draft = daemon
        .post(&corrections, &secretariat, reason.clone())
        .await;
    assert_status(&draft, 422);
    assert_eq!(draft.body["code"], "document_not_correctable");

    // Numbering: the delegation may not; the secretariat gets 01 of the series, and again the
    // same number; the case records it.
    let path = format!("/api/cases/{CASE}/documents/thong-bao-lich/number");
    let refused = daemon.post(&path, &delegation, json!({})).await;
    assert_status(&refused, 403);
    let numbered = daemon.post(&path, &secretariat, json!({})).await;
    assert_status(&numbered, 200);
    assert_eq!(numbered.body["entry"]["symbol"], "01/TB-ĐGS");
    assert_eq!(numbered.body["recorded_in_case"], true);
    let again = daemon.post(&path, &secretariat, json!({})).await;
    assert_status(&again, 200);
    assert_eq!(again.body["entry"]["symbol"], "01/TB-ĐGS");
    assert_eq!(again.body["recorded_in_case"], false);
    let unknown = daemon
        .post(
            &format!("/api/cases/{CASE}/documents/khong-co/number"),
            &secretariat,
            json!({}),
        )
        .await;
    assert_status(&unknown, 404);
    assert_eq!(unknown.body["code"], "document_not_found");
    let case = daemon
        .get(&format!("/api/cases/{CASE}"), Some(&secretariat))
        .await;
    assert_eq!(
        case.body["entities"]["documents"]["thong-bao-lich"]["state"],
        "numbered"
    );
    let register = daemon
        .get("/api/register?year=2024", Some(&secretariat))
        .await;
    assert_status(&register, 200);
    assert_eq!(register.body[0]["symbol"], "01/TB-ĐGS");
    assert_eq!(register.body[0]["case"], CASE);
    let bad_year = daemon
        .get("/api/register?year=hai-nghin", Some(&secretariat))
        .await;
    assert_status(&bad_year, 400);
    assert_eq!(bad_year.body["code"], "invalid_query");

    // The numbered notice is corrected: the next version, unnumbered, rendered by the exporter;
    // the issued one stays as it is.
    let denied = daemon.post(&corrections, &delegation, reason.clone()).await;
    assert_status(&denied, 403);
    let empty = daemon
        .post(&corrections, &secretariat, json!({"reason": " "}))
        .await;
    assert_status(&empty, 400);
    assert_eq!(empty.body["code"], "invalid_body");
    let before = wait_for_documents(&daemon, &secretariat, 0).await.len();
    let asked = daemon.post(&corrections, &secretariat, reason).await;
    assert_status(&asked, 202);
    let version = asked.body["version"].as_u64().expect("a version");
    let after = wait_for_documents(&daemon, &secretariat, before + 1).await;
    let notices: Vec<&Value> = after
        .iter()
        .filter(|d| d["document"] == "thong-bao-lich")
        .collect();
    let corrected = notices
        .iter()
        .find(|d| d["version"] == version)
        .expect("the corrected version is rendered");
    assert!(corrected["number"].is_null(), "{corrected}");
    assert!(notices.iter().any(|d| d["symbol"] == "01/TB-ĐGS"));

    // Exporters: status, and nothing parked.
    let exporters = daemon.get("/api/exporters", Some(&secretariat)).await;
    assert_status(&exporters, 200);
    assert_eq!(exporters.body[0]["id"], "documents");
    assert_eq!(exporters.body[0]["parked"], 0);
    let parked = daemon
        .get("/api/exporters/documents/parked", Some(&secretariat))
        .await;
    assert_status(&parked, 200);
    assert_eq!(parked.body, json!([]));
    let retry = daemon
        .post(
            "/api/exporters/documents/parked/00000000-0000-0000-0000-000000000000/retry",
            &daemon.admin,
            json!({}),
        )
        .await;
    assert_status(&retry, 404);
    assert_eq!(retry.body["code"], "parked_not_found");
    let not_admin = daemon
        .post(
            "/api/exporters/documents/parked/00000000-0000-0000-0000-000000000000/retry",
            &secretariat,
            json!({}),
        )
        .await;
    assert_status(&not_admin, 403);
    let no_exporter = daemon
        .get("/api/exporters/khong-co/parked", Some(&secretariat))
        .await;
    assert_status(&no_exporter, 404);
    assert_eq!(no_exporter.body["code"], "exporter_not_found");
    let delegation_status = daemon.get("/api/exporters", Some(&delegation)).await;
    assert_status(&delegation_status, 403);

    // The chain verifies.
    let verify = daemon.get("/api/verify", Some(&delegation)).await;
    assert_status(&verify, 200);
    assert_eq!(verify.body["intact"], true);
    assert!(verify.body["events_checked"].as_u64().expect("a count") > 5);
    daemon.shutdown().await;
}

/// Reads server-sent events from a response body until `count` events have arrived: each as
/// (id, data).
async fn read_sse(body: &mut Incoming, buffer: &mut String, count: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    out.push((id, serde_json::from_str(&data).expect("JSON data")));
                    if out.len() == count {
                        return;
                    }
                }
            }
            let frame = body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .expect("the events arrive");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_deliver_committed_events_from_a_position() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let quai_to = daemon
        .token(Role::Unit, Some("xa-quai-to"), "van-thu")
        .await;
    let started = daemon.start_seed(&secretariat).await;
    assert_status(&started, 201);
    let history = daemon
        .get(&format!("/api/cases/{CASE}/history"), Some(&secretariat))
        .await;
    let head = history.body[0]["position"]
        .as_u64()
        .expect("the start's position");

    // From a position: that event first, then what is committed later.
    let mut sender = daemon.connect().await;
    let request = daemon
        .request(
            "GET",
            &format!("/api/events?from={head}&stream=case/"),
            Some(&secretariat),
            &[],
        )
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/event-stream")
    );
    let mut body = response.into_body();
    let mut buffer = String::new();
    let first = read_sse(&mut body, &mut buffer, 1).await;
    assert_eq!(first[0].0, head);
    assert_eq!(first[0].1["event_type"], "CaseEstablished");
    assert_eq!(first[0].1["position"], head);
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});
    assert_status(
        &daemon.command(&secretariat, "issue_notice", notice).await,
        200,
    );
    let live = read_sse(&mut body, &mut buffer, 1).await;
    assert_eq!(live[0].1["event_type"], "NoticeIssued");
    assert_eq!(live[0].1["stream_id"], "case/tg2024");
    let notice_position = live[0].0;

    // Last-Event-ID resumes after it; a unit token gets only its cases' events, redacted.
    let report =
        json!({"unit": "xa-ta-ma", "received_at": "2024-03-25T08:00:00+07:00", "channel": "paper"});
    assert_status(
        &daemon.command(&secretariat, "receive_report", report).await,
        200,
    );
    let mut sender = daemon.connect().await;
    let last = (notice_position - 1).to_string();
    let request = daemon
        .request(
            "GET",
            "/api/events",
            Some(&quai_to),
            &[("last-event-id", last.as_str())],
        )
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buffer = String::new();
    let resumed = read_sse(&mut body, &mut buffer, 1).await;
    assert_eq!(resumed[0].0, notice_position);
    assert_eq!(resumed[0].1["event_type"], "NoticeIssued");
    // Its own report arrives next; xã Tà Ma's was skipped.
    let own = json!({"unit": "xa-quai-to", "received_at": "2024-03-25T08:00:00+07:00", "channel": "email"});
    assert_status(&daemon.command(&quai_to, "receive_report", own).await, 200);
    let next = read_sse(&mut body, &mut buffer, 1).await;
    assert_eq!(next[0].1["event_type"], "ReportReceived");
    assert_eq!(next[0].1["data"]["input"]["unit"], "xa-quai-to");
    assert!(
        next[0].0 > notice_position + 1,
        "xã Tà Ma's report was skipped"
    );
    assert!(!buffer.contains("xa-ta-ma"));
    let forbidden = daemon
        .get("/api/events?stream=tokens", Some(&quai_to))
        .await;
    assert_status(&forbidden, 403);
    let bad = daemon
        .send(
            "GET",
            "/api/events",
            Some(&secretariat),
            &[("last-event-id", "abc")],
            Vec::new(),
        )
        .await;
    assert_status(&bad, 400);

    // Shutting down ends the open streams.
    daemon.shutdown().await;
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match body.frame().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends when the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_rejections_timers_and_latency() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let viewer = daemon.token(Role::Viewer, None, "xem").await;
    assert_status(&daemon.start_seed(&secretariat).await, 201);
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});
    assert_status(
        &daemon
            .command(&secretariat, "issue_notice", notice.clone())
            .await,
        200,
    );
    assert_status(
        &daemon
            .command(&secretariat, "issue_notice", notice.clone())
            .await,
        422,
    );
    assert_status(&daemon.command(&viewer, "issue_notice", notice).await, 403);
    // The scheduler has derived the case's timers (report reminders, overdue mark, ...).
    let text = tokio::time::timeout(PATIENCE, async {
        loop {
            let m = daemon.get("/metrics", None).await;
            assert_status(&m, 200);
            if !m.text.contains("giamsat_timers_pending 0\n") {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the scheduler indexes the timers");
    assert_eq!(
        text.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = text.text;
    for expected in [
        "giamsat_commands_accepted_total 1\n",
        "giamsat_cases_started_total 1\n",
        "giamsat_commands_rejected_total{code=\"wrong_stage\"} 1\n",
        "giamsat_commands_rejected_total{code=\"role_not_allowed\"} 1\n",
        "giamsat_events_appended_total 2\n",
        "giamsat_exporter_lag_events{exporter=\"documents\"}",
        "giamsat_exporter_parked{exporter=\"documents\"} 0\n",
        "# TYPE giamsat_http_request_duration_seconds histogram",
        "giamsat_http_request_duration_seconds_count{route=\"/api/cases/{id}/commands/{command}\",method=\"POST\"} 3\n",
        "giamsat_http_responses_total{route=\"/api/cases/{id}/commands/{command}\",method=\"POST\",status=\"422\"} 1\n",
        "giamsat_tokens_active 3\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let pending: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("giamsat_timers_pending "))
        .and_then(|v| v.parse().ok())
        .expect("pending timers");
    assert!(pending > 0);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    assert_status(&daemon.start_seed(&secretariat).await, 201);
    let big = json!({"unit": "xa-quai-to", "reason": "x".repeat(2 * 1024 * 1024)});
    let declared = daemon
        .post(
            &format!("/api/cases/{CASE}/commands/send_reminder"),
            &secretariat,
            big,
        )
        .await;
    assert_status(&declared, 413);
    assert_eq!(declared.body["code"], "body_too_large");
    assert_eq!(declared.body["details"]["limit_bytes"], 1024 * 1024);

    // Without a declared length (chunked), the limit holds as well.
    let mut sender = daemon.connect_streaming().await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let request = daemon
        .request(
            "POST",
            &format!("/api/cases/{CASE}/commands/send_reminder"),
            Some(&secretariat),
            &[("content-type", "application/json")],
        )
        .body(channel_body(rx))
        .expect("a request");
    let sending = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        for _ in 0..32 {
            if tx.send(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    // The daemon stops reading at the limit, answers 413 and closes the connection (RFC 9110
    // lets a server close rather than read a body it refuses). A client still sending may see
    // the connection closed under its write before it reads the answer; either way nothing of
    // the body is taken.
    let before = history_types(&daemon, &secretariat).await.len();
    match sender.send_request(request).await {
        Ok(response) => {
            let chunked = answer(response).await;
            assert_status(&chunked, 413);
            assert_eq!(chunked.body["code"], "body_too_large");
        }
        Err(e) => assert!(
            e.is_body_write_aborted() || e.is_closed() || e.is_incomplete_message() || {
                let text = format!("{e:?}");
                text.contains("BodyWrite") || text.contains("BrokenPipe")
            },
            "neither a 413 nor a closed connection: {e:?}"
        ),
    }
    sending.abort();
    assert_eq!(history_types(&daemon, &secretariat).await.len(), before);
    assert_status(&daemon.get("/healthz", None).await, 200);
    daemon.shutdown().await;
}

type ChannelBody = StreamBody<
    futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>,
>;

fn channel_body(rx: mpsc::Receiver<Bytes>) -> ChannelBody {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(Frame::data(chunk)), rx))
    });
    StreamBody::new(Box::pin(stream))
}

impl Daemon {
    async fn connect_streaming(&self) -> hyper::client::conn::http1::SendRequest<ChannelBody> {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        sender
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    assert_status(&daemon.start_seed(&secretariat).await, 201);

    // A command whose body is still arriving when the shutdown begins.
    let mut sender = daemon.connect_streaming().await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let request = daemon
        .request(
            "POST",
            &format!("/api/cases/{CASE}/commands/issue_notice"),
            Some(&secretariat),
            &[("content-type", "application/json")],
        )
        .body(channel_body(rx))
        .expect("a request");
    tx.send(Bytes::from_static(b"{\"issued_on\": \"2024-03-25\", "))
        .await
        .expect("the first part");
    let in_flight = tokio::spawn(async move { sender.send_request(request).await });
    // The daemon has the request once its in-flight gauge counts it (with the metrics request).
    tokio::time::timeout(PATIENCE, async {
        loop {
            let m = daemon.get("/metrics", None).await;
            if m.text.contains("giamsat_http_requests_in_flight 2\n") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request reaches the daemon");

    let stop = daemon.stop.take().expect("running");
    let _ = stop.send(());
    // New connections are refused once the listener has closed.
    tokio::time::timeout(PATIENCE, async {
        while TcpStream::connect(daemon.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the listener closes");
    assert!(!daemon.task.as_ref().expect("the task").is_finished());

    tx.send(Bytes::from_static(b"\"document\": \"thong-bao-lich\"}"))
        .await
        .expect("the rest of the body");
    drop(tx);
    let response = in_flight
        .await
        .expect("the client task")
        .expect("the request in flight is answered");
    let finished = answer(response).await;
    assert_status(&finished, 200);
    assert_eq!(finished.body["case"]["stage"], "notified");
    daemon
        .task
        .take()
        .expect("the task")
        .await
        .expect("the daemon task")
        .expect("the daemon stops cleanly");
    // The command was committed.
    let loaded = giamsat_cases::load_case(&daemon.store, CASE)
        .await
        .expect("read")
        .expect("the case");
    assert_eq!(loaded.state.stage, "notified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_kept_as_hashes_and_the_first_admin_is_made_once() {
    let mut daemon = Daemon::start().await;
    let tokens = giamsat_server::list_tokens(&daemon.store)
        .await
        .expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (tokens[0].name.as_str(), tokens[0].role),
        ("admin", Role::Admin)
    );
    assert!(daemon.admin.starts_with("gs_") && daemon.admin.len() == 3 + 64);
    // The log holds the hash, never the token.
    let stream = giamsat_types::StreamId::new("tokens").expect("a stream id");
    let events = daemon
        .store
        .read_stream(&stream, giamsat_store::Direction::Forward, None, 10)
        .await
        .expect("the tokens stream");
    assert_eq!(events[0].event_type, "TokenCreated");
    assert_eq!(
        events[0].data_value()["sha256"],
        giamsat_server::auth::hash_token(&daemon.admin)
    );
    assert!(!events[0].data.contains(&daemon.admin[3..]));

    // What a token may carry.
    let at = daemon.clock.now();
    let unit_without_code =
        create_token(&daemon.store, Role::Unit, None, None, "admin:test", at).await;
    assert!(matches!(
        unit_without_code,
        Err(giamsat_server::TokenError::UnitRequired)
    ));
    let viewer_with_unit = create_token(
        &daemon.store,
        Role::Viewer,
        Some("xa-ta-ma"),
        None,
        "admin:test",
        at,
    )
    .await;
    assert!(matches!(
        viewer_with_unit,
        Err(giamsat_server::TokenError::UnitNotAllowed(Role::Viewer))
    ));
    let bad_name = create_token(
        &daemon.store,
        Role::Viewer,
        None,
        Some("a:b"),
        "admin:test",
        at,
    )
    .await;
    assert!(matches!(
        bad_name,
        Err(giamsat_server::TokenError::InvalidName(_))
    ));
    let viewer = create_token(&daemon.store, Role::Viewer, None, None, "admin:test", at)
        .await
        .expect("a viewer token");
    assert_eq!(viewer.info.name, format!("viewer-{}", viewer.info.id));
    let same_name = create_token(
        &daemon.store,
        Role::Viewer,
        None,
        Some(&viewer.info.name),
        "admin:test",
        at,
    )
    .await;
    assert!(matches!(
        same_name,
        Err(giamsat_server::TokenError::DuplicateName(_))
    ));
    giamsat_server::revoke_token(&daemon.store, &viewer.info.id, "admin:test", at)
        .await
        .expect("revoked");
    let twice =
        giamsat_server::revoke_token(&daemon.store, &viewer.info.id, "admin:test", at).await;
    assert!(matches!(
        twice,
        Err(giamsat_server::TokenError::AlreadyRevoked { .. })
    ));
    let unknown = giamsat_server::revoke_token(&daemon.store, "khong-co", "admin:test", at).await;
    assert!(matches!(
        unknown,
        Err(giamsat_server::TokenError::NotFound(_))
    ));

    // A second start on the same log makes no new admin token.
    daemon.shutdown().await;
    let mut options = ServeOptions::new(daemon.store.clone(), root().join("workflows"));
    options.listen = "127.0.0.1:0".parse().expect("an address");
    let again = Server::bind(options).await.expect("binds again");
    assert!(again.initial_admin_token().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_moves_a_manual_clock_forward_and_the_scheduler_follows() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let viewer = daemon.token(Role::Viewer, None, "xem").await;
    let clock = daemon.get("/api/clock", Some(&viewer)).await;
    assert_status(&clock, 200);
    assert_eq!(clock.body["kind"], "manual");
    assert_eq!(clock.body["now"], "2024-03-25T01:00:00Z");

    // Only an admin moves it, to a time, forward.
    let to = |now: &str| json!({ "now": now });
    let refused = daemon
        .post("/api/clock", &secretariat, to("2024-04-01T08:00:00+07:00"))
        .await;
    assert_status(&refused, 403);
    assert_eq!(refused.body["code"], "role_not_allowed");
    let not_a_time = daemon.post("/api/clock", &daemon.admin, to("mai")).await;
    assert_status(&not_a_time, 400);
    assert!(
        not_a_time.body["message"]
            .as_str()
            .expect("a message")
            .starts_with("/now: \"mai\" is not an RFC 3339 time")
    );
    let extra = daemon
        .post(
            "/api/clock",
            &daemon.admin,
            json!({"now": "2024-04-01T08:00:00+07:00", "speed": 2}),
        )
        .await;
    assert_status(&extra, 400);
    let back = daemon
        .post("/api/clock", &daemon.admin, to("2024-03-01T08:00:00+07:00"))
        .await;
    assert_status(&back, 409);
    assert_eq!(back.body["code"], "clock_backwards");
    assert_eq!(daemon.clock.now(), t("2024-03-25T08:00:00+07:00"));

    // Past the reports' deadline: the scheduler marks the reports overdue on its own.
    assert_status(&daemon.start_seed(&secretariat).await, 201);
    let notice = json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"});
    assert_status(
        &daemon.command(&secretariat, "issue_notice", notice).await,
        200,
    );
    let moved = daemon
        .post("/api/clock", &daemon.admin, to("2024-04-21T00:00:00+07:00"))
        .await;
    assert_status(&moved, 200);
    assert_eq!(moved.body["now"], "2024-04-20T17:00:00Z");
    assert_eq!(daemon.clock.now(), t("2024-04-21T00:00:00+07:00"));
    let mut stage = Value::Null;
    for _ in 0..500 {
        let case = daemon
            .get(&format!("/api/cases/{CASE}"), Some(&viewer))
            .await;
        stage = case.body["stage"].clone();
        if stage == "reports_due" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stage, "reports_due");
    assert!(
        history_types(&daemon, &viewer)
            .await
            .contains(&"ReportsMarkedOverdue".to_owned())
    );
    daemon.shutdown().await;

    // The system clock (and a simulated one) cannot be moved.
    let mut system = Daemon::start_with(|o| o.clock = Clock::System).await;
    let fixed = system
        .post("/api/clock", &system.admin, to("2030-01-01T00:00:00Z"))
        .await;
    assert_status(&fixed, 409);
    assert_eq!(fixed.body["code"], "clock_not_manual");
    assert_eq!(
        system.get("/api/clock", Some(&system.admin)).await.body["kind"],
        "system"
    );
    system.shutdown().await;
}
