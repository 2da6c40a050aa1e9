//! A release climbing to promotion, one tick of the state machine at a time.
//!
//! - [`core`]: what every kind shares (progress, endings, gates, the health step,
//!   preflight pieces, the tick context) and the dispatcher; it knows no kind.
//! - [`judge`]: the health verdict, pure: the fixed-horizon and sequential judges.
//! - [`shadow`]: a shadow phase, which a kind composes when it can mirror traffic.
//! - [`canary`] and [`guardrail`]: the kinds, peers that never import each other.
//!
//! This module is the one switch between the kinds ([`Document`]); the CLI and the
//! functions ask a document, never a kind.

pub mod canary;
pub mod core;
pub mod guardrail;
pub mod judge;
pub mod shadow;
pub mod watchdog;

use serde_json::{Map, Value};

use self::core::operate::{Bake, Command, Operated, Routed};
use self::core::preflight::Check;
use self::core::progress::Progress;
use self::core::{Input, Ports, ReleaseKind};
use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::Claims;
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

/// The one switch between the kinds. `each_kind!(document, r: K => body)` runs `body`
/// with `r` the document's release as its own kind, `K` naming that type;
/// `each_kind!(in value, K => body)` runs it with `K` the kind a release's JSON is (a
/// `guardrail` key says which). A new kind is an arm in each.
macro_rules! each_kind {
    (in $value:expr, $Kind:ident => $body:expr) => {
        if Document::is_guardrail($value) {
            type $Kind = GuardrailRelease;
            $body
        } else {
            type $Kind = Release;
            $body
        }
    };
    ($document:expr, $release:ident: $Kind:ident => $body:expr) => {
        match $document {
            Document::Canary($release) => {
                type $Kind = Release;
                $body
            }
            Document::Guardrail($release) => {
                type $Kind = GuardrailRelease;
                $body
            }
        }
    };
}

impl From<Release> for Document {
    fn from(release: Release) -> Self {
        Document::Canary(release)
    }
}

impl From<GuardrailRelease> for Document {
    fn from(release: GuardrailRelease) -> Self {
        Document::Guardrail(release)
    }
}

/// Any release's progress, as the CLI reads it from an execution: the common fields,
/// and the kind's own beside them, unread until the kind reads them.
pub type AnyProgress = Progress<Map<String, Value>>;

/// A kind's view of a progress read as [`AnyProgress`]: its own fields parsed, or
/// `None` when they are not this kind's (an execution's input edited by hand).
fn as_kind<K: ReleaseKind>(progress: &AnyProgress) -> Option<Progress<K::Extra>> {
    serde_json::to_value(progress).ok().and_then(|v| serde_json::from_value(v).ok())
}

impl Document {
    fn is_guardrail(value: &Value) -> bool {
        value.get("guardrail").is_some()
    }

    /// Strictly validated, by the rules of its kind.
    pub fn parse(value: &Value) -> Result<Document> {
        each_kind!(in value, K => <K as ReleaseKind>::parse(value).map(Document::from))
    }

    /// Every problem a release file has, at once, each naming its field: what
    /// `coalmine validate` reports (the stepper refuses on any of them).
    pub fn problems(value: &Value) -> Vec<String> {
        each_kind!(in value, K => self::core::document::problems::<K>(value))
    }

    /// One tick of the release in `input` (or its safety rollback), run as its kind.
    async fn run(input: Input<'_>, deps: &impl Ports, claims: &impl Claims, now: u64) -> Result<Value> {
        each_kind!(in &input.release, K => Box::pin(self::core::run::<K>(input, deps, claims, now)).await)
    }

    pub fn name(&self) -> &str {
        each_kind!(self, r: K => <K as ReleaseKind>::name(r))
    }

    pub fn target(&self) -> Target {
        each_kind!(self, r: K => <K as Operated>::target(r))
    }

    pub fn check_every_seconds(&self) -> u64 {
        each_kind!(self, r: K => <K as Operated>::check_every_seconds(r))
    }

