//! The `exec` exporter: an exporter in a process of its own, written in any language, that speaks
//! JSON Lines over its standard input and output. The protocol is specified, with an example of
//! every message, in `plugins/README.md`; in short:
//!
//! - the host starts the process and sends `hello` (with the exporter id and the `config`
//!   table); the plugin answers `ready` with its name, version and the events it wants (its
//!   `filter`), which become this exporter's [`Exporter::filter`];
//! - the host sends one `event` at a time; the plugin answers `ack` (optionally with outcome
//!   events to record, each with its own deterministic id) or `error` (retryable or not), and
//!   may send `heartbeat`s while it works on a slow event;
//! - `shutdown` (or the end of its standard input) asks the plugin to exit.
//!
//! The plugin's standard error is logged line by line. A plugin that crashes, stops answering,
//! or breaks the protocol is killed and started again at the next delivery (after a pause that
//! doubles with each failure in a row, up to a minute); the event in flight fails as retryable,
//! so the [`Runner`](crate::Runner) retries it and, after its `max_attempts`, parks it. Delivery
//! is therefore at-least-once: a plugin may see an event again and must handle it idempotently.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use giamsat_types::{EventMetadata, NewEvent, RecordedEvent, StreamId};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{ExportError, Exporter, Filter, Outcome};

/// The protocol version the host speaks (sent in `hello`).
pub const PROTOCOL_VERSION: u64 = 1;

/// The longest pause between restarts of a plugin that keeps failing.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

/// How long a plugin has to exit after `shutdown` before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Lines of a plugin's standard error quoted in the error of a crash.
const STDERR_TAIL_LINES: usize = 5;

/// Characters of an offending line quoted in a protocol error.
const QUOTED_LINE_CHARS: usize = 200;

/// The configuration table of an `exec` exporter (`[[exporters]]` with `type = "exec"`).
/// Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExecConfig {
    /// The program: a path (relative ones are taken from the directory giamsat runs in) or a
    /// bare name looked up on `PATH`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to the environment giamsat passes on.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The plugin's working directory (default: giamsat's).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// How long the plugin has to answer an event (or `hello`) before it is killed.
    #[serde(default = "default_timeout", deserialize_with = "positive_duration")]
    pub timeout: Duration,
    /// After a heartbeat, how long until the next answer or heartbeat is due.
    #[serde(
        default = "default_heartbeat_timeout",
        deserialize_with = "positive_duration"
    )]
    pub heartbeat_timeout: Duration,
    /// The pause before the first restart after a failure; it doubles with each failure in a
    /// row, up to a minute.
    #[serde(default = "default_restart_backoff", deserialize_with = "duration")]
    pub restart_backoff: Duration,
    /// Given to the plugin in `hello`, as it is.
    #[serde(default = "empty_object", deserialize_with = "object")]
    pub config: Value,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_heartbeat_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_restart_backoff() -> Duration {
    Duration::from_secs(1)
}

fn empty_object() -> Value {
    json!({})
}

/// Parses "250ms", "30s", "5m", "1h", "3d" (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {text:?} is too long"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" | "min" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        other => Err(format!(
            "duration {text:?} has unit {other:?}; use ms, s, m, h or d"
        )),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value.is_zero() {
        return Err(serde::de::Error::custom("the duration must be more than 0"));
    }
    Ok(value)
}

fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let value = Value::deserialize(d)?;
    if !value.is_object() {
        return Err(serde::de::Error::custom(format!(
            "`config` must be a table, not {value}"
        )));
    }
    Ok(value)
}

impl ExecConfig {
    /// Reads the configuration table; an unknown or missing key is an error that names it.
    pub fn from_value(table: Value) -> Result<ExecConfig, String> {
        serde_json::from_value(table).map_err(|e| e.to_string())
    }

    /// The program to run: a relative path with a folder in it is taken from the current
    /// directory (not from `working-dir`, where its meaning would depend on the platform).
    fn program(&self) -> PathBuf {
        let path = Path::new(&self.command);
        if path.is_relative()
            && path.components().count() > 1
            && let Ok(dir) = std::env::current_dir()
        {
            return dir.join(path);
        }
        path.to_path_buf()
    }
}

