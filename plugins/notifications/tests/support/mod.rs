//! Shared by the notifications tests: the seed case driven through its stages on a real SQLite
//! store, a real SMTP server and a real HTTP server on 127.0.0.1 (tokio, speaking the protocols
//! over TCP), and careful readers of what they receive (MIME, RFC 2047, iCalendar).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use giamsat_store::Store;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[allow(unused_imports)]
pub use giamsat_testkit::{DEL, SEC, act, at, root, sqlite, workflow, yaml};

/// The seed start data, with `<code>@example.org` for every unit except those in `without`.
pub fn seed(without: &[&str]) -> Value {
    let mut data = giamsat_testkit::seed();
    for unit in data["units"].as_array_mut().expect("units") {
        let code = unit["code"].as_str().expect("code").to_owned();
        if !without.contains(&code.as_str()) {
            unit["email"] = json!(format!("{code}@example.org"));
        }
    }
    data
}

pub async fn start(store: &Store, case: &str, data: Value) {
    giamsat_testkit::start(store, &workflow("giam-sat-chuyen-de"), case, data).await;
}

/// The seed case up to the visits: plan, notice, a reminder to xã Ta Ma, xã Quài Cang's visit
/// moved twice, xã Phình Sáng's visit cancelled, the reports of Phòng Nội vụ and UBND huyện, and
/// the overdue mark.
pub async fn run_seed_until_overdue(store: &Store, case: &str) {
    let s = store;
    act(
        s,
        case,
        SEC,
        "issue_plan",
        json!({"issued_on": "2024-03-21", "document": "ke-hoach"}),
        "2024-03-21T08:00:00+07:00",
    )
    .await;
    act(
        s,
        case,
        SEC,
        "issue_notice",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        "2024-03-25T08:00:00+07:00",
    )
    .await;
    act(
        s,
        case,
        "system:scheduler",
        "send_reminder",
        json!({"unit": "xa-ta-ma"}),
        "2024-04-17T08:00:00+07:00",
    )
    .await;
    act(s, case, SEC, "reschedule_visit", json!({"unit": "xa-quai-cang", "date": "2024-05-06", "start_time": "08:00", "reason": "Trùng lịch tiếp công dân của xã"}), "2024-04-18T08:00:00+07:00").await;
    act(s, case, SEC, "reschedule_visit", json!({"unit": "xa-quai-cang", "date": "2024-05-07", "start_time": "14:00", "reason": "Xã đề nghị lùi sang buổi chiều"}), "2024-04-19T08:00:00+07:00").await;
    act(s, case, SEC, "cancel_visit", json!({"unit": "xa-phinh-sang", "reason": "Đoàn đã làm việc với xã trong đợt giám sát trước"}), "2024-04-19T09:00:00+07:00").await;
    for unit in ["phong-noi-vu", "ubnd-huyen"] {
        act(
            s,
            case,
            SEC,
            "receive_report",
            json!({"unit": unit, "received_at": "2024-04-18T09:00:00+07:00", "channel": "email"}),
            "2024-04-18T09:00:00+07:00",
        )
        .await;
    }
    act(
        s,
        case,
        "system:scheduler",
        "mark_reports_overdue",
        json!({}),
        "2024-04-21T00:00:00+07:00",
    )
    .await;
}

