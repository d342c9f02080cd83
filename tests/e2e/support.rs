//! Running the binary in a scratch directory and reading what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch working directory with its own database, in which `giamsat` runs.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub db: String,
}

impl Sandbox {
    pub fn sqlite() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("giamsat.db").display());
        Sandbox { dir, db }
    }

    /// A fresh schema in the test PostgreSQL database, or `None` when none is configured.
    pub fn postgres() -> Option<Sandbox> {
        let Ok(base) = std::env::var("GIAMSAT_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("CI").is_err(),
                "GIAMSAT_TEST_POSTGRES_URL must be set in CI"
            );
            eprintln!("skipping: GIAMSAT_TEST_POSTGRES_URL is not set");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let sep = if base.contains('?') { '&' } else { '?' };
        let schema = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        Some(Sandbox {
            dir,
            db: format!("{base}{sep}schema={schema}"),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// A command for the binary with this sandbox's database and working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_giamsat"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("GIAMSAT_DB", &self.db)
            .env_remove("GIAMSAT_CONFIG")
            .env_remove("GIAMSAT_LOG")
            .env("USER", "thu-ky")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs to completion; a run that takes over a minute is killed and fails the test, so a
    /// hang shows up as a failure instead of stalling CI.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run giamsat");
        // Read both pipes while the child runs: a child whose output outgrows the pipe buffer
        // would otherwise block on write and never exit.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    std::io::Read::read_to_end(&mut pipe, &mut bytes).expect("read output");
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("giamsat {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Run::from(Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        })
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "giamsat {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        run
    }

    pub fn sqlite_file(&self) -> &Path {
        self.db
            .strip_prefix("sqlite://")
            .map(Path::new)
            .expect("sqlite sandbox")
    }
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        let run = Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8(o.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(o.stderr).expect("utf-8 stderr"),
        };
        assert!(
            !run.stderr.contains("panicked"),
            "giamsat panicked:\n{}",
            run.stderr
        );
        run
    }
}

impl Run {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Asserts a failure whose standard error contains every fragment.
    pub fn fails_with(&self, code: i32, fragments: &[&str]) {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        for f in fragments {
            assert!(
                self.stderr.contains(f),
                "stderr lacks {f:?}:\n{}",
                self.stderr
            );
        }
    }
}

/// The repository's workflows folder.
pub fn workflows_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows")
        .display()
        .to_string()
}

/// The seed's example case data (the Tuần Giáo 2024 notice).
pub fn seed_path() -> String {
    format!(
        "{}/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml",
        workflows_dir()
    )
}

