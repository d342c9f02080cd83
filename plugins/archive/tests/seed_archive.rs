//! The archive exporter on a real SQLite store, driven by the seed case (Tuần Giáo 2024) taken from
//! its establishment through an overdue recommendation, its completion, closure and archiving:
//! the package holds every document and the metadata, our verifier and the reference validator
//! (Python's `bagit`, when available) accept it, a changed byte is caught and named, a second
//! delivery records nothing new, and packed (ZIP, tar) packages verify too.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use giamsat_archive::{
    ArchiveConfig, ArchiveError, ArchiveExporter, Bag, BuildRequest, PACKAGE_BUILT_EVENT, Packing,
    build_package, verify_bag,
};
use giamsat_documents::exporter::{DocumentsExporter, read_records};
use giamsat_documents::register;
use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_store::{Direction, Store};
use giamsat_testkit::{self as testkit, SEC, act, at, seed, sqlite};
use giamsat_types::{RecordedEvent, StreamId};
use serde_json::{Value, json};

const FILE_CODE: &str = "HĐND-TG.2024.GS01";

/// The seed case from its establishment to an overdue recommendation (as the documents tests).
async fn run_seed_case(store: &Store, case: &str) {
    testkit::run_seed_case(
        store,
        &testkit::workflow("giam-sat-chuyen-de"),
        case,
        seed(),
    )
    .await;
}

/// Completion of the recommendation, closure and archiving.
async fn close_and_archive(store: &Store, case: &str) {
    act(
        store,
        case,
        SEC,
        "report_recommendation_progress",
        json!({"recommendation": "kn-1", "status": "completed", "reported_at": "2025-01-10T08:00:00+07:00"}),
        "2025-01-10T08:00:00+07:00",
    )
    .await;
    act(
        store,
        case,
        SEC,
        "close_case",
        json!({"closed_on": "2025-01-15"}),
        "2025-01-15T08:00:00+07:00",
    )
    .await;
    act(
        store,
        case,
        SEC,
        "archive_case",
        json!({"archived_on": "2025-06-01", "file_code": FILE_CODE}),
        "2025-06-01T09:00:00+07:00",
    )
    .await;
}

fn options() -> RunnerOptions {
    RunnerOptions {
        max_attempts: 1,
        ..RunnerOptions::default()
    }
}

fn documents_runner(store: &Store, out: &Path) -> Runner {
    let exporter =
        DocumentsExporter::from_config(json!({"output": out.display().to_string()}), store.clone())
            .expect("config");
    Runner::new("documents", store.clone(), Arc::new(exporter), options())
}

fn archive_table(dir: &Path) -> Value {
    json!({
        "output": dir.join("archive").display().to_string(),
        "documents-output": dir.join("documents").display().to_string(),
        "retention": "20 năm",
        "access": "restricted",
    })
}

fn archive_runner(store: &Store, dir: &Path) -> Runner {
    let exporter = ArchiveExporter::from_config(archive_table(dir), store.clone()).expect("config");
    Runner::new("archive", store.clone(), Arc::new(exporter), options())
}

async fn stream(store: &Store, id: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(
            &StreamId::new(id).expect("stream"),
            Direction::Forward,
            Some(1),
            10_000,
        )
        .await
        .expect("read")
}

