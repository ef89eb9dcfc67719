//! Eligibility: every rule of domain.md §3, each reporting its fixed reason code.
//!
//! [`assess`] returns *every* failing code, in the contract's table order. Codes that cannot be
//! computed (age, when the ID number is invalid) are not reported. `duplicate_active_application`
//! needs the store: the intake worker adds it; [`assess`] never does.

use crate::application::{Application, Category, DocumentKind, Reason};
use crate::id_number::IdNumber;
use crate::pilot::PilotCities;
use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// The fixed reason codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    InvalidIdNumber,
    #[serde(rename = "under_16")]
    Under16,
    HukouNotInPilotCity,
    CounterOnlyCategory,
    FirstApplication,
    DocumentExpired,
    NotExpiringSoon,
    NoFingerprintsOnFile,
    ReasonNotApplicable,
    IdentityNotVerified,
    OutsideMainland,
    MaterialsIncomplete,
    PhotoNonconforming,
    DuplicateActiveApplication,
}

impl ReasonCode {
    /// The code as the contract spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InvalidIdNumber => "invalid_id_number",
            ReasonCode::Under16 => "under_16",
            ReasonCode::HukouNotInPilotCity => "hukou_not_in_pilot_city",
            ReasonCode::CounterOnlyCategory => "counter_only_category",
            ReasonCode::FirstApplication => "first_application",
            ReasonCode::DocumentExpired => "document_expired",
            ReasonCode::NotExpiringSoon => "not_expiring_soon",
            ReasonCode::NoFingerprintsOnFile => "no_fingerprints_on_file",
            ReasonCode::ReasonNotApplicable => "reason_not_applicable",
            ReasonCode::IdentityNotVerified => "identity_not_verified",
            ReasonCode::OutsideMainland => "outside_mainland",
            ReasonCode::MaterialsIncomplete => "materials_incomplete",
            ReasonCode::PhotoNonconforming => "photo_nonconforming",
            ReasonCode::DuplicateActiveApplication => "duplicate_active_application",
        }
    }

    /// What the applicant is told, in Chinese, for this code.
    pub fn explanation_zh(self) -> &'static str {
        match self {
            ReasonCode::InvalidIdNumber => "公民身份号码有误",
            ReasonCode::Under16 => "未满16周岁，请到出入境窗口办理",
            ReasonCode::HukouNotInPilotCity => "户籍地不在全程网办试点城市，请到出入境窗口办理",
            ReasonCode::CounterOnlyCategory => "国家工作人员、现役军人等特殊人员请到出入境窗口办理",
            ReasonCode::FirstApplication => "首次申请请到出入境窗口办理",
            ReasonCode::DocumentExpired => "证件已过有效期，请到出入境窗口办理",
            ReasonCode::NotExpiringSoon => "证件有效期尚余6个月以上，不符合有效期不足换发条件",
            ReasonCode::NoFingerprintsOnFile => "此前申请未留存指纹，请到出入境窗口办理",
            ReasonCode::ReasonNotApplicable => "签证页用完仅适用于普通护照",
            ReasonCode::IdentityNotVerified => "未通过实人认证",
            ReasonCode::OutsideMainland => {
                "申请时须在中国内地：在境外请向驻外使领馆申请护照，通行证请回到内地后申请"
            }
            ReasonCode::MaterialsIncomplete => "申请材料不全",
            ReasonCode::PhotoNonconforming => "证件照片不符合《出入境证件相片照相指引》",
            ReasonCode::DuplicateActiveApplication => "已有同类证件申请正在办理中",
        }
    }
}

/// Photo bounds of the published photo guide; configuration, with the guide's values as default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhotoRules {
    pub content_type: String,
    pub min_width_px: u32,
    pub max_width_px: u32,
    pub min_height_px: u32,
    pub max_height_px: u32,
    pub min_bytes: u64,
    pub max_bytes: u64,
}

impl Default for PhotoRules {
    fn default() -> Self {
        PhotoRules {
            content_type: "image/jpeg".into(),
            min_width_px: 354,
            max_width_px: 480,
            min_height_px: 472,
            max_height_px: 640,
            min_bytes: 20 * 1024,
            max_bytes: 80 * 1024,
        }
    }
}

/// Everything eligibility depends on besides the application.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub pilot_cities: PilotCities,
    pub photo: PhotoRules,
}

/// The outcome for a well-formed application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Accepted,
    Rejected(Vec<ReasonCode>),
}

