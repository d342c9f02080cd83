//! The OpenAPI 3.1 description of the HTTP API, served at `GET /api/openapi.json` (no token
//! needed). It is built from [`OPERATIONS`], one entry per route and method, plus the loaded
//! workflows: the command names, and each command's input schema and each workflow's start
//! schema as components.
//!
//! It cannot drift silently: a test reads every `.route(...)` registration in this crate's
//! sources and fails when an `/api` route (or method) is not in [`OPERATIONS`], or when an entry
//! names a route that is not registered; another starts the daemon and requests every documented
//! operation with an admin token (none may answer the router's fallback 404 or 405), and checks
//! that real 400, 401, 403, 404, 409, 413 and 422 answers match the documented error schema and
//! are documented for the operation that gave them.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use giamsat_engine::{SchemaRef, Workflow};
use serde_json::{Map, Value, json};

use crate::AppState;

/// The document's OpenAPI version.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// A query or header parameter.
#[derive(Debug, Clone, Copy)]
struct Param {
    name: &'static str,
    required: bool,
    description: &'static str,
    schema: fn() -> Value,
}

/// What an operation takes as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    /// `{workflow, id?, data}`.
    StartCase,
    /// The command's input, per the workflow's input schema.
    Command,
    /// `{now}`: the time a manual clock moves to.
    SetClock,
    /// `{reason}`: why an issued document is corrected.
    Correction,
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy)]
enum Content {
    Json(fn() -> Value),
    Text(&'static str),
    /// A rendered document file.
    Document,
    /// An archive package (a ZIP or a tar file).
    Package,
    EventStream,
}

/// One answer of an operation besides the error answers.
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    description: &'static str,
    content: Content,
    /// Response headers it sets (`ETag`, `Location`).
    headers: &'static [&'static str],
}

/// One route and method of the API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operation {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Needs `Authorization: Bearer <token>`.
    auth: bool,
    query: &'static [Param],
    headers: &'static [Param],
    body: Body,
    answers: &'static [Answer],
    /// The error statuses it can answer with (the body is always the error object).
    pub(crate) errors: &'static [u16],
}

const AT: Param = Param {
    name: "at",
    required: false,
    description: "The time the command happens, RFC 3339 (admin tokens only: others get 403); default: now on the daemon's clock, in the workflow's time zone.",
    schema: || json!({"type": "string", "format": "date-time"}),
};
const IDEMPOTENCY_KEY: Param = Param {
    name: "Idempotency-Key",
    required: false,
    description: "1 to 200 visible ASCII characters. A request repeated with the same key (by the same token, on the same case) applies once; the key reused for another command or input answers 409.",
    schema: || json!({"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"}),
};
const IF_MATCH: Param = Param {
    name: "If-Match",
    required: false,
    description: "The case's version the caller saw (its ETag, e.g. \"7\"): the command runs only on that version, else 409.",
    schema: || json!({"type": "string", "examples": ["\"7\""]}),
};

fn json_of(reference: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{reference}")})
}

fn array_of(reference: &str) -> Value {
    json!({"type": "array", "items": json_of(reference)})
}

const HEALTH: Answer = Answer {
    status: 200,
    description: "The process is up.",
    content: Content::Json(
        || json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}),
    ),
    headers: &[],
};

