//! Intake: the portal's applications enter here.
//!
//! A submission that is not a well-formed application is refused (dead-lettered with the fields
//! at fault). A well-formed one opens its case — one per `application_id`, whatever the number of
//! submissions — and is accepted or rejected with every failing reason code, including
//! `duplicate_active_application` (an open case of the same person and document kind). On
//! acceptance the held document is invalidated, exactly once and irreversibly (policy, other
//! points 4). A resubmission answers a correction request: it is validated again and, when it
//! passes, returns the case to review.
//!
//! With a materials store, the four materials are read from it before the transaction
//! ([`Handler::gather`]) and eligibility applies to the files, not the declarations: a declared
//! material without its file is missing, the photo guide is applied to the photo's real bytes,
//! and where a declaration disagrees with its file the file wins and the disagreement is on the
//! case's timeline (`materials_checked`). A store that cannot answer is a transient failure:
//! the delivery is retried, never rejected for it.

use async_trait::async_trait;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use wangban_domain::application::Application;
use wangban_domain::eligibility::{self, ReasonCode, Rules};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::id_number::IdNumber;
use wangban_domain::ids::CaseId;
use wangban_domain::lifecycle::{State, Step};
use wangban_domain::materials::{self, FileFacts};
use wangban_materials::{MaterialError, MaterialStore};
use wangban_runtime::{CaseRecord, Cx, Decision, Gathered, Handler, HandlerError};
use wangban_store::NewCase;

/// The intake worker.
pub struct Intake {
    pub rules: Rules,
    /// Refuse applications with fields the contract does not define (default: ignore them, so
    /// the portal can extend the contract compatibly).
    pub refuse_unknown_fields: bool,
    /// Where the applicants' uploads are; `None`: the declarations are taken as they are.
    pub materials: Option<Arc<dyn MaterialStore>>,
}

/// What the materials store holds for an application's materials (read by [`Handler::gather`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Files {
    /// By SHA-256: the file's facts, or `None` when the store has no such file.
    pub found: BTreeMap<String, Option<FileFacts>>,
    /// Names whose stored bytes do not hash to them (integrity errors): counted missing.
    pub corrupt: Vec<String>,
}

/// What the files said about one application: the timeline record, if any, and the names of
/// stored files that did not hash to them.
struct Checked {
    record: Option<serde_json::Value>,
    corrupt: Vec<String>,
}

impl Checked {
    /// Applies the gathered files (if a store was read) to `app`.
    fn of(cx: &Cx<'_>, app: &mut Application) -> Checked {
        match cx.gathered::<Files>() {
            Some(files) => Checked {
                record: files.apply(app),
                corrupt: files.corrupt.clone(),
            },
            None => Checked {
                record: None,
                corrupt: Vec::new(),
            },
        }
    }

    /// Puts what differed on the case's timeline and each integrity error where operators see
    /// it (`/api/ops/materials`, the dashboard).
    async fn record(self, cx: &mut Cx<'_>, case: &CaseRecord) -> Result<(), HandlerError> {
        for name in &self.corrupt {
            cx.tx()
                .record_material_problem(name, &case.case_id, "intake")
                .await?;
        }
        if let Some(record) = self.record {
            cx.audit(case, "materials_checked", record).await?;
        }
        Ok(())
    }
}

impl Files {
    /// The application's materials as the files are, and the timeline record of what differed
    /// (`None` when the files agree with every declaration).
    pub fn apply(&self, app: &mut Application) -> Option<serde_json::Value> {
        let (found, discrepancies) = materials::reconcile(&app.materials, |sha| {
            self.found.get(&sha.to_ascii_lowercase()).copied().flatten()
        });
        app.materials = found;
        (!discrepancies.is_empty() || !self.corrupt.is_empty())
            .then(|| json!({"discrepancies": discrepancies, "integrity_errors": self.corrupt}))
    }
}

/// The effect purpose of the held document's invalidation.
pub const INVALIDATION: &str = "document_invalidated";

