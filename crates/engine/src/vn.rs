//! Vietnamese forms of dates, times, weekdays and document numbers as administrative documents
//! print them (Nghị định 30/2020/NĐ-CP; `../shared/DOMAIN.md` §5). Used by warnings now and by
//! the document templates' helpers.
//!
//! The leading-zero rule: days below 10 and the months January and February take a leading zero
//! ("ngày 05 tháng 02 năm 2024", "05/02/2024"), other months do not ("tháng 3", "25/3/2024").

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike, Weekday};

fn month(date: NaiveDate) -> String {
    let m = date.month();
    if m <= 2 {
        format!("{m:02}")
    } else {
        m.to_string()
    }
}

/// `25/3/2024`, `05/02/2024`.
pub fn date_short(date: NaiveDate) -> String {
    format!("{:02}/{}/{}", date.day(), month(date), date.year())
}

/// `ngày 25 tháng 3 năm 2024`, `ngày 05 tháng 02 năm 2024`.
pub fn date_long(date: NaiveDate) -> String {
    format!(
        "ngày {:02} tháng {} năm {}",
        date.day(),
        month(date),
        date.year()
    )
}

/// The place-and-date line under the number: `Tuần Giáo, ngày 25 tháng 3 năm 2024`.
pub fn place_date(place: &str, date: NaiveDate) -> String {
    format!("{place}, {}", date_long(date))
}

/// `07 giờ 30`, `14 giờ 00`.
pub fn time(time: NaiveTime) -> String {
    format!("{:02} giờ {:02}", time.hour(), time.minute())
}

/// `Thứ Hai` … `Thứ Bảy`, `Chủ nhật`.
pub fn weekday(date: NaiveDate) -> &'static str {
    match date.weekday() {
        Weekday::Mon => "Thứ Hai",
        Weekday::Tue => "Thứ Ba",
        Weekday::Wed => "Thứ Tư",
        Weekday::Thu => "Thứ Năm",
        Weekday::Fri => "Thứ Sáu",
        Weekday::Sat => "Thứ Bảy",
        Weekday::Sun => "Chủ nhật",
    }
}

/// The number-and-symbol line: `Số: 12/TB-ĐGS`; a document without a number yet (a draft, or
/// signed but not registered) shows the blank the seed shows, `Số:    /TB-ĐGS`. A công văn has no
/// type code: `Số: 245/HĐND-VP`.
pub fn number_line(number: Option<u32>, type_code: Option<&str>, issuer: &str) -> String {
    let symbol = match type_code {
        Some(code) if !code.is_empty() => format!("{code}-{issuer}"),
        _ => issuer.to_owned(),
    };
    match number {
        // Numbers run from 01: the first nine take a leading zero.
        Some(n) => format!("Số: {n:02}/{symbol}"),
        None => format!("Số:    /{symbol}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("date")
    }

    #[test]
    fn dates_follow_the_leading_zero_rule() {
        assert_eq!(date_long(d(2024, 3, 25)), "ngày 25 tháng 3 năm 2024");
        assert_eq!(date_long(d(2024, 2, 5)), "ngày 05 tháng 02 năm 2024");
        assert_eq!(date_long(d(2024, 12, 1)), "ngày 01 tháng 12 năm 2024");
        assert_eq!(date_short(d(2024, 4, 20)), "20/4/2024");
        assert_eq!(date_short(d(2024, 5, 2)), "02/5/2024");
        assert_eq!(date_short(d(2022, 1, 1)), "01/01/2022");
        assert_eq!(
            place_date("Tuần Giáo", d(2024, 3, 25)),
            "Tuần Giáo, ngày 25 tháng 3 năm 2024"
        );
    }

    #[test]
    fn times_weekdays_and_numbers() {
        let t = NaiveTime::from_hms_opt(7, 30, 0).expect("time");
        assert_eq!(time(t), "07 giờ 30");
        assert_eq!(weekday(d(2024, 4, 24)), "Thứ Tư");
        assert_eq!(weekday(d(2024, 4, 28)), "Chủ nhật");
        assert_eq!(number_line(None, Some("TB"), "ĐGS"), "Số:    /TB-ĐGS");
        assert_eq!(number_line(Some(12), Some("TB"), "ĐGS"), "Số: 12/TB-ĐGS");
        assert_eq!(number_line(Some(3), Some("KH"), "ĐGS"), "Số: 03/KH-ĐGS");
        assert_eq!(number_line(Some(245), None, "HĐND-VP"), "Số: 245/HĐND-VP");
    }
}
