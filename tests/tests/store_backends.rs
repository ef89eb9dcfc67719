//! One conformance suite over both store backends — SQLite (the embedded default) and PostgreSQL
//! (production): uniqueness rules, inbox, effects, the audit chain, and the operator commands
//! `wangban audit verify` (naming the first broken record) and `wangban case show` (masked).

use serde_json::json;
use std::process::Command;
use wangban::demo::{Rng, Scenario, application};
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_store::{NewCase, Store, StoreError};
use wangban_tests::{RealServices, wangban_binary};

fn new_case(app_id: &str, fingerprint: &str, application: &serde_json::Value) -> NewCase {
    NewCase {
        case_id: CaseId::for_application(&ApplicationId::parse(app_id).unwrap()),
        application_id: app_id.into(),
        id_fingerprint: Some(fingerprint.into()),
        document_kind: Some("passport".into()),
        delivery_method: "courier".into(),
        application: application.to_string(),
    }
}

async fn tamper(url: &str, sql: &'static str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("connect to tamper");
    let done = sqlx::query(sql).execute(&mut conn).await.expect("tamper");
    assert_eq!(
        done.rows_affected(),
        1,
        "the tampering statement changed one row"
    );
}

async fn conformance(url: &str) {
    let store = Store::connect(url, "test-key")
        .await
        .expect("store connects and migrates");
    // Migrating again is a no-op.
    let store2 = Store::connect(url, "test-key")
        .await
        .expect("second connect");
    store2.close().await;

    let app = application("CONF", 1, Scenario::PassportCourier, &mut Rng::new(9));
    let fp =
        wangban_domain::id_number::IdNumber::parse(app["applicant"]["id_number"].as_str().unwrap())
            .unwrap()
            .fingerprint("test-key");
    let a = new_case("CONF-A", &fp, &app);
    let mut tx = store.begin().await.unwrap();
    tx.insert_case(&a, true, "evt_a").await.unwrap();
    tx.commit().await.unwrap();

    // A second open case of the same person and kind is refused by the store itself.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_case(&new_case("CONF-B", &fp, &app), true, "evt_b")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    drop(tx);
    // … but a case intake rejects (never open) may share it.
    let mut tx = store.begin().await.unwrap();
    tx.insert_case(&new_case("CONF-B", &fp, &app), false, "evt_b")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The same application_id twice is refused.
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.insert_case(&new_case("CONF-A", "fp2", &app), true, "evt_c")
            .await,
        Err(StoreError::Conflict(_))
    ));
    drop(tx);

    // Cases read by id in one statement: a missing one is left out, a repeated one read once
    // (three ids: the statement takes four, the last repeated).
    let (id_a, id_b) = (
        a.case_id.as_str(),
        CaseId::for_application(&ApplicationId::parse("CONF-B").unwrap()),
    );
    let read = store
        .case_records(&[id_a, "case_missing", id_b.as_str(), id_a])
        .await
        .unwrap();
    let mut ids: Vec<&str> = read.keys().map(String::as_str).collect();
    ids.sort();
    let mut want = vec![id_a, id_b.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(read[id_a].application_id, "CONF-A");
    let read = store
        .case_records(&[id_b.as_str(), "x", "y"])
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert!(store.case_records(&[]).await.unwrap().is_empty());

    // Inbox: one handling per (consumer, event).
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.inbox_contains("w", "evt_1").await.unwrap());
    assert!(tx.inbox_claim("w", "evt_1").await.unwrap(), "first claim");
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.inbox_contains("w", "evt_1").await.unwrap());
    assert!(!tx.inbox_claim("w", "evt_1").await.unwrap(), "second claim");
    assert!(
        tx.inbox_claim("w2", "evt_1").await.unwrap(),
        "another consumer"
    );
    drop(tx);
    // A claim rolled back is no claim.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.inbox_claim("w", "evt_2").await.unwrap());
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.inbox_claim("w", "evt_2").await.unwrap());
    drop(tx);

    // Effects: once per (case, purpose).
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.record_effect(&a.case_id, "sms:fee_due", &json!({"n": 1}))
            .await
            .unwrap()
    );
    assert!(
        !tx.record_effect(&a.case_id, "sms:fee_due", &json!({"n": 2}))
            .await
            .unwrap()
    );
    tx.append_audit(&a.case_id, "note", Some("evt_x"), &json!({"k": "v"}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.effect_counts("sms:fee_due").await.unwrap(), 1);

    // Savepoints (one per delivery of a batch): what a failed delivery wrote is undone — its
    // inbox claim, effects and audit records — while the rest of the transaction commits, and the
    // chain goes on from the record before it.
    let b_case = new_case("CONF-B", &fp, &app).case_id;
    let mut tx = store.begin().await.unwrap();
    tx.savepoint().await.unwrap();
    assert!(tx.inbox_claim("w", "evt_kept").await.unwrap());
    tx.append_audit(&b_case, "batched", Some("evt_kept"), &json!({"kept": 1}))
        .await
        .unwrap();
    tx.release_savepoint().await.unwrap();
    tx.savepoint().await.unwrap();
    assert!(tx.inbox_claim("w", "evt_undone").await.unwrap());
    tx.record_effect(&b_case, "sms:undone", &json!({}))
        .await
        .unwrap();
    tx.append_audit(
        &b_case,
        "batched",
        Some("evt_undone"),
        &json!({"undone": 1}),
    )
    .await
    .unwrap();
    // A failing statement inside the savepoint (a second case for the same application) …
    assert!(
        tx.insert_case(&new_case("CONF-A", "fp3", &app), true, "evt_undone")
            .await
            .is_err()
    );
    // … is undone with the rest, and the transaction goes on.
    tx.rollback_to_savepoint().await.unwrap();
    tx.savepoint().await.unwrap();
    tx.append_audit(&b_case, "batched", Some("evt_after"), &json!({"after": 1}))
        .await
        .unwrap();
    tx.release_savepoint().await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.inbox_contains("w", "evt_kept").await.unwrap());
    assert!(!tx.inbox_contains("w", "evt_undone").await.unwrap());
    drop(tx);
    assert_eq!(store.effect_counts("sms:undone").await.unwrap(), 0);
    let notes: Vec<String> = store
        .audit_of(b_case.as_str())
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "batched")
        .map(|r| r.event_id.unwrap_or_default())
        .collect();
    assert_eq!(notes, ["evt_kept", "evt_after"]);
    assert!(store.verify_audit().await.unwrap().problems.is_empty());

    // The chain verifies, through the library and the command.
    assert!(store.verify_audit().await.unwrap().problems.is_empty());
    let verify = || {
        Command::new(wangban_binary())
            .args(["audit", "verify", "--database-url", url])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("every chain intact"));

    // `case show` masks the ID number and prints no other personal data.
    let show = Command::new(wangban_binary())
        .args(["case", "show", "CONF-A", "--database-url", url])
        .output()
        .unwrap();
    assert!(show.status.success());
    let text = String::from_utf8(show.stdout).unwrap();
    let id_number = app["applicant"]["id_number"].as_str().unwrap();
    assert!(
        text.contains(&wangban_domain::id_number::mask(id_number)),
        "{text}"
    );
    for pii in [
        id_number,
        app["applicant"]["phone"].as_str().unwrap(),
        "测试申请人",
        "建国路",
    ] {
        assert!(!text.contains(pii), "case show leaks {pii}: {text}");
    }
    // … and finds a person's cases by ID number read from stdin (kept out of shell history).
    let mut by_number = Command::new(wangban_binary())
        .args(["case", "show", "-", "--database-url", url])
        .env("WANGBAN_FINGERPRINT_KEY", "test-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(by_number.stdin.take().unwrap(), "{id_number}").unwrap();
    let out = by_number.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("CONF-A") && text.contains("CONF-B") && !text.contains(id_number),
        "{text}"
    );

    store.close().await;
}