/// Every route and method of the router, in the router's order.
pub(crate) const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/healthz",
        id: "healthz",
        tag: "system",
        summary: "Liveness",
        description: "200 as long as the process answers.",
        auth: false,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[HEALTH],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/readyz",
        id: "readyz",
        tag: "system",
        summary: "Readiness",
        description: "200 when the store answers and at least one workflow is loaded, else 503; the body says which part is not ready and lists definitions that did not load.",
        auth: false,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[
            Answer {
                status: 200,
                description: "Ready.",
                content: Content::Json(|| json_of("Readiness")),
                headers: &[],
            },
            Answer {
                status: 503,
                description: "Not ready (the store does not answer, or no workflow loaded).",
                content: Content::Json(|| json_of("Readiness")),
                headers: &[],
            },
        ],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/metrics",
        id: "metrics",
        tag: "system",
        summary: "Prometheus metrics",
        description: "The Prometheus text exposition: appends, rejected commands, exporter lag, pending timers, request latency by route.",
        auth: false,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "Metrics in the Prometheus text format 0.0.4.",
            content: Content::Text("text/plain; version=0.0.4; charset=utf-8"),
            headers: &[],
        }],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/api/openapi.json",
        id: "openapi",
        tag: "system",
        summary: "This document",
        description: "The OpenAPI 3.1 description of the API, with the loaded workflows' command names and input schemas.",
        auth: false,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The OpenAPI document.",
            content: Content::Json(
                || json!({"type": "object", "required": ["openapi", "info", "paths"]}),
            ),
            headers: &[],
        }],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/api/docs",
        id: "apiReference",
        tag: "system",
        summary: "This document as a web page",
        description: "The same description as `/api/openapi.json`, as one HTML page served by the daemon itself (no script, nothing loaded from elsewhere): every operation with its parameters, body, answers and errors, and every schema.",
        auth: false,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The reference page.",
            content: Content::Text("text/html; charset=utf-8"),
            headers: &[],
        }],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/api/verify",
        id: "verify",
        tag: "system",
        summary: "Verify the hash chain",
        description: "Walks the whole log recomputing every hash; `intact` false names the first bad position.",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The verification report.",
            content: Content::Json(|| json_of("VerifyReport")),
            headers: &[],
        }],
        errors: &[401],
    },
    Operation {
        method: "get",
        path: "/api/clock",
        id: "getClock",
        tag: "system",
        summary: "The daemon's clock",
        description: "The time on the daemon's clock (the one its scheduler and commands use) and its kind: system, manual (`--clock manual:TIME`) or simulated (`--clock sim:TIME,speed=N`, `serve --demo`).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The clock.",
            content: Content::Json(|| json_of("Clock")),
            headers: &[],
        }],
        errors: &[401],
    },
    Operation {
        method: "post",
        path: "/api/clock",
        id: "setClock",
        tag: "system",
        summary: "Move a manual clock forward",
        description: "For rehearsals and training on a daemon started with `--clock manual:TIME` (admin): the clock moves to `now` and the scheduler fires every timer that came due. A system or simulated clock cannot be moved, and a manual clock never goes back (409).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::SetClock,
        answers: &[Answer {
            status: 200,
            description: "The clock after the move.",
            content: Content::Json(|| json_of("Clock")),
            headers: &[],
        }],
        errors: &[400, 401, 403, 409, 413],
    },
    Operation {
        method: "get",
        path: "/api/workflows",
        id: "listWorkflows",
        tag: "workflows",
        summary: "The loaded workflow definitions",
        description: "Name, version, content hash, label, description and time zone of each definition loaded from the workflows folder.",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The workflows.",
            content: Content::Json(|| array_of("WorkflowSummary")),
            headers: &[],
        }],
        errors: &[401],
    },
    Operation {
        method: "get",
        path: "/api/workflows/{name}",
        id: "getWorkflow",
        tag: "workflows",
        summary: "A workflow definition",
        description: "Roles, stages, the start schema, collections, commands (with their roles, stages, input schemas and targets), events, documents and parameters.",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The definition.",
            content: Content::Json(|| json_of("WorkflowDetail")),
            headers: &[],
        }],
        errors: &[401, 404],
    },
    Operation {
        method: "get",
        path: "/api/cases",
        id: "listCases",
        tag: "cases",
        summary: "The cases the token may see",
        description: "Id, workflow, stage and the next pending deadline of every case; a unit token sees only the cases its unit is part of.",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The cases.",
            content: Content::Json(|| array_of("CaseListItem")),
            headers: &[],
        }],
        errors: &[401],
    },
    Operation {
        method: "post",
        path: "/api/cases",
        id: "startCase",
        tag: "cases",
        summary: "Start a case",
        description: "Starts a case of a workflow with its start data (admin, secretariat). 201 with the case; a repeat with the same Idempotency-Key answers 200 with the case as it is.",
        auth: true,
        query: &[AT],
        headers: &[IDEMPOTENCY_KEY],
        body: Body::StartCase,
        answers: &[
            Answer {
                status: 201,
                description: "Started.",
                content: Content::Json(|| json_of("CommandResult")),
                headers: &["Location", "ETag"],
            },
            Answer {
                status: 200,
                description: "Already started by this request (same Idempotency-Key): nothing applied.",
                content: Content::Json(|| json_of("CommandResult")),
                headers: &[],
            },
        ],
        errors: &[400, 401, 403, 404, 409, 413, 422],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}",
        id: "getCase",
        tag: "cases",
        summary: "A case",
        description: "Stage, stage history, entities, data, warnings and the commands the token's role may run now; for a unit token, other units' parts are left out. The ETag is the case's version (for If-Match).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The case.",
            content: Content::Json(|| json_of("Case")),
            headers: &["ETag"],
        }],
        errors: &[401, 404],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}/history",
        id: "caseHistory",
        tag: "cases",
        summary: "A case's events",
        description: "Every event of the case with its time, actor and command; for a unit token without other units' events, and with other units' parts removed (`redacted`).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The events, oldest first.",
            content: Content::Json(|| array_of("Event")),
            headers: &[],
        }],
        errors: &[401, 404],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}/timers",
        id: "caseTimers",
        tag: "cases",
        summary: "A case's timers",
        description: "Every timer of the case (reminders, overdue marks, ...) with its due time and state: pending, inactive, or done (fired, rejected, skipped).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The timers.",
            content: Content::Json(|| array_of("Timer")),
            headers: &[],
        }],
        errors: &[401, 404],
    },
    Operation {
        method: "post",
        path: "/api/cases/{id}/commands/{command}",
        id: "runCommand",
        tag: "cases",
        summary: "Run a workflow command on a case",
        description: "The body is the command's input, checked against the workflow's input schema for that command (see `x-giamsat-input-schemas` on this operation, or GET /api/workflows/{name}); an empty body is `{}`. The workflow decides whether the token's role (and unit) may run it in the case's stage: 403 when the role or unit may not, 422 for any other rejection, with the rejection code and the Vietnamese and English messages in `details`.",
        auth: true,
        query: &[AT],
        headers: &[IDEMPOTENCY_KEY, IF_MATCH],
        body: Body::Command,
        answers: &[Answer {
            status: 200,
            description: "Applied (or, with the same Idempotency-Key, already applied: `applied` false).",
            content: Content::Json(|| json_of("CommandResult")),
            headers: &["ETag"],
        }],
        errors: &[400, 401, 403, 404, 409, 413, 422],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}/documents",
        id: "caseDocuments",
        tag: "documents",
        summary: "A case's documents",
        description: "Each document version the documents exporter rendered, with its number (none: a draft), files and download links.",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The document versions.",
            content: Content::Json(|| array_of("DocumentVersion")),
            headers: &[],
        }],
        errors: &[401, 404],
    },
    Operation {
        method: "post",
        path: "/api/cases/{id}/documents/{document}/number",
        id: "numberDocument",
        tag: "documents",
        summary: "Number a signed document",
        description: "Gives the latest version of the document the next number of its issuing body's series for its year (admin, secretariat), and records it in the case when the workflow tracks the document; the documents exporter renders it again with its number. Numbering again returns the same number. No body.",
        auth: true,
        query: &[AT],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The register entry.",
            content: Content::Json(|| json_of("NumberResult")),
            headers: &[],
        }],
        errors: &[400, 401, 403, 404, 409, 413, 422],
    },
    Operation {
        method: "post",
        path: "/api/cases/{id}/documents/{document}/corrections",
        id: "correctDocument",
        tag: "documents",
        summary: "Ask for a corrected version of an issued document",
        description: "For an issued (numbered) document (admin, secretariat), as `giamsat documents correct`: the issued version is kept as it is and the documents exporter renders the next version with the case's current data, unnumbered until it is numbered in turn. A draft is refused (422 `document_not_correctable`): correct the case data instead.",
        auth: true,
        query: &[AT],
        headers: &[],
        body: Body::Correction,
        answers: &[Answer {
            status: 202,
            description: "The version asked for; the exporter renders it.",
            content: Content::Json(|| json_of("CorrectionResult")),
            headers: &[],
        }],
        errors: &[400, 401, 403, 404, 413, 422],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}/documents/{document}/{version}/{format}",
        id: "downloadDocument",
        tag: "documents",
        summary: "Download a rendered document",
        description: "The file as rendered, checked against the SHA-256 of its record (the ETag).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The file.",
            content: Content::Document,
            headers: &["ETag"],
        }],
        errors: &[400, 401, 404, 409],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}/archive",
        id: "listArchivePackages",
        tag: "archive",
        summary: "A case's archive packages",
        description: "The BagIt packages the archive exporter built for the case (its `ArchivePackageBuilt` records), oldest first, each checked again on disk (`check`) and with its download path. A package holds every unit's data, so unit tokens are refused (403).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The packages.",
            content: Content::Json(|| array_of("ArchivePackage")),
            headers: &[],
        }],
        errors: &[401, 403, 404],
    },
    Operation {
        method: "get",
        path: "/api/cases/{id}/archive/{package}",
        id: "downloadArchivePackage",
        tag: "archive",
        summary: "Download an archive package",
        description: "The package as built (`.zip` or `.tar`), or a folder package packed into a `.tar` with the same layout on the way; the ETag is the SHA-256 of the bytes sent. Unit tokens are refused (403).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The package file.",
            content: Content::Package,
            headers: &["ETag"],
        }],
        errors: &[401, 403, 404],
    },
    Operation {
        method: "get",
        path: "/api/register",
        id: "register",
        tag: "documents",
        summary: "The register of outgoing documents",
        description: "Sổ đăng ký văn bản đi of a year: number, date, type, excerpt, signer, recipients. A unit token sees the entries of documents it may see.",
        auth: true,
        query: &[Param {
            name: "year",
            required: false,
            description: "The year (default: this year on the daemon's clock).",
            schema: || json!({"type": "integer"}),
        }],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The entries in number order.",
            content: Content::Json(|| array_of("RegisterEntry")),
            headers: &[],
        }],
        errors: &[400, 401],
    },
    Operation {
        method: "get",
        path: "/api/exporters",
        id: "listExporters",
        tag: "exporters",
        summary: "The exporters and their lag",
        description: "Type, enabled, checkpoint, lag (events, seconds), parked events and what each runner counted since the daemon started (admin, secretariat, viewer).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The exporters.",
            content: Content::Json(|| array_of("ExporterStatus")),
            headers: &[],
        }],
        errors: &[401, 403],
    },
    Operation {
        method: "get",
        path: "/api/exporters/{id}/parked",
        id: "parkedEvents",
        tag: "exporters",
        summary: "An exporter's parked events",
        description: "The events the exporter could not export, with the error and the attempts (admin, secretariat, viewer).",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "The parked events.",
            content: Content::Json(|| array_of("Parked")),
            headers: &[],
        }],
        errors: &[401, 403, 404],
    },
    Operation {
        method: "post",
        path: "/api/exporters/{id}/parked/{parked}/retry",
        id: "retryParked",
        tag: "exporters",
        summary: "Export a parked event again",
        description: "Exports the parked event now (admin): on success it leaves the parked list; on failure it stays parked and the error is answered with 422. No body.",
        auth: true,
        query: &[],
        headers: &[],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "Exported.",
            content: Content::Json(
                || json!({"type": "object", "required": ["exported", "parked"], "properties": {"exported": {"const": true}, "parked": {"type": "string", "format": "uuid"}}}),
            ),
            headers: &[],
        }],
        errors: &[400, 401, 403, 404, 413, 422],
    },
    Operation {
        method: "get",
        path: "/api/events",
        id: "events",
        tag: "events",
        summary: "Committed events as server-sent events",
        description: "Each SSE event has `id: <position>` and the event as JSON in `data`. A client that reconnects with Last-Event-ID resumes after that position. Admins see the tokens stream; a unit token sees only the case events of its cases, redacted. The stream ends when the daemon stops.",
        auth: true,
        query: &[
            Param {
                name: "from",
                required: false,
                description: "The first position to deliver (1: the whole log); default: only events committed from now on. Last-Event-ID takes precedence.",
                schema: || json!({"type": "integer", "minimum": 1}),
            },
            Param {
                name: "stream",
                required: false,
                description: "Only streams whose id starts with this, e.g. case/tg2024 (a unit token: case/... only).",
                schema: || json!({"type": "string"}),
            },
            Param {
                name: "type",
                required: false,
                description: "Only these event types, comma-separated.",
                schema: || json!({"type": "string", "examples": ["NoticeIssued,ReportReceived"]}),
            },
        ],
        headers: &[Param {
            name: "Last-Event-ID",
            required: false,
            description: "Resume after this log position.",
            schema: || json!({"type": "string", "pattern": "^[0-9]+$"}),
        }],
        body: Body::None,
        answers: &[Answer {
            status: 200,
            description: "An endless text/event-stream (keep-alive comments every 15 s).",
            content: Content::EventStream,
            headers: &[],
        }],
        errors: &[400, 401, 403],
    },
];