/// Why an `exec` exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The configuration table is wrong (the message names the key).
    #[error("{0}")]
    Config(String),
    /// The plugin could not be started or did not complete its handshake.
    #[error("exporter {id}: plugin {command}: {message}")]
    Start {
        id: String,
        command: String,
        message: String,
    },
}

/// What a plugin says about itself in `ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
}

/// An exporter whose work is done by a plugin process (see the module documentation).
pub struct ExecExporter {
    id: String,
    config: ExecConfig,
    filter: Filter,
    info: PluginInfo,
    state: Mutex<State>,
}

impl std::fmt::Debug for ExecExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecExporter")
            .field("id", &self.id)
            .field("command", &self.config.command)
            .field("plugin", &self.info)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// The running plugin, if any, and the restart bookkeeping.
#[derive(Debug, Default)]
struct State {
    plugin: Option<Plugin>,
    /// Failures in a row (crashes, timeouts, protocol errors, failed starts).
    failures: u32,
    /// No restart before this.
    restart_at: Option<Instant>,
    /// An event was sent and its answer not yet read: true only while `export` runs, unless
    /// its future was dropped midway (then the plugin's next line would answer the wrong
    /// event, so it is restarted).
    in_flight: bool,
}

/// A started plugin process.
#[derive(Debug)]
struct Plugin {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    stderr_tail: Arc<StdMutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
}

/// The messages a plugin sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Reply {
    Ready {
        name: String,
        version: String,
        #[serde(default)]
        protocol: Option<u64>,
        #[serde(default)]
        filter: Option<WireFilter>,
    },
    Ack {
        position: u64,
        #[serde(default)]
        outcomes: Vec<WireOutcome>,
    },
    Error {
        #[serde(default)]
        position: Option<u64>,
        #[serde(default)]
        retryable: Option<bool>,
        message: String,
    },
    Heartbeat,
}

