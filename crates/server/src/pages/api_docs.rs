//! `/api/docs`: the OpenAPI document as one HTML page for the engineers who call the API, served
//! by the daemon itself (no script, nothing from elsewhere). It is rendered from the same
//! document as `/api/openapi.json`, so it cannot say something else.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::render;

/// The name a `$ref` points at (`#/components/schemas/Case` → `Case`).
fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

/// A schema in a line: its component name (linked), an array of one, or its type.
fn schema_text(schema: &Value) -> Value {
    if let Some(name) = ref_name(schema) {
        return json!({"name": name, "link": format!("#schema-{name}")});
    }
    if let Some(items) = schema.get("items")
        && let Some(name) = ref_name(items)
    {
        return json!({"name": format!("array of {name}"), "link": format!("#schema-{name}")});
    }
    let text = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(other) => other.to_string(),
        None => "any".to_owned(),
    };
    json!({"name": text, "link": Value::Null})
}

fn operation_view(path: &str, method: &str, op: &Value) -> Value {
    let parameters: Vec<Value> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            json!({
                "name": p["name"],
                "in": p["in"],
                "required": p["required"].as_bool().unwrap_or(false),
                "description": p["description"].as_str().unwrap_or_default(),
            })
        })
        .collect();
    let body = op.get("requestBody").map(|b| {
        let content = b["content"].as_object();
        let (media, schema) = content
            .and_then(|c| c.iter().next())
            .map_or(("", Value::Null), |(m, v)| {
                (m.as_str(), v["schema"].clone())
            });
        json!({
            "media": media,
            "schema": schema_text(&schema),
            "required": b["required"].as_bool().unwrap_or(false),
        })
    });
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for (status, answer) in op["responses"].as_object().into_iter().flatten() {
        if answer.get("$ref").is_some() || status == "default" {
            if status != "default" {
                errors.push(status.clone());
            }
            continue;
        }
        let media: Vec<Value> = answer["content"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(m, v)| json!({"media": m, "schema": schema_text(&v["schema"])}))
            .collect();
        answers.push(json!({
            "status": status,
            "description": answer["description"].as_str().unwrap_or_default(),
            "media": media,
        }));
    }
    json!({
        "anchor": op["operationId"],
        "method": method.to_uppercase(),
        "path": path,
        "summary": op["summary"].as_str().unwrap_or_default(),
        "description": op["description"].as_str().unwrap_or_default(),
        "token": op.get("security") != Some(&json!([])),
        "parameters": parameters,
        "body": body,
        "answers": answers,
        "errors": errors.join(", "),
    })
}

/// The page for an OpenAPI document: operations grouped by tag, then the schemas.
pub(crate) fn api_reference(document: &Value) -> Response {
    let mut groups: Vec<Value> = Vec::new();
    for tag in document["tags"].as_array().into_iter().flatten() {
        let name = tag["name"].as_str().unwrap_or_default();
        let mut operations = Vec::new();
        for (path, methods) in document["paths"].as_object().into_iter().flatten() {
            for (method, op) in methods.as_object().into_iter().flatten() {
                let tagged = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == name));
                if tagged {
                    operations.push(operation_view(path, method, op));
                }
            }
        }
        groups.push(json!({
            "name": name,
            "description": tag["description"].as_str().unwrap_or_default(),
            "operations": operations,
        }));
    }
    let schemas: Vec<Value> = document["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            json!({
                "name": name,
                "text": serde_json::to_string_pretty(schema).unwrap_or_default(),
            })
        })
        .collect();
    let context = json!({
        "title": document["info"]["title"].as_str().unwrap_or("giamsat API"),
        "version": document["info"]["version"].as_str().unwrap_or_default(),
        "description": document["info"]["description"].as_str().unwrap_or_default(),
        "groups": groups,
        "schemas": schemas,
    });
    render(StatusCode::OK, "api-docs", &context)
}
