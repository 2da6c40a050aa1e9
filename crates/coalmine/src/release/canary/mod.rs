//! The weight canary: coalmine moves the traffic itself, stage by stage, between a
//! stable and a canary — a Lambda alias's versions, or a SageMaker endpoint's production
//! variants — judging each stage before the next.

pub mod cohorts;
pub mod control;
mod ledger;
pub mod notify;
pub mod preflight;
pub mod progress;
mod recovery;
pub mod replay_spec;
mod replaying;
mod safety;
pub mod shadow_spec;
mod shadowing;
pub mod spec;
mod stages;
mod start;
mod step;
#[cfg(test)]
mod tests;
pub mod view;

use crate::release::core::Ports;
use serde_json::Value;

use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::TrafficRouter;
use crate::release::canary::progress::{CanaryProgress, Progress};
use crate::release::core::ending::SafetyOutcome;
use crate::release::core::operate::{Bake, Command, Operated, Routed};
use crate::release::core::preflight::Check;
use crate::release::core::progress::BeforeUsers;
use crate::release::core::{ReleaseKind, Tick};
use crate::release::judge::gates::Gates;
use crate::text::describe;
use spec::Release;

/// A tick of a weight canary.
pub type CanaryTick<'a, P> = Tick<'a, Release, P>;

impl ReleaseKind for Release {
    type Extra = CanaryProgress;

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

    async fn tick<P: Ports>(tick: &CanaryTick<'_, P>, progress: Option<Progress>) -> Result<Progress> {
        tick.step(progress).await
    }

    async fn safety_rollback<P: Ports>(
        &self,
        progress: Option<&Progress>,
        failure: &Value,
        execution: &str,
        deps: &P,
    ) -> Result<SafetyOutcome> {
        safety::safety_rollback(self, progress, failure, execution, deps).await
    }

    async fn preflight<P: Ports>(&self, deps: &P, now: u64) -> Vec<Check> {
        let live = match preflight::read_target(deps.traffic(), self).await {
            Ok(live) => live,
            Err(e) => return vec![Check::new("the target exists", Err(e))],
        };
        let mut checks = preflight::checks(self, &live, deps, now).await;
        checks.push(preflight::metrics_check(self, &live, deps.metrics(), now).await);
        checks
    }
}

impl Operated for Release {
    fn target(&self) -> Target {
        self.target.clone()
    }

    fn check_every_seconds(&self) -> u64 {
        self.check_every_seconds
    }

    fn plan_text(&self) -> String {
        view::plan_text(self)
    }

    fn plan_json(&self) -> Value {
        serde_json::to_value(self.plan()).unwrap_or(Value::Null)
    }

    fn stage_name(&self, stage: usize) -> String {
        format!("stage {}/{} {}", stage + 1, self.stages.len(), self.share_text(stage))
    }

    fn judged_by(&self, before: Option<BeforeUsers>) -> Gates {
        let custom = match before {
            Some(BeforeUsers::Replay) => self.replay.as_ref().map(|r| r.gates(&self.release)),
            Some(BeforeUsers::Shadow) => self.shadow.as_ref().map(|s| s.gates(&self.release)),
            None => None,
        };
        match custom {
            Some(custom) => Gates { custom, ..self.gates.clone() },
            None => self.gates.clone(),
        }
    }

    fn headline(&self, progress: Option<&Progress>, state: &str, _running: bool) -> String {
        let canary = self.target.side(self.canary_id());
        match (&self.cohorts, progress.filter(|p| p.kind.shadow.is_none())) {
            (Some(cohorts), Some(progress)) => {
                format!("canary {canary} to {}, {}, {state}", self.share_text(progress.stage), cohorts.rules())
            }
            (Some(cohorts), None) => format!("canary {canary}, by {}, {state}", cohorts.unit.trim()),
            (None, _) => format!("canary {canary}, {state}"),
        }
    }

    fn details(&self, progress: &Progress, running: bool, now: u64) -> Vec<String> {
        let mut lines = view::shadow_examples(progress);
        if let Some(cohorts) = &self.cohorts {
            lines.push(format!("judged: {}", cohorts.judged()));
            // This stage's weighing, as its last look read the groups.
            let weighting = progress.samples.last().map(|s| &s.weighting).filter(|w| !w.is_empty());
            if let Some(weighting) = weighting {
                let named = [("errors_vs_stable", "errors"), ("latency_vs_stable", "latency")];
                let said: Vec<String> =
                    named.iter().filter_map(|(test, name)| Some(weighting.get(*test)?.describe(name))).collect();
                lines.push(format!("this stage: {}", said.join("; ")));
            }
        }
        if running {
            lines.extend(view::bake(self, progress, now).map(|bake| bake.line));
        }
        lines
    }

    fn bake(&self, progress: &Progress, now: u64) -> Option<Bake> {
        view::bake(self, progress, now)
    }

    /// A cohort's alias serves the candidate wholly; the share it reaches is the stage's
    /// share of units, and that is what is said (`list` shows it as the candidate's weight).
    fn as_left(&self, progress: &Progress) -> Option<Split> {
        let mut left = progress.kind.last_written.as_split();
        if self.cohorts.is_some() && !left.canary_is_zero() && left.canary.is_some() {
            left.canary_weight = progress.weight;
        }
        Some(left)
    }

    async fn serving_now(&self, deps: &impl Ports) -> Option<Result<Split>> {
        Some(deps.traffic().read(&self.target).await)
    }

    fn route(
        &self,
        progress: Option<&Progress>,
        serving: &Split,
        unit: &str,
        attributes: &[(&str, &str)],
    ) -> Result<Routed> {
        view::route(self, progress, serving, unit, attributes)
    }

    async fn command(&self, deps: &impl Ports, who: &str, command: Command) -> Result<Stamp> {
        control::command(deps.traffic(), &self.target, &self.release, who, command).await
    }

    async fn abort(&self, deps: &impl Ports, execution: &str, who: &str, why: &str) -> Result<String> {
        let outcome = control::abort(deps, self, execution, who, why).await?;
        Ok(format!(
            "{} now; the team was told. Its execution ends rolled back at its next check.",
            describe(&self.target, outcome.after())
        ))
    }
}