    /// The stages a timeline counts: a canary's stages, or a guardrail release's phases
    /// (its shadow, if any, then SageMaker's deployment).
    pub fn stages(&self) -> usize {
        each_kind!(self, r: K => <K as ReleaseKind>::stages(r))
    }

    pub fn plan_text(&self) -> String {
        each_kind!(self, r: K => <K as Operated>::plan_text(r))
    }

    pub fn plan_json(&self) -> Value {
        each_kind!(self, r: K => <K as Operated>::plan_json(r))
    }

    /// A stage as a report names it: "stage 2/4 25%", "SageMaker's deployment".
    pub fn stage_name(&self, stage: usize) -> String {
        each_kind!(self, r: K => <K as Operated>::stage_name(r, stage))
    }

    /// Whether coalmine itself moves the traffic, stage by stage.
    pub fn moves_traffic(&self) -> bool {
        each_kind!(self, r: K => <K as Operated>::moves_traffic(r))
    }

    /// The gates a decision was judged by: a phase's before any user (`before`), or the
    /// stages'.
    pub fn judged_by(&self, before: Option<self::core::progress::BeforeUsers>) -> self::judge::gates::Gates {
        each_kind!(self, r: K => <K as Operated>::judged_by(r, before))
    }

    /// "canary version 42, RUNNING (baking)": what is released, and where it is.
    pub fn headline(&self, progress: Option<&AnyProgress>, state: &str, running: bool) -> String {
        each_kind!(self, r: K => {
            let progress = progress.and_then(as_kind::<K>);
            r.headline(progress.as_ref(), state, running)
        })
    }

    /// The status lines only this kind has (a shadow's examples, the bake).
    pub fn details(&self, progress: &AnyProgress, running: bool, now: u64) -> Vec<String> {
        each_kind!(self, r: K => as_kind::<K>(progress).map(|p| r.details(&p, running, now)).unwrap_or_default())
    }

    pub fn bake(&self, progress: &AnyProgress, now: u64) -> Option<Bake> {
        each_kind!(self, r: K => as_kind::<K>(progress).and_then(|p| r.bake(&p, now)))
    }

    /// Who served the target as the release last wrote it, where coalmine moves it.
    pub fn as_left(&self, progress: &AnyProgress) -> Option<Split> {
        each_kind!(self, r: K => as_kind::<K>(progress).and_then(|p| r.as_left(&p)))
    }

    /// Who serves the target now, read from it, where coalmine moves the traffic.
    pub async fn serving_now(&self, deps: &impl Ports) -> Option<Result<Split>> {
        each_kind!(self, r: K => <K as Operated>::serving_now(r, deps).await)
    }

    /// `coalmine route`: which version `unit` gets now, given who serves the target now.
    pub fn route(
        &self,
        progress: Option<&AnyProgress>,
        serving: &Split,
        unit: &str,
        attributes: &[(&str, &str)],
    ) -> Result<Routed> {
        each_kind!(self, r: K => {
            let progress = progress.and_then(as_kind::<K>);
            <K as Operated>::route(r, progress.as_ref(), serving, unit, attributes)
        })
    }

    /// Every check the first tick makes, moving nothing.
    pub async fn preflight(&self, deps: &impl Ports, now: u64) -> Vec<Check> {
        each_kind!(self, r: K => <K as ReleaseKind>::preflight(r, deps, now).await)
    }

    /// An operator's `command` for the release's next tick, from `who`.
    pub async fn command(&self, deps: &impl Ports, who: &str, command: Command) -> Result<Stamp> {
        each_kind!(self, r: K => <K as Operated>::command(r, deps, who, command).await)
    }

    /// `coalmine abort`: the release's traffic taken away now; what happened, in words.
    pub async fn abort(&self, deps: &impl Ports, execution: &str, who: &str, why: &str) -> Result<String> {
        each_kind!(self, r: K => Box::pin(<K as Operated>::abort(r, deps, execution, who, why)).await)
    }

