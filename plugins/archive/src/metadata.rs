//! The record metadata of a package (`data/metadata.json`, `data/metadata.xml`): the case file
//! (hồ sơ) and each document in it, with the standard English keys of Nghị định 30/2020 Phụ lục VI
//! and Thông tư 02/2019/TT-BNV (`FileCode`, `Title`, `Maintenance`, ...; per document `DocOrdinal`,
//! `CodeNumber`, `CodeNotation`, ...) and their Vietnamese labels.
//!
//! Page counts: the page count of a document is known only when the file says it. A DOCX saved by
//! a word processor records it in `docProps/app.xml` (`<Pages>`); the DOCX the documents exporter
//! writes has no layout engine behind it and records none, so for those only a lower bound is
//! derived: the explicit page breaks of the DOCX body (or of the HTML when there is no DOCX) plus
//! one. `PageAmount`/`PageTotal` are therefore given only when every count is known, and
//! `PageAmountMinimum`/`PageTotalMinimum` always; Markdown is never used (it drops page breaks).

use std::collections::BTreeMap;
use std::io::Read as _;

use serde::{Deserialize, Serialize};

/// The `Schema` value of the metadata files.
pub const METADATA_SCHEMA: &str = "giamsat-archive-metadata/1";
/// The XML namespace of `metadata.xml`.
pub const XML_NAMESPACE: &str = "urn:giamsat:archive:metadata:1";

/// The Vietnamese label of each key (Nghị định 30/2020 Phụ lục VI wording where it has one).
pub const LABELS: &[(&str, &str)] = &[
    ("File", "Hồ sơ"),
    ("FileCode", "Mã hồ sơ"),
    ("Title", "Tiêu đề hồ sơ"),
    ("Maintenance", "Thời hạn bảo quản"),
    ("Rights", "Chế độ sử dụng"),
    ("Creator", "Người lập hồ sơ"),
    ("OrganName", "Tên cơ quan, tổ chức ban hành văn bản"),
    ("Language", "Ngôn ngữ"),
    ("StartDate", "Thời gian bắt đầu"),
    ("EndDate", "Thời gian kết thúc"),
    ("DocTotal", "Tổng số văn bản trong hồ sơ"),
    ("PageTotal", "Tổng số trang của hồ sơ"),
    ("PageTotalMinimum", "Tổng số trang tối thiểu của hồ sơ"),
    ("PageCountMethod", "Cách xác định số trang"),
    ("Case", "Cuộc giám sát"),
    ("CaseId", "Mã cuộc giám sát trong hệ thống"),
    ("Workflow", "Quy trình"),
    ("DefinitionHash", "Mã băm định nghĩa quy trình"),
    ("Stage", "Giai đoạn"),
    ("ArchivedOn", "Ngày nộp lưu"),
    ("CaseStream", "Luồng sự kiện của cuộc giám sát"),
    ("EventCount", "Số sự kiện"),
    ("ChainHead", "Mã băm sự kiện cuối"),
    ("ChainHeadPosition", "Vị trí sự kiện cuối trong nhật ký"),
    ("DocumentsStream", "Luồng sự kiện văn bản"),
    ("DocumentEventCount", "Số sự kiện văn bản"),
    ("Documents", "Danh sách văn bản"),
    ("Document", "Văn bản"),
    ("DocOrdinal", "Số thứ tự văn bản trong hồ sơ"),
    ("DocumentId", "Mã văn bản trong hồ sơ"),
    ("Kind", "Loại văn bản theo quy trình"),
    ("Label", "Tên văn bản theo quy trình"),
    ("Version", "Phiên bản"),
    ("Status", "Tình trạng (issued: đã cấp số; draft: dự thảo)"),
    ("TypeName", "Tên loại văn bản"),
    ("CodeNumber", "Số của văn bản"),
    ("CodeNotation", "Ký hiệu của văn bản"),
    ("IssuedDate", "Ngày, tháng, năm văn bản"),
    ("Subject", "Trích yếu nội dung"),
    ("PageAmount", "Số trang của văn bản"),
    ("PageAmountMinimum", "Số trang tối thiểu của văn bản"),
    ("SignerInfo", "Người ký"),
    ("Position", "Chức vụ"),
    ("FullName", "Họ và tên"),
    ("To", "Nơi nhận"),
    ("Secret", "Văn bản mật"),
    ("Files", "Tệp tin"),
    ("DigitalFile", "Tệp tin"),
];

