//! Metrics in memory: whatever snapshot the test (or the simulator) puts, and the
//! windows it was asked for.

use std::sync::Mutex;

use super::journal::lock;
use crate::domain::error::Result;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::domain::target::Target;
use crate::ports::{MetricQuery, MetricSource};

#[derive(Default)]
pub struct Metrics {
    pub snapshot: Mutex<MetricSnapshot>,
    /// Each query's `[start, end]`, in order.
    pub windows: Mutex<Vec<(u64, u64)>>,
    /// The stable's requests minute by minute, as (minute start, requests).
    pub minutes: Mutex<Vec<(u64, f64)>>,
}

impl Metrics {
    /// Canary and stable `(requests, errors)`, nothing else.
    pub fn set(&self, canary: (f64, f64), stable: (f64, f64)) {
        let side = |(requests, errors): (f64, f64)| SideMetrics { requests, errors, ..Default::default() };
        self.put(MetricSnapshot { canary: side(canary), stable: side(stable), pinned: None });
    }

    pub fn put(&self, snapshot: MetricSnapshot) {
        *lock(&self.snapshot) = snapshot;
    }

    /// The stable served `per_minute` requests in each of the `minutes` minutes before `now`.
    pub fn served(&self, per_minute: f64, minutes: u64, now: u64) {
        let first = (now / 60).saturating_sub(minutes) * 60;
        *lock(&self.minutes) = (0..minutes).map(|m| (first + m * 60, per_minute)).collect();
    }

    pub fn windows(&self) -> Vec<(u64, u64)> {
        lock(&self.windows).clone()
    }
}

impl MetricSource for Metrics {
    async fn fetch(&self, query: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        lock(&self.windows).push((query.start_epoch, query.end_epoch));
        Ok(lock(&self.snapshot).clone())
    }

    async fn requests_per_minute(&self, _: &Target, _: &str, start: u64, end: u64) -> Result<Vec<(u64, f64)>> {
        lock(&self.windows).push((start, end));
        Ok(lock(&self.minutes).iter().copied().filter(|(at, _)| (start..end).contains(at)).collect())
    }
}
