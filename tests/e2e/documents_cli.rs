//! `giamsat documents ...` and the documents exporter as a user runs them: the seed notice and a
//! reminder rendered by `exporters run --once`, numbered after signature, listed, corrected as a
//! new version, and the register of outgoing documents.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{Run, Sandbox};

fn workflows() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows")
        .display()
        .to_string()
}

fn gs(s: &Sandbox, cfg: &str, args: &[&str]) -> Run {
    let w = workflows();
    let mut all = vec!["--config", cfg, "--workflows", w.as_str()];
    all.extend_from_slice(args);
    s.run(&all)
}

fn ok(s: &Sandbox, cfg: &str, args: &[&str]) -> Run {
    let run = gs(s, cfg, args);
    assert_eq!(
        run.code, 0,
        "giamsat {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

fn listed(s: &Sandbox, cfg: &str) -> Vec<Value> {
    ok(s, cfg, &["documents", "list", "tg2024", "--json"]).json_lines()
}

fn row<'a>(rows: &'a [Value], document: &str, version: u64) -> &'a Value {
    rows.iter()
        .find(|r| r["document"] == document && r["version"] == version)
        .unwrap_or_else(|| panic!("{document} v{version} in {rows:?}"))
}

fn file(s: &Sandbox, row: &Value, ext: &str) -> String {
    let path = row["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .find(|p| p.ends_with(ext))
        .expect("file of the format");
    std::fs::read_to_string(s.path("out").join(path)).expect("file written")
}

#[test]
fn documents_are_rendered_numbered_corrected_and_registered() {
    let s = Sandbox::sqlite();
    let cfg = s
        .write(
            "giamsat.toml",
            "[[exporters]]\nid = \"documents\"\ntype = \"documents\"\noutput = \"out\"\n",
        )
        .display()
        .to_string();
    let cfg = cfg.as_str();
    let seed = PathBuf::from(workflows())
        .join("giam-sat-chuyen-de/examples/tuan-giao-2024.yaml")
        .display()
        .to_string();
    let sec = ["--as", "secretariat:huyen"];
    ok(
        &s,
        cfg,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed,
            "--id",
            "tg2024",
            sec[0],
            sec[1],
            "--at",
            "2024-03-20T08:00:00+07:00",
        ],
    );
    ok(
        &s,
        cfg,
        &[
            "case",
            "do",
            "tg2024",
            "issue_notice",
            "--set",
            "issued_on=2024-03-25",
            "--set",
            "document=thong-bao-lich",
            sec[0],
            sec[1],
            "--at",
            "2024-03-25T08:00:00+07:00",
        ],
    );
    ok(
        &s,
        cfg,
        &[
            "case",
            "do",
            "tg2024",
            "send_reminder",
            "--set",
            "unit=xa-ta-ma",
            sec[0],
            sec[1],
            "--at",
            "2024-04-17T08:00:00+07:00",
        ],
    );
    ok(&s, cfg, &["exporters", "run", "--once"]);
    let rows = listed(&s, cfg);
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["document"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "thong-bao-lich",
            "giay-moi-hop-doan",
            "cong-van-don-doc-xa-ta-ma"
        ]
    );
    let notice = row(&rows, "thong-bao-lich", 1);
    assert_eq!(notice["symbol"], Value::Null);
    assert!(file(&s, notice, ".md").contains("Số:    /TB-ĐGS"));
    assert!(file(&s, notice, ".html").contains("<html lang=\"vi\">"));
    let people = ok(&s, cfg, &["documents", "list", "tg2024"]);
    assert!(
        people.lines()[0].starts_with("thong-bao-lich\tv1\tdraft\t2024-03-25\t"),
        "{}",
        people.stdout
    );

    // Numbered after signature: the case records the number too, and the exporter renders it.
    let numbered = ok(
        &s,
        cfg,
        &[
            "documents",
            "number",
            "tg2024",
            "thong-bao-lich",
            sec[0],
            sec[1],
            "--at",
            "2024-03-25T10:00:00+07:00",
        ],
    );
    assert_eq!(
        numbered.lines(),
        ["01/TB-ĐGS\t2024-03-25\tthong-bao-lich\tv1"]
    );
    let case = ok(&s, cfg, &["case", "show", "tg2024", "--json"]).json_lines();
    assert_eq!(
        case[0]["entities"]["documents"]["thong-bao-lich"]["data"]["number"],
        "01/TB-ĐGS"
    );
    ok(&s, cfg, &["exporters", "run", "--once"]);
    let rows = listed(&s, cfg);
    let notice = row(&rows, "thong-bao-lich", 1);
    assert_eq!(notice["symbol"], "01/TB-ĐGS");
    assert!(file(&s, notice, ".md").contains("Số: 01/TB-ĐGS"));
    assert_eq!(notice["draft_files"].as_array().map(Vec::len), Some(3));

    let book = ok(
        &s,
        cfg,
        &["documents", "register", "--year", "2024", "--json"],
    )
    .json_lines();
    assert_eq!(book.len(), 1);
    assert_eq!(book[0]["symbol"], "01/TB-ĐGS");
    assert_eq!(book[0]["case"], "tg2024");
    assert!(
        ok(&s, cfg, &["documents", "register", "--year", "2023"])
            .stdout
            .is_empty()
    );

    // A correction is a new version; the issued one is listed as it was.
    let corrected = ok(
        &s,
        cfg,
        &[
            "documents",
            "correct",
            "tg2024",
            "thong-bao-lich",
            "--reason",
            "Sửa lỗi chính tả",
            sec[0],
            sec[1],
            "--at",
            "2024-03-26T08:00:00+07:00",
        ],
    );
    assert!(
        corrected.stdout.contains("thong-bao-lich v2"),
        "{}",
        corrected.stdout
    );
    ok(&s, cfg, &["exporters", "run", "--once"]);
    let rows = listed(&s, cfg);
    assert_eq!(row(&rows, "thong-bao-lich", 1)["symbol"], "01/TB-ĐGS");
    assert_eq!(row(&rows, "thong-bao-lich", 2)["symbol"], Value::Null);

    gs(&s, cfg, &["documents", "number", "tg2024", "nope"]).fails_with(
        1,
        &[
            "no document \"nope\"",
            "thong-bao-lich",
            "cong-van-don-doc-xa-ta-ma",
        ],
    );
    gs(&s, cfg, &["documents", "list", "missing"])
        .fails_with(1, &["case \"missing\" does not exist"]);
    s.ok(&["verify"]);
}

