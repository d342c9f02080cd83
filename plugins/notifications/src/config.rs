//! `[[exporters]]` keys of `type = "notifications"`. Secrets are never in the file: the file names
//! the environment variables that hold them (`username-env`, `password-env`, `secret-env`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The exporter's configuration table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotificationsConfig {
    /// The sender of every message, `Name <address>`.
    pub from: String,
    /// Send the workflows' notifications and the digest by e-mail (false: webhooks only).
    #[serde(default = "yes")]
    pub email: bool,
    /// Where messages are written as `.eml` files when no `[smtp]` is configured: one folder per
    /// case (`cron` for the digest).
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    /// The SMTP server; without it, messages go to the outbox.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Addresses of each role the workflows' notifications name (`secretariat`, `delegation`),
    /// each `Name <address>` or a bare address.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// For a role whose members are listed in the case data: a pointer to the list (each member
    /// an object with `name` and `email`); members with an address receive the role's messages.
    #[serde(default = "default_role_members")]
    pub role_members: BTreeMap<String, String>,
    /// The daily digest for the secretariat, on a cron schedule's runs.
    #[serde(default)]
    pub digest: DigestConfig,
    /// Holiday calendar files, for the digest's next deadlines (working-day timers).
    #[serde(default = "default_calendar_dir")]
    pub calendar_dir: PathBuf,
    /// Webhooks: events POSTed as JSON, signed.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

fn yes() -> bool {
    true
}

fn default_outbox() -> PathBuf {
    PathBuf::from("outbox")
}

fn default_calendar_dir() -> PathBuf {
    PathBuf::from("config/calendars")
}

fn default_role_members() -> BTreeMap<String, String> {
    BTreeMap::from([("delegation".to_owned(), "/members".to_owned())])
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (a relay on the same machine or network).
    None,
    /// Plain connection upgraded with STARTTLS, required (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

/// `[exporters.smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 25 without TLS, 587 with STARTTLS, 465 with TLS.
    #[serde(default)]
    pub port: Option<u16>,
    pub tls: TlsMode,
    /// Environment variables holding the user name and the password (both or neither).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// How long one SMTP conversation may take.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: String,
    /// The name given in EHLO; default: the domain of `from`.
    #[serde(default)]
    pub hello_name: Option<String>,
}

fn default_smtp_timeout() -> String {
    "30s".to_owned()
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        })
    }
}

/// `[exporters.digest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DigestConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The `[[cron]]` schedule whose runs (`CronRan` in `cron/<id>`) send the digest.
    #[serde(default = "default_digest_schedule")]
    pub schedule: String,
    /// Roles that receive it (addresses from `roles`).
    #[serde(default = "default_digest_to")]
    pub to: Vec<String>,
}

impl Default for DigestConfig {
    fn default() -> DigestConfig {
        DigestConfig {
            enabled: true,
            schedule: default_digest_schedule(),
            to: default_digest_to(),
        }
    }
}

fn default_digest_schedule() -> String {
    "daily-digest".to_owned()
}

fn default_digest_to() -> Vec<String> {
    vec!["secretariat".to_owned()]
}

/// `[[exporters.webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// Names the webhook in records and messages.
    pub id: String,
    pub url: String,
    /// Environment variable holding the HMAC secret.
    pub secret_env: String,
    /// Only these event types; empty: every event of `stream-prefixes`.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default = "default_webhook_prefixes")]
    pub stream_prefixes: Vec<String>,
    #[serde(default = "default_webhook_timeout")]
    pub timeout: String,
}

fn default_webhook_prefixes() -> Vec<String> {
    vec!["case/".to_owned()]
}

fn default_webhook_timeout() -> String {
    "10s".to_owned()
}

/// `"500ms"`, `"10s"`, `"5m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"500ms\", \"10s\" or \"5m\""))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "{text:?} is not a duration such as \"500ms\", \"10s\" or \"5m\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