/// From the delegation meeting to an overdue recommendation.
pub async fn run_seed_to_the_end(store: &Store, case: &str) {
    let s = store;
    act(
        s,
        case,
        DEL,
        "hold_meeting",
        json!({"held_at": "2024-04-24T07:30:00+07:00"}),
        "2024-04-24T07:30:00+07:00",
    )
    .await;
    act(
        s,
        case,
        "system:scheduler",
        "send_visit_reminder",
        json!({"unit": "xa-quai-to", "visit_date": "2024-04-26"}),
        "2024-04-25T08:00:00+07:00",
    )
    .await;
    for (unit, day) in [
        ("thi-tran-tuan-giao", "2024-04-25"),
        ("xa-quai-to", "2024-04-26"),
        ("xa-quai-nua", "2024-05-02"),
        ("xa-quai-na-tong", "2024-05-03"),
        ("xa-quai-cang", "2024-05-07"),
        ("xa-ta-ma", "2024-05-09"),
        ("phong-noi-vu", "2024-05-10"),
        ("ubnd-huyen", "2024-05-13"),
    ] {
        act(s, case, DEL, "record_visit", json!({"unit": unit, "held_at": format!("{day}T08:00:00+07:00"), "attendees": ["Trần Bình Trọng", "Nguyễn Thị Huyền"], "minutes_summary": "Đơn vị đã báo cáo; Đoàn đề nghị đẩy nhanh số hóa hồ sơ."}), &format!("{day}T17:00:00+07:00")).await;
    }
    act(s, case, DEL, "record_finding", json!({"id": "f1", "member": "Trần Bình Trọng", "unit": "ubnd-huyen", "text": "Tỷ lệ số hóa hồ sơ, kết quả giải quyết TTHC còn thấp."}), "2024-05-16T08:00:00+07:00").await;
    act(s, case, SEC, "issue_findings_report", json!({"issued_on": "2024-05-25", "summary": "Công tác cải cách hành chính có chuyển biến tích cực.", "recommendations": [{"id": "kn-1", "text": "Đẩy nhanh số hóa hồ sơ, kết quả giải quyết TTHC", "to": "UBND huyện"}]}), "2024-05-25T08:00:00+07:00").await;
    act(s, case, SEC, "adopt_resolution", json!({"number": "20/NQ-HĐND", "date": "2024-07-10", "recommendations": [{"id": "kn-1", "text": "Đẩy nhanh số hóa hồ sơ, kết quả giải quyết TTHC", "responsible": "UBND huyện", "deliverable": "Báo cáo kết quả số hóa", "deadline": "2024-12-31"}]}), "2024-07-10T08:00:00+07:00").await;
    act(
        s,
        case,
        "system:scheduler",
        "send_recommendation_reminder",
        json!({"recommendation": "kn-1", "deadline": "2024-12-31"}),
        "2024-12-16T08:00:00+07:00",
    )
    .await;
    act(
        s,
        case,
        "system:scheduler",
        "mark_recommendation_overdue",
        json!({"recommendation": "kn-1"}),
        "2025-01-02T00:00:00+07:00",
    )
    .await;
}

/// The exporter's roles: two addresses for the secretariat, one for the delegation.
pub fn roles() -> Value {
    json!({
        "secretariat": ["Văn phòng HĐND&UBND huyện <vanphong@example.org>", "thuky@example.org"],
        "delegation": ["Trưởng đoàn giám sát <truongdoan@example.org>"],
    })
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// AUTH PLAIN/LOGIN advertised and required, with these credentials.
    pub credentials: Option<(String, String)>,
    /// Recipients refused with 550.
    pub reject: Vec<String>,
    /// Stop (close the listener and every connection) after accepting this many messages.
    pub stop_after: Option<usize>,
}

/// A small SMTP server on 127.0.0.1: EHLO/HELO, AUTH PLAIN and LOGIN, MAIL FROM, RCPT TO, DATA
/// (dot-unstuffed), RSET, NOOP, QUIT. Every accepted message is kept.
pub struct SmtpServer {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Every command line received, in order.
    pub log: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    /// Listens on `port` (0: any free port).
    pub async fn start(port: u16, options: SmtpOptions) -> SmtpServer {
        Self::start_with(port, options, Arc::new(Mutex::new(Vec::new()))).await
    }

