//! The working-day calendar: Monday–Friday, minus statutory holidays, plus make-up working days
//! (调休上班), from data (`data/calendar.json`), never from code. A date in a year the data does
//! not cover is an error the operator sees, never a silent guess.

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Deserialize)]
struct Year {
    #[serde(default)]
    source: String,
    holidays: BTreeSet<NaiveDate>,
    makeup_working_days: BTreeSet<NaiveDate>,
}

/// The working-day calendar for the years it has data for.
#[derive(Clone, Debug, Deserialize)]
pub struct WorkingCalendar {
    years: BTreeMap<i32, Year>,
}

/// A question the calendar cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "the working-day calendar has no data for {0}: add the year's holiday notice to the calendar file"
    )]
    NoData(i32),
    #[error("calendar file: {0}")]
    Invalid(String),
}

const SHIPPED: &str = include_str!("../data/calendar.json");

impl Default for WorkingCalendar {
    fn default() -> Self {
        WorkingCalendar::from_json(SHIPPED).expect("the shipped calendar parses")
    }
}

impl WorkingCalendar {
    /// Parses a calendar of the shape of `data/calendar.json`, checking every date lies in its year
    /// and that no date is both a holiday and a make-up working day.
    pub fn from_json(text: &str) -> Result<WorkingCalendar, CalendarError> {
        let cal: WorkingCalendar =
            serde_json::from_str(text).map_err(|e| CalendarError::Invalid(e.to_string()))?;
        for (year, data) in &cal.years {
            let stray = data
                .holidays
                .iter()
                .chain(&data.makeup_working_days)
                .find(|d| d.year() != *year);
            if let Some(d) = stray {
                return Err(CalendarError::Invalid(format!(
                    "{d} is listed under {year}"
                )));
            }
            if let Some(d) = data.holidays.intersection(&data.makeup_working_days).next() {
                return Err(CalendarError::Invalid(format!(
                    "{d} is both a holiday and a working day"
                )));
            }
        }
        Ok(cal)
    }

    /// The years the calendar covers, with the notice each comes from.
    pub fn years(&self) -> impl Iterator<Item = (i32, &str)> {
        self.years.iter().map(|(y, d)| (*y, d.source.as_str()))
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        let year = self
            .years
            .get(&date.year())
            .ok_or(CalendarError::NoData(date.year()))?;
        if year.makeup_working_days.contains(&date) {
            return Ok(true);
        }
        if year.holidays.contains(&date) {
            return Ok(false);
        }
        Ok(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun))
    }

    /// The date `n` working days after `start` (the start day itself is not counted): the
    /// deadline of a promise of `n` working days made on `start`.
    pub fn add_working_days(&self, start: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut date = start;
        let mut left = n;
        while left > 0 {
            date = date
                .succ_opt()
                .ok_or(CalendarError::NoData(date.year() + 1))?;
            if self.is_working_day(date)? {
                left -= 1;
            }
        }
        Ok(date)
    }

    /// The number of working days after `from` up to and including `to` (0 when `to <= from`).
    pub fn working_days_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<u32, CalendarError> {
        let mut count = 0;
        let mut date = from;
        while date < to {
            date = date
                .succ_opt()
                .ok_or(CalendarError::NoData(date.year() + 1))?;
            if self.is_working_day(date)? {
                count += 1;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn table_of_working_days() {
        let cal = WorkingCalendar::default();
        let rows = [
            ("2026-01-01", false), // New Year holiday, Thursday
            ("2026-01-04", true),  // make-up working Sunday
            ("2026-02-14", true),  // make-up Saturday
            ("2026-02-16", false), // Spring Festival Monday
            ("2026-02-24", true),  // first day back
            ("2026-02-28", true),  // make-up Saturday
            ("2026-03-01", false), // ordinary Sunday
            ("2026-10-08", true),  // after National Day
            ("2026-10-10", true),  // make-up Saturday
            ("2026-11-25", true),  // ordinary Wednesday
            ("2026-11-28", false), // ordinary Saturday
            ("2025-01-26", true),  // 2025 make-up Sunday
            ("2025-10-08", false), // 2025 National Day ends on the 8th
            ("2025-10-11", true),
        ];
        for (date, working) in rows {
            assert_eq!(cal.is_working_day(d(date)), Ok(working), "{date}");
        }
    }

    #[test]
    fn three_working_days_across_holidays() {
        let cal = WorkingCalendar::default();
        // Paid Friday 2026-02-13: Sat 14 (make-up) = 1, then holidays 15–23, Tue 24 = 2, Wed 25 = 3.
        assert_eq!(
            cal.add_working_days(d("2026-02-13"), 3),
            Ok(d("2026-02-25"))
        );
        // Paid Wednesday 2026-09-30: Oct 1–7 holiday, Thu 8 = 1, Fri 9 = 2, Sat 10 (make-up) = 3.
        assert_eq!(
            cal.add_working_days(d("2026-09-30"), 3),
            Ok(d("2026-10-10"))
        );
        assert_eq!(
            cal.add_working_days(d("2026-11-25"), 0),
            Ok(d("2026-11-25"))
        );
        assert_eq!(
            cal.working_days_between(d("2026-02-13"), d("2026-02-25")),
            Ok(3)
        );
    }

    #[test]
    fn a_year_without_data_is_an_error() {
        let cal = WorkingCalendar::default();
        assert_eq!(
            cal.is_working_day(d("2027-01-04")),
            Err(CalendarError::NoData(2027))
        );
        assert_eq!(
            cal.add_working_days(d("2026-12-30"), 3),
            Err(CalendarError::NoData(2027))
        );
    }

    #[test]
    fn inconsistent_files_are_refused() {
        let both = r#"{"years":{"2026":{"holidays":["2026-01-01"],"makeup_working_days":["2026-01-01"]}}}"#;
        assert!(WorkingCalendar::from_json(both).is_err());
        let stray = r#"{"years":{"2026":{"holidays":["2025-01-01"],"makeup_working_days":[]}}}"#;
        assert!(WorkingCalendar::from_json(stray).is_err());
    }
}
