//! The reviewers file: the exit-entry offices, the hukou districts each serves, and the reviewers
//! of each (with their supervisors). JSON; loaded into the store when `wangban serve` or a review
//! worker starts, so the file stays the source and the database its copy.
//!
//! ```json
//! {"offices": [{"id": "beijing", "name": "北京市公安局出入境管理总队", "districts": ["1101"]}],
//!  "reviewers": [{"id": "bj-li", "name": "李审核", "token_sha256": "<64 hex>",
//!                 "offices": ["beijing"], "supervises": []}]}
//! ```
//! A reviewer's bearer token is never in the file: only its SHA-256 (`wangban reviewer-token`
//! prints a fresh token and its digest).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use wangban_store::{Hall, HallStaff, Office, Reviewer, Store, StoreError};

/// The parsed, checked reviewers file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeskFile {
    pub offices: Vec<Office>,
    pub reviewers: Vec<Reviewer>,
    /// The pickup halls (optional): with them the hall desk is staffed, without them the hall
    /// is simulated.
    #[serde(default)]
    pub halls: Vec<Hall>,
    /// The halls' staff.
    #[serde(default)]
    pub hall_staff: Vec<HallStaff>,
}

/// The SHA-256 (hex) of a bearer token, as the reviewers file and the store keep it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks places (offices or halls): ids unique, each serving 2–6 digit districts that no other
/// place of the kind serves. Returns their ids.
fn check_places<'a>(
    kind: &str,
    places: impl Iterator<Item = (&'a str, &'a [String])>,
) -> Result<HashSet<&'a str>, String> {
    let mut ids = HashSet::new();
    let mut districts = HashSet::new();
    for (id, served) in places {
        if id.is_empty() || !ids.insert(id) {
            return Err(format!("{kind} `{id}` is empty or listed twice"));
        }
        if served.is_empty() {
            return Err(format!("{kind} `{id}` serves no district"));
        }
        for d in served {
            if !(2..=6).contains(&d.len()) || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{kind} `{id}`: district `{d}` is not a 2–6 digit code"
                ));
            }
            if !districts.insert(d.as_str()) {
                return Err(format!("district `{d}` is served by two {kind}s"));
            }
        }
    }
    Ok(ids)
}

/// Checks a person (reviewer or hall staff): a unique id, a well-formed token digest shared
/// with nobody, and only known places.
fn check_person<'a>(
    (kind, place): (&str, &str),
    (id, token): (&'a str, &'a str),
    places: &[&String],
    known: &HashSet<&str>,
    ids: &mut HashSet<&'a str>,
    tokens: &mut HashSet<&'a str>,
) -> Result<(), String> {
    if id.is_empty() || !ids.insert(id) {
        return Err(format!("{kind} `{id}` is empty or listed twice"));
    }
    if token.len() != 64
        || !token
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(format!(
            "{kind} `{id}`: token_sha256 must be 64 lower-case hex digits"
        ));
    }
    if !tokens.insert(token) {
        return Err(format!("{kind} `{id}` shares a token with another"));
    }
    if places.is_empty() {
        return Err(format!("{kind} `{id}` belongs to no {place}"));
    }
    for p in places {
        if !known.contains(p.as_str()) {
            return Err(format!("{kind} `{id}`: unknown {place} `{p}`"));
        }
    }
    Ok(())
}

impl DeskFile {
    /// Parses and checks the file; the error names the first problem.
    pub fn parse(text: &str) -> Result<DeskFile, String> {
        let file: DeskFile =
            serde_json::from_str(text).map_err(|e| format!("reviewers file: {e}"))?;
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        let offices = check_places(
            "office",
            self.offices
                .iter()
                .map(|o| (o.id.as_str(), &o.districts[..])),
        )?;
        let halls = check_places(
            "hall",
            self.halls.iter().map(|h| (h.id.as_str(), &h.districts[..])),
        )?;
        let mut tokens = HashSet::new();
        let mut ids = HashSet::new();
        for r in &self.reviewers {
            let places: Vec<&String> = r.offices.iter().chain(&r.supervises).collect();
            let who = (r.id.as_str(), r.token_sha256.as_str());
            check_person(
                ("reviewer", "office"),
                who,
                &places,
                &offices,
                &mut ids,
                &mut tokens,
            )?;
        }
        let mut ids = HashSet::new();
        for m in &self.hall_staff {
            let places: Vec<&String> = m.halls.iter().collect();
            let who = (m.id.as_str(), m.token_sha256.as_str());
            check_person(
                ("hall staff", "hall"),
                who,
                &places,
                &halls,
                &mut ids,
                &mut tokens,
            )?;
        }
        Ok(())
    }

    /// Loads the file into `store`: offices and reviewers, halls and their staff.
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        store.load_desk(&self.offices, &self.reviewers).await?;
        store.load_halls(&self.halls, &self.hall_staff).await
    }
}

/// A reviewers file watched for changes: read on every tick of the review worker and loaded into
/// the store when its content differs from what was loaded last. A file that no longer parses is
/// reported once and the desk keeps what it had.
pub struct Watched {
    path: PathBuf,
    /// Digest of the content last seen (loaded, or refused).
    last: Mutex<Option<[u8; 32]>>,
}

