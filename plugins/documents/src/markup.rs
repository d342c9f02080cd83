//! The document markup the workflow's templates write: a small Markdown dialect with pandoc-style
//! fenced divs for the parts of an administrative document that plain Markdown cannot place (the
//! two-column header, the Nơi nhận / signature row, centred titles, page breaks). A template
//! renders to this markup; [`parse`] turns it into a [`Document`], from which the Markdown, HTML
//! and DOCX writers print the same content in each format. Case data reaches the markup through
//! [`escape`] (the template layer's escape function), so a `*` or `<script>` in a unit name is
//! text, never markup.
//!
//! Blocks (one per line or run of lines, separated by blank lines):
//! - `# ...` to `###### ...`: a heading (printed bold, the level kept in Markdown).
//! - `- text`, `+ text`, `1. text`, `a) text`: an item; the marker is printed as written.
//! - `| a | b |` lines: a table. Rows before a separator row (`|---|:---:|`) are header rows; a
//!   cell holding only `<` joins the cell on its left, only `^` the cell above. The dashes of the
//!   separator give the relative column widths, `:---:` centres a column.
//! - `::: name [class ...]` ... `:::`: a div (they nest). `layout` is a borderless table whose
//!   children are `row` divs of `cell` divs; `center`, `right`, `left`, `justify` set the
//!   alignment of what they hold; `recipients` (the Nơi nhận list) and `signature` style their
//!   content; `header` sets the header's 13 pt. Classes after the name apply the same styles.
//! - `\newpage`: a page break.
//! - `::: meta` ... `:::`: `key: value` lines that are not printed: the register's fields of the
//!   document (`type_name`, `excerpt`, `signer`, `signer_position`, `recipients`).
//! - Anything else: a paragraph; its lines are joined by a space, except after a line ending in
//!   two spaces or `\`, which is a line break.
//!
//! Inline: `**bold**`, `*italic*`, `***both***`, and `\` before any ASCII punctuation for the
//! character itself.

use std::fmt::Write as _;

/// A parsed document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub blocks: Vec<Block>,
    /// The `::: meta` fields, as plain text.
    pub meta: std::collections::BTreeMap<String, String>,
}

/// A run of text with one style, or a line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    Text {
        text: String,
        bold: bool,
        italic: bool,
    },
    LineBreak,
}

/// How a paragraph is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Align {
    #[default]
    Justify,
    Left,
    Center,
    Right,
}

/// The look of a block, from the divs around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    pub align: Align,
    /// Inside a layout cell: no first-line indent.
    pub in_cell: bool,
    /// The Nơi nhận list (12 pt bold italic heading, 11 pt items).
    pub recipients: bool,
    /// The signature block (centred, bold).
    pub signature: bool,
    /// The document header (issuing body, Quốc hiệu and Tiêu ngữ, number, place and date):
    /// 13 pt.
    pub header: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Heading {
        level: u8,
        content: Vec<Inline>,
        style: Style,
    },
    Paragraph {
        content: Vec<Inline>,
        style: Style,
    },
    /// A list item; `marker` is printed as written ("-", "+", "1.").
    Item {
        marker: String,
        content: Vec<Inline>,
        style: Style,
    },
    Table(Table),
    /// A borderless table placing blocks side by side (the header, Nơi nhận and signature).
    Layout {
        rows: Vec<Vec<Vec<Block>>>,
    },
    PageBreak,
}

/// A table cell; `span` columns wide and `rows` rows high (0 for a cell covered by another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub content: Vec<Inline>,
    pub colspan: usize,
    pub rowspan: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Header rows first; a covered cell (joined to its left or above) has `colspan == 0`.
    pub rows: Vec<Vec<Cell>>,
    pub header_rows: usize,
    /// Relative widths, one per column.
    pub widths: Vec<u32>,
    pub centered: Vec<bool>,
}