/// The component name of each documented error status.
fn error_response(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        422 => "Unprocessable",
        _ => "Error",
    }
}

/// The error object every error answer carries.
pub(crate) fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error answer: `code` is stable and machine-readable, `message` is English for engineers and logs, `details` carries what the code needs (for a workflow's rejection: the rejection code, stage, entity and the Vietnamese and English messages), or null.",
        "required": ["code", "message", "details"],
        "additionalProperties": false,
        "properties": {
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "examples": ["case_not_found", "version_conflict", "wrong_stage"]},
            "message": {"type": "string"},
            "details": {"type": ["object", "null"]}
        }
    })
}

fn responses_component(max_body: usize) -> Value {
    let error = |description: String| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": json_of("Error")}}
        })
    };
    let mut unauthorized = error(
        "No token, or an unknown or revoked one (`missing_token`, `invalid_token`, ...)."
            .to_owned(),
    );
    unauthorized["headers"] = json!({
        "WWW-Authenticate": {"description": "Bearer realm=\"giamsat\"", "schema": {"type": "string"}}
    });
    json!({
        "BadRequest": error("Invalid input: the body is not JSON or not the expected shape, or a query parameter, path segment or header is malformed (`invalid_json`, `invalid_input`, `invalid_query`, `invalid_path`, `invalid_at`, `invalid_if_match`, `invalid_idempotency_key`, ...).".to_owned()),
        "Unauthorized": unauthorized,
        "Forbidden": error("The token's role or unit may not do this: an API rule, or the workflow's rejection `role_not_allowed` / `not_own_unit` (then `details` is a RejectionDetails).".to_owned()),
        "NotFound": error("No such case, workflow, command, document, exporter or parked event; a unit token gets the same answer for a case its unit is not part of (`case_not_found`, `workflow_not_found`, `unknown_command`, `document_not_found`, `exporter_not_found`, `not_found` for an unknown endpoint, ...).".to_owned()),
        "Conflict": error("A conflict: If-Match is not the case's version (`version_conflict`, with `expected_version` and `actual_version`), the Idempotency-Key was used for another input (`idempotency_key_reused`), the case already exists (`case_exists`), or the case or register kept changing (`case_contended`, `register_contended`).".to_owned()),
        "PayloadTooLarge": error(format!("The request body is larger than the limit ({max_body} bytes on this daemon; `body_too_large`, `details.limit_bytes`).")),
        "Unprocessable": {
            "description": "Rejected by the workflow (`details.rejected` true, with the rejection code, e.g. `wrong_stage`, `invalid_input`, `deadline_not_passed`, and its Vietnamese and English messages), or an export that failed again (`export_failed`), or a document that cannot be numbered (`document_not_numberable`).",
            "content": {"application/json": {"schema": {
                "allOf": [json_of("Error")],
                "properties": {"details": {"anyOf": [json_of("RejectionDetails"), {"type": ["object", "null"]}]}}
            }}}
        },
        "Error": error("Another error (500 internal, 503 store unavailable).".to_owned()),
    })
}

