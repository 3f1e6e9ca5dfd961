//! Errors across the C ABI.
//!
//! Every exported function returns an `i64`: a value `>= 0` is its result
//! (a handle id, a count, or 0), a value `< 0` is `-id` of an error whose
//! message `selfsup_last_error(id, …)` returns. Keying messages by id (not
//! by thread) matters because Deno's non-blocking calls run on whichever
//! pool thread is free, so a thread-local "last error" would be read on the
//! wrong thread.
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

static NEXT_ERROR: AtomicI64 = AtomicI64::new(1);
static MESSAGES: Mutex<Option<HashMap<i64, String>>> = Mutex::new(None);
/// Messages kept for a caller that never reads them; old ones are dropped.
const MAX_KEPT: usize = 256;

fn remember(msg: String) -> i64 {
    let id = NEXT_ERROR.fetch_add(1, Ordering::Relaxed);
    let mut guard = MESSAGES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_KEPT {
        let oldest = *map.keys().min().unwrap_or(&0);
        map.remove(&oldest);
    }
    map.insert(id, msg);
    id
}

/// Takes (and forgets) the message of error `id`; id 0 means the newest.
pub fn take_message(id: i64) -> Option<String> {
    let mut guard = MESSAGES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    let id = if id == 0 { *map.keys().max()? } else { id };
    map.remove(&id)
}

/// One line: libtorch messages carry a C++ backtrace after the first
/// line, which a user should not see.
pub fn one_line(err: &anyhow::Error) -> String {
    first_line(&format!("{err:#}"))
}

/// The first non-empty line of `text`, trimmed.
pub fn first_line(text: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim();
    first.trim_end_matches(['.', ' ']).to_string()
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f` so that neither an error nor a panic crosses the C ABI.
pub fn guard<F: FnOnce() -> anyhow::Result<i64>>(f: F) -> i64 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => -remember(one_line(&e)),
        Err(p) => -remember(format!("internal error (panic): {}", panic_text(p))),
    }
}

/// Catches a panic inside a worker thread as an ordinary error.
pub fn catch<R, F: FnOnce() -> anyhow::Result<R>>(f: F) -> anyhow::Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(anyhow::anyhow!("internal error (panic): {}", panic_text(p))),
    }
}