/// The date someone born on `birth` turns `years` old: the same month and day, or 1 March when
/// the birthday is 29 February and the year is common.
pub fn anniversary(birth: NaiveDate, years: u32) -> Option<NaiveDate> {
    let year = birth.year() + years as i32;
    NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

/// Applies every rule; returns every failing code (never `duplicate_active_application`).
pub fn assess(app: &Application, rules: &Rules) -> Vec<ReasonCode> {
    use ReasonCode::*;
    let date = app.submission_date();
    let mut codes = Vec::new();

    match IdNumber::parse(&app.applicant.id_number) {
        Err(_) => codes.push(InvalidIdNumber),
        Ok(id) if id.birth_date() > date => codes.push(InvalidIdNumber),
        Ok(id) => {
            if anniversary(id.birth_date(), 16).is_none_or(|sixteen| date < sixteen) {
                codes.push(Under16);
            }
        }
    }
    if rules
        .pilot_cities
        .city_for(&app.applicant.hukou_region, date)
        .is_none()
    {
        codes.push(HukouNotInPilotCity);
    }
    if app.applicant.category != Category::Ordinary {
        codes.push(CounterOnlyCategory);
    }
    match &app.document {
        None => codes.push(FirstApplication),
        Some(doc) => {
            if doc.expires_on < date {
                codes.push(DocumentExpired);
            }
            if app.reason == Reason::ExpiringSoon {
                let six_months = date.checked_add_months(Months::new(6));
                if six_months.is_none_or(|limit| doc.expires_on >= limit) {
                    codes.push(NotExpiringSoon);
                }
            }
            if !doc.fingerprints_on_file {
                codes.push(NoFingerprintsOnFile);
            }
            if app.reason == Reason::VisaPagesFull && doc.kind != DocumentKind::Passport {
                codes.push(ReasonNotApplicable);
            }
        }
    }
    if !app.identity_passed {
        codes.push(IdentityNotVerified);
    }
    if !app.in_mainland {
        codes.push(OutsideMainland);
    }
    let m = &app.materials;
    if m.photo.is_none()
        || m.signature.is_none()
        || m.id_card_front.is_none()
        || m.id_card_back.is_none()
    {
        codes.push(MaterialsIncomplete);
    }
    if let Some(photo) = &m.photo {
        let p = &rules.photo;
        let conforms = photo.content_type.eq_ignore_ascii_case(&p.content_type)
            && (p.min_width_px..=p.max_width_px).contains(&photo.width_px)
            && (p.min_height_px..=p.max_height_px).contains(&photo.height_px)
            && u64::from(photo.width_px) * 4 == u64::from(photo.height_px) * 3
            && (p.min_bytes..=p.max_bytes).contains(&photo.bytes);
        if !conforms {
            codes.push(PhotoNonconforming);
        }
    }
    codes
}

/// The decision for a list of failing codes.
pub fn decide(codes: Vec<ReasonCode>) -> Decision {
    if codes.is_empty() {
        Decision::Accepted
    } else {
        Decision::Rejected(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::tests::example;
    use ReasonCode::*;
    use serde_json::{Value, json};

    fn codes(edit: impl FnOnce(&mut Value)) -> Vec<ReasonCode> {
        let mut v = example();
        edit(&mut v);
        let app = Application::from_value(&v).expect("well-formed");
        assess(&app, &Rules::default())
    }

    /// An 18-character number with a correct check character for the given first 17 digits.
    fn id(first17: &str) -> String {
        format!(
            "{first17}{}",
            crate::id_number::check_character(first17).unwrap()
        )
    }

    #[test]
    fn the_contract_example_is_accepted() {
        assert_eq!(codes(|_| {}), vec![]);
    }

    #[test]
    fn id_number_rows() {
        assert_eq!(
            codes(|v| v["applicant"]["id_number"] = json!("110105199003071231")),
            vec![InvalidIdNumber]
        );
        assert_eq!(
            codes(|v| v["applicant"]["id_number"] = json!("11010519900307128x")),
            vec![]
        );
        assert_eq!(
            codes(|v| v["applicant"]["id_number"] = json!("1101051990030712")),
            vec![InvalidIdNumber]
        );
        // born after the submission date
        assert_eq!(
            codes(|v| v["applicant"]["id_number"] = json!(id("11010520270101123"))),
            vec![InvalidIdNumber]
        );
    }

    #[test]
    fn age_rows_use_the_beijing_date_and_count_the_birthday() {
        let born = id("11010520101125123"); // born 2010-11-25
        // 16th birthday is 2026-11-25 (Beijing): counts as 16.
        assert_eq!(codes(|v| v["applicant"]["id_number"] = json!(born)), vec![]);
        // 2026-11-24 23:59 Beijing: still 15.
        assert_eq!(
            codes(|v| {
                v["applicant"]["id_number"] = json!(born);
                v["submitted_at"] = json!("2026-11-24T15:59:00Z");
            }),
            vec![Under16]
        );
        // 2026-11-24 16:00 UTC is already 2026-11-25 in Beijing.
        assert_eq!(
            codes(|v| {
                v["applicant"]["id_number"] = json!(born);
                v["submitted_at"] = json!("2026-11-24T16:00:00Z");
            }),
            vec![]
        );
    }

    #[test]
    fn leap_day_birthdays() {
        let anniv = |b: &str, y: u32| anniversary(b.parse().unwrap(), y).unwrap().to_string();
        // Sixteen years after a leap year is a leap year, except across a century: 2084 → 2100.
        assert_eq!(anniv("2084-02-29", 16), "2100-03-01");
        assert_eq!(anniv("2008-02-29", 16), "2024-02-29");
        assert_eq!(anniv("2008-02-29", 17), "2025-03-01");
        assert_eq!(anniv("2009-02-28", 16), "2025-02-28");
        // Through assess: born 2008-02-29, 16 on 2024-02-29; a day earlier is under 16.
        let born = id("11010520080229123");
        let at = |ts: &str| {
            let (born, ts) = (born.clone(), ts.to_owned());
            codes(move |v| {
                v["applicant"]["id_number"] = json!(born);
                v["submitted_at"] = json!(ts);
                v["document"]["expires_on"] = json!("2024-06-01");
            })
        };
        // (2024-02 precedes the pilot's start, so hukou_not_in_pilot_city is reported as well.)
        assert_eq!(
            at("2024-02-28T12:00:00+08:00"),
            vec![Under16, HukouNotInPilotCity]
        );
        assert_eq!(at("2024-02-29T12:00:00+08:00"), vec![HukouNotInPilotCity]);
    }

    #[test]
    fn pilot_city_rows() {
        assert_eq!(
            codes(|v| v["applicant"]["hukou_region"] = json!("130202")),
            vec![HukouNotInPilotCity]
        );
        // The birth region (ID number) may differ from the hukou: only the hukou counts.
        assert_eq!(
            codes(|v| v["applicant"]["id_number"] = json!(id("42010219900307123"))),
            vec![]
        );
        assert_eq!(
            codes(|v| v["applicant"]["hukou_region"] = json!("370116")),
            vec![]
        );
        // Changchun joined on 2025-11-20.
        assert_eq!(
            codes(|v| {
                v["applicant"]["hukou_region"] = json!("220102");
                v["submitted_at"] = json!("2025-11-19T12:00:00+08:00");
                v["document"]["expires_on"] = json!("2026-03-01");
            }),
            vec![HukouNotInPilotCity]
        );
        assert_eq!(
            codes(|v| {
                v["applicant"]["hukou_region"] = json!("220102");
                v["submitted_at"] = json!("2025-11-20T00:00:00+08:00");
                v["document"]["expires_on"] = json!("2026-03-01");
            }),
            vec![]
        );
    }

    #[test]
    fn category_rows() {
        for c in ["state_functionary", "active_military", "special"] {
            assert_eq!(
                codes(|v| v["applicant"]["category"] = json!(c)),
                vec![CounterOnlyCategory],
                "{c}"
            );
        }
    }

    #[test]
    fn document_rows() {
        assert_eq!(
            codes(|v| v["document"] = json!(null)),
            vec![FirstApplication]
        );
        // expired the day before submission; also not expiring soon? it is expiring (< 6 months),
        // so only document_expired.
        assert_eq!(
            codes(|v| v["document"]["expires_on"] = json!("2026-11-24")),
            vec![DocumentExpired]
        );
        // the last valid day is the submission day: still valid
        assert_eq!(
            codes(|v| v["document"]["expires_on"] = json!("2026-11-25")),
            vec![]
        );
        assert_eq!(
            codes(|v| v["document"]["fingerprints_on_file"] = json!(false)),
            vec![NoFingerprintsOnFile]
        );
    }

    #[test]
    fn six_months_rows_with_month_end_clamping() {
        // 2026-11-25 + 6 months = 2027-05-25: on that date fails, the day before passes.
        assert_eq!(
            codes(|v| v["document"]["expires_on"] = json!("2027-05-25")),
            vec![NotExpiringSoon]
        );
        assert_eq!(
            codes(|v| v["document"]["expires_on"] = json!("2027-05-24")),
            vec![]
        );
        // Other reasons do not care how long the document has left.
        assert_eq!(
            codes(|v| {
                v["document"]["expires_on"] = json!("2030-01-01");
                v["reason"] = json!("damaged");
            }),
            vec![]
        );
        // 31 Aug + 6 months clamps to 28 Feb (common year) and 29 Feb (leap year).
        let at = |submitted: &str, expires: &str| {
            let (s, e) = (submitted.to_owned(), expires.to_owned());
            codes(move |v| {
                v["submitted_at"] = json!(s);
                v["document"]["expires_on"] = json!(e);
            })
        };
        assert_eq!(
            at("2026-08-31T10:00:00+08:00", "2027-02-28"),
            vec![NotExpiringSoon]
        );
        assert_eq!(at("2026-08-31T10:00:00+08:00", "2027-02-27"), vec![]);
        assert_eq!(
            at("2027-08-31T10:00:00+08:00", "2028-02-29"),
            vec![NotExpiringSoon]
        );
        assert_eq!(at("2027-08-31T10:00:00+08:00", "2028-02-28"), vec![]);
    }

    #[test]
    fn visa_pages_full_is_for_passports_only() {
        assert_eq!(codes(|v| v["reason"] = json!("visa_pages_full")), vec![]);
        for kind in ["hk_macao_permit", "taiwan_permit"] {
            assert_eq!(
                codes(|v| {
                    v["reason"] = json!("visa_pages_full");
                    v["document"]["kind"] = json!(kind);
                }),
                vec![ReasonNotApplicable]
            );
        }
    }

    #[test]
    fn identity_mainland_and_materials_rows() {
        assert_eq!(
            codes(|v| v["identity_check"]["passed"] = json!(false)),
            vec![IdentityNotVerified]
        );
        assert_eq!(
            codes(|v| v["in_mainland"] = json!(false)),
            vec![OutsideMainland]
        );
        for m in ["photo", "signature", "id_card_front", "id_card_back"] {
            assert_eq!(
                codes(|v| drop(v["materials"].as_object_mut().unwrap().remove(m))),
                vec![MaterialsIncomplete],
                "{m}"
            );
        }
        assert_eq!(
            codes(|v| v["materials"] = json!(null)),
            vec![MaterialsIncomplete]
        );
    }

    #[test]
    fn photo_rows_at_every_bound() {
        let photo = |ct: &str, w: u32, h: u32, bytes: u64| {
            let ct = ct.to_owned();
            codes(move |v| {
                v["materials"]["photo"] = json!({"sha256": "ab".repeat(32), "content_type": ct, "bytes": bytes, "width_px": w, "height_px": h});
            })
        };
        assert_eq!(photo("image/jpeg", 354, 472, 20_480), vec![]);
        assert_eq!(photo("image/jpeg", 480, 640, 81_920), vec![]);
        assert_eq!(
            photo("image/jpeg", 354, 472, 20_479),
            vec![PhotoNonconforming]
        );
        assert_eq!(
            photo("image/jpeg", 354, 472, 81_921),
            vec![PhotoNonconforming]
        );
        assert_eq!(
            photo("image/png", 354, 472, 40_000),
            vec![PhotoNonconforming]
        );
        assert_eq!(
            photo("image/jpeg", 353, 472, 40_000),
            vec![PhotoNonconforming]
        );
        assert_eq!(
            photo("image/jpeg", 484, 645, 40_000),
            vec![PhotoNonconforming]
        ); // 3:4 but too big
        assert_eq!(
            photo("image/jpeg", 400, 500, 40_000),
            vec![PhotoNonconforming]
        ); // not 3:4
        assert_eq!(photo("image/jpeg", 360, 480, 40_000), vec![]);
    }

    #[test]
    fn every_failing_code_is_reported_in_table_order() {
        let got = codes(|v| {
            v["applicant"]["hukou_region"] = json!("130202");
            v["applicant"]["category"] = json!("special");
            v["document"]["expires_on"] = json!("2026-01-01");
            v["document"]["fingerprints_on_file"] = json!(false);
            v["identity_check"]["passed"] = json!(false);
            v["in_mainland"] = json!(false);
            v["materials"]["photo"]["content_type"] = json!("image/png");
            drop(v["materials"].as_object_mut().unwrap().remove("signature"));
        });
        assert_eq!(
            got,
            vec![
                HukouNotInPilotCity,
                CounterOnlyCategory,
                DocumentExpired,
                NoFingerprintsOnFile,
                IdentityNotVerified,
                OutsideMainland,
                MaterialsIncomplete,
                PhotoNonconforming
            ]
        );
    }

    #[test]
    fn age_is_not_reported_when_the_id_number_is_invalid() {
        assert_eq!(
            codes(|v| v["applicant"]["id_number"] = json!("110105201011251230")),
            vec![InvalidIdNumber]
        );
    }

    #[test]
    fn codes_serialise_as_the_contract_spells_them() {
        for code in [
            InvalidIdNumber,
            Under16,
            PhotoNonconforming,
            DuplicateActiveApplication,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }
}
