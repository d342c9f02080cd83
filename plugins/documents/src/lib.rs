//! Administrative documents (Nghị định 30/2020) rendered from the workflow's handlebars
//! templates. A template writes the document markup of [`markup`]; the markup is parsed once and
//! printed as Markdown ([`markup::to_markdown`]), print-ready A4 HTML ([`html`]) and DOCX
//! ([`docx`]). Templates run in strict mode: a field the case does not have is an error naming
//! the template, the line and the field, never a silent blank. Case data is escaped for the
//! markup by the template layer, and each writer escapes text for its own format (HTML, XML).
//!
//! Helpers (all Vietnamese forms come from `giamsat_engine::vn`):
//! `{{vn_date d}}` 25/3/2024 · `{{vn_date_long d}}` ngày 25 tháng 3 năm 2024 ·
//! `{{vn_place_date place d}}` Tuần Giáo, ngày 25 tháng 3 năm 2024 · `{{vn_time "07:30"}}` 07 giờ
//! 30 (also the time of a date-time) · `{{vn_weekday d}}` Thứ Tư · `{{number_line number type_code issuer}}` Số: 12/TB-ĐGS (or
//! the draft blank `Số:    /TB-ĐGS` when `number` is null) · `{{upper t}}` PHÓ CHỦ TỊCH ·
//! `{{rich x}}` a text with its italic and bold parts · `{{inc @index}}` 1-based positions ·
//! `{{#each (range n)}}` 1 to n · `(any list "field")` whether an item has the field.

use chrono::{NaiveDate, NaiveTime};
use giamsat_engine::vn;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason,
};
use serde_json::Value;

pub mod docx;
pub mod exporter;
pub mod html;
pub mod markup;
pub mod register;

/// A template problem, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{template}:{line}:{column}: {message}")]
pub struct TemplateError {
    pub template: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A set of templates; case data is escaped for the document markup.
#[derive(Debug)]
pub struct Templates {
    registry: Handlebars<'static>,
}

fn arg<'a>(h: &'a Helper<'_>, i: usize, name: &str) -> Result<&'a Value, RenderError> {
    h.param(i).map(|p| p.value()).ok_or_else(|| {
        RenderErrorReason::Other(format!("{name}: argument {} is missing", i + 1)).into()
    })
}

fn date(h: &Helper<'_>, i: usize, name: &str) -> Result<NaiveDate, RenderError> {
    let value = arg(h, i, name)?;
    value
        .as_str()
        .and_then(|t| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            RenderErrorReason::Other(format!("{name}: {value} is not a date (YYYY-MM-DD)")).into()
        })
}

/// A helper that computes a text from its arguments; the text goes through the format's
/// escaping, like a `{{field}}`.
fn text_helper(
    f: fn(&Helper<'_>) -> Result<String, RenderError>,
) -> Box<dyn HelperDef + Send + Sync> {
    Box::new(
        move |h: &Helper<'_>,
              r: &Handlebars<'_>,
              _: &Context,
              _: &mut RenderContext<'_, '_>,
              out: &mut dyn Output|
              -> HelperResult {
            out.write(&r.get_escape_fn()(&f(h)?))?;
            Ok(())
        },
    )
}

// `{{inc @index}}`: a number plus one (1-based positions).
handlebars::handlebars_helper!(inc: |n: u64| n + 1);
// `{{#each (range 5)}}`: the numbers 1 to n.
handlebars::handlebars_helper!(range: |n: u64| (1..=n.min(10_000)).collect::<Vec<u64>>());
// `{{#if (any columns "children")}}`: whether some item of a list has a truthy field.
handlebars::handlebars_helper!(any: |list: array, field: str| list.iter().any(|item| {
    match item.get(field) {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(t)) => !t.is_empty(),
        Some(_) => true,
    }
}));

