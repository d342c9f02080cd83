//! Vietnamese forms of what pages show: dates and times (`giamsat_engine::vn`), labels from the
//! workflow definition (stages, entity states, events, roles), field names of command inputs,
//! rates with a decimal comma, and URL encoding of path segments.

use chrono::{DateTime, FixedOffset, NaiveDate};
use chrono_tz::Tz;
use giamsat_engine::{Workflow, vn};
use serde_json::Value;

use crate::auth::Role;

/// What a role is called on the pages.
pub(crate) fn role_label(role: Role) -> &'static str {
    match role {
        Role::Admin => "Quản trị",
        Role::Secretariat => "Văn phòng HĐND",
        Role::Delegation => "Đoàn giám sát",
        Role::Unit => "Đơn vị chịu giám sát",
        Role::Viewer => "Người xem",
    }
}

/// `25/3/2024` from a date or the start of a date-time.
pub(crate) fn date_text(text: &str) -> Option<String> {
    let date = NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()?;
    Some(vn::date_short(date))
}

/// `Thứ Năm, 25/4/2024`.
pub(crate) fn weekday_date_text(text: &str) -> Option<String> {
    let date = NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()?;
    Some(format!("{}, {}", vn::weekday(date), vn::date_short(date)))
}

/// A date-time in the workflow's zone: `18/4/2024 09:00`.
pub(crate) fn date_time_text(text: &str, tz: Tz) -> Option<String> {
    let at = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&tz);
    Some(format!(
        "{} {}",
        vn::date_short(at.date_naive()),
        at.format("%H:%M")
    ))
}

/// A date-time for a `datetime-local` input, in the workflow's zone: `2024-04-18T09:00`.
pub(crate) fn local_input(at: DateTime<FixedOffset>, tz: Tz) -> String {
    at.with_timezone(&tz).format("%Y-%m-%dT%H:%M").to_string()
}

/// A date-time value as a page shows it: a date-time, a date, or the text itself.
pub(crate) fn when_text(text: &str, tz: Tz) -> String {
    date_time_text(text, tz)
        .or_else(|| (text.len() == 10).then(|| date_text(text)).flatten())
        .unwrap_or_else(|| text.to_owned())
}

/// On-time over total as a percentage with one decimal and a decimal comma (`98,3%`); no rate
/// for a total of zero.
pub(crate) fn rate_text(on_time: u64, total: u64) -> Option<String> {
    if total == 0 {
        return None;
    }
    // Rounded half up in tenths of a percent, in integers (no float rounding surprises).
    let tenths = (on_time * 2000 + total) / (total * 2);
    Some(format!("{},{}%", tenths / 10, tenths % 10))
}

/// A byte count for people: `1 MB`, `512 KB`.
pub(crate) fn size_text(bytes: usize) -> String {
    const MB: usize = 1024 * 1024;
    if bytes == 0 {
        "cho phép".to_owned()
    } else if bytes >= MB && bytes.is_multiple_of(MB) {
        format!("{} MB", bytes / MB)
    } else if bytes >= MB {
        format!("{:.1} MB", bytes as f64 / MB as f64).replace('.', ",")
    } else if bytes >= 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} byte")
    }
}

pub(crate) fn stage_label(workflow: &Workflow, stage: &str) -> String {
    workflow
        .definition
        .stages
        .iter()
        .find(|s| s.id.value == stage)
        .map_or_else(|| stage.to_owned(), |s| s.label.clone())
}

pub(crate) fn collection_label(workflow: &Workflow, collection: &str) -> String {
    workflow
        .definition
        .entities
        .iter()
        .find(|c| c.id.value == collection)
        .map_or_else(|| collection.to_owned(), |c| c.label.clone())
}

pub(crate) fn state_label(workflow: &Workflow, collection: &str, state: &str) -> String {
    workflow
        .definition
        .entities
        .iter()
        .find(|c| c.id.value == collection)
        .and_then(|c| c.states.iter().find(|s| s.id.value == state))
        .map_or_else(|| state.to_owned(), |s| s.label.clone())
}

pub(crate) fn event_label(workflow: &Workflow, event_type: &str) -> String {
    workflow
        .definition
        .events
        .iter()
        .find(|e| e.event_type.value == event_type)
        .map_or_else(|| event_type.to_owned(), |e| e.label.clone())
}

pub(crate) fn command_label(workflow: &Workflow, command: &str) -> String {
    match command {
        "start" => "Khởi tạo hồ sơ".to_owned(),
        _ => workflow
            .command(command)
            .map_or_else(|| command.to_owned(), |c| c.label.clone()),
    }
}

/// The label of an actor's role: the workflow's (`Văn phòng HĐND`), else the role itself.
pub(crate) fn workflow_role_label(workflow: &Workflow, role: &str) -> String {
    workflow
        .definition
        .roles
        .iter()
        .find(|r| r.id.value == role)
        .map_or_else(|| role.to_owned(), |r| r.label.clone())
}