/// The review desk's tables behave alike on both backends: fair assignment, the preferred
/// reviewer, claims, releases, one decision per round, escalation and reloading the file.
async fn desk_conformance(url: &str) {
    use wangban_store::{Office, Reviewer};
    let store = Store::connect(url, "test-key").await.unwrap();
    let reviewer = |id: &str, offices: &[&str], supervises: &[&str]| Reviewer {
        id: id.into(),
        name: id.into(),
        token_sha256: format!("{:0>64}", id.len()) + id,
        offices: offices.iter().map(|s| s.to_string()).collect(),
        supervises: supervises.iter().map(|s| s.to_string()).collect(),
    };
    let offices = [Office {
        id: "bj".into(),
        name: "北京".into(),
        districts: vec!["1101".into()],
    }];
    let all = [
        reviewer("r1", &["bj"], &[]),
        reviewer("r2", &["bj"], &[]),
        reviewer("sup", &[], &["bj"]),
    ];
    store.load_desk(&offices, &all).await.unwrap();
    let open = |case: &'static str, round: i64, preferred: Option<&'static str>| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let t = tx.open_task(case, round, "bj", preferred).await.unwrap();
            tx.commit().await.unwrap();
            t
        }
    };
    let owners: Vec<_> = [
        open("c1", 1, None).await,
        open("c2", 1, None).await,
        open("c3", 1, None).await,
        open("c1", 1, None).await, // again: the same task
    ]
    .into_iter()
    .map(|t| t.reviewer.unwrap())
    .collect();
    assert_eq!(owners, ["r1", "r2", "r1", "r1"]);
    // r1 holds two, r2 one: the preferred reviewer still gets it.
    assert_eq!(
        open("c4", 2, Some("r1")).await.reviewer.as_deref(),
        Some("r1")
    );
    store.set_available("r1", false).await.unwrap();
    assert_eq!(
        open("c5", 2, Some("r1")).await.reviewer.as_deref(),
        Some("r2")
    );
    store.set_available("r2", false).await.unwrap();
    assert_eq!(
        open("c6", 1, None).await.reviewer,
        None,
        "nobody available: it waits"
    );

    let member = |token: String| {
        let store = store.clone();
        async move { store.desk_member(&token).await.unwrap().unwrap() }
    };
    let r2 = member(all[1].token_sha256.clone()).await;
    assert_eq!(
        (r2.offices.clone(), r2.available),
        (vec!["bj".to_string()], false)
    );
    assert_eq!(store.claim_next(&r2).await.unwrap().unwrap().case_id, "c6");
    assert!(store.claim_next(&r2).await.unwrap().is_none());
    assert!(store.release_task("r2", "c6").await.unwrap());
    assert!(
        !store.release_task("r2", "c6").await.unwrap(),
        "not held any more"
    );

    let mut tx = store.begin().await.unwrap();
    assert!(tx.decide_task("c2", 1, "r2", "approve").await.unwrap());
    assert!(!tx.decide_task("c2", 1, "sup", "reject").await.unwrap());
    let escalated = tx.escalate_task("c3", 1).await.unwrap().unwrap();
    assert_eq!(
        (escalated.queue.as_str(), escalated.reviewer.as_deref()),
        ("supervisor", Some("sup"))
    );
    assert!(tx.escalate_task("c3", 1).await.unwrap().is_none(), "once");
    tx.commit().await.unwrap();
    assert_eq!(store.escalated_tasks().await.unwrap().len(), 1);

    // r1 leaves the file: cannot sign in, their open tasks wait in the queue again.
    store.load_desk(&offices, &all[1..]).await.unwrap();
    assert!(
        store
            .desk_member(&all[0].token_sha256)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.tasks_held_by("r1").await.unwrap().is_empty());
    let waiting: Vec<_> = store
        .desk_queues()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, q, _, _)| q == "office")
        .collect();
    assert_eq!(waiting, [("bj".to_string(), "office".to_string(), 4, 3)]);
    store.close().await;
}

