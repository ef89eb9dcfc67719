//! The review dispatcher: manual review (人工审核) by the reviewers of the applicant's hukou
//! district. An accepted case goes to the desk for round 1; a resubmission goes back for the next
//! round, to the reviewer who asked for the correction where possible. The desk's decisions —
//! approve, request a correction, reject — move the case; a decision for a round that is over is
//! refused and recorded.
//!
//! The desk is either our own ([`Desk::Staffed`]: offices and reviewers from the reviewers file,
//! tasks in the store, decisions through the reviewer API of `wangban serve`) or a party behind
//! a party (the simulated one of the demo, reached by its executor). The dispatcher's clock, on the working-day
//! calendar, escalates a staffed task not decided in time to its office's supervisor queue,
//! returns tasks held too long to the queue, and closes cases whose correction was not answered
//! in time (`correction_lapsed`).

pub mod desk_file;

use async_trait::async_trait;
use serde_json::{Value, json};
use std::time::Duration;
use wangban_domain::calendar::WorkingCalendar;
use wangban_domain::effects::{Effect, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_domain::review::review_clock_runs_out_at;
use wangban_runtime::{CaseRecord, Cx, Deadline, Decision, Handler, HandlerError, Runtime};

/// Who reviews.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desk {
    /// Our reviewers (the reviewers file, the reviewer API).
    Staffed,
    /// A desk outside wangban (its executor assigns the rounds), answering by `review.decided`
    /// events.
    Party,
}

/// The review clock and the limits of the corrections loop.
#[derive(Clone, Debug)]
pub struct ReviewRules {
    pub calendar: WorkingCalendar,
    /// Working days a task may wait for its decision before it is escalated.
    pub working_days: u32,
    /// Review rounds a case may have: a correction may not be requested in the last one.
    pub max_rounds: i64,
    /// Time the applicant has to resubmit after a correction request.
    pub resubmit_within: Duration,
    /// A task held this long without a decision goes back to its queue.
    pub hold: Duration,
}

impl ReviewRules {
    /// When a task opened at `opened_at` (ms since the Unix epoch) has waited more than
    /// `working_days` working days: the first instant of the Beijing day on which it has. `None`
    /// when the calendar has no data that far (the clock cannot run; logged by the caller).
    pub fn escalation_due(&self, opened_at: i64) -> Option<i64> {
        review_clock_runs_out_at(&self.calendar, opened_at, self.working_days).ok()
    }
}

impl Default for ReviewRules {
    fn default() -> Self {
        ReviewRules {
            calendar: WorkingCalendar::default(),
            working_days: 2,
            max_rounds: 3,
            resubmit_within: Duration::from_secs(7 * 86_400),
            hold: Duration::from_secs(4 * 3600),
        }
    }
}

/// The review dispatcher.
pub struct Review {
    pub desk: Desk,
    pub rules: ReviewRules,
    /// The reviewers file of a staffed desk, reloaded into the store when it changes.
    pub reviewers_file: Option<desk_file::Watched>,
    /// Whether this process has scheduled the correction deadlines of the cases that were
    /// already waiting for a correction when it started.
    pub caught_up: std::sync::atomic::AtomicBool,
}

impl Review {
    /// Hands round `round` of the case to the desk and moves the case to `under_review`; a desk
    /// outside wangban is asked for the round and the case moves when it has assigned it.
    async fn dispatch(&self, cx: &mut Cx<'_>, step: Step, round: i64) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        let expected = step.edge().0[0];
        if case.state != expected {
            // Already dispatched (a repeated event) or never will be: let the lifecycle decide.
            cx.step(&mut case, step, json!({"round": round})).await?;
            return Ok(());
        }
        if self.desk == Desk::Party {
            let effect = Effect::ReviewAssignment {
                round,
                preferred_reviewer: case.reviewer.clone(),
            };
            cx.request(&case, &effect).await?;
            return Ok(());
        }
        let app = Cx::application(&case)?;
        let hukou = app.applicant.hukou_region.clone();
        let offices = cx.tx().desk_offices().await?;
        let Some(office) = wangban_store::office_for(&offices, &hukou) else {
            return Err(HandlerError::Permanent(format!(
                "no review office serves hukou district {}xx (add it to the reviewers file, then replay)",
                hukou.get(..4).unwrap_or("")
            )));
        };
        let id = case.case_id.as_str().to_owned();
        // A resubmission goes back to whoever asked for the correction, if available.
        let asked = match round {
            1 => None,
            r => cx.tx().task(&id, r - 1).await?.and_then(|t| t.decided_by),
        };
        let task = cx
            .tx()
            .open_task(&id, round, &office.id, asked.as_deref())
            .await?;
        let detail = json!({"round": round, "reviewer": task.reviewer, "office": office.id});
        self.assigned(cx, &mut case, step, round, task.reviewer, detail)
            .await?;
        if case.state == State::UnderReview {
            // The review clock of the round starts with the task.
            if let Some(deadline) = self.escalation(round, case.state_since) {
                cx.schedule(&case, deadline).await?;
            }
        }
        Ok(())
    }