#[test]
fn workflow_check_finds_broken_templates_with_their_place() {
    let s = Sandbox::sqlite();
    let dst = s.path("wf/giam-sat-chuyen-de");
    crate::cases_cli::copy_dir(&PathBuf::from(workflows()).join("giam-sat-chuyen-de"), &dst);
    let template = dst.join("templates/giay-moi-hop-doan.hbs");
    let text = std::fs::read_to_string(&template).expect("template");
    std::fs::write(&template, format!("{text}\n{{{{> no-such-partial}}}}\n")).expect("write");
    let minutes = dst.join("templates/bien-ban.hbs");
    std::fs::write(&minutes, "line one\n{{#if x}}\nunclosed\n").expect("write");
    let lines = text.lines().count() + 2;
    s.run(&["workflow", "check", "wf"]).fails_with(
        1,
        &[
            &format!("templates/giay-moi-hop-doan.hbs:{lines}:1: partial \"no-such-partial\" is not declared"),
            "templates/bien-ban.hbs:",
        ],
    );
    // A missing template file is named with the document that declares it.
    std::fs::remove_file(&minutes).expect("remove");
    s.run(&["workflow", "check", "wf"]).fails_with(
        1,
        &["document \"bien-ban\": template file \"templates/bien-ban.hbs\" is missing"],
    );
}