fn parse(event: &Envelope, strict: bool) -> Result<Application, HandlerError> {
    let parsed = if strict {
        Application::from_value_strict(&event.data)
    } else {
        Application::from_value(&event.data)
    };
    let app = parsed.map_err(|m| HandlerError::Permanent(m.to_string()))?;
    let case_id = CaseId::for_application(&app.application_id);
    if case_id != event.subject {
        return Err(HandlerError::Permanent(format!(
            "envelope subject is not the case of application_id (expected {case_id})"
        )));
    }
    Ok(app)
}

/// What intake decided about a submission.
#[derive(Clone, Debug, PartialEq)]
pub enum Submission {
    /// The same application again: noted on the case it opened.
    Repeated(Decision),
    /// A case to open (accepted or rejected), then this decision about it.
    Open { accepted: bool, decision: Decision },
}

/// What intake decided about a resubmission.
#[derive(Clone, Debug, PartialEq)]
pub enum Resubmission {
    /// Refused and recorded (nothing pending, another person or document, still ineligible).
    Refused(Decision),
    /// The corrected application replaces the stored one; the case returns to review.
    Accepted(Decision),
}

impl Intake {
    /// What a submission of `app` does: `existing` is the case its application id already has,
    /// `open_duplicate` whether the person has another open case of the same document kind.
    pub fn decide_submission(
        &self,
        app: &Application,
        existing: Option<&CaseRecord>,
        open_duplicate: bool,
    ) -> Submission {
        if let Some(existing) = existing {
            return Submission::Repeated(Decision::audit(
                "duplicate_submission",
                json!({"state": existing.state}),
            ));
        }
        let mut codes = eligibility::assess(app, &self.rules);
        if open_duplicate {
            codes.push(ReasonCode::DuplicateActiveApplication);
        }
        let kind = app.document_kind().map(|k| k.as_str());
        if !codes.is_empty() {
            let reasons: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            let decision = Decision::step(Step::Reject, json!({"reasons": reasons}));
            return Submission::Open {
                accepted: false,
                decision,
            };
        }
        // The held document: invalidated once, irreversibly, the moment the case is accepted.
        let detail = json!({"document_kind": kind});
        let mut decision =
            Decision::step(Step::Accept, detail.clone()).recording(INVALIDATION, detail.clone());
        decision
            .audit
            .push(("document_invalidated", detail.clone()));
        decision.emit.push((EventType::DocumentInvalidated, detail));
        Submission::Open {
            accepted: true,
            decision,
        }
    }

    /// What a resubmission `app` does to `case`, whose stored application is `stored`; `changed`
    /// names the correction items whose content differs from the stored application's
    /// ([`wangban_domain::review::changed_items`]), recorded with an accepted one. An early one
    /// (the case has not reached `correction_requested` yet) waits.
    pub fn decide_resubmission(
        &self,
        case: &CaseRecord,
        stored: &Application,
        app: &Application,
        changed: &[&str],
    ) -> Result<Resubmission, HandlerError> {
        let refused = |detail| {
            Ok(Resubmission::Refused(Decision::audit(
                "resubmission_refused",
                detail,
            )))
        };
        if case.state != State::CorrectionRequested {
            if State::CorrectionRequested.can_reach(case.state) || case.state.is_terminal() {
                return refused(json!({"state": case.state, "reason": "no correction is pending"}));
            }
            return Err(HandlerError::Early(format!(
                "resubmission while the case is {}",
                case.state
            )));
        }
        if !stored
            .applicant
            .id_number
            .eq_ignore_ascii_case(&app.applicant.id_number)
            || stored.document_kind() != app.document_kind()
        {
            return refused(json!({"reason": "identity number or document kind changed"}));
        }
        let codes = eligibility::assess(app, &self.rules);
        if !codes.is_empty() {
            let reasons: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            return refused(json!({"reasons": reasons}));
        }
        let round = case.review_round + 1;
        let mut decision = Decision::audit(
            "resubmission_accepted",
            json!({"round": round, "changed": changed}),
        );
        decision
            .emit
            .push((EventType::CaseResubmitted, json!({"round": round})));
        Ok(Resubmission::Accepted(decision))
    }

