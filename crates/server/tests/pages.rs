//! The web pages over real HTTP/1.1, as a browser without JavaScript uses them: each test starts
//! the daemon in-process on 127.0.0.1:0 with a fresh SQLite store, the repository's workflows and
//! calendars, a manual clock at the seed's notice date (25/3/2024 08:00, Asia/Ho_Chi_Minh) and
//! the documents exporter, then signs in with a token, keeps the session cookie, reads pages and
//! posts forms (URL-encoded or multipart) with hyper's client.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use giamsat_server::Role;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use support::{CASE, Daemon, PATIENCE, root, seed};

/// The name a test gives the first unit, to check that pages escape case data.
const HOSTILE_NAME: &str = "<script>alert(\"x\")</script> Ủy ban nhân dân huyện";

/// An answer: status, headers and body text.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: hyper::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The value of the hidden field or input `name`.
    fn input_value(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.text.find(&marker)? + marker.len();
        let end = self.text[start..].find('"')? + start;
        Some(self.text[start..end].to_owned())
    }
}

fn assert_status(page: &Page, status: u16) {
    assert_eq!(page.status, status, "unexpected answer: {}", page.text);
}

/// No `src=` or `href=` (or CSS `url(`) names another site: every resource is the daemon's.
fn assert_local(page: &Page) {
    let lower = page.text.to_lowercase();
    for attribute in ["src=", "href=", "action=", "url("] {
        let mut rest = lower.as_str();
        while let Some(i) = rest.find(attribute) {
            let value = rest[i + attribute.len()..].trim_start_matches(['"', '\'', ' ']);
            assert!(
                !(value.starts_with("http:")
                    || value.starts_with("https:")
                    || value.starts_with("//")),
                "{attribute} names another site: {}",
                &value[..value.len().min(80)]
            );
            rest = &rest[i + attribute.len()..];
        }
    }
    assert!(!lower.contains("@import"), "no stylesheet imports");
}

impl Daemon {
    fn uploads(&self) -> PathBuf {
        self.dir.path().join("uploads")
    }

    /// One request on a new connection; the answer's body is read whole.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Page {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = sender.send_request(request).await.expect("a response");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the body").to_bytes();
        Page {
            status: parts.status.as_u16(),
            headers: parts.headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// An API call with a token.
    async fn api(&self, method: &str, path: &str, token: &str, body: Value) -> Page {
        let mut headers = vec![("authorization", format!("Bearer {token}"))];
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            headers.push(("content-type", "application/json".to_owned()));
            body.to_string().into_bytes()
        };
        self.send(method, path, &headers, bytes).await
    }

    async fn start_seed(&self, token: &str, data: Value) {
        let started = self
            .api(
                "POST",
                "/api/cases",
                token,
                json!({"workflow": "giam-sat-chuyen-de", "id": CASE, "data": data}),
            )
            .await;
        assert_status(&started, 201);
    }

    async fn command(&self, token: &str, command: &str, query: &str, input: Value) -> Page {
        self.api(
            "POST",
            &format!("/api/cases/{CASE}/commands/{command}{query}"),
            token,
            input,
        )
        .await
    }

    async fn history(&self, token: &str) -> Vec<Value> {
        let history = self
            .api(
                "GET",
                &format!("/api/cases/{CASE}/history"),
                token,
                Value::Null,
            )
            .await;
        assert_status(&history, 200);
        history.json().as_array().cloned().unwrap_or_default()
    }

    /// Waits until the documents exporter has recorded at least `n` documents of the case.
    async fn wait_for_documents(&self, token: &str, n: usize) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let list = self
                    .api(
                        "GET",
                        &format!("/api/cases/{CASE}/documents"),
                        token,
                        Value::Null,
                    )
                    .await;
                if list.json().as_array().map_or(0, Vec::len) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the documents exporter renders the documents");
    }
}