    /// The round is assigned: recorded, and the case is under review.
    async fn assigned(
        &self,
        cx: &mut Cx<'_>,
        case: &mut CaseRecord,
        step: Step,
        round: i64,
        reviewer: Option<String>,
        detail: Value,
    ) -> Result<(), HandlerError> {
        if case.state == step.edge().0[0] {
            cx.tx()
                .record_effect(
                    &case.case_id,
                    &format!("review_assignment:{round}"),
                    &detail,
                )
                .await?;
        }
        cx.step_with(case, step, detail, round, reviewer).await?;
        Ok(())
    }

    /// A desk outside wangban assigned a round.
    async fn desk_assigned(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let report = Cx::report(event)?;
        let Effect::ReviewAssignment { round, .. } = report.command else {
            return Err(HandlerError::Permanent(format!(
                "review asked for no effect {}",
                report.purpose
            )));
        };
        let reviewer = report.text("reviewer").map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        let step = if round == 1 {
            Step::StartReview
        } else {
            Step::Resubmit
        };
        let detail = json!({"round": round, "reviewer": reviewer});
        self.assigned(cx, &mut case, step, round, Some(reviewer), detail)
            .await
    }

    /// A deadline of the clock: escalate a task, or close a case whose correction lapsed.
    async fn deadline(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        match event.data.get("deadline").and_then(Value::as_str) {
            Some("escalate") => {
                let round = event.data.get("round").and_then(Value::as_i64);
                if case.state != State::UnderReview || round != Some(case.review_round) {
                    return Ok(()); // decided meanwhile: a stale deadline
                }
                let id = case.case_id.as_str().to_owned();
                if let Some(task) = cx.tx().escalate_task(&id, case.review_round).await? {
                    let d = json!({"round": task.round, "office": task.office_id, "queue": task.queue,
                                   "supervisor": task.reviewer, "working_days": self.rules.working_days});
                    cx.audit(&case, "review_escalated", d).await?;
                    tracing::warn!(
                        round = task.round,
                        "review clock ran out; escalated to the supervisor queue"
                    );
                }
                Ok(())
            }
            Some("correction") => {
                let waited = cx.tx().clock().now_ms() - case.state_since;
                let round = event.data.get("round").and_then(Value::as_i64);
                if case.state != State::CorrectionRequested
                    || round.is_some_and(|r| r != case.review_round)
                    || waited < self.rules.resubmit_within.as_millis() as i64
                {
                    return Ok(()); // resubmitted meanwhile, or not due
                }
                let d = json!({"why": "未在规定期限内补正", "waited_s": waited / 1000});
                cx.step(&mut case, Step::LapseCorrection, d).await?;
                Ok(())
            }
            _ => Err(HandlerError::Permanent(
                "review deadline must be `escalate` or `correction`".into(),
            )),
        }
    }

