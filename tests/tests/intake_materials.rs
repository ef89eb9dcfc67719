//! Intake with a materials store, on RabbitMQ, PostgreSQL and a real S3 server (Garage): the
//! files decide — a square photo declared conforming is refused, a declared card never uploaded
//! makes the materials incomplete, a disagreement is on the timeline — and a store that does not
//! answer holds the application back (retried), never rejects it.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::Pipeline;
use wangban::settings::MaterialsStore;
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_domain::materials::sha256_hex;
use wangban_materials::{MaterialStore, S3};
use wangban_tests::{RealServices, eventually, jpeg, jpeg_sized, s3_config, s3_config_down};

fn declared(bytes: &[u8], w: u32, h: u32) -> Value {
    json!({"sha256": sha256_hex(bytes), "content_type": "image/jpeg", "bytes": bytes.len(),
           "width_px": w, "height_px": h})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_decides_on_the_files_in_the_object_store() {
    let mut env = RealServices::new("intake_materials").await;
    let store: Arc<dyn MaterialStore> = Arc::new(S3::new(&s3_config()).unwrap());
    env.settings.materials = Some(MaterialsStore(store.clone()));
    let pipeline = Pipeline::connect(&env.settings).await.unwrap();
    let running = pipeline.spawn(&["intake"]).unwrap();

    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    let photo = jpeg_sized(360, 480, 20 * 1024, 80 * 1024, seed);
    let square = jpeg_sized(400, 400, 20 * 1024, 80 * 1024, seed + 1);
    let signature = jpeg(600, 300, 80, seed + 2);
    let front = jpeg(1200, 760, 60, seed + 3);
    let back = jpeg(1200, 760, 60, seed + 4);
    for file in [&photo, &square, &signature, &front, &back] {
        store.put(file).await.unwrap();
    }
    let never_uploaded = jpeg(1200, 760, 61, seed + 5);
    let good = json!({
        "photo": declared(&photo, 360, 480),
        "signature": declared(&signature, 600, 300),
        "id_card_front": declared(&front, 1200, 760),
        "id_card_back": declared(&back, 1200, 760),
    });
    let mut square_photo = good.clone();
    square_photo["photo"] = declared(&square, 360, 480); // declared 3:4, the file is square
    let mut missing_card = good.clone();
    missing_card["id_card_back"] = declared(&never_uploaded, 1200, 760);

    let run = format!("MAT{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    for (i, materials) in [good, square_photo, missing_card].into_iter().enumerate() {
        let mut app = application(&run, i, Scenario::PassportCourier, &mut rng);
        app["materials"] = materials;
        ids.push(app["application_id"].as_str().unwrap().to_owned());
        pipeline.submit(&app, false).await.unwrap();
    }
    let store_db = &pipeline.runtime.store;
    eventually(Duration::from_secs(60), "three cases decided", || async {
        store_db.states_by_application(&run).await.unwrap().len() == 3
    })
    .await;
    let states = store_db.states_by_application(&run).await.unwrap();
    let timeline = |id: &str| {
        let id = id.to_owned();
        async move {
            let view = store_db.case_view(&id).await.unwrap().unwrap();
            view.audit
                .iter()
                .map(|r| {
                    (
                        r.kind.clone(),
                        serde_json::from_str::<Value>(&r.detail).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let reasons = |tl: &[(String, Value)]| {
        tl.iter()
            .find(|(k, d)| k == "transition" && d["to"] == "rejected")
            .map(|(_, d)| d["detail"]["reasons"].clone())
    };

    assert_eq!(states[&ids[0]], "accepted", "{states:?}");
    assert!(
        !timeline(&ids[0])
            .await
            .iter()
            .any(|(k, _)| k == "materials_checked"),
        "the files agree with the declarations: nothing to record"
    );

    assert_eq!(states[&ids[1]], "rejected");
    let tl = timeline(&ids[1]).await;
    assert_eq!(reasons(&tl), Some(json!(["photo_nonconforming"])), "{tl:?}");
    let checked = &tl.iter().find(|(k, _)| k == "materials_checked").unwrap().1;
    let fields: Vec<&str> = checked["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["width_px", "height_px"], "{checked}");

    assert_eq!(states[&ids[2]], "rejected");
    let tl = timeline(&ids[2]).await;
    assert_eq!(
        reasons(&tl),
        Some(json!(["materials_incomplete"])),
        "{tl:?}"
    );

    running.stop().await;
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_holds_the_application_back_never_rejects_it() {
    let mut env = RealServices::new("materials_down").await;
    let down = s3_config_down();
    env.settings.materials = Some(MaterialsStore(Arc::new(S3::new(&down).unwrap())));
    env.settings.runtime.retry_min = Duration::from_millis(50);
    env.settings.runtime.retry_max = Duration::from_millis(200);
    let pipeline = Pipeline::connect(&env.settings).await.unwrap();
    let running = pipeline.spawn(&["intake"]).unwrap();
    let run = format!("MDN{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let app = application(&run, 0, Scenario::PassportCourier, &mut Rng::new(9));
    let id = app["application_id"].as_str().unwrap().to_owned();
    pipeline.submit(&app, false).await.unwrap();
    let case = CaseId::for_application(&ApplicationId::parse(&id).unwrap());
    let store_db = &pipeline.runtime.store;
    eventually(
        Duration::from_secs(60),
        "intake to retry the unreadable materials",
        || async { store_db.retries_of(case.as_str()).await.unwrap().len() >= 2 },
    )
    .await;
    let retries = store_db.retries_of(case.as_str()).await.unwrap();
    assert!(
        retries[0].error.contains("materials"),
        "{:?}",
        retries[0].error
    );
    assert!(
        store_db.case_view(&id).await.unwrap().is_none(),
        "no case is opened (let alone rejected) while the files cannot be read"
    );
    running.abort().await;
    env.cleanup(&pipeline).await;
}
