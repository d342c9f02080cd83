//! `--server URL --token TOKEN` (or `GIAMSAT_SERVER`, `GIAMSAT_TOKEN`): `giamsat case
//! start|do|show|list|history` and `giamsat documents list|number|register` through a running
//! daemon's HTTP API instead of the database, with the same output and exit codes: 0, 2 and the
//! rejection code with its Vietnamese and English messages for a command the workflow refuses
//! (answered 422, 403 or 409 with `details.rejected`), 1 with the daemon's message for any other
//! error. Who acts is the token's holder, so `--as` is refused; `--at` is sent along (the daemon
//! accepts it from an admin token only); `--command-id` becomes the `Idempotency-Key`, so
//! running a command again with the same id does nothing, as it does on the database.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use giamsat_documents::register::DocumentVersion;
use giamsat_documents::register::Registered;
use giamsat_engine::Rejection;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::cases::{self, CaseCommand, EXIT_REJECTED, Who};
use crate::documents::{
    DocumentsCommand, print_correction, print_numbered, print_registered, print_version,
};
use crate::output;

/// The longest wait for an answer (a command appends durably; a register of a year is a read).
const TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon's API, as one token's holder.
#[derive(Debug)]
pub struct Remote {
    client: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
}

/// What a call came back with: the JSON answer, or a rejection by the workflow.
enum Answer {
    Ok(Value),
    Rejected(Rejection),
}

/// A usage error (exit 2, as clap's): printed here, so the caller only returns the code.
fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

impl Remote {
    /// A client of the daemon at `server` (`http://HOST:PORT`, or `https://`) with `token`.
    pub fn new(server: &str, token: &str) -> Result<Remote> {
        let base = Url::parse(server).with_context(|| {
            format!("--server {server:?} is not a URL such as http://127.0.0.1:8080")
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server {server:?} must be an http:// or https:// URL");
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| anyhow!("--token holds characters a token cannot have"))?;
        authorization.set_sensitive(true);
        // rustls on ring, as the webhooks use; whoever installed a provider first wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Remote {
            client,
            base,
            authorization,
        })
    }

    /// The URL of the API path `segments` (each percent-encoded) with `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<String>,
    ) -> Result<Answer> {
        let url = self.url(segments, query);
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon: {method} {url}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the daemon's answer to {method} {url}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Answer::Ok(value));
        }
        if value.pointer("/details/rejected") == Some(&Value::Bool(true)) {
            let d = &value["details"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            return Ok(Answer::Rejected(Rejection {
                code: text(&value["code"]),
                command: text(&d["command"]),
                stage: text(&d["stage"]),
                entity: d["entity"].as_str().map(str::to_owned),
                entity_state: d["entity_state"].as_str().map(str::to_owned),
                message_en: text(&d["message_en"]),
                message_vi: text(&d["message_vi"]),
            }));
        }
        Err(api_error(status, &value, &bytes))
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Answer> {
        self.call(Method::GET, segments, query, None, None).await
    }
}

/// The daemon's error answer `{code, message, details}` as an error.
fn api_error(status: StatusCode, value: &Value, bytes: &[u8]) -> anyhow::Error {
    match (value["message"].as_str(), value["code"].as_str()) {
        (Some(message), Some(code)) => anyhow!("{message} (HTTP {}, {code})", status.as_u16()),
        _ => anyhow!(
            "the daemon answered {status}: {}",
            String::from_utf8_lossy(bytes)
                .chars()
                .take(500)
                .collect::<String>()
        ),
    }
}

/// `--at` as the `at` query parameter.
fn at_query(who: &Who) -> Vec<(&'static str, String)> {
    who.at.iter().map(|at| ("at", at.clone())).collect()
}

/// A case as `giamsat case show --json` prints it: the API's case without what only the API
/// adds (the commands the token may run now).
fn case_json(mut case: Value) -> Value {
    if let Value::Object(map) = &mut case {
        map.remove("available_commands");
    }
    case
}

/// An event as the API lists it, read back into the field order `giamsat case history --json`
/// prints (data and metadata kept as the exact stored JSON text).
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: String,
    event_type: String,
    schema_version: u32,
    data: Box<RawValue>,
    metadata: Box<RawValue>,
    recorded_at: String,
    prev_hash: String,
    hash: String,
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).with_context(|| format!("the daemon's {what} is not as expected"))
}

