//! A release climbing to promotion, one tick of the state machine at a time.
//!
//! - [`core`]: what every kind shares (progress, endings, gates, the health step,
//!   preflight pieces, the tick context) and the dispatcher; it knows no kind.
//! - [`judge`]: the health verdict, pure: the fixed-horizon and sequential judges.
//! - [`shadow`]: a shadow phase, which a kind composes when it can mirror traffic.
//! - [`canary`] and [`guardrail`]: the kinds, peers that never import each other.
//!
//! This module is the one switch between the kinds.

pub mod canary;
pub mod core;
pub mod guardrail;
pub mod judge;
pub mod shadow;
pub mod watchdog;

use serde_json::Value;

use self::core::preflight::Check;
use self::core::{Input, ReleaseKind, StepDeps};
use crate::domain::error::Result;
use crate::domain::target::Target;
use crate::ports::{
    AlarmSource, Claims, EndpointDeployments, MetricSource, Notifier, ShadowFeeds, TrafficRouter, Tripwires,
};
use canary::spec::Release;
use guardrail::spec::GuardrailRelease;

/// What a release file, or an execution's input, holds: a canary release coalmine
/// climbs stage by stage, or a guardrail release SageMaker deploys while coalmine
/// watches and judges. A `guardrail` key says which.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    Canary(Release),
    Guardrail(GuardrailRelease),
}

/// Any release's progress, as the CLI reads it from an execution: the common fields,
/// and what either kind keeps beside them.
pub type AnyProgress = self::core::progress::Progress<AnyExtra>;

/// Each kind's own fields, as each writes them (the guardrail's phase, a weight canary's
/// shadow); a field the other kind has is simply absent.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnyExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<guardrail::GuardrailProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<self::core::progress::ShadowRun>,
}

impl Document {
    pub fn is_guardrail(value: &Value) -> bool {
        value.get("guardrail").is_some()
    }

    /// Strictly validated, by the rules of its kind.
    pub fn parse(value: &Value) -> Result<Document> {
        if Self::is_guardrail(value) {
            GuardrailRelease::parse(value).map(Document::Guardrail)
        } else {
            Release::parse(value).map(Document::Canary)
        }
    }

    /// Every problem a release file has, at once, each naming its field: what
    /// `coalmine validate` reports (the stepper refuses on any of them).
    pub fn problems(value: &Value) -> Vec<String> {
        if Self::is_guardrail(value) {
            self::core::document::problems::<GuardrailRelease>(value)
        } else {
            self::core::document::problems::<Release>(value)
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Document::Canary(r) => &r.release,
            Document::Guardrail(r) => &r.release,
        }
    }

    pub fn target(&self) -> Target {
        match self {
            Document::Canary(r) => r.target.clone(),
            Document::Guardrail(r) => r.target(),
        }
    }

    pub fn check_every_seconds(&self) -> u64 {
        match self {
            Document::Canary(r) => r.check_every_seconds,
            Document::Guardrail(r) => r.check_every_seconds,
        }
    }

    /// The stages a timeline counts: a canary's stages, or a guardrail release's phases
    /// (its shadow, if any, then SageMaker's deployment).
    pub fn stages(&self) -> usize {
        match self {
            Document::Canary(r) => r.stages.len(),
            Document::Guardrail(r) => r.phases(),
        }
    }

    /// Every check the first tick makes, moving nothing.
    pub async fn preflight<R, N, A, M>(&self, deps: &StepDeps<'_, R, N, A, M>, now: u64) -> Vec<Check>
    where
        R: TrafficRouter + EndpointDeployments + ShadowFeeds,
        N: Notifier,
        A: AlarmSource + Tripwires,
        M: MetricSource,
    {
        match self {
            Document::Canary(r) => r.preflight(deps, now).await,
            Document::Guardrail(r) => r.preflight(deps, now).await,
        }
    }
}

/// The dead-man's switch (see [`watchdog`]): an execution of the release state machine
/// ended; if its release was left in flight, that release's own safety rollback takes
/// back what the execution still owns, and the team is told (or paged, when it cannot).
pub async fn execution_ended<R, N, A, M>(payload: &Value, deps: &StepDeps<'_, R, N, A, M>) -> Result<Value>
where
    R: TrafficRouter + EndpointDeployments + ShadowFeeds,
    N: Notifier,
    A: AlarmSource + Tripwires,
    M: MetricSource,
{
    let Some(ended) = watchdog::ExecutionEnded::decode(payload)? else {
        return Ok(serde_json::json!({"ignored": "the execution ended in a way that leaves no release in flight"}));
    };
    let document = match Document::parse(&ended.release) {
        Ok(document) => document,
        Err(e) => {
            tracing::info!(execution = %ended.execution, error = %e, decision = "watchdog", "never a valid release: nothing of it to undo");
            return Ok(serde_json::json!({"execution": ended.execution, "undone": false, "cause": e.to_string()}));
        }
    };
    let (failure, execution) = (ended.failure(), ended.execution.as_str());
    let undone = match &document {
        Document::Canary(r) => Box::pin(r.safety_rollback(None, &failure, execution, deps)).await,
        Document::Guardrail(r) => Box::pin(r.safety_rollback(None, &failure, execution, deps)).await,
    };
    match undone {
        Ok(outcome) => Ok(watchdog::summary(&ended, &outcome)),
        Err(e) => {
            let target = document.target().to_string();
            Err(watchdog::page(&ended, document.name(), &target, e, deps.notifier).await)
        }
    }
}

/// The tick as the function runs it, its failure logged once with the release it
/// concerns (see [`core::Input`] for the payload).
pub async fn tick_payload<R, N, A, M>(
    input: &Value,
    deps: &StepDeps<'_, R, N, A, M>,
    claims: &impl Claims,
    now: u64,
) -> Result<Value>
where
    R: TrafficRouter + EndpointDeployments + ShadowFeeds,
    N: Notifier,
    A: AlarmSource + Tripwires,
    M: MetricSource,
{
    let ticked = match Input::of(input) {
        Ok(input) if Document::is_guardrail(&input.release) => {
            self::core::run::<GuardrailRelease, _, _, _, _>(input, deps, claims, now).await
        }
        Ok(input) => self::core::run::<Release, _, _, _, _>(input, deps, claims, now).await,
        Err(e) => Err(e),
    };
    ticked.inspect_err(|e| {
        let state = input.get("state");
        let release = state.and_then(|s| s.get("release")).and_then(Value::as_str);
        let execution = input.get("execution").and_then(Value::as_str);
        let safety = state.is_some_and(|s| s.get("failure").is_some());
        tracing::error!(
            release, execution,
            decision = if safety { "safety_rollback_failed" } else { "tick_failed" },
            error_type = e.error_type(), retryable = e.is_retryable(), error = %e,
            "the tick failed; the state machine retries it or ends the release"
        )
    })
}
