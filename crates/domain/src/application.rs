//! The application the portal hands to intake (domain.md §3), parsed into types.
//!
//! Parsing separates two things the contract keeps apart: a message that is *not a well-formed
//! application* (not JSON, a required field missing, a wrong type, an unknown enum value) is
//! [`Malformed`] and gets no decision; a well-formed one is an [`Application`], which eligibility
//! then accepts or rejects. Every malformed field is reported, each named by its JSON path.
//! Unknown extra fields are ignored, so the portal can extend the contract compatibly.

use crate::ids::ApplicationId;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The applicant's category; only `ordinary` may apply online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Ordinary,
    StateFunctionary,
    ActiveMilitary,
    Special,
}

/// The three documents of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Passport,
    HkMacaoPermit,
    TaiwanPermit,
}

impl DocumentKind {
    /// The contract's name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Passport => "passport",
            DocumentKind::HkMacaoPermit => "hk_macao_permit",
            DocumentKind::TaiwanPermit => "taiwan_permit",
        }
    }

    /// Permits issued online carry no endorsement; every SMS about one says so.
    pub fn is_permit(self) -> bool {
        !matches!(self, DocumentKind::Passport)
    }

    /// The Chinese name used in applicant messages.
    pub fn name_zh(self) -> &'static str {
        match self {
            DocumentKind::Passport => "普通护照",
            DocumentKind::HkMacaoPermit => "往来港澳通行证",
            DocumentKind::TaiwanPermit => "往来台湾通行证",
        }
    }
}

/// Why the applicant asks for a new document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ExpiringSoon,
    Damaged,
    Lost,
    Stolen,
    VisaPagesFull,
}

/// How the new document reaches the applicant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMethod {
    Courier,
    Pickup,
}

impl DeliveryMethod {
    /// The contract's name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMethod::Courier => "courier",
            DeliveryMethod::Pickup => "pickup",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Applicant {
    /// Raw, as sent: its validity is an eligibility rule (`invalid_id_number`), not a parse error.
    pub id_number: String,
    pub name: String,
    pub phone: String,
    pub hukou_region: String,
    pub category: Category,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeldDocument {
    pub kind: DocumentKind,
    pub number: String,
    pub expires_on: NaiveDate,
    pub fingerprints_on_file: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Material {
    pub sha256: String,
    pub content_type: String,
    pub bytes: u64,
    pub width_px: u32,
    pub height_px: u32,
}

/// The four uploads; a missing one is an eligibility failure (`materials_incomplete`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Materials {
    pub photo: Option<Material>,
    pub signature: Option<Material>,
    pub id_card_front: Option<Material>,
    pub id_card_back: Option<Material>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Address {
    pub province: String,
    pub city: String,
    pub district: String,
    pub street: String,
    pub postcode: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    Courier {
        recipient: String,
        phone: String,
        address: Address,
    },
    Pickup,
}

impl Delivery {
    pub fn method(&self) -> DeliveryMethod {
        match self {
            Delivery::Courier { .. } => DeliveryMethod::Courier,
            Delivery::Pickup => DeliveryMethod::Pickup,
        }
    }
}

/// A well-formed application.
#[derive(Clone, Debug, PartialEq)]
pub struct Application {
    pub application_id: ApplicationId,
    pub submitted_at: DateTime<FixedOffset>,
    pub applicant: Applicant,
    pub identity_passed: bool,
    pub in_mainland: bool,
    pub document: Option<HeldDocument>,
    pub reason: Reason,
    pub materials: Materials,
    pub delivery: Delivery,
}

/// Beijing time is UTC+8 all year.
pub fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The Beijing calendar date of a store timestamp (milliseconds since the Unix epoch).
pub fn beijing_date(ms: i64) -> NaiveDate {
    use chrono::TimeZone;
    beijing()
        .timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| chrono::Utc::now().date_naive(), |t| t.date_naive())
}

/// The first instant of `date` in Beijing, in milliseconds since the Unix epoch.
pub fn beijing_midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
        - 8 * 3_600_000
}

impl Application {
    /// The Beijing calendar date of `submitted_at`: every date rule uses it.
    pub fn submission_date(&self) -> NaiveDate {
        self.submitted_at.with_timezone(&beijing()).date_naive()
    }

