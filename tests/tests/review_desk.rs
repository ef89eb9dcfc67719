//! The staffed review desk (issue #3) on real RabbitMQ and PostgreSQL: `wangban serve` with a
//! reviewers file, driven through the reviewer API as reviewers would.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use wangban::demo::{self, Rng, Scenario};
use wangban::settings::MaterialsStore;
use wangban_domain::clock::Clock;
use wangban_materials::{LocalDir, MaterialStore, S3};
use wangban_review::desk_file::{DeskFile, token_digest};
use wangban_tests::{RealServices, Served, eventually, http};

const OPERATOR: &str = "operator-token-for-desk-tests";
const BEIJING: &str = "110105";
const SHANGHAI: &str = "310104";

fn token(reviewer: &str) -> String {
    format!("token-of-{reviewer}")
}

/// A reviewers file: Beijing's office with `beijing` reviewers and a supervisor (bj-sup),
/// Shanghai's with one reviewer (sh-1).
fn desk_text(beijing: &[&str]) -> String {
    let reviewer = |id: &str, offices: &[&str], supervises: &[&str]| {
        json!({"id": id, "name": id, "token_sha256": token_digest(&token(id)),
               "offices": offices, "supervises": supervises})
    };
    let mut reviewers: Vec<Value> = beijing
        .iter()
        .map(|id| reviewer(id, &["beijing"], &[]))
        .collect();
    reviewers.push(reviewer("bj-sup", &[], &["beijing"]));
    reviewers.push(reviewer("sh-1", &["shanghai"], &[]));
    json!({
        "offices": [{"id": "beijing", "name": "北京市公安局出入境管理总队", "districts": ["1101"]},
                    {"id": "shanghai", "name": "上海市公安局出入境管理局", "districts": ["3101"]}],
        "reviewers": reviewers
    })
    .to_string()
}

/// The desk most tests use: bj-1, bj-2 and bj-3 review for Beijing.
fn desk() -> DeskFile {
    DeskFile::parse(&desk_text(&["bj-1", "bj-2", "bj-3"]))
        .expect("the test's reviewers file is valid")
}

struct Desk {
    served: Served,
    rng: Rng,
    run: String,
}

impl std::ops::Deref for Desk {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Desk {
    async fn start(test: &str, tweak: impl FnOnce(&mut wangban::settings::Settings)) -> Desk {
        let mut env = RealServices::new(test).await;
        env.settings.operator_token = Some(wangban::settings::Secret::new(OPERATOR));
        env.settings.desk = Some(desk());
        env.settings.fees.payment_window = Duration::from_secs(600);
        env.settings.fees.reminder_after = Duration::from_secs(600);
        tweak(&mut env.settings);
        let run = format!("DSK{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        Desk {
            served: Served::start(env).await,
            rng: Rng::new(3),
            run,
        }
    }

    async fn stop(self) {
        self.served.stop().await;
    }

    /// Submits a passport-by-courier application of `hukou`; returns (case id, application).
    async fn submit(&mut self, n: usize, hukou: &str) -> (String, Value) {
        self.submit_with(n, hukou, |_| {}).await
    }

    /// [`Desk::submit`], the application changed by `change` first.
    async fn submit_with(
        &mut self,
        n: usize,
        hukou: &str,
        change: impl FnOnce(&mut Value),
    ) -> (String, Value) {
        let mut app = demo::application(&self.run, n, Scenario::PassportCourier, &mut self.rng);
        app["applicant"]["hukou_region"] = json!(hukou);
        change(&mut app);
        let case = self.client.submit(&app, false).await.unwrap().to_string();
        (case, app)
    }

    /// Submits `n` Beijing applications numbered from `from` and waits until all are in review.
    async fn submit_for_review(&mut self, from: usize, n: usize) -> Vec<String> {
        let mut cases = Vec::new();
        for i in from..from + n {
            cases.push(self.submit(i, BEIJING).await.0);
        }
        let all: Vec<&str> = cases.iter().map(String::as_str).collect();
        self.wait_state(&all, "under_review").await;
        cases
    }

