//! Retention of the uploads: once retention has erased a case's personal fields
//! (`Store::erase_expired`), its materials are erased from the materials store too — all but
//! those a case whose personal data is still kept names as well (the same photo uploaded again).
//! The store is changed first, then the case is marked: a crash between the two erases again,
//! which changes nothing.

use wangban_materials::MaterialStore;
use wangban_store::Store;

/// What a pass over the uploads did (or, dry, would do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaterialsErased {
    /// Cases whose materials were erased.
    pub cases: u64,
    /// Files erased (a file another kept case names is not).
    pub files: u64,
}

/// Erases the uploads of every case whose personal data retention erased.
pub async fn erase_materials(
    store: &Store,
    materials: &dyn MaterialStore,
    dry_run: bool,
) -> anyhow::Result<MaterialsErased> {
    let mut out = MaterialsErased::default();
    loop {
        let due = store.materials_to_erase(100).await?;
        if due.is_empty() || dry_run {
            out.cases += due.len() as u64;
            return Ok(out);
        }
        for (case, names) in due {
            let mut files = 0;
            for name in &names {
                if wangban_materials::checked_name(name).is_err()
                    || store.material_in_use(name).await?
                {
                    continue;
                }
                materials
                    .delete(name)
                    .await
                    .map_err(|e| anyhow::anyhow!("erasing a material of {case}: {e}"))?;
                files += 1;
            }
            store.materials_erased(&case, files).await?;
            out.cases += 1;
            out.files += files as u64;
        }
    }
}

/// The checker's part for the uploads: every case that passed intake names materials the store
/// has, unless retention erased them.
pub async fn check_materials(
    store: &Store,
    materials: &dyn MaterialStore,
) -> anyhow::Result<Vec<String>> {
    let mut violations = Vec::new();
    for (case, state, erased, names) in store.cases_materials().await? {
        if erased || matches!(state.as_str(), "submitted" | "rejected") {
            continue;
        }
        for name in names {
            let there = materials.exists(&name).await.map_err(|e| {
                anyhow::anyhow!(
                    "asking the {} for {case}'s materials: {e}",
                    materials.describe()
                )
            })?;
            if !there {
                violations.push(format!(
                    "{case}: material {name} is not in the {} (and retention did not erase it)",
                    materials.describe()
                ));
            }
        }
    }
    Ok(violations)
}
