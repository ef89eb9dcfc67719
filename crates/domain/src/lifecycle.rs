//! The case lifecycle of domain.md §2 as an explicit state machine.
//!
//! ```text
//! submitted ─┬─> rejected
//!            └─> accepted ──> under_review ─┬─> correction_requested ──(resubmitted)──> under_review
//!                                           │                        └─> correction_lapsed
//!                                           ├─> review_rejected
//!                                           └─> approved ──> awaiting_payment ─┬─> payment_expired
//!                                                                              └─> paid ──> in_production ──> produced
//!                                     produced ─┬─ courier ─> shipped ─┬─> delivered
//!                                               │                      └─> returned ─┐
//!                                               └─ pickup ──> ready_for_pickup <─────┘
//!                                                                    └──> collected
//! ```
//! A [`Step`] names a transition; [`State::apply`] refuses any step not drawn above. Workers never
//! set a state directly: they apply steps, and a refusal is recorded in the audit log.
//!
//! `correction_lapsed` extends domain.md's diagram (issue #3): a correction not answered within
//! the configured time, or beyond the configured number of rounds, closes the case — terminal,
//! like `payment_expired`.
//!
//! `returned` extends it too (issue #18): a document the courier brings back — refused at the
//! door (postage is paid on delivery, 到付), undeliverable, or given up by an operator after failed
//! attempts — goes to the exit-entry hall of the applicant's household registration, where it is
//! collected with the identity card like any pickup. There is no second courier dispatch: the
//! applicant collects it at the hall.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A case's state, named as in the lifecycle diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Submitted,
    Rejected,
    Accepted,
    UnderReview,
    CorrectionRequested,
    CorrectionLapsed,
    ReviewRejected,
    Approved,
    AwaitingPayment,
    PaymentExpired,
    Paid,
    InProduction,
    Produced,
    Shipped,
    Delivered,
    Returned,
    ReadyForPickup,
    Collected,
}

/// A transition of the diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Accept,
    Reject,
    StartReview,
    RequestCorrection,
    Resubmit,
    LapseCorrection,
    RejectReview,
    Approve,
    RequestFee,
    ExpirePayment,
    ConfirmPayment,
    OrderProduction,
    CompleteProduction,
    Ship,
    Deliver,
    ReturnDelivery,
    AnnouncePickup,
    Collect,
}

impl State {
    /// Every state, in diagram order.
    pub const ALL: [State; 18] = [
        State::Submitted,
        State::Rejected,
        State::Accepted,
        State::UnderReview,
        State::CorrectionRequested,
        State::CorrectionLapsed,
        State::ReviewRejected,
        State::Approved,
        State::AwaitingPayment,
        State::PaymentExpired,
        State::Paid,
        State::InProduction,
        State::Produced,
        State::Shipped,
        State::Delivered,
        State::Returned,
        State::ReadyForPickup,
        State::Collected,
    ];