    async fn decided(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let verdict = Verdict::decode(&event.data).map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        let record = match self.desk {
            Desk::Party => DeskRecord::NotKept,
            Desk::Staffed => {
                let round = verdict.round.unwrap_or(case.review_round);
                match cx.tx().task(case.case_id.as_str(), round).await? {
                    Some(task) => match (task.decided_by, task.decision) {
                        (Some(by), Some(decision)) => DeskRecord::Decided { by, decision },
                        _ => DeskRecord::Undecided,
                    },
                    None => DeskRecord::Undecided,
                }
            }
        };
        let decision = self.decide_verdict(&case, &verdict, &record)?;
        cx.apply(&mut case, decision).await?;
        Ok(())
    }

    /// The `review.deadline` that escalates round `round`'s task, opened at `opened_at`, to its
    /// office's supervisor queue if it is still undecided when the review clock runs out.
    fn escalation(&self, round: i64, opened_at: i64) -> Option<Deadline> {
        let Some(due) = self.rules.escalation_due(opened_at) else {
            tracing::warn!(
                round,
                "the working-day calendar has no data for this task's review clock; it will not escalate"
            );
            return None;
        };
        Some(Deadline {
            kind: EventType::ReviewDeadline,
            data: json!({"deadline": "escalate", "round": round}),
            key: vec!["review".into(), "escalate".into(), round.to_string()],
            after: Duration::from_millis(due.saturating_sub(opened_at).max(0) as u64),
        })
    }

    /// The `review.deadline` that closes the case if round `round`'s correction is not answered
    /// within the window, from the case's entry into `correction_requested`.
    fn correction_lapse(&self, round: i64) -> Deadline {
        Deadline {
            kind: EventType::ReviewDeadline,
            data: json!({"deadline": "correction", "round": round}),
            key: vec!["review".into(), "correction".into(), round.to_string()],
            after: self.rules.resubmit_within,
        }
    }

    /// What a reviewer's decision does to `case`: an early one waits ([`HandlerError::Early`]),
    /// one for a round that is over is refused and recorded, one the staffed desk did not record
    /// (`record`: a decision that did not come through the reviewer API — a forged event) is
    /// recorded as unmatched, a correction in the last round is refused and recorded; otherwise
    /// the case takes the decision's step.
    pub fn decide_verdict(
        &self,
        case: &CaseRecord,
        v: &Verdict,
        record: &DeskRecord,
    ) -> Result<Decision, HandlerError> {
        if case.state == State::Accepted
            || (v.round.is_some_and(|r| r > case.review_round) && !case.state.is_terminal())
        {
            return Err(HandlerError::Early(
                "decision arrived before its review round started".into(),
            ));
        }
        if v.round != Some(case.review_round) || case.state != State::UnderReview {
            return Ok(Decision::audit(
                "decision_refused",
                json!({"round": v.round, "current_round": case.review_round, "state": case.state}),
            ));
        }
        if let Some(why) = record.mismatch(v) {
            tracing::warn!(
                round = v.round,
                why,
                "a review decision the desk did not record; not applied"
            );
            return Ok(Decision::audit(
                "decision_unmatched",
                json!({"round": v.round, "reviewer": v.reviewer, "why": why}),
            ));
        }
        Ok(match &v.ruling {
            Ruling::Approve => Decision::step(Step::Approve, json!({"reviewer": v.reviewer})),
            Ruling::RequestCorrection { .. } if case.review_round >= self.rules.max_rounds => {
                let why = format!(
                    "round {} is the last of {}: approve or reject",
                    case.review_round, self.rules.max_rounds
                );
                Decision::audit("decision_refused", json!({"round": v.round, "reason": why}))
            }
            Ruling::RequestCorrection { items, message } => Decision::step(
                Step::RequestCorrection,
                json!({"reviewer": v.reviewer, "items": items, "message": message}),
            )
            .scheduling(self.correction_lapse(case.review_round)),
            Ruling::Reject { reason } => Decision::step(
                Step::RejectReview,
                json!({"reviewer": v.reviewer, "reason": reason}),
            ),
        })
    }
}

/// What a reviewer decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Ruling {
    Approve,
    RequestCorrection { items: Value, message: Value },
    Reject { reason: String },
}

impl Ruling {
    /// The decision's name, as the reviewer API and the desk's tasks spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ruling::Approve => "approve",
            Ruling::RequestCorrection { .. } => "request_correction",
            Ruling::Reject { .. } => "reject",
        }
    }
}