/// A Python with the `bagit` module: `GIAMSAT_TEST_PYTHON` (required under `CI=true`), else a
/// `python3` that has it; `None` (the reference check is skipped) otherwise.
fn reference_python() -> Option<String> {
    let has_bagit = |python: &str| {
        Command::new(python)
            .args(["-c", "import bagit"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Ok(python) = std::env::var("GIAMSAT_TEST_PYTHON") {
        assert!(
            has_bagit(&python),
            "GIAMSAT_TEST_PYTHON={python} cannot import bagit"
        );
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the reference BagIt check: set GIAMSAT_TEST_PYTHON to a Python with bagit"
    );
    if has_bagit("python3") {
        return Some("python3".to_owned());
    }
    eprintln!(
        "reference check skipped: no Python with the bagit module (set GIAMSAT_TEST_PYTHON, e.g. \
         python3 -m venv /tmp/venv-bagit && /tmp/venv-bagit/bin/pip install bagit)"
    );
    None
}

/// `python -m bagit --validate DIR`: whether it passed, and what it said.
fn bagit_validate(python: &str, dir: &Path) -> (bool, String) {
    let out = Command::new(python)
        .args(["-m", "bagit", "--validate"])
        .arg(dir)
        .output()
        .expect("run python");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Unpacks a ZIP or tar file with Python's own modules (an independent reader of our writers).
fn python_unpack(python: &str, module: &str, file: &Path, into: &Path) {
    let out = Command::new(python)
        .args(["-m", module, "-e"])
        .arg(file)
        .arg(into)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python -m {module} -e: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether an XML file is well-formed, by Python's parser; `None` without a Python.
fn xml_well_formed(file: &Path) -> Option<Result<(), String>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(file)
        .output()
        .ok()?;
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Builds a bag again from a bag folder's payload and bag-info (new manifests), as someone who
/// edits a package and recomputes its checksums would.
fn reseal(dir: &Path, name: &str) -> giamsat_archive::SealedBag {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_dir() {
                walk(base, &entry.path(), out);
            } else {
                let rel = entry.path().strip_prefix(base).expect("inside").to_owned();
                out.push((
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).expect("read"),
                ));
            }
        }
    }
    let mut bag = Bag::new(name);
    let mut files = Vec::new();
    walk(&dir.join("data"), &dir.join("data"), &mut files);
    for (path, bytes) in files {
        bag.add_payload(&path, bytes).expect("payload");
    }
    let info = std::fs::read_to_string(dir.join("bag-info.txt")).expect("bag-info");
    for line in info.lines() {
        let (label, value) = line.split_once(": ").expect("tag");
        if label != "Payload-Oxum" {
            bag.add_info(label, value).expect("info");
        }
    }
    bag.seal()
}

fn problems(report: &giamsat_archive::Report) -> String {
    report
        .problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_archived_seed_case_becomes_a_valid_bag_with_every_document() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let out = d.join("documents");
    let store = sqlite(d).await;
    run_seed_case(&store, "tg2024").await;
    let documents = documents_runner(&store, &out);
    documents.run_once().await.expect("documents");
    // Numbered after signature: the package holds the draft and the issued rendering.
    register::assign_number(
        &store,
        "tg2024",
        "thong-bao-lich",
        SEC,
        at("2024-03-25T10:00:00+07:00"),
    )
    .await
    .expect("number");
    close_and_archive(&store, "tg2024").await;

    // The archive exporter waits for the documents exporter to pass the archive event.
    let archive = archive_runner(&store, d);
    archive.run_once().await.expect("archive");
    let waiting = parked(&store, "archive").await.expect("parked");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0]
            .error
            .contains("waiting for the documents exporter"),
        "{}",
        waiting[0].error
    );
    documents.run_once().await.expect("documents");
    assert_eq!(parked(&store, "documents").await.expect("parked"), vec![]);
    archive.retry_parked(waiting[0].id).await.expect("retry");
    assert_eq!(parked(&store, "archive").await.expect("parked"), vec![]);

    let case_events = stream(&store, "case/tg2024").await;
    let archived = case_events.last().expect("events");
    assert_eq!(archived.event_type, "CaseArchived");
    let records = stream(&store, "archive/tg2024").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event_type, PACKAGE_BUILT_EVENT);
    let record = records[0].data_value();
    let bag = d.join("archive").join(format!("tg2024-{FILE_CODE}"));
    assert_eq!(record["path"], bag.display().to_string());
    assert_eq!(record["file_code"], FILE_CODE);
    assert_eq!(record["packing"], "folder");
    assert_eq!(record["bagging_date"], "2025-06-01");
    assert_eq!(record["chain_head"], archived.hash.to_hex());
    assert_eq!(record["chain_head_position"], archived.position);
    assert_eq!(record["source"]["event_id"], archived.event_id.to_string());
    assert_eq!(
        record["sha256"],
        giamsat_archive::bag::Algorithm::Sha256
            .digest(&std::fs::read(bag.join("tagmanifest-sha256.txt")).expect("tagmanifest"))
    );
    let leftovers: Vec<String> = std::fs::read_dir(d.join("archive"))
        .expect("archive dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        [format!("tg2024-{FILE_CODE}")],
        "no temporary left"
    );

    // Every recorded file, byte for byte.
    let generated = read_records(&store, "tg2024").await.expect("records");
    let paths: BTreeSet<&str> = generated
        .iter()
        .flat_map(|g| g.files.iter().map(|f| f.path.as_str()))
        .collect();
    assert!(paths.len() >= 16 * 3 + 3, "{} files", paths.len());
    for path in &paths {
        let name = path.strip_prefix("tg2024/").expect("case folder");
        assert_eq!(
            std::fs::read(bag.join("data/documents").join(name)).expect("in the bag"),
            std::fs::read(out.join(path)).expect("rendered"),
            "{path}"
        );
    }
    let in_bag = std::fs::read_dir(bag.join("data/documents"))
        .expect("documents")
        .count();
    assert_eq!(in_bag, paths.len());
    let info = std::fs::read_to_string(bag.join("bag-info.txt")).expect("bag-info");
    for line in [
        "Source-Organization: HĐND HUYỆN TUẦN GIÁO / ĐOÀN GIÁM SÁT".to_owned(),
        "Bagging-Date: 2025-06-01".to_owned(),
        format!("External-Identifier: {FILE_CODE}"),
        "External-Identifier: tg2024".to_owned(),
        format!("Giamsat-Case-Chain-Head: {}", archived.hash),
        format!("Giamsat-Case-Chain-Head-Position: {}", archived.position),
        format!(
            "Payload-Oxum: {}",
            record["payload_oxum"].as_str().expect("oxum")
        ),
    ] {
        assert!(info.lines().any(|l| l == line), "{line:?} in\n{info}");
    }
    assert_eq!(
        std::fs::read_to_string(bag.join("bagit.txt")).expect("bagit"),
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    );

    // The case's events as the log stores them.
    let lines = std::fs::read_to_string(bag.join("data/events.jsonl")).expect("events");
    assert_eq!(lines.lines().count(), case_events.len());
    for (line, event) in lines.lines().zip(&case_events) {
        assert_eq!(line, serde_json::to_string(event).expect("json"));
    }
    let doc_lines = std::fs::read_to_string(bag.join("data/document-events.jsonl")).expect("doc");
    assert_eq!(
        doc_lines.lines().count(),
        stream(&store, "documents/tg2024").await.len()
    );

    // The record metadata.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(bag.join("data/metadata.json")).expect("json"))
            .expect("metadata.json");
    let file = &meta["File"];
    assert_eq!(file["FileCode"], FILE_CODE);
    assert_eq!(file["Title"], seed()["topic"]);
    assert_eq!(file["Maintenance"], "20 năm");
    assert_eq!(file["Rights"], "restricted");
    assert_eq!(file["Language"], "vi");
    assert_eq!(file["StartDate"], "2024-03-20");
    assert_eq!(file["EndDate"], "2025-06-01");
    assert_eq!(file["Creator"], SEC);
    let docs = meta["Documents"].as_array().expect("documents");
    assert_eq!(file["DocTotal"], docs.len());
    assert_eq!(
        docs.len(),
        16,
        "16 documents, the notice once with both renderings"
    );
    // The documents exporter's DOCX records no page count: only the minimum is known.
    assert_eq!(file["PageTotal"], Value::Null);
    assert!(file["PageTotalMinimum"].as_u64().expect("minimum") > docs.len() as u64);
    assert_eq!(meta["Labels"]["FileCode"], "Mã hồ sơ");
    for (i, doc) in docs.iter().enumerate() {
        assert_eq!(doc["DocOrdinal"], i + 1);
        assert_eq!(doc["FileCode"], FILE_CODE);
        assert_eq!(doc["OrganName"], "HĐND HUYỆN TUẦN GIÁO / ĐOÀN GIÁM SÁT");
        assert!(doc["PageAmountMinimum"].as_u64().expect("pages") >= 1);
        for f in doc["Files"].as_array().expect("files") {
            assert!(bag.join(f["Path"].as_str().expect("path")).is_file(), "{f}");
        }
    }
    let notice = docs
        .iter()
        .find(|d| d["DocumentId"] == "thong-bao-lich")
        .expect("notice");
    assert_eq!(notice["Status"], "issued");
    assert_eq!(notice["CodeNumber"], "01");
    assert_eq!(notice["CodeNotation"], "TB-ĐGS");
    assert_eq!(notice["IssuedDate"], "2024-03-25");
    assert_eq!(notice["TypeName"], "Thông báo");
    assert!(notice["Subject"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        notice["SignerInfo"]["FullName"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        notice["To"].as_array().is_some_and(|to| to.len() > 1),
        "{}",
        notice["To"]
    );
    let states: BTreeSet<&str> = notice["Files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["State"].as_str())
        .collect();
    assert_eq!(states, ["draft", "issued"].into_iter().collect());
    let plan = docs
        .iter()
        .find(|d| d["DocumentId"] == "ke-hoach")
        .expect("plan");
    assert_eq!(plan["Status"], "draft");
    assert_eq!(plan["CodeNumber"], Value::Null);
    let xml = std::fs::read_to_string(bag.join("data/metadata.xml")).expect("xml");
    assert!(xml.contains(&format!(
        "<FileCode label=\"Mã hồ sơ\">{FILE_CODE}</FileCode>"
    )));
    assert!(xml.contains("<CodeNotation label=\"Ký hiệu của văn bản\">TB-ĐGS</CodeNotation>"));
    assert!(xml.contains("<Maintenance label=\"Thời hạn bảo quản\">20 năm</Maintenance>"));
    match xml_well_formed(&bag.join("data/metadata.xml")) {
        Some(result) => result.expect("metadata.xml is well-formed"),
        None => eprintln!("XML well-formedness check skipped: no python3"),
    }

    // Our verifier and the reference validator accept it.
    let report = verify_bag(&bag).expect("verify");
    assert!(report.is_valid(), "{}", problems(&report));
    assert_eq!(
        report.events_checked,
        case_events.len() + doc_lines.lines().count()
    );
    assert_eq!(report.documents_checked, paths.len());
    assert_eq!(
        report.sha256.as_ref(),
        record["sha256"].as_str().map(str::to_owned).as_ref()
    );
    let python = reference_python();
    if let Some(py) = &python {
        let (ok, said) = bagit_validate(py, &bag);
        assert!(ok, "bagit.py refused the package:\n{said}");
    }

    // Deterministic: built again up to the archive event, with today's clock, the same bytes.
    let config = ArchiveConfig::from_table(archive_table(d)).expect("config");
    let again = build_package(
        &store,
        &config,
        &BuildRequest {
            case: "tg2024".to_owned(),
            until: Some(archived.stream_version),
            now: chrono::Utc::now(),
            output: d.join("again"),
            packing: Packing::Folder,
        },
    )
    .await
    .expect("again");
    assert_eq!(Some(again.sha256.as_str()), record["sha256"].as_str());
    assert_eq!(again.bagging_date.to_string(), "2025-06-01");

    // A second delivery records nothing new and builds nothing new.
    archive
        .replay_from(archived.position)
        .await
        .expect("replay");
    archive.run_once().await.expect("again");
    assert_eq!(parked(&store, "archive").await.expect("parked"), vec![]);
    assert_eq!(stream(&store, "archive/tg2024").await, records);

    // Someone edits the event log copy and recomputes every manifest: the chain catches it.
    let forged = d.join("forged");
    copy_dir(&bag, &forged);
    let events_file = forged.join("data/events.jsonl");
    let text = std::fs::read_to_string(&events_file).expect("events");
    std::fs::write(&events_file, text.replacen("Tuần Giáo", "Tuần Giao", 1)).expect("edit");
    let resealed = reseal(&forged, "forged2");
    resealed.write_dir(&d.join("forged2")).expect("write");
    let report = verify_bag(&d.join("forged2")).expect("verify");
    let text = problems(&report);
    assert!(
        text.contains("data/events.jsonl: line 1 (position") && text.contains("hash mismatch"),
        "{text}"
    );

    // An extra payload file and a stale Payload-Oxum are named.
    std::fs::write(bag.join("data/ghi-chu.txt"), "thêm").expect("extra");
    let report = verify_bag(&bag).expect("verify");
    let text = problems(&report);
    assert!(
        text.contains("data/ghi-chu.txt: in data/ but not listed in manifest-sha256.txt"),
        "{text}"
    );
    assert!(
        text.contains("bag-info.txt: Payload-Oxum expected"),
        "{text}"
    );
    std::fs::remove_file(bag.join("data/ghi-chu.txt")).expect("remove");

    // One changed payload byte: our verifier names the file, and so does the reference.
    let victim = notice["Files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["Path"].as_str())
        .find(|p| p.ends_with(".md") && p.contains("so-01"))
        .expect("issued markdown")
        .to_owned();
    let mut bytes = std::fs::read(bag.join(&victim)).expect("read");
    bytes[10] ^= 0x01;
    std::fs::write(bag.join(&victim), &bytes).expect("tamper");
    let report = verify_bag(&bag).expect("verify");
    assert!(!report.is_valid());
    let text = problems(&report);
    assert!(
        text.contains(&format!("{victim}: sha256 checksum mismatch: expected")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{victim}: sha256 expected")),
        "{text}"
    );
    if let Some(py) = &python {
        let (ok, said) = bagit_validate(py, &bag);
        assert!(!ok, "bagit.py accepted a changed package:\n{said}");
        assert!(said.contains(victim.trim_start_matches("data/")), "{said}");
    }

    // A delivery that finds the package changed fails permanently (the runner parks the event)
    // and overwrites nothing. (Called directly: the runner cannot park one event twice with
    // different errors, see the report.)
    let exporter = ArchiveExporter::from_config(archive_table(d), store.clone()).expect("config");
    let error = giamsat_exporter::Exporter::export(&exporter, archived)
        .await
        .expect_err("invalid package");
    let giamsat_exporter::ExportError::Permanent(message) = error else {
        panic!("not permanent: {error}");
    };
    assert!(
        message.contains("exists but is not valid") && message.contains(&victim),
        "{message}"
    );
    assert_eq!(std::fs::read(bag.join(&victim)).expect("kept"), bytes);
    assert_eq!(stream(&store, "archive/tg2024").await, records);
}

#[tokio::test]
async fn packed_packages_verify_and_changed_documents_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let out = d.join("documents");
    let store = sqlite(d).await;
    run_seed_case(&store, "tg2024").await;
    documents_runner(&store, &out)
        .run_once()
        .await
        .expect("documents");
    let config = ArchiveConfig::from_table(archive_table(d)).expect("config");
    let now = chrono::Utc::now();
    let request = |packing: Packing, folder: &str| BuildRequest {
        case: "tg2024".to_owned(),
        until: None,
        now,
        output: d.join(folder),
        packing,
    };
    let python = reference_python();

    // Not archived yet: no file code, dated today, named after the case.
    let folder = build_package(&store, &config, &request(Packing::Folder, "f"))
        .await
        .expect("folder");
    assert_eq!(folder.name, "tg2024-tg2024");
    assert_eq!(folder.file_code, None);
    let today = now
        .with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).expect("zone"))
        .date_naive();
    assert_eq!(folder.bagging_date, today);
    assert!(verify_bag(&folder.path).expect("verify").is_valid());
    let again = build_package(&store, &config, &request(Packing::Folder, "f"))
        .await
        .expect_err("exists");
    assert!(matches!(again, ArchiveError::Exists { .. }), "{again}");
    assert!(again.to_string().contains("never overwritten"), "{again}");

    for (packing, module) in [(Packing::Zip, "zipfile"), (Packing::Tar, "tarfile")] {
        let package = build_package(&store, &config, &request(packing, packing.name()))
            .await
            .expect("packed");
        let ext = packing.extension().expect("extension");
        assert_eq!(
            package.path,
            d.join(packing.name()).join(format!("tg2024-tg2024.{ext}"))
        );
        assert_eq!(package.checksum_of, "package");
        assert_eq!(package.payload_oxum, folder.payload_oxum, "same payload");
        let bytes = std::fs::read(&package.path).expect("package");
        assert_eq!(
            package.sha256,
            giamsat_archive::bag::Algorithm::Sha256.digest(&bytes)
        );
        let report = verify_bag(&package.path).expect("verify");
        assert!(report.is_valid(), "{ext}: {}", problems(&report));
        assert_eq!(report.name, "tg2024-tg2024");
        assert_eq!(report.sha256.as_deref(), Some(package.sha256.as_str()));
        if let Some(py) = &python {
            let unpacked = d.join(format!("unpacked-{ext}"));
            python_unpack(py, module, &package.path, &unpacked);
            let (ok, said) = bagit_validate(py, &unpacked.join("tg2024-tg2024"));
            assert!(ok, "bagit.py refused the unpacked {ext}:\n{said}");
        }
        // A changed byte inside the packed file is found and named.
        let needle = b"\"topic\"";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the start event in the package");
        let mut tampered = bytes.clone();
        tampered[at + 2] ^= 0x20;
        let bad = d.join(format!("tampered.{ext}"));
        std::fs::write(&bad, &tampered).expect("write");
        let report = verify_bag(&bad).expect("verify");
        assert!(!report.is_valid());
        assert!(problems(&report).contains("data/"), "{}", problems(&report));
    }

    // A document changed or removed since it was recorded stops the build, naming the file.
    let records = read_records(&store, "tg2024").await.expect("records");
    let victim = out.join(&records[0].files[0].path);
    let original = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, b"changed").expect("change");
    let err = build_package(&store, &config, &request(Packing::Folder, "g"))
        .await
        .expect_err("changed");
    assert!(matches!(err, ArchiveError::DocumentChanged { .. }), "{err}");
    assert!(
        err.to_string().contains(&victim.display().to_string()),
        "{err}"
    );
    std::fs::remove_file(&victim).expect("remove");
    let err = build_package(&store, &config, &request(Packing::Folder, "g"))
        .await
        .expect_err("missing");
    assert!(matches!(err, ArchiveError::DocumentMissing { .. }), "{err}");
    assert!(
        err.to_string().contains(&victim.display().to_string()),
        "{err}"
    );
    assert!(
        !d.join("g").join("tg2024-tg2024").exists(),
        "nothing under the final name"
    );
    std::fs::write(&victim, original).expect("restore");
    let err = build_package(
        &store,
        &config,
        &BuildRequest {
            case: "nope".to_owned(),
            ..request(Packing::Folder, "g")
        },
    )
    .await
    .expect_err("no case");
    assert!(
        err.to_string().contains("case \"nope\" does not exist"),
        "{err}"
    );
}