impl Reply {
    fn describe(&self) -> String {
        match self {
            Reply::Ready { .. } => "a `ready`".to_owned(),
            Reply::Ack { position, .. } => format!("an `ack` of position {position}"),
            Reply::Error {
                position: Some(p), ..
            } => format!("an `error` about position {p}"),
            Reply::Error { position: None, .. } => "an `error` without a position".to_owned(),
            Reply::Heartbeat => "a `heartbeat`".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct WireFilter {
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    stream_prefixes: Vec<String>,
}

/// An outcome as a plugin sends it; every field is checked by the host so that a missing one
/// is a permanent error of the event, not a protocol error.
#[derive(Debug, Deserialize)]
struct WireOutcome {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    schema_version: Option<u32>,
}

/// Why a plugin must be killed and started again.
#[derive(Debug)]
enum Broken {
    /// No answer in time.
    Timeout(Duration),
    /// Its standard output ended (it exited, or closed it).
    Eof,
    /// It exited between events.
    Exited,
    /// It cannot be written to or read from.
    Io(String),
    /// It sent something the protocol does not allow here.
    Protocol(String),
    /// It answered `hello` with an `error`.
    Refused(String),
    /// An earlier exchange was abandoned before its answer was read.
    Abandoned,
}

impl Broken {
    fn describe(&self) -> String {
        match self {
            Broken::Timeout(d) => format!("no answer within {}", show_duration(*d)),
            Broken::Eof => "its standard output ended".to_owned(),
            Broken::Exited => "its process ended".to_owned(),
            Broken::Io(e) => e.clone(),
            Broken::Protocol(e) => format!("protocol error: {e}"),
            Broken::Refused(e) => format!("it refused the handshake: {e}"),
            Broken::Abandoned => "an earlier delivery was cancelled before its answer".to_owned(),
        }
    }
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The first characters of a line, for an error message.
fn quote(line: &str) -> String {
    let mut chars = line.chars();
    let head: String = chars.by_ref().take(QUOTED_LINE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

impl Plugin {
    /// Starts the process and the task that logs its standard error.
    fn launch(id: &str, config: &ExecConfig) -> Result<Plugin, String> {
        let mut command = Command::new(config.program());
        command
            .args(&config.args)
            .envs(&config.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A safety net: a plugin whose handle is dropped without a shutdown is killed.
            .kill_on_drop(true);
        // A group of its own: Ctrl-C in a terminal reaches giamsat, which then shuts the plugin
        // down in order, instead of killing it mid-event.
        #[cfg(unix)]
        command.process_group(0);
        if let Some(dir) = &config.working_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start it: {e}"))?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.start_kill();
            return Err("cannot start it: its standard streams were not piped".to_owned());
        };
        let stderr_tail = Arc::new(StdMutex::new(VecDeque::new()));
        let stderr_task = tokio::spawn(log_stderr(id.to_owned(), pid, stderr, stderr_tail.clone()));
        Ok(Plugin {
            child,
            pid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            line: Vec::new(),
            stderr_tail,
            stderr_task: Some(stderr_task),
        })
    }

    /// Sends one message (one line), within `timeout`.
    async fn send(&mut self, line: &str, timeout: Duration) -> Result<(), Broken> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Broken::Io("its standard input is closed".to_owned()))?;
        let write = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Broken::Io(format!("writing to its standard input: {e}"))),
            Err(_) => Err(Broken::Timeout(timeout)),
        }
    }

    /// The next message other than a heartbeat: due within `timeout`, and within
    /// `heartbeat_timeout` of each heartbeat. Blank lines are ignored.
    async fn receive(
        &mut self,
        id: &str,
        timeout: Duration,
        heartbeat_timeout: Duration,
    ) -> Result<Reply, Broken> {
        let mut deadline = Instant::now() + timeout;
        let mut waited = timeout;
        loop {
            self.line.clear();
            let read =
                tokio::time::timeout_at(deadline, self.stdout.read_until(b'\n', &mut self.line))
                    .await;
            match read {
                Err(_) => return Err(Broken::Timeout(waited)),
                Ok(Err(e)) => {
                    return Err(Broken::Io(format!("reading its standard output: {e}")));
                }
                Ok(Ok(0)) => return Err(Broken::Eof),
                Ok(Ok(_)) => {}
            }
            let text = std::str::from_utf8(&self.line).map_err(|e| {
                Broken::Protocol(format!(
                    "a line of its standard output is not UTF-8 ({e}): {}",
                    quote(&String::from_utf8_lossy(&self.line))
                ))
            })?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let reply: Reply = serde_json::from_str(text).map_err(|e| {
                Broken::Protocol(format!(
                    "it wrote a line that is not a protocol message ({e}): {}",
                    quote(text)
                ))
            })?;
            if let Reply::Heartbeat = reply {
                tracing::trace!(exporter = %id, pid = self.pid, "plugin heartbeat");
                deadline = Instant::now() + heartbeat_timeout;
                waited = heartbeat_timeout;
                continue;
            }
            return Ok(reply);
        }
    }

    /// Sends `hello` and waits for `ready`.
    async fn handshake(
        &mut self,
        id: &str,
        config: &ExecConfig,
    ) -> Result<(PluginInfo, Filter), Broken> {
        let hello = json!({
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "exporter": id,
            "config": config.config,
        });
        self.send(&hello.to_string(), config.timeout).await?;
        match self
            .receive(id, config.timeout, config.heartbeat_timeout)
            .await?
        {
            Reply::Ready {
                name,
                version,
                protocol,
                filter,
            } => {
                if let Some(p) = protocol.filter(|p| *p != PROTOCOL_VERSION) {
                    return Err(Broken::Protocol(format!(
                        "it speaks protocol {p}; this host speaks {PROTOCOL_VERSION}"
                    )));
                }
                let filter = filter.map_or_else(Filter::default, |f| Filter {
                    event_types: f.event_types,
                    stream_prefixes: f.stream_prefixes,
                });
                Ok((PluginInfo { name, version }, filter))
            }
            Reply::Error { message, .. } => Err(Broken::Refused(message)),
            other => Err(Broken::Protocol(format!(
                "it answered `hello` with {} instead of `ready`",
                other.describe()
            ))),
        }
    }

    /// Kills the process (if it still runs) and reaps it: its exit status when known, and
    /// whether it had to be killed.
    async fn kill(&mut self) -> (Option<ExitStatus>, bool) {
        if let Ok(Some(status)) = self.child.try_wait() {
            return (Some(status), false);
        }
        let _ = self.child.start_kill();
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        (status, true)
    }

    /// Waits a moment for a process that is exiting by itself, else kills it.
    async fn reap(&mut self) -> (Option<ExitStatus>, bool) {
        match tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await {
            Ok(Ok(status)) => (Some(status), false),
            _ => self.kill().await,
        }
    }

    /// The last lines of its standard error, once the logging task has read them (it ends when
    /// the process has exited and the pipe is drained).
    async fn stderr_tail(&mut self) -> Vec<String> {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `shutdown`, a short wait for the exit, then kill.
    async fn shutdown(mut self) -> Option<ExitStatus> {
        if let Some(mut stdin) = self.stdin.take() {
            let line = b"{\"type\":\"shutdown\"}\n";
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                stdin.write_all(line).await?;
                stdin.flush().await
            })
            .await;
            // Dropping it closes the pipe: the end of input is a shutdown too.
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => self.kill().await.0,
        }
    }

    /// The same from a destructor, without awaiting: the message is written by a short-lived
    /// thread (a plugin that does not read cannot block the caller), and the exit is polled.
    fn shutdown_blocking(mut self) {
        if let Some(stdin) = self.stdin.take()
            && let Ok(fd) = stdin.into_owned_fd()
        {
            let _ = std::thread::Builder::new()
                .name("exec-plugin-shutdown".to_owned())
                .spawn(move || {
                    let mut pipe = std::fs::File::from(fd);
                    let _ = pipe.write_all(b"{\"type\":\"shutdown\"}\n");
                    // Dropped here: the end of input.
                });
        }
        let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = self.child.start_kill();
                    let _ = self.child.try_wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// Logs each line of a plugin's standard error, at the level its prefix names (`error:`,
/// `warn:`, `info:`, `debug:`, `trace:`; other lines at warn), and keeps the last few.
async fn log_stderr(
    id: String,
    pid: u32,
    stderr: ChildStderr,
    tail: Arc<StdMutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let (level, message) = stderr_level(line);
        match level {
            tracing::Level::ERROR => tracing::error!(exporter = %id, pid, "plugin: {message}"),
            tracing::Level::WARN => tracing::warn!(exporter = %id, pid, "plugin: {message}"),
            tracing::Level::INFO => tracing::info!(exporter = %id, pid, "plugin: {message}"),
            tracing::Level::DEBUG => tracing::debug!(exporter = %id, pid, "plugin: {message}"),
            _ => tracing::trace!(exporter = %id, pid, "plugin: {message}"),
        }
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }
}

fn stderr_level(line: &str) -> (tracing::Level, &str) {
    let levels = [
        ("error:", tracing::Level::ERROR),
        ("warning:", tracing::Level::WARN),
        ("warn:", tracing::Level::WARN),
        ("info:", tracing::Level::INFO),
        ("debug:", tracing::Level::DEBUG),
        ("trace:", tracing::Level::TRACE),
    ];
    for (prefix, level) in levels {
        if line.len() >= prefix.len()
            && line.is_char_boundary(prefix.len())
            && line[..prefix.len()].eq_ignore_ascii_case(prefix)
        {
            return (level, line[prefix.len()..].trim_start());
        }
    }
    (tracing::Level::WARN, line)
}

impl ExecExporter {
    /// Reads the configuration table, starts the plugin and completes the handshake, so that
    /// [`Exporter::filter`] is the plugin's own.
    pub async fn start(id: &str, table: Value) -> Result<ExecExporter, ExecError> {
        let config = ExecConfig::from_value(table).map_err(ExecError::Config)?;
        ExecExporter::start_with(id, config).await
    }

    /// [`ExecExporter::start`] with a configuration already read.
    pub async fn start_with(id: &str, config: ExecConfig) -> Result<ExecExporter, ExecError> {
        let start_error = |message: String| ExecError::Start {
            id: id.to_owned(),
            command: config.command.clone(),
            message,
        };
        let mut plugin = Plugin::launch(id, &config).map_err(start_error)?;
        let (info, filter) = match plugin.handshake(id, &config).await {
            Ok(ready) => ready,
            Err(broken) => {
                let message = failure_message(&mut plugin, &broken, "during the handshake").await;
                return Err(start_error(message));
            }
        };
        tracing::info!(
            exporter = %id,
            command = %config.command,
            pid = plugin.pid,
            plugin = %info.name,
            version = %info.version,
            "plugin started"
        );
        Ok(ExecExporter {
            id: id.to_owned(),
            config,
            filter,
            info,
            state: Mutex::new(State {
                plugin: Some(plugin),
                ..State::default()
            }),
        })
    }

    /// The exporter id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The plugin's name and version, from its `ready`.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The process id of the running plugin, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        self.state.lock().await.plugin.as_ref().map(|p| p.pid)
    }

    /// Asks the plugin to exit (`shutdown`), waits briefly, then kills it. A later delivery
    /// starts it again.
    pub async fn stop(&self) {
        let plugin = self.state.lock().await.plugin.take();
        if let Some(plugin) = plugin {
            let pid = plugin.pid;
            match plugin.shutdown().await {
                Some(status) if status.success() => {
                    tracing::debug!(exporter = %self.id, pid, "plugin stopped");
                }
                status => tracing::warn!(
                    exporter = %self.id,
                    pid,
                    status = ?status,
                    "plugin did not exit cleanly on shutdown"
                ),
            }
        }
    }

    fn describe(&self, what: &str) -> String {
        format!(
            "exec plugin {} (exporter {}): {what}",
            self.config.command, self.id
        )
    }

    /// Records a failure of the running plugin (killing it) or of a start, and schedules the
    /// next start. Returns the retryable error for the event in flight.
    async fn failed(&self, state: &mut State, broken: &Broken, context: &str) -> ExportError {
        let message = match state.plugin.take() {
            Some(mut plugin) => failure_message(&mut plugin, broken, context).await,
            None => format!("{} {context}", broken.describe()),
        };
        state.failures = state.failures.saturating_add(1);
        let pause = restart_pause(self.config.restart_backoff, state.failures);
        state.restart_at = Some(Instant::now() + pause);
        // The runner logs the error of the event; this says what happens to the process.
        tracing::info!(
            exporter = %self.id,
            failures = state.failures,
            restart_in = %show_duration(pause),
            "plugin process gone; a new one starts at the next delivery"
        );
        ExportError::Retryable(self.describe(&message))
    }

    /// The running plugin, started (after its restart pause) when none runs, with the next
    /// exchange marked in flight.
    async fn ensure_running<'a>(
        &self,
        state: &'a mut State,
    ) -> Result<&'a mut Plugin, ExportError> {
        if let Some(plugin) = state.plugin.as_mut()
            && let Ok(Some(_)) = plugin.child.try_wait()
        {
            // It exited between events: counts as a failure (a crash loop slows down). No event
            // fails for it, so it is logged here.
            let error = self.failed(state, &Broken::Exited, "while idle").await;
            tracing::warn!(exporter = %self.id, "{error}");
        } else if state.in_flight && state.plugin.is_some() {
            let error = self.failed(state, &Broken::Abandoned, "").await;
            tracing::warn!(exporter = %self.id, "{error}");
        }
        state.in_flight = false;
        if state.plugin.is_none() {
            if let Some(at) = state.restart_at {
                tokio::time::sleep_until(at).await;
            }
            let mut plugin = match Plugin::launch(&self.id, &self.config) {
                Ok(plugin) => plugin,
                Err(e) => return Err(self.failed(state, &Broken::Io(e), "(restarting)").await),
            };
            let handshake = plugin.handshake(&self.id, &self.config).await;
            let pid = plugin.pid;
            state.plugin = Some(plugin);
            match handshake {
                Ok((info, filter)) => {
                    if filter != self.filter || info != self.info {
                        tracing::warn!(
                            exporter = %self.id,
                            plugin = %info.name,
                            version = %info.version,
                            filter = ?filter,
                            "the restarted plugin announced another name, version or filter; \
                             the exporter keeps the first filter until giamsat restarts"
                        );
                    }
                    tracing::info!(
                        exporter = %self.id,
                        pid,
                        failures = state.failures,
                        "plugin restarted"
                    );
                }
                Err(broken) => {
                    return Err(self
                        .failed(state, &broken, "during the handshake (restarting)")
                        .await);
                }
            }
        }
        state.in_flight = state.plugin.is_some();
        state
            .plugin
            .as_mut()
            .ok_or_else(|| ExportError::Retryable(self.describe("no plugin process")))
    }

    /// Turns the outcomes of an `ack` into events to record.
    fn outcomes(
        &self,
        event: &RecordedEvent,
        wire: Vec<WireOutcome>,
    ) -> Result<Vec<Outcome>, ExportError> {
        let source = event.metadata_value();
        let metadata = EventMetadata {
            actor: Some(format!("exporter:{}", self.id)),
            correlation_id: source.correlation_id,
            causation_id: Some(event.event_id.to_string()),
            ..EventMetadata::default()
        };
        wire.into_iter()
            .enumerate()
            .map(|(i, o)| {
                let bad = |what: String| {
                    ExportError::Permanent(self.describe(&format!(
                        "outcome {} of its `ack` of position {}: {what}",
                        i + 1,
                        event.position
                    )))
                };
                let stream = o.stream.ok_or_else(|| bad("has no `stream`".to_owned()))?;
                let stream = StreamId::new(stream.clone())
                    .map_err(|e| bad(format!("stream {stream:?}: {e}")))?;
                let event_type = o
                    .event_type
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad("has no `event_type`".to_owned()))?;
                let id = match o.id {
                    None | Some(Value::Null) => {
                        return Err(bad("has no `id`; give every outcome a deterministic id \
                             (for example a UUIDv5 of the event id), so that a repeated delivery \
                             records nothing new"
                            .to_owned()));
                    }
                    Some(Value::String(text)) => text
                        .parse::<Uuid>()
                        .map_err(|e| bad(format!("id {text:?} is not a UUID: {e}")))?,
                    Some(other) => return Err(bad(format!("id {other} is not a UUID string"))),
                };
                let data = o.data.unwrap_or_else(empty_object);
                let mut new = NewEvent::new(event_type, &data)
                    .with_id(id)
                    .with_metadata(&metadata);
                if let Some(v) = o.schema_version {
                    new = new.with_schema_version(v);
                }
                new.validate(usize::MAX).map_err(|e| bad(e.to_string()))?;
                Ok(Outcome { stream, event: new })
            })
            .collect()
    }
}

