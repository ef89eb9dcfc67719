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
use wangban_store::{Office, Reviewer, Store, StoreError};

/// The parsed, checked reviewers file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeskFile {
    pub offices: Vec<Office>,
    pub reviewers: Vec<Reviewer>,
}

/// The SHA-256 (hex) of a bearer token, as the reviewers file and the store keep it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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
        let mut offices = HashSet::new();
        let mut districts = HashSet::new();
        for o in &self.offices {
            if o.id.is_empty() || !offices.insert(o.id.as_str()) {
                return Err(format!("office `{}` is empty or listed twice", o.id));
            }
            if o.districts.is_empty() {
                return Err(format!("office `{}` serves no district", o.id));
            }
            for d in &o.districts {
                if !(2..=6).contains(&d.len()) || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "office `{}`: district `{d}` is not a 2–6 digit code",
                        o.id
                    ));
                }
                if !districts.insert(d.as_str()) {
                    return Err(format!("district `{d}` is served by two offices"));
                }
            }
        }
        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        for r in &self.reviewers {
            if r.id.is_empty() || !ids.insert(r.id.as_str()) {
                return Err(format!("reviewer `{}` is empty or listed twice", r.id));
            }
            let t = &r.token_sha256;
            if t.len() != 64
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!(
                    "reviewer `{}`: token_sha256 must be 64 lower-case hex digits",
                    r.id
                ));
            }
            if !tokens.insert(t.as_str()) {
                return Err(format!("reviewer `{}` shares a token with another", r.id));
            }
            if r.offices.is_empty() && r.supervises.is_empty() {
                return Err(format!("reviewer `{}` belongs to no office", r.id));
            }
            for o in r.offices.iter().chain(&r.supervises) {
                if !offices.contains(o.as_str()) {
                    return Err(format!("reviewer `{}`: unknown office `{o}`", r.id));
                }
            }
        }
        Ok(())
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
                store.load_desk(&desk.offices, &desk.reviewers).await?;
                tracing::info!(
                    offices = desk.offices.len(),
                    reviewers = desk.reviewers.len(),
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
}