    /// Tells the desk whether `reviewer` takes new cases.
    async fn set_available(&self, reviewer: &str, available: bool) {
        let body = json!({"available": available});
        let (status, answer) = self
            .call(reviewer, "POST", "/api/review/me/availability", Some(body))
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Two whole passes of the review worker's timer, then a quiet pipeline: whatever a timer or
    /// an event could have changed by now, it has. A test proves an absence after this, never
    /// after a sleep.
    async fn settle(&self) {
        let passes = || async {
            let (_, m) = http("GET", &format!("{}/metrics", self.base), None, None).await;
            m.lines()
                .find_map(|l| l.strip_prefix("wangban_timer_passes_total{worker=\"review\"} "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let start = passes().await;
        eventually(
            Duration::from_secs(60),
            "two passes of the review timer",
            || async { passes().await >= start + 2 },
        )
        .await;
        wangban_tests::quiesce(&self.client).await;
    }

    async fn state(&self, case: &str) -> String {
        let view = self.client.runtime.store.case_view(case).await.unwrap();
        view.map(|v| v.case.state.to_string()).unwrap_or_default()
    }

    async fn wait_state(&self, cases: &[&str], state: &str) {
        eventually(
            Duration::from_secs(90),
            &format!("{} case(s) to be {state}", cases.len()),
            || async {
                for c in cases {
                    if self.state(c).await != state {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// A reviewer API call: (status, JSON body or Null).
    async fn call(
        &self,
        reviewer: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) = http(
            method,
            &format!("{}{path}", self.base),
            Some(&token(reviewer)),
            body.as_deref(),
        )
        .await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn decide(&self, reviewer: &str, case: &str, decision: Value) -> (u16, Value) {
        self.call(
            reviewer,
            "POST",
            &format!("/api/review/cases/{case}/decision"),
            Some(decision),
        )
        .await
    }

    /// The case ids of the open tasks `reviewer` holds.
    async fn held(&self, reviewer: &str) -> Vec<String> {
        let (status, body) = self.call(reviewer, "GET", "/api/review/tasks", None).await;
        assert_eq!(status, 200, "{body}");
        body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["case_id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn task(&self, case: &str) -> wangban_store::Task {
        let tasks = self.client.runtime.store.tasks_of(case).await.unwrap();
        tasks.last().cloned().expect("a review task")
    }

    /// The cases whose review task is in a supervisor queue, in the order they were escalated.
    async fn escalated(&self) -> Vec<String> {
        let tasks = self.client.runtime.store.escalated_tasks().await.unwrap();
        tasks.into_iter().map(|t| t.case_id).collect()
    }

    async fn audit_kinds(&self, case: &str) -> Vec<String> {
        let view = self
            .client
            .runtime
            .store
            .case_view(case)
            .await
            .unwrap()
            .unwrap();
        view.audit
            .iter()
            .map(|a| {
                let d: Value = serde_json::from_str(&a.detail).unwrap_or_default();
                match d["step"].as_str() {
                    Some(step) => format!("{}:{step}", a.kind),
                    None => a.kind.clone(),
                }
            })
            .collect()
    }
}

const APPROVE: fn() -> Value = || json!({"decision": "approve"});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_cases_are_shared_fairly_among_three_reviewers_and_decided() {
    let mut d = Desk::start("desk_fair", |_| {}).await;
    let cases = d.submit_for_review(0, 300).await;
    let all: Vec<&str> = cases.iter().map(String::as_str).collect();

    let mut seen = HashSet::new();
    let mut per_reviewer = BTreeMap::new();
    for r in ["bj-1", "bj-2", "bj-3"] {
        let held = d.held(r).await;
        for c in &held {
            assert!(seen.insert(c.clone()), "{c} is held by two reviewers");
        }
        per_reviewer.insert(r, held);
    }
    let counts: Vec<usize> = per_reviewer.values().map(Vec::len).collect();
    assert_eq!(counts, [100, 100, 100], "least-open-tasks assignment");
    assert_eq!(seen.len(), 300);
    // Operators see the same from the operations API.
    let (status, desk) = http(
        "GET",
        &format!("{}/api/ops/review-desk", d.base),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 200, "{desk}");
    let desk: Value = serde_json::from_str(&desk).unwrap();
    assert_eq!(
        desk["queues"],
        json!([{"office": "beijing", "queue": "office", "open": 300, "waiting": 0}])
    );
    let load: Vec<i64> = desk["reviewers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["open"].as_i64().unwrap())
        .collect();
    assert_eq!(
        load,
        [100, 100, 100, 0, 0],
        "bj-1, bj-2, bj-3, bj-sup, sh-1"
    );
    assert!(
        d.held("bj-sup").await.is_empty(),
        "supervisors take no first-line work"
    );
    assert!(d.held("sh-1").await.is_empty());

    // Each reviewer decides their own; all 300 go on to delivery.
    for (r, held) in &per_reviewer {
        for c in held {
            let (status, body) = d.decide(r, c, APPROVE()).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    d.wait_state(&all, "delivered").await;
    for c in &cases[..5] {
        let task = d.task(c).await;
        assert_eq!(task.decision.as_deref(), Some("approve"));
        assert_eq!(task.decided_by, task.reviewer);
    }
    // The staffed desk locks its office to assign: its worker never batches deliveries (batches
    // of it deadlocked), while the others still do.
    let (_, metrics) = http("GET", &format!("{}/metrics", d.base), None, None).await;
    let counter = |name: &str, worker: &str| -> f64 {
        let prefix = format!("{name}{{worker=\"{worker}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (transactions, deliveries) = (
        counter("wangban_transactions_total", "review"),
        counter("wangban_transaction_deliveries_total", "review"),
    );
    assert!(transactions >= 600.0, "{metrics}");
    assert_eq!(deliveries, transactions, "the review worker batched");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resubmission_returns_to_the_reviewer_who_asked_and_the_rounds_are_limited() {
    let mut d = Desk::start("desk_rounds", |_| {}).await;
    // One case each, then the case that will be corrected: all three tie, so it goes to bj-1.
    d.submit_for_review(0, 3).await;
    let (case, mut app) = d.submit(3, BEIJING).await;
    d.wait_state(&[&case], "under_review").await;
    let asker = d.task(&case).await.reviewer.expect("assigned");

    let ask = json!({"decision": "request_correction", "items": ["photo", "signature"], "message": "照片背景不是白色"});
    let (status, body) = d.decide(&asker, &case, ask.clone()).await;
    assert_eq!(status, 200, "{body}");
    d.wait_state(&[&case], "correction_requested").await;
    // The others finish their work: the asker now has more open tasks than anyone.
    for r in ["bj-1", "bj-2", "bj-3"].into_iter().filter(|r| *r != asker) {
        for c in d.held(r).await {
            assert_eq!(d.decide(r, &c, APPROVE()).await.0, 200);
        }
    }
    let resubmit = |app: &mut Value| {
        app["submitted_at"] = json!(
            chrono::Utc::now()
                .with_timezone(&wangban_domain::application::beijing())
                .to_rfc3339()
        );
        app.clone()
    };
    d.client.submit(&resubmit(&mut app), true).await.unwrap();
    d.wait_state(&[&case], "under_review").await;
    let round2 = d.task(&case).await;
    assert_eq!(round2.round, 2);
    assert_eq!(
        round2.reviewer.as_deref(),
        Some(asker.as_str()),
        "back to whoever asked"
    );

    // The asker goes away: round 3 goes to someone else.
    d.set_available(&asker, false).await;
    assert_eq!(d.decide(&asker, &case, ask.clone()).await.0, 200);
    d.wait_state(&[&case], "correction_requested").await;
    d.client.submit(&resubmit(&mut app), true).await.unwrap();
    d.wait_state(&[&case], "under_review").await;
    let round3 = d.task(&case).await;
    assert_eq!(round3.round, 3);
    let other = round3.reviewer.clone().expect("assigned");
    assert_ne!(other, asker);

    // Round 3 is the last: no correction, approve or reject.
    let (status, body) = d.decide(&other, &case, ask).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("last of 3"),
        "{body}"
    );
    assert_eq!(d.decide(&other, &case, APPROVE()).await.0, 200);
    d.wait_state(&[&case], "delivered").await;

    // The timeline shows every round; each correction request reached the applicant by SMS.
    let (status, view) = d
        .call(&other, "GET", &format!("/api/review/cases/{case}"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["rounds"].as_array().unwrap().len(), 3, "{view}");
    assert_eq!(
        view["corrections"].as_array().unwrap().len(),
        4,
        "two asked, two answered: {view}"
    );
    assert_eq!(
        view["corrections"][0]["detail"]["items"],
        json!(["photo", "signature"])
    );
    // Decided and delivered: the timeline stays, the applicant's personal data does not.
    assert_eq!(view["personal_data"], false, "{view}");
    assert!(
        view["application"]["applicant"].get("id_number").is_none(),
        "{view}"
    );
    let rounds = d.client.runtime.store.tasks_of(&case).await.unwrap();
    let decisions: Vec<_> = rounds
        .iter()
        .map(|t| {
            (
                t.round,
                t.decided_by.clone().unwrap(),
                t.decision.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (1, asker.clone(), "request_correction".into()),
            (2, asker.clone(), "request_correction".into()),
            (3, other.clone(), "approve".into()),
        ]
    );
    let store = &d.client.runtime.store;
    wangban_tests::wait_effects(store, "sms:correction_requested", 1).await;
    wangban_tests::wait_effects(store, "sms:correction_requested:2", 1).await;
    let kinds = d.audit_kinds(&case).await;
    let steps: Vec<&String> = kinds
        .iter()
        .filter(|k| k.starts_with("transition:"))
        .collect();
    assert_eq!(
        steps.iter().filter(|k| k.ends_with(":resubmit")).count(),
        2,
        "{kinds:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_reviewers_deciding_one_case_at_once_exactly_one_wins() {
    let mut d = Desk::start("desk_race", |_| {}).await;
    let cases = d.submit_for_review(0, 12).await;
    let mut approved = 0;
    for case in &cases {
        // The reviewer holding it approves while the office's supervisor rejects.
        let holder = d.task(case).await.reviewer.unwrap();
        let reject = json!({"decision": "reject", "reason": "证件照片与身份证照片不符"});
        let (a, b) = tokio::join!(
            d.decide(&holder, case, APPROVE()),
            d.decide("bj-sup", case, reject)
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{case}: {a:?} {b:?}");
        let loser = if a.0 == 409 { &a.1 } else { &b.1 };
        assert!(
            loser["error"].as_str().unwrap().contains("decided"),
            "{loser}"
        );
        approved += usize::from(a.0 == 200);
    }
    for (i, case) in cases.iter().enumerate() {
        eventually(
            Duration::from_secs(60),
            "the winner's decision to be applied",
            || async { !matches!(d.state(case).await.as_str(), "under_review") },
        )
        .await;
        let kinds = d.audit_kinds(case).await;
        let decisions: Vec<&String> = kinds
            .iter()
            .filter(|k| k.ends_with(":approve") || k.ends_with(":reject_review"))
            .collect();
        assert_eq!(decisions.len(), 1, "case {i}: {kinds:?}");
        let task = d.task(case).await;
        let expected = if decisions[0].ends_with(":approve") {
            "approve"
        } else {
            "reject"
        };
        assert_eq!(task.decision.as_deref(), Some(expected));
    }
    eprintln!(
        "[desk] race: the holder won {approved} of {} races",
        cases.len()
    );
    d.stop().await;
}

/// The bus is not a back door: a `review.decided` published by hand — by anyone who may publish
/// to the exchange — moves nothing while the staffed desk has not recorded that decision; it is
/// kept on the case's chain as unmatched. `wangban verify` flags a decision step the desk did not
/// record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_did_not_come_through_the_desk_moves_nothing() {
    let mut d = Desk::start("desk_forged", |_| {}).await;
    let (case, _) = d.submit(0, BEIJING).await;
    d.wait_state(&[&case], "under_review").await;
    let holder = d.task(&case).await.reviewer.expect("assigned");
    let case_id: wangban_domain::ids::CaseId = case.parse().unwrap();
    // A stranger's approval, then one in the holder's name: neither went through the desk.
    for reviewer in ["attacker", holder.as_str()] {
        let forged = wangban_runtime::ingress::event(
            d.client.runtime.store.clock(),
            wangban_domain::events::EventType::ReviewDecided,
            "/somewhere",
            &case_id,
            None,
            json!({"decision": "approve", "round": 1, "reviewer": reviewer}),
        );
        wangban_runtime::ingress::publish(d.client.runtime.bus.as_ref(), &forged)
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(60),
        "two unmatched decisions recorded",
        || async {
            d.audit_kinds(&case)
                .await
                .iter()
                .filter(|k| *k == "decision_unmatched")
                .count()
                == 2
        },
    )
    .await;
    assert_eq!(d.state(&case).await, "under_review");
    assert!(
        d.task(&case).await.decided_at.is_none(),
        "the task is still open"
    );
    // The holder's own decision through the desk moves it.
    let (status, body) = d.decide(&holder, &case, APPROVE()).await;
    assert_eq!(status, 200, "{body}");
    // (`approved` lasts only until the payment order: wait for the end of the line.)
    d.wait_state(&[&case], "delivered").await;
    let store = &d.client.runtime.store;
    let queues = wangban::pipeline::worker_queues(&d.env.settings);
    let grace = Duration::from_secs(3600);
    let about = |v: &wangban::verify::Verification| {
        v.violations
            .iter()
            .filter(|v| v.contains(&case) && v.contains("at the desk"))
            .count()
    };
    let clean = wangban::verify::check(store, &queues, grace).await.unwrap();
    assert_eq!(about(&clean), 0, "{:?}", clean.violations);
    // Had the desk recorded another decision, the approval would be flagged.
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&d.env.settings.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE review_tasks SET decision = 'reject' WHERE case_id = $1")
        .bind(&case)
        .execute(&mut conn)
        .await
        .unwrap();
    let flagged = wangban::verify::check(store, &queues, grace).await.unwrap();
    assert_eq!(about(&flagged), 1, "{:?}", flagged.violations);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reviewer_of_another_office_is_refused_and_nothing_changes() {
    let mut d = Desk::start("desk_authz", |_| {}).await;
    let (case, _) = d.submit(0, BEIJING).await;
    let (sh_case, _) = d.submit(1, SHANGHAI).await;
    d.wait_state(&[&case, &sh_case], "under_review").await;
    assert_eq!(d.task(&sh_case).await.reviewer.as_deref(), Some("sh-1"));
    let before_task = d.task(&case).await;
    // What the refused calls could have written; the SMS the case's acceptance set off is
    // recorded whenever the gateway answers, so it is left out of the comparison.
    let decided = |kinds: Vec<String>| -> Vec<String> {
        kinds
            .into_iter()
            .filter(|k| !k.starts_with("sms_"))
            .collect()
    };
    let before_audit = decided(d.audit_kinds(&case).await);

    // Another office's case is answered as a case that does not exist: probing tells nothing.
    let (status, body) = d
        .call("sh-1", "GET", &format!("/api/review/cases/{case}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.get("application").is_none());
    let nowhere = "case_000000000000000000000000";
    let (status, nothing) = d
        .call("sh-1", "GET", &format!("/api/review/cases/{nowhere}"), None)
        .await;
    assert_eq!(
        (status, &nothing),
        (404, &body),
        "a missing case looks the same"
    );
    for decision in [APPROVE(), json!({"decision": "reject", "reason": "x"})] {
        let (status, body) = d.decide("sh-1", &case, decision).await;
        assert_eq!(status, 404, "{body}");
    }
    assert_eq!(
        d.call(
            "sh-1",
            "POST",
            &format!("/api/review/cases/{case}/release"),
            None
        )
        .await
        .0,
        409
    );
    // The OpenAPI description names every reviewer endpoint the router serves.
    let (status, spec) = http(
        "GET",
        &format!("{}/api/review/openapi.json", d.base),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    let served = wangban_tests::served_routes("/api/review/");
    assert_eq!(served.len(), 9, "{served:?}");
    for p in served {
        assert!(
            paths.iter().any(|d| **d == p),
            "{p} is not in the OpenAPI description"
        );
    }
    // Without a token, or with an unknown one: 401.
    let url = format!("{}/api/review/tasks", d.base);
    assert_eq!(http("GET", &url, None, None).await.0, 401);
    assert_eq!(http("GET", &url, Some("not-a-reviewer"), None).await.0, 401);
    // A malformed decision is a 400 naming what is wrong.
    let holder = before_task.reviewer.clone().unwrap();
    let (status, body) = d
        .decide(
            &holder,
            &case,
            json!({"decision": "request_correction", "items": ["tattoo"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown correction item `tattoo`"),
        "{body}"
    );
    // Each decision carries its own fields (the OpenAPI `Decision` shapes), and a reason that
    // says something.
    for (decision, why) in [
        (
            json!({"decision": "approve", "reason": "x"}),
            "`reason` does not belong to approve",
        ),
        (
            json!({"decision": "reject", "reason": "  "}),
            "reject needs a `reason`",
        ),
        (
            json!({"decision": "reject", "reason": "x", "items": ["photo"]}),
            "`items` does not belong to reject",
        ),
    ] {
        let (status, body) = d.decide(&holder, &case, decision).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }

    d.settle().await;
    let after = d.task(&case).await;
    assert_eq!(after.reviewer, before_task.reviewer);
    assert_eq!(after.decided_at, None);
    assert_eq!(d.state(&case).await, "under_review");
    assert_eq!(
        decided(d.audit_kinds(&case).await),
        before_audit,
        "nothing was recorded"
    );

    // Personal data only to the holder of the open task, and every view of it on the record.
    let path = format!("/api/review/cases/{case}");
    let (status, held) = d.call(&holder, "GET", &path, None).await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["personal_data"], true);
    assert!(held["application"]["applicant"]["name"].is_string());
    let id_number = held["application"]["applicant"]["id_number"]
        .as_str()
        .unwrap();
    assert!(id_number.contains("********"), "masked: {id_number}");
    let colleague = ["bj-1", "bj-2", "bj-3"]
        .into_iter()
        .find(|r| *r != holder)
        .unwrap();
    let (status, seen) = d.call(colleague, "GET", &path, None).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["personal_data"], false);
    let applicant = &seen["application"]["applicant"];
    assert!(
        applicant.get("name").is_none() && applicant.get("id_number").is_none(),
        "{seen}"
    );
    assert!(
        seen["application"]["delivery"].get("address").is_none(),
        "{seen}"
    );
    let reveal = format!("{path}?reveal=id_number");
    assert_eq!(d.call(colleague, "GET", &reveal, None).await.0, 403);
    assert_eq!(
        d.call(&holder, "GET", &format!("{path}?reveal=anything"), None)
            .await
            .0,
        400
    );
    let (status, full) = d.call(&holder, "GET", &reveal, None).await;
    assert_eq!(status, 200);
    assert!(
        !full["application"]["applicant"]["id_number"]
            .as_str()
            .unwrap()
            .contains('*')
    );
    let kinds = d.audit_kinds(&case).await;
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(
        (count("personal_data_viewed"), count("id_number_revealed")),
        (1, 1),
        "{kinds:?}"
    );
    // Once decided, not even its reviewer sees it.
    assert_eq!(d.decide(&holder, &case, APPROVE()).await.0, 200);
    let (_, after) = d.call(&holder, "GET", &path, None).await;
    assert_eq!(after["personal_data"], false, "{after}");
    d.stop().await;
}

/// National Day 2026: 1–7 October are holidays, Saturday 10 October a make-up working day.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_review_clock_escalates_across_a_holiday_and_a_make_up_working_day() {
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    // The process's one clock: store, events and timers read it. Each case is submitted on its
    // day, and its task's review clock starts then.
    let clock = Clock::controlled(at("2026-09-28T10:00:00+08:00"));
    let shared = clock.clone();
    let mut d = Desk::start("desk_clock", move |s| {
        s.clock = shared;
        s.review_working_days = 2;
        // The clock moves days here: held tasks would go back to their queue (4 h) on the way.
        s.review_hold = Duration::from_secs(30 * 86_400);
    })
    .await;
    let monday = d.submit_for_review(0, 1).await.remove(0);
    clock.set(at("2026-09-30T10:00:00+08:00"));
    let wednesday = d.submit_for_review(1, 1).await.remove(0);
    clock.set(at("2026-10-07T12:00:00+08:00"));
    // On the last holiday: Monday's case has had 2 working days (29, 30 September), no more.
    d.settle().await;
    assert!(d.escalated().await.is_empty());
    clock.set(at("2026-10-08T10:00:00+08:00"));
    let after = d.submit_for_review(2, 1).await.remove(0);
    // Friday 9 October: Monday's case has had 4; Wednesday's 2 (8, 9 October).
    clock.set(at("2026-10-09T12:00:00+08:00"));
    eventually(
        Duration::from_secs(30),
        "Monday's case to escalate",
        || async { d.escalated().await == [monday.clone()] },
    )
    .await;
    // Saturday 10 October is a make-up working day: Wednesday's case has had 3.
    clock.set(at("2026-10-10T12:00:00+08:00"));
    eventually(
        Duration::from_secs(30),
        "Wednesday's case to escalate",
        || async { d.escalated().await == [monday.clone(), wednesday.clone()] },
    )
    .await;
    // Sunday 11 October is not: the case opened on the 8th has had 2 (9, 10 October).
    clock.set(at("2026-10-11T12:00:00+08:00"));
    d.settle().await;
    assert_eq!(d.escalated().await.len(), 2);
    clock.set(at("2026-10-12T12:00:00+08:00"));
    eventually(
        Duration::from_secs(30),
        "the third case to escalate",
        || async { d.escalated().await.len() == 3 },
    )
    .await;
    let cases = [monday, wednesday, after];

    // Escalated: in the supervisor's hands, on the record, counted as breaches.
    for c in &cases {
        let task = d.task(c).await;
        assert_eq!(task.reviewer.as_deref(), Some("bj-sup"));
        assert!(
            d.audit_kinds(c)
                .await
                .contains(&"review_escalated".to_string())
        );
    }
    let (status, sla) = http(
        "GET",
        &format!("{}/api/ops/sla", d.base),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let sla: Value = serde_json::from_str(&sla).unwrap();
    assert_eq!(
        sla["review_escalated"].as_array().unwrap().len(),
        3,
        "{sla}"
    );
    let (_, metrics) = http("GET", &format!("{}/metrics/store", d.base), None, None).await;
    assert!(
        metrics.contains("\nwangban_review_escalations_total 3\n"),
        "{metrics}"
    );
    // The office's reviewers no longer decide it; the supervisor does.
    let monday = cases[0].as_str();
    let first = d.task(monday).await;
    let (status, _) = d.decide("bj-1", monday, APPROVE()).await;
    assert_eq!(status, 403);
    assert_eq!(first.queue, "supervisor");
    assert_eq!(d.decide("bj-sup", monday, APPROVE()).await.0, 200);
    d.wait_state(&[monday], "delivered").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_tasks_return_to_the_queue_and_an_unanswered_correction_lapses() {
    let mut d = Desk::start("desk_hold", |s| {
        s.review_hold = Duration::from_secs(2);
        s.resubmit_within = Duration::from_secs(3);
    })
    .await;
    for r in ["bj-2", "bj-3"] {
        d.set_available(r, false).await;
    }
    let (case, _) = d.submit(0, BEIJING).await;
    d.wait_state(&[&case], "under_review").await;
    assert_eq!(
        d.held("bj-1").await,
        std::slice::from_ref(&case),
        "the only available reviewer has it"
    );
    // Held too long without a decision: back in the queue, where bj-2 claims it.
    eventually(
        Duration::from_secs(30),
        "the task to return to the queue",
        || async { d.task(&case).await.reviewer.is_none() },
    )
    .await;
    let (status, claimed) = d
        .call("bj-2", "POST", "/api/review/tasks/claim", None)
        .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["case_id"], case.as_str());
    assert_eq!(
        d.call("bj-3", "POST", "/api/review/tasks/claim", None)
            .await
            .0,
        204
    );
    assert_eq!(
        d.decide("bj-1", &case, APPROVE()).await.0,
        409,
        "bj-1 no longer holds it"
    );
    // bj-2 lets it go; bj-3 takes it and asks for a correction that never comes.
    let (status, _) = d
        .call(
            "bj-2",
            "POST",
            &format!("/api/review/cases/{case}/release"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        d.call("bj-3", "POST", "/api/review/tasks/claim", None)
            .await
            .1["case_id"],
        case.as_str()
    );
    let ask = json!({"decision": "request_correction", "items": ["id_card_back"], "message": ""});
    assert_eq!(d.decide("bj-3", &case, ask).await.0, 200);
    d.wait_state(&[&case], "correction_lapsed").await;
    // The lapse SMS follows the state change: wait for notify to have handled it.
    wangban_tests::wait_effects(&d.client.runtime.store, "sms:correction_lapsed", 1).await;
    // A decision after the case closed is refused.
    let (status, body) = d.decide("bj-3", &case, APPROVE()).await;
    assert_eq!(status, 409, "{body}");
    // A resubmission that intake accepted just before the lapse reaches review after it: review
    // refuses the step and records it (`transition_refused`, step `resubmit`). Written here as
    // review writes it — the race is too narrow to arrange — it is on the timeline, but the
    // desk's corrections list shows only what happened: the one request, no "resubmitted" line.
    let id: wangban_domain::ids::CaseId = case.parse().unwrap();
    let store = &d.client.runtime.store;
    let mut tx = store.begin().await.unwrap();
    tx.load_case(&id).await.unwrap().expect("the case");
    let refused = json!({"from": "correction_lapsed", "step": "resubmit", "by": "review",
                         "cause": "case.resubmitted", "reason": "too late"});
    tx.append_audit(&id, "transition_refused", None, &refused)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (status, view) = d
        .call("bj-3", "GET", &format!("/api/review/cases/{case}"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    let steps: Vec<&Value> = view["corrections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["step"])
        .collect();
    assert_eq!(steps, [&json!("request_correction")], "{view}");
    d.stop().await;
}

/// The reviewer console in headless Chromium (Debian's `chromium`, driven by playwright-core from
/// `tests/browser`). The screenshot lands in `target/screenshots/` (and in `docs/` with
/// `WANGBAN_UPDATE_SCREENSHOTS=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reviewer_decides_in_the_console_in_chromium() {
    // The uploads in a real S3 server (Garage), as real JPEGs.
    let store: Arc<dyn MaterialStore> = Arc::new(S3::new(&wangban_tests::s3_config()).unwrap());
    let uploads = demo::Uploads::put(store.as_ref(), uuid::Uuid::new_v4().as_u128() as u64)
        .await
        .unwrap();
    let materials = MaterialsStore(store.clone());
    let mut d = Desk::start("desk_console", |s| s.materials = Some(materials)).await;
    for r in ["bj-2", "bj-3"] {
        d.set_available(r, false).await;
    }
    let mut apps = Vec::new();
    for n in 0..4 {
        // The first carries a member of `materials` the contract does not name, as null (the
        // portal may send it; intake ignores it): the console shows it and works on.
        let (case, app) = d
            .submit_with(n, BEIJING, |app| {
                uploads.declare(app, Scenario::PassportCourier);
                if n == 0 {
                    app["materials"]["extra_scan"] = Value::Null;
                }
            })
            .await;
        d.wait_state(&[&case], "under_review").await; // in this order in bj-1's queue
        apps.push((case, app));
    }
    // The fourth comes back with a new photo and another phone number: round 2, last in the queue.
    let ask = json!({"decision": "request_correction", "items": ["photo", "phone"], "message": ""});
    assert_eq!(d.decide("bj-1", &apps[3].0, ask).await.0, 200);
    d.wait_state(&[&apps[3].0], "correction_requested").await;
    let new_photo = wangban::images::portrait_sized(354, 472, 20 * 1024, 80 * 1024, 99);
    let new_sha = store.put(&new_photo).await.unwrap();
    let mut corrected = apps[3].1.clone();
    corrected["materials"]["photo"] = json!({"sha256": new_sha, "content_type": "image/jpeg",
        "bytes": new_photo.len(), "width_px": 354, "height_px": 472});
    corrected["applicant"]["phone"] = json!("13912345678");
    corrected["submitted_at"] = json!(
        chrono::Utc::now()
            .with_timezone(&wangban_domain::application::beijing())
            .to_rfc3339()
    );
    d.client.submit(&corrected, true).await.unwrap();
    d.wait_state(&[&apps[3].0], "under_review").await;

    let shots = wangban_tests::screenshot_dir();
    let seen = wangban_tests::browser_run(
        "review.mjs",
        &[
            &d.base,
            &token("bj-1"),
            &token("bj-sup"),
            shots.to_str().unwrap(),
        ],
    );
    assert_eq!(seen["signin_visible"], true);
    assert!(
        seen["wrong_token_refused"]
            .as_str()
            .unwrap()
            .contains("unknown reviewer token")
    );
    assert!(seen["who"].as_str().unwrap().contains("beijing"), "{seen}");
    assert_eq!(seen["task_rows"], 4);
    let cases: Vec<&str> = seen["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = apps.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cases, expected, "oldest first");
    // The four images, from the store through the reviewer API; the photo in the guide's frame.
    let pictures = seen["pictures"].as_array().expect("pictures seen");
    let sizes: Vec<(&str, u64, u64, bool)> = pictures
        .iter()
        .map(|p| {
            assert_eq!(p["loaded"], "yes", "{p}");
            let size = |k: &str| p[k].as_u64().unwrap();
            let material = p["material"].as_str().unwrap();
            (material, size("width"), size("height"), p["marks"] == true)
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("photo", 360, 480, true),
            ("signature", 600, 300, false),
            ("id_card_front", 1200, 760, false),
            ("id_card_back", 1200, 760, false)
        ]
    );
    assert!(seen["zoomed"]["width"].as_f64().unwrap() > 400.0, "{seen}");
    assert_eq!(seen["zoomed"]["marks"], true);
    assert_eq!(seen["zoom_closed"], true);
    assert_eq!(seen["photo_item_checked"], true, "asked from the photo");
    // Every view is on the case's record: who, which material, which submission.
    let viewed: HashSet<String> = d
        .client
        .runtime
        .store
        .case_view(&apps[0].0)
        .await
        .unwrap()
        .unwrap()
        .audit
        .iter()
        .filter(|r| r.kind == "material_viewed")
        .map(|r| {
            let detail: Value = serde_json::from_str(&r.detail).unwrap();
            assert_eq!(detail["reviewer"], "bj-1");
            assert_eq!(detail["submission"], 1);
            detail["material"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(viewed.len(), 4, "{viewed:?}");
    // The resubmitted case: what changed, the new photo beside the one it replaced.
    let changes = seen["changes"].as_str().unwrap();
    assert!(
        changes.contains("round 2") && changes.contains("photo") && changes.contains("phone"),
        "{changes}"
    );
    assert!(!changes.contains("signature"), "{changes}");
    // The corrections asked and answered: each line says what, none ends at its colon.
    assert_eq!(
        seen["corrections"],
        json!([
            "asked for: photo, phone",
            "resubmitted: changed photo, phone"
        ])
    );
    assert_eq!(seen["changed_badges"], json!(["photo"]));
    let again: Vec<(&str, u64, bool)> = seen["resubmitted_pictures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let material = p["material"].as_str().unwrap();
            (material, p["width"].as_u64().unwrap(), p["before"] == true)
        })
        .collect();
    assert_eq!(
        again,
        [
            ("photo", 354, false),
            ("photo", 360, true),
            ("signature", 600, false),
            ("id_card_front", 1200, false),
            ("id_card_back", 1200, false)
        ]
    );
    let id_number = apps[0].1["applicant"]["id_number"].as_str().unwrap();
    assert_eq!(seen["id_shown"], wangban_domain::id_number::mask(id_number));
    assert!(
        !seen["page_text"].as_str().unwrap().contains(id_number),
        "the ID number in the clear"
    );
    assert!(
        seen["correction"]
            .as_str()
            .unwrap()
            .contains("request_correction"),
        "{seen}"
    );
    assert!(
        seen["approval"].as_str().unwrap().contains("approve"),
        "{seen}"
    );
    assert_eq!(seen["supervisor_status"], 200);
    assert!(
        seen["late_click"].as_str().unwrap().starts_with("409"),
        "{seen}"
    );

    d.wait_state(&[&apps[0].0], "correction_requested").await;
    d.wait_state(&[&apps[1].0], "delivered").await;
    d.wait_state(&[&apps[2].0], "review_rejected").await;
    assert_eq!(d.task(&apps[0].0).await.decided_by.as_deref(), Some("bj-1"));
    assert_eq!(
        d.task(&apps[2].0).await.decided_by.as_deref(),
        Some("bj-sup")
    );
    let png = std::fs::read(shots.join("review-console.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "not a real screenshot"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_reviewers_file_is_reloaded_and_a_broken_one_refused() {
    let dir = std::env::temp_dir().join(format!("wangban-desk-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reviewers.json");
    std::fs::write(&file, desk_text(&["bj-1", "bj-2", "bj-3"])).unwrap();
    let path = file.clone();
    let mut d = Desk::start("desk_reload", move |s| {
        s.desk = Some(wangban::settings::load_desk(&path).unwrap());
        s.reviewers_file = Some(path);
    })
    .await;
    let (case, _) = d.submit(0, BEIJING).await;
    d.wait_state(&[&case], "under_review").await;
    assert_eq!(d.task(&case).await.reviewer.as_deref(), Some("bj-1"));
    let me = |r: &'static str| {
        let d = &d;
        async move { d.call(r, "GET", "/api/review/me", None).await.0 }
    };
    assert_eq!(me("bj-4").await, 401);

    // bj-4 joins, bj-1 leaves: the desk follows within a tick; bj-1's task goes back to the queue.
    std::fs::write(&file, desk_text(&["bj-2", "bj-3", "bj-4"])).unwrap();
    eventually(
        Duration::from_secs(30),
        "the changed file to be loaded",
        || async { me("bj-4").await == 200 && me("bj-1").await == 401 },
    )
    .await;
    assert_eq!(d.task(&case).await.reviewer, None);
    let (status, claimed) = d
        .call("bj-4", "POST", "/api/review/tasks/claim", None)
        .await;
    assert_eq!(
        (status, claimed["case_id"].as_str()),
        (200, Some(case.as_str()))
    );

    // A broken edit is refused: the desk keeps what it had.
    std::fs::write(&file, "{\"offices\": [").unwrap();
    d.settle().await;
    assert_eq!(me("bj-4").await, 200);
    assert_eq!(me("bj-1").await, 401);
    // Mended, it is loaded again.
    std::fs::write(&file, desk_text(&["bj-1", "bj-4"])).unwrap();
    eventually(
        Duration::from_secs(30),
        "the mended file to be loaded",
        || async { me("bj-1").await == 200 && me("bj-2").await == 401 },
    )
    .await;
    d.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The reviewer API serves a case's uploads (from a local-directory store) to the reviewer
/// holding its task only, each view recorded and never cached; a stored file that does not hash
/// to its name is never served — neither by the API nor to intake — and operators see it listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_case_s_files_are_served_to_its_holder_only_and_a_corrupt_one_never() {
    let dir = std::env::temp_dir().join(format!("wangban-files-{}", uuid::Uuid::new_v4().simple()));
    let store: Arc<dyn MaterialStore> = Arc::new(LocalDir::new(&dir));
    let uploads = demo::Uploads::put(store.as_ref(), 5).await.unwrap();
    let materials = MaterialsStore(store.clone());
    let mut d = Desk::start("desk_files", |s| s.materials = Some(materials)).await;
    for r in ["bj-2", "bj-3"] {
        d.set_available(r, false).await;
    }
    let declare = |app: &mut Value| uploads.declare(app, Scenario::PassportCourier);
    let (case, app) = d.submit_with(0, BEIJING, declare).await;
    d.wait_state(&[&case], "under_review").await;
    let sha = |m: &str| app["materials"][m]["sha256"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let get = |reviewer: &str, name: &str| {
        let req = client
            .get(format!(
                "{}/api/review/cases/{case}/materials/{name}",
                d.base
            ))
            .bearer_auth(token(reviewer));
        async move {
            let r = req.send().await.unwrap();
            let header = |h: &str| {
                r.headers()
                    .get(h)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let (ty, cache) = (header("content-type"), header("cache-control"));
            (r.status().as_u16(), ty, cache, r.bytes().await.unwrap())
        }
    };
    let (status, ty, cache, bytes) = get("bj-1", &sha("photo")).await;
    assert_eq!(
        (status, ty.as_str(), cache.as_str()),
        (200, "image/jpeg", "no-store")
    );
    assert_eq!(wangban_domain::materials::sha256_hex(&bytes), sha("photo"));
    // Not the holder (same office): 403; another office: 404, as if there were no such case.
    assert_eq!(get("bj-2", &sha("photo")).await.0, 403);
    assert_eq!(get("sh-1", &sha("photo")).await.0, 404);
    // A file in the store that this case does not name, and a name that is no name: 404.
    let other = uploads.corrected_signature["sha256"].as_str().unwrap();
    assert_eq!(get("bj-1", other).await.0, 404);
    assert_eq!(get("bj-1", "..%2F..%2Fetc%2Fpasswd").await.0, 404);
    let viewed = |d: &Desk| {
        let store = d.client.runtime.store.clone();
        let case = case.clone();
        async move {
            let view = store.case_view(&case).await.unwrap().unwrap();
            view.audit
                .iter()
                .filter(|r| r.kind == "material_viewed")
                .count()
        }
    };
    assert_eq!(viewed(&d).await, 1, "one served view, one record");

    // The ID card's back side is corrupted in the store: never served, listed for operators.
    let back = sha("id_card_back");
    std::fs::write(dir.join(&back), b"not the uploaded file").unwrap();
    let (status, _, _, body) = get("bj-1", &back).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("does not hash"));
    assert_eq!(viewed(&d).await, 1, "nothing shown, nothing recorded");
    let problems = |d: &Desk| {
        let base = d.base.clone();
        async move {
            let (status, body) = http(
                "GET",
                &format!("{base}/api/ops/materials"),
                Some(OPERATOR),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()["integrity_errors"].clone()
        }
    };
    let listed = problems(&d).await;
    assert_eq!(listed[0]["sha256"], back.as_str(), "{listed}");
    assert_eq!(listed[0]["case_id"], case.as_str());
    assert_eq!(listed[0]["seen_by"], "review");

    // Intake reads the same corrupt file for another application: counted missing (rejected as
    // incomplete), and listed again.
    let (second, _) = d.submit_with(1, BEIJING, declare).await;
    d.wait_state(&[&second], "rejected").await;
    let listed = problems(&d).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["case_id"], second.as_str());
    assert_eq!(listed[0]["seen_by"], "intake");
    assert_eq!(listed[0]["times"], 2);
    d.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