/// The Vietnamese label of a key.
pub fn label(key: &str) -> Option<&'static str> {
    LABELS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// How page counts are derived, for the people who read the metadata.
pub const PAGE_COUNT_METHOD: &str = "Số trang lấy từ docProps/app.xml của tệp DOCX khi phần mềm \
soạn thảo đã ghi; nếu không có, chỉ xác định được số trang tối thiểu (số dấu ngắt trang trong tệp \
DOCX, hoặc HTML khi không có DOCX, cộng 1).";

/// Both metadata files' content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(rename = "Schema")]
    pub schema: String,
    #[serde(rename = "File")]
    pub file: FileMetadata,
    #[serde(rename = "Case")]
    pub case: CaseMetadata,
    #[serde(rename = "Documents")]
    pub documents: Vec<DocumentMetadata>,
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
}

/// The case file (hồ sơ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileMetadata {
    /// The `file_code` of the archive command; `None` for a case not archived yet.
    pub file_code: Option<String>,
    pub title: String,
    /// From configuration (`retention`).
    pub maintenance: String,
    /// From configuration (`access`).
    pub rights: String,
    /// The actor who archived the case.
    pub creator: Option<String>,
    /// The issuing body (or the configured source organization).
    pub organ_name: Option<String>,
    pub language: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub doc_total: usize,
    /// Known only when every document's page count is.
    pub page_total: Option<u32>,
    pub page_total_minimum: u32,
    pub page_count_method: String,
}

/// Where the case's events stand in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaseMetadata {
    pub case_id: String,
    pub workflow: String,
    pub definition_hash: String,
    pub stage: String,
    pub archived_on: Option<String>,
    pub case_stream: String,
    pub event_count: usize,
    pub chain_head: String,
    pub chain_head_position: u64,
    pub documents_stream: String,
    pub document_event_count: usize,
}

/// One document of the file: one version of a document of the case, with the files of its draft
/// and, once numbered, of its issued rendering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DocumentMetadata {
    pub doc_ordinal: usize,
    pub file_code: Option<String>,
    pub document_id: String,
    pub kind: String,
    pub label: String,
    pub version: u32,
    /// `issued` (numbered) or `draft`.
    pub status: String,
    pub type_name: Option<String>,
    /// The number as printed (`01`).
    pub code_number: Option<String>,
    /// The symbol after the number (`TB-ĐGS`).
    pub code_notation: Option<String>,
    pub issued_date: String,
    pub organ_name: String,
    pub subject: Option<String>,
    pub language: String,
    pub page_amount: Option<u32>,
    pub page_amount_minimum: Option<u32>,
    pub signer_info: SignerInfo,
    pub to: Vec<String>,
    pub secret: bool,
    pub files: Vec<DigitalFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignerInfo {
    pub position: Option<String>,
    pub full_name: Option<String>,
}

/// A file of a document in the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DigitalFile {
    /// Relative to the bag's folder (`data/documents/...`).
    pub path: String,
    pub format: String,
    /// `issued` or `draft`: which rendering the file is.
    pub state: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A page count as far as it can be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// Recorded by the application that laid the document out.
    Exact(u32),
    /// At least this many (explicit page breaks + 1).
    AtLeast(u32),
    Unknown,
}

impl Pages {
    pub fn exact(self) -> Option<u32> {
        match self {
            Pages::Exact(n) => Some(n),
            _ => None,
        }
    }

    pub fn minimum(self) -> Option<u32> {
        match self {
            Pages::Exact(n) | Pages::AtLeast(n) => Some(n),
            Pages::Unknown => None,
        }
    }
}

