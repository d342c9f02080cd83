//! The documents exporter on a real SQLite store, driven by the seed case (Tuần Giáo 2024) taken
//! through its stages: every document kind in HTML, Markdown and DOCX, the draft number line,
//! numbering after signature in the issuer's series, a correction as a new version, issued files
//! never overwritten, idempotent re-delivery, and the fidelity of the rendered notice to the seed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use giamsat_cases::read_workflow_dir;
use giamsat_documents::exporter::{DocumentsExporter, GENERATED_EVENT, read_records};
use giamsat_documents::register;
use giamsat_engine::{Workflow, load};
use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_store::{Direction, Store};
use giamsat_testkit::{self as testkit, SEC, act, at, root, seed, sqlite, start};
use giamsat_types::StreamId;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn workflow() -> Workflow {
    testkit::workflow("giam-sat-chuyen-de")
}

/// The workflow with the minutes (biên bản) declared secret.
fn workflow_with_secret_minutes() -> Workflow {
    let mut bundle = read_workflow_dir(&root().join("workflows/giam-sat-chuyen-de")).expect("read");
    let declared = "template: templates/bien-ban.hbs\n";
    assert!(bundle.text.contains(declared));
    bundle.text = bundle
        .text
        .replace(declared, &format!("{declared}    secret: true\n"));
    load(bundle).expect("valid")
}

/// The seed case from its establishment to an overdue recommendation.
async fn run_seed_case(store: &Store, case: &str, data: Value) {
    testkit::run_seed_case(store, &workflow(), case, data).await;
}

/// A case started from `data` on 20/3/2024 whose schedule notice was issued on 25/3/2024.
async fn start_with_notice(store: &Store, case: &str, data: Value) {
    start(store, &workflow(), case, data).await;
    act(
        store,
        case,
        SEC,
        "issue_notice",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        "2024-03-25T08:00:00+07:00",
    )
    .await;
}

fn exporter(store: &Store, out: &Path) -> Runner {
    let exporter =
        DocumentsExporter::from_config(json!({"output": out.display().to_string()}), store.clone())
            .expect("config");
    Runner::new(
        "documents",
        store.clone(),
        Arc::new(exporter),
        RunnerOptions {
            max_attempts: 1,
            ..RunnerOptions::default()
        },
    )
}

async fn generated_events(store: &Store, case: &str) -> usize {
    store
        .read_stream(
            &StreamId::new(format!("documents/{case}")).expect("stream"),
            Direction::Forward,
            Some(1),
            10_000,
        )
        .await
        .expect("read")
        .iter()
        .filter(|e| e.event_type == GENERATED_EVENT)
        .count()
}

