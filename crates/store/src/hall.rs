//! The pickup hall desk: the exit-entry halls, their staff, and one row per document sent to a
//! hall — sent, arrived at the counter, collected by the applicant.
//!
//! Halls and staff are loaded from the reviewers file, as offices and reviewers are. A document
//! is sent to the hall serving the applicant's hukou district when the case is produced for
//! pickup or comes back from the courier; the staff record its arrival (the case becomes ready
//! for pickup and the applicant gets the pickup SMS) and its collection, after checking the
//! applicant's identity card at the counter.

use crate::{Backend, CaseTx, Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// An exit-entry hall and the hukou districts whose documents it hands over.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Hall {
    pub id: String,
    pub name: String,
    /// District codes (prefixes of a 6-digit `hukou_region`); the longest listed prefix wins.
    pub districts: Vec<String>,
}

/// A member of a hall's staff as configured.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HallStaff {
    pub id: String,
    pub name: String,
    /// SHA-256 (hex) of their bearer token.
    pub token_sha256: String,
    /// The halls they work at.
    pub halls: Vec<String>,
}

/// A member of a hall's staff, signed in.
#[derive(Clone, Debug, Serialize)]
pub struct HallMember {
    pub id: String,
    pub name: String,
    pub halls: Vec<String>,
}

/// A document sent to a hall, with what the counter needs of its case.
#[derive(Clone, Debug, Serialize)]
pub struct HallDocument {
    pub case_id: String,
    pub application_id: String,
    pub document_kind: Option<String>,
    /// The case's state now.
    pub state: String,
    pub hall_id: String,
    pub sent_at: i64,
    pub arrived_at: Option<i64>,
    pub arrived_by: Option<String>,
    pub collected_at: Option<i64>,
    pub collected_by: Option<String>,
    /// The application JSON (personal data: for the counter's check, never serialised).
    #[serde(skip)]
    pub application: String,
}

macro_rules! document_columns {
    () => {
        "d.case_id, c.application_id, c.document_kind, c.state, c.application, d.hall_id, d.sent_at, \
         d.arrived_at, d.arrived_by, d.collected_at, d.collected_by FROM hall_documents d JOIN cases c ON c.case_id = d.case_id"
    };
}

fn document_from_row(row: &sqlx::any::AnyRow) -> Result<HallDocument, StoreError> {
    Ok(HallDocument {
        case_id: row.try_get("case_id")?,
        application_id: row.try_get("application_id")?,
        document_kind: row.try_get("document_kind")?,
        state: row.try_get("state")?,
        hall_id: row.try_get("hall_id")?,
        sent_at: row.try_get("sent_at")?,
        arrived_at: row.try_get("arrived_at")?,
        arrived_by: row.try_get("arrived_by")?,
        collected_at: row.try_get("collected_at")?,
        collected_by: row.try_get("collected_by")?,
        application: row.try_get("application")?,
    })
}

/// Of `items` (offices, halls) the one whose listed district is the longest prefix of
/// `hukou_region`.
pub fn serving<'a, T>(
    items: &'a [T],
    districts: impl Fn(&T) -> &[String],
    hukou_region: &str,
) -> Option<&'a T> {
    items
        .iter()
        .flat_map(|item| districts(item).iter().map(move |d| (d, item)))
        .filter(|(d, _)| hukou_region.starts_with(d.as_str()))
        .max_by_key(|(d, _)| d.len())
        .map(|(_, item)| item)
}

/// The hall serving `hukou_region`.
pub fn hall_for<'a>(halls: &'a [Hall], hukou_region: &str) -> Option<&'a Hall> {
    serving(halls, |h| &h.districts, hukou_region)
}

