//! Claims on targets in memory, and which executions are still running.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::journal::lock;
use crate::domain::error::Result;
use crate::ports::Claims as ClaimsPort;

#[derive(Default)]
pub struct Claims {
    /// The execution holding each key.
    pub held: Mutex<HashMap<String, String>>,
    /// Executions that have ended: their claims may be taken over.
    pub ended: Mutex<HashSet<String>>,
}

impl Claims {
    pub fn end(&self, execution: &str) {
        lock(&self.ended).insert(execution.to_owned());
    }
}

impl ClaimsPort for Claims {
    async fn claim(&self, key: &str, execution: &str) -> Result<Option<String>> {
        let mut held = lock(&self.held);
        match held.get(key) {
            Some(holder) if holder != execution && !lock(&self.ended).contains(holder) => Ok(Some(holder.clone())),
            _ => {
                held.insert(key.to_owned(), execution.to_owned());
                Ok(None)
            }
        }
    }
}
