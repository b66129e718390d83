//! Crash points for tests of crash safety.
//!
//! `CAIRN_FAILPOINT=NAME` or `NAME:N` makes the process abort, as abruptly as
//! SIGKILL, the first (or N-th) time it reaches the point named NAME. Tests
//! use it to interrupt prune between any two of its writes and deletions.
//! Without the variable a failpoint costs one environment lookup.

use std::sync::Mutex;

static HITS: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

/// Aborts the process if `CAIRN_FAILPOINT` names this point and hit count.
pub fn hit(name: &str) {
    let Ok(spec) = std::env::var("CAIRN_FAILPOINT") else {
        return;
    };
    let (wanted, nth) = match spec.split_once(':') {
        Some((wanted, nth)) => (wanted, nth.parse::<u32>().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if wanted != name {
        return;
    }
    let count = match HITS.lock() {
        Ok(mut hits) => match hits.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                hits.push((name.to_string(), 1));
                1
            }
        },
        Err(_) => 1,
    };
    if count == nth {
        eprintln!("cairn: failpoint {name}:{nth} reached; aborting");
        std::process::abort();
    }
}
