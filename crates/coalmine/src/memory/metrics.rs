//! Metrics in memory: whatever snapshot the test (or the simulator) puts, and the
//! windows it was asked for.

use std::sync::Mutex;

use super::journal::lock;
use crate::domain::error::Result;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::ports::{MetricQuery, MetricSource};

#[derive(Default)]
pub struct Metrics {
    pub snapshot: Mutex<MetricSnapshot>,
    /// Each query's `[start, end]`, in order.
    pub windows: Mutex<Vec<(u64, u64)>>,
}

impl Metrics {
    /// Canary and stable `(requests, errors)`, nothing else.
    pub fn set(&self, canary: (f64, f64), stable: (f64, f64)) {
        let side = |(requests, errors): (f64, f64)| SideMetrics { requests, errors, ..Default::default() };
        self.put(MetricSnapshot { canary: side(canary), stable: side(stable) });
    }

    pub fn put(&self, snapshot: MetricSnapshot) {
        *lock(&self.snapshot) = snapshot;
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
}
