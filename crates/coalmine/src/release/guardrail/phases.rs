//! One tick of a guardrail release: read the endpoint, then one function per phase.

use crate::release::core::Ports;
use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::deployment::EndpointState;
use crate::domain::error::{Error, Result};
use crate::domain::stamp::Phase as StampPhase;
use crate::ports::{AlarmSource, EndpointDeployments, MetricQuery, Notifier, Tripwires};
use crate::release::core::health::observe;
use crate::release::core::progress::Status;
use crate::release::core::unsent;
use crate::release::guardrail::notify::message;
use crate::release::guardrail::{endpoint_text, GuardrailProgress, GuardrailProgressOf, GuardrailTick, Phase};
use crate::release::judge::{Evidence, Verdict};
use crate::release::shadow::{self, ShadowStep};
use crate::text::duration;

/// The endpoint as this tick found it, and whether a stop from outside the execution is
/// on its stamp.
pub(super) struct Seen {
    pub state: EndpointState,
    /// Who stopped this execution's release from outside it, as its stamp records:
    /// `coalmine abort`, or the rollback function on an alarm the release does not list.
    pub stopped_outside: Option<RolledBackBy>,
}

impl Seen {
    fn new(state: EndpointState, execution: &str) -> Seen {
        let stopped_outside = state.stamp.as_ref().filter(|s| s.is_by(execution)).and_then(|s| match &s.phase {
            StampPhase::RolledBack(by @ (RolledBackBy::Operator { .. } | RolledBackBy::Alarm(_))) => Some(by.clone()),
            _ => None,
        });
        Seen { state, stopped_outside }
    }

    fn in_service_on(&self, config: &str) -> bool {
        self.state.is_in_service() && self.state.config == config
    }

    /// Back on `config`, or failed: SageMaker's rollback is over.
    fn back_on(&self, config: &str) -> bool {
        self.in_service_on(config) || self.state.status == "Failed"
    }
}

type Ticked = Result<GuardrailProgressOf>;