/// `{{rich x}}`: a text with emphasised parts. `x` is a string, or an object with `text` and
/// optional `italic` and `bold` lists of substrings (the form of the workflow's start data);
/// `italic=list` and `bold=list` hash arguments add more. The text is escaped for the markup and
/// every occurrence of a listed substring is wrapped in `*...*` or `**...**`.
fn rich(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = arg(h, 0, "rich")?;
    let (text, mut italic, mut bold) = match value {
        Value::String(t) => (t.clone(), Vec::new(), Vec::new()),
        Value::Object(o) => {
            let list = |key: &str| -> Vec<String> {
                o.get(key)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let text = o.get("text").and_then(Value::as_str).ok_or_else(|| {
                RenderErrorReason::Other(format!("rich: {value} has no \"text\""))
            })?;
            (text.to_owned(), list("italic"), list("bold"))
        }
        other => {
            return Err(RenderErrorReason::Other(format!(
                "rich: {other} is neither a text nor an object with \"text\""
            ))
            .into());
        }
    };
    let extra = |name: &str| -> Vec<String> {
        h.hash_get(name)
            .and_then(|v| v.value().as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    italic.extend(extra("italic"));
    bold.extend(extra("bold"));
    out.write(&rich_markup(&text, &italic, &bold))?;
    Ok(())
}

/// `{{rich x}}` for plain text: the text alone (a string, or the `text` of an object).
fn rich_plain(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = arg(h, 0, "rich")?;
    let text = match value {
        Value::String(t) => t.as_str(),
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| RenderErrorReason::Other(format!("rich: {value} has no \"text\"")))?,
        other => {
            return Err(RenderErrorReason::Other(format!(
                "rich: {other} is neither a text nor an object with \"text\""
            ))
            .into());
        }
    };
    out.write(text)?;
    Ok(())
}

/// The markup of `text` with every occurrence of the `italic` and `bold` substrings emphasised.
pub fn rich_markup(text: &str, italic: &[String], bold: &[String]) -> String {
    // One style per character, then runs of equal style.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut style = vec![(false, false); chars.len()];
    let mut mark = |needle: &str, is_bold: bool| {
        if needle.is_empty() {
            return;
        }
        for (start, _) in text.match_indices(needle) {
            let end = start + needle.len();
            for (k, (i, _)) in chars.iter().enumerate() {
                if *i >= start && *i < end {
                    if is_bold {
                        style[k].0 = true;
                    } else {
                        style[k].1 = true;
                    }
                }
            }
        }
    };
    for i in italic {
        mark(i, false);
    }
    for b in bold {
        mark(b, true);
    }
    let mut out = String::new();
    let mut k = 0;
    while k < chars.len() {
        let s = style[k];
        let mut run = String::new();
        while k < chars.len() && style[k] == s {
            run.push(chars[k].1);
            k += 1;
        }
        let marker = match s {
            (true, true) => "***",
            (true, false) => "**",
            (false, true) => "*",
            (false, false) => "",
        };
        out.push_str(marker);
        out.push_str(&markup::escape(&run));
        out.push_str(marker);
    }
    out
}

/// Compiles every document template and partial of a workflow and checks that each partial a
/// template uses (`{{> name}}`) is declared; every problem names the file, line and column.
pub fn check_templates(workflow: &giamsat_engine::Workflow) -> Vec<TemplateError> {
    let def = &workflow.definition;
    let files = &workflow.bundle.files;
    let mut problems = Vec::new();
    let mut templates = Templates::new();
    let mut declared = std::collections::BTreeSet::new();
    let mut texts: Vec<(&str, &str)> = Vec::new();
    for p in &def.partials {
        let name = std::path::Path::new(p)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(p);
        declared.insert(name.to_owned());
        if let Some(text) = files.get(p) {
            if let Err(mut e) = templates.add_partial(name, text) {
                e.template = p.clone();
                problems.push(e);
            }
            texts.push((p, text));
        }
    }
    for d in &def.documents {
        if let Some(text) = files.get(&d.template) {
            if let Err(e) = templates.add(&d.template, text) {
                problems.push(e);
            }
            texts.push((&d.template, text));
        }
    }
    // Names of inline partials (`{{#*inline "name"}}`), which any template may use.
    let mut inline = std::collections::BTreeSet::new();
    for (_, text) in &texts {
        for part in text.split("{{#*inline").skip(1) {
            if let Some(name) = part.trim_start().strip_prefix('"')
                && let Some(end) = name.find('"')
            {
                inline.insert(name[..end].to_owned());
            }
        }
    }
    for (file, text) in texts {
        for (number, line) in text.lines().enumerate() {
            let mut rest = line;
            let mut offset = 0;
            while let Some(at) = rest.find("{{") {
                let after = &rest[at + 2..];
                let after_trim = after.trim_start_matches(['~', '#']);
                if let Some(name) = after_trim.strip_prefix('>') {
                    let name: String = name
                        .trim_start()
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '}' && *c != '~')
                        .collect();
                    // `@partial-block` and inline partials are not files.
                    if !name.is_empty()
                        && !name.starts_with('@')
                        && !inline.contains(&name)
                        && !declared.contains(&name)
                    {
                        problems.push(TemplateError {
                            template: file.to_owned(),
                            line: number + 1,
                            column: offset + at + 1,
                            message: format!(
                                "partial {name:?} is not declared (declared: {})",
                                declared.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                }
                offset += at + 2;
                rest = after;
            }
        }
    }
    problems
}

impl Default for Templates {
    fn default() -> Templates {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(markup::escape);
        registry.register_helper(
            "vn_date",
            text_helper(|h| Ok(vn::date_short(date(h, 0, "vn_date")?))),
        );
        registry.register_helper(
            "vn_date_long",
            text_helper(|h| Ok(vn::date_long(date(h, 0, "vn_date_long")?))),
        );
        registry.register_helper(
            "vn_place_date",
            text_helper(|h| {
                let place = arg(h, 0, "vn_place_date")?.as_str().unwrap_or_default();
                Ok(vn::place_date(place, date(h, 1, "vn_place_date")?))
            }),
        );
        registry.register_helper(
            "vn_time",
            text_helper(|h| {
                let value = arg(h, 0, "vn_time")?;
                // "HH:MM", or the time of day of a date-time as written ("2024-04-25T08:00:00+07:00").
                let time = value
                    .as_str()
                    .and_then(|t| {
                        NaiveTime::parse_from_str(t, "%H:%M").ok().or_else(|| {
                            chrono::DateTime::parse_from_rfc3339(t)
                                .ok()
                                .map(|d| d.time())
                        })
                    })
                    .ok_or_else(|| {
                        RenderErrorReason::Other(format!(
                            "vn_time: {value} is neither HH:MM nor a date-time"
                        ))
                    })?;
                Ok(vn::time(time))
            }),
        );
        registry.register_helper(
            "vn_weekday",
            text_helper(|h| Ok(vn::weekday(date(h, 0, "vn_weekday")?).to_owned())),
        );
        registry.register_helper(
            "number_line",
            text_helper(|h| {
                let number = arg(h, 0, "number_line")?
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok());
                let type_code = arg(h, 1, "number_line")?.as_str();
                let issuer = arg(h, 2, "number_line")?.as_str().unwrap_or_default();
                Ok(vn::number_line(number, type_code, issuer))
            }),
        );
        registry.register_helper("rich", Box::new(rich));
        registry.register_helper("inc", Box::new(inc));
        registry.register_helper("range", Box::new(range));
        registry.register_helper("any", Box::new(any));
        registry.register_helper(
            "upper",
            text_helper(|h| {
                let value = arg(h, 0, "upper")?;
                value.as_str().map(str::to_uppercase).ok_or_else(|| {
                    RenderErrorReason::Other(format!("upper: {value} is not a text")).into()
                })
            }),
        );
        Templates { registry }
    }

    /// Templates for plain text (an e-mail body or subject): the same helpers and strict mode,
    /// but nothing is escaped, and `{{rich x}}` prints the text without emphasis marks.
    pub fn plain() -> Templates {
        let mut templates = Templates::new();
        templates.registry.register_escape_fn(handlebars::no_escape);
        templates
            .registry
            .register_helper("rich", Box::new(rich_plain));
        templates
    }

    /// Adds a partial (`{{> name}}`); a syntax error names it, its line and column.
    pub fn add_partial(&mut self, name: &str, text: &str) -> Result<(), TemplateError> {
        self.registry.register_partial(name, text).map_err(|e| {
            let (line, column) = e.pos().unwrap_or((0, 0));
            TemplateError {
                template: name.to_owned(),
                line,
                column,
                message: e.reason().to_string(),
            }
        })
    }

    /// Adds a template; a syntax error names the template, line and column.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), TemplateError> {
        self.registry
            .register_template_string(name, text)
            .map_err(|e| {
                let (line, column) = e.pos().unwrap_or((0, 0));
                TemplateError {
                    template: name.to_owned(),
                    line,
                    column,
                    message: e.reason().to_string(),
                }
            })
    }

    /// Renders a template with the case data; a missing field or a bad helper argument names
    /// the template, the line and the field.
    pub fn render(&self, name: &str, data: &Value) -> Result<String, TemplateError> {
        self.registry.render(name, data).map_err(|e| TemplateError {
            template: e.template_name.clone().unwrap_or_else(|| name.to_owned()),
            line: e.line_no.unwrap_or(0),
            column: e.column_no.unwrap_or(0),
            message: e.reason().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn helpers_print_the_vietnamese_forms() {
        let mut t = Templates::new();
        t.add(
            "x",
            "{{number_line number \"TB\" \"ĐGS\"}}\n{{vn_place_date place date}}\n\
             Thời gian: {{vn_time meeting.time}}, {{vn_weekday meeting.date}} ngày {{vn_date meeting.date}} ({{vn_time meeting.at}})",
        )
        .expect("template");
        let data = json!({
            "number": null, "place": "Tuần Giáo", "date": "2024-03-25",
            "meeting": {"date": "2024-04-24", "time": "07:30", "at": "2024-04-24T14:05:00+07:00"}
        });
        let plain = |v: &Value| {
            let text = t.render("x", v).expect("render");
            let doc = markup::parse(&text).expect("markup");
            markup::to_markdown(&doc)
        };
        assert_eq!(
            plain(&data),
            "Số:    /TB-ĐGS Tuần Giáo, ngày 25 tháng 3 năm 2024 \
             Thời gian: 07 giờ 30, Thứ Tư ngày 24/4/2024 (14 giờ 05)\n"
        );
        let numbered = json!({
            "number": 12, "place": "Tuần Giáo", "date": "2024-02-05",
            "meeting": {"date": "2024-04-24", "time": "07:30", "at": "2024-04-24T07:30:00+07:00"}
        });
        assert!(
            plain(&numbered).starts_with("Số: 12/TB-ĐGS Tuần Giáo, ngày 05 tháng 02 năm 2024"),
            "{}",
            plain(&numbered)
        );
    }

    #[test]
    fn counting_helpers() {
        let mut t = Templates::new();
        t.add(
            "c",
            "{{#each items}}{{inc @index}}{{/each}} {{#each (range n)}}[{{this}}]{{/each}} \
             {{#if (any cols \"children\")}}grouped{{else}}flat{{/if}}",
        )
        .expect("template");
        let data = json!({"items": ["a", "b", "c"], "n": 2, "cols": [{"k": 1}, {"children": [1]}]});
        assert_eq!(t.render("c", &data).expect("render"), "123 [1][2] grouped");
        let flat = json!({"items": [], "n": 0, "cols": [{"children": []}]});
        assert_eq!(t.render("c", &flat).expect("render"), "  flat");
    }

    #[test]
    fn rich_text_emphasises_the_listed_parts() {
        let mut t = Templates::new();
        t.add("r", "{{rich item}} / {{rich plain italic=extra}}")
            .expect("template");
        let data = json!({
            "item": {"text": "chậm nhất vào ngày 20/4/2024 qua Email: a*b@x", "bold": ["20/4/2024"], "italic": ["a*b@x"]},
            "plain": "giai đoạn (cụ thể từng năm)", "extra": ["cụ thể từng năm"]
        });
        let text = t.render("r", &data).expect("render");
        let doc = markup::parse(&text).expect("markup");
        assert_eq!(
            markup::to_markdown(&doc),
            "chậm nhất vào ngày **20/4/2024** qua Email: *a\\*b@x* / giai đoạn (*cụ thể từng năm*)\n"
        );
    }

    #[test]
    fn a_missing_field_names_the_template_line_and_field() {
        let mut t = Templates::new();
        t.add(
            "thong-bao-lich.md.hbs",
            "Kính gửi:\n{{unit.name}}\n{{meeting.place}}\n",
        )
        .expect("template");
        let err = t
            .render(
                "thong-bao-lich.md.hbs",
                &json!({"unit": {"name": "UBND huyện"}, "meeting": {}}),
            )
            .expect_err("strict");
        assert_eq!(err.template, "thong-bao-lich.md.hbs");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("meeting.place"), "{err}");
        let err = t
            .render(
                "thong-bao-lich.md.hbs",
                &json!({"unit": {"name": "x"}, "meeting": {"place": "y"}, "d": 1}),
            )
            .map(|_| ());
        assert_eq!(err, Ok(()));
    }

    #[test]
    fn a_syntax_error_and_a_bad_date_are_located() {
        let mut t = Templates::new();
        let err = t.add("bad.hbs", "a\n{{#if x}}\nb\n").expect_err("unclosed");
        assert_eq!(err.template, "bad.hbs");
        assert!(err.line >= 2, "{err}");
        t.add("date.hbs", "\n\n{{vn_date when}}").expect("template");
        let err = t
            .render("date.hbs", &json!({"when": "25/3/2024"}))
            .expect_err("not ISO");
        assert_eq!((err.template.as_str(), err.line), ("date.hbs", 3));
        assert!(err.message.contains("not a date"), "{err}");
    }

    #[test]
    fn plain_templates_escape_nothing_and_keep_the_helpers_and_strict_mode() {
        let mut t = Templates::plain();
        t.add(
            "mail",
            "Kính gửi: {{unit}}\n{{vn_date d}} {{vn_time \"07:30\"}} {{vn_weekday d}}\n{{rich item}} {{upper x}}",
        )
        .expect("template");
        let data = json!({
            "unit": "<Phòng Nội vụ> *A* & B", "d": "2024-04-24", "x": "phó trưởng đoàn",
            "item": {"text": "chậm nhất vào ngày 20/4/2024", "bold": ["20/4/2024"]}
        });
        assert_eq!(
            t.render("mail", &data).expect("render"),
            "Kính gửi: <Phòng Nội vụ> *A* & B\n24/4/2024 07 giờ 30 Thứ Tư\n\
             chậm nhất vào ngày 20/4/2024 PHÓ TRƯỞNG ĐOÀN"
        );
        let err = t
            .render("mail", &json!({"d": "2024-04-24", "x": "a", "item": "b"}))
            .expect_err("strict");
        assert_eq!((err.template.as_str(), err.line), ("mail", 1));
        assert!(err.message.contains("unit"), "{err}");
        // The markup templates still escape.
        let mut m = Templates::new();
        m.add("p", "{{x}}").expect("template");
        assert_ne!(m.render("p", &json!({"x": "*a*"})).expect("render"), "*a*");
    }

    #[test]
    fn case_data_is_escaped_for_the_markup() {
        let mut t = Templates::new();
        t.add("p", "- **{{unit}}**").expect("template");
        let text = t
            .render("p", &json!({"unit": "<script>*x*</script> & Co"}))
            .expect("render");
        let doc = markup::parse(&text).expect("markup");
        let [markup::Block::Item { content, .. }] = doc.blocks.as_slice() else {
            panic!("{doc:?}")
        };
        assert_eq!(markup::plain(content), "<script>*x*</script> & Co");
    }
}