    /// `submitted_at` in UTC.
    pub fn submitted_at_utc(&self) -> DateTime<Utc> {
        self.submitted_at.with_timezone(&Utc)
    }

    /// The kind of document applied for (the held document's kind), if known.
    pub fn document_kind(&self) -> Option<DocumentKind> {
        self.document.as_ref().map(|d| d.kind)
    }

    /// Parses the contract's JSON; on failure names every malformed field.
    pub fn parse(bytes: &[u8]) -> Result<Application, Malformed> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Malformed(vec![format!("not valid JSON: {}", json_error_position(&e))]))?;
        Application::from_value(&value)
    }

    /// Like [`Application::from_value`], but a field the contract does not define is malformed
    /// too (named by its JSON path) — for deployments that want the portal to send exactly the
    /// contract (`WANGBAN_UNKNOWN_FIELDS=refuse`).
    pub fn from_value_strict(value: &Value) -> Result<Application, Malformed> {
        let unknown = unknown_fields(value);
        match Application::from_value(value) {
            Ok(app) if unknown.is_empty() => Ok(app),
            Ok(_) => Err(Malformed(unknown)),
            Err(Malformed(mut errors)) => {
                errors.extend(unknown);
                Err(Malformed(errors))
            }
        }
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(value: &Value) -> Result<Application, Malformed> {
        let mut r = Reader::default();
        let Some(root) = r.object(Some(value), "") else {
            return Err(Malformed(r.errors));
        };
        let application_id = r.string(root, "application_id", "").and_then(|s| {
            ApplicationId::parse(&s)
                .map_err(|e| r.push("application_id", &e))
                .ok()
        });
        let submitted_at = r.string(root, "submitted_at", "").and_then(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map_err(|_| r.push("submitted_at", "must be an RFC 3339 date-time"))
                .ok()
        });
        let applicant = r.object(root.get("applicant"), "applicant").and_then(|a| {
            let id_number = r.string(a, "id_number", "applicant.");
            let name = r.nonempty(a, "name", "applicant.");
            let phone = r.phone(a, "phone", "applicant.");
            let hukou_region = r.string(a, "hukou_region", "applicant.").and_then(|s| {
                if s.len() == 6 && s.chars().all(|c| c.is_ascii_digit()) {
                    Some(s)
                } else {
                    r.push("applicant.hukou_region", "must be a 6-digit division code");
                    None
                }
            });
            let category = r.enumeration::<Category>(a, "category", "applicant.");
            Some(Applicant {
                id_number: id_number?,
                name: name?,
                phone: phone?,
                hukou_region: hukou_region?,
                category: category?,
            })
        });
        let identity_passed = r
            .object(root.get("identity_check"), "identity_check")
            .and_then(|o| r.boolean(o, "passed", "identity_check."));
        let in_mainland = r.boolean(root, "in_mainland", "");
        let document = match root.get("document") {
            None | Some(Value::Null) => Some(None),
            Some(v) => r.object(Some(v), "document").and_then(|d| {
                let kind = r.enumeration::<DocumentKind>(d, "kind", "document.");
                let number = r.nonempty(d, "number", "document.");
                let expires_on = r.string(d, "expires_on", "document.").and_then(|s| {
                    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                        .map_err(|_| r.push("document.expires_on", "must be a date YYYY-MM-DD"))
                        .ok()
                });
                let fingerprints = r.boolean(d, "fingerprints_on_file", "document.");
                Some(Some(HeldDocument {
                    kind: kind?,
                    number: number?,
                    expires_on: expires_on?,
                    fingerprints_on_file: fingerprints?,
                }))
            }),
        };
        let reason = r.enumeration::<Reason>(root, "reason", "");
        let materials = match root.get("materials") {
            None | Some(Value::Null) => Some(Materials::default()),
            Some(v) => r.object(Some(v), "materials").map(|m| Materials {
                photo: r.material(m, "photo"),
                signature: r.material(m, "signature"),
                id_card_front: r.material(m, "id_card_front"),
                id_card_back: r.material(m, "id_card_back"),
            }),
        };
        let delivery = r.object(root.get("delivery"), "delivery").and_then(|d| {
            match r.enumeration::<DeliveryMethod>(d, "method", "delivery.")? {
                DeliveryMethod::Pickup => Some(Delivery::Pickup),
                DeliveryMethod::Courier => {
                    let recipient = r.nonempty(d, "recipient", "delivery.");
                    let phone = r.phone(d, "phone", "delivery.");
                    let address = r
                        .object(d.get("address"), "delivery.address")
                        .and_then(|a| {
                            let p = "delivery.address.";
                            Some(Address {
                                province: r.nonempty(a, "province", p)?,
                                city: r.nonempty(a, "city", p)?,
                                district: r.nonempty(a, "district", p)?,
                                street: r.nonempty(a, "street", p)?,
                                postcode: r.string(a, "postcode", p)?,
                            })
                        });
                    Some(Delivery::Courier {
                        recipient: recipient?,
                        phone: phone?,
                        address: address?,
                    })
                }
            }
        });
        if !r.errors.is_empty() {
            return Err(Malformed(r.errors));
        }
        match (
            application_id,
            submitted_at,
            applicant,
            identity_passed,
            in_mainland,
            document,
            reason,
            materials,
            delivery,
        ) {
            (
                Some(application_id),
                Some(submitted_at),
                Some(applicant),
                Some(identity_passed),
                Some(in_mainland),
                Some(document),
                Some(reason),
                Some(materials),
                Some(delivery),
            ) => Ok(Application {
                application_id,
                submitted_at,
                applicant,
                identity_passed,
                in_mainland,
                document,
                reason,
                materials,
                delivery,
            }),
            _ => Err(Malformed(vec!["application is incomplete".into()])),
        }
    }
}

