//! The web pages in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver, spoken to in plain HTTP and JSON), against the real `giamsat serve`. A unit's
//! clerk signs in with the token, sees the Phụ lục 03 rates appear as the figures are typed,
//! submits a report that does not add up and gets the workflow's Vietnamese message, then the
//! report with its file; the page shows it received with the rates. While the page stays open
//! the secretariat asks for a supplement through the API, and the page updates itself from the
//! event stream. CI installs `chromium` and `chromium-driver`; elsewhere the test says it skipped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Daemon, Http, PATIENCE, Sandbox, create_token, http_client, seed_with_addresses,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless Chromium session; both end when dropped.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (the test skips) when they are not
    /// installed, which CI does not accept.
    async fn start() -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("CI").is_err(),
                "CI must install chromium and chromium-driver (.ci/run does)"
            );
            eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_owned(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = http_client();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json_value()
                    .await
                    .is_some_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "chromedriver never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile folder");
        // As root, without a sandbox; without the network features that would reach out of
        // this closed machine.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--lang=vi",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let created = http
            .post(format!("{base}/session"))
            .body(
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})
                .to_string(),
            )
            .header("content-type", "application/json")
            .send()
            .await
            .expect("chromedriver answers")
            .json_value()
            .await
            .expect("JSON");
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Some(Browser {
            driver,
            http,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        })
    }

    /// A WebDriver call: its `value`, or the driver's error code and message.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, (String, String)> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = request
            .send()
            .await
            .expect("chromedriver answers")
            .json_value()
            .await
            .expect("JSON");
        match answer["value"]["error"].as_str() {
            Some(error) => Err((
                error.to_owned(),
                answer["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )),
            None => Ok(answer["value"].clone()),
        }
    }

    /// A WebDriver call; its `value`, or a panic naming the call and the driver's error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method.clone(), path, body.as_ref()).await {
            Ok(value) => value,
            Err((error, message)) => {
                panic!("WebDriver {method} {path} {body:?}: {error}: {message}")
            }
        }
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element a CSS selector finds (the first), or a panic with the page's text.
    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The texts of the elements a CSS selector finds, read again when the page replaced one
    /// while it was being read (the live updates swap whole sections).
    async fn texts(&self, css: &str) -> Vec<String> {
        let started = Instant::now();
        'again: loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/elements",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            let mut out = Vec::new();
            for element in found.as_array().into_iter().flatten() {
                let id = element[ELEMENT].as_str().unwrap_or_default();
                match self
                    .try_call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                    .await
                {
                    Ok(text) => out.push(text.as_str().unwrap_or_default().to_owned()),
                    Err((error, _)) if error == "stale element reference" => {
                        assert!(started.elapsed() < PATIENCE, "{css} keeps changing");
                        continue 'again;
                    }
                    Err((error, message)) => panic!("the text of {css}: {error}: {message}"),
                }
            }
            return out;
        }
    }

    /// The text of the first element a CSS selector finds.
    async fn text(&self, css: &str) -> String {
        self.texts(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    /// Waits until the browser is at `url` (a form's answer is a redirect the click does not
    /// always wait for).
    async fn wait_for_url(&self, url: &str) {
        let started = Instant::now();
        loop {
            let now = self.url().await;
            if now == url {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "still at {now}, not {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an element the CSS selector finds is on the page.
    async fn wait_for(&self, css: &str) {
        let started = Instant::now();
        while self.count(css).await == 0 {
            assert!(
                started.elapsed() < PATIENCE,
                "no {css} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the element's text is `expected` (the page changes by itself).
    async fn wait_for_text(&self, css: &str, expected: &str) {
        let started = Instant::now();
        loop {
            let now = self.text(css).await;
            if now == expected {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{css} still reads {now:?}, not {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(mut self) {
        self.call(reqwest::Method::DELETE, "", None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `json()` without reqwest's `json` feature.
trait JsonValue {
    async fn json_value(self) -> Option<Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Option<Value> {
        serde_json::from_slice(&self.bytes().await.ok()?).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_submits_its_report_through_the_form_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = Sandbox::sqlite();
    let secretariat = create_token(&s, "secretariat", None, "huyen");
    let quai_to = create_token(&s, "unit", Some("xa-quai-to"), "van-thu-quai-to");
    let mut daemon = Daemon::start(&s, &[], &["--clock", "manual:2024-04-12T14:00:00+07:00"]);
    let api = Http::new(&daemon);
    api.post(
        "/api/cases",
        &secretariat,
        &json!({"workflow": "giam-sat-chuyen-de", "id": "tg2024", "data": seed_with_addresses()}),
    )
    .await
    .expect(201);
    api.post(
        "/api/cases/tg2024/commands/issue_notice",
        &secretariat,
        &json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
    )
    .await
    .expect(200);

    // The unit's page asks for a sign-in first, then comes back.
    let page = format!("{}/ho-so/tg2024/don-vi/xa-quai-to", daemon.url);
    browser.goto(&page).await;
    assert!(
        browser.url().await.contains("/dang-nhap"),
        "{}",
        browser.url().await
    );
    browser.type_into("#token", &quai_to).await;
    browser.click("#dang-nhap").await;
    browser.wait_for_url(&page).await;
    assert_eq!(browser.text("h1").await, "xã Quài Tở");
    assert_eq!(
        browser.text("#tinh-trang-bao-cao").await,
        "Chưa gửi báo cáo"
    );

    // The figures, with the rate shown as they are typed; one that cannot be (more on time
    // than in all).
    let report = s.write("bao-cao-xa-quai-to.pdf", "%PDF-1.4 báo cáo của xã Quài Tở");
    browser
        .click("select#channel option[value=\"email\"]")
        .await;
    browser
        .type_into("input#file", &report.display().to_string())
        .await;
    let figures = [
        ("2022-all", "642", "630", "98,1%"),
        ("2022-land", "158", "149", "94,3%"),
        ("2023-all", "701", "695", "99,1%"),
        ("2023-land", "172", "168", "97,7%"),
    ];
    for (cell, total, on_time, rate) in figures {
        browser
            .type_into(&format!("#phu_luc_03-{cell}-total"), total)
            .await;
        browser
            .type_into(&format!("#phu_luc_03-{cell}-on_time"), on_time)
            .await;
        assert_eq!(
            browser.text(&format!("#phu_luc_03-{cell}-rate")).await,
            rate,
            "the rate of {cell} as typed"
        );
    }
    browser
        .type_into("#phu_luc_03-2023-construction-total", "25")
        .await;
    browser
        .type_into("#phu_luc_03-2023-construction-on_time", "26")
        .await;
    browser.click("#gui-receive_report").await;
    browser.wait_for("#loi-receive_report").await;
    let refused = browser.text("#loi-receive_report").await;
    assert!(
        refused.contains("không được lớn hơn tổng số"),
        "the workflow's message is shown: {refused}"
    );
    assert_eq!(
        browser.text("#tinh-trang-bao-cao").await,
        "Chưa gửi báo cáo"
    );
    // What was typed is still there and the file is kept for the next try; the wrong cell is
    // put right and the report sent.
    assert_eq!(
        browser.count("input[name=\"tep-da-tai\"]").await,
        1,
        "the uploaded file is kept"
    );
    let typed = browser.find("#phu_luc_03-2022-all-total").await;
    let value = browser
        .call(
            reqwest::Method::GET,
            &format!("/element/{typed}/property/value"),
            None,
        )
        .await;
    assert_eq!(value, "642");
    browser
        .type_into("#phu_luc_03-2023-construction-on_time", "25")
        .await;
    browser.click("#gui-receive_report").await;
    browser.wait_for(".flash").await;
    let flash = browser.text(".flash").await;
    assert!(flash.contains("Đã ghi nhận"), "{flash}");
    assert_eq!(
        browser.text("#tinh-trang-bao-cao").await,
        "Đã gửi báo cáo đúng hạn"
    );
    let rates = browser.texts("table#phu-luc-03 td.rate").await;
    for (_, _, _, rate) in figures {
        assert!(rates.iter().any(|r| r == rate), "{rate} in {rates:?}");
    }
    assert!(rates.iter().any(|r| r == "100,0%"), "{rates:?}");

    // The API sees the same report, figures and file.
    let case = api
        .get("/api/cases/tg2024", &secretariat)
        .await
        .expect(200)
        .body;
    let unit = &case["entities"]["units"]["xa-quai-to"];
    assert_eq!(unit["state"], "received");
    let rows = unit["data"]["report"]["phu_luc_03"]
        .as_array()
        .expect("the figures");
    assert!(rows.contains(&json!({"year": 2022, "field": "all", "total": 642, "on_time": 630})));
    assert_eq!(rows.len(), 5);

    // The page stays open: the secretariat asks for a supplement and the page shows it by
    // itself, from the event stream.
    api.post(
        "/api/cases/tg2024/commands/request_supplement",
        &secretariat,
        &json!({"unit": "xa-quai-to", "reason": "Bổ sung số liệu năm 2023", "due_on": "2024-04-19"}),
    )
    .await
    .expect(200);
    browser
        .wait_for_text("#tinh-trang-bao-cao", "Được yêu cầu báo cáo bổ sung")
        .await;

    browser.quit().await;
    daemon.stop();
}