impl Table {
    pub fn columns(&self) -> usize {
        self.widths.len()
    }
}

/// A markup error, located in the rendered text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct MarkupError {
    pub line: usize,
    pub message: String,
}

/// Escapes case data for the markup: every ASCII punctuation character the markup could read as
/// syntax gets a backslash, and a line break in the data stays a line break inside its paragraph.
pub fn escape(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 8);
    for c in data.chars() {
        match c {
            '\\' | '*' | '_' | '|' | '<' | '>' | '#' | '-' | '+' | ':' | '^' | '[' | ']' | '`'
            | '.' | ')' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\\n"),
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

const DIVS: &[&str] = &[
    "layout",
    "row",
    "cell",
    "center",
    "right",
    "left",
    "justify",
    "recipients",
    "signature",
    "header",
];

struct Frame {
    name: String,
    style: Style,
    line: usize,
    blocks: Vec<Block>,
}

fn apply_class(style: &mut Style, class: &str) {
    match class {
        "center" => style.align = Align::Center,
        "right" => style.align = Align::Right,
        "left" => style.align = Align::Left,
        "justify" => style.align = Align::Justify,
        "recipients" => {
            style.recipients = true;
            style.align = Align::Left;
        }
        "signature" => {
            style.signature = true;
            style.align = Align::Center;
        }
        "header" => style.header = true,
        "cell" => {
            style.in_cell = true;
            style.align = Align::Center;
        }
        _ => {}
    }
}

/// Parses rendered markup.
pub fn parse(text: &str) -> Result<Document, MarkupError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut meta = std::collections::BTreeMap::new();
    let mut stack: Vec<Frame> = vec![Frame {
        name: String::new(),
        style: Style::default(),
        line: 0,
        blocks: Vec::new(),
    }];
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        let number = i + 1;
        if trimmed.is_empty() {
            i += 1;
            continue;
        }
        let style = stack.last().map(|f| f.style).unwrap_or_default();
        if trimmed == "::: meta" {
            i += 1;
            loop {
                let Some(raw) = lines.get(i) else {
                    return Err(MarkupError {
                        line: number,
                        message: "div `meta` opened here is never closed".to_owned(),
                    });
                };
                let raw = raw.trim();
                i += 1;
                if raw == ":::" {
                    break;
                }
                if raw.is_empty() {
                    continue;
                }
                let Some((key, value)) = raw.split_once(": ") else {
                    return Err(MarkupError {
                        line: i,
                        message: format!("a meta line is `key: value`, not {raw:?}"),
                    });
                };
                meta.insert(key.trim().to_owned(), plain(&inline(value.trim(), i)?));
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix(":::") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.is_empty() {
                let frame = stack.pop().filter(|_| !stack.is_empty());
                let Some(frame) = frame else {
                    return Err(MarkupError {
                        line: number,
                        message: "`:::` closes no open div".to_owned(),
                    });
                };
                close(frame, &mut stack)?;
            } else {
                let name = words[0];
                if !DIVS.contains(&name) {
                    return Err(MarkupError {
                        line: number,
                        message: format!("unknown div {name:?}; known: {}", DIVS.join(", ")),
                    });
                }
                let parent = stack.last().map(|f| f.name.as_str()).unwrap_or_default();
                let expected = match name {
                    "row" => Some("layout"),
                    "cell" => Some("row"),
                    _ => None,
                };
                if expected.is_some_and(|e| e != parent) || (parent == "layout" && name != "row") {
                    return Err(MarkupError {
                        line: number,
                        message: format!("a `{name}` div cannot be inside `{parent}`"),
                    });
                }
                let mut style = style;
                for w in &words {
                    apply_class(&mut style, w);
                }
                stack.push(Frame {
                    name: name.to_owned(),
                    style,
                    line: number,
                    blocks: Vec::new(),
                });
            }
            i += 1;
            continue;
        }
        if matches!(
            stack.last().map(|f| f.name.as_str()),
            Some("layout" | "row")
        ) {
            return Err(MarkupError {
                line: number,
                message: "text directly inside a layout or row div; put it in a cell".to_owned(),
            });
        }
        let frame = stack.last_mut().expect("root frame");
        if trimmed == "\\newpage" {
            frame.blocks.push(Block::PageBreak);
            i += 1;
            continue;
        }
        if trimmed.starts_with('|') {
            let start = i;
            let mut rows = Vec::new();
            while i < lines.len() && lines[i].trim().starts_with('|') {
                rows.push((i + 1, lines[i].trim()));
                i += 1;
            }
            frame.blocks.push(Block::Table(table(&rows, start + 1)?));
            continue;
        }
        if let Some((level, rest)) = heading(trimmed) {
            frame.blocks.push(Block::Heading {
                level,
                content: inline(rest, number)?,
                style,
            });
            i += 1;
            continue;
        }
        // A paragraph or an item, with its continuation lines.
        let item = item_marker(trimmed);
        let mut text = String::new();
        let mut first = true;
        loop {
            let current = lines[i];
            let part = if first {
                item.map_or(current.trim(), |(_, rest)| rest)
            } else {
                current.trim()
            };
            let hard = current.ends_with("  ") || part.ends_with('\\') && !part.ends_with("\\\\");
            let part = part.trim_end();
            let part = if hard && part.ends_with('\\') {
                &part[..part.len() - 1]
            } else {
                part
            };
            if !first && !text.ends_with('\n') {
                text.push(' ');
            }
            text.push_str(part);
            if hard {
                text.push('\n');
            }
            first = false;
            i += 1;
            if i >= lines.len() {
                break;
            }
            let next = lines[i].trim();
            if next.is_empty() {
                break;
            }
            // After a line break the next line always continues the paragraph.
            if !hard
                && (next.starts_with(":::")
                    || next.starts_with('|')
                    || next == "\\newpage"
                    || heading(next).is_some()
                    || item_marker(next).is_some())
            {
                break;
            }
        }
        let content = inline(text.trim_end_matches('\n'), number)?;
        frame.blocks.push(match item {
            Some((marker, _)) => Block::Item {
                marker: marker.to_owned(),
                content,
                style,
            },
            None => Block::Paragraph { content, style },
        });
    }
    if stack.len() > 1 {
        let open = stack.last().expect("open div");
        return Err(MarkupError {
            line: open.line,
            message: format!("div `{}` opened here is never closed", open.name),
        });
    }
    Ok(Document {
        blocks: stack.pop().map(|f| f.blocks).unwrap_or_default(),
        meta,
    })
}

fn close(frame: Frame, stack: &mut [Frame]) -> Result<(), MarkupError> {
    let parent = stack.last_mut().expect("parent frame");
    match frame.name.as_str() {
        "layout" => {
            let rows = frame
                .blocks
                .into_iter()
                .map(|b| match b {
                    Block::Layout { mut rows } => rows.pop().unwrap_or_default(),
                    _ => Vec::new(),
                })
                .collect();
            parent.blocks.push(Block::Layout { rows });
        }
        // A row is carried to its layout as a one-row layout; a cell as a one-cell row.
        "row" => {
            let cells = frame
                .blocks
                .into_iter()
                .map(|b| match b {
                    Block::Layout { mut rows } => {
                        rows.pop().and_then(|mut r| r.pop()).unwrap_or_default()
                    }
                    _ => Vec::new(),
                })
                .collect();
            parent.blocks.push(Block::Layout { rows: vec![cells] });
        }
        "cell" => parent.blocks.push(Block::Layout {
            rows: vec![vec![frame.blocks]],
        }),
        _ => parent.blocks.extend(frame.blocks),
    }
    Ok(())
}

fn heading(line: &str) -> Option<(u8, &str)> {
    let hashes = line.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
        Some((hashes as u8, line[hashes..].trim()))
    } else {
        None
    }
}