/// A message that is not a well-formed application; each entry names a field and what is wrong,
/// and never quotes the value (it may be personal data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed application: {}", .0.join("; "))]
pub struct Malformed(pub Vec<String>);

fn json_error_position(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// The fields of the contract (domain.md §3), by object path.
const KNOWN_FIELDS: [(&str, &[&str]); 8] = [
    (
        "",
        &[
            "application_id",
            "submitted_at",
            "applicant",
            "identity_check",
            "in_mainland",
            "document",
            "reason",
            "materials",
            "delivery",
        ],
    ),
    (
        "applicant",
        &["id_number", "name", "phone", "hukou_region", "category"],
    ),
    ("identity_check", &["passed", "checked_at"]),
    (
        "document",
        &["kind", "number", "expires_on", "fingerprints_on_file"],
    ),
    (
        "materials",
        &["photo", "signature", "id_card_front", "id_card_back"],
    ),
    (
        "material",
        &["sha256", "content_type", "bytes", "width_px", "height_px"],
    ),
    ("delivery", &["method", "recipient", "phone", "address"]),
    (
        "delivery.address",
        &["province", "city", "district", "street", "postcode"],
    ),
];

/// `path: unknown field` for every field of `value` the contract does not define.
pub fn unknown_fields(value: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, schema: &str, out: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            return;
        };
        let Some((_, known)) = KNOWN_FIELDS.iter().find(|(p, _)| *p == schema) else {
            return;
        };
        for (key, child) in object {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if !known.contains(&key.as_str()) {
                out.push(format!("{child_path}: unknown field"));
                continue;
            }
            let child_schema = match schema {
                "materials" => "material".to_owned(),
                "" => key.clone(),
                s => format!("{s}.{key}"),
            };
            walk(child, &child_path, &child_schema, out);
        }
    }
    let mut out = Vec::new();
    walk(value, "", "", &mut out);
    out
}

/// Walks a JSON object, collecting one error per malformed field.
#[derive(Default)]
struct Reader {
    errors: Vec<String>,
}

impl Reader {
    fn push(&mut self, path: &str, what: &str) {
        self.errors.push(format!("{path}: {what}"));
    }