/// The pause before a restart after `failures` failures in a row: the initial pause doubling,
/// up to a minute (or the initial pause, if longer).
fn restart_pause(initial: Duration, failures: u32) -> Duration {
    let doubled = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(MAX_RESTART_BACKOFF.max(initial))
}

/// Kills a broken plugin and says what happened: the cause, its exit status, and the last lines
/// of its standard error.
async fn failure_message(plugin: &mut Plugin, broken: &Broken, context: &str) -> String {
    let (status, killed) = match broken {
        Broken::Eof | Broken::Exited | Broken::Refused(_) => plugin.reap().await,
        _ => plugin.kill().await,
    };
    let tail = plugin.stderr_tail().await;
    let mut message = broken.describe();
    if !context.is_empty() {
        message.push(' ');
        message.push_str(context);
    }
    let pid = plugin.pid;
    match (status, killed) {
        (Some(status), false) => message.push_str(&format!("; it exited (pid {pid}, {status})")),
        (Some(_), true) => message.push_str(&format!("; killed (pid {pid})")),
        (None, _) => message.push_str(&format!("; pid {pid} could not be reaped")),
    }
    if !tail.is_empty() {
        message.push_str("; its last standard error: ");
        message.push_str(&tail.join(" | "));
    }
    message
}

#[async_trait]
impl Exporter for ExecExporter {
    fn filter(&self) -> Filter {
        self.filter.clone()
    }

    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        let line = serde_json::to_string(event)
            .map(|e| format!("{{\"type\":\"event\",\"event\":{e}}}"))
            .map_err(|e| ExportError::Permanent(self.describe(&format!("encoding: {e}"))))?;
        let mut state = self.state.lock().await;
        // Marks the exchange in flight until its answer is read.
        let plugin = self.ensure_running(&mut state).await?;
        let exchange = async {
            plugin.send(&line, self.config.timeout).await?;
            plugin
                .receive(&self.id, self.config.timeout, self.config.heartbeat_timeout)
                .await
        };
        let result = exchange.await;
        state.in_flight = false;
        let context = format!("while handling the event at position {}", event.position);
        match result {
            Ok(Reply::Ack { position, outcomes }) if position == event.position => {
                state.failures = 0;
                self.outcomes(event, outcomes)
            }
            Ok(Reply::Error {
                position: Some(position),
                retryable,
                message,
            }) if position == event.position => {
                state.failures = 0;
                let message = self.describe(&format!("position {position}: {message}"));
                if retryable.unwrap_or(true) {
                    Err(ExportError::Retryable(message))
                } else {
                    Err(ExportError::Permanent(message))
                }
            }
            Ok(other) => {
                let broken = Broken::Protocol(format!(
                    "it answered the event at position {} with {}",
                    event.position,
                    other.describe()
                ));
                Err(self.failed(&mut state, &broken, "").await)
            }
            Err(broken) => Err(self.failed(&mut state, &broken, &context).await),
        }
    }
}