fn item_marker(line: &str) -> Option<(&str, &str)> {
    for m in ["- ", "+ "] {
        if let Some(rest) = line.strip_prefix(m) {
            return Some((&line[..1], rest.trim_start()));
        }
    }
    // "1. ", "12. ", "a) ", "b. "
    let end = line.find(' ')?;
    let marker = &line[..end];
    let body = marker
        .strip_suffix('.')
        .or_else(|| marker.strip_suffix(')'))?;
    let numeric = !body.is_empty() && body.len() <= 3 && body.bytes().all(|b| b.is_ascii_digit());
    let letter = body.len() == 1 && body.bytes().all(|b| b.is_ascii_lowercase());
    (numeric || letter).then(|| (marker, line[end..].trim_start()))
}

/// Splits a table row into its cell texts, honouring `\|`.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(c);
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            '|' => out.push(std::mem::take(&mut current).trim().to_owned()),
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

fn is_separator(cells: &[String]) -> bool {
    !cells.is_empty()
        && cells.iter().all(|c| {
            let c = c.trim();
            c.contains('-') && c.chars().all(|ch| ch == '-' || ch == ':')
        })
}

fn table(rows: &[(usize, &str)], first_line: usize) -> Result<Table, MarkupError> {
    let split: Vec<(usize, Vec<String>)> = rows.iter().map(|(n, r)| (*n, cells(r))).collect();
    let columns = split.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    let separator = split.iter().position(|(_, c)| is_separator(c));
    let (widths, centered) = match separator {
        Some(s) => {
            let sep = &split[s].1;
            let widths = (0..columns)
                .map(|i| {
                    sep.get(i)
                        .map_or(1, |c| c.chars().filter(|ch| *ch == '-').count() as u32)
                        .max(1)
                })
                .collect();
            let centered = (0..columns)
                .map(|i| {
                    sep.get(i)
                        .is_some_and(|c| c.starts_with(':') && c.ends_with(':'))
                })
                .collect();
            (widths, centered)
        }
        None => (vec![1; columns], vec![false; columns]),
    };
    let mut out: Vec<Vec<Cell>> = Vec::new();
    for (index, (line, row)) in split.iter().enumerate() {
        if Some(index) == separator {
            continue;
        }
        let mut cells_out: Vec<Cell> = Vec::new();
        for c in 0..columns {
            let text = row.get(c).map(String::as_str).unwrap_or("");
            match text {
                "<" => {
                    let Some(owner) = (0..cells_out.len())
                        .rev()
                        .find(|&k| cells_out[k].colspan > 0)
                    else {
                        return Err(MarkupError {
                            line: *line,
                            message: "a `<` cell has no cell on its left to join".to_owned(),
                        });
                    };
                    cells_out[owner].colspan += 1;
                    cells_out.push(Cell {
                        content: Vec::new(),
                        colspan: 0,
                        rowspan: 0,
                    });
                }
                "^" => {
                    let owner = (0..out.len()).rev().find(|&r| {
                        out[r]
                            .get(c)
                            .is_some_and(|cell| cell.colspan > 0 && cell.rowspan > 0)
                    });
                    // Under a cell covered by a wide cell that the `^` on its left already
                    // extended down: part of the same merge.
                    let continues = out
                        .last()
                        .and_then(|r| r.get(c))
                        .is_some_and(|cell| cell.colspan == 0)
                        && cells_out.last().is_some_and(|cell| cell.colspan == 0);
                    match owner {
                        Some(owner) if !continues => out[owner][c].rowspan += 1,
                        _ if continues => {}
                        _ => {
                            return Err(MarkupError {
                                line: *line,
                                message: "a `^` cell has no cell above it to join".to_owned(),
                            });
                        }
                    }
                    cells_out.push(Cell {
                        content: Vec::new(),
                        colspan: 0,
                        rowspan: 0,
                    });
                }
                _ => cells_out.push(Cell {
                    content: inline(text, *line)?,
                    colspan: 1,
                    rowspan: 1,
                }),
            }
        }
        out.push(cells_out);
    }
    let _ = first_line;
    Ok(Table {
        header_rows: separator.unwrap_or(0),
        rows: out,
        widths,
        centered,
    })
}