/// A browser: the daemon's session cookie, kept between requests.
struct Browser<'a> {
    daemon: &'a Daemon,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(daemon: &'a Daemon) -> Browser<'a> {
        Browser {
            daemon,
            cookie: None,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("accept", "text/html".to_owned())];
        if let Some(c) = &self.cookie {
            headers.push(("cookie", c.clone()));
        }
        headers
    }

    async fn get(&self, path: &str) -> Page {
        let page = self
            .daemon
            .send("GET", path, &self.headers(), Vec::new())
            .await;
        if page.header("content-type").starts_with("text/html") {
            assert_local(&page);
        }
        page
    }

    /// Posts an URL-encoded form.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&'static str, String)],
    ) -> Page {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers = self.headers();
        headers.push((
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ));
        headers.extend(extra.iter().cloned());
        let page = self
            .daemon
            .send("POST", path, &headers, body.into_bytes())
            .await;
        if page.header("content-type").starts_with("text/html") {
            assert_local(&page);
        }
        page
    }

    /// Posts a multipart form with one file.
    async fn post_multipart(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        file: Option<(&str, &str, &[u8])>,
    ) -> Page {
        let boundary = "----giamsat-test-7d2f";
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        if let Some((name, filename, bytes)) = file {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/pdf\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut headers = self.headers();
        headers.push((
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        ));
        let page = self.daemon.send("POST", path, &headers, body).await;
        if page.header("content-type").starts_with("text/html") {
            assert_local(&page);
        }
        page
    }

    /// Signs in with a token; the session cookie is kept.
    async fn sign_in(&mut self, token: &str) -> Page {
        let page = self
            .post("/dang-nhap", &[("token", token), ("tiep", "/")])
            .await;
        assert_status(&page, 303);
        let set = page.header("set-cookie").to_owned();
        let pair = set.split(';').next().unwrap_or_default().to_owned();
        assert!(pair.starts_with("giamsat_phien="), "{set}");
        self.cookie = Some(pair);
        page
    }

    /// The session's form token, read from a page.
    async fn csrf(&self) -> String {
        self.get("/")
            .await
            .input_value("csrf")
            .expect("a page with the form token")
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The lines of a calendar file with folded lines joined.
fn unfold(ics: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in ics.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(rest) = raw.strip_prefix(' ') {
            lines.last_mut().expect("a line to continue").push_str(rest);
        } else {
            lines.push(raw.to_owned());
        }
    }
    lines
}

/// The calendar's components in order, checking that they nest: `VCALENDAR` around `VEVENT`s.
fn parse_ics(ics: &str) -> Vec<Vec<String>> {
    assert!(ics.ends_with("\r\n"), "lines end in CRLF");
    for line in ics.split("\r\n") {
        assert!(line.len() <= 75, "a line longer than 75 octets: {line:?}");
    }
    let lines = unfold(ics);
    assert_eq!(lines.first().map(String::as_str), Some("BEGIN:VCALENDAR"));
    assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
    assert!(lines.contains(&"VERSION:2.0".to_owned()));
    assert!(lines.iter().any(|l| l.starts_with("PRODID:")));
    let mut events = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in &lines[1..lines.len() - 1] {
        match line.as_str() {
            "BEGIN:VEVENT" => {
                assert!(current.is_none(), "VEVENT inside VEVENT");
                current = Some(Vec::new());
            }
            "END:VEVENT" => events.push(current.take().expect("END:VEVENT after BEGIN")),
            other => {
                assert!(other.contains(':'), "a content line: {other:?}");
                if let Some(event) = current.as_mut() {
                    event.push(other.to_owned());
                }
            }
        }
    }
    assert!(current.is_none(), "an unclosed VEVENT");
    events
}

fn property<'e>(event: &'e [String], name: &str) -> Option<&'e str> {
    event
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_session_cookie_and_lists_the_seed_case() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    daemon.start_seed(&secretariat, seed()).await;
    let notice = daemon
        .command(
            &secretariat,
            "issue_notice",
            "",
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        )
        .await;
    assert_status(&notice, 200);
    let mut browser = Browser::new(&daemon);

    // Without a session every page leads to the sign-in page, which remembers where to go.
    let home = browser.get("/").await;
    assert_status(&home, 303);
    assert_eq!(home.header("location"), "/dang-nhap");
    let case = browser.get("/ho-so/tg2024").await;
    assert_status(&case, 303);
    assert_eq!(case.header("location"), "/dang-nhap?tiep=/ho-so/tg2024");
    let form = browser.get("/dang-nhap?tiep=/ho-so/tg2024").await;
    assert_status(&form, 200);
    assert!(form.header("content-type").starts_with("text/html"));
    assert!(form.text.contains("<html lang=\"vi\">"));
    assert!(
        form.text
            .contains("<label for=\"token\">Mã truy cập</label>")
    );
    assert_eq!(form.input_value("tiep").as_deref(), Some("/ho-so/tg2024"));
    assert!(
        form.header("content-security-policy")
            .contains("default-src 'none'")
    );

    // A wrong token is refused on the page; a foreign site cannot post the form.
    let wrong = browser
        .post("/dang-nhap", &[("token", "gs_0000"), ("tiep", "/")])
        .await;
    assert_status(&wrong, 401);
    assert!(
        wrong
            .text
            .contains("Mã truy cập không đúng hoặc đã bị thu hồi")
    );
    assert!(wrong.header("set-cookie").is_empty());
    let foreign = browser
        .post_with(
            "/dang-nhap",
            &[("token", &secretariat)],
            &[("origin", "https://evil.example".to_owned())],
        )
        .await;
    assert_status(&foreign, 403);

    // The right token: a session cookie that is not the token, HttpOnly, SameSite=Strict, Path=/.
    let signed = browser.sign_in(&secretariat).await;
    assert_eq!(signed.header("location"), "/");
    let cookie = signed.header("set-cookie");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
    assert!(
        !cookie.contains(&secretariat),
        "the cookie is not the token"
    );
    assert!(
        !cookie.contains(&secretariat[3..]),
        "the cookie is not the token"
    );

    // The case list: id, workflow, stage, next deadline, warnings.
    let list = browser.get("/").await;
    assert_status(&list, 200);
    assert!(list.text.contains("<a href=\"/ho-so/tg2024\">tg2024</a>"));
    assert!(
        list.text
            .contains("Giám sát chuyên đề của Hội đồng nhân dân")
    );
    assert!(list.text.contains("Đã thông báo lịch, đang thu báo cáo"));
    assert!(list.text.contains("<strong>16/4/2024 08:00</strong>"));
    assert!(
        list.text
            .contains("Đôn đốc đơn vị chưa gửi báo cáo trước hạn")
    );
    assert!(list.text.contains("huyen · Văn phòng HĐND"));
    let signed_in_again = browser.get("/dang-nhap?tiep=/ho-so/tg2024").await;
    assert_status(&signed_in_again, 303);
    assert_eq!(signed_in_again.header("location"), "/ho-so/tg2024");

    // Signing out needs the form token, and ends the session on the server.
    let refused = browser.post("/dang-xuat", &[]).await;
    assert_status(&refused, 403);
    assert!(refused.text.contains("Biểu mẫu không hợp lệ"));
    let csrf = browser.csrf().await;
    let out = browser.post("/dang-xuat", &[("csrf", &csrf)]).await;
    assert_status(&out, 303);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = browser.get("/").await;
    assert_status(&after, 303);

    // The stylesheet and the script come from the daemon itself.
    let css = browser.get("/static/app.css").await;
    assert_status(&css, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert_local(&css);
    let js = browser.get("/static/app.js").await;
    assert_status(&js, 200);
    assert!(!js.text.contains("http:") && !js.text.contains("https:"));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_page_shows_the_course_of_the_case_and_escapes_its_data() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let mut data = seed();
    data["units"][0]["name"] = json!(HOSTILE_NAME);
    daemon.start_seed(&secretariat, data).await;
    let notice = daemon
        .command(
            &secretariat,
            "issue_notice",
            "",
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        )
        .await;
    assert_status(&notice, 200);
    // Reports: on time (before the deadline), then overdue marks, then a late one.
    let admin = daemon.admin.clone();
    let on_time = daemon
        .command(
            &admin,
            "receive_report",
            "?at=2024-04-18T09:00:00%2B07:00",
            json!({"unit": "phong-noi-vu", "received_at": "2024-04-18T09:00:00+07:00", "channel": "paper"}),
        )
        .await;
    assert_status(&on_time, 200);
    let overdue = daemon
        .command(
            &admin,
            "mark_reports_overdue",
            "?at=2024-04-21T00:00:00%2B07:00",
            Value::Null,
        )
        .await;
    assert_status(&overdue, 200);
    let late = daemon
        .command(
            &admin,
            "receive_report",
            "?at=2024-04-22T10:00:00%2B07:00",
            json!({"unit": "xa-quai-to", "received_at": "2024-04-22T10:00:00+07:00", "channel": "email"}),
        )
        .await;
    assert_status(&late, 200);
    let moved = daemon
        .command(
            &admin,
            "reschedule_visit",
            "?at=2024-04-22T11:00:00%2B07:00",
            json!({"unit": "xa-ta-ma", "date": "2024-05-14", "start_time": "14:00", "reason": "Trùng kỳ họp"}),
        )
        .await;
    assert_status(&moved, 200);
    daemon.wait_for_documents(&secretariat, 2).await;

    let mut browser = Browser::new(&daemon);
    browser.sign_in(&secretariat).await;
    let page = browser.get("/ho-so/tg2024").await;
    assert_status(&page, 200);
    let html = &page.text;
    // The stage timeline: every stage of the workflow, the reached ones with their dates.
    for stage in [
        "Thành lập Đoàn giám sát",
        "Đã thông báo lịch, đang thu báo cáo",
        "Đã hết hạn gửi báo cáo",
        "Giám sát trực tiếp",
        "Tổng hợp kết quả giám sát",
        "Nghị quyết về kết quả giám sát",
        "Theo dõi thực hiện kiến nghị",
        "Kết thúc giám sát",
        "Đã nộp lưu hồ sơ",
    ] {
        assert!(
            html.contains(&format!("<span class=\"stage-label\">{stage}</span>")),
            "{stage}"
        );
    }
    assert!(html.contains("aria-current=\"step\""));
    assert!(html.contains("<span class=\"date\">21/4/2024 00:00</span>"));
    // The unit grid with the Vietnamese state labels and dates.
    assert!(html.contains("Đã gửi báo cáo đúng hạn"));
    assert!(html.contains("Gửi báo cáo muộn"));
    assert!(html.contains("Quá hạn chưa gửi báo cáo"));
    assert!(html.contains("18/4/2024 09:00"));
    assert!(html.contains("22/4/2024 10:00"));
    assert!(html.contains("Bản giấy"));
    // Case data is escaped: the unit named with a script tag shows as text.
    assert!(
        !html.contains("<script>alert"),
        "an unescaped script in the page"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Ủy ban nhân dân huyện")
    );
    // The schedule: the meeting and the visits, with the change and calendar links.
    assert!(html.contains("Họp Đoàn giám sát chuyên đề của HĐND huyện"));
    assert!(html.contains("Đoàn giám sát HĐND huyện làm việc tại xã Quài Tở"));
    assert!(html.contains("Thứ Tư, 24/4/2024"));
    assert!(html.contains("Đổi từ ngày 09/5/2024"));
    assert!(html.contains("Lý do điều chỉnh: Trùng kỳ họp"));
    assert!(html.contains("href=\"/ho-so/tg2024/lich.ics\""));
    assert!(html.contains("href=\"/ho-so/tg2024/lich/giam-sat-xa-quai-to.ics\""));
    // Warnings: 29/4/2024 was a day off; the deadline 20/4/2024 a Saturday.
    assert!(
        html.contains("Buổi giám sát tại xã Quài Cang vào ngày 29/4/2024 không phải ngày làm việc")
    );
    assert!(html.contains("Hạn gửi báo cáo 20/4/2024 không phải ngày làm việc"));
    // Documents: drafts with download links and, for the secretariat, the numbering button.
    assert!(html.contains("Thông báo thời gian, lịch giám sát"));
    assert!(html.contains("<span class=\"state cho\">Dự thảo</span>"));
    assert!(html.contains("href=\"/ho-so/tg2024/van-ban/thong-bao-lich/1/docx\""));
    assert!(html.contains("id=\"cap-so-thong-bao-lich\""));
    // The history, with the chain verified.
    assert!(html.contains("Chuỗi băm của nhật ký nguyên vẹn"));
    assert!(html.contains("Thông báo lịch giám sát"));
    assert!(html.contains("Văn phòng HĐND (huyen)"));
    // The commands the secretariat may run now, without the unit's report and the numbering.
    assert!(html.contains("href=\"/ho-so/tg2024/lenh/send_reminder\""));
    assert!(!html.contains("href=\"/ho-so/tg2024/lenh/receive_report\""));
    assert!(!html.contains("href=\"/ho-so/tg2024/lenh/assign_number\""));
    assert!(page.header("cache-control").contains("no-store"));

    // A document downloads through the page's session, as the API serves it.
    let file = browser
        .get("/ho-so/tg2024/van-ban/thong-bao-lich/1/html")
        .await;
    assert_status(&file, 200);
    assert!(file.text.contains("Số:    /TB-ĐGS"));
    // Numbering a signed document: the next number of the series, shown on the page.
    let csrf = page.input_value("csrf").expect("the form token");
    let numbered = browser
        .post(
            "/ho-so/tg2024/van-ban/thong-bao-lich/cap-so",
            &[("csrf", &csrf)],
        )
        .await;
    assert_status(&numbered, 303);
    let location = numbered.header("location").to_owned();
    assert_eq!(location, "/ho-so/tg2024?da-cap-so=thong-bao-lich#van-ban");
    let after = browser.get("/ho-so/tg2024?da-cap-so=thong-bao-lich").await;
    assert!(
        after
            .text
            .contains("Đã cấp số 01/TB-ĐGS cho văn bản “Thông báo thời gian, lịch giám sát”.")
    );
    assert!(after.text.contains("<strong>01/TB-ĐGS</strong>"));

    // The schedule as a calendar file: one entry per visit and the meeting, each with its UID.
    let ics = browser.get("/ho-so/tg2024/lich.ics").await;
    assert_status(&ics, 200);
    assert!(ics.header("content-type").starts_with("text/calendar"));
    let events = parse_ics(&ics.text);
    assert_eq!(events.len(), 10, "the meeting and nine visits");
    let uids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| property(e, "UID")).collect();
    assert_eq!(uids.len(), 10, "a UID per entry");
    assert!(uids.contains("tg2024-hop-doan@giamsat"));
    assert!(uids.contains("tg2024-giam-sat-xa-quai-to@giamsat"));
    let ta_ma = events
        .iter()
        .find(|e| property(e, "UID") == Some("tg2024-giam-sat-xa-ta-ma@giamsat"))
        .expect("the rescheduled visit");
    assert_eq!(property(ta_ma, "DTSTART"), Some("20240514T070000Z"));
    assert_eq!(property(ta_ma, "SEQUENCE"), Some("1"));
    let one = browser
        .get("/ho-so/tg2024/lich/giam-sat-xa-quai-to.ics")
        .await;
    assert_status(&one, 200);
    let events = parse_ics(&one.text);
    assert_eq!(events.len(), 1);
    assert_eq!(property(&events[0], "DTSTART"), Some("20240426T010000Z"));
    assert_eq!(
        property(&events[0], "SUMMARY"),
        Some("Đoàn giám sát HĐND huyện làm việc tại xã Quài Tở")
    );
    let missing = browser.get("/ho-so/tg2024/lich/khong-co.ics").await;
    assert_status(&missing, 404);
    assert!(missing.text.contains("Không tìm thấy"));
    // An address no page has gets the "not found" page, not the API's JSON.
    let nowhere = browser.get("/trang-khong-co").await;
    assert_status(&nowhere, 404);
    assert!(
        nowhere.text.contains("<h1>Không tìm thấy</h1>"),
        "{}",
        nowhere.text
    );
    assert_eq!(
        nowhere
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/html; charset=utf-8")
    );

    // The live-updates stream answers as server-sent events for the page's script.
    let stream = TcpStream::connect(daemon.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("a handshake");
    tokio::spawn(connection);
    let request = Request::builder()
        .uri("/ho-so/tg2024/cap-nhat")
        .header("host", daemon.addr.to_string())
        .header("cookie", browser.cookie.clone().expect("a session"))
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    drop(response);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_form_token_record_commands_and_show_rejections() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let delegation = daemon.token(Role::Delegation, None, "trong").await;
    daemon.start_seed(&secretariat, seed()).await;
    let mut browser = Browser::new(&daemon);
    browser.sign_in(&secretariat).await;

    // The form is built from the command's schema: a date and the document's id, prefilled.
    let form = browser.get("/ho-so/tg2024/lenh/issue_notice").await;
    assert_status(&form, 200);
    assert!(form.text.contains("<label for=\"issued_on\">Ngày ban hành"));
    assert!(
        form.text
            .contains("type=\"date\" id=\"issued_on\" name=\"issued_on\" value=\"2024-03-25\"")
    );
    assert!(
        form.text
            .contains("name=\"document\" value=\"thong-bao-lich\"")
    );
    let csrf = form.input_value("csrf").expect("the form token");
    let nonce = form.input_value("lan-gui").expect("the submission's id");
    let before = daemon.history(&secretariat).await.len();

    // Without the form token (or with another) nothing is recorded.
    let refused = browser
        .post(
            "/ho-so/tg2024/lenh/issue_notice",
            &[("issued_on", "2024-03-25"), ("document", "thong-bao-lich")],
        )
        .await;
    assert_status(&refused, 403);
    assert!(
        refused
            .text
            .contains("Biểu mẫu không hợp lệ hoặc đã hết hạn")
    );
    let forged = browser
        .post(
            "/ho-so/tg2024/lenh/issue_notice",
            &[
                ("csrf", "00ff00ff"),
                ("issued_on", "2024-03-25"),
                ("document", "thong-bao-lich"),
            ],
        )
        .await;
    assert_status(&forged, 403);
    assert_eq!(daemon.history(&secretariat).await.len(), before);

    // Values the form cannot take are named in Vietnamese and kept.
    let bad_date = browser
        .post(
            "/ho-so/tg2024/lenh/issue_notice",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("issued_on", "32/13/2024"),
                ("document", "thong-bao-lich"),
            ],
        )
        .await;
    assert_status(&bad_date, 422);
    assert!(
        bad_date
            .text
            .contains("“Ngày ban hành” phải là một ngày (ngày/tháng/năm).")
    );
    assert!(bad_date.text.contains("value=\"32/13/2024\""));
    assert!(bad_date.text.contains("aria-invalid=\"true\""));
    // A value the workflow's schema refuses: the field is named, the value kept.
    let bad_id = browser
        .post(
            "/ho-so/tg2024/lenh/issue_notice",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("issued_on", "2024-03-25"),
                ("document", "Thông báo"),
            ],
        )
        .await;
    assert_status(&bad_id, 422);
    assert!(
        bad_id
            .text
            .contains("Dữ liệu tại “Mã văn bản trong hồ sơ” không hợp lệ")
    );
    assert!(bad_id.text.contains("value=\"Thông báo\""));
    assert_eq!(daemon.history(&secretariat).await.len(), before);

    // The secretariat issues the notice: recorded as the token's actor, back to the case page.
    let issued = browser
        .post(
            "/ho-so/tg2024/lenh/issue_notice",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("issued_on", "2024-03-25"),
                ("document", "thong-bao-lich"),
            ],
        )
        .await;
    assert_status(&issued, 303);
    assert_eq!(issued.header("location"), "/ho-so/tg2024?da=issue_notice");
    let history = daemon.history(&secretariat).await;
    assert_eq!(history.len(), before + 1);
    let last = history.last().expect("an event");
    assert_eq!(last["event_type"], "NoticeIssued");
    assert_eq!(last["metadata"]["actor"], "secretariat:huyen");
    assert_eq!(last["data"]["input"]["issued_on"], "2024-03-25");
    let shown = browser.get("/ho-so/tg2024?da=issue_notice").await;
    assert!(
        shown
            .text
            .contains("Đã ghi nhận: Thông báo thời gian, lịch giám sát.")
    );
    assert!(
        shown
            .text
            .contains("<strong id=\"giai-doan\">Đã thông báo lịch, đang thu báo cáo</strong>")
    );
    // The same form sent again (a double click) records nothing more.
    let again = browser
        .post(
            "/ho-so/tg2024/lenh/issue_notice",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("issued_on", "2024-03-25"),
                ("document", "thong-bao-lich"),
            ],
        )
        .await;
    assert_status(&again, 403);
    assert!(
        again
            .text
            .contains("không thực hiện được ở giai đoạn hiện tại")
    );
    assert_eq!(daemon.history(&secretariat).await.len(), before + 1);

    // A form sent twice (a double click, a reload) records its command once; the same form
    // sent again with other values is not applied either, and the page says so.
    let reminder = browser.get("/ho-so/tg2024/lenh/send_reminder").await;
    let reminder_nonce = reminder.input_value("lan-gui").expect("a submission id");
    let fields = |unit: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("lan-gui", reminder_nonce.clone()),
            ("unit", unit.to_owned()),
            ("reason", String::new()),
        ]
    };
    let count = daemon.history(&secretariat).await.len();
    for _ in 0..2 {
        let f = fields("xa-ta-ma");
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sent = browser.post("/ho-so/tg2024/lenh/send_reminder", &f).await;
        assert_status(&sent, 303);
        assert_eq!(sent.header("location"), "/ho-so/tg2024?da=send_reminder");
    }
    assert_eq!(daemon.history(&secretariat).await.len(), count + 1);
    let f = fields("xa-quai-nua");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let changed = browser.post("/ho-so/tg2024/lenh/send_reminder", &f).await;
    assert_status(&changed, 303);
    assert_eq!(
        changed.header("location"),
        "/ho-so/tg2024?da-gui-truoc=send_reminder"
    );
    assert_eq!(daemon.history(&secretariat).await.len(), count + 1);
    let told = browser
        .get("/ho-so/tg2024?da-gui-truoc=send_reminder")
        .await;
    assert!(told.text.contains("đã được ghi nhận từ lần gửi trước"));

    // A command the workflow refuses now: the form again with its Vietnamese message.
    let early = browser.get("/ho-so/tg2024/lenh/mark_reports_overdue").await;
    assert_status(&early, 200);
    let early_nonce = early.input_value("lan-gui").expect("a submission id");
    let refused = browser
        .post(
            "/ho-so/tg2024/lenh/mark_reports_overdue",
            &[("csrf", &csrf), ("lan-gui", &early_nonce)],
        )
        .await;
    assert_status(&refused, 422);
    assert!(refused.text.contains("<p>Chưa hết hạn gửi báo cáo</p>"));

    // The delegation holds its meeting from the form; a second time the workflow refuses it
    // and what was entered stays in the form.
    let mut delegate = Browser::new(&daemon);
    delegate.sign_in(&delegation).await;
    let page = delegate.get("/ho-so/tg2024").await;
    assert!(
        page.text
            .contains("href=\"/ho-so/tg2024/lenh/hold_meeting\"")
    );
    assert!(
        !page
            .text
            .contains("href=\"/ho-so/tg2024/lenh/mark_reports_overdue\"")
    );
    assert!(
        !page.text.contains("id=\"cap-so-"),
        "only the secretariat numbers documents"
    );
    let meeting = delegate.get("/ho-so/tg2024/lenh/hold_meeting").await;
    assert!(meeting.text.contains(
        "type=\"datetime-local\" id=\"held_at\" name=\"held_at\" value=\"2024-03-25T08:00\""
    ));
    assert!(
        meeting
            .text
            .contains("<textarea id=\"attendees\" name=\"attendees\"")
    );
    let dcsrf = meeting.input_value("csrf").expect("the form token");
    let held = delegate
        .post(
            "/ho-so/tg2024/lenh/hold_meeting",
            &[
                ("csrf", &dcsrf),
                ("lan-gui", &meeting.input_value("lan-gui").expect("an id")),
                ("held_at", "2024-04-24T07:30"),
                ("attendees", "Trần Bình Trọng\r\nNguyễn Thị Huyền\r\n"),
                ("notes", ""),
            ],
        )
        .await;
    assert_status(&held, 303);
    let last = daemon
        .history(&secretariat)
        .await
        .last()
        .cloned()
        .expect("an event");
    assert_eq!(last["event_type"], "MeetingHeld");
    assert_eq!(
        last["data"]["input"]["held_at"],
        "2024-04-24T07:30:00+07:00"
    );
    assert_eq!(
        last["data"]["input"]["attendees"],
        json!(["Trần Bình Trọng", "Nguyễn Thị Huyền"])
    );
    let twice = delegate
        .post(
            "/ho-so/tg2024/lenh/hold_meeting",
            &[
                ("csrf", &dcsrf),
                ("lan-gui", "0123456789abcdef0123456789abcdef"),
                ("held_at", "2024-04-24T07:30"),
                ("notes", "Họp bổ sung <b>gấp</b>"),
            ],
        )
        .await;
    assert_status(&twice, 422);
    assert!(
        twice
            .text
            .contains("Cuộc họp Đoàn giám sát đã được ghi nhận")
    );
    assert!(
        twice
            .text
            .contains(">Họp bổ sung &lt;b&gt;gấp&lt;/b&gt;</textarea>")
    );

    // A visit is rescheduled from its form: the visit is chosen from a list.
    let reschedule = delegate.get("/ho-so/tg2024/lenh/reschedule_visit").await;
    assert!(
        reschedule
            .text
            .contains("<option value=\"xa-quai-to\">xã Quài Tở (26/4/2024) — Đã lên lịch</option>")
    );
    assert!(reschedule.text.contains("type=\"time\" id=\"start_time\""));
    let moved = delegate
        .post(
            "/ho-so/tg2024/lenh/reschedule_visit",
            &[
                ("csrf", &dcsrf),
                (
                    "lan-gui",
                    &reschedule.input_value("lan-gui").expect("an id"),
                ),
                ("unit", "xa-quai-to"),
                ("date", "2024-05-02"),
                ("start_time", "14:00"),
                ("reason", "Đơn vị đề nghị"),
            ],
        )
        .await;
    assert_status(&moved, 303);
    let page = delegate.get("/ho-so/tg2024").await;
    assert!(page.text.contains("Đổi từ ngày 26/4/2024"));

    // A foreign site cannot post a form even with the session's cookie.
    let foreign = browser
        .post_with(
            "/ho-so/tg2024/lenh/send_reminder",
            &[("csrf", &csrf), ("unit", "xa-ta-ma")],
            &[("origin", "https://evil.example".to_owned())],
        )
        .await;
    assert_status(&foreign, 403);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolution_form_takes_rows_of_recommendations() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let delegation = daemon.token(Role::Delegation, None, "trong").await;
    daemon.start_seed(&secretariat, seed()).await;
    let admin = daemon.admin.clone();
    // Up to the findings stage through the API: notice, meeting, every visit cancelled, a
    // finding, the findings report.
    let steps: Vec<(&str, Value)> = vec![
        (
            "issue_notice",
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        ),
        (
            "hold_meeting",
            json!({"held_at": "2024-04-24T07:30:00+07:00"}),
        ),
    ];
    for (command, input) in steps {
        assert_status(&daemon.command(&admin, command, "", input).await, 200);
    }
    let visits = daemon
        .api("GET", &format!("/api/cases/{CASE}"), &admin, Value::Null)
        .await
        .json()["entities"]["visits"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for unit in visits.keys() {
        let cancelled = daemon
            .command(
                &admin,
                "cancel_visit",
                "",
                json!({"unit": unit, "reason": "Thử"}),
            )
            .await;
        assert_status(&cancelled, 200);
    }
    assert_status(
        &daemon
            .command(
                &delegation,
                "record_finding",
                "",
                json!({"id": "f1", "member": "Trần Bình Trọng", "text": "Cần đẩy nhanh số hóa"}),
            )
            .await,
        200,
    );
    assert_status(
        &daemon
            .command(
                &secretariat,
                "issue_findings_report",
                "",
                json!({"issued_on": "2024-05-20", "summary": "Tổng hợp", "recommendations": []}),
            )
            .await,
        200,
    );

    let mut browser = Browser::new(&daemon);
    browser.sign_in(&secretariat).await;
    let form = browser.get("/ho-so/tg2024/lenh/adopt_resolution").await;
    assert_status(&form, 200);
    assert!(
        form.text.contains("id=\"recommendations.2.deadline\"")
            || form.text.contains("id=\"recommendations-2-deadline\"")
    );
    let csrf = form.input_value("csrf").expect("the form token");
    let nonce = form.input_value("lan-gui").expect("an id");
    // "Thêm dòng" adds a row without submitting.
    let more = browser
        .post(
            "/ho-so/tg2024/lenh/adopt_resolution",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("number", "15/NQ-HĐND"),
                ("them-dong:recommendations", "1"),
            ],
        )
        .await;
    assert_status(&more, 200);
    assert!(more.text.contains("name=\"recommendations.3.id\""));
    assert!(more.text.contains("name=\"number\" value=\"15/NQ-HĐND\""));
    // A half-filled row names the row and the field.
    let half = browser
        .post(
            "/ho-so/tg2024/lenh/adopt_resolution",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("number", "15/NQ-HĐND"),
                ("date", "2024-07-10"),
                ("recommendations.0.id", "kn-1"),
                ("recommendations.0.text", "Đẩy nhanh số hóa hồ sơ"),
            ],
        )
        .await;
    assert_status(&half, 422);
    assert!(
        half.text
            .contains("Dòng 1: Vui lòng nhập “Cơ quan chịu trách nhiệm”.")
    );
    let adopted = browser
        .post(
            "/ho-so/tg2024/lenh/adopt_resolution",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("number", "15/NQ-HĐND"),
                ("date", "2024-07-10"),
                ("recommendations.0.id", "kn-1"),
                ("recommendations.0.text", "Đẩy nhanh số hóa hồ sơ"),
                ("recommendations.0.responsible", "UBND huyện"),
                ("recommendations.0.deliverable", "Báo cáo kết quả"),
                ("recommendations.0.deadline", "2024-12-31"),
                ("recommendations.2.id", "kn-2"),
                ("recommendations.2.text", "Công khai tiến độ"),
                ("recommendations.2.responsible", "Phòng Nội vụ"),
                ("recommendations.2.deliverable", "Cổng thông tin"),
                ("recommendations.2.deadline", "2024-10-31"),
            ],
        )
        .await;
    assert_status(&adopted, 303);
    let last = daemon
        .history(&secretariat)
        .await
        .last()
        .cloned()
        .expect("an event");
    assert_eq!(last["event_type"], "ResolutionAdopted");
    assert_eq!(last["data"]["input"]["recommendations"][1]["id"], "kn-2");
    // The recommendations and their status with deadlines; progress from its form.
    let page = browser.get("/ho-so/tg2024").await;
    assert!(
        page.text
            .contains("<h2 id=\"muc-recommendations-tieu-de\">Kiến nghị</h2>")
    );
    assert!(page.text.contains("31/12/2024"));
    assert!(page.text.contains("Chưa báo cáo kết quả"));
    let progress = browser
        .get("/ho-so/tg2024/lenh/report_recommendation_progress")
        .await;
    assert!(
        progress
            .text
            .contains("<option value=\"completed\">Hoàn thành</option>")
    );
    let reported = browser
        .post(
            "/ho-so/tg2024/lenh/report_recommendation_progress",
            &[
                ("csrf", &csrf),
                ("lan-gui", &progress.input_value("lan-gui").expect("an id")),
                ("recommendation", "kn-1"),
                ("status", "partly_completed"),
                ("reported_at", "2024-11-20T08:00"),
                ("evidence", "Báo cáo số 12/BC-UBND"),
            ],
        )
        .await;
    assert_status(&reported, 303);
    let page = browser.get("/ho-so/tg2024").await;
    assert!(
        page.text
            .contains("Hoàn thành một phần (báo cáo 20/11/2024 08:00): Báo cáo số 12/BC-UBND")
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_sees_its_own_rows_and_submits_its_report_with_its_figures() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let quai_to = daemon
        .token(Role::Unit, Some("xa-quai-to"), "van-thu-quai-to")
        .await;
    daemon.start_seed(&secretariat, seed()).await;
    let notice = daemon
        .command(
            &secretariat,
            "issue_notice",
            "",
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        )
        .await;
    assert_status(&notice, 200);

    let mut unit = Browser::new(&daemon);
    unit.sign_in(&quai_to).await;
    let list = unit.get("/").await;
    assert!(list.text.contains("href=\"/ho-so/tg2024\""));
    let page = unit.get("/ho-so/tg2024").await;
    assert_status(&page, 200);
    assert!(page.text.contains("id=\"don-vi-xa-quai-to\""));
    assert!(page.text.contains("xã Quài Tở"));
    for other in [
        "xã Quài Cang",
        "xã Ta Ma",
        "Phòng Nội vụ",
        "id=\"don-vi-xa-ta-ma\"",
        "giam-sat-xa-quai-cang",
    ] {
        assert!(!page.text.contains(other), "a unit's page shows {other}");
    }
    assert!(
        page.text
            .contains("href=\"/ho-so/tg2024/don-vi/xa-quai-to\"")
    );

    // Its own page, with the report form: a file and the Phụ lục 03 grid of the seed's years.
    let own = unit.get("/ho-so/tg2024/don-vi/xa-quai-to").await;
    assert_status(&own, 200);
    assert!(own.text.contains("id=\"bieu-mau-receive_report\""));
    assert!(own.text.contains("enctype=\"multipart/form-data\""));
    assert!(own.text.contains("type=\"file\" id=\"file\" name=\"file\""));
    for name in [
        "phu_luc_03-2022-all-total",
        "phu_luc_03-2023-land-on_time",
        "phu_luc_03-2023-construction-total",
    ] {
        assert!(
            own.text.contains(&format!("id=\"{name}\" name=\"{name}\"")),
            "{name}"
        );
    }
    assert!(
        own.text
            .contains("Hồ sơ TTHC về lĩnh vực đất đai tiếp nhận được giải quyết đúng hạn")
    );
    assert!(
        !own.text.contains("name=\"received_at\""),
        "a unit does not date its own report"
    );
    assert!(
        own.text
            .contains("<button type=\"submit\" id=\"gui-receive_report\">Gửi báo cáo</button>")
    );
    // Not another unit's page, and not its report.
    let other = unit.get("/ho-so/tg2024/don-vi/xa-quai-cang").await;
    assert_status(&other, 403);
    assert!(
        other
            .text
            .contains("Đơn vị chỉ được xem và gửi báo cáo của chính đơn vị mình")
    );
    assert!(!other.text.contains("xã Quài Cang"));
    let csrf = own.input_value("csrf").expect("the form token");
    let nonce = own.input_value("lan-gui").expect("an id");
    let before = daemon.history(&secretariat).await.len();
    let theirs = unit
        .post_multipart(
            "/ho-so/tg2024/don-vi/xa-quai-cang/lenh/receive_report",
            &[("csrf", &csrf), ("lan-gui", &nonce), ("channel", "email")],
            None,
        )
        .await;
    assert_status(&theirs, 403);
    assert_eq!(daemon.history(&secretariat).await.len(), before);

    // Figures that do not add up are refused cell by cell; what was typed stays, the file is
    // kept for the next try.
    let pdf = b"%PDF-1.4 bao cao cai cach hanh chinh xa Quai To".to_vec();
    let sha = hex::encode(Sha256::digest(&pdf));
    let wrong = unit
        .post_multipart(
            "/ho-so/tg2024/don-vi/xa-quai-to/lenh/receive_report",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("channel", "email"),
                ("phu_luc_03-2022-all-total", "120"),
                ("phu_luc_03-2022-all-on_time", "130"),
                ("phu_luc_03-2023-land-total", "-4"),
                ("phu_luc_03-2023-land-on_time", "2"),
            ],
            Some(("file", "bao-cao.pdf", &pdf)),
        )
        .await;
    assert_status(&wrong, 422);
    assert!(
        wrong
            .text
            .contains("số giải quyết đúng hạn (130) không được lớn hơn tổng số (120)")
    );
    assert!(wrong.text.contains("tổng số phải là số nguyên không âm"));
    assert!(
        wrong
            .text
            .contains("name=\"phu_luc_03-2022-all-on_time\" value=\"130\"")
    );
    assert!(
        wrong
            .text
            .contains(&format!("name=\"tep-da-tai\" value=\"{sha}\""))
    );
    assert_eq!(daemon.history(&secretariat).await.len(), before);

    // The report as it should be: recorded with the file's SHA-256 and the figures.
    let sent = unit
        .post_multipart(
            "/ho-so/tg2024/don-vi/xa-quai-to/lenh/receive_report",
            &[
                ("csrf", &csrf),
                ("lan-gui", &nonce),
                ("channel", "email"),
                ("tep-da-tai", &sha),
                ("phu_luc_03-2022-all-total", "120"),
                ("phu_luc_03-2022-all-on_time", "118"),
                ("phu_luc_03-2023-land-total", "40"),
                ("phu_luc_03-2023-land-on_time", "38"),
                ("phu_luc_03-2023-construction-total", "0"),
                ("phu_luc_03-2023-construction-on_time", "0"),
            ],
            None,
        )
        .await;
    assert_status(&sent, 303);
    assert_eq!(
        sent.header("location"),
        "/ho-so/tg2024/don-vi/xa-quai-to?da=receive_report"
    );
    let last = daemon
        .history(&secretariat)
        .await
        .last()
        .cloned()
        .expect("an event");
    assert_eq!(last["event_type"], "ReportReceived");
    assert_eq!(last["metadata"]["actor"], "unit:van-thu-quai-to");
    let input = &last["data"]["input"];
    assert_eq!(input["unit"], "xa-quai-to");
    assert_eq!(input["file"], sha);
    assert_eq!(input["received_at"], "2024-03-25T08:00:00+07:00");
    assert_eq!(
        input["phu_luc_03"],
        json!([
            {"year": 2022, "field": "all", "total": 120, "on_time": 118},
            {"year": 2023, "field": "land", "total": 40, "on_time": 38},
            {"year": 2023, "field": "construction", "total": 0, "on_time": 0},
        ])
    );
    let stored = daemon
        .uploads()
        .join("tg2024/xa-quai-to")
        .join(format!("{sha}.pdf"));
    assert_eq!(std::fs::read(&stored).expect("the stored upload"), pdf);

    // Afterwards: the state, the rates (comma decimals; no rate without a total) and the file.
    let done = unit
        .get("/ho-so/tg2024/don-vi/xa-quai-to?da=receive_report")
        .await;
    assert!(
        done.text
            .contains("Đã ghi nhận: Tiếp nhận báo cáo của đơn vị.")
    );
    assert!(
        done.text
            .contains("<strong id=\"tinh-trang-bao-cao\">Đã gửi báo cáo đúng hạn</strong>")
    );
    assert!(done.text.contains("<td class=\"num rate\">98,3%</td>"));
    assert!(done.text.contains("<td class=\"num rate\">95,0%</td>"));
    assert!(done.text.contains("<td class=\"num rate\">—</td>"));
    assert!(
        !done.text.contains("id=\"bieu-mau-receive_report\""),
        "no second report"
    );
    let file_url = format!("/ho-so/tg2024/don-vi/xa-quai-to/tep/{sha}");
    assert!(done.text.contains(&file_url));
    let file = unit.get(&file_url).await;
    assert_status(&file, 200);
    assert_eq!(file.text.as_bytes(), &pdf[..]);
    let theirs = unit.get("/ho-so/tg2024/don-vi/xa-quai-cang/tep/00").await;
    assert_status(&theirs, 403);

    // The secretariat sees the unit's row received, with the file, in the grid.
    let mut office = Browser::new(&daemon);
    office.sign_in(&secretariat).await;
    let page = office.get("/ho-so/tg2024").await;
    assert!(page.text.contains("Thư điện tử (bản điện tử) · có tệp"));
    let office_unit = office.get("/ho-so/tg2024/don-vi/xa-quai-cang").await;
    assert_status(&office_unit, 200);
    assert!(
        office_unit.text.contains("name=\"received_at\""),
        "the office dates a paper report"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_above_the_size_limit_gets_the_413_page() {
    let mut daemon = Daemon::start_with(|o| o.max_body_bytes = 64 * 1024).await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let quai_to = daemon
        .token(Role::Unit, Some("xa-quai-to"), "van-thu-quai-to")
        .await;
    daemon.start_seed(&secretariat, seed()).await;
    assert_status(
        &daemon
            .command(
                &secretariat,
                "issue_notice",
                "",
                json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
            )
            .await,
        200,
    );
    let mut unit = Browser::new(&daemon);
    unit.sign_in(&quai_to).await;
    let own = unit.get("/ho-so/tg2024/don-vi/xa-quai-to").await;
    assert!(
        own.text
            .contains("Dung lượng tối đa của một lần gửi: 64 KB.")
    );
    let csrf = own.input_value("csrf").expect("the form token");
    let big = vec![b'x'; 100 * 1024];
    let refused = unit
        .post_multipart(
            "/ho-so/tg2024/don-vi/xa-quai-to/lenh/receive_report",
            &[("csrf", &csrf), ("channel", "email")],
            Some(("file", "bao-cao.pdf", &big)),
        )
        .await;
    assert_status(&refused, 413);
    assert!(refused.header("content-type").starts_with("text/html"));
    assert!(refused.text.contains("Tệp quá lớn"));
    assert!(refused.text.contains("vượt quá giới hạn 64 KB"));
    // The API keeps its JSON answer.
    let api = daemon
        .send(
            "POST",
            "/api/cases",
            &[
                ("authorization", format!("Bearer {secretariat}")),
                ("content-type", "application/json".to_owned()),
            ],
            vec![b' '; 100 * 1024],
        )
        .await;
    assert_status(&api, 413);
    assert_eq!(api.json()["code"], "body_too_large");
    assert!(!Path::new(&daemon.uploads()).join("tg2024").exists());
    daemon.shutdown().await;
}

#[test]
fn page_templates_escape_everything_and_are_nfc() {
    let dir = root().join("crates/server/src/pages/assets");
    for entry in std::fs::read_dir(&dir).expect("the assets folder") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("a text file");
        if path.extension().is_some_and(|e| e == "hbs") {
            assert!(!text.contains("{{{"), "{} writes raw HTML", path.display());
            assert!(!text.contains("{{&"), "{} writes raw HTML", path.display());
        }
        let nfc = giamsat_engine::nfc(&json!(text));
        assert_eq!(nfc, json!(text), "{} is not NFC", path.display());
        for scheme in ["http://", "https://"] {
            assert!(!text.contains(scheme), "{} names {scheme}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secretariat_starts_a_case_from_its_data_file() {
    let mut daemon = Daemon::start().await;
    let secretariat = daemon.token(Role::Secretariat, None, "huyen").await;
    let viewer = daemon.token(Role::Viewer, None, "xem").await;

    // A viewer has no such form.
    let mut reader = Browser::new(&daemon);
    reader.sign_in(&viewer).await;
    assert!(!reader.get("/").await.text.contains("/ho-so-moi"));
    let refused = reader.get("/ho-so-moi").await;
    assert_status(&refused, 403);

    let mut office = Browser::new(&daemon);
    office.sign_in(&secretariat).await;
    assert!(office.get("/").await.text.contains("href=\"/ho-so-moi\""));
    let form = office.get("/ho-so-moi").await;
    assert_status(&form, 200);
    assert!(form.text.contains("id=\"bieu-mau-tao-ho-so\""));
    assert!(form.text.contains("<option value=\"giam-sat-chuyen-de\""));
    let csrf = form.input_value("csrf").expect("the form token");
    let nonce = form.input_value("lan-gui").expect("an id");
    let fields = |data: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("lan-gui", nonce.clone()),
            ("quy-trinh", "giam-sat-chuyen-de".to_owned()),
            ("ma-ho-so", "tg2024".to_owned()),
            ("du-lieu", data.to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>, file: Option<Vec<u8>>| {
        let office = &office;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            office
                .post_multipart(
                    "/ho-so-moi",
                    &fields,
                    file.as_deref().map(|b| ("tep", "tuan-giao-2024.yaml", b)),
                )
                .await
        }
    };

    // Text that is not YAML: the line and column; what was typed stays.
    let broken = post(fields("topic: [chưa đóng\nunits: x\n"), None).await;
    assert_status(&broken, 422);
    assert!(
        broken.text.contains("không đúng cú pháp YAML ở dòng"),
        "{}",
        broken.text
    );
    assert!(broken.text.contains("topic: [chưa đóng"));
    // YAML the workflow's start schema refuses: its message, nothing started.
    let incomplete = post(fields("topic: Cải cách hành chính\n"), None).await;
    assert_status(&incomplete, 422);
    assert!(
        incomplete.text.contains("id=\"loi-tao-ho-so\""),
        "{}",
        incomplete.text
    );
    assert_status(
        &daemon
            .api(
                "GET",
                &format!("/api/cases/{CASE}"),
                &secretariat,
                Value::Null,
            )
            .await,
        404,
    );

    // The office's data file: the case starts and its page says so.
    let file =
        std::fs::read(root().join("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml"))
            .expect("the seed file");
    let started = post(fields(""), Some(file.clone())).await;
    assert_status(&started, 303);
    assert_eq!(started.header("location"), "/ho-so/tg2024?da-tao=1");
    let page = office.get("/ho-so/tg2024?da-tao=1").await;
    assert!(page.text.contains("Đã tạo hồ sơ tg2024."));
    let case = daemon
        .api(
            "GET",
            &format!("/api/cases/{CASE}"),
            &secretariat,
            Value::Null,
        )
        .await;
    assert_status(&case, 200);
    assert_eq!(case.json()["stage"], "established");
    assert_eq!(
        case.json()["data"]["units"].as_array().map(Vec::len),
        Some(9)
    );
    // The same form sent again starts nothing new; another form for the same id is refused.
    let again = post(fields(""), Some(file.clone())).await;
    assert_status(&again, 303);
    assert_eq!(daemon.history(&secretariat).await.len(), 1);
    let mut other = fields("");
    other[1].1 = "0123456789abcdef0123456789abcdef".to_owned();
    let taken = post(other, Some(file)).await;
    assert_status(&taken, 409);
    assert!(taken.text.contains("id=\"loi-tao-ho-so\""));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_page_shows_every_operation_of_the_openapi_document() {
    let mut daemon = Daemon::start().await;
    // No token, no session: it is public, as /api/openapi.json is.
    let browser = Browser::new(&daemon);
    let page = browser.get("/api/docs").await;
    assert_status(&page, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_local(&page);
    let document = browser.get("/api/openapi.json").await;
    assert_status(&document, 200);
    let document: Value = serde_json::from_str(&document.text).expect("JSON");
    let mut operations = 0;
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for (method, op) in methods.as_object().expect("methods") {
            operations += 1;
            let id = op["operationId"].as_str().expect("an operation id");
            assert!(
                page.text.contains(&format!("<article id=\"{id}\"")),
                "{id} is missing"
            );
            let heading = format!("<code>{} {path}</code>", method.to_uppercase());
            assert!(page.text.contains(&heading), "{heading} is missing");
        }
    }
    assert!(operations > 25, "{operations} operations");
    for schema in document["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        assert!(
            page.text
                .contains(&format!("<article id=\"schema-{schema}\">")),
            "schema {schema} is missing"
        );
    }
    assert!(
        page.text
            .contains("<a href=\"#schema-StartCaseRequest\">StartCaseRequest</a>")
    );
    daemon.shutdown().await;
}
