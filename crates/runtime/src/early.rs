//! When this process first put back each early event: an event that arrived before what it
//! follows is put back behind it until it has waited [`crate::RuntimeConfig::early_wait`] *from
//! then*. Counted from its creation instead, an event queued behind a deep backlog for longer than
//! that was dead-lettered at its first delivery, although what it follows was right behind it
//! (a 100,000-case benchmark dead-lettered 7,185 answers so).
//!
//! An event put back by one replica may come back to another, which starts its own count: a
//! stuck event is dead-lettered at the latest after `early_wait` on each replica.

use std::collections::HashMap;
use std::sync::Mutex;

/// Events found early and put back, with the clock's time (ms) of the first time.
#[derive(Default)]
pub(crate) struct Early {
    since: Mutex<HashMap<String, i64>>,
}

/// Entries older than this are forgotten (the event went to another replica, or was handled in
/// a batch that did not tell us); forgetting one only restarts its count.
const FORGET_AFTER_MS: i64 = 3_600_000;

impl Early {
    /// How long (ms) `event` has been early here: 0 the first time.
    pub(crate) fn waited(&self, event: &str, now_ms: i64) -> i64 {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if since.len() >= 1024 && since.len().is_power_of_two() {
            since.retain(|_, first| now_ms - *first < FORGET_AFTER_MS);
        }
        now_ms - *since.entry(event.to_owned()).or_insert(now_ms)
    }

    /// `event` is no longer early: handled, refused or dead-lettered.
    pub(crate) fn forget(&self, event: &str) {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if !since.is_empty() {
            since.remove(event);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.since.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_counts_from_the_first_time_an_event_is_put_back() {
        let early = Early::default();
        assert_eq!(early.waited("e1", 1_000), 0);
        assert_eq!(early.waited("e2", 5_000), 0);
        assert_eq!(early.waited("e1", 121_000), 120_000);
        early.forget("e1");
        assert_eq!(early.waited("e1", 200_000), 0, "forgotten: counted afresh");
        early.forget("e1");
        early.forget("e2");
        assert_eq!(early.len(), 0);
    }

    #[test]
    fn entries_older_than_an_hour_are_forgotten() {
        let early = Early::default();
        for n in 0..1023 {
            early.waited(&format!("old{n}"), 0);
        }
        // 1,024 entries: the next insertion forgets those more than an hour old.
        early.waited("new", FORGET_AFTER_MS + 1);
        early.waited("newer", FORGET_AFTER_MS + 2);
        assert_eq!(early.len(), 2);
    }
}
