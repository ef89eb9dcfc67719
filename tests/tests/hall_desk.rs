//! The pickup hall desk on real RabbitMQ and PostgreSQL: `wangban serve` with a reviewers file
//! that lists halls and their staff. A produced pickup document goes to the hall of the
//! applicant's hukou district and waits there until the staff record its arrival; it is handed
//! over only after the ID number shown at the counter matches; a document ready too long is
//! listed as uncollected — through the hall API and in the console, in headless Chromium.

use serde_json::{Value, json};
use std::time::Duration;
use wangban::demo::{self, Rng, Scenario};
use wangban_review::desk_file::{DeskFile, token_digest};
use wangban_tests::{RealServices, Served, eventually, http};

const CHAOYANG: &str = "110105";
const PUDONG: &str = "310115";

fn token(who: &str) -> String {
    format!("token-of-{who}")
}

/// One reviewer per office; a hall in Chaoyang (staff cy-1) and one in Pudong (staff pd-1).
fn desk() -> DeskFile {
    let person = |id: &str, key: &str, places: &[&str]| json!({"id": id, "name": id, "token_sha256": token_digest(&token(id)), key: places});
    let text = json!({
        "offices": [{"id": "beijing", "name": "北京市公安局出入境管理总队", "districts": ["1101"]},
                    {"id": "shanghai", "name": "上海市公安局出入境管理局", "districts": ["3101"]}],
        "reviewers": [person("bj-1", "offices", &["beijing"]), person("sh-1", "offices", &["shanghai"])],
        "halls": [{"id": "chaoyang", "name": "朝阳分局出入境接待大厅", "districts": [CHAOYANG]},
                  {"id": "pudong", "name": "浦东分局出入境接待大厅", "districts": [PUDONG]}],
        "hall_staff": [person("cy-1", "halls", &["chaoyang"]), person("pd-1", "halls", &["pudong"])]
    });
    DeskFile::parse(&text.to_string()).expect("the test's reviewers file is valid")
}

struct Hall(Served);

impl std::ops::Deref for Hall {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.0
    }
}

impl Hall {
    async fn start(test: &str) -> Hall {
        let mut env = RealServices::new(test).await;
        env.settings.desk = Some(desk());
        env.settings.fees.payment_window = Duration::from_secs(600);
        env.settings.fees.reminder_after = Duration::from_secs(600);
        Hall(Served::start(env).await)
    }

