//! DOCX of a document, laid out like [`crate::html`] (Nghị định 30/2020): A4, margins
//! 20/15/20/30 mm, Times New Roman 14 pt, borderless layout tables, bordered tables with merged
//! cells, the page number at the top from page 2 on. Built with docx-rs and zipped here with fixed
//! entry times and numbered paragraph ids, so the same document always gives the same bytes.

use std::io::{Cursor, Write};

use docx_rs::{
    AlignmentType, BorderType, BreakType, Docx, FieldCharType, Header, InstrPAGE, InstrText,
    LineSpacing, PageMargin, Paragraph, Run, RunFonts, SpecialIndentType, Table, TableBorder,
    TableBorderPosition, TableBorders, TableCell, TableCellMargins, TableLayoutType, TableRow,
    VMergeType, WidthType, XMLDocx,
};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

use crate::markup::{self, Align, Block, Document, Inline, Style};

/// The font of every run.
const FONT: &str = "Times New Roman";
/// A4 in twips.
const PAGE_WIDTH: u32 = 11906;
const PAGE_HEIGHT: u32 = 16838;
/// Margins in twips (1 mm = 56.7 twips): top and bottom 20 mm, left 30 mm, right 15 mm.
const MARGIN_TOP: i32 = 1134;
const MARGIN_BOTTOM: i32 = 1134;
const MARGIN_LEFT: i32 = 1701;
const MARGIN_RIGHT: i32 = 851;
/// Distance of the header (page number) from the top edge: 10 mm.
const HEADER_DISTANCE: i32 = 567;
/// The width between the margins, in twips.
const TEXT_WIDTH: usize = (PAGE_WIDTH as i32 - MARGIN_LEFT - MARGIN_RIGHT) as usize;
/// The default left plus right cell margin of Word (108 twips each side).
const CELL_PADDING: usize = 216;
/// First-line indent of body paragraphs: 1.27 cm.
const FIRST_LINE_INDENT: i32 = 720;
/// 6 pt, in twentieths of a point.
const SPACING_6PT: u32 = 120;
/// Font sizes in half-points.
/// The document header (Quốc hiệu, issuing body, number, place and date): 13 pt.
const HEADER_SIZE: usize = 26;
const BODY_SIZE: usize = 28;
const TABLE_SIZE: usize = 26;
const RECIPIENTS_LABEL_SIZE: usize = 24;
const RECIPIENTS_SIZE: usize = 22;
/// The mark of the gap paragraph after a table: 10 pt, about the HTML's 12 pt margin.
const GAP_SIZE: usize = 20;

/// The core properties (docProps/core.xml) of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocxMeta {
    pub title: String,
    pub subject: String,
    pub creator: String,
}