/// The page count of a DOCX: `<Pages>` of `docProps/app.xml` when present, else the explicit
/// page breaks of `word/document.xml` + 1 as a minimum; `Unknown` if the file cannot be read.
pub fn docx_pages(bytes: &[u8]) -> Pages {
    let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return Pages::Unknown;
    };
    let mut part = |name: &str| -> Option<String> {
        let mut file = zip.by_name(name).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    };
    if let Some(app) = part("docProps/app.xml")
        && let Some(n) = element_text(&app, "Pages").and_then(|t| t.trim().parse::<u32>().ok())
        && n > 0
    {
        return Pages::Exact(n);
    }
    let Some(body) = part("word/document.xml") else {
        return Pages::Unknown;
    };
    let breaks = body.matches("w:type=\"page\"").count()
        + body.matches("<w:pageBreakBefore/>").count()
        + body.matches("<w:pageBreakBefore w:val=\"true\"/>").count()
        + body.matches("<w:pageBreakBefore w:val=\"1\"/>").count();
    Pages::AtLeast(u32::try_from(breaks + 1).unwrap_or(u32::MAX))
}

/// The minimum page count of the documents exporter's HTML: its page-break blocks + 1.
pub fn html_pages(bytes: &[u8]) -> Pages {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let breaks = text.matches("<div class=\"page-break\">").count();
            Pages::AtLeast(u32::try_from(breaks + 1).unwrap_or(u32::MAX))
        }
        Err(_) => Pages::Unknown,
    }
}

/// The text of the first `<name>` element (with or without a namespace prefix).
fn element_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if local == name {
            let body = &rest[end + 1..];
            let close = body.find("</")?;
            return Some(&body[..close]);
        }
    }
    None
}

impl Metadata {
    /// `metadata.json`: pretty-printed, with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    }

    /// `metadata.xml`: the same content, each element with its Vietnamese `label`.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut x = Xml::default();
        x.out
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.open(
            "RecordMetadata",
            &[
                ("xmlns", XML_NAMESPACE),
                ("xml:lang", "vi"),
                ("schema", &self.schema),
            ],
        );
        let f = &self.file;
        x.labelled_open("File");
        x.opt("FileCode", f.file_code.as_deref());
        x.leaf("Title", &f.title);
        x.leaf("Maintenance", &f.maintenance);
        x.leaf("Rights", &f.rights);
        x.opt("Creator", f.creator.as_deref());
        x.opt("OrganName", f.organ_name.as_deref());
        x.leaf("Language", &f.language);
        x.opt("StartDate", f.start_date.as_deref());
        x.opt("EndDate", f.end_date.as_deref());
        x.leaf("DocTotal", &f.doc_total.to_string());
        x.opt("PageTotal", f.page_total.map(|n| n.to_string()).as_deref());
        x.leaf("PageTotalMinimum", &f.page_total_minimum.to_string());
        x.leaf("PageCountMethod", &f.page_count_method);
        x.close("File");
        let c = &self.case;
        x.labelled_open("Case");
        x.leaf("CaseId", &c.case_id);
        x.leaf("Workflow", &c.workflow);
        x.leaf("DefinitionHash", &c.definition_hash);
        x.leaf("Stage", &c.stage);
        x.opt("ArchivedOn", c.archived_on.as_deref());
        x.leaf("CaseStream", &c.case_stream);
        x.leaf("EventCount", &c.event_count.to_string());
        x.leaf("ChainHead", &c.chain_head);
        x.leaf("ChainHeadPosition", &c.chain_head_position.to_string());
        x.leaf("DocumentsStream", &c.documents_stream);
        x.leaf("DocumentEventCount", &c.document_event_count.to_string());
        x.close("Case");
        x.labelled_open("Documents");
        for d in &self.documents {
            x.labelled_open("Document");
            x.leaf("DocOrdinal", &d.doc_ordinal.to_string());
            x.opt("FileCode", d.file_code.as_deref());
            x.leaf("DocumentId", &d.document_id);
            x.leaf("Kind", &d.kind);
            x.leaf("Label", &d.label);
            x.leaf("Version", &d.version.to_string());
            x.leaf("Status", &d.status);
            x.opt("TypeName", d.type_name.as_deref());
            x.opt("CodeNumber", d.code_number.as_deref());
            x.opt("CodeNotation", d.code_notation.as_deref());
            x.leaf("IssuedDate", &d.issued_date);
            x.leaf("OrganName", &d.organ_name);
            x.opt("Subject", d.subject.as_deref());
            x.leaf("Language", &d.language);
            x.opt(
                "PageAmount",
                d.page_amount.map(|n| n.to_string()).as_deref(),
            );
            x.opt(
                "PageAmountMinimum",
                d.page_amount_minimum.map(|n| n.to_string()).as_deref(),
            );
            x.labelled_open("SignerInfo");
            x.opt("Position", d.signer_info.position.as_deref());
            x.opt("FullName", d.signer_info.full_name.as_deref());
            x.close("SignerInfo");
            x.labelled_open("To");
            for r in &d.to {
                x.leaf("Recipient", r);
            }
            x.close("To");
            x.leaf("Secret", if d.secret { "true" } else { "false" });
            x.labelled_open("Files");
            for file in &d.files {
                let bytes = file.bytes.to_string();
                x.empty(
                    "DigitalFile",
                    &[
                        ("path", &file.path),
                        ("format", &file.format),
                        ("state", &file.state),
                        ("sha256", &file.sha256),
                        ("bytes", &bytes),
                    ],
                );
            }
            x.close("Files");
            x.close("Document");
        }
        x.close("Documents");
        x.close("RecordMetadata");
        x.out.into_bytes()
    }
}