/// What the desk recorded of the round a `review.decided` event names. A staffed desk records
/// every decision where it is made (the reviewer API marks the round's task decided in the
/// transaction that queues the event), so an event it did not record came from elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub enum DeskRecord {
    /// A desk outside wangban: its event is the record.
    NotKept,
    /// The round's task was decided, `by` whom, and how.
    Decided { by: String, decision: String },
    /// No task of that round was decided (or there is none).
    Undecided,
}

impl DeskRecord {
    /// Why `v` does not match the record, if it does not.
    pub fn mismatch(&self, v: &Verdict) -> Option<&'static str> {
        match self {
            DeskRecord::NotKept => None,
            DeskRecord::Undecided => Some("no decision of this round was made at the desk"),
            DeskRecord::Decided { by, .. } if v.reviewer.as_str() != Some(by.as_str()) => {
                Some("the desk recorded this round's decision by another reviewer")
            }
            DeskRecord::Decided { decision, .. } if decision != v.ruling.as_str() => {
                Some("the desk recorded another decision for this round")
            }
            DeskRecord::Decided { .. } => None,
        }
    }
}

/// A `review.decided` event, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub round: Option<i64>,
    pub reviewer: Value,
    pub ruling: Ruling,
}

impl Verdict {
    /// Decodes a decision; what does not decode is a permanent error naming the field.
    pub fn decode(d: &Value) -> Result<Verdict, String> {
        let ruling = match d.get("decision").and_then(Value::as_str).unwrap_or("") {
            "approve" => Ruling::Approve,
            "request_correction" => {
                let items = d.get("items").cloned().unwrap_or(json!([]));
                if items.as_array().is_none_or(|a| a.is_empty()) {
                    return Err("request_correction must name the items to fix".into());
                }
                let message = d.get("message").cloned().unwrap_or(json!(""));
                Ruling::RequestCorrection { items, message }
            }
            "reject" => match d.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => Ruling::Reject {
                    reason: r.to_owned(),
                },
                _ => return Err("reject must give a reason".into()),
            },
            other => {
                return Err(format!(
                    "unknown review decision `{}`",
                    other.chars().take(32).collect::<String>()
                ));
            }
        };
        Ok(Verdict {
            round: d.get("round").and_then(Value::as_i64),
            reviewer: d.get("reviewer").cloned().unwrap_or(Value::Null),
            ruling,
        })
    }
}