#[tokio::test]
async fn the_seed_case_produces_every_document_numbered_and_corrected() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("documents");
    let store = sqlite(dir.path()).await;
    run_seed_case(&store, "tg2024", seed()).await;
    let runner = exporter(&store, &out);
    runner.run_once().await.expect("run");
    assert_eq!(parked(&store, "documents").await.expect("parked"), vec![]);

    let records = read_records(&store, "tg2024").await.expect("records");
    let documents: BTreeSet<&str> = records.iter().map(|r| r.document.as_str()).collect();
    let mut expected: BTreeSet<&str> = [
        "ke-hoach",
        "thong-bao-lich",
        "giay-moi-hop-doan",
        "cong-van-don-doc-xa-ta-ma",
        "thong-bao-dieu-chinh-lich-xa-quai-cang",
        "bao-cao-ket-qua",
        "cong-van-don-doc-kien-nghi-kn-1",
    ]
    .into_iter()
    .collect();
    let minutes: Vec<String> = [
        "thi-tran-tuan-giao",
        "xa-quai-to",
        "xa-quai-cang",
        "xa-quai-nua",
        "xa-quai-na-tong",
        "xa-phinh-sang",
        "xa-ta-ma",
        "phong-noi-vu",
        "ubnd-huyen",
    ]
    .iter()
    .map(|u| format!("bien-ban-{u}"))
    .collect();
    expected.extend(minutes.iter().map(String::as_str));
    assert_eq!(documents, expected);
    for r in &records {
        assert_eq!(r.version, 1);
        assert_eq!(r.number, None, "{} is a draft", r.document);
        let formats: Vec<&str> = r.files.iter().map(|f| f.format.extension()).collect();
        assert_eq!(formats, ["html", "md", "docx"], "{}", r.document);
        for f in &r.files {
            let bytes = std::fs::read(out.join(&f.path)).expect("file written");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), f.sha256, "{}", f.path);
            assert!(
                f.path.starts_with("tg2024/"),
                "one folder per case: {}",
                f.path
            );
        }
    }
    let md = |r: &giamsat_documents::exporter::Generated| {
        let f = r
            .files
            .iter()
            .find(|f| f.path.ends_with(".md"))
            .expect("md");
        std::fs::read_to_string(out.join(&f.path)).expect("md file")
    };
    let notice = records
        .iter()
        .find(|r| r.document == "thong-bao-lich")
        .expect("notice");
    assert_eq!(notice.date, "2024-03-25");
    // Another exporter (an e-mail attachment) gets the very bytes the documents exporter wrote.
    let events = store
        .read_stream(
            &StreamId::new("case/tg2024").expect("stream"),
            Direction::Forward,
            Some(1),
            1000,
        )
        .await
        .expect("case");
    let issued = events
        .iter()
        .find(|e| e.event_type == "NoticeIssued")
        .expect("event");
    let renderer = DocumentsExporter::renderer(
        store.clone(),
        vec![giamsat_documents::exporter::OutputFormat::Docx],
    );
    let attachment = renderer
        .render_in_memory(issued, "thong-bao-lich")
        .await
        .expect("render")
        .expect("a notice");
    assert_eq!(attachment.files.len(), 1);
    let written = notice
        .files
        .iter()
        .find(|f| f.path.ends_with(".docx"))
        .expect("docx");
    assert_eq!(
        hex::encode(Sha256::digest(&attachment.files[0].bytes)),
        written.sha256
    );
    assert!(
        renderer
            .render_in_memory(issued, "bien-ban")
            .await
            .expect("none")
            .is_none()
    );
    let view = renderer
        .view(issued)
        .await
        .expect("view")
        .expect("a case event");
    assert_eq!(view.context["event"]["date"], "2024-03-25");
    assert_eq!(view.context["case"]["stage"], "notified");
    let text = md(notice);
    assert!(text.contains("Số:    /TB-ĐGS"), "draft number line: {text}");
    assert!(text.contains("Tuần Giáo, ngày 25 tháng 3 năm 2024"));
    let reminder = records
        .iter()
        .find(|r| r.document == "cong-van-don-doc-xa-ta-ma")
        .expect("reminder");
    assert!(md(reminder).contains("xã Ta Ma"), "{}", md(reminder));
    assert!(md(reminder).contains("20/4/2024"));
    let change = records
        .iter()
        .find(|r| r.document == "thong-bao-dieu-chinh-lich-xa-quai-cang")
        .expect("change");
    assert!(md(change).contains("06/5/2024") || md(change).contains("ngày 06 tháng 5 năm 2024"));
    let minutes = records
        .iter()
        .find(|r| r.document == "bien-ban-xa-quai-to")
        .expect("minutes");
    assert!(md(minutes).contains("xã Quài Tở"));
    assert_eq!(minutes.date, "2024-04-26");
    // Each document is dated by its command's issued_on, else the day its event happened.
    let date = |d: &str| {
        records
            .iter()
            .find(|r| r.document == d)
            .map(|r| r.date.as_str())
            .expect("document")
    };
    assert_eq!(date("ke-hoach"), "2024-03-21");
    assert_eq!(date("giay-moi-hop-doan"), "2024-03-25");
    assert_eq!(date("cong-van-don-doc-xa-ta-ma"), "2024-04-17");
    assert_eq!(date("thong-bao-dieu-chinh-lich-xa-quai-cang"), "2024-04-18");
    assert_eq!(date("bao-cao-ket-qua"), "2024-05-25");
    assert_eq!(date("cong-van-don-doc-kien-nghi-kn-1"), "2025-01-02");
    for r in &records {
        let day = chrono::NaiveDate::parse_from_str(&r.date, "%Y-%m-%d").expect("date");
        let long = giamsat_engine::vn::date_long(day);
        assert!(md(r).contains(&long), "{} is dated {long}", r.document);
    }

    // Numbering after signature: the issuer's series for 2024, from 01.
    let first = register::assign_number(
        &store,
        "tg2024",
        "thong-bao-lich",
        SEC,
        at("2024-03-25T10:00:00+07:00"),
    )
    .await
    .expect("number");
    assert_eq!((first.number, first.symbol.as_str()), (1, "01/TB-ĐGS"));
    let again = register::assign_number(
        &store,
        "tg2024",
        "thong-bao-lich",
        SEC,
        at("2024-03-26T10:00:00+07:00"),
    )
    .await
    .expect("again");
    assert_eq!(
        again, first,
        "numbering the same version again keeps its number"
    );
    let second = register::assign_number(
        &store,
        "tg2024",
        "cong-van-don-doc-xa-ta-ma",
        SEC,
        at("2024-04-17T10:00:00+07:00"),
    )
    .await
    .expect("number");
    assert_eq!(second.symbol, "02/ĐGS", "a công văn has no type code");
    let unknown = register::assign_number(
        &store,
        "tg2024",
        "nope",
        SEC,
        at("2024-04-17T10:00:00+07:00"),
    )
    .await
    .expect_err("unknown");
    assert!(unknown.to_string().contains("thong-bao-lich"), "{unknown}");
    runner.run_once().await.expect("run");
    let records = read_records(&store, "tg2024").await.expect("records");
    let numbered = records
        .iter()
        .find(|r| r.document == "thong-bao-lich" && r.number == Some(1))
        .expect("numbered notice");
    assert!(md(numbered).contains("Số: 01/TB-ĐGS"));
    assert!(
        numbered.files[0].path.contains("so-01-TB-DGS.v1"),
        "{}",
        numbered.files[0].path
    );
    let listed = register::list(&store, "tg2024").await.expect("list");
    let notice_row = listed
        .iter()
        .find(|v| v.document == "thong-bao-lich")
        .expect("row");
    assert_eq!(notice_row.symbol.as_deref(), Some("01/TB-ĐGS"));
    assert_eq!(notice_row.draft_files.len(), 3, "the draft files are kept");
    let book = register::register(&store, 2024).await.expect("register");
    let symbols: Vec<&str> = book.iter().map(|e| e.symbol.as_str()).collect();
    assert_eq!(symbols, ["01/TB-ĐGS", "02/ĐGS"]);
    assert!(
        !book[0].excerpt.is_empty() && !book[0].signer.is_empty(),
        "{:?}",
        book[0]
    );
    assert!(
        register::register(&store, 2025)
            .await
            .expect("2025")
            .is_empty()
    );

    // Delivered again from the start: nothing new is recorded, nothing parked.
    let count = generated_events(&store, "tg2024").await;
    store
        .save_checkpoint(&giamsat_exporter::checkpoint_name("documents"), 0)
        .await
        .expect("rewind");
    runner.run_once().await.expect("replay");
    assert_eq!(generated_events(&store, "tg2024").await, count);
    assert_eq!(parked(&store, "documents").await.expect("parked"), vec![]);

    // A correction is a new version; the issued version stays as it was.
    let issued_path = out.join(&numbered.files[0].path);
    let issued = std::fs::read(&issued_path).expect("issued");
    let v = register::request_correction(
        &store,
        "tg2024",
        "thong-bao-lich",
        "Sửa địa điểm họp",
        SEC,
        at("2024-03-27T08:00:00+07:00"),
    )
    .await
    .expect("correct");
    assert_eq!(v, 2);
    runner.run_once().await.expect("run");
    let records = read_records(&store, "tg2024").await.expect("records");
    let v2 = records
        .iter()
        .find(|r| r.document == "thong-bao-lich" && r.version == 2)
        .expect("v2");
    assert_eq!(v2.number, None);
    assert!(v2.files[0].path.contains("du-thao.v2"));
    assert_eq!(std::fs::read(&issued_path).expect("issued"), issued);
    let third = register::assign_number(
        &store,
        "tg2024",
        "thong-bao-lich",
        SEC,
        at("2024-03-28T08:00:00+07:00"),
    )
    .await
    .expect("number v2");
    assert_eq!((third.version, third.symbol.as_str()), (2, "03/TB-ĐGS"));

    // An issued file changed on disk is never overwritten: the delivery is parked, named.
    std::fs::write(&issued_path, b"changed").expect("tamper");
    store
        .save_checkpoint(&giamsat_exporter::checkpoint_name("documents"), 0)
        .await
        .expect("rewind");
    runner.run_once().await.expect("replay");
    let parked = parked(&store, "documents").await.expect("parked");
    assert!(
        parked
            .iter()
            .any(|p| p.error.contains("never overwritten") && p.permanent),
        "{parked:?}"
    );
    assert_eq!(std::fs::read(&issued_path).expect("kept"), b"changed");
}