impl Watched {
    /// Watches `path`, whose current content counts as loaded (the process loaded it at start).
    pub fn new(path: PathBuf) -> Watched {
        let last = std::fs::read(&path).ok().map(|b| Sha256::digest(&b).into());
        Watched {
            path,
            last: Mutex::new(last),
        }
    }

    /// Reloads the file into `store` if its content changed; returns whether it did.
    pub async fn reload_if_changed(&self, store: &Store) -> Result<bool, StoreError> {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Ok(false); // a ConfigMap being swapped, say: try again on the next tick
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if *self.last.lock().expect("watch lock") == Some(digest) {
            return Ok(false);
        }
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| format!("reviewers file: {e}"))
            .and_then(DeskFile::parse);
        let loaded = match parsed {
            Ok(desk) => {
                desk.load(store).await?;
                tracing::info!(
                    offices = desk.offices.len(),
                    reviewers = desk.reviewers.len(),
                    halls = desk.halls.len(),
                    hall_staff = desk.hall_staff.len(),
                    "reviewers file changed; reloaded"
                );
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "reviewers file changed but is not valid; the desk keeps what it had");
                false
            }
        };
        *self.last.lock().expect("watch lock") = Some(digest);
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(reviewer_offices: &[&str], district: &str) -> String {
        json!({"offices": [{"id": "bj", "name": "北京", "districts": [district]},
                           {"id": "sh", "name": "上海", "districts": ["3101"]}],
               "reviewers": [{"id": "r1", "name": "甲", "token_sha256": token_digest("t1"),
                              "offices": reviewer_offices}]})
        .to_string()
    }

    #[test]
    fn a_good_file_parses_and_offices_are_found_by_the_longest_prefix() {
        let desk = DeskFile::parse(&file(&["bj"], "1101")).unwrap();
        assert_eq!(desk.reviewers[0].offices, ["bj"]);
        let mut offices = desk.offices.clone();
        offices.push(Office {
            id: "chaoyang".into(),
            name: "朝阳".into(),
            districts: vec!["110105".into()],
        });
        let of = |r| wangban_store::office_for(&offices, r).map(|o| o.id.as_str());
        assert_eq!(of("110105"), Some("chaoyang"));
        assert_eq!(of("110101"), Some("bj"));
        assert_eq!(of("310115"), Some("sh"));
        assert_eq!(of("440305"), None);
    }

    #[test]
    fn problems_are_named() {
        let unknown = DeskFile::parse(&file(&["gz"], "1101")).unwrap_err();
        assert!(unknown.contains("unknown office `gz`"), "{unknown}");
        let bad = DeskFile::parse(&file(&["bj"], "11x1")).unwrap_err();
        assert!(bad.contains("district `11x1`"), "{bad}");
        let twice = DeskFile::parse(&file(&["bj"], "3101")).unwrap_err();
        assert!(twice.contains("served by two offices"), "{twice}");
        let raw = file(&["bj"], "1101").replace(&token_digest("t1"), "not-a-digest");
        assert!(DeskFile::parse(&raw).unwrap_err().contains("token_sha256"));
    }

    #[test]
    fn halls_and_their_staff_are_checked_like_offices_and_reviewers() {
        let with = |halls: serde_json::Value, staff: serde_json::Value| {
            let mut f: serde_json::Value = serde_json::from_str(&file(&["bj"], "1101")).unwrap();
            f["halls"] = halls;
            f["hall_staff"] = staff;
            DeskFile::parse(&f.to_string())
        };
        let hall = json!([{"id": "dc", "name": "东城大厅", "districts": ["110101"]}]);
        let staff = |token: &str, halls: serde_json::Value| json!([{"id": "w1", "name": "王", "token_sha256": token_digest(token), "halls": halls}]);
        let desk = with(hall.clone(), staff("w", json!(["dc"]))).unwrap();
        assert_eq!(desk.halls[0].id, "dc");
        assert_eq!(desk.hall_staff[0].halls, ["dc"]);
        let e = with(hall.clone(), staff("w", json!(["xc"]))).unwrap_err();
        assert!(e.contains("hall staff `w1`: unknown hall `xc`"), "{e}");
        let e = with(hall.clone(), staff("t1", json!(["dc"]))).unwrap_err();
        assert!(e.contains("shares a token"), "{e}");
        let e = with(hall.clone(), staff("w", json!([]))).unwrap_err();
        assert!(e.contains("belongs to no hall"), "{e}");
        let twice = json!([{"id": "dc", "name": "东城", "districts": ["110101"]},
                           {"id": "dc2", "name": "东城二", "districts": ["110101"]}]);
        let e = with(twice, json!([])).unwrap_err();
        assert!(e.contains("served by two halls"), "{e}");
        // Halls are optional: a file without them is the desk of before.
        assert!(
            DeskFile::parse(&file(&["bj"], "1101"))
                .unwrap()
                .halls
                .is_empty()
        );
    }
}
