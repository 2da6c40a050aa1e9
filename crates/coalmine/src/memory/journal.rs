//! The record the in-memory adapters keep of what they were asked to change, and the
//! lock they share.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The calls that changed something, in the order they were made, as one line each
/// (`deploy ai-model-config-v8 with guardrails`, `trip coalmine-tripwire-x`, ...).
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn record(&self, entry: String) {
        lock(&self.0).push(entry);
    }

    pub fn entries(&self) -> Vec<String> {
        lock(&self.0).clone()
    }
}

/// A test that panicked while holding a lock leaves its state as it was: still worth
/// reading, and no reason to panic again.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