/// A tiny indenting XML writer; every text and attribute value goes through [`escape`].
#[derive(Default)]
struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape(v, true));
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn labelled_open(&mut self, name: &str) {
        match label(name) {
            Some(l) => self.open(name, &[("label", l)]),
            None => self.open(name, &[]),
        }
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    fn leaf(&mut self, name: &str, text: &str) {
        match label(name) {
            Some(l) => self.start_tag(name, &[("label", l)]),
            None => self.start_tag(name, &[]),
        }
        self.out.push('>');
        self.out.push_str(&escape(text, false));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// A leaf when there is a value; nothing otherwise.
    fn opt(&mut self, name: &str, text: Option<&str>) {
        if let Some(t) = text {
            self.leaf(name, t);
        }
    }
}

/// Escapes text for XML 1.0: `&`, `<`, `>` (and in attributes `"`, `'`, tab and line breaks, which
/// attribute normalization would otherwise turn into spaces). Characters XML 1.0 cannot carry at
/// all (C0 controls other than tab, LF, CR; U+FFFE, U+FFFF) become U+FFFD.
pub fn escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization as _;

    #[test]
    fn labels_are_nfc_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for (key, text) in LABELS {
            assert!(seen.insert(*key), "{key} twice");
            assert_eq!(text.nfc().collect::<String>(), *text, "{key}");
        }
        assert_eq!(label("FileCode"), Some("Mã hồ sơ"));
        assert_eq!(
            PAGE_COUNT_METHOD.nfc().collect::<String>(),
            PAGE_COUNT_METHOD
        );
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>", false),
            "a&lt;b &amp; \"c\" 'd'&gt;"
        );
        assert_eq!(
            escape("a<b & \"c\" 'd'>\n", true),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;"
        );
        assert_eq!(
            escape("x\u{1}y\u{FFFF}\r", false),
            "x\u{FFFD}y\u{FFFD}&#13;"
        );
        assert_eq!(escape("Hội đồng", false), "Hội đồng");
    }

    #[test]
    fn app_xml_pages_and_html_breaks() {
        let app = "<?xml version=\"1.0\"?><Properties xmlns=\"x\"><Pages>7</Pages></Properties>";
        assert_eq!(element_text(app, "Pages"), Some("7"));
        assert_eq!(element_text("<ep:Pages>3</ep:Pages>", "Pages"), Some("3"));
        assert_eq!(element_text("<Properties/>", "Pages"), None);
        let html =
            "<p>a</p><div class=\"page-break\"></div><p>b</p><div class=\"page-break\"></div>";
        assert_eq!(html_pages(html.as_bytes()), Pages::AtLeast(3));
        assert_eq!(docx_pages(b"not a zip"), Pages::Unknown);
    }
}
