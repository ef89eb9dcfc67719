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

/// Where each correction item lives in the application JSON (a material by its SHA-256).
const ITEM_POINTERS: [(&str, &str); 9] = [
    ("photo", "/materials/photo/sha256"),
    ("signature", "/materials/signature/sha256"),
    ("id_card_front", "/materials/id_card_front/sha256"),
    ("id_card_back", "/materials/id_card_back/sha256"),
    ("name", "/applicant/name"),
    ("phone", "/applicant/phone"),
    ("document", "/document"),
    ("reason", "/reason"),
    ("delivery", "/delivery"),
];

/// The correction items whose content differs between two submissions of an application (what a
/// resubmission changed), in [`CORRECTION_ITEMS`] order. Only names: no personal data.
pub fn changed_items(before: &serde_json::Value, after: &serde_json::Value) -> Vec<&'static str> {
    let same = |a: Option<&serde_json::Value>, b: Option<&serde_json::Value>| match (a, b) {
        (Some(serde_json::Value::String(a)), Some(serde_json::Value::String(b))) => {
            a.eq_ignore_ascii_case(b)
        }
        (a, b) => a == b,
    };
    ITEM_POINTERS
        .iter()
        .filter(|(_, p)| !same(before.pointer(p), after.pointer(p)))
        .map(|(item, _)| *item)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resubmission_names_what_it_changed() {
        let before = serde_json::json!({
            "applicant": {"name": "张三", "phone": "13800000000", "id_number": "x"},
            "document": {"kind": "passport", "number": "E1"},
            "reason": "expired", "delivery": {"method": "pickup"},
            "materials": {"photo": {"sha256": "AA", "bytes": 1}, "signature": {"sha256": "bb"},
                          "id_card_front": {"sha256": "cc"}, "id_card_back": {"sha256": "dd"}}});
        assert!(changed_items(&before, &before).is_empty());
        let mut after = before.clone();
        // The same file named in other case, or re-declared: not a change.
        after["materials"]["photo"] = serde_json::json!({"sha256": "aa", "bytes": 2});
        assert!(changed_items(&before, &after).is_empty());
        after["materials"]["signature"]["sha256"] = "ee".into();
        after["applicant"]["phone"] = "13900000000".into();
        after["delivery"] = serde_json::json!({"method": "courier", "recipient": "李四"});
        after["materials"]["id_card_back"] = serde_json::Value::Null;
        assert_eq!(
            changed_items(&before, &after),
            ["signature", "id_card_back", "phone", "delivery"]
        );
        for (item, _) in ITEM_POINTERS {
            assert!(correction_item_zh(item).is_some(), "{item}");
        }
    }

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