/// Writing the DOCX archive failed.
#[derive(Debug, thiserror::Error)]
pub enum DocxError {
    #[error("packing the DOCX archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing the DOCX archive: {0}")]
    Io(#[from] std::io::Error),
}

/// The DOCX file of a document; the same document and metadata always give the same bytes.
pub fn to_docx(doc: &Document, meta: &DocxMeta) -> Result<Vec<u8>, DocxError> {
    let mut writer = Writer { next_id: 0 };
    let mut children = Vec::new();
    writer.blocks(&doc.blocks, TEXT_WIDTH, &mut children);

    let page_number = writer.paragraph().align(AlignmentType::Center).add_run(
        base_run(BODY_SIZE)
            .add_field_char(FieldCharType::Begin, false)
            .add_instr_text(InstrText::PAGE(InstrPAGE::new()))
            .add_field_char(FieldCharType::Separate, false)
            .add_text("2")
            .add_field_char(FieldCharType::End, false),
    );
    // Nghị định 30/2020: no number on the first page.
    let first_page = writer.paragraph();

    let mut docx = Docx::new()
        .page_size(PAGE_WIDTH, PAGE_HEIGHT)
        .page_margin(
            PageMargin::new()
                .top(MARGIN_TOP)
                .bottom(MARGIN_BOTTOM)
                .left(MARGIN_LEFT)
                .right(MARGIN_RIGHT)
                .header(HEADER_DISTANCE)
                .footer(HEADER_DISTANCE)
                .gutter(0),
        )
        .default_fonts(fonts())
        .default_size(BODY_SIZE)
        .header(Header::new().add_paragraph(page_number))
        .first_header(Header::new().add_paragraph(first_page))
        .title_pg();
    for child in children {
        docx = match child {
            Child::Paragraph(p) => docx.add_paragraph(*p),
            Child::Table(t) => docx.add_table(*t),
        };
    }
    let mut xml = docx.build();
    xml.doc_props.core = core_properties(meta).into_bytes();
    pack(xml)
}

/// A block-level element of the body or of a table cell.
enum Child {
    Paragraph(Box<Paragraph>),
    Table(Box<Table>),
}

/// Numbers the paragraphs itself: docx-rs would take ids from a thread-local counter.
struct Writer {
    next_id: u32,
}

/// How the runs of a paragraph look beyond their own bold and italic.
#[derive(Clone, Copy)]
struct RunLook {
    size: usize,
    bold: bool,
    italic: bool,
}

fn fonts() -> RunFonts {
    RunFonts::new()
        .ascii(FONT)
        .hi_ansi(FONT)
        .east_asia(FONT)
        .cs(FONT)
}

fn base_run(size: usize) -> Run {
    Run::new().fonts(fonts()).size(size)
}

fn styled_run(look: RunLook, bold: bool, italic: bool) -> Run {
    let mut run = base_run(look.size);
    if bold || look.bold {
        run = run.bold();
    }
    if italic || look.italic {
        run = run.italic();
    }
    run
}

/// Drops the characters XML 1.0 does not allow in a document (control characters).
fn xml_text(text: &str) -> String {
    text.chars()
        .filter(|c| {
            matches!(c, '\t' | '\n' | '\r') || (*c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
        })
        .collect()
}

fn alignment(align: Align) -> AlignmentType {
    match align {
        Align::Justify => AlignmentType::Both,
        Align::Left => AlignmentType::Left,
        Align::Center => AlignmentType::Center,
        Align::Right => AlignmentType::Right,
    }
}

/// Whether a recipients paragraph is the "Nơi nhận:" label.
fn is_recipients_label(content: &[Inline]) -> bool {
    content
        .iter()
        .any(|i| matches!(i, Inline::Text { text, .. } if text.contains("Nơi nhận")))
}

impl Writer {
    fn paragraph(&mut self) -> Paragraph {
        self.next_id += 1;
        Paragraph::new().id(format!("{:08X}", self.next_id))
    }

    /// A paragraph formatted for its style: alignment, first-line indent, spacing.
    fn styled_paragraph(&mut self, style: &Style, heading: bool) -> Paragraph {
        let plain = style.in_cell || style.recipients || style.signature;
        let (before, after) = match (plain, heading) {
            (true, _) => (0, 0),
            (false, true) => (SPACING_6PT, SPACING_6PT),
            (false, false) => (0, SPACING_6PT),
        };
        let mut p = self
            .paragraph()
            .align(alignment(style.align))
            .line_spacing(LineSpacing::new().before(before).after(after));
        if !plain && style.align == Align::Justify {
            p = p.indent(
                None,
                Some(SpecialIndentType::FirstLine(FIRST_LINE_INDENT)),
                None,
                None,
            );
        }
        p
    }

    fn blocks(&mut self, list: &[Block], width: usize, out: &mut Vec<Child>) {
        for block in list {
            match block {
                Block::Heading {
                    level,
                    content,
                    style,
                } => {
                    let look = RunLook {
                        size: BODY_SIZE,
                        bold: true,
                        italic: false,
                    };
                    let p = self
                        .styled_paragraph(style, true)
                        .keep_next(true)
                        .outline_lvl(usize::from(level.saturating_sub(1)).min(8));
                    out.push(Child::Paragraph(Box::new(inlines(p, content, look))));
                }
                Block::Paragraph { content, style } | Block::Item { content, style, .. } => {
                    let label = style.recipients
                        && matches!(block, Block::Paragraph { .. })
                        && is_recipients_label(content);
                    let look = if label {
                        RunLook {
                            size: RECIPIENTS_LABEL_SIZE,
                            bold: true,
                            italic: true,
                        }
                    } else if style.recipients {
                        RunLook {
                            size: RECIPIENTS_SIZE,
                            bold: false,
                            italic: false,
                        }
                    } else {
                        RunLook {
                            size: if style.header { HEADER_SIZE } else { BODY_SIZE },
                            bold: style.signature,
                            italic: false,
                        }
                    };
                    let mut p = self.styled_paragraph(style, false);
                    if let Block::Item { marker, .. } = block {
                        p = p.add_run(
                            styled_run(look, false, false)
                                .add_text(xml_text(&format!("{marker} "))),
                        );
                    }
                    out.push(Child::Paragraph(Box::new(inlines(p, content, look))));
                }
                // A table without rows is not valid WordprocessingML: it is left out.
                Block::Table(t) if t.rows.is_empty() => {}
                Block::Layout { rows } if rows.is_empty() => {}
                Block::Table(t) => {
                    let table = self.table(t, width);
                    self.push_table(table, out);
                }
                Block::Layout { rows } => {
                    let table = self.layout(rows, width);
                    self.push_table(table, out);
                }
                Block::PageBreak => {
                    let p = self
                        .paragraph()
                        .line_spacing(LineSpacing::new().before(0).after(0))
                        .add_run(base_run(BODY_SIZE).add_break(BreakType::Page));
                    out.push(Child::Paragraph(Box::new(p)));
                }
            }
        }
    }

    /// A table and the small empty paragraph after it: the gap the HTML has below its tables,
    /// which also keeps two tables in a row from merging and ends a cell with a paragraph.
    fn push_table(&mut self, table: Table, out: &mut Vec<Child>) {
        out.push(Child::Table(Box::new(table)));
        let gap = self
            .paragraph()
            .size(GAP_SIZE)
            .line_spacing(LineSpacing::new().before(0).after(0));
        out.push(Child::Paragraph(Box::new(gap)));
    }

    /// A table cell holding blocks (never empty: a cell needs a paragraph).
    fn cell(&mut self, blocks: &[Block], width: usize) -> TableCell {
        let mut children = Vec::new();
        self.blocks(blocks, width.saturating_sub(CELL_PADDING), &mut children);
        if children.is_empty() {
            children.push(Child::Paragraph(Box::new(self.paragraph())));
        }
        let mut cell = TableCell::new().width(width, WidthType::Dxa);
        for child in children {
            cell = match child {
                Child::Paragraph(p) => cell.add_paragraph(*p),
                Child::Table(t) => cell.add_table(*t),
            };
        }
        cell
    }

    /// A borderless full-width table placing blocks side by side; a row of two cells is split
    /// 37 % / 63 % like the HTML (the Quốc hiệu fits on one line), other rows evenly. A row shorter than the widest one has its
    /// last cell spanning the rest.
    fn layout(&mut self, rows: &[Vec<Vec<Block>>], width: usize) -> Table {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let grid = if columns == 2 {
            let first = width * 37 / 100;
            vec![first, width - first]
        } else {
            proportional(&vec![1; columns], width)
        };
        let mut table_rows = Vec::new();
        for row in rows {
            let mut cells = Vec::new();
            if row.is_empty() {
                cells.push(self.cell(&[], width).grid_span(columns));
            }
            for (i, blocks) in row.iter().enumerate() {
                let span = if i + 1 == row.len() { columns - i } else { 1 };
                let cell_width = grid[i..i + span].iter().sum();
                let mut cell = self.cell(blocks, cell_width);
                if span > 1 {
                    cell = cell.grid_span(span);
                }
                cells.push(cell);
            }
            table_rows.push(TableRow::new(cells));
        }
        Table::new(table_rows)
            .set_grid(grid)
            .width(width, WidthType::Dxa)
            .layout(TableLayoutType::Fixed)
            .set_borders(TableBorders::new().clear_all())
            // No cell padding: the header's lines ("HĐND HUYỆN TUẦN GIÁO", the Quốc hiệu) get
            // the whole column.
            .margins(TableCellMargins::new().margin(0, 0, 0, 0))
    }

    /// A bordered table: widths proportional to the markup's, header rows bold and centred,
    /// a colspan as `w:gridSpan`, a rowspan as `w:vMerge`.
    fn table(&mut self, t: &markup::Table, width: usize) -> Table {
        let columns = t
            .rows
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(t.widths.len())
            .max(1);
        let weights: Vec<u64> = (0..columns)
            .map(|c| u64::from(t.widths.get(c).copied().unwrap_or(1).max(1)))
            .collect();
        let grid = proportional(&weights, width);
        let spans = Spans::new(&t.rows, columns);
        let mut table_rows = Vec::new();
        for (r, row) in t.rows.iter().enumerate() {
            let header = r < t.header_rows;
            let mut cells = Vec::new();
            let mut c = 0;
            while c < columns {
                let Some((or, oc)) = spans.owner[r][c] else {
                    // A covered cell without an owner: an empty cell keeps the grid whole.
                    cells.push(self.grid_cell(&[], grid[c], header, false));
                    c += 1;
                    continue;
                };
                if oc != c {
                    c += 1;
                    continue;
                }
                let (colspan, rowspan) = spans.size[or][oc];
                let cell_width = grid[c..c + colspan].iter().sum();
                let mut cell = if or == r {
                    let content = row.get(c).map_or(&[][..], |cell| cell.content.as_slice());
                    let centered = t.centered.get(c) == Some(&true);
                    let cell = self.grid_cell(content, cell_width, header, centered);
                    if rowspan > 1 {
                        cell.vertical_merge(VMergeType::Restart)
                    } else {
                        cell
                    }
                } else {
                    self.grid_cell(&[], cell_width, header, false)
                        .vertical_merge(VMergeType::Continue)
                };
                if colspan > 1 {
                    cell = cell.grid_span(colspan);
                }
                cells.push(cell);
                c += colspan;
            }
            table_rows.push(TableRow::new(cells));
        }
        let border = |position| {
            TableBorder::new(position)
                .border_type(BorderType::Single)
                .size(4)
                .color("000000")
        };
        let borders = TableBorders::new()
            .set(border(TableBorderPosition::Top))
            .set(border(TableBorderPosition::Left))
            .set(border(TableBorderPosition::Bottom))
            .set(border(TableBorderPosition::Right))
            .set(border(TableBorderPosition::InsideH))
            .set(border(TableBorderPosition::InsideV));
        Table::new(table_rows)
            .set_grid(grid)
            .width(width, WidthType::Dxa)
            .layout(TableLayoutType::Fixed)
            .set_borders(borders)
    }

    fn grid_cell(
        &mut self,
        content: &[Inline],
        width: usize,
        header: bool,
        centered: bool,
    ) -> TableCell {
        let align = if header || centered {
            AlignmentType::Center
        } else {
            AlignmentType::Left
        };
        let p = self
            .paragraph()
            .align(align)
            .line_spacing(LineSpacing::new().before(0).after(0));
        let look = RunLook {
            size: TABLE_SIZE,
            bold: header,
            italic: false,
        };
        TableCell::new()
            .width(width, WidthType::Dxa)
            .add_paragraph(inlines(p, content, look))
    }
}

/// Adds inline content to a paragraph as runs; a line break is a `w:br`.
fn inlines(mut p: Paragraph, content: &[Inline], look: RunLook) -> Paragraph {
    for i in content {
        match i {
            Inline::Text { text, bold, italic } => {
                // A newline in a text is a line break too (the markup parser never leaves one).
                for (n, part) in xml_text(text).split('\n').enumerate() {
                    if n > 0 {
                        p = p.add_run(base_run(look.size).add_break(BreakType::TextWrapping));
                    }
                    if !part.is_empty() {
                        p = p.add_run(styled_run(look, *bold, *italic).add_text(part));
                    }
                }
            }
            Inline::LineBreak => {
                p = p.add_run(base_run(look.size).add_break(BreakType::TextWrapping));
            }
        }
    }
    p
}

/// Splits `total` twips in proportion to `weights`; the last column takes the rounding rest.
fn proportional(weights: &[u64], total: usize) -> Vec<usize> {
    let sum: u64 = weights.iter().sum::<u64>().max(1);
    let total64 = total as u64;
    let mut out: Vec<usize> = weights
        .iter()
        .map(|w| usize::try_from(total64 * w / sum).unwrap_or(0))
        .collect();
    let used: usize = out.iter().sum();
    if let Some(last) = out.last_mut() {
        *last += total.saturating_sub(used);
    }
    out
}

/// Which cell owns each grid position, and the size each owner really gets: an owner's span is
/// cut where it would overlap a position another owner already holds, so the merges always form
/// rectangles Word accepts.
struct Spans {
    /// For each row and column, the (row, column) of the owning cell.
    owner: Vec<Vec<Option<(usize, usize)>>>,
    /// For each owner position, its (colspan, rowspan).
    size: Vec<Vec<(usize, usize)>>,
}

impl Spans {
    fn new(rows: &[Vec<markup::Cell>], columns: usize) -> Spans {
        let mut owner = vec![vec![None; columns]; rows.len()];
        let mut size = vec![vec![(1, 1); columns]; rows.len()];
        for (r, row) in rows.iter().enumerate() {
            for c in 0..columns {
                // Padding beyond a short row is an ordinary empty cell.
                let (colspan, rowspan) = row
                    .get(c)
                    .map_or((1, 1), |cell| (cell.colspan, cell.rowspan));
                if colspan == 0 || owner[r][c].is_some() {
                    continue;
                }
                let colspan = (c..columns.min(c + colspan))
                    .take_while(|&k| owner[r][k].is_none())
                    .count();
                let rowspan = (r..rows.len().min(r + rowspan.max(1)))
                    .take_while(|&k| (c..c + colspan).all(|j| owner[k][j].is_none()))
                    .count();
                for line in owner.iter_mut().skip(r).take(rowspan) {
                    for slot in line.iter_mut().skip(c).take(colspan) {
                        *slot = Some((r, c));
                    }
                }
                size[r][c] = (colspan, rowspan);
            }
        }
        Spans { owner, size }
    }
}

/// Escapes text for XML content.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in xml_text(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// docProps/core.xml with the title, subject and creator, and no dates: docx-rs has no setters
/// for these fields, and a creation time would make every file different.
fn core_properties(meta: &DocxMeta) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
         <cp:coreProperties \
         xmlns:cp=\"http://schemas.openxmlformats.org/package/2006/metadata/core-properties\" \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\" \
         xmlns:dcterms=\"http://purl.org/dc/terms/\" \
         xmlns:dcmitype=\"http://purl.org/dc/dcmitype/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <dc:title>{}</dc:title><dc:subject>{}</dc:subject><dc:creator>{}</dc:creator>\
         <cp:lastModifiedBy>{}</cp:lastModifiedBy><dc:language>vi-VN</dc:language>\
         <cp:revision>1</cp:revision></cp:coreProperties>",
        xml_escape(&meta.title),
        xml_escape(&meta.subject),
        xml_escape(&meta.creator),
        xml_escape(&meta.creator),
    )
}

