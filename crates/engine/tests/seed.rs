//! The seed notice (`../shared/seed/`) is fully representable: every date, unit, person, phone
//! number, e-mail address, outline heading and appendix column printed in it is present in the
//! case started from `workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml`.

use std::path::Path;

use chrono::DateTime;
use giamsat_engine::{Actor, Bundle, CaseState, CommandRequest, load, referenced_files, start};
use uuid::Uuid;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Markdown and HTML left over from the export removed, whitespace collapsed.
fn plain(text: &str) -> String {
    let cleaned = text
        .replace("<b>", "")
        .replace("</b>", "")
        .replace(['*', '#', '\\'], "");
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every string in the case's state, as one searchable text.
fn case_text() -> String {
    let dir = root().join("workflows/giam-sat-chuyen-de");
    let text = std::fs::read_to_string(dir.join("workflow.yaml")).expect("workflow");
    let files = referenced_files(&text)
        .into_iter()
        .map(|f| {
            (
                f.clone(),
                std::fs::read_to_string(dir.join(&f)).expect("file"),
            )
        })
        .collect();
    let workflow = load(Bundle {
        origin: "workflow.yaml".into(),
        text,
        files,
    })
    .expect("valid");
    let example =
        std::fs::read_to_string(dir.join("examples/tuan-giao-2024.yaml")).expect("example");
    let data: serde_json::Value = serde_saphyr::from_str(&example).expect("yaml");
    let request = CommandRequest {
        id: Uuid::from_u128(1),
        name: "start".into(),
        input: data,
        actor: Actor::parse("secretariat:huyen").expect("actor"),
        at: DateTime::parse_from_rfc3339("2024-03-20T08:00:00+07:00").expect("time"),
    };
    let mut state = CaseState::default();
    let event = start(&workflow, &state, "tg", &request).unwrap_or_else(|r| panic!("{r}"));
    state.evolve(&event.data, 1);
    let mut out = Vec::new();
    collect(&serde_json::to_value(&state).expect("json"), &mut out);
    plain(&out.join("\n"))
}

fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        other => out.push(other.to_string()),
    }
}

fn seed() -> String {
    let path = root().join("../shared/seed/000_c5707c52b10b40ea.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `d/m/yyyy` and `dd/mm/yyyy` dates in the text, with their ISO form.
fn dates(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit()) {
            let token: String = chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == '/')
                .collect();
            let parts: Vec<&str> = token.split('/').collect();
            if parts.len() == 3
                && parts[2].len() == 4
                && !parts[0].is_empty()
                && !parts[1].is_empty()
            {
                let (d, m, y): (u32, u32, i32) = (
                    parts[0].parse().unwrap_or(0),
                    parts[1].parse().unwrap_or(0),
                    parts[2].parse().unwrap_or(0),
                );
                out.push((token.clone(), format!("{y:04}-{m:02}-{d:02}")));
            }
            i += token.chars().count().max(1);
        } else {
            i += 1;
        }
    }
    out
}

fn between<'a>(text: &'a str, start: &str, end: &[char]) -> Vec<&'a str> {
    text.match_indices(start)
        .filter_map(|(i, _)| {
            let rest = &text[i + start.len()..];
            rest.find(end).map(|j| rest[..j].trim())
        })
        .collect()
}

#[test]
fn every_fact_of_the_seed_is_in_the_example_case() {
    let seed = seed();
    let case = case_text();
    let mut missing = Vec::new();
    let check = |kind: &str, needle: &str| -> Option<String> {
        let needle = plain(needle);
        (!needle.is_empty() && !case.contains(&needle)).then(|| format!("{kind}: {needle}"))
    };

    let found = dates(&seed);
    assert!(
        found.len() >= 15,
        "only {} dates found in the seed",
        found.len()
    );
    for (printed, iso) in &found {
        if !case.contains(printed.as_str()) && !case.contains(iso.as_str()) {
            missing.push(format!("date: {printed} ({iso})"));
        }
    }
    // The schedule lines: "- Ngày 25/4/2024, giám sát tại thị trấn Tuần Giáo."
    let schedule: String = seed
        .lines()
        .filter(|l| l.trim_start().starts_with("- Ngày"))
        .collect::<Vec<_>>()
        .join("\n");
    let units: Vec<&str> = between(&schedule, "giám sát tại ", &['.', '\n'])
        .into_iter()
        .chain(between(&schedule, "giám sát đối với ", &['.', '\n']))
        .collect();
    assert_eq!(units.len(), 9, "{units:?}");
    for unit in units {
        missing.extend(check("unit", unit));
    }
    let contacts = between(&seed, "Đ/c ", &[',']);
    assert!(!contacts.is_empty());
    for person in contacts {
        missing.extend(check("person", person));
    }
    let signer = seed
        .lines()
        .skip_while(|l| !l.contains("PHÓ TRƯỞNG ĐOÀN"))
        .find(|l| l.trim().starts_with("**") && !l.contains("ĐOÀN"))
        .expect("signer line");
    missing.extend(check("person", signer));
    for phone in between(&seed, "SĐT: ", &[')', '*']) {
        missing.extend(check("phone", phone));
    }
    for word in seed.split(|c: char| c.is_whitespace() || c == '*') {
        if word.contains('@') {
            missing.extend(check("e-mail", word.trim_end_matches(['.', ',', ';'])));
        }
    }
    let mut headings = 0;
    for line in seed.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.starts_with("**") && t.ends_with("**") && t.len() > 4) {
            headings += 1;
            missing.extend(check("heading", t));
        }
    }
    assert!(headings >= 30, "only {headings} headings found in the seed");
    let mut columns = 0;
    for line in seed.lines().filter(|l| l.contains('\t')) {
        for cell in line.split('\t') {
            let cell = plain(cell);
            if !cell.is_empty() && !cell.chars().all(|c| c.is_ascii_digit()) {
                columns += 1;
                missing.extend(check("appendix column or row", &cell));
            }
        }
    }
    assert!(columns >= 10, "only {columns} appendix cells found");
    assert!(
        missing.is_empty(),
        "missing from the example case:\n{}",
        missing.join("\n")
    );
}