/// A bound on waiting for the daemon (start, readiness, its scheduler and exporters): a safety
/// net against a hung test, never an expected duration.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `giamsat serve` running in the background in a sandbox; stopped with SIGTERM when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub url: String,
    /// What it has written to standard error so far (its log), line by line.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `giamsat --workflows <repo>/workflows GLOBAL serve --listen 127.0.0.1:0 SERVE`
    /// and waits until `/readyz` answers 200.
    pub fn start(s: &Sandbox, global: &[&str], serve: &[&str]) -> Daemon {
        use std::io::{BufRead, BufReader};
        let w = workflows_dir();
        let mut args = vec!["--workflows", w.as_str()];
        args.extend_from_slice(global);
        args.extend_from_slice(&["serve", "--listen", "127.0.0.1:0"]);
        args.extend_from_slice(serve);
        let mut child = s
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start giamsat serve");
        // Read standard error for the whole run (a full pipe would block the daemon); the line
        // that names the address is passed on.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line.clone());
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("giamsat serve did not say where it listens");
            }
        };
        let daemon = Daemon {
            child,
            url: format!("http://{addr}"),
            log,
        };
        let started = Instant::now();
        while daemon.status("/readyz") != Some(200) {
            assert!(
                started.elapsed() < PATIENCE,
                "the daemon never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// The lines of its log so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The status of a plain GET (HTTP/1.1 by hand, usable outside an async runtime).
    pub fn status(&self, path: &str) -> Option<u16> {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    /// Stops it as an operator would (SIGTERM) and waits for it to exit successfully.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "the daemon exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the daemon did not stop on SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A token made as an operator makes one: `giamsat token create --role ROLE [--unit UNIT]
/// --name NAME` on the sandbox's database; the token is the first line printed.
pub fn create_token(s: &Sandbox, role: &str, unit: Option<&str>, name: &str) -> String {
    let mut args = vec!["token", "create", "--role", role, "--name", name];
    if let Some(unit) = unit {
        args.extend_from_slice(&["--unit", unit]);
    }
    let created = s.ok(&args);
    created.lines()[0].trim().to_owned()
}

/// A reqwest client (as `--server` uses) that does not follow redirects, bounded by
/// [`PATIENCE`].
pub fn http_client() -> reqwest::Client {
    // rustls on ring, as the CLI installs it; whoever installed a provider first wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// An HTTP client for the daemon's API.
pub struct Http {
    client: reqwest::Client,
    base: String,
}

/// An answer: status, body as text and bytes, and as JSON when it is JSON (else null).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub bytes: Vec<u8>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Answer {
        assert_eq!(self.status, status, "body: {}", self.text());
        self
    }
}

impl Http {
    pub fn new(daemon: &Daemon) -> Http {
        Http {
            client: http_client(),
            base: daemon.url.clone(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the daemon answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            bytes,
            body,
        }
    }

    /// Signs in to the web pages with a token (the sign-in form); the session cookie.
    pub async fn sign_in(&self, token: &str) -> String {
        let response = self
            .client
            .post(format!("{}/dang-nhap", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&tiep=/"))
            .send()
            .await
            .expect("the daemon answers");
        assert_eq!(response.status().as_u16(), 303, "signing in");
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie");
        cookie.split(';').next().unwrap_or_default().to_owned()
    }

    /// A web page (or a download from one) with a session cookie.
    pub async fn page(&self, path: &str, cookie: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .expect("the daemon answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body").to_vec();
        Answer {
            status,
            body: serde_json::Value::Null,
            bytes,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &serde_json::Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }
}

/// Every file under `dir` (recursively) whose name ends in `.ext`, sorted.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The one package in an archive folder (entries starting with a dot are the exporter's own);
/// fails when there is none or more than one.
pub fn only_package(dir: &Path) -> String {
    let bags: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("the archive folder {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert_eq!(bags.len(), 1, "{bags:?}");
    bags[0].display().to_string()
}

/// Validates a BagIt package with the reference validator (Python's bagit, which CI installs
/// and names in GIAMSAT_TEST_PYTHON); outside CI without it, says so and skips.
pub fn reference_validates(bag: &str) {
    match std::env::var("GIAMSAT_TEST_PYTHON") {
        Ok(python) => {
            let out = Command::new(python)
                .args(["-m", "bagit", "--validate", bag])
                .output()
                .expect("python");
            assert!(
                out.status.success(),
                "bagit.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must set GIAMSAT_TEST_PYTHON (a python with bagit)"
            );
            eprintln!("skipped: the reference validator (GIAMSAT_TEST_PYTHON is not set)");
        }
    }
}

/// The seed's case data with example.org addresses for every unit and for the delegation's
/// first member, so the notifications have somewhere to go.
pub fn seed_with_addresses() -> serde_json::Value {
    let text = std::fs::read_to_string(seed_path()).expect("seed");
    let mut data: serde_json::Value = serde_saphyr::from_str(&text).expect("seed YAML");
    for unit in data["units"].as_array_mut().expect("units") {
        let code = unit["code"].as_str().expect("code").to_owned();
        unit["email"] = serde_json::json!(format!("{code}@example.org"));
    }
    data["members"][0]["email"] = serde_json::json!("tran-binh-trong@example.org");
    data
}