impl<P: Ports> GuardrailTick<'_, P> {
    pub(super) async fn step(&self, progress: Option<GuardrailProgressOf>) -> Ticked {
        let Some(mut progress) = progress else {
            return self.start().await;
        };
        progress.ensure_running()?;
        progress.ticks += 1;
        let state = self.deps.deployments().endpoint_state(&self.release.guardrail.endpoint).await?;
        let Some(mut g) = progress.kind.guardrail.clone() else {
            return Err(Error::InvalidRelease(
                "progress: no guardrail phase; it is the stepper's own output, do not edit it".into(),
            ));
        };
        g.endpoint = endpoint_text(&state);
        if state.status == "UpdateRollbackFailed" {
            return Err(self.stuck(&state).await);
        }
        let seen = Seen::new(state, self.execution);
        match g.phase {
            Phase::ShadowStarting => self.shadow_starting(progress, g, &seen).await,
            Phase::Shadowing => self.shadowing(progress, g, &seen).await,
            Phase::ShadowReverting => self.shadow_reverting(progress, g, &seen).await,
            Phase::Deploying => self.deploying(progress, g, &seen).await,
            Phase::Stopping => self.stopping(progress, g, &seen).await,
            Phase::Reverting => self.reverting(progress, g, &seen).await,
        }
    }

    async fn shadow_starting(&self, progress: GuardrailProgressOf, mut g: GuardrailProgress, seen: &Seen) -> Ticked {
        let shadow = self.release.shadow.as_ref().map_or("", |s| s.endpoint_config.as_str());
        if seen.in_service_on(shadow) {
            g.phase = Phase::Shadowing;
            g.phase_started_at = self.now;
            let reason = format!(
                "Shadowing: the candidate serves a copy of live traffic for {}",
                duration(self.release.shadow.as_ref().map_or(0, |s| s.duration_seconds))
            );
            return Ok(self.keep(progress, g, Status::Advanced, reason, None));
        }
        if seen.back_on(&g.original_config) {
            let why = format!("the shadow config did not come into service ({})", reason_of(&seen.state));
            return self.end(progress, g, RolledBackBy::Health, why, None).await;
        }
        let reason = format!("Starting the shadow: endpoint {}", g.endpoint);
        Ok(self.keep(progress, g, Status::Baking, reason, None))
    }

    /// The candidate serves a copy of traffic; the judge compares it with production.
    async fn shadowing(&self, mut progress: GuardrailProgressOf, mut g: GuardrailProgress, seen: &Seen) -> Ticked {
        let (release, endpoint) = (self.release, &self.release.guardrail.endpoint);
        let Some(shadow) = &release.shadow else {
            return Err(Error::InvalidRelease(
                "progress: a shadow phase, but the release has no shadow; it is the stepper's own output, do not edit \
                 it"
                .into(),
            ));
        };
        if let Some(by) = seen.stopped_outside.clone() {
            self.deps.deployments().deploy(endpoint, &g.original_config, None).await?;
            g.phase = Phase::ShadowReverting;
            let reason = format!("Shadow stopped by {}: the endpoint goes back to its original config", by.describe());
            g.stopped_because = Some(format!("stopped by {}", by.describe()));
            g.stopped_by = Some(by);
            return Ok(self.keep(progress, g, Status::Baking, reason, None));
        }
        let production = &release.guardrail.variant;
        let evidence = self.judge_fleets(&mut progress, &shadow.variant, production, None, g.phase_started_at).await?;
        let gates = release.judged_gates();
        let now = self.now;
        match shadow::step(
            &gates,
            &evidence,
            g.phase_started_at,
            shadow.duration_seconds,
            &mut progress.holding_since,
            now,
        ) {
            ShadowStep::Failed(why) => {
                self.deps.deployments().deploy(endpoint, &g.original_config, None).await?;
                g.phase = Phase::ShadowReverting;
                g.stopped_because = Some(why.clone());
                let reason = format!("Shadow failed ({why}): the endpoint goes back to its original config");
                Ok(self.keep(progress, g, Status::Baking, reason, Some(&evidence)))
            }
            ShadowStep::Continue(status) => {
                let reason = format!("Shadow: {}", evidence.summary());
                Ok(self.keep(progress, g, status, reason, Some(&evidence)))
            }
            ShadowStep::Passed => {
                let new = &release.guardrail.endpoint_config;
                self.deps.deployments().deploy(endpoint, new, Some(&release.plan())).await?;
                g.previous_config = shadow.endpoint_config.clone();
                g.phase = Phase::Deploying;
                g.phase_started_at = now;
                progress.stage = 1;
                progress.enter_stage(now);
                progress.holding_since = None;
                let reason = format!(
                    "Shadow passed ({}). SageMaker deploys {new}: {}",
                    evidence.summary(),
                    release.describe_traffic()
                );
                Ok(self.keep(progress, g, Status::Advanced, reason, Some(&evidence)))
            }
        }
    }

    async fn shadow_reverting(&self, progress: GuardrailProgressOf, g: GuardrailProgress, seen: &Seen) -> Ticked {
        if seen.in_service_on(&g.original_config) {
            let by = g.stopped_by.clone().unwrap_or(RolledBackBy::Health);
            let why = g.stopped_because.clone().unwrap_or_default();
            let why = match by {
                RolledBackBy::Operator { .. } | RolledBackBy::Alarm(_) => {
                    format!("{why} during its shadow test; no user was served by it")
                }
                _ => format!("the candidate failed its shadow test ({why}); no user was served by it"),
            };
            return self.end(progress, g, by, why, None).await;
        }
        let reason = format!("Going back to {}: endpoint {}", g.original_config, g.endpoint);
        Ok(self.keep(progress, g, Status::Baking, reason, None))
    }

    /// SageMaker deploys the new config: judged until it completes, or rolls back.
    async fn deploying(&self, progress: GuardrailProgressOf, g: GuardrailProgress, seen: &Seen) -> Ticked {
        let new = &self.release.guardrail.endpoint_config;
        if let Some(by) = seen.stopped_outside.clone().filter(|_| !seen.in_service_on(&g.previous_config)) {
            return self.stop_from_outside(progress, g, seen, by).await;
        }
        if seen.in_service_on(new) {
            let stamp = self.live_stamp(&g.original_config, progress.stage, None).promoted();
            self.deps.deployments().stamp_endpoint(&self.release.guardrail.endpoint, &stamp).await?;
            let mut progress = progress;
            progress.weight = 1.0;
            let reason = format!("Promoted: SageMaker's deployment of {new} completed and coalmine found it healthy");
            return Ok(self.done(progress, g, Status::Promoted, reason, None));
        }
        if seen.back_on(&g.previous_config) {
            return self.rolled_back_by_sagemaker(progress, g, seen).await;
        }
        if seen.state.pending.as_ref().is_some_and(|p| p.config == *new) {
            return self.judge_deployment(progress, g).await;
        }
        let reason = format!("SageMaker deploying: {}", g.endpoint);
        Ok(self.keep(progress, g, Status::Baking, reason, None))
    }

    /// `coalmine abort` or the rollback function tripped the tripwire; a deployment that
    /// completed first is deployed back instead.
    async fn stop_from_outside(
        &self,
        progress: GuardrailProgressOf,
        mut g: GuardrailProgress,
        seen: &Seen,
        by: RolledBackBy,
    ) -> Ticked {
        let endpoint = &self.release.guardrail.endpoint;
        let who = by.describe();
        let person = by.person().map(str::to_owned);
        g.stopped_because = Some(format!("stopped by {who}"));
        g.stopped_by = Some(by);
        if seen.in_service_on(&self.release.guardrail.endpoint_config) {
            self.deps.deployments().deploy(endpoint, &g.previous_config, None).await?;
            g.phase = Phase::Reverting;
        } else {
            self.deps.tripwires().trip(&g.tripwire).await?;
            g.phase = Phase::Stopping;
        }
        let reason = format!("Stopped by {who}: {} goes back to {}", endpoint, g.previous_config);
        Ok(self.keep(progress, g, Status::Baking, reason, None).made_by(person.as_deref()))
    }

    /// SageMaker rolled back on its own, sometimes without a reason: the best one there is.
    async fn rolled_back_by_sagemaker(
        &self,
        progress: GuardrailProgressOf,
        g: GuardrailProgress,
        seen: &Seen,
    ) -> Ticked {
        let firing = self.firing(&g.tripwire).await;
        let why = match (&seen.stopped_outside, seen.state.failure_reason.as_deref(), firing) {
            (Some(by), _, _) => format!("stopped by {}", by.describe()),
            (None, Some(reason), _) => format!("SageMaker rolled the deployment back: {reason}"),
            (None, None, Some(alarm)) => format!("SageMaker rolled the deployment back on alarm {alarm}"),
            (None, None, None) => "SageMaker rolled the deployment back without saying why (an auto-rollback alarm \
                                   that has since recovered, or the deployment ran out of time)"
                .to_owned(),
        };
        let by = seen.stopped_outside.clone().unwrap_or(RolledBackBy::Guardrail);
        self.drop_shadow(&g).await?;
        self.end(progress, g, by, why, None).await
    }

    /// The new fleet against the old, while SageMaker shifts traffic to it; unhealthy
    /// trips the tripwire, so SageMaker rolls back.
    async fn judge_deployment(&self, mut progress: GuardrailProgressOf, mut g: GuardrailProgress) -> Ticked {
        let (new, variant) = (&self.release.guardrail.endpoint_config, &self.release.guardrail.variant);
        let previous = g.previous_config.clone();
        let fleets = Some((new.as_str(), previous.as_str()));
        let evidence = self.judge_fleets(&mut progress, variant, variant, fleets, g.phase_started_at).await?;
        if evidence.verdict != Verdict::Unhealthy {
            let reason = format!("SageMaker deploying: {}. {}", g.endpoint, evidence.summary());
            return Ok(self.keep(progress, g, Status::Baking, reason, Some(&evidence)));
        }
        self.deps.tripwires().trip(&g.tripwire).await?;
        g.phase = Phase::Stopping;
        g.stopped_because = Some(evidence.summary());
        g.stopped_by = Some(RolledBackBy::Health);
        warn!(release = %self.release.release, endpoint = %self.release.guardrail.endpoint, decision = "stopping", "tripped {}: {}", g.tripwire, evidence.summary());
        let reason = format!("Unhealthy ({}): tripped {}, so SageMaker rolls back", evidence.summary(), g.tripwire);
        Ok(self.keep(progress, g, Status::Baking, reason, Some(&evidence)))
    }

    /// coalmine tripped its alarm: SageMaker rolls back (or completed first, and the
    /// previous config is deployed back).
    async fn stopping(&self, progress: GuardrailProgressOf, mut g: GuardrailProgress, seen: &Seen) -> Ticked {
        if seen.back_on(&g.previous_config) {
            return self.stopped(progress, g).await;
        }
        if seen.in_service_on(&self.release.guardrail.endpoint_config) {
            self.deps.deployments().deploy(&self.release.guardrail.endpoint, &g.previous_config, None).await?;
            g.phase = Phase::Reverting;
        }
        let reason = format!("Rolling back: {}", g.endpoint);
        Ok(self.keep(progress, g, Status::Baking, reason, None))
    }

    async fn reverting(&self, progress: GuardrailProgressOf, g: GuardrailProgress, seen: &Seen) -> Ticked {
        if seen.in_service_on(&g.previous_config) {
            return self.stopped(progress, g).await;
        }
        let reason = format!("Deploying {} back: {}", g.previous_config, g.endpoint);
        Ok(self.keep(progress, g, Status::Baking, reason, None))
    }

    /// Back on the previous config after coalmine stopped it: the release ends, naming
    /// who stopped it and why.
    async fn stopped(&self, progress: GuardrailProgressOf, g: GuardrailProgress) -> Ticked {
        self.drop_shadow(&g).await?;
        let by = g.stopped_by.clone().unwrap_or(RolledBackBy::Health);
        let why = g.stopped_because.clone().unwrap_or_default();
        self.end(progress, g, by, why, None).await
    }

    /// The judge over `canary` against `stable` (variants of the endpoint, or one
    /// variant's fleets told apart by config), over `[since, now]`.
    async fn judge_fleets(
        &self,
        progress: &mut GuardrailProgressOf,
        canary: &str,
        stable: &str,
        configs: Option<(&str, &str)>,
        since: u64,
    ) -> Result<Evidence> {
        let gates = self.release.judged_gates();
        let target = self.release.target();
        let query = MetricQuery {
            target: &target,
            canary,
            stable,
            start_epoch: since,
            end_epoch: self.now.max(since + 1),
            custom: &gates.custom,
            configs,
            shadow_of: None,
            pins: false,
        };
        observe(&gates, self.deps.alarms(), self.deps.metrics(), &query, progress, self.now).await
    }

    /// An auto-rollback alarm in ALARM, if any: often why SageMaker rolled back. The
    /// tripwire among them: the rollback function trips it before it records why.
    async fn firing(&self, tripwire: &str) -> Option<String> {
        let mut alarms = self.release.judged_gates().alarms;
        alarms.push(tripwire.to_owned());
        let states = self.deps.alarms().states(&alarms).await.ok()?;
        states.into_iter().find(|(_, s)| *s == crate::domain::event::AlarmState::Alarm).map(|(n, _)| n)
    }

    /// After a rollback from a deployment that followed a shadow phase, the endpoint is
    /// back on the shadow config: the candidate still gets a copy of traffic. Take it away.
    async fn drop_shadow(&self, g: &GuardrailProgress) -> Result<()> {
        if self.release.shadow.is_some() && g.previous_config != g.original_config {
            self.deps.deployments().deploy(&self.release.guardrail.endpoint, &g.original_config, None).await?;
        }
        Ok(())
    }

    /// SageMaker's own rollback failed: traffic may be split between fleets. Said loudly,
    /// and the execution fails (its safety step fails too, ending SafetyRollbackFailed).
    pub(super) async fn stuck(&self, state: &EndpointState) -> Error {
        super::control::stuck(self.release, self.execution, self.deps.notifier(), state).await
    }

    /// The release ends rolled back: recorded on the endpoint, and the team told.
    async fn end(
        &self,
        mut progress: GuardrailProgressOf,
        g: GuardrailProgress,
        by: RolledBackBy,
        why: String,
        evidence: Option<&Evidence>,
    ) -> Ticked {
        let release = self.release;
        // A stop from outside is on the stamp already, saying who; anything else is the
        // release's own doing.
        if !matches!(by, RolledBackBy::Operator { .. } | RolledBackBy::Alarm(_)) {
            let stamp = self.live_stamp(&g.original_config, progress.stage, None).rolled_back(by.clone());
            if let Err(e) = self.deps.deployments().stamp_endpoint(&release.guardrail.endpoint, &stamp).await {
                warn!(release = %release.release, error = %e, "the endpoint's record was not updated");
            }
        }
        let next = "The endpoint serves its previous config. Fix the model and start a new release.";
        let message = message(release, self.execution, "rolled back", &why, next, "rolled_back");
        self.deps
            .notifier()
            .publish(&message)
            .await
            .map_err(|e| unsent(&release.release, "the rollback's message", e))?;
        let reason = format!("{}: {why}", by.headline());
        progress.rolled_back_by = Some(by);
        progress.weight = 0.0;
        Ok(self.done(progress, g, Status::RolledBack, reason, evidence))
    }
}

/// Why SageMaker says it failed, or that it did not say.
fn reason_of(state: &EndpointState) -> String {
    state.failure_reason.clone().unwrap_or_else(|| format!("{}, no reason given", state.status))
}