    fn field<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<&'v Value> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                self.push(&format!("{prefix}{key}"), "is required");
                None
            }
            Some(v) => Some(v),
        }
    }

    fn object<'v>(&mut self, v: Option<&'v Value>, path: &str) -> Option<&'v Map<String, Value>> {
        let name = if path.is_empty() { "application" } else { path };
        match v {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) => {
                self.push(name, "is required");
                None
            }
            Some(_) => {
                self.push(name, "must be an object");
                None
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, prefix: &str) -> Option<String> {
        match self.field(obj, key, prefix)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.push(&format!("{prefix}{key}"), "must be a string");
                None
            }
        }
    }

    fn nonempty(&mut self, obj: &Map<String, Value>, key: &str, prefix: &str) -> Option<String> {
        let s = self.string(obj, key, prefix)?;
        if s.trim().is_empty() {
            self.push(&format!("{prefix}{key}"), "must not be empty");
            return None;
        }
        Some(s)
    }

    fn phone(&mut self, obj: &Map<String, Value>, key: &str, prefix: &str) -> Option<String> {
        let s = self.string(obj, key, prefix)?;
        if s.len() == 11 && s.starts_with('1') && s.chars().all(|c| c.is_ascii_digit()) {
            Some(s)
        } else {
            self.push(
                &format!("{prefix}{key}"),
                "must be an 11-digit mainland mobile number",
            );
            None
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, key: &str, prefix: &str) -> Option<bool> {
        match self.field(obj, key, prefix)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.push(&format!("{prefix}{key}"), "must be true or false");
                None
            }
        }
    }

    fn unsigned(&mut self, obj: &Map<String, Value>, key: &str, prefix: &str) -> Option<u64> {
        match self.field(obj, key, prefix)? {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            _ => {
                self.push(&format!("{prefix}{key}"), "must be a non-negative integer");
                None
            }
        }
    }

    fn enumeration<T: serde::de::DeserializeOwned>(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<T> {
        let v = self.field(obj, key, prefix)?;
        match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(_) => {
                let what = if v.is_string() {
                    "is not a known value"
                } else {
                    "must be a string"
                };
                self.push(&format!("{prefix}{key}"), what);
                None
            }
        }
    }

    fn material(&mut self, m: &Map<String, Value>, key: &str) -> Option<Material> {
        let path = format!("materials.{key}");
        let obj = match m.get(key) {
            None | Some(Value::Null) => return None,
            Some(v) => self.object(Some(v), &path)?,
        };
        let p = format!("{path}.");
        let sha256 = self.string(obj, "sha256", &p).and_then(|s| {
            if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
                Some(s.to_ascii_lowercase())
            } else {
                self.push(&format!("{p}sha256"), "must be 64 hex characters");
                None
            }
        });
        let content_type = self.nonempty(obj, "content_type", &p);
        let bytes = self.unsigned(obj, "bytes", &p);
        let width = self.unsigned(obj, "width_px", &p);
        let height = self.unsigned(obj, "height_px", &p);
        let mut dim = |v: Option<u64>, name: &str| -> Option<u32> {
            let v = v?;
            u32::try_from(v)
                .map_err(|_| self.push(&format!("{p}{name}"), "is too large"))
                .ok()
        };
        let (width_px, height_px) = (dim(width, "width_px"), dim(height, "height_px"));
        Some(Material {
            sha256: sha256?,
            content_type: content_type?,
            bytes: bytes?,
            width_px: width_px?,
            height_px: height_px?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The example of domain.md §3, as a JSON value tests can edit.
    pub fn example() -> Value {
        let hex = "ab".repeat(32);
        json!({
          "application_id": "PORTAL-2026-000123",
          "submitted_at": "2026-11-25T09:30:00+08:00",
          "applicant": {
            "id_number": "11010519900307128X", "name": "张三", "phone": "13800138000",
            "hukou_region": "110105", "category": "ordinary"
          },
          "identity_check": { "passed": true, "checked_at": "2026-11-25T09:28:00+08:00" },
          "in_mainland": true,
          "document": { "kind": "passport", "number": "E12345678", "expires_on": "2027-03-01",
                        "fingerprints_on_file": true },
          "reason": "expiring_soon",
          "materials": {
            "photo": { "sha256": hex, "content_type": "image/jpeg", "bytes": 45000, "width_px": 354, "height_px": 472 },
            "signature": { "sha256": hex, "content_type": "image/jpeg", "bytes": 30000, "width_px": 600, "height_px": 300 },
            "id_card_front": { "sha256": hex, "content_type": "image/jpeg", "bytes": 200000, "width_px": 1200, "height_px": 760 },
            "id_card_back": { "sha256": hex, "content_type": "image/jpeg", "bytes": 200000, "width_px": 1200, "height_px": 760 }
          },
          "delivery": {
            "method": "courier", "recipient": "张三", "phone": "13800138000",
            "address": { "province": "北京市", "city": "北京市", "district": "朝阳区",
                         "street": "建国路 1 号", "postcode": "100020" }
          }
        })
    }

    fn errors_of(v: &Value) -> Vec<String> {
        Application::from_value(v)
            .expect_err("should be malformed")
            .0
    }

    #[test]
    fn the_contract_example_parses() {
        let app = Application::from_value(&example()).unwrap();
        assert_eq!(app.application_id.as_str(), "PORTAL-2026-000123");
        assert_eq!(app.document_kind(), Some(DocumentKind::Passport));
        assert_eq!(app.delivery.method(), DeliveryMethod::Courier);
        assert!(app.materials.photo.is_some());
    }

    #[test]
    fn beijing_date_decides() {
        let mut v = example();
        v["submitted_at"] = json!("2026-11-24T16:30:00Z"); // 00:30 on the 25th in Beijing
        let app = Application::from_value(&v).unwrap();
        assert_eq!(
            app.submission_date(),
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
        );
        v["submitted_at"] = json!("2026-11-24T15:59:59Z"); // 23:59:59 on the 24th
        let app = Application::from_value(&v).unwrap();
        assert_eq!(
            app.submission_date(),
            NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
        );
    }

    #[test]
    fn each_malformed_field_is_named() {
        type Edit = fn(&mut Value);
        let cases: Vec<(Edit, &str)> = vec![
            (
                |v| {
                    v["applicant"]
                        .as_object_mut()
                        .unwrap()
                        .remove("phone")
                        .map(drop)
                        .unwrap()
                },
                "applicant.phone: is required",
            ),
            (
                |v| v["applicant"]["category"] = json!("vip"),
                "applicant.category: is not a known value",
            ),
            (
                |v| v["document"]["kind"] = json!("visa"),
                "document.kind: is not a known value",
            ),
            (|v| v["reason"] = json!(3), "reason: must be a string"),
            (
                |v| v["in_mainland"] = json!("yes"),
                "in_mainland: must be true or false",
            ),
            (
                |v| v["submitted_at"] = json!("yesterday"),
                "submitted_at: must be an RFC 3339 date-time",
            ),
            (
                |v| v["application_id"] = json!("has space"),
                "application_id: may contain only",
            ),
            (
                |v| v["applicant"]["hukou_region"] = json!("1101"),
                "applicant.hukou_region: must be a 6-digit",
            ),
            (
                |v| v["delivery"]["method"] = json!("drone"),
                "delivery.method: is not a known value",
            ),
            (
                |v| {
                    v["delivery"]
                        .as_object_mut()
                        .unwrap()
                        .remove("address")
                        .map(drop)
                        .unwrap()
                },
                "delivery.address: is required",
            ),
            (
                |v| v["materials"]["photo"]["bytes"] = json!(-1),
                "materials.photo.bytes: must be a non-negative integer",
            ),
            (
                |v| v["materials"]["photo"]["sha256"] = json!("xyz"),
                "materials.photo.sha256: must be 64 hex",
            ),
            (
                |v| v["document"]["expires_on"] = json!("2027-02-30"),
                "document.expires_on: must be a date",
            ),
            (
                |v| v["identity_check"] = json!(null),
                "identity_check: is required",
            ),
        ];
        for (edit, want) in cases {
            let mut v = example();
            edit(&mut v);
            let errors = errors_of(&v);
            assert!(
                errors.iter().any(|e| e.starts_with(want)),
                "want {want:?} in {errors:?}"
            );
        }
    }

    #[test]
    fn every_error_is_reported_and_none_quotes_personal_data() {
        let mut v = example();
        v["applicant"]["phone"] = json!("13800138000x");
        v["reason"] = json!("bored");
        let errors = errors_of(&v);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("13800138000")));
    }

    #[test]
    fn not_json_and_not_an_object() {
        assert!(Application::parse(b"{not json").unwrap_err().0[0].starts_with("not valid JSON"));
        assert_eq!(
            Application::parse(b"[1]").unwrap_err().0,
            vec!["application: must be an object"]
        );
    }

    #[test]
    fn null_document_and_missing_materials_are_well_formed() {
        let mut v = example();
        v["document"] = json!(null);
        v["materials"].as_object_mut().unwrap().remove("signature");
        let app = Application::from_value(&v).unwrap();
        assert!(app.document.is_none());
        assert!(app.materials.signature.is_none());
        v.as_object_mut().unwrap().remove("document");
        assert!(Application::from_value(&v).unwrap().document.is_none());
    }

    #[test]
    fn pickup_needs_no_address_and_unknown_fields_are_ignored() {
        let mut v = example();
        v["delivery"] = json!({"method": "pickup"});
        v["portal_extension"] = json!({"anything": 1});
        assert_eq!(
            Application::from_value(&v).unwrap().delivery,
            Delivery::Pickup
        );
    }

    #[test]
    fn strict_parsing_names_every_unknown_field_by_path() {
        assert!(Application::from_value_strict(&example()).is_ok());
        let mut v = example();
        v["portal_extension"] = json!(1);
        v["applicant"]["nickname"] = json!("x");
        v["materials"]["photo"]["exif"] = json!({});
        v["delivery"]["address"]["floor"] = json!(3);
        let Malformed(errors) = Application::from_value_strict(&v).unwrap_err();
        let mut errors = errors;
        errors.sort();
        assert_eq!(
            errors,
            [
                "applicant.nickname: unknown field",
                "delivery.address.floor: unknown field",
                "materials.photo.exif: unknown field",
                "portal_extension: unknown field",
            ]
        );
        // Malformed fields and unknown ones are reported together.
        v["applicant"]["phone"] = json!(5);
        let Malformed(errors) = Application::from_value_strict(&v).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("applicant.phone")),
            "{errors:?}"
        );
        assert_eq!(errors.len(), 5, "{errors:?}");
    }
}

