//! `giamsat-register-csv`: an exporter plugin of giamsat that runs in a process of its own (the
//! `exec` protocol of `plugins/README.md`) and keeps the register of outgoing documents (Sổ đăng
//! ký văn bản đi) as a CSV file, one row per `DocumentRegistered` event of a `register/` stream,
//! in log order.
//!
//! Configuration (the `config` table of its `[[exporters]]`, sent in `hello`): `path`, the CSV
//! file (relative to the plugin's working directory; created with its folder). Unknown keys are
//! refused.
//!
//! Columns (header in Vietnamese, RFC 4180 quoting, CRLF line ends, UTF-8 without a byte order
//! mark): Số (the number, two digits, "(Mật)" after it for the secret series), Ký hiệu, Ngày
//! (dd/mm/yyyy), Tên loại ("Công văn" when the document has no type name), Trích yếu, Người ký,
//! Nơi nhận, Hồ sơ (the case).
//!
//! Exactly one row per event, although delivery is at-least-once: a side file `<path>.position`
//! records the last position written and the CSV's length after it. An event at or before that
//! position is acknowledged without writing; bytes after the recorded length (a row written just
//! before a crash, without its record) are cut before the next row is written.
//!
//! `--crash-after N` makes the process exit (status 3) right after writing its N-th row, before
//! acknowledging it: the crash test uses it to check that the restarted plugin writes nothing
//! twice.

use std::fs::OpenOptions;
use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const EVENT_TYPE: &str = "DocumentRegistered";
const STREAM_PREFIX: &str = "register/";
const HEADER: [&str; 8] = [
    "Số",
    "Ký hiệu",
    "Ngày",
    "Tên loại",
    "Trích yếu",
    "Người ký",
    "Nơi nhận",
    "Hồ sơ",
];

const USAGE: &str = "usage: giamsat-register-csv [--crash-after N]

An exporter plugin of giamsat: started by `giamsat exporters run` (an [[exporters]] table with
type = \"exec\"), it speaks JSON Lines on its standard input and output (see plugins/README.md)
and writes the register of outgoing documents to the CSV file given as `path` in its config.

  --crash-after N   exit with status 3 right after writing the N-th row, before acknowledging
                    it (for tests of the host's restarts)";

/// The plugin's configuration, from `hello`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: PathBuf,
}

/// The fields of an event the plugin reads.
#[derive(Debug, Deserialize)]
struct Event {
    position: u64,
    stream_id: String,
    event_type: String,
    data: Value,
}

/// The fields of a `DocumentRegistered` event the register shows.
#[derive(Debug, Deserialize)]
struct Entry {
    number: u32,
    symbol: String,
    date: String,
    #[serde(default)]
    type_name: String,
    excerpt: String,
    signer: String,
    recipients: String,
    case: String,
    #[serde(default)]
    secret: bool,
}

impl Entry {
    fn row(&self) -> [String; 8] {
        [
            if self.secret {
                format!("{:02} (Mật)", self.number)
            } else {
                format!("{:02}", self.number)
            },
            self.symbol.clone(),
            vietnamese_date(&self.date),
            if self.type_name.is_empty() {
                "Công văn".to_owned()
            } else {
                self.type_name.clone()
            },
            self.excerpt.clone(),
            self.signer.clone(),
            self.recipients.clone(),
            self.case.clone(),
        ]
    }
}

/// "2024-03-25" → "25/03/2024"; anything else as it is.
fn vietnamese_date(iso: &str) -> String {
    let parts: Vec<&str> = iso.split('-').collect();
    match parts.as_slice() {
        [y, m, d]
            if y.len() == 4
                && m.len() == 2
                && d.len() == 2
                && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            format!("{d}/{m}/{y}")
        }
        _ => iso.to_owned(),
    }
}

/// One CSV record (RFC 4180): a field with a comma, a quote or a line break is quoted, its
/// quotes doubled; records end with CRLF.
fn csv_record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = field.as_ref();
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push_str("\r\n");
    out
}

/// The side file's content: the last position written and the CSV's length after it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    position: u64,
    length: u64,
}

/// Why an event could not be written.
#[derive(Debug)]
struct Failure {
    retryable: bool,
    message: String,
}

fn retryable(message: String) -> Failure {
    Failure {
        retryable: true,
        message,
    }
}

