//! The working-day calendar: Saturdays and Sundays off, plus each year's public holidays and the
//! Saturdays worked in exchange ("làm bù"). The data comes from calendar files (read by the caller;
//! the engine does no I/O). A year the calendar does not cover falls back to weekends only, and
//! callers can say so with [`Calendar::covers`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;

/// One calendar file: a year's holidays and make-up working days.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarYear {
    pub year: i32,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub holidays: Vec<Holiday>,
    #[serde(default)]
    pub make_up_days: Vec<MakeUpDay>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holiday {
    pub name: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(default)]
    pub source: String,
    #[serde(default = "yes")]
    pub confirmed: bool,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakeUpDay {
    pub date: NaiveDate,
    #[serde(default)]
    pub replaces: Option<NaiveDate>,
    pub name: String,
    #[serde(default)]
    pub source: String,
    #[serde(default = "yes")]
    pub confirmed: bool,
    #[serde(default)]
    pub note: String,
}

fn yes() -> bool {
    true
}

/// Days off and make-up working days of the years it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeSet<i32>,
    off: BTreeMap<NaiveDate, String>,
    make_up: BTreeMap<NaiveDate, String>,
}

impl Calendar {
    /// Weekends only, for every year.
    pub fn weekends_only() -> Calendar {
        Calendar::default()
    }

    /// Builds a calendar; problems (a holiday outside its year, a range backwards, a year twice)
    /// are returned with the year they concern.
    pub fn from_years(years: &[CalendarYear]) -> Result<Calendar, String> {
        let mut calendar = Calendar::default();
        for y in years {
            if !calendar.years.insert(y.year) {
                return Err(format!("calendar year {} is given twice", y.year));
            }
            // Unconfirmed entries are kept in the file for people to see; until an official notice
            // confirms them, the day counts as it would without them.
            for h in y.holidays.iter().filter(|h| h.confirmed) {
                if h.to < h.from {
                    return Err(format!(
                        "{}: holiday {:?} ends before it starts",
                        y.year, h.name
                    ));
                }
                if h.from.year() != y.year && h.to.year() != y.year {
                    return Err(format!(
                        "{}: holiday {:?} is not in {}",
                        y.year, h.name, y.year
                    ));
                }
                let mut day = h.from;
                while day <= h.to {
                    calendar.off.insert(day, h.name.clone());
                    day = day + Days::new(1);
                }
            }
            for m in y.make_up_days.iter().filter(|m| m.confirmed) {
                if !matches!(m.date.weekday(), Weekday::Sat | Weekday::Sun) {
                    return Err(format!(
                        "{}: make-up working day {} is not a weekend day",
                        y.year, m.date
                    ));
                }
                calendar.make_up.insert(m.date, m.name.clone());
            }
        }
        Ok(calendar)
    }

    /// Whether the calendar has data for the year of `date` (else only weekends are known).
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.years.contains(&date.year())
    }

    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.make_up.contains_key(&date) {
            return true;
        }
        if self.off.contains_key(&date) {
            return false;
        }
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// Why a day is off: the holiday's name, "Thứ Bảy" or "Chủ nhật"; `None` for a working day.
    pub fn day_off_reason(&self, date: NaiveDate) -> Option<String> {
        if self.is_working_day(date) {
            return None;
        }
        Some(self.off.get(&date).cloned().unwrap_or_else(|| {
            match date.weekday() {
                Weekday::Sat => "Thứ Bảy",
                _ => "Chủ nhật",
            }
            .to_owned()
        }))
    }

    /// The date `n` working days after (`n > 0`) or before (`n < 0`) `date`; `n = 0` is `date`.
    pub fn add_working_days(&self, date: NaiveDate, n: i64) -> NaiveDate {
        let mut day = date;
        let mut left = n.unsigned_abs();
        while left > 0 {
            day = if n > 0 {
                day + Days::new(1)
            } else {
                day - Days::new(1)
            };
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        day
    }

    /// The last working day strictly before `date`.
    pub fn previous_working_day(&self, date: NaiveDate) -> NaiveDate {
        self.add_working_days(date, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("date")
    }

    /// The 2024 facts of DOMAIN.md §4 (30/4–1/5 with Monday 29/4 swapped for Saturday 4/5).
    fn may_2024() -> Calendar {
        Calendar::from_years(&[CalendarYear {
            year: 2024,
            sources: vec![],
            holidays: vec![Holiday {
                name: "Ngày Chiến thắng và Quốc tế Lao động".into(),
                from: d(2024, 4, 27),
                to: d(2024, 5, 1),
                source: String::new(),
                confirmed: true,
                note: String::new(),
            }],
            make_up_days: vec![MakeUpDay {
                date: d(2024, 5, 4),
                replaces: Some(d(2024, 4, 29)),
                name: "Làm bù".into(),
                source: String::new(),
                confirmed: true,
                note: String::new(),
            }],
        }])
        .expect("valid")
    }

    #[test]
    fn holidays_and_make_up_days() {
        let c = may_2024();
        assert!(
            !c.is_working_day(d(2024, 4, 29)),
            "Monday 29/4/2024 was swapped off"
        );
        assert!(
            c.is_working_day(d(2024, 5, 4)),
            "Saturday 4/5/2024 was worked"
        );
        assert!(!c.is_working_day(d(2024, 5, 5)));
        assert_eq!(
            c.day_off_reason(d(2024, 4, 30)).as_deref(),
            Some("Ngày Chiến thắng và Quốc tế Lao động")
        );
        assert_eq!(c.day_off_reason(d(2024, 4, 20)).as_deref(), Some("Thứ Bảy"));
        assert!(c.covers(d(2024, 1, 1)) && !c.covers(d(2027, 1, 1)));
    }

    #[test]
    fn working_day_arithmetic() {
        let c = may_2024();
        // Friday 26/4 + 1 working day skips the break to Thursday 2/5.
        assert_eq!(c.add_working_days(d(2024, 4, 26), 1), d(2024, 5, 2));
        // Three working days before the Saturday deadline 20/4/2024: Wed 17/4 (weekends only here;
        // Giỗ Tổ on 18/4 is not in this test calendar).
        assert_eq!(c.add_working_days(d(2024, 4, 20), -3), d(2024, 4, 17));
        assert_eq!(c.previous_working_day(d(2024, 5, 6)), d(2024, 5, 4));
        assert_eq!(c.add_working_days(d(2024, 5, 6), 0), d(2024, 5, 6));
    }

    #[test]
    fn bad_files_are_refused() {
        let mut y = CalendarYear {
            year: 2024,
            sources: vec![],
            holidays: vec![],
            make_up_days: vec![],
        };
        y.make_up_days.push(MakeUpDay {
            date: d(2024, 5, 6),
            replaces: None,
            name: "x".into(),
            source: String::new(),
            confirmed: true,
            note: String::new(),
        });
        assert!(Calendar::from_years(&[y]).is_err_and(|e| e.contains("not a weekend day")));
    }
}