    /// Listens on `port`, adding to an existing store of received messages.
    pub async fn start_with(
        port: u16,
        options: SmtpOptions,
        received: Arc<Mutex<Vec<Received>>>,
    ) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = watch::channel(false);
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let received = received.clone();
            let log = log.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut stopped_accept = stopped.clone();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { break };
                            let (received, log, options) = (received.clone(), log.clone(), options.clone());
                            let (stop, mut stopped) = (stop.clone(), stopped.clone());
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = session(socket, received, log, options, stop) => {}
                                    _ = stopped.wait_for(|s| *s) => {}
                                }
                            });
                        }
                        _ = stopped_accept.wait_for(|s| *s) => break,
                    }
                }
            })
        };
        SmtpServer {
            port,
            received,
            log,
            stop,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Stops listening and drops every connection; the port is free again when this returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stopped by itself (`stop_after`).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn reply(w: &mut (impl AsyncWriteExt + Unpin), text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

async fn session(
    socket: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    log: Arc<Mutex<Vec<String>>>,
    options: SmtpOptions,
    stop: watch::Sender<bool>,
) -> std::io::Result<()> {
    let (read, mut w) = socket.into_split();
    let mut r = BufReader::new(read);
    reply(&mut w, "220 127.0.0.1 ESMTP giamsat-test\r\n").await?;
    let mut from = String::new();
    let mut to: Vec<String> = Vec::new();
    let mut authed = options.credentials.is_none();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        log.lock().expect("lock").push(command.clone());
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let auth = if options.credentials.is_some() {
                "250-AUTH PLAIN LOGIN\r\n"
            } else {
                ""
            };
            reply(
                &mut w,
                &format!(
                    "250-127.0.0.1\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{auth}250 SIZE 10485760\r\n"
                ),
            )
            .await?;
        } else if upper.starts_with("HELO") {
            reply(&mut w, "250 127.0.0.1\r\n").await?;
        } else if upper.starts_with("AUTH PLAIN") {
            let encoded = command[10..].trim().to_owned();
            let encoded = if encoded.is_empty() {
                reply(&mut w, "334 \r\n").await?;
                line.clear();
                r.read_line(&mut line).await?;
                line.trim().to_owned()
            } else {
                encoded
            };
            let decoded = base64_decode(&encoded);
            let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
            let ok = options.credentials.as_ref().is_some_and(|(u, p)| {
                parts.len() == 3 && parts[1] == u.as_bytes() && parts[2] == p.as_bytes()
            });
            authed = ok;
            reply(
                &mut w,
                if ok {
                    "235 2.7.0 Authentication successful\r\n"
                } else {
                    "535 5.7.8 Authentication credentials invalid\r\n"
                },
            )
            .await?;
        } else if upper.starts_with("AUTH LOGIN") {
            reply(&mut w, "334 VXNlcm5hbWU6\r\n").await?;
            line.clear();
            r.read_line(&mut line).await?;
            let user = base64_decode(line.trim());
            reply(&mut w, "334 UGFzc3dvcmQ6\r\n").await?;
            line.clear();
            r.read_line(&mut line).await?;
            let pass = base64_decode(line.trim());
            let ok = options
                .credentials
                .as_ref()
                .is_some_and(|(u, p)| user == u.as_bytes() && pass == p.as_bytes());
            authed = ok;
            reply(
                &mut w,
                if ok {
                    "235 2.7.0 Authentication successful\r\n"
                } else {
                    "535 5.7.8 Authentication credentials invalid\r\n"
                },
            )
            .await?;
        } else if upper.starts_with("MAIL FROM:") {
            if !authed {
                reply(&mut w, "530 5.7.0 Authentication required\r\n").await?;
                continue;
            }
            from = angle(&command);
            to.clear();
            reply(&mut w, "250 2.1.0 Ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let address = angle(&command);
            if options.reject.contains(&address) {
                reply(&mut w, "550 5.1.1 Mailbox unavailable\r\n").await?;
            } else {
                to.push(address);
                reply(&mut w, "250 2.1.5 Ok\r\n").await?;
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                reply(&mut w, "554 5.5.1 No valid recipients\r\n").await?;
                continue;
            }
            reply(&mut w, "354 End data with <CR><LF>.<CR><LF>\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut raw = Vec::new();
                if r.read_until(b'\n', &mut raw).await? == 0 {
                    return Ok(());
                }
                if raw == b".\r\n" {
                    break;
                }
                let body = if raw.starts_with(b"..") {
                    &raw[1..]
                } else {
                    &raw[..]
                };
                data.extend_from_slice(body);
            }
            let total = {
                let mut all = received.lock().expect("lock");
                all.push(Received {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                all.len()
            };
            reply(&mut w, "250 2.0.0 Ok: queued\r\n").await?;
            if options.stop_after.is_some_and(|n| total >= n) {
                let _ = stop.send(true);
                return Ok(());
            }
        } else if upper == "RSET" {
            from.clear();
            to.clear();
            reply(&mut w, "250 2.0.0 Ok\r\n").await?;
        } else if upper == "NOOP" {
            reply(&mut w, "250 2.0.0 Ok\r\n").await?;
        } else if upper == "QUIT" {
            reply(&mut w, "221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            reply(&mut w, "502 5.5.2 Command not recognized\r\n").await?;
        }
    }
}

fn angle(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for b in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|a| *a == b) else {
            continue;
        };
        buffer = (buffer << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// A port nothing listens on (bound, then released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One request the HTTP server read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

/// A small HTTP/1.1 server on 127.0.0.1 answering each request with the next status of
/// `statuses` (the last one repeats), `Connection: close`.
pub struct HttpServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn start(statuses: Vec<u16>) -> HttpServer {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let requests = requests.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        break;
                    };
                    let _ = http_exchange(socket, &requests, &statuses).await;
                }
            })
        };
        HttpServer {
            port,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn http_exchange(
    socket: TcpStream,
    requests: &Arc<Mutex<Vec<Request>>>,
    statuses: &[u16],
) -> std::io::Result<()> {
    let (read, mut w) = socket.into_split();
    let mut r = BufReader::new(read);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    r.read_exact(&mut body).await?;
    let status = {
        let mut all = requests.lock().expect("lock");
        let status = statuses
            .get(all.len())
            .or(statuses.last())
            .copied()
            .unwrap_or(200);
        all.push(Request {
            method,
            path,
            headers,
            body,
            status,
        });
        status
    };
    let reason = if status < 300 {
        "OK"
    } else {
        "Internal Server Error"
    };
    w.write_all(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    w.flush().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading what arrived

/// A received message, decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// (file name, content type, bytes).
    pub attachments: Vec<(String, String, Vec<u8>)>,
    pub headers: BTreeMap<String, String>,
}

impl Mail {
    pub fn attachment(&self, suffix: &str) -> Option<&(String, String, Vec<u8>)> {
        self.attachments.iter().find(|a| a.0.ends_with(suffix))
    }
}

/// Parses raw message bytes with mail-parser (RFC 2047 words, quoted-printable and base64 bodies
/// decoded).
pub fn parse_mail(raw: &[u8]) -> Mail {
    use mail_parser::{MessageParser, MimeHeaders};
    let m = MessageParser::default()
        .parse(raw)
        .expect("a parseable message");
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
    };
    let mut headers = BTreeMap::new();
    for h in m.headers() {
        let name = h.name().to_owned();
        if name.starts_with("X-Giamsat") {
            headers.insert(name, h.value().as_text().unwrap_or_default().to_owned());
        }
    }
    let attachments = m
        .attachments()
        .map(|a| {
            let ct = a
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
                .unwrap_or_default();
            (
                a.attachment_name().unwrap_or_default().to_owned(),
                ct,
                a.contents().to_vec(),
            )
        })
        .collect();
    Mail {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        from: addresses(m.from()).join(","),
        to: addresses(m.to()),
        subject: m.subject().unwrap_or_default().to_owned(),
        body: m.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
        attachments,
        headers,
    }
}

/// A calendar component: its properties (name → values, unfolded, parameters kept after `;`)
/// and sub-components.
#[derive(Debug, Clone, Default)]
pub struct Component {
    pub name: String,
    pub properties: Vec<(String, String)>,
    pub children: Vec<Component>,
}

impl Component {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name || k.starts_with(&format!("{name};")))
            .map(|(_, v)| v.as_str())
    }

    pub fn events(&self) -> Vec<&Component> {
        self.children
            .iter()
            .filter(|c| c.name == "VEVENT")
            .collect()
    }
}