/// Parses inline text: emphasis markers and backslash escapes; `\n` is a line break.
pub fn inline(text: &str, line: usize) -> Result<Vec<Inline>, MarkupError> {
    let mut out: Vec<Inline> = Vec::new();
    let mut bold = false;
    let mut italic = false;
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    let flush = |current: &mut String, out: &mut Vec<Inline>, bold: bool, italic: bool| {
        if current.is_empty() {
            return;
        }
        let text = std::mem::take(current);
        if let Some(Inline::Text {
            text: last,
            bold: b,
            italic: i,
        }) = out.last_mut()
            && *b == bold
            && *i == italic
        {
            last.push_str(&text);
            return;
        }
        out.push(Inline::Text { text, bold, italic });
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() && chars[i + 1].is_ascii_punctuation() => {
                current.push(chars[i + 1]);
                i += 2;
            }
            '\n' => {
                flush(&mut current, &mut out, bold, italic);
                out.push(Inline::LineBreak);
                i += 1;
            }
            '*' => {
                let run = chars[i..].iter().take_while(|c| **c == '*').count();
                flush(&mut current, &mut out, bold, italic);
                match run {
                    1 => italic = !italic,
                    2 => bold = !bold,
                    3 => {
                        bold = !bold;
                        italic = !italic;
                    }
                    _ => {
                        return Err(MarkupError {
                            line,
                            message: format!(
                                "{run} asterisks in a row; escape literal ones as \\*"
                            ),
                        });
                    }
                }
                i += run;
            }
            _ => {
                current.push(c);
                i += 1;
            }
        }
    }
    flush(&mut current, &mut out, bold, italic);
    if bold || italic {
        return Err(MarkupError {
            line,
            message: format!(
                "unclosed {} in {:?}",
                if bold { "**bold**" } else { "*italic*" },
                text.chars().take(60).collect::<String>()
            ),
        });
    }
    // Trim the spaces a template leaves around emphasis at the ends of the block.
    Ok(out)
}

