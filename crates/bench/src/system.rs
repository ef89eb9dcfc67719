//! What the benchmark reads off the machine: CPU time of the broker, the database and the worker
//! processes (from /proc), peak RSS, and a worker's /metrics.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CPU seconds used during a run, by party, and the wall time it spans.
#[derive(Clone, Debug, Default)]
pub struct CpuSplit {
    pub broker: f64,
    pub database: f64,
    pub workers: f64,
    pub wall: f64,
    pub cores: usize,
}

impl CpuSplit {
    pub fn minus(&self, before: &CpuSplit) -> CpuSplit {
        CpuSplit {
            broker: self.broker - before.broker,
            database: self.database - before.database,
            workers: self.workers - before.workers,
            wall: self.wall - before.wall,
            cores: self.cores,
        }
    }
}

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
const TICKS_PER_S: f64 = 100.0;

/// user + system CPU seconds of a process (children that exited included), or 0 if it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(14) + tick(15) + tick(16) + tick(17)) / TICKS_PER_S
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// CPU seconds so far of the broker (Erlang VM), the database (every `postgres` process) and
/// the given worker processes (a pid listed twice counts once).
pub fn cpu_sample(workers: &[(String, u32)]) -> CpuSplit {
    let mut split = CpuSplit {
        wall: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..Default::default()
    };
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let name = comm(pid);
            if name == "beam.smp" || name == "erl_child_setup" || name == "epmd" {
                split.broker += cpu_seconds(pid);
            } else if name.starts_with("postgres") {
                split.database += cpu_seconds(pid);
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (_, pid) in workers {
        if seen.insert(*pid) {
            split.workers += cpu_seconds(*pid);
        }
    }
    split
}

/// Peak resident set size (VmHWM) of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `GET /metrics` of a `wangban serve` at `addr` (our own server: plain HTTP/1.0).
pub async fn scrape_metrics(addr: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{addr}/metrics: no HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{addr}/metrics answered {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_owned())
}