    /// After its execution ended with the release in flight: its own safety rollback.
    async fn safety_rollback(
        &self,
        failure: &Value,
        execution: &str,
        deps: &impl Ports,
    ) -> Result<self::core::ending::SafetyOutcome> {
        each_kind!(self, r: K => Box::pin(<K as ReleaseKind>::safety_rollback(r, None, failure, execution, deps)).await)
    }
}

/// The dead-man's switch (see [`watchdog`]): an execution of the release state machine
/// ended; if its release was left in flight, that release's own safety rollback takes
/// back what the execution still owns, and the team is told (or paged, when it cannot).
pub async fn execution_ended(payload: &Value, deps: &impl Ports) -> Result<Value> {
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
    let undone = document.safety_rollback(&failure, execution, deps).await;
    match undone {
        Ok(outcome) => Ok(watchdog::summary(&ended, &outcome)),
        Err(e) => {
            let target = document.target().to_string();
            Err(watchdog::page(&ended, document.name(), &target, e, deps.notifier()).await)
        }
    }
}

/// The tick as the function runs it, its failure logged once with the release it
/// concerns (see [`core::Input`] for the payload).
pub async fn tick_payload(input: &Value, deps: &impl Ports, claims: &impl Claims, now: u64) -> Result<Value> {
    let ticked = match Input::of(input) {
        Ok(input) => Document::run(input, deps, claims, now).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Alarms, Metrics, Outbox, Router};
    use crate::release::core::document::tests::sample_json;
    use crate::release::core::StepDeps;

    #[tokio::test]
    async fn a_guardrail_release_has_no_stage_to_pause_and_says_what_stops_it_moving_nothing() {
        let (router, outbox, alarms, metrics) =
            (Router::default(), Outbox::default(), Alarms::default(), Metrics::default());
        let deps = StepDeps::new(&router, &outbox, &alarms, &metrics);
        let guardrail = Document::parse(&sample_json("sagemaker-guardrail-ai-model-8.json")).unwrap();
        for request in [Command::Pause, Command::Resume, Command::Approve, Command::Promote { full: true }] {
            let refused = guardrail.command(&deps, "jane", request).await.unwrap_err();
            assert!(matches!(refused, crate::Error::Refused(_)), "{refused:?}");
            assert!(refused.to_string().ends_with("coalmine abort ai-model-8 stops it"), "{refused}");
        }
        assert_eq!((router.write_count(), outbox.sent.lock().unwrap().len()), (0, 0));
        let canary = Document::parse(&sample_json("lambda-ai-handler-42.json")).unwrap();
        assert_eq!(canary.stages(), 4);
        assert!(canary.plan_text().starts_with("ai-handler-42: valid"), "{}", canary.plan_text());
        assert!(guardrail.plan_text().contains("guardrail deployment"), "{}", guardrail.plan_text());
        assert_eq!(guardrail.plan_json()["kind"], "guardrail");
    }

    #[test]
    fn a_progress_read_as_any_kind_is_read_back_by_its_own() {
        let canary = Document::parse(&sample_json("lambda-ai-handler-42.json")).unwrap();
        let progress: AnyProgress = serde_json::from_value(serde_json::json!({
            "stage": 0, "weight": 0.05, "stable": "41",
            "last_written": {"stable": "41", "canary": "42", "weight": 0.05},
            "started_at": 0, "stage_entered_at": 0, "status": "baking", "wait_seconds": 60,
            "reason": "r", "ticks": 1, "history": [],
            "shadow": {"started_at": 0, "examples": [
                {"request_id": "1", "request": "{}", "stable": "a", "candidate": "b"}
            ]}
        }))
        .unwrap();
        assert!(progress.kind.contains_key("shadow"), "the kind's fields are kept, unread");
        let details = canary.details(&progress, false, 0);
        assert_eq!(details.get(1).map(String::as_str), Some("  the shadow's disagreements (last few):"), "{details:?}");
        let left = canary.as_left(&progress).unwrap();
        assert_eq!((left.stable.as_str(), left.canary.as_deref(), left.canary_weight), ("41", Some("42"), 0.05));
        assert!(canary.headline(Some(&progress), "RUNNING (baking)", true).starts_with("canary version 42, RUNNING"));
    }
}