/// Parses an iCalendar text strictly: CRLF line ends, no line over 75 octets, BEGIN/END
/// properly nested, one VCALENDAR with VERSION and PRODID, each VEVENT with UID, DTSTAMP,
/// DTSTART.
pub fn parse_ics(text: &str) -> Component {
    assert!(text.ends_with("\r\n"), "ends with CRLF");
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(raw.len() <= 75, "{} octets: {raw:?}", raw.len());
        if let Some(rest) = raw.strip_prefix(' ') {
            lines.last_mut().expect("continuation").push_str(rest);
        } else {
            lines.push(raw.to_owned());
        }
    }
    let mut stack: Vec<Component> = Vec::new();
    let mut done: Option<Component> = None;
    for line in lines {
        // The value starts at the first colon outside a quoted parameter value.
        let mut quoted = false;
        let colon = line
            .char_indices()
            .find(|(_, c)| {
                if *c == '"' {
                    quoted = !quoted;
                }
                *c == ':' && !quoted
            })
            .map(|(i, _)| i)
            .expect("NAME:VALUE");
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        match name {
            "BEGIN" => stack.push(Component {
                name: value.to_owned(),
                ..Component::default()
            }),
            "END" => {
                let c = stack.pop().expect("END without BEGIN");
                assert_eq!(c.name, value, "END:{value} closes BEGIN:{}", c.name);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(c),
                    None => {
                        assert!(done.is_none(), "one VCALENDAR");
                        done = Some(c);
                    }
                }
            }
            _ => stack
                .last_mut()
                .expect("property inside a component")
                .properties
                .push((name.to_owned(), value.to_owned())),
        }
    }
    assert!(
        stack.is_empty(),
        "unclosed {:?}",
        stack.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let cal = done.expect("a VCALENDAR");
    assert_eq!(cal.name, "VCALENDAR");
    assert_eq!(cal.get("VERSION"), Some("2.0"));
    assert!(cal.get("PRODID").is_some());
    for e in cal.events() {
        for p in ["UID", "DTSTAMP", "DTSTART", "DTEND", "SEQUENCE", "SUMMARY"] {
            assert!(e.get(p).is_some(), "VEVENT without {p}: {e:?}");
        }
    }
    cal
}