fn permanent(message: String) -> Failure {
    Failure {
        retryable: false,
        message,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Handled {
    Written,
    /// At or before the last position written: a repeated delivery.
    Repeat,
    /// Not a register event (the filter keeps these away; acknowledged anyway).
    NotMine,
}

#[derive(Debug)]
struct Register {
    path: PathBuf,
    mark_path: PathBuf,
}

impl Register {
    fn new(path: PathBuf) -> Register {
        let mut mark = path.clone().into_os_string();
        mark.push(".position");
        Register {
            path,
            mark_path: PathBuf::from(mark),
        }
    }

    fn io(&self, path: &Path, what: &str, e: std::io::Error) -> Failure {
        retryable(format!("{what} {}: {e}", path.display()))
    }

    fn mark(&self) -> Result<Mark, Failure> {
        match std::fs::read_to_string(&self.mark_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                permanent(format!(
                    "{} is not a position record ({e}); restore it, or delete it with the CSV \
                     and replay the exporter from position 1",
                    self.mark_path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mark::default()),
            Err(e) => Err(self.io(&self.mark_path, "reading", e)),
        }
    }

    fn save_mark(&self, mark: Mark) -> Result<(), Failure> {
        let mut tmp = self.mark_path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_string(&mark).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.mark_path)
        };
        write().map_err(|e| self.io(&self.mark_path, "writing", e))
    }

    fn handle(&self, event: &Event) -> Result<Handled, Failure> {
        if event.event_type != EVENT_TYPE || !event.stream_id.starts_with(STREAM_PREFIX) {
            return Ok(Handled::NotMine);
        }
        let mark = self.mark()?;
        if event.position <= mark.position {
            return Ok(Handled::Repeat);
        }
        let entry: Entry = serde_json::from_value(event.data.clone()).map_err(|e| {
            permanent(format!(
                "{EVENT_TYPE} at position {} ({}) cannot be registered: {e}",
                event.position, event.stream_id
            ))
        })?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(dir, "creating", e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.io(&self.path, "opening", e))?;
        let length = file
            .metadata()
            .map_err(|e| self.io(&self.path, "reading", e))?
            .len();
        if length < mark.length || (mark.position == 0 && length > 0) {
            return Err(permanent(format!(
                "{} has {length} bytes but {} says {} (after position {}): the file was changed \
                 outside this plugin; restore it, or move both files away and replay the \
                 exporter from position 1",
                self.path.display(),
                self.mark_path.display(),
                mark.length,
                mark.position
            )));
        }
        if length > mark.length {
            // A row written just before a crash, without its record: it is written again now.
            eprintln!(
                "info: {}: cutting {} bytes written after position {} without a record",
                self.path.display(),
                length - mark.length,
                mark.position
            );
            file.set_len(mark.length)
                .map_err(|e| self.io(&self.path, "truncating", e))?;
        }
        let mut text = String::new();
        if mark.length == 0 {
            text.push_str(&csv_record(&HEADER));
        }
        text.push_str(&csv_record(&entry.row()));
        file.seek(SeekFrom::Start(mark.length))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| self.io(&self.path, "writing", e))?;
        self.save_mark(Mark {
            position: event.position,
            length: mark.length + text.len() as u64,
        })?;
        Ok(Handled::Written)
    }
}

/// Writes one protocol message and flushes it (the host waits for whole lines).
fn send(out: &mut impl Write, message: &Value) -> std::io::Result<()> {
    writeln!(out, "{message}")?;
    out.flush()
}

