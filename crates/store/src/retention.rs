//! Retention: the personal data of a case is kept while it is needed — until a set time after the
//! case closed — then its application's personal fields are erased. The case, its timeline and
//! its audit chain stay (no audit record holds personal data), and the erasure is recorded on the
//! chain (`personal_data_erased`). Dead letters older than the same time lose their payloads (a
//! malformed application's body carries personal data too).

use crate::{Store, StoreError};
use serde_json::{Value, json};
use wangban_domain::ids::CaseId;

/// The personal fields of an application (domain.md §3), as JSON pointers.
const PERSONAL: [&str; 7] = [
    "/applicant/id_number",
    "/applicant/name",
    "/applicant/phone",
    "/document/number",
    "/delivery/recipient",
    "/delivery/phone",
    "/delivery/address",
];

/// `application` with its personal fields set to null; the fields that were there.
pub fn erase_personal_data(application: &mut Value) -> Vec<&'static str> {
    let mut erased = Vec::new();
    for pointer in PERSONAL {
        if let Some(v) = application.pointer_mut(pointer)
            && !v.is_null()
        {
            *v = Value::Null;
            erased.push(pointer);
        }
    }
    erased
}

/// What a retention pass erased (or, dry, would erase).
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct Erased {
    /// Closed cases whose personal fields were erased.
    pub cases: u64,
    /// Dead letters whose payloads were dropped.
    pub dead_letters: u64,
    /// Closed before this (ms since the Unix epoch): the cut-off of the pass.
    pub closed_before: i64,
}

impl Store {
    /// Erases the personal data of the cases closed more than `keep` ago, and the payloads of
    /// dead letters last seen that long ago; with `dry_run`, only counts them.
    pub async fn erase_expired(
        &self,
        keep: std::time::Duration,
        dry_run: bool,
    ) -> Result<Erased, StoreError> {
        let before = self.clock.now_ms() - keep.as_millis() as i64;
        let mut out = Erased {
            closed_before: before,
            ..Erased::default()
        };
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT case_id FROM cases WHERE is_open = 0 AND erased_at IS NULL AND state_since < $1",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        let dead: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dead_letters WHERE last_at < $1 AND LENGTH(payload) > 0",
        )
        .bind(before)
        .fetch_one(&self.pool)
        .await?;
        if dry_run {
            out.cases = due.len() as u64;
            out.dead_letters = dead as u64;
            return Ok(out);
        }
        for (case,) in due {
            let id: CaseId = case.parse().map_err(StoreError::Data)?;
            let mut tx = self.begin().await?;
            // Locked and looked at again: another process may have erased it meanwhile.
            let Some(record) = tx.load_case(&id).await? else {
                continue;
            };
            let still: Option<i64> =
                sqlx::query_scalar("SELECT erased_at FROM cases WHERE case_id = $1")
                    .bind(id.as_str())
                    .fetch_one(tx.conn())
                    .await?;
            if still.is_some() {
                continue;
            }
            let mut application: Value =
                serde_json::from_str(&record.application).unwrap_or(Value::Null);
            let fields = erase_personal_data(&mut application);
            tx.replace_application(&id, &application.to_string())
                .await?;
            let now = self.clock.now_ms();
            sqlx::query("UPDATE cases SET erased_at = $1 WHERE case_id = $2")
                .bind(now)
                .bind(id.as_str())
                .execute(tx.conn())
                .await?;
            let detail = json!({"fields": fields, "closed_before": before});
            tx.append_audit(&id, "personal_data_erased", None, &detail)
                .await?;
            tx.commit().await?;
            out.cases += 1;
        }
        // An empty payload marks a dead letter whose body retention dropped.
        out.dead_letters = sqlx::query(
            "UPDATE dead_letters SET payload = $1 WHERE last_at < $2 AND LENGTH(payload) > 0",
        )
        .bind(Vec::<u8>::new())
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(out)
    }
}

impl Store {
    /// Marks the materials of `case` erased and records it on the case's chain.
    pub async fn materials_erased(&self, case: &str, erased: usize) -> Result<(), StoreError> {
        let id: CaseId = case.parse().map_err(StoreError::Data)?;
        let mut tx = self.begin().await?;
        if tx.load_case(&id).await?.is_none() {
            return Ok(());
        }
        sqlx::query("UPDATE cases SET materials_erased_at = $1 WHERE case_id = $2")
            .bind(self.clock.now_ms())
            .bind(case)
            .execute(tx.conn())
            .await?;
        tx.append_audit(&id, "materials_erased", None, &json!({"files": erased}))
            .await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_personal_fields_are_erased_and_named() {
        let mut app = json!({
            "application_id": "A-1",
            "applicant": {"id_number": "110105199001011234", "name": "张三", "phone": "13800000000",
                          "hukou_region": "110105", "category": "ordinary"},
            "document": {"kind": "passport", "number": "E12345678", "expires_on": "2027-01-01"},
            "delivery": {"method": "courier", "recipient": "张三", "phone": "13800000000",
                         "address": {"street": "某路1号"}},
            "identity_check": {"passed": true},
        });
        let fields = erase_personal_data(&mut app);
        assert_eq!(fields.len(), 7);
        let text = app.to_string();
        for personal in [
            "110105199001011234",
            "张三",
            "13800000000",
            "E12345678",
            "某路1号",
        ] {
            assert!(!text.contains(personal), "{personal} left in {text}");
        }
        assert_eq!(app["document"]["kind"], "passport");
        assert_eq!(app["applicant"]["hukou_region"], "110105");
        assert!(
            erase_personal_data(&mut app).is_empty(),
            "nothing left to erase"
        );
    }
}
