//! The promises made to applicants, and the cases past them now:
//! - review clock: a decision within N working days (default 2) of the case entering review;
//! - payment window: a case still `awaiting_payment` after the window means the clock is behind;
//! - production: the card-production centre's 3 working days, from the order's due date;
//! - approval and issue: the policy's 7 working days from acceptance to the centre's completion,
//!   not counting working days spent waiting for a correction or the payment
//!   ([`wangban_domain::promise`]).

use crate::AppState;
use serde::Serialize;
use wangban_domain::application::beijing_date;
use wangban_domain::lifecycle::State;
use wangban_domain::promise;
use wangban_domain::review::review_clock_ran_out;
use wangban_store::StoreError;

/// Case ids past each promise.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Breaches {
    pub review_clock: Vec<String>,
    pub payment_window: Vec<String>,
    pub production: Vec<String>,
    /// Open cases past the policy's 7 working days from acceptance to issue (waiting for the
    /// applicant not counted).
    pub approval_and_issue: Vec<String>,
    /// Orders the centre completed after the promise (late, counted; no longer waiting).
    pub production_completed_late: Vec<String>,
    /// Review tasks of the staffed desk escalated to a supervisor queue when the review clock
    /// ran out (counted, decided since or not).
    pub review_escalated: Vec<String>,
    /// Cases whose promise cannot be computed (a year missing from the calendar).
    pub unknown: Vec<String>,
}

/// Reads the breaches from the store.
pub async fn breaches(s: &AppState) -> Result<Breaches, StoreError> {
    let store = &s.runtime.store;
    let now = s.runtime.store.clock().now_ms();
    let today = beijing_date(now);
    let mut b = Breaches::default();
    for state in ["accepted", "under_review"] {
        for (case, since) in store.cases_in_state(state).await? {
            match review_clock_ran_out(&s.calendar, since, now, s.review_working_days) {
                Ok(true) => b.review_clock.push(case),
                Ok(false) => {}
                Err(_) => b.unknown.push(case),
            }
        }
    }
    let window = s.payment_window.as_millis() as i64;
    for (case, since) in store.cases_in_state("awaiting_payment").await? {
        if now - since > window {
            b.payment_window.push(case);
        }
    }
    let in_production: std::collections::HashSet<String> = store
        .cases_in_state("in_production")
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    for (case, detail) in store.effects_with_purpose("production_order").await? {
        if !in_production.contains(&case) {
            continue;
        }
        let due = serde_json::from_str::<serde_json::Value>(&detail)
            .ok()
            .and_then(|d| {
                d.get("due")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<chrono::NaiveDate>().ok())
            });
        match due {
            Some(d) if today > d => b.production.push(case),
            Some(_) => {}
            None => b.unknown.push(case),
        }
    }
    // The states in which the policy's promise runs (or stands still, waiting for the applicant).
    const PROMISED: [&str; 7] = [
        "accepted",
        "under_review",
        "correction_requested",
        "approved",
        "awaiting_payment",
        "paid",
        "in_production",
    ];
    for (case, entries) in store.state_entries_of_cases_in(&PROMISED).await? {
        let entries: Vec<(State, i64)> = entries
            .iter()
            .filter_map(|(s, at)| Some((State::parse(s)?, *at)))
            .collect();
        match promise::clock(&entries, now, &s.calendar) {
            Ok(Some(c)) if c.broken(promise::WORKING_DAYS) => b.approval_and_issue.push(case),
            Ok(_) => {}
            Err(_) => b.unknown.push(case),
        }
    }
    b.production_completed_late = store.late_productions().await?;
    b.review_escalated = store
        .escalated_tasks()
        .await?
        .into_iter()
        .map(|t| t.case_id)
        .collect();
    Ok(b)
}