    /// The state's name as the lifecycle spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::Rejected => "rejected",
            State::Accepted => "accepted",
            State::UnderReview => "under_review",
            State::CorrectionRequested => "correction_requested",
            State::CorrectionLapsed => "correction_lapsed",
            State::ReviewRejected => "review_rejected",
            State::Approved => "approved",
            State::AwaitingPayment => "awaiting_payment",
            State::PaymentExpired => "payment_expired",
            State::Paid => "paid",
            State::InProduction => "in_production",
            State::Produced => "produced",
            State::Shipped => "shipped",
            State::Delivered => "delivered",
            State::Returned => "returned",
            State::ReadyForPickup => "ready_for_pickup",
            State::Collected => "collected",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states end a case; no step leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Rejected
                | State::ReviewRejected
                | State::CorrectionLapsed
                | State::PaymentExpired
                | State::Delivered
                | State::Collected
        )
    }

    /// The state a step leads to from here, or a refusal.
    pub fn apply(self, step: Step) -> Result<State, Refusal> {
        let (from, to) = step.edge();
        if from.contains(&self) {
            Ok(to)
        } else {
            Err(Refusal { from: self, step })
        }
    }

    /// Whether some sequence of steps leads from `self` to `target` (zero steps included).
    pub fn can_reach(self, target: State) -> bool {
        let mut seen = vec![self];
        let mut i = 0;
        while i < seen.len() {
            let s = seen[i];
            if s == target {
                return true;
            }
            for step in Step::ALL {
                if let Ok(next) = s.apply(step)
                    && !seen.contains(&next)
                {
                    seen.push(next);
                }
            }
            i += 1;
        }
        false
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Step {
    /// Every step.
    pub const ALL: [Step; 18] = [
        Step::Accept,
        Step::Reject,
        Step::StartReview,
        Step::RequestCorrection,
        Step::Resubmit,
        Step::LapseCorrection,
        Step::RejectReview,
        Step::Approve,
        Step::RequestFee,
        Step::ExpirePayment,
        Step::ConfirmPayment,
        Step::OrderProduction,
        Step::CompleteProduction,
        Step::Ship,
        Step::Deliver,
        Step::ReturnDelivery,
        Step::AnnouncePickup,
        Step::Collect,
    ];

    /// The states a step may start from, and where it leads: the diagram, one edge per step
    /// (`resubmit` is the dashed "(resubmitted)" edge).
    pub fn edge(self) -> (&'static [State], State) {
        use State::*;
        match self {
            Step::Accept => (&[Submitted], Accepted),
            Step::Reject => (&[Submitted], Rejected),
            Step::StartReview => (&[Accepted], UnderReview),
            Step::RequestCorrection => (&[UnderReview], CorrectionRequested),
            Step::Resubmit => (&[CorrectionRequested], UnderReview),
            Step::LapseCorrection => (&[CorrectionRequested], CorrectionLapsed),
            Step::RejectReview => (&[UnderReview], ReviewRejected),
            Step::Approve => (&[UnderReview], Approved),
            Step::RequestFee => (&[Approved], AwaitingPayment),
            Step::ExpirePayment => (&[AwaitingPayment], PaymentExpired),
            Step::ConfirmPayment => (&[AwaitingPayment], Paid),
            Step::OrderProduction => (&[Paid], InProduction),
            Step::CompleteProduction => (&[InProduction], Produced),
            Step::Ship => (&[Produced], Shipped),
            Step::Deliver => (&[Shipped], Delivered),
            Step::ReturnDelivery => (&[Shipped], Returned),
            Step::AnnouncePickup => (&[Produced, Returned], ReadyForPickup),
            Step::Collect => (&[ReadyForPickup], Collected),
        }
    }

    /// The step's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Accept => "accept",
            Step::Reject => "reject",
            Step::StartReview => "start_review",
            Step::RequestCorrection => "request_correction",
            Step::Resubmit => "resubmit",
            Step::LapseCorrection => "lapse_correction",
            Step::RejectReview => "reject_review",
            Step::Approve => "approve",
            Step::RequestFee => "request_fee",
            Step::ExpirePayment => "expire_payment",
            Step::ConfirmPayment => "confirm_payment",
            Step::OrderProduction => "order_production",
            Step::CompleteProduction => "complete_production",
            Step::Ship => "ship",
            Step::Deliver => "deliver",
            Step::ReturnDelivery => "return_delivery",
            Step::AnnouncePickup => "announce_pickup",
            Step::Collect => "collect",
        }
    }
}

/// A step the diagram does not allow from the case's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("step `{}` is not allowed from state `{}`", step.as_str(), from.as_str())]
pub struct Refusal {
    pub from: State,
    pub step: Step,
}

