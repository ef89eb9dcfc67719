//! Worker processes: `wangban serve --workers W` children sharing one broker and database, as a
//! deployment runs them. Used by `wangban-bench` (to measure each process) and by the
//! fault-injection tests (to SIGKILL them).

use crate::settings::Settings;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A set of `wangban serve` processes, killed when dropped.
pub struct WorkerProcesses {
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// Worker, process, and the file where it writes its HTTP address.
    procs: Vec<(String, Child, PathBuf)>,
    log_dir: PathBuf,
    spawned: usize,
}

impl WorkerProcesses {
    /// Starts `replicas` processes of every worker, running `binary` with `settings`' services
    /// and tunables, plus `extra` environment variables (which win).
    pub fn start(
        binary: &Path,
        settings: &Settings,
        replicas: usize,
        extra: &[(&str, &str)],
    ) -> std::io::Result<WorkerProcesses> {
        let mut env: Vec<(String, String)> = vec![
            (
                "AMQP_URL".into(),
                settings.amqp_url.clone().unwrap_or_default(),
            ),
            ("DATABASE_URL".into(), settings.database_url.clone()),
            ("WANGBAN_QUEUE_PREFIX".into(), settings.queue_prefix.clone()),
            (
                "WANGBAN_SIM_DELAY_MS".into(),
                settings.sim_delay.as_millis().to_string(),
            ),
            (
                "WANGBAN_TICK_MS".into(),
                settings.runtime.tick.as_millis().to_string(),
            ),
            (
                "WANGBAN_PAYMENT_WINDOW_SECS".into(),
                settings.fees.payment_window.as_secs().to_string(),
            ),
            (
                "WANGBAN_PAYMENT_REMINDER_SECS".into(),
                settings.fees.reminder_after.as_secs().to_string(),
            ),
            (
                "WANGBAN_PREFETCH".into(),
                settings.runtime.prefetch.to_string(),
            ),
            (
                "WANGBAN_CONCURRENCY".into(),
                settings.runtime.concurrency.to_string(),
            ),
            (
                "WANGBAN_DB_POOL_SIZE".into(),
                settings.db_pool_size.to_string(),
            ),
            (
                "WANGBAN_EFFECT_CONCURRENCY".into(),
                settings.runtime.effect_concurrency.to_string(),
            ),
            (
                "WANGBAN_EFFECT_LEASE_MS".into(),
                settings.runtime.effect_lease.as_millis().to_string(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        if let Some(retention) = settings.sim_ledger_retention {
            env.push((
                "WANGBAN_SIM_LEDGER_SECS".into(),
                retention.as_secs().to_string(),
            ));
        }
        if let Some(ca) = &settings.amqp_ca_file {
            env.push(("WANGBAN_AMQP_CA_FILE".into(), ca.display().to_string()));
        }
        if let Some(file) = &settings.amqp_password_file {
            env.push(("AMQP_PASSWORD_FILE".into(), file.display().to_string()));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log_dir =
            std::env::temp_dir().join(format!("wangban-workers-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&log_dir)?;
        let mut w = WorkerProcesses {
            binary: binary.to_owned(),
            env,
            procs: Vec::new(),
            log_dir,
            spawned: 0,
        };
        for worker in crate::pipeline::WORKERS {
            for _ in 0..replicas {
                w.spawn(worker)?;
            }
        }
        Ok(w)
    }

    fn spawn(&mut self, worker: &str) -> std::io::Result<()> {
        self.spawned += 1;
        let log =
            std::fs::File::create(self.log_dir.join(format!("{worker}-{}.log", self.spawned)))?;
        // The OS picks the port; the process writes it down, so that its /metrics can be read.
        let addr = self.log_dir.join(format!("{worker}-{}.addr", self.spawned));
        let child = Command::new(&self.binary)
            .args(["serve", "--workers", worker, "--http-addr", "127.0.0.1:0"])
            .env("WANGBAN_HTTP_ADDR_FILE", &addr)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.procs.push((worker.to_owned(), child, addr));
        Ok(())
    }

    /// SIGKILLs the process at `index % count` and starts a new one of the same worker.
    pub fn kill_and_restart(&mut self, index: usize) -> std::io::Result<String> {
        let i = index % self.procs.len();
        let (worker, mut child, _) = self.procs.remove(i);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        self.spawn(&worker)?;
        Ok(worker)
    }

    /// How many processes exited on their own (crashed).
    pub fn exited(&mut self) -> usize {
        self.procs
            .iter_mut()
            .map(|(_, c, _)| c.try_wait())
            .filter(|s| matches!(s, Ok(Some(_))))
            .count()
    }

    /// Each process's worker and process id.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(w, c, _)| (w.clone(), c.id()))
            .collect()
    }

    /// Each process's worker, process id and HTTP address (health, metrics); an error if a
    /// process has not written its address within 10 s.
    pub fn addresses(&self) -> std::io::Result<Vec<(String, u32, String)>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut out = Vec::new();
        for (w, c, file) in &self.procs {
            let addr = loop {
                match std::fs::read_to_string(file) {
                    Ok(a) => break a,
                    Err(e) if std::time::Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            };
            out.push((w.clone(), c.id(), addr));
        }
        Ok(out)
    }

    /// Where the processes' logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Stops every process with SIGTERM (graceful: in-flight work finishes) and waits.
    pub fn stop(mut self) {
        for (_, c, _) in &mut self.procs {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for (_, c, _) in &mut self.procs {
            let _ = c.wait();
        }
        self.procs.clear();
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for (_, c, _) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
