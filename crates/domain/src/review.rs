//! Rules of manual review: the review clock (a decision within N working days of the task, or
//! the task is escalated and the case counts as a breach), and what a reviewer may ask the
//! applicant to correct (`request_correction`'s `items`: the materials and the parts of the
//! application of domain.md §3, with the words the SMS uses).

use crate::application::{beijing_date, beijing_midnight};
use crate::calendar::{CalendarError, WorkingCalendar};

/// Whether a review that began at `since` (ms since the Unix epoch) has, at `now`, waited more
/// than `working_days` working days: the working days after its Beijing date up to today's.
pub fn review_clock_ran_out(
    calendar: &WorkingCalendar,
    since: i64,
    now: i64,
    working_days: u32,
) -> Result<bool, CalendarError> {
    Ok(calendar.working_days_between(beijing_date(since), beijing_date(now))? > working_days)
}

/// The instant [`review_clock_ran_out`] turns true for a review that began at `since`: the first
/// moment (Beijing time) of the day on which it has waited more than `working_days`.
pub fn review_clock_runs_out_at(
    calendar: &WorkingCalendar,
    since: i64,
    working_days: u32,
) -> Result<i64, CalendarError> {
    let day = calendar.add_working_days(beijing_date(since), working_days + 1)?;
    Ok(beijing_midnight(day))
}

/// Every correction item: (name in the API, name in the applicant's SMS).
pub const CORRECTION_ITEMS: [(&str, &str); 9] = [
    ("photo", "证件照片"),
    ("signature", "签名照片"),
    ("id_card_front", "身份证人像面照片"),
    ("id_card_back", "身份证国徽面照片"),
    ("name", "姓名"),
    ("phone", "手机号码"),
    ("document", "原证件信息"),
    ("reason", "申请事由"),
    ("delivery", "领取方式及邮寄信息"),
];

/// The applicant's words for correction item `item`, or `None` for an unknown item.
pub fn correction_item_zh(item: &str) -> Option<&'static str> {
    CORRECTION_ITEMS
        .iter()
        .find(|(name, _)| *name == item)
        .map(|(_, zh)| *zh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_clock_runs_out_at_the_instant_it_is_found_run_out() {
        let calendar = WorkingCalendar::default();
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        for since in [
            "2026-09-28T10:00:00+08:00",
            "2026-09-30T23:59:00+08:00",
            "2026-10-08T10:00:00+08:00",
            "2026-11-29T16:30:00Z",
        ] {
            let due = review_clock_runs_out_at(&calendar, at(since), 2).unwrap();
            assert!(
                !review_clock_ran_out(&calendar, at(since), due - 1, 2).unwrap(),
                "{since}"
            );
            assert!(
                review_clock_ran_out(&calendar, at(since), due, 2).unwrap(),
                "{since}"
            );
        }
    }

    #[test]
    fn items_are_named_once_and_translated() {
        for (i, (name, zh)) in CORRECTION_ITEMS.iter().enumerate() {
            assert_eq!(correction_item_zh(name), Some(*zh));
            assert!(CORRECTION_ITEMS[i + 1..].iter().all(|(n, _)| n != name));
        }
        assert_eq!(correction_item_zh("fingerprints"), None);
    }
}