#[tokio::test]
async fn case_data_is_printed_not_run_in_every_format() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("documents");
    let store = sqlite(dir.path()).await;
    let mut data = seed();
    data["units"][8]["name"] = json!("xã <script>alert(1)</script> & *Ta Ma*");
    start_with_notice(&store, "x", data).await;
    act(
        &store,
        "x",
        SEC,
        "send_reminder",
        json!({"unit": "xa-ta-ma"}),
        "2024-04-17T08:00:00+07:00",
    )
    .await;
    exporter(&store, &out).run_once().await.expect("run");
    let records = read_records(&store, "x").await.expect("records");
    let reminder = records
        .iter()
        .find(|r| r.document == "cong-van-don-doc-xa-ta-ma")
        .expect("reminder");
    let file = |ext: &str| {
        let f = reminder
            .files
            .iter()
            .find(|f| f.path.ends_with(ext))
            .expect("file");
        std::fs::read(out.join(&f.path)).expect("read")
    };
    let html = String::from_utf8(file(".html")).expect("utf-8");
    assert!(
        html.contains("xã &lt;script&gt;alert(1)&lt;/script&gt; &amp; *Ta Ma*"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    let md = String::from_utf8(file(".md")).expect("utf-8");
    assert!(
        md.contains("xã \\<script\\>alert(1)\\</script\\> & \\*Ta Ma\\*"),
        "{md}"
    );
    let docx = file(".docx");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(docx)).expect("zip");
    let mut xml = String::new();
    std::io::Read::read_to_string(
        &mut archive.by_name("word/document.xml").expect("document.xml"),
        &mut xml,
    )
    .expect("xml");
    assert!(
        xml.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; *Ta Ma*"),
        "{xml}"
    );
}

