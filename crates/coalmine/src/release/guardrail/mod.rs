//! Guardrail releases: a new endpoint config rolled out by SageMaker's own deployment
//! guardrails (`UpdateEndpoint` with a blue/green `DeploymentConfig`: canary or linear
//! traffic shifting, auto-rollback alarms), optionally after a shadow phase in which the
//! candidate gets a copy of live traffic and its answers are discarded.
//!
//! SageMaker moves the traffic; coalmine starts the deployment, watches it tick by tick,
//! keeps judging the new fleet against the old with its own judge (the fleets' metrics
//! differ by `EndpointConfigName`), and stops it by tripping its own alarm, which every
//! guardrail deployment lists among its auto-rollback alarms (SageMaker has no API to
//! stop a deployment). SageMaker can also roll back on its own, silently: the endpoint
//! returns to `InService` on the old config, sometimes with no `FailureReason`; coalmine
//! tells that by comparing the config in service with the one it asked for.

mod control;
mod notify;
mod phases;
pub mod preflight;
pub mod spec;
mod start;
#[cfg(test)]
mod tests;
pub mod view;

use crate::release::core::Ports;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::cause::RolledBackBy;
use crate::domain::deployment::EndpointState;
use crate::domain::error::Error;
use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::EndpointDeployments;
use crate::release::core::ending::SafetyOutcome;
use crate::release::core::operate::{Bake, Command, Operated};
use crate::release::core::preflight::Check;
use crate::release::core::progress::{Progress, Status};
use crate::release::core::{ReleaseKind, Tick};
use crate::release::judge::Evidence;
use spec::GuardrailRelease;

/// A tick of a guardrail release.
pub type GuardrailTick<'a, P> = Tick<'a, GuardrailRelease, P>;

/// Where a guardrail release is; kept in its progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The shadow config is being put in service.
    ShadowStarting,
    /// The candidate serves a copy of traffic, judged against production.
    Shadowing,
    /// The shadow failed; the endpoint goes back to its original config.
    ShadowReverting,
    /// SageMaker is deploying the new config.
    Deploying,
    /// coalmine tripped its alarm; SageMaker is rolling back.
    Stopping,
    /// The new config completed but was judged bad: the previous one is deployed back.
    Reverting,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardrailProgress {
    pub phase: Phase,
    /// The config in service when the release started.
    pub original_config: String,
    /// The config the deployment replaces (the shadow config, after a shadow phase).
    pub previous_config: String,
    pub tripwire: String,
    pub phase_started_at: u64,
    /// The endpoint as last seen: status, and where the deployment is.
    pub endpoint: String,
    /// Why coalmine stopped it, for the ending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_because: Option<String>,
    /// Who stopped it, when it was stopped (`coalmine abort` or the judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<RolledBackBy>,
}

/// What a guardrail release keeps in its progress beside the common fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    /// Its phase and configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<GuardrailProgress>,
}

pub type GuardrailProgressOf = Progress<Extra>;

impl ReleaseKind for GuardrailRelease {
    type Extra = Extra;

    fn parse(value: &Value) -> Result<Self> {
        GuardrailRelease::parse(value)
    }

    fn name(&self) -> &str {
        &self.release
    }

    fn stages(&self) -> usize {
        self.phases()
    }

    fn candidate(&self) -> &str {
        &self.guardrail.endpoint_config
    }

    fn claim_key(&self) -> String {
        self.target().claim_key()
    }

    async fn tick<P: Ports>(
        tick: &GuardrailTick<'_, P>,
        progress: Option<GuardrailProgressOf>,
    ) -> Result<GuardrailProgressOf> {
        tick.step(progress).await
    }

    async fn safety_rollback<P: Ports>(
        &self,
        _progress: Option<&GuardrailProgressOf>,
        failure: &Value,
        execution: &str,
        deps: &P,
    ) -> Result<SafetyOutcome> {
        control::safety_rollback(self, failure, execution, deps).await
    }

    async fn preflight<P: Ports>(&self, deps: &P, _now: u64) -> Vec<Check> {
        let found = match deps.deployments().endpoint_state(&self.guardrail.endpoint).await {
            Ok(state) => preflight::preflight(self, &state, deps.deployments(), deps.alarms()).await,
            Err(e) => Err(e),
        };
        vec![Check::new("the endpoint, its configs and alarms", found)]
    }
}

