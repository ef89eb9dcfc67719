//! `wangban submit`: application files handed to intake as the portal does.

use super::{Broker, DEFAULT_DATABASE, init_logs, settings};
use std::path::PathBuf;
use std::process::ExitCode;
use wangban::pipeline::Pipeline;

pub async fn run(broker: Broker, files: Vec<PathBuf>, resubmit: bool) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let s = settings(&broker.services()?, DEFAULT_DATABASE)?;
    let pipeline = Pipeline::connect_as_portal(&s).await?;
    for f in files {
        let text = std::fs::read(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", f.display()))?;
        let case = pipeline.submit(&value, resubmit).await?;
        println!("{}\t{case}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