/// Zips the parts like docx-rs does, but with every entry stored (no compressor whose output
/// could change with a dependency's features), dated 1980-01-01 and marked as Unix 0644.
fn pack(xml: XMLDocx) -> Result<Vec<u8>, DocxError> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::default())
        .system(System::Unix)
        .unix_permissions(0o644)
        .large_file(false);
    let mut parts: Vec<(String, &[u8])> = vec![
        ("[Content_Types].xml".into(), &xml.content_type),
        ("_rels/.rels".into(), &xml.rels),
        ("docProps/app.xml".into(), &xml.doc_props.app),
        ("docProps/core.xml".into(), &xml.doc_props.core),
        ("docProps/custom.xml".into(), &xml.doc_props.custom),
        ("word/_rels/document.xml.rels".into(), &xml.document_rels),
        ("word/document.xml".into(), &xml.document),
        ("word/styles.xml".into(), &xml.styles),
        ("word/settings.xml".into(), &xml.settings),
        ("word/fontTable.xml".into(), &xml.font_table),
        ("word/comments.xml".into(), &xml.comments),
        ("word/numbering.xml".into(), &xml.numberings),
        ("word/commentsExtended.xml".into(), &xml.comments_extended),
        ("word/footnotes.xml".into(), &xml.footnotes),
    ];
    for (i, header) in xml.headers.iter().enumerate() {
        parts.push((format!("word/header{}.xml", i + 1), header));
        if let Some(rels) = xml.header_rels.get(i) {
            parts.push((format!("word/_rels/header{}.xml.rels", i + 1), rels));
        }
    }
    for (i, footer) in xml.footers.iter().enumerate() {
        parts.push((format!("word/footer{}.xml", i + 1), footer));
        if let Some(rels) = xml.footer_rels.get(i) {
            parts.push((format!("word/_rels/footer{}.xml.rels", i + 1), rels));
        }
    }
    // Images, task panes and custom XML are never produced by `to_docx`.
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in parts {
        zip.start_file(name, options)?;
        zip.write_all(bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markup::{Cell, parse};

    fn cell(colspan: usize, rowspan: usize) -> Cell {
        Cell {
            content: Vec::new(),
            colspan,
            rowspan,
        }
    }

    #[test]
    fn widths_fill_the_text_width() {
        assert_eq!(TEXT_WIDTH, 9354);
        let grid = proportional(&[1, 4, 1, 1, 1, 1], TEXT_WIDTH);
        assert_eq!(grid.iter().sum::<usize>(), TEXT_WIDTH);
        assert_eq!(grid[0], 1039);
        assert_eq!(grid[1], 4157);
    }

    #[test]
    fn overlapping_spans_are_cut_to_rectangles() {
        // "b" spans two rows down column 1 while "c" below it spans two columns: "c" is cut.
        let rows = vec![
            vec![cell(1, 1), cell(1, 2)],
            vec![cell(2, 2), cell(0, 0)],
            vec![cell(0, 0), cell(0, 0)],
        ];
        let spans = Spans::new(&rows, 2);
        assert_eq!(spans.size[0][1], (1, 2));
        assert_eq!(spans.size[1][0], (1, 2));
        assert_eq!(spans.owner[1][1], Some((0, 1)));
        assert_eq!(spans.owner[2][0], Some((1, 0)));
        assert_eq!(spans.owner[2][1], None);
    }

    #[test]
    fn the_same_document_gives_the_same_bytes() {
        let doc = parse(
            "::: layout\n::: row\n::: cell\nA\n:::\n::: cell\n**B**\n:::\n:::\n:::\n\n\
             # Tiêu đề\n\nMột đoạn văn.\n\n| a | < |\n|---|---|\n| 1 | 2 |\n",
        )
        .expect("markup");
        let meta = DocxMeta {
            title: "Kế hoạch".into(),
            subject: "Giám sát".into(),
            creator: "Đoàn giám sát".into(),
        };
        let first = to_docx(&doc, &meta).expect("docx");
        // Paragraphs made in between must not shift the ids of the next render.
        let _ = Paragraph::new();
        let _ = docx_rs::read_docx(&first).expect("read back");
        let second = to_docx(&doc, &meta).expect("docx");
        assert!(first == second, "two renders differ");
    }

    #[test]
    fn empty_tables_are_left_out() {
        let doc = parse("|---|---|\n\n::: layout\n:::\n\nText.\n").expect("markup");
        let bytes = to_docx(&doc, &DocxMeta::default()).expect("docx");
        let read = docx_rs::read_docx(&bytes).expect("read back");
        let tables = read
            .document
            .children
            .iter()
            .filter(|c| matches!(c, docx_rs::DocumentChild::Table(_)))
            .count();
        assert_eq!(tables, 0);
    }

    #[test]
    fn control_characters_are_dropped_and_metadata_escaped() {
        assert_eq!(xml_text("a\u{1}b\u{b}c\td"), "abc\td");
        let core = core_properties(&DocxMeta {
            title: "<x> & \"y\"".into(),
            subject: String::new(),
            creator: "a\u{0}b".into(),
        });
        assert!(core.contains("<dc:title>&lt;x&gt; &amp; &quot;y&quot;</dc:title>"));
        assert!(core.contains("<dc:creator>ab</dc:creator>"));
    }
}