/// The plain text of inline content (line breaks as spaces).
pub fn plain(content: &[Inline]) -> String {
    let mut out = String::new();
    for i in content {
        match i {
            Inline::Text { text, .. } => out.push_str(text),
            Inline::LineBreak => out.push(' '),
        }
    }
    out
}

/// Escapes text for Markdown output.
fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '<' | '>' | '|' | '[' | ']' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn md_inline(content: &[Inline]) -> String {
    let mut out = String::new();
    for i in content {
        match i {
            Inline::Text { text, bold, italic } => {
                // Emphasis markers hug the text; surrounding spaces stay outside them.
                let lead = text.len() - text.trim_start().len();
                let trail = text.len() - text.trim_end().len();
                let core = text.trim();
                let mark = match (bold, italic) {
                    (true, true) => "***",
                    (true, false) => "**",
                    (false, true) => "*",
                    (false, false) => "",
                };
                out.push_str(&text[..lead]);
                if !core.is_empty() {
                    let _ = write!(out, "{mark}{}{mark}", md_escape(core));
                }
                if trail > 0 && !core.is_empty() {
                    out.push_str(&text[text.len() - trail..]);
                }
            }
            Inline::LineBreak => out.push_str("  \n"),
        }
    }
    out
}

/// Prints a document as Markdown (GitHub-flavoured: pipe tables, hard breaks as two spaces).
pub fn to_markdown(doc: &Document) -> String {
    let mut out = String::new();
    md_blocks(&doc.blocks, &mut out);
    while out.ends_with('\n') {
        out.pop();
    }
    out.push('\n');
    out
}

