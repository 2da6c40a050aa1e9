//! CloudWatch alarms in memory: states, `coalmine:target` tags, and coalmine's
//! tripwires.

use std::collections::HashMap;
use std::sync::Mutex;

use super::journal::{lock, Journal};
use crate::domain::error::{Error, Result};
use crate::domain::event::{AlarmState, Confirmation};
use crate::ports::{AlarmSource, Tripwires};

#[derive(Default)]
pub struct Alarms {
    /// `coalmine:target` tag values by alarm ARN.
    pub tags: HashMap<String, String>,
    /// Every tag lookup fails (throttled) when set.
    pub fail: bool,
    /// Tag lookups made.
    pub calls: Mutex<usize>,
    /// Alarm states by name; a name not here does not exist.
    pub states: Mutex<HashMap<String, AlarmState>>,
    /// Alarms that went to ALARM and have left it since (their history says so).
    pub fired_before: Mutex<Vec<String>>,
    pub journal: Journal,
}

impl Alarms {
    /// These alarms exist, in these states.
    pub fn with(states: impl IntoIterator<Item = (String, AlarmState)>) -> Self {
        let alarms = Alarms::default();
        lock(&alarms.states).extend(states);
        alarms
    }

    /// Records its changes in `journal`, beside the other adapters'.
    pub fn journaled(self, journal: &Journal) -> Self {
        Alarms { journal: journal.clone(), ..self }
    }

    pub fn set(&self, name: &str, state: AlarmState) {
        lock(&self.states).insert(name.to_owned(), state);
    }

    pub fn state(&self, name: &str) -> Option<AlarmState> {
        lock(&self.states).get(name).copied()
    }
}

impl AlarmSource for Alarms {
    async fn target_tag(&self, alarm_arn: &str) -> Result<Option<String>> {
        *lock(&self.calls) += 1;
        if self.fail {
            return Err(Error::Service {
                operation: "cloudwatch:ListTagsForResource",
                detail: "throttled".into(),
                retryable: true,
            });
        }
        Ok(self.tags.get(alarm_arn).cloned())
    }

    async fn states(&self, names: &[String]) -> Result<Vec<(String, AlarmState)>> {
        let states = lock(&self.states);
        Ok(names.iter().filter_map(|n| states.get(n).map(|s| (n.clone(), *s))).collect())
    }

    async fn confirm(&self, name: &str, _entered_at: &str) -> Result<Confirmation> {
        if self.fail {
            return Err(Error::Service {
                operation: "cloudwatch:DescribeAlarms",
                detail: "throttled".into(),
                retryable: true,
            });
        }
        Ok(match self.state(name) {
            None => Confirmation::NoSuchAlarm,
            Some(AlarmState::Alarm) => Confirmation::InAlarm,
            Some(_) if lock(&self.fired_before).iter().any(|n| n == name) => Confirmation::FiredThen,
            Some(state) => Confirmation::NotFired(state),
        })
    }
}

impl Tripwires for Alarms {
    async fn ensure_tripwire(&self, alarm: &str, _endpoint: &str) -> Result<()> {
        lock(&self.states).entry(alarm.to_owned()).or_insert(AlarmState::Ok);
        self.journal.record(format!("ensure_tripwire {alarm}"));
        Ok(())
    }

    async fn trip(&self, alarm: &str) -> Result<()> {
        self.set(alarm, AlarmState::Alarm);
        self.journal.record(format!("trip {alarm}"));
        Ok(())
    }
}
