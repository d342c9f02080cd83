//! The DOCX writer on a document shaped like the workflow's: read back with docx-rs, the XML
//! parts inspected as text, two renders compared byte for byte, and LibreOffice's PDF conversion
//! when `soffice` is installed.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::Command;

use docx_rs::{DocumentChild, Paragraph, TableCellContent, TableChild, TableRowChild};
use giamsat_documents::docx::{DocxMeta, to_docx};
use giamsat_documents::markup::{Document, escape, parse};
use serde_json::{Value, json};

const DANGEROUS: &str = "<script>alert(1)</script> & Co";

fn document() -> Document {
    let markup = format!(
        "::: layout\n::: row\n::: cell\nHĐND HUYỆN TUẦN GIÁO  \n**ĐOÀN GIÁM SÁT**\n:::\n\
         ::: cell\n**CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM**  \n**Độc lập - Tự do - Hạnh phúc**\n:::\n\
         :::\n:::\n\n\
         ::: center\n# KẾ HOẠCH\n\nGiám sát việc giải quyết thủ tục hành chính\n:::\n\n\
         # 1. Mục đích, yêu cầu\n\n\
         Thực hiện Nghị quyết số 50/NQ-HĐND, Đoàn giám sát *ban hành* kế hoạch.\n\n\
         - Đánh giá đúng thực trạng;\n+ Tổng số hồ sơ;\n1. Một\n\n\
         Đơn vị: {}\n\n\
         \\newpage\n\n\
         | STT | Nội dung | Năm 2022 | < | < | Ghi chú |\n\
         | ^ | ^ | Tổng số | Số giải quyết đúng hạn | Tỷ lệ | ^ |\n\
         |:--:|------------|---|---|---|---|\n\
         | 1 | Hồ sơ TTHC tiếp nhận được giải quyết đúng hạn | 120 | 118 | 98,3% | |\n\n\
         ::: layout\n::: row\n::: cell recipients\n*Nơi nhận:*\n\n- TT HĐND huyện;\n- Lưu: VT.\n:::\n\
         ::: cell signature\nTM. ĐOÀN GIÁM SÁT  \nTRƯỞNG ĐOÀN\n:::\n:::\n:::\n",
        escape(DANGEROUS)
    );
    parse(&markup).expect("the markup parses")
}

fn meta() -> DocxMeta {
    DocxMeta {
        title: "Kế hoạch giám sát".to_owned(),
        subject: "Giải quyết thủ tục hành chính <2022>".to_owned(),
        creator: "Đoàn giám sát HĐND huyện Tuần Giáo".to_owned(),
    }
}

fn part(bytes: &[u8], name: &str) -> String {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip archive");
    let mut file = archive.by_name(name).expect("the part exists");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("UTF-8 XML");
    text
}