impl Drop for ExecExporter {
    fn drop(&mut self) {
        if let Some(plugin) = self.state.get_mut().plugin.take() {
            plugin.shutdown_blocking();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_keys_are_checked_and_durations_parsed() {
        let err = ExecConfig::from_value(json!({"command": "x", "comand": "y"})).expect_err("typo");
        assert!(err.contains("comand"), "{err}");
        let err = ExecConfig::from_value(json!({})).expect_err("missing");
        assert!(err.contains("command"), "{err}");
        let err = ExecConfig::from_value(json!({"command": "x", "timeout": "0s"})).expect_err("0");
        assert!(err.contains("more than 0"), "{err}");
        let err =
            ExecConfig::from_value(json!({"command": "x", "timeout": "soon"})).expect_err("unit");
        assert!(err.contains("whole number"), "{err}");
        let err = ExecConfig::from_value(json!({"command": "x", "config": 3})).expect_err("table");
        assert!(err.contains("table"), "{err}");
        let c = ExecConfig::from_value(json!({
            "command": "plugins/x", "args": ["--a"], "env": {"K": "v"}, "working-dir": "/tmp",
            "timeout": "250ms", "heartbeat-timeout": "2m", "restart-backoff": "0s",
            "config": {"path": "out.csv"},
        }))
        .expect("valid");
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(120));
        assert_eq!(c.restart_backoff, Duration::ZERO);
        assert_eq!(c.config["path"], "out.csv");
        assert!(c.program().is_absolute());
        let bare = ExecConfig::from_value(json!({"command": "python3"})).expect("valid");
        assert_eq!(bare.program(), PathBuf::from("python3"));
        assert_eq!(bare.timeout, Duration::from_secs(30));
        assert_eq!(bare.config, json!({}));
    }

    #[test]
    fn restarts_back_off_doubling_up_to_a_minute() {
        let s = Duration::from_secs(1);
        assert_eq!(restart_pause(s, 1), s);
        assert_eq!(restart_pause(s, 3), Duration::from_secs(4));
        assert_eq!(restart_pause(s, 7), Duration::from_secs(60));
        assert_eq!(restart_pause(s, 1000), Duration::from_secs(60));
        assert_eq!(restart_pause(Duration::ZERO, 5), Duration::ZERO);
    }

    #[test]
    fn replies_parse_and_stderr_prefixes_set_the_level() {
        let r: Reply = serde_json::from_str(
            r#"{"type":"ready","name":"n","version":"1","filter":{"event_types":["A"]},"x":1}"#,
        )
        .expect("ready");
        assert!(matches!(r, Reply::Ready { filter: Some(f), .. } if f.event_types == ["A"]));
        let r: Reply = serde_json::from_str(r#"{"type":"heartbeat"}"#).expect("heartbeat");
        assert!(matches!(r, Reply::Heartbeat));
        let r: Reply =
            serde_json::from_str(r#"{"type":"ack","position":3}"#).expect("ack without outcomes");
        assert!(matches!(r, Reply::Ack { position: 3, outcomes } if outcomes.is_empty()));
        assert!(serde_json::from_str::<Reply>(r#"{"type":"hug"}"#).is_err());
        assert_eq!(
            stderr_level("ERROR: disk full"),
            (tracing::Level::ERROR, "disk full")
        );
        assert_eq!(stderr_level("debug:x"), (tracing::Level::DEBUG, "x"));
        assert_eq!(stderr_level("đĩa đầy"), (tracing::Level::WARN, "đĩa đầy"));
        assert_eq!(quote("ab"), "\"ab\"");
        assert!(quote(&"x".repeat(500)).ends_with('…'));
    }
}