impl Store {
    /// Makes the halls and their staff match the reviewers file: halls replaced, staff added or
    /// updated, those no longer listed deactivated (their tokens stop working).
    pub async fn load_halls(&self, halls: &[Hall], staff: &[HallStaff]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7170113)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM halls").execute(&mut *tx).await?;
        for h in halls {
            sqlx::query("INSERT INTO halls (hall_id, name, districts) VALUES ($1, $2, $3)")
                .bind(&h.id)
                .bind(&h.name)
                .bind(h.districts.join(","))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE hall_staff SET active = 0")
            .execute(&mut *tx)
            .await?;
        for m in staff {
            sqlx::query(
                "INSERT INTO hall_staff (staff_id, name, token_sha256, halls, active) VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (staff_id) DO UPDATE SET name = $2, token_sha256 = $3, halls = $4, active = 1",
            )
            .bind(&m.id)
            .bind(&m.name)
            .bind(&m.token_sha256)
            .bind(m.halls.join(","))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The halls as loaded.
    pub async fn halls(&self) -> Result<Vec<Hall>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT hall_id, name, districts FROM halls ORDER BY hall_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, districts)| Hall {
                districts: districts.split(',').map(str::to_owned).collect(),
                id,
                name,
            })
            .collect())
    }

    /// The active staff member whose token hashes to `token_sha256`.
    pub async fn hall_member(&self, token_sha256: &str) -> Result<Option<HallMember>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT staff_id, name, halls FROM hall_staff WHERE token_sha256 = $1 AND active = 1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, name, halls)| HallMember {
            id,
            name,
            halls: halls.split(',').map(str::to_owned).collect(),
        }))
    }

    /// Records that the document of `case_id` goes to `hall_id`. Once per case: false when it
    /// was sent before.
    pub async fn send_to_hall(&self, case_id: &str, hall_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO hall_documents (case_id, hall_id, sent_at) VALUES ($1, $2, $3) \
             ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(case_id)
        .bind(hall_id)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The documents of `hall_id` not yet collected, oldest first.
    pub async fn hall_documents(&self, hall_id: &str) -> Result<Vec<HallDocument>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            document_columns!(),
            " WHERE d.hall_id = $1 AND d.collected_at IS NULL ORDER BY d.sent_at, d.case_id"
        ))
        .bind(hall_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(document_from_row).collect()
    }
}

impl CaseTx {
    /// The hall document of `case_id` (locked on PostgreSQL; take the case's lock first).
    pub async fn hall_document(
        &mut self,
        case_id: &str,
    ) -> Result<Option<HallDocument>, StoreError> {
        self.flush().await?;
        let sql = match self.backend {
            Backend::Postgres => concat!(
                "SELECT ",
                document_columns!(),
                " WHERE d.case_id = $1 FOR UPDATE OF d"
            ),
            Backend::Sqlite => concat!("SELECT ", document_columns!(), " WHERE d.case_id = $1"),
        };
        let row = sqlx::query(sql)
            .bind(case_id)
            .fetch_optional(self.conn())
            .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    /// Marks the document of `case_id` arrived at its hall, by `staff`. False when it had.
    pub async fn mark_arrived(&mut self, case_id: &str, staff: &str) -> Result<bool, StoreError> {
        self.flush().await?;
        let done = sqlx::query(
            "UPDATE hall_documents SET arrived_at = $1, arrived_by = $2 \
             WHERE case_id = $3 AND arrived_at IS NULL",
        )
        .bind(self.clock.now_ms())
        .bind(staff)
        .bind(case_id)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the document of `case_id` handed over, by `staff`. False unless it had arrived and
    /// was not yet collected.
    pub async fn mark_collected(&mut self, case_id: &str, staff: &str) -> Result<bool, StoreError> {
        self.flush().await?;
        let done = sqlx::query(
            "UPDATE hall_documents SET collected_at = $1, collected_by = $2 \
             WHERE case_id = $3 AND arrived_at IS NOT NULL AND collected_at IS NULL",
        )
        .bind(self.clock.now_ms())
        .bind(staff)
        .bind(case_id)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
