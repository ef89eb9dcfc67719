//! Retention reaches the uploads: once a closed case's personal data is erased, its files go from
//! the object store (Garage) too — all but one another kept case names — and the checker flags an
//! open case whose file is gone. On RabbitMQ, PostgreSQL and a real S3 server.

use std::sync::Arc;
use std::time::Duration;
use wangban::demo::{Rng, Scenario, Uploads, application};
use wangban::pipeline::Pipeline;
use wangban::settings::MaterialsStore;
use wangban_materials::{MaterialStore, S3};
use wangban_tests::{RealServices, eventually, jpeg, s3_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_cases_uploads_are_erased_and_a_shared_one_is_kept() {
    let mut env = RealServices::new("retention_materials").await;
    let store: Arc<dyn MaterialStore> = Arc::new(S3::new(&s3_config()).unwrap());
    env.settings.materials = Some(MaterialsStore(store.clone()));
    env.settings.clock = wangban_domain::clock::Clock::controlled_now();
    let pipeline = Pipeline::connect(&env.settings).await.unwrap();
    let running = pipeline.spawn(&["intake"]).unwrap();

    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    let uploads = Uploads::put(store.as_ref(), seed).await.unwrap();
    // Case A is refused at intake (closed at once) and has one file of its own; case B, the
    // same uploads otherwise, stays open (accepted, waiting for review).
    let own = jpeg(1200, 760, 59, seed + 100);
    let own_name = store.put(&own).await.unwrap();
    let run = format!("RET{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut rng = Rng::new(seed);
    let mut closed = application(&run, 0, Scenario::NotPilotCity, &mut rng);
    uploads.declare(&mut closed, Scenario::NotPilotCity);
    closed["materials"]["id_card_back"]["sha256"] = serde_json::json!(own_name);
    closed["materials"]["id_card_back"]["bytes"] = serde_json::json!(own.len());
    let mut open = application(&run, 1, Scenario::PassportCourier, &mut rng);
    uploads.declare(&mut open, Scenario::PassportCourier);
    let shared = open["materials"]["photo"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    pipeline.submit(&closed, false).await.unwrap();
    pipeline.submit(&open, false).await.unwrap();
    let db = &pipeline.runtime.store;
    eventually(Duration::from_secs(60), "both cases decided", || async {
        let states = db.states_by_application(&run).await.unwrap();
        states
            .values()
            .filter(|s| *s == "rejected" || *s == "accepted")
            .count()
            == 2
    })
    .await;
    running.stop().await;

    // Nothing is due before the keeping time has passed.
    let m = wangban::retention::erase_materials(db, store.as_ref(), false)
        .await
        .unwrap();
    assert_eq!(m.files, 0);
    env.settings
        .clock
        .advance(env.settings.retention + Duration::from_secs(3600));
    let erased = db
        .erase_expired(env.settings.retention, false)
        .await
        .unwrap();
    assert_eq!(erased.cases, 1, "the closed case");
    let dry = wangban::retention::erase_materials(db, store.as_ref(), true)
        .await
        .unwrap();
    assert_eq!((dry.cases, dry.files), (1, 0), "a dry run erases nothing");
    assert!(store.exists(&own_name).await.unwrap());

    let m = wangban::retention::erase_materials(db, store.as_ref(), false)
        .await
        .unwrap();
    assert_eq!(
        (m.cases, m.files),
        (1, 1),
        "only the closed case's own file"
    );
    assert!(
        !store.exists(&own_name).await.unwrap(),
        "erased from the store"
    );
    assert!(
        store.exists(&shared).await.unwrap(),
        "the open case still names the photo"
    );
    let again = wangban::retention::erase_materials(db, store.as_ref(), false)
        .await
        .unwrap();
    assert_eq!(again.cases, 0, "done once");
    let audit = db.verify_audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    let closed_id = closed["application_id"].as_str().unwrap();
    let view = db.case_view(closed_id).await.unwrap().unwrap();
    assert!(view.audit.iter().any(|r| r.kind == "materials_erased"));

    // The checker: the open case's files are there; then one is not.
    let found = wangban::retention::check_materials(db, store.as_ref())
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    store.delete(&shared).await.unwrap();
    let found = wangban::retention::check_materials(db, store.as_ref())
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(&shared), "{found:?}");
    env.cleanup(&pipeline).await;
}
