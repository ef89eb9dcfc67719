//! The compose stack's broker, booted the way docker-compose.yml boots it: a blank RabbitMQ node
//! with `deploy/rabbitmq/rabbitmq.conf`, loading the definitions `wangban topology --passwords`
//! rendered. It has no `guest`; every worker logs in as its own user with the password from its
//! file (`AMQP_PASSWORD_FILE`) and a case goes from submission to delivery. Importing the
//! definitions again — rendered anew, or the committed template — keeps every password.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tokio::sync::watch;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban::settings::Settings;
use wangban_tests::{RealServices, eventually, free_port, wangban_binary, workspace_root};

/// A RabbitMQ node of its own: its own name, ports, data and configuration; stopped when dropped.
struct BlankNode {
    name: String,
    child: Child,
    _dir: TempDir,
}

impl BlankNode {
    fn start(dir: TempDir, config: &str, port: u16) -> BlankNode {
        let name = format!("wangban-blank-{port}@localhost");
        let path = |f: &str| dir.0.join(f).display().to_string();
        std::fs::write(dir.0.join("rabbitmq.conf"), config).unwrap();
        std::fs::write(dir.0.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.0.join("rabbitmq-env.conf"),
            format!("NODENAME={name}\nERL_EPMD_ADDRESS=127.0.0.1\n"),
        )
        .unwrap();
        // The broker runs as the rabbitmq user (Debian's rabbitmq-server switches to it).
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir.0)
            .status()
            .expect("chown runs");
        assert!(chown.success(), "chown the blank node's directory");
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .stdout(std::fs::File::create(dir.0.join("server.out")).unwrap())
            .stderr(std::fs::File::create(dir.0.join("server.err")).unwrap())
            .spawn()
            .expect("rabbitmq-server starts (the test needs Debian's rabbitmq-server package)");
        BlankNode {
            name,
            child,
            _dir: dir,
        }
    }

    fn try_ctl(&self, args: &[&str]) -> bool {
        Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl runs")
            .status
            .success()
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for BlankNode {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "wangban-{what}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `wangban topology --passwords DIR --output FILE`, as compose's `broker-definitions` runs it.
fn render(passwords: &Path, output: &Path) {
    let out = Command::new(wangban_binary())
        .args(["topology", "--passwords"])
        .arg(passwords)
        .arg("--output")
        .arg(output)
        .env_remove("WANGBAN_QUEUE_PREFIX")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The settings of a compose service logging in as `user`: no password in the URL, the password
/// from its file.
fn as_user(base: &Settings, port: u16, passwords: &Path, user: &str) -> Settings {
    let mut s = base.clone();
    s.amqp_url = Some(format!("amqp://{user}@127.0.0.1:{port}/%2f"));
    s.amqp_password_file = Some(passwords.join(user));
    s.queue_prefix = String::new(); // the definitions name the deployment's queues
    s.declare_own = user != "wangban-ops";
    // As compose sets WANGBAN_RELAY: each process relays what its own user may publish.
    s.relay = match user.strip_prefix("wangban-") {
        Some("ops") => Some(vec![wangban_store::HTTP_PRODUCER]),
        Some(worker) => WORKERS.iter().find(|w| **w == worker).map(|w| vec![*w]),
        None => None,
    };
    s
}

/// Publishes one event of `routing_key` to the events exchange as `settings`' user.
async fn publish_as(settings: &Settings, routing_key: &str) -> Result<(), String> {
    let pipeline = Pipeline::open(settings)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let out = wangban_bus::Outgoing {
        routing_key: routing_key.into(),
        message_id: String::new(),
        payload: b"{}".to_vec(),
        traceparent: None,
    };
    pipeline
        .runtime
        .bus
        .publish(&[out])
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blank_broker_booted_as_compose_boots_it_runs_a_case_with_the_compose_users() {
    let env = RealServices::new("compose_broker").await;
    let secrets = TempDir::new("broker-secrets");
    let users = wangban::pipeline::offline_topology(&env.settings).broker_users();
    assert_eq!(users.len(), 7, "{users:?}");
    for user in &users {
        let password = format!("{}/+:@{user}", uuid::Uuid::new_v4().simple());
        std::fs::write(secrets.0.join(user), format!("{password}\n")).unwrap();
    }
    let node_dir = TempDir::new("blank-node");
    let definitions = node_dir.0.join("definitions.json");
    render(&secrets.0, &definitions);
    // Compose's configuration, the definitions where this node has them.
    let conf =
        std::fs::read_to_string(workspace_root().join("deploy/rabbitmq/rabbitmq.conf")).unwrap();
    let compose_path = "/etc/rabbitmq/definitions/definitions.json";
    assert!(conf.contains(compose_path), "{conf}");
    let port = free_port();
    let conf = format!(
        "{}\nlisteners.tcp.default = 127.0.0.1:{port}\n",
        conf.replace(compose_path, &definitions.display().to_string())
    );
    let node = BlankNode::start(node_dir, &conf, port);
    eventually(
        Duration::from_secs(60),
        "the blank node to listen",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    let listed = node.ctl(&["list_users", "--quiet"]);
    assert!(!listed.contains("guest"), "{listed}");
    for user in &users {
        assert!(listed.contains(user.as_str()), "{user} missing: {listed}");
    }
    let mut guest = env.settings.clone();
    guest.amqp_url = Some(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    assert!(
        Pipeline::connect(&guest).await.is_err(),
        "a node that loaded definitions has no guest"
    );

    // Every worker as its own user, as the compose services run.
    let (stop, rx) = watch::channel(false);
    let mut servers = Vec::new();
    for worker in WORKERS {
        let mut s = as_user(
            &env.settings,
            port,
            &secrets.0,
            &format!("wangban-{worker}"),
        );
        s.http_addr = format!("127.0.0.1:{}", free_port());
        let rx = rx.clone();
        servers.push(tokio::spawn(async move {
            wangban::serve::run(&s, &[worker], rx).await
        }));
    }
    // The operations service: the HTTP surface, relaying what it and the (simulated) parties'
    // reports put in the outbox.
    let mut ops_settings = as_user(&env.settings, port, &secrets.0, "wangban-ops");
    ops_settings.http_addr = format!("127.0.0.1:{}", free_port());
    servers.push(tokio::spawn({
        let rx = rx.clone();
        async move { wangban::serve::run(&ops_settings, &[], rx).await }
    }));
    let ops = Pipeline::connect(&as_user(&env.settings, port, &secrets.0, "wangban-ops"))
        .await
        .expect("the operations user logs in with its password file");
    // The portal hands over applications as its own user, which may publish nothing else.
    let portal =
        Pipeline::connect_as_portal(&as_user(&env.settings, port, &secrets.0, "wangban-portal"))
            .await
            .expect("the portal user logs in and declares the exchanges");
    let run = format!("CMP{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    portal
        .submit(
            &application(&run, 1, Scenario::PassportCourier, &mut Rng::new(7)),
            false,
        )
        .await
        .unwrap();
    let delivered = || async {
        ops.runtime
            .store
            .states_by_application(&run)
            .await
            .unwrap()
            .values()
            .filter(|s| *s == "delivered")
            .count()
    };
    eventually(
        Duration::from_secs(90),
        "the case to be delivered",
        || async { delivered().await == 1 },
    )
    .await;

    // Topic permissions: each user publishes its own routing keys and no other.
    let user = |name: &str| as_user(&env.settings, port, &secrets.0, name);
    for (name, key) in [
        ("wangban-intake", "case.approved"),    // review's transition
        ("wangban-intake", "payment.reported"), // the payment gateway's report
        ("wangban-review", "case.paid"),        // notify's transition
        ("wangban-notify", "payment.reported"), // not even for its own party
        ("wangban-notify", "requeue.review"),   // another worker's queue
        ("wangban-courier", "review.decided"),  // a desk's decision
        ("wangban-portal", "review.decided"),   // the portal only hands over applications
        ("wangban-ops", "case.approved"),       // the HTTP surface takes no step
    ] {
        let refused = publish_as(&user(name), key).await;
        let Err(e) = refused else {
            panic!("{name} published {key}: topic permissions must refuse it");
        };
        assert!(
            e.contains("ACCESS_REFUSED") && e.contains(&format!("topic '{key}'")),
            "{name} {key}: {e}"
        );
    }

    // Importing again — the definitions rendered anew (fresh salts, the same passwords), then the
    // committed template (no users) — leaves every user able to log in.
    let again = secrets.0.join("definitions-again.json");
    render(&secrets.0, &again);
    node.ctl(&["import_definitions", &again.display().to_string()]);
    // (Copied beside the rendered ones: rabbitmqctl runs as the rabbitmq user, who may not read
    // a private checkout.)
    let template = secrets.0.join("template.json");
    std::fs::copy(
        workspace_root().join("deploy/rabbitmq/definitions.json"),
        &template,
    )
    .unwrap();
    node.ctl(&["import_definitions", &template.display().to_string()]);
    let password = |user: &str| {
        let text = std::fs::read_to_string(secrets.0.join(user)).unwrap();
        text.trim_end().to_owned()
    };
    for user in &users {
        node.ctl(&["authenticate_user", user, &password(user)]);
    }
    // A wrong password is refused, by the node and by a worker's login.
    assert!(!node.try_ctl(&["authenticate_user", "wangban-intake", "not-the-password"]));
    let ops_password = password("wangban-ops");
    std::fs::write(secrets.0.join("wangban-ops"), "not-the-password\n").unwrap();
    let wrong = as_user(&env.settings, port, &secrets.0, "wangban-ops");
    let Err(e) = Pipeline::connect(&wrong).await else {
        panic!("a wrong password must not log in");
    };
    assert!(format!("{e:#}").contains("ACCESS_REFUSED"), "{e:#}");

    stop.send(true).unwrap();
    for server in servers {
        server.await.unwrap().unwrap();
    }
    // What each user may publish is let through (the workers have stopped: the copies wait in
    // their queues on this throwaway node).
    std::fs::write(secrets.0.join("wangban-ops"), ops_password).unwrap();
    for (name, key) in [
        ("wangban-review", "case.approved"),
        ("wangban-ops", "payment.reported"),
        ("wangban-portal", "application.resubmitted"),
    ] {
        publish_as(&user(name), key)
            .await
            .unwrap_or_else(|e| panic!("{name} may publish {key}: {e}"));
    }
    env.cleanup(&ops).await;
    drop(node);
}
