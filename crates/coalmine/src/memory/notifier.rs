//! SNS in memory: the messages sent, and publishes that fail first when asked.

use std::sync::Mutex;

use super::journal::{lock, Journal};
use crate::domain::error::{Error, Result};
use crate::ports::{Notification, Notifier, ATTR_EVENT, ATTR_TARGET};

#[derive(Default)]
pub struct Outbox {
    pub sent: Mutex<Vec<Notification>>,
    /// How many publishes fail before they start succeeding.
    pub failures_left: Mutex<usize>,
    pub attempts: Mutex<usize>,
    pub journal: Journal,
}

impl Outbox {
    pub fn failing(times: usize) -> Self {
        Outbox { failures_left: Mutex::new(times), ..Default::default() }
    }

    /// Records what it sends in `journal`, beside the other adapters' changes.
    pub fn journaled(self, journal: &Journal) -> Self {
        Outbox { journal: journal.clone(), ..self }
    }

    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    /// Each message's `event` and `target` attributes.
    pub fn events(&self) -> Vec<(String, String)> {
        let attr = |n: &Notification, key: &str| {
            n.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        lock(&self.sent).iter().map(|n| (attr(n, ATTR_EVENT), attr(n, ATTR_TARGET))).collect()
    }
}

impl Notifier for Outbox {
    async fn publish(&self, notification: &Notification) -> Result<()> {
        *lock(&self.attempts) += 1;
        let mut left = lock(&self.failures_left);
        if *left > 0 {
            *left -= 1;
            return Err(Error::Service {
                operation: "sns:Publish",
                detail: "service unavailable".into(),
                retryable: true,
            });
        }
        lock(&self.sent).push(notification.clone());
        self.journal.record(format!("publish {}", notification.subject));
        Ok(())
    }
}