/// What a command's input field is called on a form. A schema `title` wins; these are the
/// fields of the workflows in `workflows/`.
pub(crate) fn field_label(name: &str, schema: &Value) -> String {
    if let Some(title) = schema.get("title").and_then(Value::as_str) {
        return title.to_owned();
    }
    let label = match name {
        "issued_on" => "Ngày ban hành",
        "document" => "Mã văn bản trong hồ sơ",
        "note" | "notes" => "Ghi chú",
        "unit" => "Đơn vị",
        "reason" => "Lý do",
        "received_at" => "Thời gian nhận báo cáo",
        "channel" => "Hình thức gửi",
        "file" => "Tệp báo cáo",
        "phu_luc_03" => "Phụ lục 03: tiếp nhận và giải quyết thủ tục hành chính",
        "year" => "Năm",
        "field" => "Lĩnh vực",
        "total" => "Tổng số",
        "on_time" => "Số giải quyết đúng hạn",
        "due_on" => "Hạn gửi",
        "held_at" => "Thời gian tổ chức",
        "attendees" => "Thành phần tham dự (mỗi người một dòng)",
        "started_at" => "Thời gian bắt đầu",
        "visit_date" => "Ngày giám sát",
        "date" => "Ngày",
        "start_time" => "Giờ bắt đầu",
        "minutes_summary" => "Tóm tắt biên bản",
        "id" => "Mã",
        "member" => "Thành viên Đoàn",
        "text" => "Nội dung",
        "summary" => "Tóm tắt kết quả giám sát",
        "recommendations" => "Kiến nghị",
        "to" => "Gửi đến",
        "number" => "Số văn bản",
        "responsible" => "Cơ quan chịu trách nhiệm",
        "deliverable" => "Sản phẩm, kết quả cần đạt",
        "deadline" => "Hạn thực hiện",
        "recommendation" => "Kiến nghị",
        "status" => "Kết quả thực hiện",
        "evidence" => "Minh chứng",
        "reported_at" => "Thời gian báo cáo",
        "closed_on" => "Ngày kết thúc",
        "archived_on" => "Ngày nộp lưu",
        "file_code" => "Mã hồ sơ lưu trữ",
        "place" => "Địa điểm",
        "body" => "Cơ quan",
        "question" => "Nội dung yêu cầu giải trình",
        "answer" => "Nội dung giải trình",
        "request" => "Yêu cầu",
        _ => return name.replace('_', " "),
    };
    label.to_owned()
}

/// What an enum value of an input field is called on a form, when the workflow does not label
/// it as an entity state.
pub(crate) fn choice_label(field: &str, value: &str) -> String {
    let label = match (field, value) {
        ("channel", "paper") => "Bản giấy",
        ("channel", "email") => "Thư điện tử (bản điện tử)",
        ("field", "all") => "Tất cả hồ sơ thủ tục hành chính",
        ("field", "land") => "Lĩnh vực đất đai",
        ("field", "construction") => "Lĩnh vực xây dựng",
        (_, "completed") => "Hoàn thành",
        (_, "partly_completed") => "Hoàn thành một phần",
        (_, "not_completed") => "Chưa hoàn thành",
        (_, "not_done") => "Không thực hiện (đã giải trình)",
        (_, "unsatisfactory") => "Chưa đáp ứng yêu cầu",
        _ => return value.to_owned(),
    };
    label.to_owned()
}

/// A path segment, percent-encoded (ids are ASCII in practice; this keeps any other safe).
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query-string value, percent-encoded (`/` kept, so local paths stay readable).
pub(crate) fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name an entity goes by: its `name`, the name of the unit it is about (with its date), a
/// short text, or its key.
pub(crate) fn entity_name(
    key: &str,
    data: &Value,
    unit_names: &dyn Fn(&str) -> Option<String>,
) -> String {
    if let Some(name) = data.get("name").and_then(Value::as_str) {
        return name.to_owned();
    }
    if let Some(unit) = data.get("unit").and_then(Value::as_str)
        && let Some(name) = unit_names(unit)
    {
        return match data.get("date").and_then(Value::as_str).and_then(date_text) {
            Some(date) => format!("{name} ({date})"),
            None => name,
        };
    }
    for field in ["text", "title", "label", "summary"] {
        if let Some(text) = data.get(field).and_then(Value::as_str) {
            return format!("{key}: {}", shorten(text, 80));
        }
    }
    key.to_owned()
}

/// At most `max` characters, with an ellipsis when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_a_decimal_comma_and_no_rate_without_a_total() {
        assert_eq!(rate_text(118, 120).as_deref(), Some("98,3%"));
        assert_eq!(rate_text(38, 40).as_deref(), Some("95,0%"));
        assert_eq!(rate_text(1, 3).as_deref(), Some("33,3%"));
        assert_eq!(rate_text(2, 3).as_deref(), Some("66,7%"));
        assert_eq!(rate_text(5, 5).as_deref(), Some("100,0%"));
        assert_eq!(rate_text(0, 7).as_deref(), Some("0,0%"));
        assert_eq!(rate_text(0, 0), None);
    }

    #[test]
    fn dates_and_times_read_the_vietnamese_way() {
        let tz: Tz = "Asia/Ho_Chi_Minh".parse().expect("zone");
        assert_eq!(date_text("2024-04-20").as_deref(), Some("20/4/2024"));
        assert_eq!(date_text("2024-02-05").as_deref(), Some("05/02/2024"));
        assert_eq!(
            weekday_date_text("2024-04-29").as_deref(),
            Some("Thứ Hai, 29/4/2024")
        );
        assert_eq!(
            date_time_text("2024-04-18T02:00:00Z", tz).as_deref(),
            Some("18/4/2024 09:00")
        );
        assert_eq!(when_text("2024-04-18", tz), "18/4/2024");
        assert_eq!(when_text("sớm", tz), "sớm");
        assert_eq!(size_text(1024 * 1024), "1 MB");
        assert_eq!(size_text(2048), "2 KB");
    }

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(encode_segment("xa-quai-to"), "xa-quai-to");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_query("/ho-so/tg2024?x=1"), "/ho-so/tg2024%3Fx%3D1");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