/// The text of every paragraph, in order, descending into table cells.
fn texts(children: &[DocumentChild]) -> Vec<String> {
    fn paragraph(p: &Paragraph, out: &mut Vec<String>) {
        out.push(p.raw_text());
    }
    fn table(t: &docx_rs::Table, out: &mut Vec<String>) {
        for TableChild::TableRow(row) in &t.rows {
            for TableRowChild::TableCell(cell) in &row.cells {
                for content in &cell.children {
                    match content {
                        TableCellContent::Paragraph(p) => paragraph(p, out),
                        TableCellContent::Table(t) => table(t, out),
                        _ => {}
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for child in children {
        match child {
            DocumentChild::Paragraph(p) => paragraph(p, &mut out),
            DocumentChild::Table(t) => table(t, &mut out),
            _ => {}
        }
    }
    out
}

#[test]
fn the_docx_reads_back_with_its_text_tables_and_page_setup() {
    let bytes = to_docx(&document(), &meta()).expect("the DOCX renders");
    let docx = docx_rs::read_docx(&bytes).expect("docx-rs reads the file back");

    let texts = texts(&docx.document.children);
    for expected in [
        "HĐND HUYỆN TUẦN GIÁO\nĐOÀN GIÁM SÁT",
        "CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc",
        "KẾ HOẠCH",
        "1. Mục đích, yêu cầu",
        "Thực hiện Nghị quyết số 50/NQ-HĐND, Đoàn giám sát ban hành kế hoạch.",
        "- Đánh giá đúng thực trạng;",
        "+ Tổng số hồ sơ;",
        "1. Một",
        "Đơn vị: <script>alert(1)</script> & Co",
        "Năm 2022",
        "Số giải quyết đúng hạn",
        "Hồ sơ TTHC tiếp nhận được giải quyết đúng hạn",
        "98,3%",
        "Nơi nhận:",
        "- Lưu: VT.",
        "TM. ĐOÀN GIÁM SÁT\nTRƯỞNG ĐOÀN",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "{expected:?} is not a paragraph of {texts:#?}"
        );
    }
    // The page break is a paragraph of its own.
    assert!(texts.iter().any(|t| t == "\n"), "{texts:#?}");

    let tables: Vec<&docx_rs::Table> = docx
        .document
        .children
        .iter()
        .filter_map(|c| match c {
            DocumentChild::Table(t) => Some(&**t),
            _ => None,
        })
        .collect();
    assert_eq!(
        tables.len(),
        3,
        "header layout, data table, signature layout"
    );
    let data = tables[1];
    assert_eq!(data.rows.len(), 3, "two header rows and one data row");
    assert_eq!(data.grid.len(), 6);
    assert_eq!(data.grid.iter().sum::<usize>(), 9354, "the text width");
    let cells: Vec<Vec<Value>> = data
        .rows
        .iter()
        .map(|TableChild::TableRow(row)| {
            row.cells
                .iter()
                .map(|TableRowChild::TableCell(cell)| {
                    serde_json::to_value(&cell.property).expect("cell property as JSON")
                })
                .collect()
        })
        .collect();
    // Row 1: STT, Nội dung and Ghi chú start vertical merges, Năm 2022 spans three columns.
    assert_eq!(cells[0].len(), 4);
    assert_eq!(cells[0][0]["verticalMerge"], json!("restart"));
    assert_eq!(cells[0][1]["verticalMerge"], json!("restart"));
    assert_eq!(cells[0][2]["gridSpan"], json!(3));
    assert_eq!(cells[0][3]["verticalMerge"], json!("restart"));
    // Row 2: the merges continue around the three sub-headers.
    assert_eq!(cells[1].len(), 6);
    assert_eq!(cells[1][0]["verticalMerge"], json!("continue"));
    assert_eq!(cells[1][1]["verticalMerge"], json!("continue"));
    assert_eq!(cells[1][2]["verticalMerge"], Value::Null);
    assert_eq!(cells[1][5]["verticalMerge"], json!("continue"));
    assert_eq!(cells[2].len(), 6);

    let section = &docx.document.section_property;
    let setup = serde_json::to_value(section).expect("section as JSON");
    assert_eq!(setup["pageSize"]["w"], json!(11906));
    assert_eq!(setup["pageSize"]["h"], json!(16838));
    let margin = &section.page_margin;
    assert_eq!(
        (margin.top, margin.bottom, margin.left, margin.right),
        (1134, 1134, 1701, 851)
    );
    assert!(section.title_pg, "the first page has its own header");

    let xml = part(&bytes, "word/document.xml");
    for expected in [
        r#"<w:gridSpan w:val="3" />"#,
        r#"<w:vMerge w:val="restart" />"#,
        r#"<w:vMerge w:val="continue" />"#,
        r#"<w:pgSz w:w="11906" w:h="16838" />"#,
        r#"w:left="1701""#,
        r#"<w:rFonts w:ascii="Times New Roman" w:hAnsi="Times New Roman" w:cs="Times New Roman" w:eastAsia="Times New Roman" />"#,
        "Đơn vị: &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co",
        r#"<w:br w:type="page" />"#,
        r#"<w:ind w:left="0" w:right="0" w:firstLine="720" />"#,
        r#"<w:jc w:val="both" />"#,
        r#"<w:titlePg />"#,
        r#"<w:headerReference w:type="first""#,
        // The Nơi nhận label is 12 pt, its items 11 pt; the table text 13 pt.
        r#"<w:sz w:val="24" />"#,
        r#"<w:sz w:val="22" />"#,
        r#"<w:sz w:val="26" />"#,
    ] {
        assert!(xml.contains(expected), "document.xml lacks {expected}");
    }
    assert!(!xml.contains("<script"), "case data stays text");
    // The layouts have no borders at all.
    assert!(xml.contains(r#"<w:insideV w:val="nil""#));

    let styles = part(&bytes, "word/styles.xml");
    assert!(styles.contains("Times New Roman") && styles.contains(r#"<w:sz w:val="28" />"#));
    let headers = [
        part(&bytes, "word/header1.xml"),
        part(&bytes, "word/header2.xml"),
    ];
    assert_eq!(
        headers
            .iter()
            .filter(|h| h.contains("<w:instrText>PAGE</w:instrText>"))
            .count(),
        1,
        "one header numbers the pages, the first-page one is empty"
    );
    let core = part(&bytes, "docProps/core.xml");
    assert!(
        core.contains("<dc:title>Kế hoạch giám sát</dc:title>"),
        "{core}"
    );
    assert!(core.contains("<dc:subject>Giải quyết thủ tục hành chính &lt;2022&gt;</dc:subject>"));
    assert!(core.contains("<dc:creator>Đoàn giám sát HĐND huyện Tuần Giáo</dc:creator>"));
}

#[test]
fn two_renders_are_byte_identical() {
    let doc = document();
    let first = to_docx(&doc, &meta()).expect("the DOCX renders");
    // Reading a file builds paragraphs too; it must not shift the next render's ids.
    docx_rs::read_docx(&first).expect("docx-rs reads the file back");
    let second = to_docx(&doc, &meta()).expect("the DOCX renders");
    assert!(first == second, "two renders of one document differ");
    let third = std::thread::spawn(move || to_docx(&doc, &meta()).expect("the DOCX renders"))
        .join()
        .expect("the render thread");
    assert!(first == third, "a render on another thread differs");
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[test]
fn libreoffice_converts_the_docx_to_pdf() {
    let Some(soffice) = on_path("soffice").or_else(|| on_path("libreoffice")) else {
        println!(
            "skipped: soffice (LibreOffice) is not on PATH, the PDF conversion was not checked"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("giamsat-docx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let input = dir.join("ke-hoach.docx");
    std::fs::write(
        &input,
        to_docx(&document(), &meta()).expect("the DOCX renders"),
    )
    .expect("the DOCX is written");
    // A profile of its own, so a running LibreOffice or a parallel test does not interfere.
    let profile = format!(
        "-env:UserInstallation=file://{}",
        dir.join("profile").display()
    );
    let output = Command::new(soffice)
        .arg(profile)
        .args(["--headless", "--convert-to", "pdf", "--outdir"])
        .arg(&dir)
        .arg(&input)
        .output()
        .expect("soffice runs");
    assert!(
        output.status.success(),
        "soffice failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pdf = std::fs::read(dir.join("ke-hoach.pdf")).expect("soffice wrote the PDF");
    assert!(
        pdf.starts_with(b"%PDF") && pdf.len() > 1000,
        "{} bytes",
        pdf.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
