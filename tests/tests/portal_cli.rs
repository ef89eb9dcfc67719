//! `wangban submit` as a portal adapter runs it when the broker is not there: it retries with
//! backoff for `WANGBAN_PORTAL_RETRY_SECS` and then ends with an error naming what it was doing;
//! a refusal that needs an operator (wrong credentials) ends it at once. The fault suite's
//! "RabbitMQ away during submission" scenario covers the broker coming back in time.

use std::process::{Command, Output};
use wangban_tests::{amqp_url, wangban_binary, workspace_root};

fn submit(amqp_url: &str, retry_secs: u64) -> Output {
    let dir =
        std::env::temp_dir().join(format!("wangban-portal-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(wangban_binary())
        .arg("submit")
        .arg(workspace_root().join("examples/applications/accepted-passport-courier.json"))
        .env("AMQP_URL", amqp_url)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("w.sqlite").display()),
        )
        .env("WANGBAN_PORTAL_RETRY_SECS", retry_secs.to_string())
        .env("WANGBAN_QUEUE_PREFIX", "portal-cli.")
        .env_remove("RUST_LOG")
        .output()
        .expect("wangban runs");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn a_broker_that_never_answers_is_retried_then_named_in_a_clear_error() {
    // A port nothing listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = submit(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("trying again"),
        "no retry was logged: {stderr}"
    );
    assert!(
        stderr.contains("declaring the bus topology")
            && stderr.contains("gave up after")
            && stderr.contains("WANGBAN_PORTAL_RETRY_SECS=2"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing was submitted");
}

#[test]
fn wrong_credentials_are_not_retried() {
    // The real broker, a user it does not know: ACCESS_REFUSED needs an operator, not patience.
    let real = amqp_url();
    let (scheme, rest) = real.split_once("://").expect("an amqp:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://wangban-nobody:wrong@{host}");
    let out = submit(&url, 600);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("trying again") && !stderr.contains("gave up after"),
        "{stderr}"
    );
    assert!(stderr.contains("ACCESS_REFUSED"), "{stderr}");
}