/// Tampering with history is detected and the first broken record named.
async fn tamper_and_verify(url: &str) {
    tamper(
        url,
        "UPDATE audit SET detail = '{\"k\":\"forged\"}' WHERE kind = 'note'",
    )
    .await;
    let out = Command::new(wangban_binary())
        .args(["audit", "verify", "--database-url", url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let case = CaseId::for_application(&ApplicationId::parse("CONF-A").unwrap());
    assert!(
        text.contains(&format!("case {case} record 2: hash does not match")),
        "{text}"
    );
    // Deleting the tail is detected too.
    tamper(url, "DELETE FROM audit WHERE kind = 'note'").await;
    let out = Command::new(wangban_binary())
        .args(["audit", "verify", "--database-url", url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("records deleted"));
}

/// The hall desk's tables behave alike on both backends: halls by the longest district prefix,
/// staff by token (removed staff lose it), a document sent once, arrived once, collected once and
/// only after it arrived.
async fn hall_conformance(url: &str) {
    use wangban_store::{Hall, HallStaff, hall_for};
    let store = Store::connect(url, "test-key").await.unwrap();
    let hall = |id: &str, district: &str| Hall {
        id: id.into(),
        name: format!("{id} hall"),
        districts: vec![district.into()],
    };
    let staff = |id: &str, halls: &[&str]| HallStaff {
        id: id.into(),
        name: id.into(),
        token_sha256: format!("{:0>64}", id.len()),
        halls: halls.iter().map(|h| h.to_string()).collect(),
    };
    store
        .load_halls(
            &[hall("city", "1101"), hall("chaoyang", "110105")],
            &[
                staff("w1", &["chaoyang"]),
                staff("w22", &["city", "chaoyang"]),
            ],
        )
        .await
        .unwrap();
    let halls = store.halls().await.unwrap();
    assert_eq!(hall_for(&halls, "110105").unwrap().id, "chaoyang");
    assert_eq!(hall_for(&halls, "110101").unwrap().id, "city");
    assert!(hall_for(&halls, "310115").is_none());
    let w22 = store
        .hall_member(&format!("{:0>64}", 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w22.id.as_str(), w22.halls.len()), ("w22", 2));

    let app = application("HALL", 1, Scenario::PermitPickup, &mut Rng::new(4));
    let case = new_case("HALL-A", "fp-hall", &app);
    let mut tx = store.begin().await.unwrap();
    tx.insert_case(&case, true, "evt_hall").await.unwrap();
    tx.commit().await.unwrap();
    let id = case.case_id.as_str();
    assert!(store.send_to_hall(id, "chaoyang").await.unwrap());
    assert!(!store.send_to_hall(id, "city").await.unwrap(), "sent once");
    let docs = store.hall_documents("chaoyang").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        (docs[0].state.as_str(), docs[0].arrived_at),
        ("submitted", None)
    );
    assert!(store.hall_documents("city").await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    assert!(
        !tx.mark_collected(id, "w1").await.unwrap(),
        "not before it arrived"
    );
    assert!(tx.mark_arrived(id, "w1").await.unwrap());
    assert!(!tx.mark_arrived(id, "w1").await.unwrap(), "arrived once");
    let doc = tx.hall_document(id).await.unwrap().unwrap();
    assert_eq!(doc.arrived_by.as_deref(), Some("w1"));
    assert_eq!(doc.application, case.application);
    assert!(tx.mark_collected(id, "w22").await.unwrap());
    assert!(
        !tx.mark_collected(id, "w22").await.unwrap(),
        "collected once"
    );
    tx.commit().await.unwrap();
    assert!(store.hall_documents("chaoyang").await.unwrap().is_empty());
    // Reloading without w1 takes their token away.
    store
        .load_halls(&[hall("city", "1101")], &[staff("w22", &["city"])])
        .await
        .unwrap();
    assert!(
        store
            .hall_member(&format!("{:0>64}", 2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.halls().await.unwrap().len(), 1);
    store.close().await;
}

/// Deadlines: scheduled only with a committed transaction, once per event id, fired when the
/// clock passes their time — by exactly one of two processes firing at once (PostgreSQL; the
/// embedded SQLite store serves one process).
async fn scheduled_conformance(url: &str) {
    use std::time::Duration;
    use wangban_domain::events::{Envelope, EventType};
    use wangban_domain::ids::EventId;
    let clock = wangban_domain::clock::Clock::controlled_now();
    let a = Store::connect(url, "k")
        .await
        .unwrap()
        .with_clock(clock.clone());
    let b = Store::connect(url, "k")
        .await
        .unwrap()
        .with_clock(clock.clone());
    let case = CaseId::for_application(&ApplicationId::parse("SCHED-1").unwrap());
    let event = |name: &str| {
        Envelope::new(
            EventId::derived(&[case.as_str(), "payment", name]),
            EventType::PaymentDeadline,
            "/test",
            clock.now(),
            case.clone(),
            None,
            json!({"deadline": name}),
        )
    };
    let (hour, now) = (3_600_000, clock.now_ms());
    let mut tx = a.begin().await.unwrap();
    tx.schedule(&event("rolled_back"), now, "awaiting_payment", "notify")
        .await
        .unwrap();
    drop(tx); // rolled back: nothing scheduled
    let mut tx = a.begin().await.unwrap();
    tx.schedule(&event("expiry"), now + hour, "awaiting_payment", "notify")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Scheduled again (a redelivered decision, a worker catching up): the first stays.
    a.schedule(
        &event("expiry"),
        now + 5 * hour,
        "awaiting_payment",
        "notify",
    )
    .await
    .unwrap();
    a.schedule(
        &event("reminder"),
        now + 2 * hour,
        "awaiting_payment",
        "notify",
    )
    .await
    .unwrap();
    let waiting = a.scheduled_for(case.as_str()).await.unwrap();
    let due: Vec<i64> = waiting.iter().map(|s| s.due_at - now).collect();
    assert_eq!(due, [hour, 2 * hour], "{waiting:?}");
    assert_eq!(waiting[0].routing_key, "payment.deadline");

    let backlog = a.outbox_backlog().await.unwrap();
    assert_eq!(a.fire_due(10).await.unwrap(), 0, "nothing is due yet");
    clock.advance(Duration::from_secs(3600));
    let fired = if a.backend() == wangban_store::Backend::Postgres {
        let (x, y) = tokio::join!(a.fire_due(10), b.fire_due(10));
        x.unwrap() + y.unwrap()
    } else {
        a.fire_due(10).await.unwrap() + b.fire_due(10).await.unwrap()
    };
    assert_eq!(fired, 1, "fired once, by one of the two");
    assert_eq!(a.outbox_backlog().await.unwrap(), backlog + 1);
    let waiting = a.scheduled_for(case.as_str()).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].event_id, event("reminder").id.as_str());
    clock.advance(Duration::from_secs(3600));
    assert_eq!(b.fire_due(10).await.unwrap(), 1);
    assert!(a.scheduled_for(case.as_str()).await.unwrap().is_empty());
    assert_eq!(a.outbox_backlog().await.unwrap(), backlog + 2);
    // Each relay takes only its producers' rows: the fired deadlines are notify's, a report the
    // HTTP surface took is http's.
    let mut tx = a.begin().await.unwrap();
    let mut report = event("report");
    report.event_type = EventType::PaymentReported.type_name();
    tx.enqueue(&report, wangban_store::HTTP_PRODUCER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let keys = |producers: Option<&'static [&'static str]>| {
        let a = &a;
        async move {
            let batch = a.begin_relay(1000, producers).await.unwrap();
            let mut keys: Vec<String> = batch.messages().map(|(k, _)| k.to_owned()).collect();
            keys.sort();
            keys
        }
    };
    assert_eq!(
        keys(Some(&["notify"])).await,
        ["payment.deadline", "payment.deadline"]
    );
    assert_eq!(keys(Some(&["http"])).await, ["payment.reported"]);
    assert!(keys(Some(&["intake", "review"])).await.is_empty());
    assert_eq!(keys(None).await.len(), 3 + backlog as usize);
    // A deadline of a state the case has left is cancelled with the transition.
    a.schedule(
        &event("lapse"),
        now + 9 * hour,
        "correction_requested",
        "review",
    )
    .await
    .unwrap();
    a.schedule(
        &event("other"),
        now + 9 * hour,
        "awaiting_payment",
        "notify",
    )
    .await
    .unwrap();
    let mut tx = a.begin().await.unwrap();
    tx.cancel_scheduled(case.as_str(), "correction_requested")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let left: Vec<String> = a
        .scheduled_for(case.as_str())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.event_id)
        .collect();
    assert_eq!(left, [event("other").id.as_str().to_owned()]);

    // Callback nonces are forgotten on the clock, not before their time.
    assert!(a.claim_nonce("sms", "n-1").await.unwrap());
    assert!(!a.claim_nonce("sms", "n-1").await.unwrap(), "a replay");
    assert_eq!(a.sweep_nonces(Duration::from_secs(600)).await.unwrap(), 0);
    clock.advance(Duration::from_secs(601));
    assert_eq!(a.sweep_nonces(Duration::from_secs(600)).await.unwrap(), 1);
    a.close().await;
    b.close().await;
}

/// Retention: a closed case's personal fields are erased once its keeping time has passed — not
/// before, not an open case's — the audit chain still verifies and records the erasure, and old
/// dead letters lose their payloads.
async fn retention_conformance(url: &str) {
    use std::time::Duration;
    let clock = wangban_domain::clock::Clock::controlled_now();
    let store = Store::connect(url, "k")
        .await
        .unwrap()
        .with_clock(clock.clone());
    let mut rng = Rng::new(21);
    let mut ids = Vec::new();
    for (n, closed) in [(1, true), (2, false)] {
        let app = application("RETAIN", n, Scenario::PassportCourier, &mut rng);
        let c = new_case(
            app["application_id"].as_str().unwrap(),
            &format!("fp-retain-{n}"),
            &app,
        );
        let mut tx = store.begin().await.unwrap();
        tx.insert_case(&c, true, &format!("evt_retain_{n}"))
            .await
            .unwrap();
        if closed {
            let record = tx.load_case(&c.case_id).await.unwrap().unwrap();
            let to = wangban_domain::lifecycle::State::Rejected;
            tx.set_state(&record, to, 0, None).await.unwrap();
        }
        tx.commit().await.unwrap();
        ids.push((c.case_id.to_string(), app));
    }
    let payload = br#"{"applicant":{"name":"someone"}}"#;
    store
        .record_dead_letter(
            "intake",
            Some("evt_retain_dl"),
            None,
            None,
            "malformed",
            payload,
        )
        .await
        .unwrap();
    let keep = Duration::from_secs(180 * 86_400);
    let application_of = |case: String| {
        let store = store.clone();
        async move {
            store
                .case_view(&case)
                .await
                .unwrap()
                .unwrap()
                .case
                .application
        }
    };

    assert_eq!(
        store.erase_expired(keep, false).await.unwrap().cases,
        0,
        "not yet"
    );
    clock.advance(keep + Duration::from_secs(1));
    // (The suite's earlier cases that intake closed are as old: they count too.)
    let dry = store.erase_expired(keep, true).await.unwrap();
    assert!(dry.cases >= 1 && dry.dead_letters >= 1, "{dry:?}");
    assert!(
        application_of(ids[0].0.clone())
            .await
            .contains(ids[0].1["applicant"]["id_number"].as_str().unwrap())
    );
    let done = store.erase_expired(keep, false).await.unwrap();
    assert_eq!(
        (done.cases, done.dead_letters),
        (dry.cases, dry.dead_letters),
        "the dry run counted what the run erased"
    );
    let erased = application_of(ids[0].0.clone()).await;
    for field in ["id_number", "name", "phone"] {
        let personal = ids[0].1["applicant"][field].as_str().unwrap();
        assert!(!erased.contains(personal), "{field} left in {erased}");
    }
    let open = application_of(ids[1].0.clone()).await;
    assert!(
        open.contains(ids[1].1["applicant"]["id_number"].as_str().unwrap()),
        "an open case keeps it"
    );
    // (The suite tampered with other chains on purpose: this one must verify.)
    assert_eq!(store.verify_case(&ids[0].0).await.unwrap(), None);
    let kinds: Vec<String> = store
        .audit_of(&ids[0].0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert!(
        kinds.contains(&"personal_data_erased".to_string()),
        "{kinds:?}"
    );
    let again = store.erase_expired(keep, false).await.unwrap();
    assert_eq!((again.cases, again.dead_letters), (0, 0), "nothing twice");
    store.close().await;
}

/// Every submission's materials are recorded (schema v12): what the reviewer API may serve, what
/// retention erases; a store migrated before v12 gets them from the stored applications.
async fn materials_conformance(url: &str) {
    let store = Store::connect(url, "k").await.unwrap();
    let mut rng = Rng::new(31);
    let app = application("MATS", 1, Scenario::PassportCourier, &mut rng);
    let c = new_case(app["application_id"].as_str().unwrap(), "fp-mats-1", &app);
    let mut tx = store.begin().await.unwrap();
    tx.insert_case(&c, true, "evt_mats_1").await.unwrap();
    tx.commit().await.unwrap();
    let replaced = "AB".repeat(32);
    let mut corrected = app.clone();
    corrected["materials"]["photo"]["sha256"] = json!(replaced);
    let mut tx = store.begin().await.unwrap();
    tx.replace_application(&c.case_id, &corrected.to_string())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let case = c.case_id.to_string();
    let files = store.case_materials(&case).await.unwrap();
    let of = |n: i64| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = files
            .iter()
            .filter(|f| f.submission == n)
            .map(|f| (f.material.clone(), f.sha256.clone()))
            .collect();
        v.sort();
        v
    };
    let declared = |app: &serde_json::Value| {
        let mut v: Vec<(String, String)> = wangban_store::declared_materials(app)
            .into_iter()
            .map(|(m, n)| (m.to_owned(), n))
            .collect();
        v.sort();
        v
    };
    assert_eq!(of(1), declared(&app));
    assert_eq!(of(2), declared(&corrected));
    assert!(of(2).contains(&("photo".to_owned(), replaced.to_ascii_lowercase())));
    assert_eq!(files.len(), 8);
    assert!(
        store
            .material_in_use(&replaced.to_ascii_lowercase())
            .await
            .unwrap()
    );
    assert!(!store.material_in_use(&"cd".repeat(32)).await.unwrap());
    store.close().await;

    // A store migrated before v12: the migration fills the table from the stored application.
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        sqlx::raw_sql(
            "DROP TABLE case_materials; DROP TABLE material_problems; \
             DELETE FROM schema_migrations WHERE version = 12",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let store = Store::connect(url, "k").await.unwrap();
    let files = store.case_materials(&case).await.unwrap();
    assert!(files.iter().all(|f| f.submission == 1), "{files:?}");
    let mut backfilled: Vec<(String, String)> =
        files.into_iter().map(|f| (f.material, f.sha256)).collect();
    backfilled.sort();
    assert_eq!(backfilled, declared(&corrected));
    store.close().await;
}

/// A handler's state change, audit records, outgoing events and cancelled deadlines are held and
/// sent together: the transaction reads what it wrote, a stale version is still a conflict, a
/// savepoint rolled back takes its held writes with it, and the chain stays whole.
async fn held_writes_conformance(url: &str) {
    use wangban_domain::events::{Envelope, EventType};
    use wangban_domain::ids::EventId;
    use wangban_domain::lifecycle::State;
    let store = Store::connect(url, "k").await.unwrap();
    let app = application("HELD", 1, Scenario::PassportCourier, &mut Rng::new(3));
    let a = new_case("HELD-1", "fp-held", &app);
    let mut tx = store.begin().await.unwrap();
    tx.insert_case(&a, true, "evt_held_open").await.unwrap();
    tx.commit().await.unwrap();
    let backlog = store.outbox_backlog().await.unwrap();
    let event = |name: &str| {
        Envelope::new(
            EventId::derived(&[a.case_id.as_str(), name]),
            EventType::Entered(State::Accepted),
            "/test",
            store.clock().now(),
            a.case_id.clone(),
            None,
            json!({"n": name}),
        )
    };

    // Two steps, three records, two events, a deadline cancelled — and reads in between.
    let mut tx = store.begin().await.unwrap();
    let case = tx.load_case(&a.case_id).await.unwrap().unwrap();
    let (version, _) = tx.set_state(&case, State::Accepted, 0, None).await.unwrap();
    tx.append_audit(
        &a.case_id,
        "transition",
        Some("evt_h1"),
        &json!({"to": "accepted"}),
    )
    .await
    .unwrap();
    tx.cancel_scheduled(a.case_id.as_str(), "submitted")
        .await
        .unwrap();
    tx.enqueue(&event("one"), "intake").await.unwrap();
    let seen = tx.load_case(&a.case_id).await.unwrap().unwrap();
    assert_eq!(
        (seen.state, seen.version),
        (State::Accepted, version),
        "reads what it wrote"
    );
    tx.set_state(&seen, State::UnderReview, 1, Some("bj-1"))
        .await
        .unwrap();
    tx.append_audit(
        &a.case_id,
        "transition",
        Some("evt_h2"),
        &json!({"to": "under_review"}),
    )
    .await
    .unwrap();
    tx.append_audit(&a.case_id, "note", None, &json!({}))
        .await
        .unwrap();
    tx.enqueue(&event("two"), "intake").await.unwrap();
    tx.commit().await.unwrap();
    let view = store.case_view(a.case_id.as_str()).await.unwrap().unwrap();
    assert_eq!(view.case.state, State::UnderReview);
    assert_eq!(view.case.version, version + 1);
    assert_eq!(view.case.reviewer.as_deref(), Some("bj-1"));
    let kinds: Vec<&str> = view.audit.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["case_opened", "transition", "transition", "note"]);
    assert_eq!(store.outbox_backlog().await.unwrap(), backlog + 2);
    assert_eq!(store.verify_case(a.case_id.as_str()).await.unwrap(), None);

    // A step from a version that is no longer the case's: the flush refuses it, nothing lands.
    let mut tx = store.begin().await.unwrap();
    let mut stale = tx.load_case(&a.case_id).await.unwrap().unwrap();
    stale.version -= 1;
    tx.set_state(&stale, State::Approved, 1, None)
        .await
        .unwrap();
    tx.enqueue(&event("stale"), "review").await.unwrap();
    let err = tx.flush().await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    drop(tx);

    // A delivery rolled back to its savepoint takes its held writes with it; the next one's
    // record follows the last committed one.
    let mut tx = store.begin().await.unwrap();
    tx.savepoint().await.unwrap();
    let case = tx.load_case(&a.case_id).await.unwrap().unwrap();
    tx.set_state(&case, State::Approved, 1, None).await.unwrap();
    tx.append_audit(&a.case_id, "transition", Some("evt_gone"), &json!({}))
        .await
        .unwrap();
    tx.enqueue(&event("gone"), "review").await.unwrap();
    tx.rollback_to_savepoint().await.unwrap();
    tx.savepoint().await.unwrap();
    tx.append_audit(&a.case_id, "kept", None, &json!({}))
        .await
        .unwrap();
    tx.release_savepoint().await.unwrap();
    tx.commit().await.unwrap();
    let view = store.case_view(a.case_id.as_str()).await.unwrap().unwrap();
    assert_eq!(view.case.state, State::UnderReview);
    let kinds: Vec<&str> = view.audit.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["case_opened", "transition", "transition", "note", "kept"]
    );
    assert_eq!(store.outbox_backlog().await.unwrap(), backlog + 2);
    assert_eq!(store.verify_case(a.case_id.as_str()).await.unwrap(), None);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend() {
    let path = std::env::temp_dir().join(format!(
        "wangban-conformance-{}.sqlite",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}", path.display());
    conformance(&url).await;
    tamper_and_verify(&url).await;
    desk_conformance(&url).await;
    hall_conformance(&url).await;
    scheduled_conformance(&url).await;
    retention_conformance(&url).await;
    materials_conformance(&url).await;
    held_writes_conformance(&url).await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let env = RealServices::new("store").await;
    let url = env.settings.database_url.clone();
    conformance(&url).await;
    tamper_and_verify(&url).await;
    desk_conformance(&url).await;
    hall_conformance(&url).await;
    scheduled_conformance(&url).await;
    retention_conformance(&url).await;
    materials_conformance(&url).await;
    held_writes_conformance(&url).await;
    let pipeline = wangban::pipeline::Pipeline::connect(&env.settings)
        .await
        .unwrap();
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls() {
    use sqlx::Connection;
    let env = RealServices::new("tls").await;
    let url = format!("{}&sslmode=require", env.settings.database_url);
    // The store connects and migrates over TLS …
    let store = Store::connect(&url, "k")
        .await
        .expect("the store connects with sslmode=require");
    store.ping().await.unwrap();
    store.close().await;
    // … and the server sees an encrypted session.
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl, "the session is not encrypted");
    let _ = conn.close().await;
    let pipeline = wangban::pipeline::Pipeline::open(&env.settings)
        .await
        .unwrap();
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_role_cannot_rewrite_the_audit_log() {
    use sqlx::Connection;
    let env = RealServices::new("roles").await;
    let admin_url = env.settings.database_url.clone();
    Store::connect(&admin_url, "k").await.unwrap().close().await; // migrate as the owner
    let roles =
        std::fs::read_to_string(wangban_tests::workspace_root().join("deploy/postgres/roles.sql"))
            .unwrap();
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(roles))
        .execute(&mut admin)
        .await
        .expect("roles.sql applies");
    let login = format!(
        "wangban_w_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {login} LOGIN IN ROLE wangban_worker"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    // The worker role runs the store: opens a case, appends to its audit chain.
    let worker_url = admin_url.replacen("postgres@", &format!("{login}@"), 1);
    let store = Store::connect(&worker_url, "k")
        .await
        .expect("the worker role connects (nothing to migrate)");
    let app = application("ROLE", 1, Scenario::PassportCourier, &mut Rng::new(2));
    let mut tx = store.begin().await.unwrap();
    tx.insert_case(&new_case("ROLE-A", "fp", &app), true, "evt_r")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store.close().await;

    // … but cannot change or remove history.
    let mut worker = sqlx::AnyConnection::connect(&worker_url).await.unwrap();
    for sql in [
        "UPDATE audit SET detail = '{}'",
        "DELETE FROM audit",
        "TRUNCATE audit",
        "UPDATE case_materials SET sha256 = 'x'",
        "DELETE FROM case_materials",
    ] {
        let err = sqlx::query(sql).execute(&mut worker).await.expect_err(sql);
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
    }
    let _ = worker.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {login}; DROP ROLE {login}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
    let pipeline = wangban::pipeline::Pipeline::open(&env.settings)
        .await
        .unwrap();
    env.cleanup(&pipeline).await;
}

/// A writer that appends to a case's audit chain without having loaded the case (an executor
/// recording an SMS) takes its turn behind the handler holding the case, instead of inserting the
/// same link and deadlocking with it (87 deadlocks, each a second's stall, in a 1,000-case bench
/// before the head was read locked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_audit_writers_take_turns() {
    use std::time::Duration;
    let env = RealServices::new("turns").await;
    let url = env.settings.database_url.clone();
    let name = format!("wangban-turns-{}", &env.schema[2..]);
    let handler = Store::connect(&url, "k").await.unwrap();
    let executor = Store::connect(&format!("{url}&application_name={name}"), "k")
        .await
        .unwrap();
    let app = application("TURNS", 1, Scenario::PassportCourier, &mut Rng::new(4));
    let opened = new_case("TURNS-1", "fp-turns", &app);
    let case = opened.case_id.clone();
    let mut tx = handler.begin().await.unwrap();
    tx.insert_case(&opened, true, "evt_turns").await.unwrap();
    tx.commit().await.unwrap();

    // The handler holds the case …
    let mut held = handler.begin().await.unwrap();
    held.load_case(&case).await.unwrap().expect("the case");
    // … while the executor appends to its chain.
    let appended = {
        let case = case.clone();
        let executor = executor.clone();
        tokio::spawn(async move {
            let mut tx = executor.begin().await?;
            tx.append_audit(&case, "sms_sent", None, &json!({"n": 1}))
                .await?;
            tx.commit().await
        })
    };
    wangban_tests::eventually(
        Duration::from_secs(10),
        "the executor's transaction waits on a lock",
        || {
            let (url, name) = (url.clone(), name.clone());
            async move {
                use sqlx::Connection;
                let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                )
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let _ = conn.close().await;
                n == 1
            }
        },
    )
    .await;
    held.append_audit(&case, "transition", None, &json!({"n": 2}))
        .await
        .expect("the handler appends");
    held.commit().await.expect("the handler commits");
    appended
        .await
        .unwrap()
        .expect("the executor appends after the handler, without a deadlock");
    let kinds: Vec<(i64, String)> = handler
        .audit_of(case.as_str())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "case_opened".to_owned()),
            (2, "transition".to_owned()),
            (3, "sms_sent".to_owned())
        ]
    );
    assert_eq!(handler.verify_case(case.as_str()).await.unwrap(), None);
    handler.close().await;
    executor.close().await;
    let pipeline = wangban::pipeline::Pipeline::connect(&env.settings)
        .await
        .unwrap();
    env.cleanup(&pipeline).await;
}
