//! Building messages (lettre) and delivering them: over SMTP, or as `.eml` files in the outbox.
//! A message's bytes depend only on what it says: its `Date` is the event's time, its Message-ID
//! is derived from (notification, event, recipient), and its MIME boundary from the Message-ID.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use giamsat_exporter::ExportError;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as MimeAttachment, Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sha2::{Digest, Sha256};

use crate::config::{SmtpConfig, TlsMode, parse_duration};

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Attachment {
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }
}

/// What a message is made of, before it becomes MIME.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Without angle brackets: `<hash>.<notification>@<domain>`.
    pub message_id: String,
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    /// Plain text, lines ending in CRLF.
    pub body: String,
    pub date: DateTime<Utc>,
    pub attachments: Vec<Attachment>,
    /// `X-Giamsat-*` headers: name (without the prefix) and value.
    pub trace: Vec<(&'static str, String)>,
}

/// The deterministic Message-ID of a notification's message to one recipient: a resend of the
/// same notification for the same event to the same address carries the same id.
pub fn message_id(notification: &str, event: &str, address: &str, domain: &str) -> String {
    let digest = Sha256::digest(
        format!(
            "giamsat-message-v1\0{notification}\0{event}\0{}",
            address.to_lowercase()
        )
        .as_bytes(),
    );
    let slug: String = notification
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{}.{slug}@{domain}", &hex::encode(digest)[..32])
}

/// The MIME message of a draft.
pub fn build(draft: &Draft) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(draft.from.clone())
        .to(draft.to.clone())
        .subject(draft.subject.clone())
        .date(SystemTime::from(draft.date))
        .message_id(Some(format!("<{}>", draft.message_id)));
    for (name, value) in &draft.trace {
        let name = HeaderName::new_from_ascii(format!("X-Giamsat-{name}"))
            .map_err(|e| format!("header X-Giamsat-{name}: {e}"))?;
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(draft.body.clone());
    if draft.attachments.is_empty() {
        return builder.singlepart(text).map_err(|e| e.to_string());
    }
    let boundary = format!(
        "giamsat-{}",
        &hex::encode(Sha256::digest(draft.message_id.as_bytes()))[..32]
    );
    let mut parts = MultiPart::mixed().boundary(boundary).singlepart(text);
    for a in &draft.attachments {
        let content_type = ContentType::parse(&a.content_type).map_err(|e| {
            format!(
                "attachment {}: content type {}: {e}",
                a.name, a.content_type
            )
        })?;
        parts = parts
            .singlepart(MimeAttachment::new(a.name.clone()).body(a.bytes.clone(), content_type));
    }
    builder.multipart(parts).map_err(|e| e.to_string())
}

/// Where messages go.
#[derive(Clone)]
pub enum Delivery {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// `host:port`, for messages.
        server: String,
    },
    Outbox(PathBuf),
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Smtp { server, .. } => write!(f, "Smtp({server})"),
            Delivery::Outbox(dir) => write!(f, "Outbox({})", dir.display()),
        }
    }
}

impl Delivery {
    /// The channel recorded for what this delivery sends.
    pub fn channel(&self) -> &'static str {
        match self {
            Delivery::Smtp { .. } => "email",
            Delivery::Outbox(_) => "outbox",
        }
    }

    /// An SMTP transport from the configuration; credentials come from the environment
    /// variables it names (read through `env`).
    pub fn smtp(
        config: &SmtpConfig,
        from: &Mailbox,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Delivery, String> {
        let port = config.port();
        let mut builder = match config.tls {
            TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(|e| format!("smtp: {}: {e}", config.host))?,
            TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| format!("smtp: {}: {e}", config.host))?,
        }
        .port(port)
        .timeout(Some(
            parse_duration(&config.timeout).map_err(|e| format!("smtp.timeout: {e}"))?,
        ))
        .hello_name(ClientId::Domain(
            config
                .hello_name
                .clone()
                .unwrap_or_else(|| from.email.domain().to_owned()),
        ));
        match (&config.username_env, &config.password_env) {
            (Some(user_var), Some(pass_var)) => {
                let read = |var: &str, key: &str| {
                    env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                        format!("smtp.{key}: the environment variable {var} is not set")
                    })
                };
                let user = read(user_var, "username-env")?;
                let pass = read(pass_var, "password-env")?;
                builder = builder.credentials(Credentials::new(user, pass));
            }
            (None, None) => {}
            _ => {
                return Err("smtp: give both username-env and password-env, or neither".to_owned());
            }
        }
        Ok(Delivery::Smtp {
            transport: builder.build(),
            server: format!("{}:{port}", config.host),
        })
    }
}

