//! Hand fakes of the ports for the use-case tests: in-memory state, call counters,
//! and switches for the failures a test wants.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::domain::error::{Error, Result};
use crate::domain::event::AlarmState;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::domain::split::Split;
use crate::domain::target::Target;
use crate::ports::{AlarmSource, MetricQuery, MetricSource, Notification, Notifier, TrafficRouter};

#[derive(Default)]
pub struct FakeRouter {
    pub splits: Mutex<HashMap<Target, Split>>,
    pub reads: Mutex<usize>,
    pub writes: Mutex<Vec<(Target, Split)>>,
    /// Errors returned, in order, by `write` for a target before it succeeds.
    pub write_failures: Mutex<HashMap<Target, VecDeque<Error>>>,
    /// Someone else's change applied between our read and our write, once per entry.
    pub interleaved: Mutex<HashMap<Target, VecDeque<Split>>>,
    /// Canary versions `check_canary` reports missing.
    pub missing_versions: Mutex<Vec<String>>,
    /// Targets whose read never answers.
    pub hanging_reads: Mutex<Vec<Target>>,
    revision: Mutex<u64>,
}

impl FakeRouter {
    pub fn with(splits: impl IntoIterator<Item = (Target, Split)>) -> Self {
        let router = FakeRouter::default();
        router.splits.lock().unwrap().extend(splits);
        router
    }

    pub fn split(&self, target: &Target) -> Split {
        self.splits.lock().unwrap()[target].clone()
    }

    pub fn write_count(&self) -> usize {
        self.writes.lock().unwrap().len()
    }

    fn next_revision(&self) -> Option<String> {
        let mut r = self.revision.lock().unwrap();
        *r += 1;
        Some(format!("rev-{r}"))
    }
}

pub fn lambda_split(stable: &str, canary: &str, weight: f64) -> Split {
    Split {
        stable: stable.into(),
        canary: Some(canary.into()),
        canary_weight: weight,
        revision: Some("rev-0".into()),
        stamp: None,
    }
}

impl TrafficRouter for FakeRouter {
    async fn read(&self, target: &Target) -> Result<Split> {
        *self.reads.lock().unwrap() += 1;
        if self.hanging_reads.lock().unwrap().contains(target) {
            std::future::pending::<()>().await;
        }
        self.splits
            .lock()
            .unwrap()
            .get(target)
            .cloned()
            .ok_or_else(|| Error::NotFound { target: target.clone(), detail: "no such alias".into() })
    }

    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> Result<Split> {
        if let Some(change) = self.interleaved.lock().unwrap().get_mut(target).and_then(VecDeque::pop_front) {
            let revision = self.next_revision();
            self.splits.lock().unwrap().insert(target.clone(), Split { revision, ..change });
        }
        if let Some(error) = self.write_failures.lock().unwrap().get_mut(target).and_then(VecDeque::pop_front) {
            return Err(error);
        }
        let mut splits = self.splits.lock().unwrap();
        let live =
            splits.get(target).ok_or_else(|| Error::NotFound { target: target.clone(), detail: "gone".into() })?;
        if live.revision != read.revision {
            return Err(Error::Conflict { target: target.clone(), detail: "revision mismatch".into() });
        }
        // As the adapters do: no stamp in the desired split leaves the live one.
        let stamp = desired.stamp.clone().or_else(|| live.stamp.clone());
        let written = Split { revision: self.next_revision(), stamp, ..desired.clone() };
        splits.insert(target.clone(), written.clone());
        self.writes.lock().unwrap().push((target.clone(), written.clone()));
        Ok(written)
    }

    async fn check_canary(&self, target: &Target, canary: &str) -> Result<()> {
        if self.missing_versions.lock().unwrap().iter().any(|v| v == canary) {
            return Err(Error::InvalidRelease(format!("canary_version: {target} has no version {canary}")));
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeNotifier {
    pub sent: Mutex<Vec<Notification>>,
    /// How many publishes fail before they start succeeding.
    pub failures_left: Mutex<usize>,
    pub attempts: Mutex<usize>,
}

impl FakeNotifier {
    pub fn failing(times: usize) -> Self {
        FakeNotifier { failures_left: Mutex::new(times), ..Default::default() }
    }

    pub fn events(&self) -> Vec<(String, String)> {
        let attr = |n: &Notification, key: &str| {
            n.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        self.sent.lock().unwrap().iter().map(|n| (attr(n, "event"), attr(n, "target"))).collect()
    }
}

impl Notifier for FakeNotifier {
    async fn publish(&self, notification: &Notification) -> Result<()> {
        *self.attempts.lock().unwrap() += 1;
        let mut left = self.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(Error::Aws { operation: "sns:Publish", detail: "service unavailable".into(), retryable: true });
        }
        self.sent.lock().unwrap().push(notification.clone());
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeAlarms {
    pub tags: HashMap<String, String>,
    pub fail: bool,
    pub calls: Mutex<usize>,
    pub states: Mutex<HashMap<String, AlarmState>>,
}

impl AlarmSource for FakeAlarms {
    async fn target_tag(&self, alarm_arn: &str) -> Result<Option<String>> {
        *self.calls.lock().unwrap() += 1;
        if self.fail {
            return Err(Error::Aws {
                operation: "cloudwatch:ListTagsForResource",
                detail: "throttled".into(),
                retryable: true,
            });
        }
        Ok(self.tags.get(alarm_arn).cloned())
    }

    async fn states(&self, names: &[String]) -> Result<Vec<(String, AlarmState)>> {
        let states = self.states.lock().unwrap();
        Ok(names.iter().filter_map(|n| states.get(n).map(|s| (n.clone(), *s))).collect())
    }
}

/// Serves whatever snapshot the test put in, and remembers the queries.
#[derive(Default)]
pub struct FakeMetrics {
    pub snapshot: Mutex<MetricSnapshot>,
    pub windows: Mutex<Vec<(u64, u64)>>,
}

impl FakeMetrics {
    pub fn set(&self, canary: (f64, f64), stable: (f64, f64)) {
        let side = |(requests, errors): (f64, f64)| SideMetrics { requests, errors, ..Default::default() };
        *self.snapshot.lock().unwrap() = MetricSnapshot { canary: side(canary), stable: side(stable) };
    }
}

impl MetricSource for FakeMetrics {
    async fn fetch(&self, query: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        self.windows.lock().unwrap().push((query.start_epoch, query.end_epoch));
        Ok(self.snapshot.lock().unwrap().clone())
    }
}