/// Ratcliff/Obershelp similarity over words (Python's difflib.SequenceMatcher.ratio without
/// the junk heuristic): 2 × matched words / total words.
fn ratio(a: &[&str], b: &[&str]) -> f64 {
    use std::collections::HashMap;
    let mut index: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, w) in b.iter().enumerate() {
        index.entry(w).or_default().push(j);
    }
    let longest = |alo: usize, ahi: usize, blo: usize, bhi: usize| {
        let (mut besti, mut bestj, mut bestk) = (alo, blo, 0);
        let mut lengths: HashMap<usize, usize> = HashMap::new();
        for (i, word) in a.iter().enumerate().take(ahi).skip(alo) {
            let mut next: HashMap<usize, usize> = HashMap::new();
            for &j in index.get(word).map(Vec::as_slice).unwrap_or(&[]) {
                if j < blo {
                    continue;
                }
                if j >= bhi {
                    break;
                }
                let k = if j > 0 {
                    lengths.get(&(j - 1)).copied().unwrap_or(0)
                } else {
                    0
                } + 1;
                next.insert(j, k);
                if k > bestk {
                    (besti, bestj, bestk) = (i + 1 - k, j + 1 - k, k);
                }
            }
            lengths = next;
        }
        (besti, bestj, bestk)
    };
    let mut matched = 0;
    let mut queue = vec![(0, a.len(), 0, b.len())];
    while let Some((alo, ahi, blo, bhi)) = queue.pop() {
        let (i, j, k) = longest(alo, ahi, blo, bhi);
        if k > 0 {
            matched += k;
            if alo < i && blo < j {
                queue.push((alo, i, blo, j));
            }
            if i + k < ahi && j + k < bhi {
                queue.push((i + k, ahi, j + k, bhi));
            }
        }
    }
    2.0 * matched as f64 / (a.len() + b.len()).max(1) as f64
}