/// Runs a case command through the daemon.
pub async fn case(remote: &Remote, command: CaseCommand) -> Result<ExitCode> {
    let answer = match command {
        CaseCommand::Start(args) => {
            if args.who.actor.is_some() {
                return Ok(refuse_as());
            }
            let data = cases::read_data(&args.data)?;
            let mut body = json!({"workflow": args.workflow, "data": data});
            if let Some(id) = &args.id {
                body["id"] = json!(id);
            }
            match remote
                .call(
                    Method::POST,
                    &["api", "cases"],
                    &at_query(&args.who),
                    Some(&body),
                    None,
                )
                .await?
            {
                Answer::Ok(v) => {
                    let case = case_json(v["case"].clone());
                    if args.json {
                        output::line(&case.to_string())?;
                    } else {
                        output::line(case["id"].as_str().unwrap_or_default())?;
                    }
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        CaseCommand::Do(args) => {
            if args.who.actor.is_some() {
                return Ok(refuse_as());
            }
            let input = match &args.data {
                Some(path) => cases::read_data(path)?,
                None => cases::set_fields(&args.set)?,
            };
            let answer = remote
                .call(
                    Method::POST,
                    &["api", "cases", &args.case, "commands", &args.command],
                    &at_query(&args.who),
                    Some(&input),
                    args.command_id.map(|id| id.to_string()),
                )
                .await?;
            match answer {
                Answer::Ok(v) => {
                    let events = v["events"].as_array().cloned().unwrap_or_default();
                    if args.json {
                        output::line(&case_json(v["case"].clone()).to_string())?;
                    } else if events.is_empty() {
                        output::line("already applied: nothing to do")?;
                    } else {
                        let stage = v["case"]["stage"].as_str().unwrap_or_default();
                        for e in &events {
                            output::line(&format!(
                                "{} → stage {stage}",
                                e["event_type"].as_str().unwrap_or_default()
                            ))?;
                        }
                    }
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        CaseCommand::Show(args) => match remote.get(&["api", "cases", &args.case], &[]).await? {
            Answer::Ok(v) => {
                let case = case_json(v);
                if args.json {
                    output::line(&case.to_string())?;
                } else {
                    show(&case)?;
                }
                Answer::Ok(Value::Null)
            }
            rejected => rejected,
        },
        CaseCommand::List(args) => match remote.get(&["api", "cases"], &[]).await? {
            Answer::Ok(v) => {
                for s in v.as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                    if args.json {
                        output::line(
                            &json!({"id": s["id"], "workflow": s["workflow"], "version": s["version"],
                                    "stage": s["stage"], "updated_at": s["updated_at"]})
                            .to_string(),
                        )?;
                    } else {
                        output::line(&format!(
                            "{}\t{}\t{}\t{}",
                            text("id"),
                            text("workflow"),
                            text("stage"),
                            text("updated_at")
                        ))?;
                    }
                }
                Answer::Ok(Value::Null)
            }
            rejected => rejected,
        },
        CaseCommand::History(args) => {
            match remote
                .get(&["api", "cases", &args.case, "history"], &[])
                .await?
            {
                Answer::Ok(v) => {
                    let events: Vec<Event> = parse(v, "case history")?;
                    for e in &events {
                        if args.json {
                            output::line(&serde_json::to_string(e)?)?;
                        } else {
                            let data: Value = serde_json::from_str(e.data.get())?;
                            let metadata: Value = serde_json::from_str(e.metadata.get())?;
                            output::line(&format!(
                                "{}\t{}\t{}\t{}\t{}",
                                e.stream_version,
                                data["at"].as_str().unwrap_or_default(),
                                e.event_type,
                                metadata["actor"].as_str().unwrap_or_default(),
                                data["command"].as_str().unwrap_or_default()
                            ))?;
                        }
                    }
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
    };
    Ok(finish(answer))
}

/// `giamsat case show` without `--json`, from the API's case.
fn show(case: &Value) -> Result<()> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    output::line(&format!(
        "case {} — {} v{} — stage {} ({})",
        text(&case["id"]),
        text(&case["workflow"]),
        case["version"],
        text(&case["stage"]),
        text(&case["stage_label"])
    ))?;
    for (collection, entities) in case["entities"].as_object().into_iter().flatten() {
        output::line(&format!("{collection}:"))?;
        for (key, e) in entities.as_object().into_iter().flatten() {
            output::line(&format!("  {key}\t{}", text(&e["state"])))?;
        }
    }
    for w in case["warnings"].as_array().into_iter().flatten() {
        output::line(&format!(
            "warning {}: {}",
            text(&w["code"]),
            text(&w["message"])
        ))?;
    }
    Ok(())
}

/// Runs `documents list|number|correct|register` through the daemon.
pub async fn documents(remote: &Remote, command: DocumentsCommand) -> Result<ExitCode> {
    let answer = match command {
        DocumentsCommand::List(args) => {
            match remote
                .get(&["api", "cases", &args.case, "documents"], &[])
                .await?
            {
                Answer::Ok(v) => {
                    let versions: Vec<DocumentVersion> = parse(v, "document list")?;
                    for v in &versions {
                        print_version(v, args.json)?;
                    }
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        DocumentsCommand::Number(args) => {
            if args.who.actor.is_some() {
                return Ok(refuse_as());
            }
            match remote
                .call(
                    Method::POST,
                    &[
                        "api",
                        "cases",
                        &args.case,
                        "documents",
                        &args.document,
                        "number",
                    ],
                    &at_query(&args.who),
                    None,
                    None,
                )
                .await?
            {
                Answer::Ok(v) => {
                    let entry: Registered = parse(v["entry"].clone(), "register entry")?;
                    print_numbered(&entry, args.json)?;
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        DocumentsCommand::Register(args) => {
            let query: Vec<(&str, String)> =
                args.year.iter().map(|y| ("year", y.to_string())).collect();
            match remote.get(&["api", "register"], &query).await? {
                Answer::Ok(v) => {
                    let entries: Vec<Registered> = parse(v, "register")?;
                    for e in &entries {
                        print_registered(e, args.json)?;
                    }
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        DocumentsCommand::Correct(args) => {
            if args.who.actor.is_some() {
                return Ok(refuse_as());
            }
            let body = serde_json::json!({ "reason": args.reason });
            match remote
                .call(
                    Method::POST,
                    &[
                        "api",
                        "cases",
                        &args.case,
                        "documents",
                        &args.document,
                        "corrections",
                    ],
                    &at_query(&args.who),
                    Some(&body),
                    None,
                )
                .await?
            {
                Answer::Ok(v) => {
                    print_correction(&args.document, &v["version"])?;
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
    };
    Ok(finish(answer))
}

fn refuse_as() -> ExitCode {
    usage("--as cannot be used with --server: the token decides who acts")
}

/// Exit 0, or 2 with the rejection printed as the database commands print it.
fn finish(answer: Answer) -> ExitCode {
    match answer {
        Answer::Ok(_) => ExitCode::SUCCESS,
        Answer::Rejected(r) => {
            cases::print_rejection(&r);
            ExitCode::from(EXIT_REJECTED)
        }
    }
}

/// The remote client for `--server`/`--token`, or `Err` with the usage error's exit code.
pub fn connect(server: &str, token: Option<&str>) -> Result<Remote, ExitCode> {
    let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
        return Err(usage(
            "--server needs --token TOKEN (or GIAMSAT_TOKEN): a token of the daemon, from `giamsat token create`",
        ));
    };
    Remote::new(server, token).map_err(|e| usage(&format!("{e:#}")))
}

/// `giamsat --server URL [--token TOKEN] case ...`.
pub async fn run_case(server: &str, token: Option<&str>, command: CaseCommand) -> Result<ExitCode> {
    match connect(server, token) {
        Ok(remote) => case(&remote, command).await,
        Err(code) => Ok(code),
    }
}

/// `giamsat --server URL [--token TOKEN] documents ...`.
pub async fn run_documents(
    server: &str,
    token: Option<&str>,
    command: DocumentsCommand,
) -> Result<ExitCode> {
    match connect(server, token) {
        Ok(remote) => documents(&remote, command).await,
        Err(code) => Ok(code),
    }
}

/// `giamsat --server URL [--token TOKEN] verify`: the daemon checks its log's chain.
pub async fn run_verify(
    server: &str,
    token: Option<&str>,
    args: crate::events::VerifyArgs,
) -> Result<ExitCode> {
    let remote = match connect(server, token) {
        Ok(remote) => remote,
        Err(code) => return Ok(code),
    };
    match remote.get(&["api", "verify"], &[]).await? {
        Answer::Ok(report) => crate::events::print_verify(&report, args.json),
        Answer::Rejected(r) => Ok(finish(Answer::Rejected(r))),
    }
}

/// `giamsat --server URL [--token TOKEN] exporters list|parked|retry`: the daemon's exporters.
pub async fn run_exporters(
    server: &str,
    token: Option<&str>,
    command: crate::exporters::ExportersCommand,
) -> Result<ExitCode> {
    use crate::exporters::{ExportersCommand, print_parked, print_retried, print_status};
    let remote = match connect(server, token) {
        Ok(remote) => remote,
        Err(code) => return Ok(code),
    };
    let answer = match command {
        ExportersCommand::List(args) => match remote.get(&["api", "exporters"], &[]).await? {
            Answer::Ok(list) => {
                for status in list.as_array().into_iter().flatten() {
                    print_status(status, args.json)?;
                }
                Answer::Ok(Value::Null)
            }
            rejected => rejected,
        },
        ExportersCommand::Parked(args) => {
            match remote
                .get(&["api", "exporters", &args.id, "parked"], &[])
                .await?
            {
                Answer::Ok(list) => {
                    let parked: Vec<giamsat_exporter::Parked> = parse(list, "parked events")?;
                    for p in &parked {
                        print_parked(p, args.json)?;
                    }
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        ExportersCommand::Retry(args) => {
            let parked = args.parked.to_string();
            match remote
                .call(
                    Method::POST,
                    &["api", "exporters", &args.id, "parked", &parked, "retry"],
                    &[],
                    None,
                    None,
                )
                .await?
            {
                Answer::Ok(_) => {
                    print_retried(args.parked)?;
                    Answer::Ok(Value::Null)
                }
                rejected => rejected,
            }
        }
        ExportersCommand::Replay(_) | ExportersCommand::Run(_) => {
            return Ok(usage(
                "exporters replay and exporters run work on the database and are not available \
                 through --server (the daemon runs its exporters itself)",
            ));
        }
    };
    Ok(finish(answer))
}

/// A command that works only on the database, asked for with --server: refused rather than run
/// on a local database the user did not mean.
pub fn refuse(command: &str) -> ExitCode {
    usage(&format!(
        "giamsat {command} works on the database and is not available through --server; run it \
         without --server (and GIAMSAT_SERVER) where the daemon's database is"
    ))
}