#[test]
fn vietnamese_and_special_file_names_survive_every_packing() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let mut bag = Bag::new("hồ-sơ-thử");
    let names = [
        "Tờ trình số 01.md",
        "thư mục/Biên bản họp Đoàn giám sát.docx",
        "Nghị quyết\nxuống dòng.txt",
        "chữ Hán Nôm 𡨸喃.txt",
    ];
    for (i, name) in names.iter().enumerate() {
        bag.add_payload(name, format!("nội dung {i}").into_bytes())
            .expect("payload");
    }
    bag.add_info("Source-Organization", "Hội đồng nhân dân huyện Tuần Giáo")
        .expect("info");
    let sealed = bag.clone().seal();
    sealed.write_dir(&d.join("hồ-sơ-thử")).expect("write");
    let report = verify_bag(&d.join("hồ-sơ-thử")).expect("verify");
    assert!(report.is_valid(), "{}", problems(&report));
    let manifest = std::fs::read_to_string(d.join("hồ-sơ-thử/manifest-sha256.txt")).expect("m");
    assert!(
        manifest.contains("data/Nghị quyết%0Axuống dòng.txt"),
        "{manifest}"
    );
    if let Some(py) = reference_python() {
        let (ok, said) = bagit_validate(&py, &d.join("hồ-sơ-thử"));
        assert!(ok, "bagit.py refused Vietnamese names:\n{said}");
    }
    // A percent sign is encoded as %25 (RFC 8493); bagit.py does not decode it, so only our
    // verifier reads it back.
    let mut percent = bag;
    percent
        .add_payload("hoàn thành 100%.txt", b"x".to_vec())
        .expect("payload");
    let sealed = percent.seal();
    assert!(
        String::from_utf8_lossy(&sealed.files()["manifest-sha256.txt"])
            .contains("data/hoàn thành 100%25.txt")
    );
    sealed.write_dir(&d.join("percent")).expect("write");
    assert!(verify_bag(&d.join("percent")).expect("verify").is_valid());
    let day = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
    for (ext, bytes) in [
        ("zip", sealed.to_zip(day).expect("zip")),
        ("tar", sealed.to_tar(day)),
    ] {
        let file = d.join(format!("hồ-sơ.{ext}"));
        std::fs::write(&file, bytes).expect("write");
        let report = verify_bag(&file).expect("verify");
        assert!(report.is_valid(), "{ext}: {}", problems(&report));
        assert_eq!(report.name, "hồ-sơ-thử");
        assert_eq!(report.payload_files, 5);
    }
    // Missing files and a missing bagit.txt are named.
    std::fs::remove_file(d.join("percent/data/Tờ trình số 01.md")).expect("remove");
    std::fs::remove_file(d.join("percent/bagit.txt")).expect("remove");
    let text = problems(&verify_bag(&d.join("percent")).expect("verify"));
    assert!(
        text.contains("data/Tờ trình số 01.md: missing (listed in manifest-sha256.txt)"),
        "{text}"
    );
    assert!(text.contains("bagit.txt: missing"), "{text}");
}