/// Normalises Markdown for comparison: NFC, no emphasis, heading marks, list markers, escapes,
/// table pipes and separator rows, or `<b>` tags; whitespace collapsed.
fn normalise(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let text: String = text.nfc().collect();
    let mut out = String::new();
    for line in text.lines() {
        let mut l = line.replace("<b>", "").replace("</b>", "");
        l = l.replace(['\\', '*'], "").replace(['|', '\t'], " ");
        let t = l.trim_start().trim_start_matches('#').trim_start();
        let t = t
            .strip_prefix("- + ")
            .or_else(|| t.strip_prefix("- "))
            .or_else(|| t.strip_prefix("+ "))
            .unwrap_or(t);
        if t.chars().all(|c| c == '-' || c == ':' || c == ' ') {
            continue;
        }
        out.push_str(t);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn the_rendered_notice_reproduces_the_seed() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("documents");
    let store = sqlite(dir.path()).await;
    start_with_notice(&store, "tg2024", seed()).await;
    exporter(&store, &out).run_once().await.expect("run");
    let records = read_records(&store, "tg2024").await.expect("records");
    let notice = records
        .iter()
        .find(|r| r.document == "thong-bao-lich")
        .expect("notice");
    let f = notice
        .files
        .iter()
        .find(|f| f.path.ends_with(".md"))
        .expect("md");
    let rendered = normalise(&std::fs::read_to_string(out.join(&f.path)).expect("md"));
    let seed_path = root().join("../shared/seed/000_c5707c52b10b40ea.txt");
    let Ok(seed) = std::fs::read_to_string(&seed_path) else {
        assert!(
            std::env::var("CI").is_err(),
            "{} is missing",
            seed_path.display()
        );
        eprintln!("skipped: {} is missing", seed_path.display());
        return;
    };
    let seed = normalise(&seed);
    let a: Vec<&str> = rendered.split_whitespace().collect();
    let b: Vec<&str> = seed.split_whitespace().collect();
    let figure = ratio(&a, &b);
    println!(
        "fidelity of the rendered notice, outlines and appendices to the seed: {figure:.4} ({} words rendered, {} in the seed)",
        a.len(),
        b.len()
    );
    assert!(figure >= 0.95, "similarity {figure:.4} is below 0.95");
}

#[test]
fn the_similarity_measure_is_difflibs() {
    // Python: difflib.SequenceMatcher(None, "a b c d".split(), "a x c d".split()).ratio() == 0.75
    assert!((ratio(&["a", "b", "c", "d"], &["a", "x", "c", "d"]) - 0.75).abs() < 1e-9);
    assert!((ratio(&["a", "b"], &["a", "b"]) - 1.0).abs() < 1e-9);
    assert_eq!(ratio(&["a"], &["b"]), 0.0);
    assert_eq!(
        normalise("### **1. Thành phần**\n| a | b |\n|---|---|\n- + Tổng số\n"),
        "1. Thành phần\na   b  \nTổng số\n"
    );
}

#[tokio::test]
async fn numbers_are_unique_under_concurrency_and_secret_documents_have_their_own_series() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("documents");
    let store = sqlite(dir.path()).await;
    testkit::run_seed_case(&store, &workflow_with_secret_minutes(), "tg2024", seed()).await;
    exporter(&store, &out).run_once().await.expect("run");
    let open = [
        "ke-hoach",
        "thong-bao-lich",
        "giay-moi-hop-doan",
        "cong-van-don-doc-xa-ta-ma",
        "thong-bao-dieu-chinh-lich-xa-quai-cang",
        "bao-cao-ket-qua",
    ];
    // Six secretaries number six documents at once: six different numbers, 01 to 06.
    let tasks: Vec<_> = open
        .iter()
        .map(|d| {
            let store = store.clone();
            let d = (*d).to_owned();
            tokio::spawn(async move {
                register::assign_number(&store, "tg2024", &d, SEC, at("2024-06-01T08:00:00+07:00"))
                    .await
                    .expect("number")
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.expect("task").number);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    // The secret series starts at 01 on its own.
    let secret = register::assign_number(
        &store,
        "tg2024",
        "bien-ban-xa-quai-to",
        SEC,
        at("2024-06-01T09:00:00+07:00"),
    )
    .await
    .expect("secret");
    assert!(secret.secret);
    assert_eq!(secret.symbol, "01/BB-ĐGS");
    let book = register::register(&store, 2024).await.expect("register");
    assert_eq!(book.len(), 7);
    assert_eq!(book.last().map(|e| (e.secret, e.number)), Some((true, 1)));
}