impl<P: Ports> GuardrailTick<'_, P> {
    /// A decision that waits for SageMaker (or the shadow's time): logged and kept.
    fn keep(
        &self,
        mut progress: GuardrailProgressOf,
        g: GuardrailProgress,
        status: Status,
        reason: String,
        evidence: Option<&Evidence>,
    ) -> GuardrailProgressOf {
        progress.kind.guardrail = Some(g);
        let progress = progress.decide(self.now, status, self.release.check_every_seconds, reason, evidence);
        self.log_decision(&self.release.guardrail.endpoint, &progress, evidence);
        progress
    }

    /// The release's last decision, logged and kept.
    fn done(
        &self,
        mut progress: GuardrailProgressOf,
        g: GuardrailProgress,
        status: Status,
        reason: String,
        evidence: Option<&Evidence>,
    ) -> GuardrailProgressOf {
        progress.kind.guardrail = Some(g);
        let progress = progress.finish(self.now, status, reason, evidence);
        self.log_decision(&self.release.guardrail.endpoint, &progress, evidence);
        progress
    }
}

/// "Updating (ai-model-config-v8 deploying: AllTraffic: Baking)", or "InService on v7".
fn endpoint_text(state: &EndpointState) -> String {
    match &state.pending {
        Some(pending) => format!("{} ({} deploying: {})", state.status, pending.config, pending.describe()),
        None => format!("{} on {}", state.status, state.config),
    }
}

/// SageMaker moves a guardrail release's traffic: coalmine has no weights of its own to
/// show, no bake to draw and no stage to pause.
impl Operated for GuardrailRelease {
    fn target(&self) -> Target {
        GuardrailRelease::target(self)
    }

    fn check_every_seconds(&self) -> u64 {
        self.check_every_seconds
    }

    fn plan_text(&self) -> String {
        view::plan_text(self)
    }

    fn plan_json(&self) -> Value {
        view::plan_json(self)
    }

    fn stage_name(&self, stage: usize) -> String {
        match (stage, &self.shadow) {
            (0, Some(_)) => "the shadow config".to_owned(),
            _ => format!("SageMaker's deployment of {}", self.guardrail.endpoint_config),
        }
    }

    fn moves_traffic(&self) -> bool {
        false
    }

    /// A guardrail release's shadow and deployment are judged by the same gates.
    fn judged_by(
        &self,
        _before: Option<crate::release::core::progress::BeforeUsers>,
    ) -> crate::release::judge::gates::Gates {
        self.judged_gates()
    }

    fn headline(&self, progress: Option<&GuardrailProgressOf>, state: &str, running: bool) -> String {
        let endpoint = progress.and_then(|p| p.kind.guardrail.as_ref()).filter(|_| running);
        format!(
            "guardrail deployment of {}, {state}{}",
            self.guardrail.endpoint_config,
            endpoint.map(|g| format!(" ({})", g.endpoint)).unwrap_or_default()
        )
    }

    fn details(&self, _progress: &GuardrailProgressOf, _running: bool, _now: u64) -> Vec<String> {
        Vec::new()
    }

    fn bake(&self, _progress: &GuardrailProgressOf, _now: u64) -> Option<Bake> {
        None
    }

    fn as_left(&self, _progress: &GuardrailProgressOf) -> Option<Split> {
        None
    }

    async fn serving_now(&self, _deps: &impl Ports) -> Option<Result<Split>> {
        None
    }

    async fn command(&self, _deps: &impl Ports, _who: &str, _command: Command) -> Result<Stamp> {
        let name = &self.release;
        Err(Error::Refused(format!(
            "release {name} is a guardrail release: SageMaker shifts its traffic, so it has no stage to pause, \
             approve or promote; coalmine abort {name} stops it"
        )))
    }

    async fn abort(&self, deps: &impl Ports, execution: &str, who: &str, why: &str) -> Result<String> {
        let now = control::abort(deps, self, execution, who, why).await?;
        Ok(format!("coalmine {now}; the team was told. Its execution ends rolled back once the endpoint is back."))
    }
}
