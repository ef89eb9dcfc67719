//! The policy's promise to the applicant (domain.md §4, §6): approval and issue — the centre's
//! completion, `produced` — within 7 working days of acceptance. Local guides add that time
//! spent waiting for the applicant, for a correction or for the payment, does not count
//! (原则上不计入时限), so those working days are taken off.
//!
//! [`clock`] is a pure function of the case's entries into states and the working-day calendar.

use crate::application::beijing_date;
use crate::calendar::{CalendarError, WorkingCalendar};
use crate::lifecycle::State;
use serde::Serialize;

/// The promise's length in working days, by default.
pub const WORKING_DAYS: u32 = 7;

/// Where a case stands against the promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PromiseClock {
    /// Working days counted against the promise: from acceptance to completion (or now), less
    /// the paused ones.
    pub counted: u32,
    /// Working days spent waiting for the applicant (a correction, the payment).
    pub paused: u32,
    /// The centre has completed the document (the promise is kept or broken for good).
    pub completed: bool,
}

impl PromiseClock {
    /// Whether the case is past a promise of `working_days`.
    pub fn broken(&self, working_days: u32) -> bool {
        self.counted > working_days
    }
}

/// Waiting for the applicant: the clock stops.
fn paused_in(state: State) -> bool {
    matches!(state, State::CorrectionRequested | State::AwaitingPayment)
}

/// The promise clock of a case that entered the states `entries` (in order, with the time of
/// each entry in ms), at `now_ms`. `None` when the case was never accepted, or was closed
/// without a document (rejected after review, lapsed, unpaid): no promise runs for it.
pub fn clock(
    entries: &[(State, i64)],
    now_ms: i64,
    calendar: &WorkingCalendar,
) -> Result<Option<PromiseClock>, CalendarError> {
    let Some(start) = entries.iter().position(|(s, _)| *s == State::Accepted) else {
        return Ok(None);
    };
    let closed_without_document = entries.iter().any(|(s, _)| {
        matches!(
            s,
            State::ReviewRejected | State::CorrectionLapsed | State::PaymentExpired
        )
    });
    if closed_without_document {
        return Ok(None);
    }
    let end = entries[start..]
        .iter()
        .position(|(s, _)| *s == State::Produced)
        .map(|i| start + i);
    let end_ms = end.map_or(now_ms, |i| entries[i].1);
    let days = |from: i64, to: i64| {
        calendar.working_days_between(beijing_date(from), beijing_date(to.max(from)))
    };
    let total = days(entries[start].1, end_ms)?;
    let mut paused = 0;
    let last = end.unwrap_or(entries.len());
    for i in start..last {
        let (state, entered) = entries[i];
        if paused_in(state) {
            let left = entries.get(i + 1).map_or(end_ms, |(_, at)| *at).min(end_ms);
            paused += days(entered, left)?;
        }
    }
    Ok(Some(PromiseClock {
        counted: total.saturating_sub(paused),
        paused,
        completed: end.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    /// Beijing noon of `date` in ms.
    fn at(date: &str) -> i64 {
        let d: chrono::NaiveDate = date.parse().unwrap();
        d.and_hms_opt(4, 0, 0).unwrap().and_utc().timestamp_millis()
    }

    fn clock_of(entries: &[(State, &str)], now: &str) -> Option<PromiseClock> {
        let entries: Vec<(State, i64)> = entries.iter().map(|(s, d)| (*s, at(d))).collect();
        clock(&entries, at(now), &WorkingCalendar::default()).unwrap()
    }

    #[test]
    fn the_national_day_holiday_does_not_count() {
        // Accepted Wednesday 30 Sep 2026; 1–7 Oct are the holiday and 10 Oct (a Saturday) is a
        // make-up working day. Produced on Friday 9 Oct: 8 and 9 Oct, 2 working days.
        let c = clock_of(
            &[
                (Accepted, "2026-09-30"),
                (UnderReview, "2026-09-30"),
                (Approved, "2026-10-08"),
                (AwaitingPayment, "2026-10-08"),
                (Paid, "2026-10-08"),
                (InProduction, "2026-10-08"),
                (Produced, "2026-10-09"),
            ],
            "2026-10-20",
        )
        .unwrap();
        assert_eq!(
            c,
            PromiseClock {
                counted: 2,
                paused: 0,
                completed: true
            }
        );
        assert!(!c.broken(WORKING_DAYS));
        // Across the holiday, still open: 8, 9, 10 (make-up), 12, 13, 14, 15 Oct = 7 days.
        let open = [(Accepted, "2026-09-30"), (UnderReview, "2026-09-30")];
        assert_eq!(clock_of(&open, "2026-10-15").unwrap().counted, 7);
        assert!(!clock_of(&open, "2026-10-15").unwrap().broken(WORKING_DAYS));
        assert!(clock_of(&open, "2026-10-16").unwrap().broken(WORKING_DAYS));
    }

    #[test]
    fn waiting_for_the_applicant_stops_the_clock() {
        // Accepted Monday 16 Nov 2026; a correction asked the same day and answered on Friday
        // 20 Nov (4 working days paused); approved Monday 23, paid Wednesday 25 (2 paused);
        // produced Friday 27.
        let entries = [
            (Accepted, "2026-11-16"),
            (UnderReview, "2026-11-16"),
            (CorrectionRequested, "2026-11-16"),
            (UnderReview, "2026-11-20"),
            (Approved, "2026-11-23"),
            (AwaitingPayment, "2026-11-23"),
            (Paid, "2026-11-25"),
            (InProduction, "2026-11-25"),
            (Produced, "2026-11-27"),
        ];
        let c = clock_of(&entries, "2026-12-30").unwrap();
        assert_eq!(
            c,
            PromiseClock {
                counted: 3,
                paused: 6,
                completed: true
            }
        );
        // Still waiting for the payment a week later: the clock stands still at the one working
        // day (23 Nov) between the answered correction and the fee request.
        let c = clock_of(&entries[..6], "2026-11-30").unwrap();
        assert_eq!(
            c,
            PromiseClock {
                counted: 1,
                paused: 9,
                completed: false
            }
        );
        assert_eq!(clock_of(&entries[..6], "2026-12-04").unwrap().counted, 1);
    }

    #[test]
    fn no_promise_runs_before_acceptance_or_after_a_closure_without_document() {
        assert_eq!(clock_of(&[(Rejected, "2026-11-16")], "2026-12-30"), None);
        let lapsed = [
            (Accepted, "2026-11-16"),
            (UnderReview, "2026-11-16"),
            (CorrectionRequested, "2026-11-16"),
            (CorrectionLapsed, "2026-11-23"),
        ];
        assert_eq!(clock_of(&lapsed, "2026-12-30"), None);
    }

    #[test]
    fn a_year_missing_from_the_calendar_is_an_error_not_a_guess() {
        let entries = [(Accepted, at("2031-01-06"))];
        assert!(clock(&entries, at("2031-01-20"), &WorkingCalendar::default()).is_err());
    }
}