/// How one message fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Accepted by the server, or written to the outbox (its path, relative to the outbox).
    Delivered { file: Option<String> },
    /// The server refused the recipient for good (a 5xx on the mailbox).
    Rejected(String),
}

/// Delivers one message. A server that is down, a timeout, or a transient (4xx) answer is
/// retryable; a permanent refusal of the mailbox is the recipient's fate; any other permanent
/// answer (authentication, the sender refused) is a permanent error.
pub async fn deliver(
    delivery: &Delivery,
    message: &Message,
    file: &str,
) -> Result<Fate, ExportError> {
    match delivery {
        Delivery::Outbox(dir) => {
            let path = dir.join(file);
            write_atomically(&path, &message.formatted())
                .map_err(|e| ExportError::Retryable(format!("{}: {e}", path.display())))?;
            Ok(Fate::Delivered {
                file: Some(file.to_owned()),
            })
        }
        Delivery::Smtp { transport, server } => match transport.send(message.clone()).await {
            Ok(_) => Ok(Fate::Delivered { file: None }),
            Err(e) => {
                let code = e.status().map(u16::from);
                if e.is_permanent() && matches!(code, Some(550 | 551 | 553)) {
                    Ok(Fate::Rejected(format!("{server} refused the mailbox: {e}")))
                } else if e.is_permanent() {
                    Err(ExportError::Permanent(format!("SMTP server {server}: {e}")))
                } else {
                    Err(ExportError::Retryable(format!("SMTP server {server}: {e}")))
                }
            }
        },
    }
}

/// Writes a file through a temporary file and a rename, synced, so a reader never sees half a
/// message.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if std::fs::read(path).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("eml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Plain text as a message body: lines without trailing spaces, at most one blank line in a row,
/// no blank lines at the start or the end, CRLF line ends.
pub fn tidy_body(text: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() && blank > 0 {
            out.push_str("\r\n");
        }
        blank = 0;
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// A subject: one line, single spaces.
pub fn tidy_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let a = message_id("notice", "e1", "A@example.org", "example.org");
        assert_eq!(
            a,
            message_id("notice", "e1", "a@example.org", "example.org")
        );
        assert_ne!(
            a,
            message_id("notice", "e2", "a@example.org", "example.org")
        );
        assert_ne!(a, message_id("other", "e1", "a@example.org", "example.org"));
        assert!(a.ends_with(".notice@example.org"), "{a}");
    }

    #[test]
    fn bodies_are_tidied() {
        assert_eq!(
            tidy_body("\n\nKính gửi: A  \n\n\n\nNội dung\n\n"),
            "Kính gửi: A\r\n\r\nNội dung\r\n"
        );
        assert_eq!(
            tidy_line(" Thông báo\n lịch  giám sát "),
            "Thông báo lịch giám sát"
        );
    }

    #[test]
    fn a_message_is_the_same_bytes_every_time() {
        let draft = Draft {
            message_id: "abc.notice@example.org".to_owned(),
            from: "Văn phòng HĐND <vanphong@example.org>"
                .parse()
                .expect("from"),
            to: "xã Quài Tở <quaito@example.org>".parse().expect("to"),
            subject: "Thông báo lịch giám sát".to_owned(),
            body: "Kính gửi: xã Quài Tở\r\n".to_owned(),
            date: DateTime::parse_from_rfc3339("2024-03-25T08:00:00+07:00")
                .expect("time")
                .with_timezone(&Utc),
            attachments: vec![Attachment {
                name: "lich-lam-viec.ics".to_owned(),
                content_type: "text/calendar; charset=utf-8; method=REQUEST".to_owned(),
                bytes: b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".to_vec(),
            }],
            trace: vec![("Notification", "notice".to_owned())],
        };
        let one = build(&draft).expect("message").formatted();
        let two = build(&draft).expect("message").formatted();
        assert_eq!(one, two);
        let text = String::from_utf8_lossy(&one);
        assert!(
            text.contains("Message-ID: <abc.notice@example.org>"),
            "{text}"
        );
        assert!(text.contains("X-Giamsat-Notification: notice"), "{text}");
        assert!(
            text.contains("Date: Mon, 25 Mar 2024 01:00:00 +0000"),
            "{text}"
        );
    }
}