#[cfg(test)]
mod hostile_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never crash the parser: they parse or are refused with named errors.
        #[test]
        fn arbitrary_bytes_are_refused_not_crashed(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Err(Malformed(errors)) = Application::parse(&bytes) {
                prop_assert!(!errors.is_empty());
            }
        }

        /// Any mutation of a valid application's fields (wrong types, huge numbers, strings where
        /// objects belong) is either still well-formed or refused naming the field.
        #[test]
        fn mutated_fields_are_named(path in 0usize..12, value in prop_oneof![
            Just(serde_json::json!(null)), Just(serde_json::json!(1e308)), Just(serde_json::json!(-1)),
            Just(serde_json::json!(u64::MAX)), Just(serde_json::json!("")), Just(serde_json::json!([])),
            Just(serde_json::json!({})), Just(serde_json::json!(true)), ".{0,40}".prop_map(serde_json::Value::String),
        ]) {
            let fields = ["application_id", "submitted_at", "applicant", "identity_check", "in_mainland",
                          "document", "reason", "materials", "delivery", "applicant/id_number",
                          "materials/photo/bytes", "delivery/address"];
            let mut v = tests::example();
            let target = fields[path];
            let mut slot = &mut v;
            for part in target.split('/') {
                slot = &mut slot[part];
            }
            *slot = value;
            match Application::from_value(&v) {
                Ok(_) => {}
                Err(Malformed(errors)) => {
                    let head = target.split('/').next().unwrap();
                    prop_assert!(errors.iter().any(|e| e.starts_with(head)), "{errors:?} for {target}");
                }
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            Application::parse(deep.as_bytes()).unwrap_err().0[0].starts_with("not valid JSON")
        );
        let mut v = tests::example();
        let mut nested = serde_json::json!(1);
        for _ in 0..100 {
            nested = serde_json::json!({"n": nested});
        }
        v["applicant"]["name"] = nested;
        assert_eq!(
            Application::from_value(&v).unwrap_err().0,
            vec!["applicant.name: must be a string"]
        );
    }
}