#[async_trait]
impl Handler for Review {
    fn worker(&self) -> &'static str {
        "review"
    }

    /// The staffed desk locks the office to assign a task: a batch holding a case and the office
    /// and one holding the next case would wait on each other.
    fn batches(&self) -> bool {
        self.desk == Desk::Party
    }

    fn steps(&self) -> Vec<Step> {
        vec![
            Step::StartReview,
            Step::RequestCorrection,
            Step::Resubmit,
            Step::LapseCorrection,
            Step::RejectReview,
            Step::Approve,
        ]
    }

    fn emits(&self) -> Vec<EventType> {
        vec![EventType::ReviewDeadline]
    }

    fn bindings(&self) -> Vec<String> {
        [
            EventType::Entered(State::Accepted),
            EventType::CaseResubmitted,
            EventType::ReviewDecided,
            EventType::ReviewDeadline,
            EventType::EffectDone(Party::Desk),
        ]
        .iter()
        .map(|t| t.routing_key())
        .collect()
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind() {
            Some(EventType::Entered(State::Accepted)) => {
                self.dispatch(cx, Step::StartReview, 1).await
            }
            Some(EventType::CaseResubmitted) => {
                let round = event.data.get("round").and_then(Value::as_i64).unwrap_or(2);
                self.dispatch(cx, Step::Resubmit, round).await
            }
            Some(EventType::ReviewDecided) => self.decided(cx, event).await,
            Some(EventType::ReviewDeadline) => self.deadline(cx, event).await,
            Some(EventType::EffectDone(Party::Desk)) => self.desk_assigned(cx, event).await,
            _ => Err(HandlerError::Permanent(format!(
                "review does not handle {}",
                event.event_type
            ))),
        }
    }

    /// The desk's clock: tasks held too long go back to their queue. The review clock (escalation)
    /// and the correction lapse are deadlines scheduled with the decision that starts them; once
    /// per process, this schedules them for the cases that were already waiting without one when
    /// it started (left by a version that scanned for them instead).
    async fn tick(&self, rt: &Runtime) -> Result<(), HandlerError> {
        let now = rt.store.clock().now_ms();
        if let Some(file) = &self.reviewers_file {
            file.reload_if_changed(&rt.store).await?;
        }
        if matches!(self.desk, Desk::Staffed) {
            let released = rt
                .store
                .release_held_before(now - self.rules.hold.as_millis() as i64)
                .await?;
            if released > 0 {
                tracing::info!(
                    released,
                    "review tasks held too long went back to their queue"
                );
            }
        }
        if !self.caught_up.load(std::sync::atomic::Ordering::Relaxed) {
            let waiting = rt
                .store
                .waiting_unscheduled(State::CorrectionRequested.as_str());
            for (case, since, round) in waiting.await? {
                let lapse = self.correction_lapse(round);
                let waiting = State::CorrectionRequested;
                rt.schedule(self.worker(), &case, waiting, since, lapse)
                    .await?;
            }
            if matches!(self.desk, Desk::Staffed) {
                // A task escalated before is scheduled again, due at once: its event id is the
                // one already handled, so the inbox lets it pass without a second escalation.
                let waiting = rt.store.waiting_unscheduled(State::UnderReview.as_str());
                for (case, since, round) in waiting.await? {
                    if let Some(escalation) = self.escalation(round, since) {
                        let waiting = State::UnderReview;
                        rt.schedule(self.worker(), &case, waiting, since, escalation)
                            .await?;
                    }
                }
            }
            self.caught_up
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(state: State, round: i64) -> CaseRecord {
        CaseRecord {
            review_round: round,
            reviewer: Some("r1".into()),
            ..wangban_runtime::case_in(state)
        }
    }

    fn verdict(round: i64, d: Value) -> Verdict {
        let mut d = d;
        d["round"] = json!(round);
        d["reviewer"] = json!("r1");
        Verdict::decode(&d).unwrap()
    }

    #[test]
    fn the_review_clock_runs_out_at_the_start_of_the_third_working_day_after_the_task() {
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        let rules = ReviewRules::default(); // 2 working days
        // (opened, due): across the National Day holiday (1-7 October 2026) and its make-up
        // working Saturday (10 October); a Sunday does not count.
        for (opened, due) in [
            ("2026-09-28T10:00:00+08:00", "2026-10-08T00:00:00+08:00"),
            ("2026-09-30T23:59:00+08:00", "2026-10-10T00:00:00+08:00"),
            ("2026-10-08T10:00:00+08:00", "2026-10-12T00:00:00+08:00"),
            ("2026-11-30T01:00:00+08:00", "2026-12-03T00:00:00+08:00"),
            // Just after midnight in Beijing is still the day before in UTC.
            ("2026-11-29T16:30:00Z", "2026-12-03T00:00:00+08:00"),
        ] {
            assert_eq!(rules.escalation_due(at(opened)), Some(at(due)), "{opened}");
        }
        let review = Review {
            desk: Desk::Staffed,
            rules,
            reviewers_file: None,
            caught_up: Default::default(),
        };
        let deadline = review
            .escalation(2, at("2026-10-08T10:00:00+08:00"))
            .unwrap();
        assert_eq!(deadline.after, Duration::from_secs(3 * 86_400 + 14 * 3600));
        assert_eq!(deadline.data, json!({"deadline": "escalate", "round": 2}));
        // No calendar data that far: no clock rather than a wrong one.
        assert_eq!(
            review.rules.escalation_due(at("2099-06-01T10:00:00+08:00")),
            None
        );
    }

    #[test]
    fn a_decision_moves_the_case_only_in_its_own_open_round() {
        use State::*;
        let review = Review {
            desk: Desk::Staffed,
            rules: ReviewRules::default(),
            reviewers_file: None,
            caught_up: Default::default(),
        };
        let approve = json!({"decision": "approve"});
        let correct =
            json!({"decision": "request_correction", "items": ["photo"], "message": "白底"});
        let refused = |round: i64, current: i64, state: State| {
            Decision::audit(
                "decision_refused",
                json!({"round": round, "current_round": current, "state": state}),
            )
        };
        #[rustfmt::skip]
        let table: Vec<(&str, CaseRecord, Verdict, Decision)> = vec![
            ("approve round 1", case(UnderReview, 1), verdict(1, approve.clone()),
                Decision::step(Step::Approve, json!({"reviewer": "r1"}))),
            ("a correction", case(UnderReview, 1), verdict(1, correct.clone()),
                Decision::step(Step::RequestCorrection, json!({"reviewer": "r1", "items": ["photo"], "message": "白底"}))
                    .scheduling(Deadline { kind: EventType::ReviewDeadline, data: json!({"deadline": "correction", "round": 1}),
                        key: vec!["review".into(), "correction".into(), "1".into()], after: Duration::from_secs(7 * 86_400) })),
            ("reject", case(UnderReview, 2), verdict(2, json!({"decision": "reject", "reason": "照片不符"})),
                Decision::step(Step::RejectReview, json!({"reviewer": "r1", "reason": "照片不符"}))),
            ("a decision of round 1 again (duplicate, case approved)", case(Approved, 1), verdict(1, approve.clone()),
                refused(1, 1, Approved)),
            ("a late decision of round 1 in round 2", case(UnderReview, 2), verdict(1, approve.clone()),
                refused(1, 2, UnderReview)),
            ("no correction in the last round", case(UnderReview, 3), verdict(3, correct.clone()),
                Decision::audit("decision_refused", json!({"round": 3, "reason": "round 3 is the last of 3: approve or reject"}))),
        ];
        let as_desk = |v: &Verdict| DeskRecord::Decided {
            by: "r1".into(),
            decision: v.ruling.as_str().into(),
        };
        for (what, case, v, expected) in table {
            for record in [DeskRecord::NotKept, as_desk(&v)] {
                assert_eq!(
                    review.decide_verdict(&case, &v, &record).unwrap(),
                    expected,
                    "{what} ({record:?})"
                );
            }
        }
        // With a staffed desk, only the decision the desk recorded moves the case.
        let unmatched = |why: &str| {
            Decision::audit(
                "decision_unmatched",
                json!({"round": 1, "reviewer": "r1", "why": why}),
            )
        };
        #[rustfmt::skip]
        let forged: Vec<(&str, DeskRecord, Decision)> = vec![
            ("no decision at the desk (a hand-made event)", DeskRecord::Undecided,
                unmatched("no decision of this round was made at the desk")),
            ("decided by someone else", DeskRecord::Decided { by: "r2".into(), decision: "approve".into() },
                unmatched("the desk recorded this round's decision by another reviewer")),
            ("decided otherwise", DeskRecord::Decided { by: "r1".into(), decision: "reject".into() },
                unmatched("the desk recorded another decision for this round")),
        ];
        for (what, record, expected) in forged {
            let v = verdict(1, approve.clone());
            assert_eq!(
                review
                    .decide_verdict(&case(UnderReview, 1), &v, &record)
                    .unwrap(),
                expected,
                "{what}"
            );
        }
        // Early: before review started, or a round that has not started yet.
        for (state, round, v) in [(Accepted, 0, 1), (CorrectionRequested, 1, 2)] {
            let err = review
                .decide_verdict(
                    &case(state, round),
                    &verdict(v, approve.clone()),
                    &DeskRecord::NotKept,
                )
                .unwrap_err();
            assert!(
                err.is_early(),
                "{state} round {round}, decision of round {v}: {err}"
            );
        }
    }

    #[test]
    fn a_decision_that_does_not_decode_is_refused_naming_what_is_wrong() {
        let err = |d: Value| Verdict::decode(&d).unwrap_err();
        assert!(err(json!({"decision": "maybe"})).contains("maybe"));
        assert!(err(json!({"decision": "request_correction", "items": []})).contains("items"));
        assert!(err(json!({"decision": "reject", "reason": ""})).contains("reason"));
    }
}
