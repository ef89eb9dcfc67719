//! The commands that read the store: `case show`, `audit verify`, `verify`; and `retention run`.

use super::{Database, existing_store, init_logs};
use std::process::ExitCode;

/// `case show`.
pub async fn case_show(id: String, database: Database) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let (_, store) = existing_store(&database).await?;
    let id = if id == "-" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        id
    };
    if wangban::show::case(&store, &id).await? {
        Ok(ExitCode::SUCCESS)
    } else {
        let shown = if wangban_domain::id_number::IdNumber::parse(&id).is_ok() {
            wangban_domain::id_number::mask(&id)
        } else {
            id
        };
        eprintln!("wangban: no case {shown}");
        Ok(ExitCode::from(1))
    }
}

/// `audit verify`.
pub async fn audit_verify(database: Database) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let (_, store) = existing_store(&database).await?;
    Ok(if wangban::show::audit(&store).await? {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `verify`.
pub async fn verify(database: Database, json: bool, grace_secs: u64) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let (s, store) = existing_store(&database).await?;
    let queues = wangban::pipeline::worker_queues(&s);
    let mut v =
        wangban::verify::check(&store, &queues, std::time::Duration::from_secs(grace_secs)).await?;
    if let Some(materials) = &s.materials {
        v.violations
            .extend(wangban::retention::check_materials(&store, materials.0.as_ref()).await?);
    }
    if json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "checked {} cases, {} audit records, {} effects, {} events; outbox backlog {}; effects pending {}, dead {}; unreplayed dead letters {}",
            v.cases,
            v.audit_records,
            v.effects,
            v.events_accounted,
            v.outbox_backlog,
            v.effects_pending,
            v.effects_dead,
            v.unreplayed_dead_letters
        );
        match v.violations.first() {
            None => println!("no violations"),
            Some(first) => println!("{} violations; first: {first}", v.violations.len()),
        }
    }
    Ok(if v.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `retention run`.
pub async fn retention(database: Database, dry_run: bool) -> anyhow::Result<ExitCode> {
    init_logs("warn");
    let (s, store) = existing_store(&database).await?;
    let erased = store.erase_expired(s.retention, dry_run).await?;
    let before = chrono::DateTime::from_timestamp_millis(erased.closed_before)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    println!(
        "{} the personal data of {} cases closed before {before} and the payloads of {} dead letters",
        if dry_run { "would erase" } else { "erased" },
        erased.cases,
        erased.dead_letters
    );
    if let Some(materials) = &s.materials {
        let m = wangban::retention::erase_materials(&store, materials.0.as_ref(), dry_run).await?;
        if dry_run {
            println!(
                "would erase the uploaded materials of {} more cases",
                m.cases
            );
        } else {
            println!(
                "erased {} uploaded files of {} cases from the {}",
                m.files,
                m.cases,
                materials.0.describe()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
