//! The one clock. Every "now" of wangban — store timestamps, event times, the review clock,
//! payment windows, the production promise, the SLA views — is read from a [`Clock`] handed down
//! from the process's settings; decisions take `now` as an argument and read no clock at all.
//!
//! A controlled clock keeps running but can be moved: tests of deadlines move it across a holiday
//! instead of sleeping, and `wangban demo` moves it past the production promise to show a late
//! order. Moving it forward makes every deadline that has come due fire on the next timer pass, as
//! if that much time had passed. The signatures exchanged with parties over HTTP use the wall
//! clock, not this one: their freshness window is agreed with the other side.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Now, for one process. Cheap to clone; clones of a controlled clock move together.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system clock; `None` for the system clock itself.
    offset: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `ms` (milliseconds since the Unix epoch) now and runs on from there.
    pub fn controlled(ms: i64) -> Clock {
        let clock = Clock {
            offset: Some(Arc::new(AtomicI64::new(0))),
        };
        clock.set(ms);
        clock
    }

    /// A controlled clock that reads the system's time until it is moved.
    pub fn controlled_now() -> Clock {
        Clock::controlled(system_ms())
    }

    /// Moves a controlled clock so that it reads `ms` now (it runs on from there).
    ///
    /// # Panics
    /// On the system clock: moving it would be a bug in the caller.
    pub fn set(&self, ms: i64) {
        self.offset
            .as_ref()
            .expect("only a controlled clock can be moved")
            .store(ms - system_ms(), Ordering::SeqCst);
    }

    /// Moves a controlled clock forward by `by`.
    ///
    /// # Panics
    /// On the system clock.
    pub fn advance(&self, by: Duration) {
        self.offset
            .as_ref()
            .expect("only a controlled clock can be moved")
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Whether this clock can be moved (not the system clock).
    pub fn is_controlled(&self) -> bool {
        self.offset.is_some()
    }

    /// Now, in milliseconds since the Unix epoch (the store's timestamps).
    pub fn now_ms(&self) -> i64 {
        system_ms() + self.offset.as_ref().map_or(0, |o| o.load(Ordering::SeqCst))
    }

    /// Now, as an instant.
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_else(Utc::now)
    }

    /// Today's date in Beijing, the calendar every working day of the policy is counted on.
    pub fn today(&self) -> NaiveDate {
        crate::application::beijing_date(self.now_ms())
    }
}

fn system_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controlled_clock_is_set_runs_on_and_moves_its_clones() {
        let at = DateTime::parse_from_rfc3339("2026-10-07T12:00:00+08:00")
            .unwrap()
            .timestamp_millis();
        let clock = Clock::controlled(at);
        let clone = clock.clone();
        let read = clone.now_ms();
        assert!(
            (at..at + 60_000).contains(&read),
            "{read} is not just after {at}"
        );
        assert_eq!(clone.today().to_string(), "2026-10-07");
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(clone.today().to_string(), "2026-10-08");
        assert!(clone.now_ms() >= read + 86_400_000);
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = Utc::now().timestamp_millis();
        let read = Clock::system().now_ms();
        assert!(read >= before && read < before + 60_000);
        assert!(!Clock::system().is_controlled());
    }

    #[test]
    #[should_panic(expected = "only a controlled clock")]
    fn the_system_clock_cannot_be_moved() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
