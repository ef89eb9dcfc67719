//! What the parties' signed callbacks leave behind besides events: the nonces that make a replayed
//! callback detectable, and payments that match no case (kept for refund).

use crate::{Store, StoreError};
use serde::Serialize;

/// A payment the gateway reported for no case we can take it for.
#[derive(Clone, Debug, Serialize)]
pub struct UnmatchedPayment {
    pub payment_id: String,
    /// The gateway's `out_trade_no` (our order reference) as it arrived.
    pub reference: String,
    pub amount_cny: i64,
    pub status: String,
    pub why: String,
    /// Stamped by the store's clock when the payment is recorded.
    pub received_at: i64,
}

impl Store {
    /// Remembers `nonce` of `party`; false when it was seen before (a replay).
    pub async fn claim_nonce(&self, party: &str, nonce: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let inserted = sqlx::query(
            "INSERT INTO callback_nonces (party, nonce, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(party)
        .bind(nonce)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        Ok(inserted)
    }

    /// Forgets the nonces seen more than `keep` ago; returns how many. A callback is accepted
    /// while its timestamp is within the signature tolerance either side of now, so `keep` must
    /// be at least twice the tolerance (`wangban serve` sweeps on its clock with that).
    pub async fn sweep_nonces(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        let before = self.clock.now_ms() - keep.as_millis() as i64;
        Ok(
            sqlx::query("DELETE FROM callback_nonces WHERE seen_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Records a payment that matches no case; a repeat of the same payment id is ignored.
    pub async fn record_unmatched_payment(&self, p: &UnmatchedPayment) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO unmatched_payments (payment_id, reference, amount_cny, status, why, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&p.payment_id)
        .bind(&p.reference)
        .bind(p.amount_cny)
        .bind(&p.status)
        .bind(&p.why)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Payments that matched no case, oldest first; with `reference`, only those for it.
    pub async fn unmatched_payments(
        &self,
        reference: Option<&str>,
    ) -> Result<Vec<UnmatchedPayment>, StoreError> {
        let rows: Vec<(String, String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT payment_id, reference, amount_cny, status, why, received_at FROM unmatched_payments \
             WHERE $1 IS NULL OR reference = $1 ORDER BY received_at",
        )
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(payment_id, reference, amount_cny, status, why, received_at)| UnmatchedPayment {
                    payment_id,
                    reference,
                    amount_cny,
                    status,
                    why,
                    received_at,
                },
            )
            .collect())
    }

    /// A case's state, or `None` when there is no such case.
    pub async fn case_state(&self, case_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT state FROM cases WHERE case_id = $1")
            .bind(case_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(s,)| s))
    }
}
