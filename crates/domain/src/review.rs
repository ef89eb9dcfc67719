//! What a reviewer may ask the applicant to correct (`request_correction`'s `items`): the
//! materials and the parts of the application of domain.md §3, with the words the SMS uses.

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
    fn items_are_named_once_and_translated() {
        for (i, (name, zh)) in CORRECTION_ITEMS.iter().enumerate() {
            assert_eq!(correction_item_zh(name), Some(*zh));
            assert!(CORRECTION_ITEMS[i + 1..].iter().all(|(n, _)| n != name));
        }
        assert_eq!(correction_item_zh("fingerprints"), None);
    }
}