    async fn submitted(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let mut app = parse(event, self.refuse_unknown_fields)?;
        let checked = Checked::of(cx, &mut app);
        let case_id = event.subject.clone();
        let existing = cx.tx().load_case(&case_id).await?;
        let key = cx.tx().fingerprint_key().to_owned();
        let fingerprint = IdNumber::parse(&app.applicant.id_number)
            .ok()
            .map(|id| id.fingerprint(&key));
        let kind = app.document_kind().map(|k| k.as_str().to_owned());
        let open_duplicate = match (&existing, &fingerprint, &kind) {
            (None, Some(fp), Some(k)) => cx.tx().open_case_for(fp, k).await?.is_some(),
            _ => false,
        };
        match self.decide_submission(&app, existing.as_ref(), open_duplicate) {
            Submission::Repeated(decision) => {
                let mut case = existing.expect("a repeated submission has its case");
                cx.apply(&mut case, decision).await?;
            }
            Submission::Open { accepted, decision } => {
                let new_case = NewCase {
                    case_id: case_id.clone(),
                    application_id: app.application_id.to_string(),
                    id_fingerprint: fingerprint,
                    document_kind: kind,
                    delivery_method: app.delivery.method().as_str().into(),
                    application: event.data.to_string(),
                };
                let event_id = event.id.to_string();
                cx.tx().insert_case(&new_case, accepted, &event_id).await?;
                let mut case = cx.case().await?;
                checked.record(cx, &case).await?;
                cx.apply(&mut case, decision).await?;
            }
        }
        Ok(())
    }

