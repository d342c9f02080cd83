//! Rendering of administrative documents from the workflow's handlebars templates (the documents
//! exporter issue; this is its template layer). Templates run in strict mode: a field the case
//! does not have is an error naming the template, the line and the field, never a silent blank.
//! Case data is escaped for the output format (HTML here; Markdown is written as is).
//!
//! Helpers (all Vietnamese forms come from `giamsat_engine::vn`):
//! `{{vn_date d}}` 25/3/2024 · `{{vn_date_long d}}` ngày 25 tháng 3 năm 2024 ·
//! `{{vn_place_date place d}}` Tuần Giáo, ngày 25 tháng 3 năm 2024 · `{{vn_time "07:30"}}` 07 giờ
//! 30 · `{{vn_weekday d}}` Thứ Tư · `{{number_line number type_code issuer}}` Số: 12/TB-ĐGS (or
//! the draft blank `Số:    /TB-ĐGS` when `number` is null).

use chrono::{NaiveDate, NaiveTime};
use giamsat_engine::vn;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason,
};
use serde_json::Value;

/// The output formats and their escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// A template problem, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{template}:{line}:{column}: {message}")]
pub struct TemplateError {
    pub template: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A set of templates for one output format.
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

impl Templates {
    pub fn new(format: Format) -> Templates {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        match format {
            Format::Markdown => registry.register_escape_fn(handlebars::no_escape),
            Format::Html => registry.register_escape_fn(handlebars::html_escape),
        }
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
                let time = value
                    .as_str()
                    .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
                    .ok_or_else(|| {
                        RenderErrorReason::Other(format!("vn_time: {value} is not HH:MM"))
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
        Templates { registry }
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
        let mut t = Templates::new(Format::Markdown);
        t.add(
            "x",
            "{{number_line number \"TB\" \"ĐGS\"}}\n{{vn_place_date place date}}\n\
             Thời gian: {{vn_time meeting.time}}, {{vn_weekday meeting.date}} ngày {{vn_date meeting.date}}",
        )
        .expect("template");
        let data = json!({
            "number": null, "place": "Tuần Giáo", "date": "2024-03-25",
            "meeting": {"date": "2024-04-24", "time": "07:30"}
        });
        assert_eq!(
            t.render("x", &data).expect("render"),
            "Số:    /TB-ĐGS\nTuần Giáo, ngày 25 tháng 3 năm 2024\n\
             Thời gian: 07 giờ 30, Thứ Tư ngày 24/4/2024"
        );
        let numbered = json!({
            "number": 12, "place": "Tuần Giáo", "date": "2024-02-05",
            "meeting": {"date": "2024-04-24", "time": "07:30"}
        });
        assert!(
            t.render("x", &numbered)
                .expect("render")
                .starts_with("Số: 12/TB-ĐGS\nTuần Giáo, ngày 05 tháng 02 năm 2024")
        );
    }

    #[test]
    fn a_missing_field_names_the_template_line_and_field() {
        let mut t = Templates::new(Format::Markdown);
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
        let mut t = Templates::new(Format::Markdown);
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
    fn case_data_is_escaped_for_html_and_printed_not_run() {
        let mut t = Templates::new(Format::Html);
        t.add("p", "<p>{{unit}}</p>").expect("template");
        assert_eq!(
            t.render("p", &json!({"unit": "<script>alert(1)</script> & Co"}))
                .expect("render"),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</p>"
        );
    }
}