fn md_blocks(blocks: &[Block], out: &mut String) {
    for (index, block) in blocks.iter().enumerate() {
        match block {
            Block::Heading { level, content, .. } => {
                let _ = writeln!(
                    out,
                    "{} {}\n",
                    "#".repeat(usize::from(*level)),
                    md_inline(content)
                );
            }
            Block::Paragraph { content, .. } => {
                let text = md_inline(content);
                // A paragraph that would read as another block gets its first character escaped.
                let text = if text.starts_with('#')
                    || text.starts_with("- ")
                    || text.starts_with("+ ")
                    || item_marker(&text).is_some()
                {
                    format!("\\{text}")
                } else {
                    text
                };
                let _ = writeln!(out, "{text}\n");
            }
            Block::Item {
                marker, content, ..
            } => {
                let indent = if block_marker_is_plus(block) {
                    "  "
                } else {
                    ""
                };
                let _ = writeln!(out, "{indent}{marker} {}", md_inline(content));
                let next_is_item = matches!(blocks.get(index + 1), Some(Block::Item { .. }));
                if !next_is_item {
                    out.push('\n');
                }
            }
            Block::Table(t) => md_table(t, out),
            Block::Layout { rows } => {
                for row in rows {
                    for cell in row {
                        md_blocks(cell, out);
                    }
                }
            }
            Block::PageBreak => {}
        }
    }
}

fn block_marker_is_plus(block: &Block) -> bool {
    matches!(block, Block::Item { marker, .. } if marker == "+")
}

