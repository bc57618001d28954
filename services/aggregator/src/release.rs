//! Handing memory the fold gave up back to the system.
//!
//! A crowd that came and went leaves the allocator with free pages it keeps (glibc's malloc
//! keeps them in its arenas); the process would stay at its high-water mark for ever. After a
//! sweep forgot many users or shrank a table, the aggregator asks the allocator to return its
//! free pages (`malloc_trim`), at most once per [`MIN_INTERVAL`], off the async workers. A
//! request that comes within the interval is kept and runs at a later tick.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two releases: a trim walks every arena.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Decides when a release runs: once one was asked for, and none ran within the interval.
#[derive(Debug, Default)]
pub struct Governor {
    last: Option<Instant>,
    pending: bool,
}

impl Governor {
    /// At a tick at `now` (`asked`: the tick freed memory): whether a release runs now.
    pub fn admit(&mut self, asked: bool, now: Instant) -> bool {
        self.pending |= asked;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= MIN_INTERVAL);
        let runs = self.pending && due;
        if runs {
            self.last = Some(now);
            self.pending = false;
        }
        runs
    }
}

static GOVERNOR: Mutex<Governor> = Mutex::new(Governor {
    last: None,
    pending: false,
});

/// At every tick of a partition: asks the allocator to return free memory to the system if
/// this or an earlier tick freed some and no release ran within the interval.
pub fn release_freed_memory(asked: bool, now: Instant) {
    let admitted = GOVERNOR
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(asked, now);
    if admitted {
        metrics::counter!("presence_memory_releases_total").increment(1);
        // A trim of a large heap takes milliseconds: not on an async worker.
        tokio::task::spawn_blocking(trim);
    }
}

/// Large buffers (a pull batch, a snapshot's encoding) are given their own mappings and go
/// back to the system when freed: glibc otherwise raises its threshold after the first such
/// free and carves the next ones out of the arenas, where they fragment what a crowd leaves.
/// Two arenas for the process's threads are enough for a fold and spread less.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    // SAFETY: mallopt only sets the allocator's parameters; called before the fold allocates
    // its tables, and valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own arenas and returns their free pages;
    // it takes no pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_runs_at_most_once_per_interval_and_a_request_within_it_is_kept() {
        let mut g = Governor::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(!g.admit(false, t0), "nothing asked");
        assert!(g.admit(true, at(1)));
        assert!(!g.admit(false, at(1_000)));
        // Asked within the interval: kept, and run at the first tick past it.
        assert!(!g.admit(true, at(2_000)));
        assert!(!g.admit(false, at(5_000)));
        assert!(g.admit(false, at(5_001)));
        assert!(!g.admit(false, at(20_000)), "done: nothing pending");
    }
}
