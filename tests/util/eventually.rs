//! Waiting for an event, not for a clock: poll what the test can observe
//! (a `Stats` counter, a log line, a process's exit) with a short backoff
//! until it holds, and fail — saying what was awaited and what was last
//! seen — only after a deadline no healthy run comes near ([`TIMEOUT`]).
//!
//! Shared by the library's tests (`tests/util`) and the command's
//! (`cli/tests/util` includes this file).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// The pause after the `n`th look: 1, 2, 4, 8 ms, then 10 ms each.
fn backoff(n: u32) -> Duration {
    Duration::from_millis((1u64 << n.min(4)).min(10))
}

/// Polls `cond` until it holds; panics with "timed out waiting for WHAT"
/// after [`TIMEOUT`].
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    let mut n = 0;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {TIMEOUT:?} waiting for {what}");
        std::thread::sleep(backoff(n));
        n += 1;
    }
}

/// Polls `observe` until what it returns `holds`, and returns that value;
/// panics after [`TIMEOUT`] with WHAT and the last value observed.
#[track_caller]
pub fn eventually_value<T: Debug>(what: &str, mut observe: impl FnMut() -> T, mut holds: impl FnMut(&T) -> bool) -> T {
    let deadline = Instant::now() + TIMEOUT;
    let mut n = 0;
    loop {
        let value = observe();
        if holds(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {TIMEOUT:?} waiting for {what}; last observed: {value:?}");
        std::thread::sleep(backoff(n));
        n += 1;
    }
}
