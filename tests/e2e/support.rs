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