fn md_table(t: &Table, out: &mut String) {
    let cell_text = |c: &Cell| md_inline(&c.content).replace("  \n", " ");
    let row_text = |row: &Vec<Cell>| {
        let mut s = String::from("|");
        for c in row {
            let _ = write!(s, " {} |", cell_text(c));
        }
        s
    };
    // GitHub Markdown has one header row: the separator follows the first row, and further
    // header rows print bold as the first body rows.
    for (i, row) in t.rows.iter().enumerate() {
        if i > 0 && i < t.header_rows {
            let mut s = String::from("|");
            for c in row {
                let text = cell_text(c);
                if text.trim().is_empty() {
                    s.push_str("  |");
                } else {
                    let _ = write!(s, " **{}** |", text.replace("**", ""));
                }
            }
            let _ = writeln!(out, "{s}");
        } else {
            let _ = writeln!(out, "{}", row_text(row));
        }
        if i == 0 {
            let mut sep = String::from("|");
            for c in 0..t.columns() {
                sep.push_str(if t.centered.get(c) == Some(&true) {
                    " :---: |"
                } else {
                    " --- |"
                });
            }
            let _ = writeln!(out, "{sep}");
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Inline {
        Inline::Text {
            text: t.to_owned(),
            bold: false,
            italic: false,
        }
    }

    #[test]
    fn paragraphs_items_headings_and_emphasis() {
        let doc = parse(
            "# **1. Thành phần**\n\nThực hiện *Nghị quyết*\nsố 50.\n\n- Ủy ban;\n+ Tổng số;\n1. Một\n",
        )
        .expect("parse");
        assert_eq!(doc.blocks.len(), 5);
        assert!(
            matches!(&doc.blocks[0], Block::Heading { level: 1, content, .. }
            if content == &[Inline::Text { text: "1. Thành phần".into(), bold: true, italic: false }])
        );
        assert!(matches!(&doc.blocks[1], Block::Paragraph { content, .. }
            if plain(content) == "Thực hiện Nghị quyết số 50."));
        assert!(matches!(&doc.blocks[3], Block::Item { marker, .. } if marker == "+"));
        assert!(matches!(&doc.blocks[4], Block::Item { marker, content, .. }
            if marker == "1." && content == &[text("Một")]));
    }

    #[test]
    fn escaped_data_is_text_not_markup() {
        let data = "<script>*x*</script> | # - 1. a\nb";
        let doc = parse(&format!("- {}\n", escape(data))).expect("parse");
        let [Block::Item { content, .. }] = doc.blocks.as_slice() else {
            panic!("{doc:?}")
        };
        assert_eq!(
            content,
            &[
                text("<script>*x*</script> | # - 1. a"),
                Inline::LineBreak,
                text("b")
            ]
        );
        let md = to_markdown(&doc);
        assert_eq!(md, "- \\<script\\>\\*x\\*\\</script\\> \\| # - 1. a  \nb\n");
    }

    #[test]
    fn layouts_nest_rows_and_cells() {
        let doc = parse(
            "::: layout\n::: row\n::: cell\nHĐND  \n**ĐOÀN**\n:::\n::: cell\nCỘNG HÒA\n:::\n:::\n:::\n\\newpage\n",
        )
        .expect("parse");
        let Block::Layout { rows } = &doc.blocks[0] else {
            panic!("{doc:?}")
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].len(), 2);
        assert!(matches!(&rows[0][0][0], Block::Paragraph { content, style }
            if content.len() == 3 && style.in_cell && style.align == Align::Center));
        assert_eq!(doc.blocks[1], Block::PageBreak);
        assert_eq!(to_markdown(&doc), "HĐND  \n**ĐOÀN**\n\nCỘNG HÒA\n");
    }

    #[test]
    fn tables_join_cells_left_and_up() {
        let doc = parse(
            "| STT | Nội dung | Năm 2022 | < | Ghi chú |\n| ^ | ^ | Tổng số | Tỷ lệ | ^ |\n|:--:|------|---|---|--|\n| 1 | Hồ sơ | 10 | 100% | |\n",
        )
        .expect("parse");
        let Block::Table(t) = &doc.blocks[0] else {
            panic!()
        };
        assert_eq!(t.header_rows, 2);
        assert_eq!(t.widths, vec![2, 6, 3, 3, 2]);
        assert_eq!(t.rows[0][2].colspan, 2);
        assert_eq!(t.rows[0][3].colspan, 0);
        assert_eq!(t.rows[0][0].rowspan, 2);
        assert_eq!(t.rows[1][0].colspan, 0);
        assert_eq!(t.rows[2][4].content, Vec::new());
        // One GitHub header row; the second prints bold above the body.
        assert_eq!(
            to_markdown(&doc),
            "| STT | Nội dung | Năm 2022 |  | Ghi chú |\n| :---: | --- | --- | --- | --- |\n\
             |  |  | **Tổng số** | **Tỷ lệ** |  |\n| 1 | Hồ sơ | 10 | 100% |  |\n"
        );
    }

    #[test]
    fn meta_fields_are_read_not_printed() {
        let doc = parse(&format!(
            "::: meta\nexcerpt: {}\nsigner: Trần Bình Trọng\n:::\nBody\n",
            escape("V/v: lịch *giám sát*")
        ))
        .expect("parse");
        assert_eq!(doc.meta["excerpt"], "V/v: lịch *giám sát*");
        assert_eq!(doc.meta["signer"], "Trần Bình Trọng");
        assert_eq!(to_markdown(&doc), "Body\n");
        assert_eq!(
            parse("::: meta\nnot a pair\n:::\n").expect_err("pair").line,
            2
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("a\n\n::: center\nb\n").expect_err("open").line, 3);
        assert_eq!(parse("::: box\n:::\n").expect_err("unknown").line, 1);
        assert_eq!(parse("a\n:::\n").expect_err("stray").line, 2);
        assert_eq!(parse("x\n\n**bold\n").expect_err("unclosed").line, 3);
        assert_eq!(parse("::: layout\ntext\n:::\n").expect_err("bare").line, 2);
        assert_eq!(parse("| ^ | a |\n").expect_err("no cell above").line, 1);
    }
}