/// The schemas of the answers (the main fields; objects may carry more).
fn schemas() -> Map<String, Value> {
    let string = json!({"type": "string"});
    let int = json!({"type": "integer"});
    let object = |required: &[&str], properties: Value| json!({"type": "object", "required": required, "properties": properties});
    let mut m = Map::new();
    m.insert("Error".to_owned(), error_schema());
    m.insert(
        "RejectionDetails".to_owned(),
        object(
            &["rejected", "command", "message_vi", "message_en"],
            json!({
                "rejected": {"const": true},
                "command": string,
                "stage": string,
                "entity": {"type": ["string", "null"]},
                "entity_state": {"type": ["string", "null"]},
                "message_vi": {"type": "string", "description": "The workflow's Vietnamese message, to show to people."},
                "message_en": string,
            }),
        ),
    );
    m.insert(
        "StartCaseRequest".to_owned(),
        json!({
            "type": "object",
            "required": ["workflow", "data"],
            "additionalProperties": false,
            "properties": {
                "workflow": {"type": "string", "description": "A workflow name (GET /api/workflows)."},
                "id": {"type": "string", "description": "The case id (default: generated)."},
                "data": {"type": "object", "description": "The start data, checked against the workflow's start schema (components StartData.<workflow>; GET /api/workflows/{name} as start.schema)."},
            }
        }),
    );
    m.insert(
        "CommandInput".to_owned(),
        json!({
            "type": "object",
            "description": "A command's input: an object checked against the workflow's input schema for the command (components CommandInput.<workflow>.<command>; GET /api/workflows/{name} as commands[].input_schema).",
        }),
    );
    m.insert(
        "StageChange".to_owned(),
        object(
            &["stage", "at", "command"],
            json!({"stage": string, "at": {"type": "string", "format": "date-time"}, "command": string}),
        ),
    );
    m.insert(
        "Case".to_owned(),
        object(
            &["id", "workflow", "stage", "stream_version", "entities", "data", "warnings"],
            json!({
                "id": string, "workflow": string, "version": int, "definition_hash": string,
                "stage": string, "stage_label": {"type": ["string", "null"]},
                "stages": array_of("StageChange"),
                "entities": {"type": "object", "description": "Collection → key → {state, data}."},
                "data": {"type": "object"},
                "warnings": {"type": "array", "items": {"type": "object"}},
                "stream_version": int, "started_at": string, "updated_at": string,
                "available_commands": {"type": "array", "items": object(&["id", "label"], json!({"id": string, "label": string}))},
            }),
        ),
    );
    m.insert(
        "CaseListItem".to_owned(),
        object(
            &["id", "workflow", "stage", "stream_version"],
            json!({
                "id": string, "workflow": string, "version": int, "stage": string,
                "stage_label": {"type": ["string", "null"]}, "stream_version": int, "updated_at": string,
                "next_deadline": {"type": ["object", "null"], "properties": {
                    "due": {"type": "string", "format": "date-time"}, "timer": string, "label": string,
                    "key": {"type": ["string", "null"]}, "command": string,
                }},
            }),
        ),
    );
    m.insert(
        "CommandResult".to_owned(),
        object(
            &["applied", "command_id", "case"],
            json!({
                "applied": {"type": "boolean"},
                "command_id": {"type": "string", "format": "uuid"},
                "events": {"type": "array", "items": object(&["event_id", "event_type"], json!({"event_id": {"type": "string", "format": "uuid"}, "event_type": string}))},
                "case": json_of("Case"),
            }),
        ),
    );
    m.insert(
        "Event".to_owned(),
        object(
            &["position", "stream_id", "stream_version", "event_id", "event_type", "data", "metadata", "recorded_at", "hash"],
            json!({
                "position": int, "stream_id": string, "stream_version": int,
                "event_id": {"type": "string", "format": "uuid"}, "event_type": string, "schema_version": int,
                "data": {"type": "object"}, "metadata": {"type": "object"},
                "recorded_at": {"type": "string", "format": "date-time"},
                "prev_hash": string, "hash": string,
                "redacted": {"type": "boolean", "description": "Other units' parts were removed (unit tokens)."},
            }),
        ),
    );
    m.insert(
        "Timer".to_owned(),
        object(
            &["case", "timer", "instance", "due", "command", "state"],
            json!({
                "case": string, "timer": string, "label": string, "key": string, "instance": string,
                "due": {"type": "string", "format": "date-time"}, "command": string, "input": {"type": "object"},
                "when_late": string, "state": {"type": "string", "examples": ["pending", "inactive", "done"]},
                "due_now": {"type": "boolean"},
            }),
        ),
    );
    let file = object(
        &["format", "path", "sha256"],
        json!({"format": {"enum": ["html", "md", "docx"]}, "path": string, "sha256": string}),
    );
    m.insert(
        "DocumentVersion".to_owned(),
        object(
            &["document", "kind", "version", "files"],
            json!({
                "document": string, "kind": string, "label": string, "version": int, "date": string,
                "number": {"type": ["integer", "null"]}, "symbol": {"type": ["string", "null"], "examples": ["01/TB-ĐGS"]},
                "excerpt": string, "files": {"type": "array", "items": file},
                "draft_files": {"type": "array", "items": file},
                "downloads": {"type": "object", "description": "Format → download path.", "additionalProperties": string},
            }),
        ),
    );
    m.insert(
        "RegisterEntry".to_owned(),
        object(
            &["year", "number", "symbol", "case", "document", "version"],
            json!({
                "year": int, "number": int, "symbol": string, "secret": {"type": "boolean"}, "case": string,
                "document": string, "version": int, "kind": string, "type_name": string, "date": string,
                "excerpt": string, "signer": string, "recipients": string,
            }),
        ),
    );
    m.insert(
        "NumberResult".to_owned(),
        object(
            &["entry", "recorded_in_case"],
            json!({"entry": json_of("RegisterEntry"), "recorded_in_case": {"type": "boolean"}}),
        ),
    );
    m.insert(
        "ExporterStatus".to_owned(),
        object(
            &[
                "id",
                "type",
                "enabled",
                "checkpoint",
                "lag_events",
                "parked",
            ],
            json!({
                "id": string, "type": string, "enabled": {"type": "boolean"}, "checkpoint": int,
                "lag_events": int, "lag_seconds": {"type": "number"}, "parked": int, "handled": int,
                "retries": int, "last_error": {"type": ["string", "null"]},
            }),
        ),
    );
    m.insert(
        "Parked".to_owned(),
        object(
            &["id", "position", "event_id", "event_type", "stream_id", "error", "permanent", "attempts"],
            json!({
                "id": {"type": "string", "format": "uuid"}, "position": int,
                "event_id": {"type": "string", "format": "uuid"}, "event_type": string, "stream_id": string,
                "error": string, "permanent": {"type": "boolean"}, "attempts": int,
            }),
        ),
    );
    m.insert(
        "VerifyReport".to_owned(),
        object(
            &["intact", "events_checked", "last_position"],
            json!({
                "intact": {"type": "boolean"}, "events_checked": int, "last_position": int, "last_hash": string,
                "problem": {"type": ["object", "null"]}, "message": string,
            }),
        ),
    );
    m.insert(
        "ArchivePackage".to_owned(),
        object(
            &["case", "package", "path", "packing", "sha256", "download", "check"],
            json!({
                "case": string, "file_code": {"type": ["string", "null"]}, "package": string,
                "path": string, "packing": {"type": "string", "enum": ["folder", "zip", "tar"]},
                "sha256": string, "checksum_of": string, "payload_oxum": {"type": ["string", "null"]},
                "bagging_date": {"type": ["string", "null"]}, "chain_head": {"type": ["string", "null"]},
                "chain_head_position": {"type": ["integer", "null"]}, "source": {"type": "object"},
                "download": string,
                "check": object(&["valid", "problems"], json!({"valid": {"type": "boolean"}, "problems": {"type": "array", "items": string}})),
            }),
        ),
    );
    m.insert(
        "CorrectionRequest".to_owned(),
        object(
            &["reason"],
            json!({"reason": {"type": "string", "minLength": 1}}),
        ),
    );
    m.insert(
        "CorrectionResult".to_owned(),
        object(
            &["document", "version", "reason"],
            json!({"document": string, "version": int, "reason": string}),
        ),
    );
    m.insert(
        "Clock".to_owned(),
        object(
            &["now", "kind", "description"],
            json!({
                "now": {"type": "string", "format": "date-time"},
                "kind": {"type": "string", "enum": ["system", "manual", "simulated"]},
                "description": string,
            }),
        ),
    );
    m.insert(
        "SetClockRequest".to_owned(),
        object(
            &["now"],
            json!({"now": {"type": "string", "format": "date-time"}}),
        ),
    );
    m.insert(
        "WorkflowSummary".to_owned(),
        object(
            &["name", "version", "hash"],
            json!({
                "name": string, "version": int, "hash": string, "label": string,
                "description": {"type": ["string", "null"]}, "time_zone": string,
            }),
        ),
    );
    m.insert(
        "WorkflowDetail".to_owned(),
        json!({
            "allOf": [json_of("WorkflowSummary")],
            "properties": {
                "roles": {"type": "array"}, "stages": {"type": "array"},
                "start": {"type": "object", "properties": {"event": string, "stage": string, "schema": {"type": "object"}}},
                "entities": {"type": "array"}, "events": {"type": "array"}, "documents": {"type": "array"},
                "parameters": {"type": "array"},
                "commands": {"type": "array", "items": {"type": "object", "properties": {
                    "id": string, "label": string, "roles": {"type": "array", "items": string},
                    "stages": {"type": "array", "items": string}, "input_schema": {"type": ["object", "null"]},
                    "target": {"type": ["object", "null"]}, "emit": string,
                }}},
            }
        }),
    );
    m.insert(
        "Readiness".to_owned(),
        object(
            &["ready", "store", "workflows"],
            json!({
                "ready": {"type": "boolean"}, "store": {"type": "object"}, "workflows": {"type": "object"},
                "scheduler": {"type": "boolean"}, "exporters": {"type": "array", "items": string},
            }),
        ),
    );
    m
}

