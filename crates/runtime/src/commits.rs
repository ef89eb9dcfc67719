//! Commits of this process, by case: an event that arrived early — before the commit it
//! follows — waits for the next commit on its case instead of for a timer, so it is usually
//! tried again once, right after what it waits for, rather than several times on a guess.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Who is waiting for a commit on which case.
#[derive(Default)]
pub(crate) struct Commits {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Commits {
    /// Wakes whoever waits for a commit on `case` (a handler's transaction that stepped or
    /// changed it has just committed). Costs a map lookup when nobody waits.
    pub(crate) fn committed(&self, case: &str) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = waiting.get(case) {
            notify.notify_waiters();
        }
    }

    /// A watch on `case`'s commits, to take before an attempt: a commit between the attempt
    /// and the wait is not missed ([`Watch::wait`]).
    pub(crate) fn watch(self: &Arc<Self>, case: &str) -> Watch {
        let notify = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(case.to_owned())
            .or_default()
            .clone();
        Watch {
            commits: self.clone(),
            case: case.to_owned(),
            notify,
        }
    }
}

/// Registered interest in one case's next commit; forgotten when dropped.
pub(crate) struct Watch {
    commits: Arc<Commits>,
    case: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// The next commit on the case, registered now; await it (with a timeout) after the attempt.
    pub(crate) fn next(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiting = self
            .commits
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's own reference and this one: nobody else watches the case.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(&self.case);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_commit_after_the_watch_wakes_the_waiter_and_the_map_empties() {
        let commits = Arc::new(Commits::default());
        let watch = commits.watch("case_a");
        let next = watch.next();
        // Committed before the wait begins: not missed.
        commits.committed("case_a");
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("woken by the commit");
        // Another case's commit does not wake it.
        let next = watch.next();
        commits.committed("case_b");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), next)
                .await
                .is_err()
        );
        let second = commits.watch("case_a");
        drop(watch);
        assert_eq!(commits.waiting.lock().unwrap().len(), 1, "still watched");
        drop(second);
        assert!(commits.waiting.lock().unwrap().is_empty());
    }
}
