//! Each worker can run as its own RabbitMQ user with only the permissions the definitions give it:
//! its queues and the two exchanges. Such a user can run its worker (declaring only its own
//! queues), and cannot declare another worker's queue.

use std::process::Command;
use std::time::Duration;
use tokio::sync::watch;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::Pipeline;
use wangban_tests::{RealServices, eventually, free_port, http};

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the test needs the local broker's CLI)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_with_only_its_own_permissions() {
    let env = RealServices::new("users").await;
    let client = Pipeline::connect(&env.settings).await.unwrap(); // guest: declares everything
    let user = format!(
        "wangban-intake-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let perm = client.topology.worker_permissions("intake");
    rabbitmqctl(&["add_user", &user, "intake-secret"]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, &perm, &perm, &perm]);

    let mut restricted = env.settings.clone();
    restricted.amqp_url = Some(format!("amqp://{user}:intake-secret@127.0.0.1:5672/%2f"));
    restricted.declare_own = true;
    let port = free_port();
    restricted.http_addr = format!("127.0.0.1:{port}");
    // Declaring every worker's queues is refused for this user …
    let all = Pipeline::connect(&restricted).await;
    assert!(
        all.is_err(),
        "a worker user must not configure other workers' queues"
    );
    // … while its own worker runs.
    let (stop, rx) = watch::channel(false);
    let s = restricted.clone();
    let server = tokio::spawn(async move { wangban::serve::run(&s, &["intake"], rx).await });
    eventually(
        Duration::from_secs(30),
        "the restricted intake to be ready",
        || async {
            http(
                "GET",
                &format!("http://127.0.0.1:{port}/readyz"),
                None,
                None,
            )
            .await
            .0 == 200
        },
    )
    .await;
    client
        .submit(
            &application("USERS", 1, Scenario::PassportCourier, &mut Rng::new(1)),
            false,
        )
        .await
        .unwrap();
    let store = client.runtime.store.clone();
    eventually(
        Duration::from_secs(30),
        "intake to accept the case",
        || async {
            store
                .states_by_application("USERS")
                .await
                .unwrap()
                .values()
                .any(|s| s == "accepted")
        },
    )
    .await;
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    rabbitmqctl(&["delete_user", &user]);
    env.cleanup(&client).await;
}
