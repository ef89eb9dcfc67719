//! The materials store on both backends — a real S3-compatible server (Garage, started by
//! `scripts/s3-server.sh`) and a local directory — with real JPEGs: content-addressed writes,
//! verified reads, integrity errors, erasure, and a store that is down being transient.

use std::sync::Arc;
use wangban_domain::materials::{inspect, sha256_hex};
use wangban_materials::{LocalDir, MaterialError, MaterialStore, S3, S3Config};
use wangban_tests::{jpeg, s3_config, s3_config_down};

/// What every backend must do. `plant` stores bytes under a name they do not hash to.
async fn conformance(store: Arc<dyn MaterialStore>, plant: impl AsyncFn(&str, Vec<u8>)) {
    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    let photo = jpeg(360, 480, 80, seed);
    let name = store.put(&photo).await.unwrap();
    assert_eq!(name, sha256_hex(&photo), "{}", store.describe());
    assert_eq!(
        store.put(&photo).await.unwrap(),
        name,
        "a second put changes nothing"
    );
    assert!(store.exists(&name).await.unwrap());
    let read = store.get(&name).await.unwrap().expect("the photo is there");
    assert_eq!(read, photo);
    let facts = inspect(&read);
    assert_eq!(
        (facts.content_type, facts.width_px, facts.height_px),
        (Some("image/jpeg"), 360, 480)
    );

    let absent = sha256_hex(format!("never uploaded {seed}").as_bytes());
    assert!(store.get(&absent).await.unwrap().is_none());
    for bad in ["../../etc/passwd", "", "ABC"] {
        assert!(
            matches!(store.get(bad).await, Err(MaterialError::InvalidName(_))),
            "{bad}"
        );
    }

    // Bytes under another material's name are never served as it.
    let forged = sha256_hex(format!("the real card {seed}").as_bytes());
    plant(&forged, jpeg(64, 48, 50, seed)).await;
    let e = store.get(&forged).await.unwrap_err();
    assert!(
        matches!(e, MaterialError::Integrity { .. }) && !e.is_transient(),
        "{e}"
    );

    store.delete(&name).await.unwrap();
    store.delete(&name).await.unwrap();
    assert!(store.get(&name).await.unwrap().is_none(), "erased");
    assert!(!store.exists(&name).await.unwrap());
    store.delete(&forged).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_server_keeps_materials_by_their_sha256() {
    let config = s3_config();
    let store = Arc::new(S3::new(&config).unwrap());
    let raw = raw_client(&config);
    conformance(store, async |name: &str, bytes: Vec<u8>| {
        use object_store::ObjectStore;
        raw.put(&object_store::path::Path::from(name), bytes.into())
            .await
            .expect("planting an object");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_keeps_materials_by_their_sha256() {
    let dir = std::env::temp_dir().join(format!(
        "wangban-materials-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let store = Arc::new(LocalDir::new(&dir));
    let d = dir.clone();
    conformance(store, async move |name: &str, bytes: Vec<u8>| {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_transient_and_wrong_keys_are_not() {
    let down = s3_config_down();
    let e = S3::new(&down)
        .unwrap()
        .get(&sha256_hex(b"x"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "a store that does not answer: {e}");

    let mut wrong = s3_config();
    wrong.secret_access_key = "0".repeat(64);
    let e = S3::new(&wrong).unwrap().put(b"x").await.unwrap_err();
    assert!(
        matches!(e, MaterialError::Refused(_)),
        "wrong credentials need an operator: {e}"
    );
    assert!(
        !format!("{e} {wrong:?}").contains(&"0".repeat(64)),
        "no secret in errors or debug"
    );
}

/// A client of the same bucket that writes any name (the store under test never does).
fn raw_client(c: &S3Config) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(c.endpoint.clone().unwrap())
        .with_allow_http(true)
        .with_bucket_name(&c.bucket)
        .with_region(&c.region)
        .with_access_key_id(&c.access_key_id)
        .with_secret_access_key(&c.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap()
}
