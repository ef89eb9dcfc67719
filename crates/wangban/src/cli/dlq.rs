//! `wangban dlq`: dead letters listed and replayed.

use super::{Broker, DEFAULT_DATABASE, Database, existing_store, init_logs, settings};
use std::process::ExitCode;
use wangban::pipeline::Pipeline;

/// `dlq list`.
pub async fn list(
    worker: Option<String>,
    json: bool,
    database: Database,
) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let (_, store) = existing_store(&database).await?;
    let list = store.dead_letters(worker.as_deref()).await?;
    if json {
        for d in &list {
            println!("{}", serde_json::to_string(d)?);
        }
    } else {
        print!("{}", wangban::show::dead_letters(&list));
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq replay`.
pub async fn replay(
    id: Option<i64>,
    all: bool,
    worker: Option<String>,
    broker: Broker,
) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let s = settings(&broker.services()?, DEFAULT_DATABASE)?;
    let pipeline = Pipeline::connect(&s).await?;
    let ids = if all {
        pipeline
            .runtime
            .store
            .unreplayed_dead_letters(worker.as_deref())
            .await?
    } else {
        id.into_iter().collect()
    };
    let mut missing = 0;
    for id in ids {
        if pipeline
            .runtime
            .replay_dead_letter(id)
            .await
            .map_err(anyhow::Error::msg)?
        {
            println!("replayed {id}");
        } else {
            eprintln!("wangban: no unreplayed dead letter {id}");
            missing += 1;
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
