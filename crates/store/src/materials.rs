//! The materials each submission of a case named (schema v12, `case_materials`): what the reviewer
//! API may serve for a case, what changed between review rounds, and what retention erases.
//! Submission 1 is the application; each accepted resubmission is the next, reviewed in the round
//! of the same number.

use crate::tx::CaseTx;
use crate::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use wangban_domain::ids::CaseId;
use wangban_domain::materials::NAMES;

/// One material one submission of a case named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseMaterial {
    pub submission: i64,
    pub material: String,
    /// Lowercase: the name of the file in the materials store.
    pub sha256: String,
}

/// A stored file that did not hash to its name, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MaterialProblem {
    pub sha256: String,
    pub case_id: Option<String>,
    /// What read it: `intake` or `review`.
    pub seen_by: String,
    pub first_at: i64,
    pub last_at: i64,
    pub times: i64,
}

const RECORD_PROBLEM: &str = "INSERT INTO material_problems (sha256, case_id, seen_by, first_at, last_at, times) \
     VALUES ($1, $2, $3, $4, $4, 1) ON CONFLICT (sha256) DO UPDATE SET case_id = excluded.case_id, \
     seen_by = excluded.seen_by, last_at = excluded.last_at, times = material_problems.times + 1";

/// `(material, name)` of each material `application` declares with a SHA-256.
pub fn declared(application: &Value) -> Vec<(&'static str, String)> {
    NAMES
        .iter()
        .filter_map(|m| {
            let name = application["materials"][m]["sha256"].as_str()?;
            Some((*m, name.to_ascii_lowercase()))
        })
        .collect()
}

impl CaseTx {
    /// Records the materials `application` names as the case's submission `submission`.
    pub(crate) async fn record_submission(
        &mut self,
        case_id: &CaseId,
        application: &str,
        submission: i64,
    ) -> Result<(), StoreError> {
        self.flush().await?;
        let app: Value = serde_json::from_str(application).unwrap_or(Value::Null);
        for (material, name) in declared(&app) {
            sqlx::query(
                "INSERT INTO case_materials (case_id, submission, material, sha256) VALUES ($1, $2, $3, $4)",
            )
            .bind(case_id.as_str())
            .bind(submission)
            .bind(material)
            .bind(name)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// The number the case's next submission gets (1 for the application itself).
    pub(crate) async fn next_submission(&mut self, case_id: &CaseId) -> Result<i64, StoreError> {
        self.flush().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(submission) FROM case_materials WHERE case_id = $1")
                .bind(case_id.as_str())
                .fetch_one(self.conn())
                .await?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Records that the file `sha256`, read for `case_id` by `seen_by`, did not hash to its name.
    pub async fn record_material_problem(
        &mut self,
        sha256: &str,
        case_id: &CaseId,
        seen_by: &str,
    ) -> Result<(), StoreError> {
        self.flush().await?;
        sqlx::query(RECORD_PROBLEM)
            .bind(sha256)
            .bind(case_id.as_str())
            .bind(seen_by)
            .bind(self.clock.now_ms())
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl Store {
    /// [`CaseTx::record_material_problem`] on its own.
    pub async fn record_material_problem(
        &self,
        sha256: &str,
        case_id: &str,
        seen_by: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(RECORD_PROBLEM)
            .bind(sha256)
            .bind(case_id)
            .bind(seen_by)
            .bind(self.clock.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The integrity errors seen since `since` (ms), most recent first, at most `limit`.
    pub async fn material_problems(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<MaterialProblem>, StoreError> {
        let rows: Vec<(String, Option<String>, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT sha256, case_id, seen_by, first_at, last_at, times FROM material_problems \
             WHERE last_at >= $1 ORDER BY last_at DESC, sha256 LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(sha256, case_id, seen_by, first_at, last_at, times)| MaterialProblem {
                    sha256,
                    case_id,
                    seen_by,
                    first_at,
                    last_at,
                    times,
                },
            )
            .collect())
    }

    /// Every material every submission of `case_id` named, oldest submission first.
    pub async fn case_materials(&self, case_id: &str) -> Result<Vec<CaseMaterial>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT submission, material, sha256 FROM case_materials WHERE case_id = $1 \
             ORDER BY submission, material",
        )
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(submission, material, sha256)| CaseMaterial {
                submission,
                material,
                sha256,
            })
            .collect())
    }

    /// Cases whose personal fields retention erased and whose uploads are still to be erased
    /// from the materials store: `(case id, the names of the materials of all its submissions)`,
    /// at most `limit`.
    pub async fn materials_to_erase(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let cases: Vec<String> = sqlx::query_scalar(
            "SELECT case_id FROM cases \
             WHERE erased_at IS NOT NULL AND materials_erased_at IS NULL ORDER BY case_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(cases.len());
        for case in cases {
            let mut names: Vec<String> = self
                .case_materials(&case)
                .await?
                .into_iter()
                .map(|m| m.sha256)
                .collect();
            names.sort();
            names.dedup();
            out.push((case, names));
        }
        Ok(out)
    }

    /// Whether a case whose personal data is kept names the material `name` in any of its
    /// submissions (the same photo uploaded again for a later application): then it must stay.
    pub async fn material_in_use(&self, name: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM case_materials m JOIN cases c ON c.case_id = m.case_id \
             WHERE m.sha256 = $1 AND c.erased_at IS NULL LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// `(case id, state, materials erased, the names of the materials of all its submissions)`
    /// of every case, for the checker.
    pub async fn cases_materials(
        &self,
    ) -> Result<Vec<(String, String, bool, Vec<String>)>, StoreError> {
        let rows: Vec<(String, String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT c.case_id, c.state, c.materials_erased_at, m.sha256 FROM cases c \
             LEFT JOIN case_materials m ON m.case_id = c.case_id ORDER BY c.case_id, m.sha256",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(String, String, bool, Vec<String>)> = Vec::new();
        for (case, state, erased, name) in rows {
            if out.last().is_none_or(|last| last.0 != case) {
                out.push((case, state, erased.is_some(), Vec::new()));
            }
            let names = &mut out.last_mut().expect("pushed above").3;
            if let Some(name) = name
                && names.last() != Some(&name)
            {
                names.push(name);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_materials_with_a_name_are_declared_and_names_are_lowercased() {
        let app = json!({"materials": {
            "photo": {"sha256": "AB"}, "signature": {"bytes": 1}, "id_card_front": "x",
            "id_card_back": {"sha256": "cd"}, "extra": {"sha256": "ef"}}});
        assert_eq!(
            declared(&app),
            vec![
                ("photo", "ab".to_owned()),
                ("id_card_back", "cd".to_owned())
            ]
        );
        assert!(declared(&Value::Null).is_empty());
    }
}