/// A workflow's JSON Schema embedded as the component `name`: its internal references
/// (`#/$defs/text`) are rewritten to point into the component
/// (`#/components/schemas/<name>/$defs/text`), and its own `$id`, if any, is dropped, so every
/// reference resolves from the document's root, as OpenAPI tools resolve them.
fn embedded(schema: &Value, name: &str) -> Value {
    fn rewrite(value: &mut Value, name: &str) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match v {
                        Value::String(r) if key == "$ref" && r.starts_with("#/") => {
                            *r = format!("#/components/schemas/{name}{}", &r[1..]);
                        }
                        Value::String(r) if key == "$ref" && r == "#" => {
                            *r = format!("#/components/schemas/{name}");
                        }
                        _ => rewrite(v, name),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, name)),
            _ => {}
        }
    }
    let mut schema = schema.clone();
    rewrite(&mut schema, name);
    if let Value::Object(map) = &mut schema {
        map.remove("$id");
    }
    schema
}

/// Each workflow's commands with their input schema (`None`: any object).
fn commands(workflow: &Workflow) -> Vec<(String, Option<Value>)> {
    workflow
        .definition
        .commands
        .iter()
        .map(|c| {
            let schema = workflow
                .input_schemas
                .get(&c.id.value)
                .cloned()
                .or_else(|| match &c.input {
                    Some(SchemaRef::Inline(v)) => Some(v.clone()),
                    _ => None,
                });
            (c.id.value.clone(), schema)
        })
        .collect()
}

