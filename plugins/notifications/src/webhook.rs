//! Webhooks: an event POSTed as JSON (the event as the log stores it), signed with HMAC-SHA256.
//!
//! Headers: `X-Giamsat-Timestamp` (Unix seconds), `X-Giamsat-Signature: sha256=<hex of
//! HMAC-SHA256(secret, "<timestamp>.<body>")>`, `X-Giamsat-Event-Id` (the same on every retry,
//! so a receiver can drop a repeat) and `X-Giamsat-Event-Type`. A receiver checks the signature
//! over the raw body and refuses old timestamps. Anything but a 2xx answer, or no answer, is
//! retried by the runner.

use std::time::Duration;

use giamsat_exporter::ExportError;
use giamsat_types::RecordedEvent;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{WebhookConfig, parse_duration};

/// A configured webhook with its secret.
#[derive(Clone)]
pub struct Webhook {
    pub config: WebhookConfig,
    secret: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.config.id)
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

/// The signature header's value for a body sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC-SHA256 takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(
        config: WebhookConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Webhook, String> {
        let id = &config.id;
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("webhooks {id}: url {:?}: {e}", config.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "webhooks {id}: url {:?} must be http:// or https://",
                config.url
            ));
        }
        let secret = env(&config.secret_env)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "webhooks {id}: the environment variable {} (secret-env) is not set",
                    config.secret_env
                )
            })?;
        let timeout =
            parse_duration(&config.timeout).map_err(|e| format!("webhooks {id}: timeout: {e}"))?;
        Ok(Webhook {
            config,
            secret: secret.into_bytes(),
            timeout,
        })
    }

    pub fn wants(&self, event: &RecordedEvent) -> bool {
        (self.config.event_types.is_empty() || self.config.event_types.contains(&event.event_type))
            && self
                .config
                .stream_prefixes
                .iter()
                .any(|p| event.stream_id.starts_with(p.as_str()))
    }

    /// POSTs the event; returns the answer's status.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        event: &RecordedEvent,
    ) -> Result<u16, ExportError> {
        let id = &self.config.id;
        let url = &self.config.url;
        let body = serde_json::to_vec(event).map_err(|e| {
            ExportError::Permanent(format!("webhook {id}: cannot encode the event: {e}"))
        })?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let answer = client
            .post(url)
            .timeout(self.timeout)
            .header("Content-Type", "application/json")
            .header("User-Agent", "giamsat-notifications")
            .header("X-Giamsat-Timestamp", &timestamp)
            .header(
                "X-Giamsat-Signature",
                signature(&self.secret, &timestamp, &body),
            )
            .header("X-Giamsat-Event-Id", event.event_id.to_string())
            .header("X-Giamsat-Event-Type", &event.event_type)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                ExportError::Retryable(format!(
                    "webhook {id}: POST {url} (event {} at position {}): {e}",
                    event.event_type, event.position
                ))
            })?;
        let status = answer.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(ExportError::Retryable(format!(
                "webhook {id}: POST {url} (event {} at position {}) answered {status}",
                event.event_type, event.position
            )))
        }
    }
}

/// The HTTP client for webhooks: rustls on ring, no proxy (webhooks go where they are
/// configured), no redirects.
pub fn client() -> Result<reqwest::Client, String> {
    // Whoever installed a process-wide provider first wins; ring otherwise.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("webhooks: cannot build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Checked with Python: hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).
        assert_eq!(
            signature(b"secret", "1700000000", br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