impl Refusal {
    /// True when the case has not yet reached the state the step starts from but still can: a
    /// message that arrived early (a callback racing the commit before it) is worth retrying.
    /// False when the case has moved past it or can never get there: the step is refused for good.
    pub fn may_succeed_later(&self) -> bool {
        let (sources, _) = self.step.edge();
        sources
            .iter()
            .any(|s| *s != self.from && self.from.can_reach(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;
    use proptest::prelude::*;

    /// The diagram of domain.md §2 (with `correction_lapsed`), written out edge by edge,
    /// independently of [`Step::edge`].
    const DIAGRAM: [(State, State); 19] = [
        (Submitted, Rejected),
        (Submitted, Accepted),
        (Accepted, UnderReview),
        (UnderReview, CorrectionRequested),
        (CorrectionRequested, UnderReview),
        (CorrectionRequested, CorrectionLapsed),
        (UnderReview, ReviewRejected),
        (UnderReview, Approved),
        (Approved, AwaitingPayment),
        (AwaitingPayment, PaymentExpired),
        (AwaitingPayment, Paid),
        (Paid, InProduction),
        (InProduction, Produced),
        (Produced, Shipped),
        (Shipped, Delivered),
        (Shipped, Returned),
        (Returned, ReadyForPickup),
        (Produced, ReadyForPickup),
        (ReadyForPickup, Collected),
    ];

    #[test]
    fn every_edge_of_the_diagram_is_a_step_and_nothing_else_is() {
        for from in State::ALL {
            for step in Step::ALL {
                let drawn: Vec<State> = DIAGRAM
                    .iter()
                    .filter(|(f, _)| *f == from)
                    .map(|(_, t)| *t)
                    .collect();
                match from.apply(step) {
                    Ok(to) => assert!(
                        drawn.contains(&to),
                        "{from} -{}-> {to} is not drawn",
                        step.as_str()
                    ),
                    Err(r) => assert_eq!(r, Refusal { from, step }),
                }
            }
        }
        for (from, to) in DIAGRAM {
            assert!(
                Step::ALL.iter().any(|s| from.apply(*s) == Ok(to)),
                "{from} -> {to} unreachable"
            );
        }
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for s in State::ALL {
            let leaves = Step::ALL.iter().any(|st| s.apply(*st).is_ok());
            assert_eq!(s.is_terminal(), !leaves, "{s}");
        }
    }

    #[test]
    fn early_and_late_refusals_differ() {
        // payment confirmed before the fee was requested: may work later
        assert!(
            Approved
                .apply(Step::ConfirmPayment)
                .unwrap_err()
                .may_succeed_later()
        );
        // payment confirmed twice: never
        assert!(
            !Paid
                .apply(Step::ConfirmPayment)
                .unwrap_err()
                .may_succeed_later()
        );
        // delivered after the document came back: never; to the hall: yes
        assert!(
            !Returned
                .apply(Step::Deliver)
                .unwrap_err()
                .may_succeed_later()
        );
        assert_eq!(Returned.apply(Step::AnnouncePickup), Ok(ReadyForPickup));
        // returned before the booking was recorded: may work later
        assert!(
            Produced
                .apply(Step::ReturnDelivery)
                .unwrap_err()
                .may_succeed_later()
        );
        // delivered on a pickup case: never
        assert!(
            !ReadyForPickup
                .apply(Step::Deliver)
                .unwrap_err()
                .may_succeed_later()
        );
        assert!(
            !Rejected
                .apply(Step::Approve)
                .unwrap_err()
                .may_succeed_later()
        );
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }

    proptest! {
        /// No sequence of steps, legal or not, ever takes a case along an edge the diagram does
        /// not draw, and a refused step leaves the state as it was.
        #[test]
        fn no_sequence_leaves_the_diagram(steps in proptest::collection::vec(0usize..Step::ALL.len(), 0..60)) {
            let mut state = Submitted;
            for i in steps {
                let step = Step::ALL[i];
                match state.apply(step) {
                    Ok(next) => {
                        prop_assert!(DIAGRAM.contains(&(state, next)));
                        state = next;
                    }
                    Err(refusal) => prop_assert_eq!(refusal.from, state),
                }
                prop_assert!(Submitted.can_reach(state));
            }
        }
    }
}