fn path_param(
    path: &str,
    name: &str,
    workflows: &BTreeMap<String, Workflow>,
    command_names: &BTreeSet<String>,
) -> Value {
    let (description, schema): (String, Value) = match name {
        "name" => (
            "A workflow name (GET /api/workflows).".to_owned(),
            json!({"type": "string", "enum": workflows.keys().collect::<Vec<_>>()}),
        ),
        "id" if path.starts_with("/api/exporters") => (
            "An exporter id (GET /api/exporters).".to_owned(),
            json!({"type": "string"}),
        ),
        "id" => (
            "A case id.".to_owned(),
            json!({"type": "string", "examples": ["tg2024"]}),
        ),
        "command" => (
            format!(
                "A command of the case's workflow: {}.",
                workflows
                    .values()
                    .map(|w| format!(
                        "{}: {}",
                        w.name(),
                        commands(w)
                            .into_iter()
                            .map(|(c, _)| c)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            json!({"type": "string", "enum": command_names}),
        ),
        "document" => (
            "A document id of the case (GET /api/cases/{id}/documents), e.g. thong-bao-lich."
                .to_owned(),
            json!({"type": "string"}),
        ),
        "version" => (
            "The document version: 2 or v2.".to_owned(),
            json!({"type": "string", "pattern": "^v?[0-9]+$"}),
        ),
        "format" => (
            "The file format.".to_owned(),
            json!({"type": "string", "enum": ["html", "md", "docx"]}),
        ),
        "parked" => (
            "The parked record's id (GET /api/exporters/{id}/parked).".to_owned(),
            json!({"type": "string", "format": "uuid"}),
        ),
        other => (format!("{other}."), json!({"type": "string"})),
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

/// The names of a path template's parameters, in order.
pub(crate) fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn operation(
    op: &Operation,
    workflows: &BTreeMap<String, Workflow>,
    command_names: &BTreeSet<String>,
    input_schemas: &Map<String, Value>,
) -> Value {
    let mut parameters: Vec<Value> = path_params(op.path)
        .into_iter()
        .map(|name| path_param(op.path, name, workflows, command_names))
        .collect();
    for (place, list) in [("query", op.query), ("header", op.headers)] {
        for p in list {
            parameters.push(json!({
                "name": p.name, "in": place, "required": p.required,
                "description": p.description, "schema": (p.schema)(),
            }));
        }
    }
    let mut responses = Map::new();
    for answer in op.answers {
        let content = match answer.content {
            Content::Json(schema) => json!({"application/json": {"schema": schema()}}),
            Content::Text(mime) => {
                let mut map = Map::new();
                map.insert(mime.to_owned(), json!({"schema": {"type": "string"}}));
                Value::Object(map)
            }
            Content::Document => json!({
                "text/html; charset=utf-8": {"schema": {"type": "string"}},
                "text/markdown; charset=utf-8": {"schema": {"type": "string"}},
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document": {"schema": {"type": "string", "contentMediaType": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}},
            }),
            Content::Package => json!({
                "application/zip": {"schema": {"type": "string", "contentMediaType": "application/zip"}},
                "application/x-tar": {"schema": {"type": "string", "contentMediaType": "application/x-tar"}},
            }),
            Content::EventStream => json!({"text/event-stream": {"schema": {
                "type": "string",
                "description": "`id: <position>` and `data: <the event as JSON, see Event>` per event.",
            }}}),
        };
        let mut response = json!({"description": answer.description, "content": content});
        if !answer.headers.is_empty() {
            let headers: Map<String, Value> = answer
                .headers
                .iter()
                .map(|h| {
                    let description = match *h {
                        "ETag" => "The case's version (for If-Match), or a file's SHA-256.",
                        "Location" => "The case's URL.",
                        _ => "",
                    };
                    (
                        (*h).to_owned(),
                        json!({"description": description, "schema": {"type": "string"}}),
                    )
                })
                .collect();
            response["headers"] = Value::Object(headers);
        }
        responses.insert(answer.status.to_string(), response);
    }
    for status in op.errors {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{}", error_response(*status))}),
        );
    }
    responses.insert(
        "default".to_owned(),
        json!({"$ref": "#/components/responses/Error"}),
    );
    let mut value = json!({
        "operationId": op.id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": op.description,
        "parameters": parameters,
        "responses": responses,
    });
    if !op.auth {
        value["security"] = json!([]);
    }
    match op.body {
        Body::None => {}
        Body::StartCase => {
            value["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": json_of("StartCaseRequest")}},
            });
        }
        Body::Correction => {
            value["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": json_of("CorrectionRequest")}},
            });
        }
        Body::SetClock => {
            value["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": json_of("SetClockRequest")}},
            });
        }
        Body::Command => {
            value["requestBody"] = json!({
                "required": false,
                "description": "The command's input (an empty body is {}).",
                "content": {"application/json": {"schema": json_of("CommandInput")}},
            });
            value["x-giamsat-input-schemas"] = Value::Object(input_schemas.clone());
        }
    }
    value
}

/// The whole document, for the loaded workflows and the daemon's body limit.
pub(crate) fn build(workflows: &BTreeMap<String, Workflow>, max_body: usize) -> Value {
    let mut components = schemas();
    let mut command_names = BTreeSet::new();
    // Workflow → command → the component holding its input schema.
    let mut input_schemas = Map::new();
    for w in workflows.values() {
        let start = format!("StartData.{}", w.name());
        let schema = embedded(&w.start_schema, &start);
        components.insert(start, schema);
        let mut per_command = Map::new();
        for (command, schema) in commands(w) {
            command_names.insert(command.clone());
            let name = format!("CommandInput.{}.{command}", w.name());
            let schema = schema.unwrap_or_else(|| json!({"type": "object"}));
            components.insert(name.clone(), embedded(&schema, &name));
            per_command.insert(command, json_of(&name));
        }
        input_schemas.insert(w.name().to_owned(), Value::Object(per_command));
    }
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for op in OPERATIONS {
        paths.entry(op.path).or_default().insert(
            op.method.to_owned(),
            operation(op, workflows, &command_names, &input_schemas),
        );
    }
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "giamsat",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of the giamsat daemon: an event-sourced workflow engine for the thematic supervisions of People's Councils (HĐND). Every change is a command a workflow decides on; every answer in error is the object {code, message, details}.",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{"bearer": []}],
        "tags": [
            {"name": "system", "description": "Health, readiness, metrics, verification, the clock, this document."},
            {"name": "workflows", "description": "The loaded workflow definitions."},
            {"name": "cases", "description": "Cases: start, read, history, timers, commands."},
            {"name": "documents", "description": "Rendered documents, numbering, the register."},
            {"name": "archive", "description": "A case's archive packages (BagIt): records, checks, downloads."},
            {"name": "exporters", "description": "Exporter status, parked events, retries."},
            {"name": "events", "description": "The log as server-sent events."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A token from `giamsat token create` (the first start prints an admin token): Authorization: Bearer gs_...",
            }},
            "responses": responses_component(max_body),
            "schemas": components,
        },
    })
}

