//! Print-ready A4 HTML of a document, laid out as Nghị định 30/2020 asks (DOMAIN.md §5): Times
//! New Roman, margins 20/15/20/30 mm, 14 pt justified body with a 1.27 cm first-line indent,
//! the header and the Nơi nhận / signature row as borderless two-column tables, bordered tables
//! for the appendices, page breaks before attachments. Every text is HTML-escaped; the page loads
//! nothing from outside.

use std::fmt::Write as _;

use crate::markup::{Align, Block, Document, Inline, Style, Table};

const CSS: &str = r#"@page { size: A4; margin: 20mm 15mm 20mm 30mm; }
html { background: #f3f3f3; }
body { font-family: "Times New Roman", Times, serif; font-size: 14pt; line-height: 1.3;
  color: #000; margin: 0; }
main.page { background: #fff; width: 165mm; min-height: 257mm; margin: 10mm auto;
  padding: 20mm 15mm 20mm 30mm; box-sizing: content-box; }
@media print { html { background: none; } main.page { margin: 0; padding: 0; width: auto;
  min-height: 0; } }
p { margin: 0 0 6pt 0; text-align: justify; text-indent: 1.27cm; }
p.center { text-align: center; text-indent: 0; }
p.right { text-align: right; text-indent: 0; }
p.left { text-align: left; text-indent: 0; }
p.cell { text-indent: 0; margin-bottom: 0; }
p.header { font-size: 13pt; }
h1, h2, h3, h4, h5, h6 { font-size: 14pt; font-weight: bold; margin: 6pt 0; text-indent: 1.27cm;
  text-align: justify; }
h1.center, h2.center, h3.center, h4.center, h5.center, h6.center { text-align: center;
  text-indent: 0; }
table.layout { width: 100%; border-collapse: collapse; margin: 0 0 12pt 0; }
table.layout td { vertical-align: top; padding: 0 2mm; }
table.layout td.wide { width: 63%; }
table.grid { width: 100%; border-collapse: collapse; margin: 6pt 0 12pt 0; font-size: 13pt; }
table.grid th, table.grid td { border: 1px solid #000; padding: 2pt 4pt; vertical-align: top; }
table.grid th { font-weight: bold; text-align: center; }
table.grid td.center { text-align: center; }
.recipients p { font-size: 11pt; text-indent: 0; text-align: left; margin: 0; }
.recipients p.label { font-size: 12pt; font-weight: bold; font-style: italic; }
.signature p { font-weight: bold; text-align: center; text-indent: 0; margin: 0; }
div.page-break { break-after: page; page-break-after: always; height: 0; }
@media screen { div.page-break { border-top: 1px dashed #999; margin: 12mm 0; } }
"#;

/// The whole HTML page of a document.
pub fn to_html(doc: &Document, title: &str) -> String {
    let mut body = String::new();
    blocks(&doc.blocks, &mut body);
    format!(
        "<!DOCTYPE html>\n<html lang=\"vi\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main class=\"page\">\n{body}</main>\n</body>\n</html>\n",
        escape(title)
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn inline(content: &[Inline], out: &mut String) {
    for i in content {
        match i {
            Inline::Text { text, bold, italic } => {
                let (open, close) = match (bold, italic) {
                    (true, true) => ("<strong><em>", "</em></strong>"),
                    (true, false) => ("<strong>", "</strong>"),
                    (false, true) => ("<em>", "</em>"),
                    (false, false) => ("", ""),
                };
                let _ = write!(out, "{open}{}{close}", escape(text));
            }
            Inline::LineBreak => out.push_str("<br>"),
        }
    }
}

fn classes(style: &Style) -> String {
    let mut c: Vec<&str> = Vec::new();
    match style.align {
        Align::Justify => {}
        Align::Center => c.push("center"),
        Align::Left => c.push("left"),
        Align::Right => c.push("right"),
    }
    if style.in_cell {
        c.push("cell");
    }
    if style.header {
        c.push("header");
    }
    if c.is_empty() {
        String::new()
    } else {
        format!(" class=\"{}\"", c.join(" "))
    }
}

fn blocks(list: &[Block], out: &mut String) {
    for block in list {
        match block {
            Block::Heading {
                level,
                content,
                style,
            } => {
                let _ = write!(out, "<h{level}{}>", classes(style));
                inline(content, out);
                let _ = writeln!(out, "</h{level}>");
            }
            Block::Paragraph { content, style } | Block::Item { content, style, .. } => {
                // The first paragraph of a Nơi nhận list is its heading.
                let label = style.recipients
                    && matches!(block, Block::Paragraph { .. })
                    && content.iter().any(
                        |i| matches!(i, Inline::Text { text, .. } if text.contains("Nơi nhận")),
                    );
                let class = if label {
                    " class=\"label\"".to_owned()
                } else {
                    classes(style)
                };
                let _ = write!(out, "<p{class}>");
                if let Block::Item { marker, .. } = block {
                    let _ = write!(out, "{} ", escape(marker));
                }
                inline(content, out);
                out.push_str("</p>\n");
            }
            Block::Table(t) => table(t, out),
            Block::Layout { rows } => {
                out.push_str("<table class=\"layout\">\n");
                for row in rows {
                    out.push_str("<tr>");
                    let count = row.len();
                    for (i, cell) in row.iter().enumerate() {
                        let style = first_style(cell);
                        let mut class = Vec::new();
                        if count == 2 && i == 1 {
                            class.push("wide");
                        }
                        if style.is_some_and(|s| s.recipients) {
                            class.push("recipients");
                        }
                        if style.is_some_and(|s| s.signature) {
                            class.push("signature");
                        }
                        if class.is_empty() {
                            out.push_str("<td>");
                        } else {
                            let _ = write!(out, "<td class=\"{}\">", class.join(" "));
                        }
                        blocks(cell, out);
                        out.push_str("</td>");
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            Block::PageBreak => out.push_str("<div class=\"page-break\"></div>\n"),
        }
    }
}

fn first_style(cell: &[Block]) -> Option<Style> {
    cell.iter().find_map(|b| match b {
        Block::Heading { style, .. }
        | Block::Paragraph { style, .. }
        | Block::Item { style, .. } => Some(*style),
        _ => None,
    })
}

fn table(t: &Table, out: &mut String) {
    let total: u32 = t.widths.iter().sum::<u32>().max(1);
    out.push_str("<table class=\"grid\">\n<colgroup>");
    for w in &t.widths {
        let _ = write!(
            out,
            "<col style=\"width:{:.1}%\">",
            f64::from(*w) * 100.0 / f64::from(total)
        );
    }
    out.push_str("</colgroup>\n");
    for (r, row) in t.rows.iter().enumerate() {
        let header = r < t.header_rows;
        let tag = if header { "th" } else { "td" };
        out.push_str("<tr>");
        for (c, cell) in row.iter().enumerate() {
            if cell.colspan == 0 {
                continue;
            }
            let mut attrs = String::new();
            if cell.colspan > 1 {
                let _ = write!(attrs, " colspan=\"{}\"", cell.colspan);
            }
            if cell.rowspan > 1 {
                let _ = write!(attrs, " rowspan=\"{}\"", cell.rowspan);
            }
            if !header && t.centered.get(c) == Some(&true) {
                attrs.push_str(" class=\"center\"");
            }
            let _ = write!(out, "<{tag}{attrs}>");
            inline(&cell.content, out);
            let _ = write!(out, "</{tag}>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markup::{escape as markup_escape, parse};

    #[test]
    fn case_data_is_printed_not_run() {
        let doc = parse(&format!(
            "- {}\n\n| a | b |\n|---|---|\n| {} | x |\n",
            markup_escape("<script>alert('x')</script> & Co"),
            markup_escape("<b>")
        ))
        .expect("markup");
        let html = to_html(&doc, "<title>");
        assert!(html.contains("<p>- &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co</p>"));
        assert!(html.contains("<td>&lt;b&gt;</td>"));
        assert!(html.contains("<title>&lt;title&gt;</title>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http"), "nothing is loaded from outside");
    }

    #[test]
    fn layout_spans_and_a4() {
        let doc = parse(
            "::: layout\n::: row\n::: cell\nA\n:::\n::: cell\n**B**\n:::\n:::\n:::\n\n| x | < |\n| ^ | ^ |\n|---|---|\n| 1 | 2 |\n\n\\newpage\n",
        )
        .expect("markup");
        let html = to_html(&doc, "t");
        assert!(html.contains("size: A4"));
        assert!(html.contains("<table class=\"layout\">"));
        assert!(
            html.contains("<td class=\"wide\"><p class=\"center cell\"><strong>B</strong></p>")
        );
        assert!(html.contains("<th colspan=\"2\" rowspan=\"2\">x</th>"));
        assert!(html.contains("<div class=\"page-break\"></div>"));
    }
}