fn parse_args() -> Result<Option<u64>, String> {
    let mut crash_after = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--crash-after" => {
                let n = args
                    .next()
                    .ok_or("--crash-after needs a number")?
                    .parse::<u64>()
                    .map_err(|e| format!("--crash-after: {e}"))?;
                crash_after = Some(n);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" => {
                println!("giamsat-register-csv {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(crash_after)
}

fn main() -> ExitCode {
    let crash_after = match parse_args() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(crash_after) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Answers the host until `shutdown` or the end of its input.
fn serve(crash_after: Option<u64>) -> Result<(), String> {
    let stdin = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut register: Option<Register> = None;
    let mut written = 0u64;
    let io = |e: std::io::Error| format!("writing to standard output: {e}");
    for line in stdin.lines() {
        let line = line.map_err(|e| format!("reading standard input: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = serde_json::from_str(&line)
            .map_err(|e| format!("the host sent a line that is not JSON ({e}): {line}"))?;
        match message["type"].as_str() {
            Some("hello") => {
                let config: Config = match serde_json::from_value(message["config"].clone()) {
                    Ok(config) => config,
                    Err(e) => {
                        let error = format!("config: {e} (expected: path = \"register.csv\")");
                        send(&mut out, &json!({"type": "error", "message": error})).map_err(io)?;
                        return Err(error);
                    }
                };
                eprintln!(
                    "info: exporter {} writes the register to {}",
                    message["exporter"].as_str().unwrap_or("?"),
                    config.path.display()
                );
                register = Some(Register::new(config.path));
                let ready = json!({
                    "type": "ready",
                    "protocol": 1,
                    "name": "giamsat-register-csv",
                    "version": env!("CARGO_PKG_VERSION"),
                    "filter": {"event_types": [EVENT_TYPE], "stream_prefixes": [STREAM_PREFIX]},
                });
                send(&mut out, &ready).map_err(io)?;
            }
            Some("event") => {
                let register = register
                    .as_ref()
                    .ok_or("the host sent an event before `hello`")?;
                let position = message["event"]["position"].as_u64();
                let event: Event = match serde_json::from_value(message["event"].clone()) {
                    Ok(event) => event,
                    Err(e) => {
                        let position =
                            position.ok_or(format!("an event without a position: {e}"))?;
                        let answer = json!({"type": "error", "position": position,
                            "retryable": false, "message": format!("unreadable event: {e}")});
                        send(&mut out, &answer).map_err(io)?;
                        continue;
                    }
                };
                let answer = match register.handle(&event) {
                    Ok(handled) => {
                        if handled == Handled::Written {
                            written += 1;
                            if crash_after == Some(written) {
                                eprintln!(
                                    "error: crashing on purpose after writing {written} row(s) \
                                     (--crash-after), before acknowledging position {}",
                                    event.position
                                );
                                std::process::exit(3);
                            }
                        }
                        json!({"type": "ack", "position": event.position})
                    }
                    Err(failure) => json!({
                        "type": "error",
                        "position": event.position,
                        "retryable": failure.retryable,
                        "message": failure.message,
                    }),
                };
                send(&mut out, &answer).map_err(io)?;
            }
            Some("shutdown") => return Ok(()),
            // Forward compatibility: messages of a later protocol are ignored.
            other => eprintln!("debug: ignoring a message of type {other:?}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_record(&["a", "b c"]), "a,b c\r\n");
        assert_eq!(
            csv_record(&["Kế hoạch, lịch", "Nói \"có\"", "hai\ndòng", ""]),
            "\"Kế hoạch, lịch\",\"Nói \"\"có\"\"\",\"hai\ndòng\",\r\n"
        );
    }

    #[test]
    fn dates_read_the_vietnamese_way() {
        assert_eq!(vietnamese_date("2024-03-25"), "25/03/2024");
        assert_eq!(vietnamese_date("25/03/2024"), "25/03/2024");
        assert_eq!(vietnamese_date("2024-3-5"), "2024-3-5");
    }

    #[test]
    fn a_repeated_event_is_not_written_twice_and_an_unrecorded_row_is_cut() {
        let dir = std::env::temp_dir().join(format!("register-csv-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let register = Register::new(dir.join("out/register.csv"));
        let event = |position: u64, number: u32| Event {
            position,
            stream_id: "register/hdnd/2024".to_owned(),
            event_type: EVENT_TYPE.to_owned(),
            data: json!({"number": number, "symbol": format!("{number:02}/TB-ĐGS"),
                "date": "2024-03-25", "type_name": "THÔNG BÁO", "excerpt": "Lịch giám sát",
                "signer": "Trần Bình Trọng", "recipients": "Như trên", "case": "tg2024"}),
        };
        assert_eq!(register.handle(&event(3, 1)).ok(), Some(Handled::Written));
        assert_eq!(register.handle(&event(3, 1)).ok(), Some(Handled::Repeat));
        // A crash after writing a row but before recording it: the next row replaces it.
        let before = std::fs::read_to_string(&register.path).expect("csv");
        std::fs::write(&register.path, format!("{before}half a row")).expect("append");
        assert_eq!(register.handle(&event(5, 2)).ok(), Some(Handled::Written));
        let text = std::fs::read_to_string(&register.path).expect("csv");
        assert_eq!(
            text,
            "Số,Ký hiệu,Ngày,Tên loại,Trích yếu,Người ký,Nơi nhận,Hồ sơ\r\n\
             01,01/TB-ĐGS,25/03/2024,THÔNG BÁO,Lịch giám sát,Trần Bình Trọng,Như trên,tg2024\r\n\
             02,02/TB-ĐGS,25/03/2024,THÔNG BÁO,Lịch giám sát,Trần Bình Trọng,Như trên,tg2024\r\n"
        );
        // Missing data: permanent. A file changed behind its back: permanent.
        let mut bad = event(7, 3);
        bad.data = json!({"number": 3});
        let failure = register.handle(&bad).expect_err("missing fields");
        assert!(
            !failure.retryable && failure.message.contains("symbol"),
            "{failure:?}"
        );
        std::fs::write(&register.path, "").expect("truncate");
        let failure = register.handle(&event(9, 4)).expect_err("shortened");
        assert!(
            !failure.retryable && failure.message.contains("outside"),
            "{failure:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
