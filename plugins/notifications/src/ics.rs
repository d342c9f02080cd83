//! RFC 5545 calendar files: one `VCALENDAR` per message with a `VEVENT` per entry. Times are
//! written in UTC (`...Z`), so no `VTIMEZONE` is needed; text values are escaped (`\\`, `;`, `,`,
//! newlines), lines end in CRLF and are folded at 75 octets without splitting a UTF-8 character.
//!
//! A UID stays the same for the life of an entry (`<case>-visit-<unit>@giamsat`), and `SEQUENCE`
//! grows with each change, so a calendar replaces the entry it already has; a cancellation is
//! `METHOD:CANCEL` with `STATUS:CANCELLED` and a higher `SEQUENCE`.

use chrono::{DateTime, Utc};
use giamsat_engine::CalendarMethod;

/// One calendar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: String,
    pub sequence: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: String,
    pub location: Option<String>,
    pub description: Option<String>,
    pub method: CalendarMethod,
}

/// Who sends the invitation and who receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub name: String,
    pub address: String,
}

/// The method of a file: a cancellation cancels; one entry is a request; several entries are
/// published (iTIP allows one UID per request, and a schedule is several).
pub fn method_of(entries: &[Entry]) -> &'static str {
    if entries.iter().any(|e| e.method == CalendarMethod::Cancel) {
        "CANCEL"
    } else if entries.len() == 1 {
        "REQUEST"
    } else {
        "PUBLISH"
    }
}

/// The calendar file for one recipient.
pub fn calendar(
    entries: &[Entry],
    organizer: &Party,
    attendee: &Party,
    stamp: DateTime<Utc>,
) -> String {
    let method = method_of(entries);
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "PRODID:-//giamsat//notifications//VI".to_owned(),
        "VERSION:2.0".to_owned(),
        "CALSCALE:GREGORIAN".to_owned(),
        format!("METHOD:{method}"),
    ];
    for e in entries {
        lines.push("BEGIN:VEVENT".to_owned());
        lines.push(format!("UID:{}", e.uid));
        lines.push(format!("DTSTAMP:{}", utc(stamp)));
        lines.push(format!("DTSTART:{}", utc(e.start)));
        lines.push(format!("DTEND:{}", utc(e.end)));
        lines.push(format!("SEQUENCE:{}", e.sequence));
        lines.push(format!("SUMMARY:{}", text(&e.summary)));
        if let Some(location) = &e.location {
            lines.push(format!("LOCATION:{}", text(location)));
        }
        if let Some(description) = &e.description {
            lines.push(format!("DESCRIPTION:{}", text(description)));
        }
        lines.push(format!(
            "ORGANIZER;CN={}:mailto:{}",
            param(&organizer.name),
            organizer.address
        ));
        if method != "PUBLISH" {
            lines.push(format!(
                "ATTENDEE;CN={};ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE:mailto:{}",
                param(&attendee.name),
                attendee.address
            ));
        }
        let cancelled = e.method == CalendarMethod::Cancel;
        lines.push(format!(
            "STATUS:{}",
            if cancelled { "CANCELLED" } else { "CONFIRMED" }
        ));
        lines.push("TRANSP:OPAQUE".to_owned());
        lines.push("END:VEVENT".to_owned());
    }
    lines.push("END:VCALENDAR".to_owned());
    let mut out = String::new();
    for line in lines {
        out.push_str(&fold(&line));
    }
    out
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A TEXT value: backslash, semicolon, comma and newlines escaped.
pub fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A parameter value, always quoted (a name may hold `:`, `;` or `,`); a double quote cannot
/// appear in one and is dropped, as are control characters.
fn param(value: &str) -> String {
    let clean: String = value
        .chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect();
    format!("\"{clean}\"")
}

/// One content line, folded: at most 75 octets a line, continuation lines start with a space,
/// every line ends in CRLF, and a UTF-8 character is never split.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3 + 2);
    let mut width = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn unfold(text: &str) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for raw in text.split("\r\n").filter(|l| !l.is_empty()) {
            if let Some(rest) = raw.strip_prefix(' ') {
                lines.last_mut().expect("a line to continue").push_str(rest);
            } else {
                lines.push(raw.to_owned());
            }
        }
        lines
    }

    #[test]
    fn text_values_are_escaped() {
        assert_eq!(
            text("Phòng họp; tầng 2, trụ sở\\HĐND\nhuyện\r\nTuần Giáo"),
            "Phòng họp\\; tầng 2\\, trụ sở\\\\HĐND\\nhuyện\\nTuần Giáo"
        );
        assert_eq!(param("Văn phòng \"HĐND\": A;B"), "\"Văn phòng HĐND: A;B\"");
    }

    #[test]
    fn long_lines_fold_at_75_octets_without_splitting_a_character() {
        let line = format!(
            "SUMMARY:{}",
            "Đoàn giám sát làm việc tại xã Quài Nà Tông, ".repeat(6)
        );
        let folded = fold(&line);
        assert!(folded.ends_with("\r\n"));
        for l in folded.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{} octets: {l:?}", l.len());
        }
        assert_eq!(unfold(&folded), vec![line]);
        assert_eq!(fold("VERSION:2.0"), "VERSION:2.0\r\n");
    }

    #[test]
    fn a_calendar_nests_its_components_and_chooses_its_method() {
        let at = |d, h| {
            Utc.with_ymd_and_hms(2024, 4, d, h, 0, 0)
                .single()
                .expect("time")
        };
        let entry = Entry {
            uid: "tg2024-giam-sat-xa-quai-to@giamsat".to_owned(),
            sequence: 0,
            start: at(26, 1),
            end: at(26, 5),
            summary: "Đoàn giám sát HĐND huyện làm việc tại xã Quài Tở".to_owned(),
            location: Some("UBND xã Quài Tở, huyện Tuần Giáo".to_owned()),
            description: None,
            method: CalendarMethod::Request,
        };
        let organizer = Party {
            name: "Văn phòng HĐND".to_owned(),
            address: "vanphong@example.org".to_owned(),
        };
        let attendee = Party {
            name: "xã Quài Tở".to_owned(),
            address: "quaito@example.org".to_owned(),
        };
        let one = calendar(
            std::slice::from_ref(&entry),
            &organizer,
            &attendee,
            at(25, 1),
        );
        let lines = unfold(&one);
        assert_eq!(lines.first().map(String::as_str), Some("BEGIN:VCALENDAR"));
        assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
        assert!(lines.contains(&"METHOD:REQUEST".to_owned()));
        assert!(lines.contains(&"DTSTART:20240426T010000Z".to_owned()));
        assert!(lines.contains(&"LOCATION:UBND xã Quài Tở\\, huyện Tuần Giáo".to_owned()));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ATTENDEE;CN=\"xã Quài Tở\";")
                    && l.ends_with(":mailto:quaito@example.org"))
        );
        let two = calendar(
            &[entry.clone(), entry.clone()],
            &organizer,
            &attendee,
            at(25, 1),
        );
        assert!(unfold(&two).contains(&"METHOD:PUBLISH".to_owned()));
        assert!(!two.contains("ATTENDEE"));
        let cancel = Entry {
            method: CalendarMethod::Cancel,
            sequence: 2,
            ..entry
        };
        let lines = unfold(&calendar(&[cancel], &organizer, &attendee, at(25, 1)));
        assert!(lines.contains(&"METHOD:CANCEL".to_owned()));
        assert!(lines.contains(&"STATUS:CANCELLED".to_owned()));
        assert!(lines.contains(&"SEQUENCE:2".to_owned()));
    }
}
