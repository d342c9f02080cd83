//! `giamsat archive build` and `giamsat archive verify` as a user runs them: the package of a case
//! with its rendered documents, as a folder and as ZIP and tar files, checked (exit 0), refused
//! when it already exists, and a changed byte found and named (exit 3).

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

const CONFIG: &str = r#"[[exporters]]
id = "documents"
type = "documents"
output = "out"

[[exporters]]
id = "archive"
type = "archive"
output = "archive"
documents-output = "out"
retention = "20 năm"
access = "restricted"
"#;

#[test]
fn a_case_is_packaged_verified_and_a_changed_byte_is_named() {
    let s = Sandbox::sqlite();
    let cfg = s.write("giamsat.toml", CONFIG).display().to_string();
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
    ok(&s, cfg, &["exporters", "run", "--once"]);

    let built = ok(
        &s,
        cfg,
        &[
            "archive",
            "build",
            "tg2024",
            "--json",
            "--clock",
            "sim:2024-04-01T09:00:00+07:00",
        ],
    )
    .json_lines();
    let package = &built[0];
    assert_eq!(package["path"], "archive/tg2024-tg2024");
    assert_eq!(package["packing"], "folder");
    assert_eq!(package["checksum_of"], "tagmanifest-sha256.txt");
    assert_eq!(package["bagging_date"], "2024-04-01");
    assert_eq!(
        package["documents"], 2,
        "the notice and the meeting invitation"
    );
    let bag = s.path("archive/tg2024-tg2024");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(bag.join("data/metadata.json")).expect("metadata"))
            .expect("json");
    assert_eq!(meta["File"]["Maintenance"], "20 năm");
    assert_eq!(meta["File"]["Rights"], "restricted");
    assert_eq!(meta["File"]["FileCode"], Value::Null, "not archived yet");

    let valid = ok(&s, cfg, &["archive", "verify", "archive/tg2024-tg2024"]);
    assert!(
        valid
            .stdout
            .starts_with("package valid: tg2024-tg2024 (folder)"),
        "{}",
        valid.stdout
    );
    assert!(
        valid
            .stdout
            .contains(package["sha256"].as_str().expect("sha256")),
        "{}",
        valid.stdout
    );
    let report = ok(
        &s,
        cfg,
        &["archive", "verify", "archive/tg2024-tg2024", "--json"],
    )
    .json_lines();
    assert_eq!(report[0]["valid"], true);
    assert_eq!(report[0]["payload_oxum"], package["payload_oxum"]);

    // Never written over.
    gs(&s, cfg, &["archive", "build", "tg2024"]).fails_with(
        1,
        &["archive/tg2024-tg2024 already exists", "never overwritten"],
    );

    // Packed: one .zip and one .tar file, each verified.
    for (flag, ext) in [("--zip", "zip"), ("--tar", "tar")] {
        let run = ok(
            &s,
            cfg,
            &["archive", "build", "tg2024", flag, "--out", "packed"],
        );
        let path = format!("packed/tg2024-tg2024.{ext}");
        assert!(run.stdout.starts_with(&path), "{}", run.stdout);
        assert!(run.stdout.contains("(package)"), "{}", run.stdout);
        let valid = ok(&s, cfg, &["archive", "verify", &path]);
        assert!(
            valid.stdout.contains(&format!("({ext})")),
            "{}",
            valid.stdout
        );
    }

    // One changed byte: exit 3, the file named.
    let documents = bag.join("data/documents");
    let victim = std::fs::read_dir(&documents)
        .expect("documents")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("thong-bao-lich") && n.ends_with(".html"))
        .expect("the notice");
    let mut bytes = std::fs::read(documents.join(&victim)).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(documents.join(&victim), &bytes).expect("tamper");
    let tampered = gs(&s, cfg, &["archive", "verify", "archive/tg2024-tg2024"]);
    tampered.fails_with(
        3,
        &[
            "the package archive/tg2024-tg2024 is invalid",
            &format!("data/documents/{victim}: sha256 checksum mismatch: expected"),
        ],
    );
    assert!(
        tampered
            .stdout
            .lines()
            .all(|l| l.starts_with("invalid: data/documents/")),
        "{}",
        tampered.stdout
    );

    // Errors that are not a bag's: exit 1.
    gs(&s, cfg, &["archive", "verify", "nowhere"]).fails_with(1, &["cannot check nowhere"]);
    let bare = s.write("bare.toml", "").display().to_string();
    gs(&s, &bare, &["archive", "build", "tg2024"]).fails_with(
        1,
        &["no [[exporters]] table with type = \"archive\" in the configuration"],
    );
    gs(&s, cfg, &["archive", "build", "missing", "--out", "x"])
        .fails_with(1, &["case \"missing\" does not exist"]);
    s.ok(&["verify"]);
}
