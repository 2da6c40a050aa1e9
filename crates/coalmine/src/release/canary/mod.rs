//! The weight canary: coalmine moves the traffic itself, stage by stage, between a
//! stable and a canary — a Lambda alias's versions, or a SageMaker endpoint's production
//! variants — judging each stage before the next.

pub mod control;
pub mod notify;
pub mod preflight;
mod recovery;
mod safety;
pub mod shadow_spec;
mod shadowing;
pub mod spec;
mod start;
mod step;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::domain::error::Result;
use crate::ports::{AlarmSource, EndpointDeployments, MetricSource, Notifier, ShadowFeeds, TrafficRouter, Tripwires};
use crate::release::core::ending::SafetyOutcome;
use crate::release::core::preflight::Check;
use crate::release::core::progress::{Plain, Progress};
use crate::release::core::{ReleaseKind, StepDeps, Tick};
use spec::Release;

/// A tick of a weight canary.
pub type CanaryTick<'a, R, N, A, M> = Tick<'a, Release, R, N, A, M>;

impl ReleaseKind for Release {
    type Extra = Plain;

    fn parse(value: &Value) -> Result<Self> {
        Release::parse(value)
    }

    fn name(&self) -> &str {
        &self.release
    }

    fn stages(&self) -> usize {
        self.stages.len()
    }

    fn candidate(&self) -> &str {
        self.canary_id()
    }

    fn claim_key(&self) -> String {
        self.target.claim_key()
    }

    async fn tick<R, N, A, M>(tick: &CanaryTick<'_, R, N, A, M>, progress: Option<Progress>) -> Result<Progress>
    where
        R: TrafficRouter + EndpointDeployments + ShadowFeeds,
        N: Notifier,
        A: AlarmSource + Tripwires,
        M: MetricSource,
    {
        tick.step(progress).await
    }

    async fn safety_rollback<R, N, A, M>(
        &self,
        progress: Option<&Progress>,
        failure: &Value,
        execution: &str,
        deps: &StepDeps<'_, R, N, A, M>,
    ) -> Result<SafetyOutcome>
    where
        R: TrafficRouter + EndpointDeployments + ShadowFeeds,
        N: Notifier,
        A: AlarmSource + Tripwires,
        M: MetricSource,
    {
        safety::safety_rollback(self, progress, failure, execution, deps.router, deps.notifier).await
    }

    async fn preflight<R, N, A, M>(&self, deps: &StepDeps<'_, R, N, A, M>, now: u64) -> Vec<Check>
    where
        R: TrafficRouter + EndpointDeployments + ShadowFeeds,
        N: Notifier,
        A: AlarmSource + Tripwires,
        M: MetricSource,
    {
        let live = match preflight::read_target(deps.router, self).await {
            Ok(live) => live,
            Err(e) => return vec![Check::new("the target exists", Err(e))],
        };
        let mut checks = preflight::checks(self, &live, deps.router, deps.alarms).await;
        checks.push(preflight::metrics_check(self, &live, deps.metrics, now).await);
        checks
    }
}