    async fn resubmitted(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let mut app = parse(event, self.refuse_unknown_fields)?;
        let checked = Checked::of(cx, &mut app);
        let Some(mut case) = cx.tx().load_case(&event.subject).await? else {
            return Err(HandlerError::Permanent(
                "resubmission for an application with no case".into(),
            ));
        };
        checked.record(cx, &case).await?;
        let stored = Cx::application(&case)?;
        let before: serde_json::Value = serde_json::from_str(&case.application).unwrap_or_default();
        let changed = wangban_domain::review::changed_items(&before, &event.data);
        match self.decide_resubmission(&case, &stored, &app, &changed)? {
            Resubmission::Refused(decision) => {
                cx.apply(&mut case, decision).await?;
            }
            Resubmission::Accepted(decision) => {
                cx.tx()
                    .replace_application(&case.case_id, &event.data.to_string())
                    .await?;
                cx.apply(&mut case, decision).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for Intake {
    fn worker(&self) -> &'static str {
        "intake"
    }

    fn steps(&self) -> Vec<Step> {
        vec![Step::Accept, Step::Reject]
    }

    fn emits(&self) -> Vec<EventType> {
        vec![EventType::DocumentInvalidated, EventType::CaseResubmitted]
    }

    fn bindings(&self) -> Vec<String> {
        vec![
            EventType::ApplicationSubmitted.routing_key(),
            EventType::ApplicationResubmitted.routing_key(),
        ]
    }

    async fn gather(&self, event: &Envelope) -> Result<Option<Gathered>, HandlerError> {
        let Some(store) = &self.materials else {
            return Ok(None);
        };
        if !matches!(
            event.kind(),
            Some(EventType::ApplicationSubmitted | EventType::ApplicationResubmitted)
        ) {
            return Ok(None);
        }
        // A malformed application is refused by `handle`, naming its fields.
        let Ok(app) = parse(event, self.refuse_unknown_fields) else {
            return Ok(None);
        };
        let m = &app.materials;
        let mut files = Files::default();
        for material in [&m.photo, &m.signature, &m.id_card_front, &m.id_card_back]
            .into_iter()
            .flatten()
        {
            let name = material.sha256.to_ascii_lowercase();
            if files.found.contains_key(&name) {
                continue;
            }
            let facts = match store.get(&name).await {
                Ok(bytes) => bytes.map(|b| materials::inspect(&b)),
                Err(MaterialError::Integrity { .. }) => {
                    // The name only: a hash, no personal data.
                    tracing::error!(material = %name, store = %store.describe(), "a stored material does not hash to its name");
                    files.corrupt.push(name.clone());
                    None
                }
                Err(MaterialError::InvalidName(_)) => None,
                Err(e) => {
                    return Err(HandlerError::Transient(format!(
                        "reading the materials from the {}: {e}",
                        store.describe()
                    )));
                }
            };
            files.found.insert(name, facts);
        }
        Ok(Some(Arc::new(files)))
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind() {
            Some(EventType::ApplicationSubmitted) => self.submitted(cx, event).await,
            Some(EventType::ApplicationResubmitted) => self.resubmitted(cx, event).await,
            _ => Err(HandlerError::Permanent(format!(
                "intake does not handle {}",
                event.event_type
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTED: &str =
        include_str!("../../../examples/applications/accepted-passport-courier.json");
    const REJECTED: &str =
        include_str!("../../../examples/applications/rejected-three-reasons.json");

    fn intake() -> Intake {
        Intake {
            materials: None,
            rules: Rules::default(),
            refuse_unknown_fields: false,
        }
    }

    fn app(text: &str) -> Application {
        Application::parse(text.as_bytes()).unwrap()
    }

    fn case(state: State) -> CaseRecord {
        CaseRecord {
            application: ACCEPTED.into(),
            ..wangban_runtime::case_in(state)
        }
    }

    /// The example with its other three files as declared and `facts` the photo's file.
    /// Returns the reasons and the fields of the photo's recorded discrepancies.
    fn decided_on_files(facts: Option<FileFacts>) -> (Vec<String>, Vec<String>) {
        let mut a = app(ACCEPTED);
        let m = &a.materials;
        let mut found: BTreeMap<String, Option<FileFacts>> =
            [&m.signature, &m.id_card_front, &m.id_card_back]
                .into_iter()
                .flatten()
                .map(|d| (d.sha256.clone(), declared(d)))
                .collect();
        found.insert(m.photo.as_ref().unwrap().sha256.clone(), facts);
        let files = Files {
            found,
            corrupt: vec![],
        };
        let checked = files.apply(&mut a);
        let reasons = match intake().decide_submission(&a, None, false) {
            Submission::Open { accepted: true, .. } => vec![],
            Submission::Open { decision, .. } => {
                let (_, detail) = decision.step.unwrap();
                serde_json::from_value(detail["reasons"].clone()).unwrap()
            }
            Submission::Repeated(_) => unreachable!(),
        };
        let photo = checked.map_or_else(Vec::new, |c| {
            c["discrepancies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["material"] == "photo")
                .map(|d| d["field"].as_str().unwrap().to_owned())
                .collect()
        });
        (reasons, photo)
    }

    /// The facts of a file exactly as `d` declares it.
    fn declared(d: &wangban_domain::application::Material) -> Option<FileFacts> {
        Some(FileFacts {
            content_type: Some("image/jpeg"),
            bytes: d.bytes,
            width_px: d.width_px,
            height_px: d.height_px,
        })
    }

    #[test]
    fn with_a_store_the_files_decide_and_their_disagreements_are_recorded() {
        let jpeg = |w, h, bytes| {
            Some(FileFacts {
                content_type: Some("image/jpeg"),
                bytes,
                width_px: w,
                height_px: h,
            })
        };
        // The photo's declaration agrees with the file.
        let example = app(ACCEPTED).materials.photo.unwrap();
        let (reasons, photo) = decided_on_files(declared(&example));
        assert!(
            reasons.is_empty() && photo.is_empty(),
            "{reasons:?} {photo:?}"
        );
        // The file is 360x480 and 40,000 bytes: it conforms, the difference is recorded.
        let (reasons, photo) = decided_on_files(jpeg(360, 480, 40_000));
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(photo, ["bytes", "width_px", "height_px"]);
        // A square photo, whatever was declared.
        let (reasons, _) = decided_on_files(jpeg(400, 400, 40_000));
        assert_eq!(reasons, ["photo_nonconforming"]);
        // A PNG named as the photo.
        let png = FileFacts {
            content_type: Some("image/png"),
            ..jpeg(354, 472, 45_000).unwrap()
        };
        let (reasons, _) = decided_on_files(Some(png));
        assert_eq!(reasons, ["photo_nonconforming"]);
        // Declared, not in the store.
        let (reasons, photo) = decided_on_files(None);
        assert_eq!(reasons, ["materials_incomplete"]);
        assert_eq!(photo, ["file"]);
    }

    #[test]
    fn a_submission_opens_one_case_accepted_with_its_invalidation_or_rejected_with_every_reason() {
        let i = intake();
        let ok = app(ACCEPTED);
        let Submission::Open { accepted, decision } = i.decide_submission(&ok, None, false) else {
            panic!("a new application opens a case")
        };
        assert!(accepted);
        let kind = json!({"document_kind": "passport"});
        assert_eq!(decision.step, Some((Step::Accept, kind.clone())));
        assert_eq!(
            decision.record,
            vec![(INVALIDATION.to_owned(), kind.clone())]
        );
        assert_eq!(decision.audit, vec![("document_invalidated", kind.clone())]);
        assert_eq!(decision.emit, vec![(EventType::DocumentInvalidated, kind)]);

        // The same person with an open case of the same kind: rejected, and nothing invalidated.
        let Submission::Open { accepted, decision } = i.decide_submission(&ok, None, true) else {
            panic!("a case")
        };
        assert!(!accepted);
        assert_eq!(
            decision.step,
            Some((
                Step::Reject,
                json!({"reasons": ["duplicate_active_application"]})
            ))
        );
        assert!(decision.record.is_empty() && decision.emit.is_empty());

        // Every failing rule is named.
        let bad = app(REJECTED);
        let Submission::Open { accepted, decision } = i.decide_submission(&bad, None, false) else {
            panic!("a case")
        };
        assert!(!accepted);
        let (step, detail) = decision.step.unwrap();
        assert_eq!(step, Step::Reject);
        assert_eq!(detail["reasons"].as_array().unwrap().len(), 3, "{detail}");

        // The same application again (a redelivery or the portal's retry): noted, nothing else.
        assert_eq!(
            i.decide_submission(&ok, Some(&case(State::UnderReview)), false),
            Submission::Repeated(Decision::audit(
                "duplicate_submission",
                json!({"state": "under_review"})
            ))
        );
    }

    #[test]
    fn a_resubmission_answers_only_a_pending_correction_of_the_same_person() {
        let i = intake();
        let stored = app(ACCEPTED);
        let accepted = i
            .decide_resubmission(
                &case(State::CorrectionRequested),
                &stored,
                &stored,
                &["photo", "phone"],
            )
            .unwrap();
        let mut expected = Decision::audit(
            "resubmission_accepted",
            json!({"round": 2, "changed": ["photo", "phone"]}),
        );
        expected
            .emit
            .push((EventType::CaseResubmitted, json!({"round": 2})));
        assert_eq!(accepted, Resubmission::Accepted(expected));

        // Late: the case has moved past the correction (resubmitted twice) or closed.
        for state in [State::UnderReview, State::Approved, State::CorrectionLapsed] {
            let r = i
                .decide_resubmission(&case(state), &stored, &stored, &[])
                .unwrap();
            assert_eq!(
                r,
                Resubmission::Refused(Decision::audit(
                    "resubmission_refused",
                    json!({"state": state, "reason": "no correction is pending"})
                )),
                "{state}"
            );
        }
        // Early: the correction has not been asked for yet.
        let err = i
            .decide_resubmission(&case(State::Accepted), &stored, &stored, &[])
            .unwrap_err();
        assert!(err.is_early(), "{err}");

        // Another person's number, or another document: refused.
        let mut other: serde_json::Value = serde_json::from_str(ACCEPTED).unwrap();
        other["applicant"]["id_number"] = json!("11010519491231002X");
        let other = Application::from_value(&other).unwrap();
        let r = i
            .decide_resubmission(&case(State::CorrectionRequested), &stored, &other, &[])
            .unwrap();
        assert_eq!(
            r,
            Resubmission::Refused(Decision::audit(
                "resubmission_refused",
                json!({"reason": "identity number or document kind changed"})
            ))
        );
        // Still ineligible after the correction: refused with the reasons.
        let bad = app(REJECTED);
        let r = i
            .decide_resubmission(&case(State::CorrectionRequested), &bad, &bad, &[])
            .unwrap();
        assert!(matches!(r, Resubmission::Refused(d) if d.audit[0].1["reasons"].is_array()));
    }
}