    async fn call(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let url = format!("{}{path}", self.base);
        let (status, text) = http(method, &url, Some(&token(who)), body.as_deref()).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn state(&self, case: &str) -> String {
        let view = self.client.runtime.store.case_view(case).await.unwrap();
        view.map(|v| v.case.state.to_string()).unwrap_or_default()
    }

    async fn wait_state(&self, case: &str, state: &str) {
        eventually(
            Duration::from_secs(90),
            &format!("{case} to be {state}"),
            || async { self.state(case).await == state },
        )
        .await;
    }

    /// The documents `who` sees, by case id: their status.
    async fn documents(&self, who: &str) -> Vec<(String, String)> {
        let (status, body) = self.call(who, "GET", "/api/hall/documents", None).await;
        assert_eq!(status, 200, "{body}");
        body["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let field = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                (field("case_id"), field("status"))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hall_receives_checks_the_identity_card_and_hands_over() {
    let h = Hall::start("hall_desk").await;
    let run = format!("HALL{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut rng = Rng::new(7);
    // Four permits for pickup: three of Chaoyang, one of Pudong.
    let mut cases = Vec::new();
    for (n, hukou) in [CHAOYANG, CHAOYANG, CHAOYANG, PUDONG]
        .into_iter()
        .enumerate()
    {
        let mut app = demo::application(&run, n, Scenario::PermitPickup, &mut rng);
        app["applicant"]["hukou_region"] = json!(hukou);
        let case = h.client.submit(&app, false).await.unwrap().to_string();
        cases.push((case, app, hukou));
    }
    // Each is approved at its office's desk; the simulated gateway and centre do the rest.
    for (case, _, hukou) in &cases {
        h.wait_state(case, "under_review").await;
        let reviewer = if *hukou == CHAOYANG { "bj-1" } else { "sh-1" };
        let path = format!("/api/review/cases/{case}/decision");
        let (status, body) = h
            .call(
                reviewer,
                "POST",
                &path,
                Some(json!({"decision": "approve"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Produced, they go to the hall of the hukou district and stay `produced` until they arrive.
    let chaoyang: Vec<&str> = cases[..3].iter().map(|(c, _, _)| c.as_str()).collect();
    let pudong = cases[3].0.as_str();
    eventually(
        Duration::from_secs(90),
        "three documents due at Chaoyang",
        || async {
            let docs = h.documents("cy-1").await;
            docs.len() == 3 && docs.iter().all(|(_, s)| s == "due")
        },
    )
    .await;
    eventually(Duration::from_secs(90), "one due at Pudong", || async {
        h.documents("pd-1").await == [(pudong.to_owned(), "due".to_owned())]
    })
    .await;
    for case in &chaoyang {
        assert_eq!(
            h.state(case).await,
            "produced",
            "not ready before it arrives"
        );
    }

    // Tokens and halls: no token, an unknown one, and another hall's document.
    let (status, _) = http("GET", &format!("{}/api/hall/documents", h.base), None, None).await;
    assert_eq!(status, 401);
    let (status, _) = h.call("nobody", "GET", "/api/hall/documents", None).await;
    assert_eq!(status, 401);
    let (status, _) = h.call("bj-1", "GET", "/api/hall/me", None).await;
    assert_eq!(status, 401, "a reviewer's token is not a hall token");
    let arrived = |c: &str| format!("/api/hall/documents/{c}/arrived");
    let collect = |c: &str| format!("/api/hall/documents/{c}/collect");
    let (status, _) = h.call("pd-1", "POST", &arrived(chaoyang[0]), None).await;
    assert_eq!(status, 404, "another hall's document is not found");
    // Not yet arrived: nothing to hand over.
    let id_of = |i: usize| {
        cases[i].1["applicant"]["id_number"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, body) = h
        .call(
            "cy-1",
            "POST",
            &collect(chaoyang[0]),
            Some(json!({"id_number": id_of(0)})),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // A arrives through the API: ready for pickup, with the pickup SMS.
    let (status, body) = h.call("cy-1", "POST", &arrived(chaoyang[0]), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = h.call("cy-1", "POST", &arrived(chaoyang[0]), None).await;
    assert_eq!(status, 409, "an arrival is recorded once");
    h.wait_state(chaoyang[0], "ready_for_pickup").await;
    // C arrives and then waits past the uncollected period (moved back 31 days).
    let (status, _) = h.call("cy-1", "POST", &arrived(chaoyang[2]), None).await;
    assert_eq!(status, 200);
    h.wait_state(chaoyang[2], "ready_for_pickup").await;
    backdate_arrival(&h.env.settings.database_url, chaoyang[2], 31).await;

    // In the console: B arrives by a click; A is handed over after a wrong ID number is refused.
    let shots = wangban_tests::screenshot_dir();
    let wrong = other_id_number(&id_of(0));
    let seen = wangban_tests::browser_run(
        "hall.mjs",
        &[
            &h.base,
            &token("cy-1"),
            chaoyang[1],
            chaoyang[0],
            &wrong,
            &id_of(0).to_ascii_lowercase(),
            shots.to_str().unwrap(),
        ],
    );
    assert!(
        seen["wrong_token_refused"]
            .as_str()
            .unwrap()
            .contains("unknown hall staff token"),
        "{seen}"
    );
    assert!(seen["who"].as_str().unwrap().contains("chaoyang"), "{seen}");
    assert_eq!(seen["due_rows"], 1, "{seen}");
    assert_eq!(seen["ready_rows"], 1, "{seen}");
    assert_eq!(seen["uncollected_rows"], 1, "{seen}");
    assert!(
        seen["arrival"]
            .as_str()
            .unwrap()
            .contains("Arrival recorded"),
        "{seen}"
    );
    assert!(
        seen["refused"].as_str().unwrap().starts_with("422"),
        "{seen}"
    );
    assert!(
        seen["handed_over"]
            .as_str()
            .unwrap()
            .contains("Handed over"),
        "{seen}"
    );
    let page = seen["page_text"].as_str().unwrap();
    for i in 0..3 {
        assert!(!page.contains(&id_of(i)), "an ID number in the clear");
    }

    h.wait_state(chaoyang[0], "collected").await;
    h.wait_state(chaoyang[1], "ready_for_pickup").await;
    assert_eq!(h.state(chaoyang[2]).await, "ready_for_pickup");
    assert_eq!(
        h.state(pudong).await,
        "produced",
        "Pudong's document has not arrived"
    );
    let mut docs = h.documents("cy-1").await;
    docs.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        docs,
        [
            (chaoyang[1].to_owned(), "ready".to_owned()),
            (chaoyang[2].to_owned(), "uncollected".to_owned())
        ]
    );
    // The timeline: sent, arrived (by whom), the refused attempt (never the number shown),
    // collected (by whom); the pickup SMS once per document that arrived.
    let view = h
        .client
        .runtime
        .store
        .case_view(chaoyang[0])
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<&str> = view.audit.iter().map(|r| r.kind.as_str()).collect();
    assert!(kinds.contains(&"sent_to_hall"), "{kinds:?}");
    let refused: Vec<_> = view
        .audit
        .iter()
        .filter(|r| r.kind == "collection_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{kinds:?}");
    assert!(refused[0].detail.contains("cy-1") && !refused[0].detail.contains(&wrong));
    let collected = view
        .audit
        .iter()
        .find(|r| r.kind == "transition" && r.detail.contains("\"to\":\"collected\""))
        .expect("collected");
    assert!(collected.detail.contains("cy-1"), "{}", collected.detail);
    wangban_tests::wait_effects(&h.client.runtime.store, "sms:ready_for_pickup", 3).await;
    let report = h.client.runtime.store.verify_audit().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    h.0.stop().await;
}

/// Moves the arrival of `case`'s document `days` back.
async fn backdate_arrival(database_url: &str, case: &str, days: i64) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(database_url).await.unwrap();
    let done =
        sqlx::query("UPDATE hall_documents SET arrived_at = arrived_at - $1 WHERE case_id = $2")
            .bind(days * 86_400_000)
            .bind(case)
            .execute(&mut conn)
            .await
            .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

/// A valid-looking ID number that is not `id`: the same with its sequence digits changed.
fn other_id_number(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    chars[15] = if chars[15] == '1' { '2' } else { '1' };
    chars.into_iter().collect()
}