/// `GET /api/openapi.json` (no token needed).
pub async fn document(State(app): State<AppState>) -> Json<Value> {
    Json(build(&app.workflows, app.max_body_bytes))
}

/// `GET /api/docs`: the document as one HTML page (see `pages::api_docs`).
pub async fn reference(State(app): State<AppState>) -> axum::response::Response {
    crate::pages::api_reference(&build(&app.workflows, app.max_body_bytes))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::{Role, ServeOptions, Server, create_token};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn workflows() -> BTreeMap<String, Workflow> {
        let mut out = BTreeMap::new();
        for name in ["giam-sat-chuyen-de", "phien-giai-trinh"] {
            let bundle = giamsat_cases::read_workflow_dir(&root().join("workflows").join(name))
                .expect("a workflow folder");
            let w = giamsat_engine::load(bundle).expect("a valid workflow");
            out.insert(w.name().to_owned(), w);
        }
        out
    }

    /// Every `.route("PATH", METHODS)` registration in this crate's sources: (path, method).
    fn registered_routes() -> BTreeSet<(String, String)> {
        fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        sources(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut routes = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            // Only the code: a test module may quote routes.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for nested in ["nest(\"/api", "route_service(\"/api", "nest_service(\"/api"] {
                assert!(
                    !text.contains(nested),
                    "{}: `.{nested}...` registers /api routes this test cannot read; list them in OPERATIONS and teach registered_routes to read them",
                    file.display()
                );
            }
            let mut rest = text;
            while let Some(at) = rest.find(".route(") {
                rest = &rest[at + ".route(".len()..];
                let Some(open) = rest.find('"') else { break };
                if !rest[..open].trim().is_empty() {
                    continue;
                }
                let after = &rest[open + 1..];
                let Some(close) = after.find('"') else { break };
                let path = &after[..close];
                // The method router: up to the parenthesis closing `.route(`.
                let mut depth = 1usize;
                let mut end = after.len();
                for (i, c) in after[close + 1..].char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = close + 1 + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let methods = &after[close + 1..end];
                for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
                    let mut search = methods;
                    while let Some(i) = search.find(&format!("{method}(")) {
                        let before = search[..i].chars().last();
                        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                            routes.insert((path.to_owned(), method.to_owned()));
                        }
                        search = &search[i + method.len()..];
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn every_api_route_of_the_router_is_documented_and_every_documented_route_exists() {
        let registered = registered_routes();
        assert!(
            registered.contains(&("/api/cases".to_owned(), "post".to_owned())),
            "the scan reads the router: {registered:?}"
        );
        let documented: BTreeSet<(String, String)> = OPERATIONS
            .iter()
            .map(|o| (o.path.to_owned(), o.method.to_owned()))
            .collect();
        let missing: Vec<_> = registered
            .iter()
            .filter(|(path, _)| path.starts_with("/api"))
            .filter(|r| !documented.contains(*r))
            .collect();
        assert!(
            missing.is_empty(),
            "routes registered but not in openapi::OPERATIONS: {missing:?}"
        );
        let stale: Vec<_> = documented
            .iter()
            .filter(|r| !registered.contains(*r))
            .collect();
        assert!(
            stale.is_empty(),
            "openapi::OPERATIONS lists routes the router does not have: {stale:?}"
        );
        let ids: BTreeSet<&str> = OPERATIONS.iter().map(|o| o.id).collect();
        assert_eq!(ids.len(), OPERATIONS.len(), "operation ids are unique");
    }

    /// Every `"$ref": "#/components/..."` in `value` names something that exists.
    fn check_refs(document: &Value, value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref")
                    && let Some(pointer) = r.strip_prefix("#/components/")
                {
                    assert!(
                        document
                            .pointer(&format!("/components/{pointer}"))
                            .is_some(),
                        "{at}: $ref {r} resolves to nothing"
                    );
                }
                for (k, v) in map {
                    check_refs(document, v, &format!("{at}/{k}"));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    check_refs(document, v, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_with_every_operation_its_parameters_and_errors() {
        let document = build(&workflows(), 1024);
        // It survives a round trip through text, as a client reads it.
        let text = serde_json::to_string(&document).expect("serializes");
        let document: Value = serde_json::from_str(&text).expect("parses");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3."))
        );
        assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());
        for op in OPERATIONS {
            let operation = &document["paths"][op.path][op.method];
            assert!(
                operation.is_object(),
                "{} {} is documented",
                op.method,
                op.path
            );
            let params = operation["parameters"].as_array().expect("parameters");
            for name in path_params(op.path) {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{} {}: path parameter {name}",
                    op.method,
                    op.path
                );
            }
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{}: a success answer",
                op.path
            );
            if op.auth {
                assert!(responses.contains_key("401"), "{}: 401", op.path);
                assert!(operation.get("security").is_none());
            } else {
                assert_eq!(operation["security"], json!([]), "{}: no token", op.path);
            }
            if op.method == "post" {
                assert!(responses.contains_key("413"), "{}: 413", op.path);
            }
        }
        // The command names of the loaded workflows, and each one's input schema.
        let run = &document["paths"]["/api/cases/{id}/commands/{command}"]["post"];
        let command = run["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "command")
            .expect("the command parameter");
        let names = command["schema"]["enum"].as_array().expect("command names");
        for name in ["issue_notice", "receive_report", "archive_case"] {
            assert!(names.contains(&json!(name)), "{name}");
        }
        assert_eq!(
            run["x-giamsat-input-schemas"]["giam-sat-chuyen-de"]["receive_report"]["$ref"],
            "#/components/schemas/CommandInput.giam-sat-chuyen-de.receive_report"
        );
        let schemas = &document["components"]["schemas"];
        assert!(
            schemas["CommandInput.giam-sat-chuyen-de.receive_report"]["properties"]["phu_luc_03"]
                .is_object()
        );
        // The start schema's own references point into its component.
        let start = serde_json::to_string(&schemas["StartData.giam-sat-chuyen-de"]).expect("json");
        assert!(start.contains("#/components/schemas/StartData.giam-sat-chuyen-de/$defs/"));
        assert!(!start.contains("\"#/$defs/"));
        for status in ["400", "401", "403", "404", "409", "413", "422"] {
            assert!(
                run["responses"][status].is_object(),
                "the command endpoint documents {status}"
            );
        }
        check_refs(&document, &document, "");
    }

    /// A raw HTTP/1.1 answer: status, `code` of a JSON body (if any), and the body.
    async fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let connection = tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = sender.send_request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let value = if is_stream {
            Value::Null
        } else {
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes();
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        connection.abort();
        (status, value)
    }

    fn concrete(path: &str) -> String {
        path.split('/')
            .map(|s| match s {
                "{id}" if path.starts_with("/api/exporters") => "documents",
                "{id}" => "tg2024",
                "{name}" => "giam-sat-chuyen-de",
                "{command}" => "issue_notice",
                "{document}" => "thong-bao-lich",
                "{version}" => "1",
                "{format}" => "html",
                "{parked}" => "00000000-0000-0000-0000-000000000000",
                other => other,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// An error answer to provoke: the status expected, the documented route it comes from, the
    /// method, the concrete path, the token, headers and body.
    type Probe<'a> = (
        u16,
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
    );

    #[tokio::test]
    async fn the_served_document_reaches_every_route_and_its_error_schema_matches_real_errors() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("giamsat.db").display());
        let store = giamsat_store::Store::open(&url, giamsat_store::StoreOptions::default())
            .await
            .expect("a store");
        let mut options = ServeOptions::new(store.clone(), root().join("workflows"));
        options.listen = "127.0.0.1:0".parse().expect("an address");
        options.max_body_bytes = 64 * 1024;
        let server = Server::bind(options).await.expect("binds");
        let addr = server.local_addr();
        let admin_token = server
            .initial_admin_token()
            .expect("an admin token")
            .secret
            .clone();
        let viewer_token = create_token(
            &store,
            Role::Viewer,
            None,
            Some("xem"),
            "admin:test",
            chrono::Utc::now(),
        )
        .await
        .expect("a viewer token")
        .secret;
        let (admin, viewer) = (admin_token.as_str(), viewer_token.as_str());
        tokio::spawn(server.run(std::future::pending::<()>()));

        // The document, without a token.
        let (status, document) =
            send(addr, "GET", "/api/openapi.json", None, &[], Vec::new()).await;
        assert_eq!(status, 200);
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3."))
        );
        let paths = document["paths"].as_object().expect("paths");
        assert_eq!(
            paths
                .values()
                .map(|p| p.as_object().map_or(0, Map::len))
                .sum::<usize>(),
            OPERATIONS.len()
        );

        // Every documented operation is routed: nothing answers the fallback.
        for (path, item) in paths {
            for method in item.as_object().expect("operations").keys() {
                let (status, body) = send(
                    addr,
                    &method.to_uppercase(),
                    &concrete(path),
                    Some(admin),
                    &[],
                    Vec::new(),
                )
                .await;
                assert_ne!(status, 405, "{method} {path}: {body}");
                assert!(
                    !(status == 404 && body["code"] == "not_found"),
                    "{method} {path} is documented but not routed: {body}"
                );
            }
        }

        // Real errors match the documented error schema, and each is documented where it came
        // from.
        let error = document["components"]["schemas"]["Error"].clone();
        let validator = jsonschema::options().build(&error).expect("a JSON Schema");
        let seed: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(
                root().join("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml"),
            )
            .expect("the seed"),
        )
        .expect("yaml");
        let start = json!({"workflow": "giam-sat-chuyen-de", "id": "tg2024", "data": seed});
        let (status, _) = send(
            addr,
            "POST",
            "/api/cases?at=2024-03-20T08:00:00%2B07:00",
            Some(admin),
            &[("content-type", "application/json")],
            start.to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 201);
        let command = "/api/cases/{id}/commands/{command}";
        let big = vec![b' '; 128 * 1024];
        let cases: Vec<Probe<'_>> = vec![
            (
                400,
                command,
                "POST",
                "/api/cases/tg2024/commands/issue_notice",
                Some(admin),
                vec![],
                b"{not json".to_vec(),
            ),
            (
                401,
                "/api/cases",
                "GET",
                "/api/cases",
                None,
                vec![],
                Vec::new(),
            ),
            (
                401,
                "/api/cases",
                "GET",
                "/api/cases",
                Some("gs_wrong"),
                vec![],
                Vec::new(),
            ),
            (
                403,
                command,
                "POST",
                "/api/cases/tg2024/commands/issue_notice",
                Some(viewer),
                vec![],
                br#"{"issued_on":"2024-03-25","document":"thong-bao-lich"}"#.to_vec(),
            ),
            (
                404,
                "/api/cases/{id}",
                "GET",
                "/api/cases/none",
                Some(admin),
                vec![],
                Vec::new(),
            ),
            (
                404,
                command,
                "POST",
                "/api/cases/tg2024/commands/no_such_command",
                Some(admin),
                vec![],
                Vec::new(),
            ),
            (
                409,
                command,
                "POST",
                "/api/cases/tg2024/commands/issue_notice",
                Some(admin),
                vec![("if-match", "\"99\"")],
                br#"{"issued_on":"2024-03-25","document":"thong-bao-lich"}"#.to_vec(),
            ),
            (
                413,
                command,
                "POST",
                "/api/cases/tg2024/commands/issue_notice",
                Some(admin),
                vec![],
                big,
            ),
            (
                422,
                command,
                "POST",
                "/api/cases/tg2024/commands/mark_reports_overdue",
                Some(admin),
                vec![],
                Vec::new(),
            ),
            (
                422,
                command,
                "POST",
                "/api/cases/tg2024/commands/issue_notice",
                Some(admin),
                vec![],
                br#"{"issued_on":"25/3/2024","document":"thong-bao-lich"}"#.to_vec(),
            ),
        ];
        for (expected, template, method, path, token, headers, body) in cases {
            let (status, value) = send(addr, method, path, token, &headers, body).await;
            assert_eq!(status, expected, "{method} {path}: {value}");
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{status} {value} does not match the Error schema: {errors:?}"
            );
            let documented = &document["paths"][template][method.to_lowercase()]["responses"]
                [expected.to_string()];
            assert!(
                documented.is_object(),
                "{method} {template} documents {expected}"
            );
        }
    }
}
