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

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::domain::deployment::{DeploymentPlan, EndpointState, Size, Traffic};
use crate::domain::error::{Error, Result};
use crate::domain::metrics::MetricSnapshot;
use crate::domain::stamp::{execution_id, Phase as StampPhase, RolledBackBy, Stamp};
use crate::domain::target::{SageMakerVariants, Target};
use crate::ports::{AlarmSource, MetricQuery, MetricSource, Notification, Notifier, TrafficRouter};
use crate::release::judge::{judge, judge_alarms, judge_sequential, Evidence, StageSample, Verdict};
use crate::release::notify::RollbackKind;
use crate::release::preflight::alarm_checks;
use crate::release::spec::{deserialize, validate_name};
use crate::release::tick::{failure_cause, Ending, Progress, SafetyOutcome, Status, StepDeps, Written};
use crate::release::{Gates, JudgeKind, OnInsufficientData};
use crate::rollback::notify::{duration, execution_link, field, subject, ATTR_EVENT, ATTR_RELEASE, ATTR_TARGET};

/// A guardrail release, the execution's input: strictly validated against what AWS
/// would refuse, before any call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailRelease {
    pub release: String,
    pub guardrail: Guardrail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    pub check_every_seconds: u64,
    #[serde(default)]
    pub gates: Gates,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    pub endpoint: String,
    /// The new endpoint config: the same variant names as the one in service.
    pub endpoint_config: String,
    /// The production variant whose fleets coalmine's judge compares.
    #[serde(default = "all_traffic")]
    pub variant: String,
    pub traffic: Traffic,
    #[serde(default)]
    pub termination_wait_seconds: u32,
    pub max_execution_seconds: u32,
    /// SageMaker's auto-rollback alarms, with `gates.alarms` (coalmine judges them too).
    #[serde(default)]
    pub alarms: Vec<String>,
    /// coalmine's own auto-rollback alarm for this endpoint; default
    /// `coalmine-tripwire-ENDPOINT` (name it with the stack's AlarmNamePrefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripwire: Option<String>,
}

/// A shadow phase: `endpoint_config` is the one in service plus the candidate as a
/// shadow variant, which gets a copy of a share of live traffic for `duration_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    pub endpoint_config: String,
    pub variant: String,
    pub duration_seconds: u64,
}

fn all_traffic() -> String {
    "AllTraffic".to_owned()
}

/// AWS allows 10 auto-rollback alarms; coalmine's tripwire is one of them.
const MAX_ALARMS: usize = 9;

impl GuardrailRelease {
    pub fn parse(value: &Value) -> Result<GuardrailRelease> {
        let release: GuardrailRelease = deserialize(value)?;
        release.validate()?;
        Ok(release)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::InvalidRelease(format!("{field}: {why}")));
        validate_name(&self.release)?;
        let g = &self.guardrail;
        for (field, value) in [("guardrail.endpoint", &g.endpoint), ("guardrail.endpoint_config", &g.endpoint_config)] {
            if value.trim().is_empty() {
                return bad(field, "required".into());
            }
        }
        match g.traffic {
            Traffic::Canary { size: Size::CapacityPercent(p), .. } if !(1..=50).contains(&p) => {
                return bad("guardrail.traffic.canary.size", format!("{p}% of capacity: a canary is 1 to 50%"))
            }
            Traffic::Linear { step: Size::CapacityPercent(p), .. } if !(10..=50).contains(&p) => {
                return bad("guardrail.traffic.linear.step", format!("{p}% of capacity: a linear step is 10 to 50%"))
            }
            Traffic::Canary { size: Size::InstanceCount(0), .. }
            | Traffic::Linear { step: Size::InstanceCount(0), .. } => {
                return bad("guardrail.traffic", "an instance count of at least 1 is required".into())
            }
            _ => {}
        }
        let wait = self.wait_seconds();
        if wait > 3600 {
            return bad("guardrail.traffic", format!("wait_seconds {wait} is over AWS's 3600"));
        }
        if g.termination_wait_seconds > 3600 {
            return bad(
                "guardrail.termination_wait_seconds",
                format!("{} is over AWS's 3600", g.termination_wait_seconds),
            );
        }
        if !(600..=28_800).contains(&g.max_execution_seconds) {
            return bad(
                "guardrail.max_execution_seconds",
                format!("{} is outside AWS's 600..=28800", g.max_execution_seconds),
            );
        }
        if let Some(needed) = self.waits(None).filter(|w| u64::from(g.max_execution_seconds) <= *w) {
            return bad(
                "guardrail.max_execution_seconds",
                format!(
                    "{}: the waits alone take {needed} s; SageMaker would time the deployment out",
                    g.max_execution_seconds
                ),
            );
        }
        let alarms = self.judged_gates().alarms.len();
        if alarms == 0 || alarms > MAX_ALARMS {
            return bad(
                "guardrail.alarms",
                format!(
                    "{alarms} alarms with gates.alarms: 1 to {MAX_ALARMS} (AWS allows 10 auto-rollback alarms, and \
                     coalmine's tripwire is one)"
                ),
            );
        }
        if let Some(shadow) = &self.shadow {
            if shadow.endpoint_config == g.endpoint_config {
                return bad(
                    "shadow.endpoint_config",
                    "the shadow phase needs its own config, with the candidate as a shadow variant".into(),
                );
            }
            if !(60..=86_400).contains(&shadow.duration_seconds) {
                return bad("shadow.duration_seconds", format!("{} is outside 60..=86400", shadow.duration_seconds));
            }
        }
        if self.check_every_seconds == 0 || self.check_every_seconds > 86_400 {
            return bad("check_every_seconds", format!("{} is outside 1..=86400", self.check_every_seconds));
        }
        self.gates.validate()
    }

    pub fn target(&self) -> Target {
        Target::Sagemaker(SageMakerVariants {
            endpoint: self.guardrail.endpoint.clone(),
            stable_variant: Some(self.guardrail.variant.clone()),
            canary_variant: self.guardrail.variant.clone(),
        })
    }

    pub fn tripwire(&self) -> String {
        self.guardrail.tripwire.clone().unwrap_or_else(|| format!("coalmine-tripwire-{}", self.guardrail.endpoint))
    }

    fn wait_seconds(&self) -> u32 {
        match self.guardrail.traffic {
            Traffic::Canary { wait_seconds, .. } | Traffic::Linear { wait_seconds, .. } => wait_seconds,
        }
    }

    /// The deployment's waits, when knowable: canary, one wait; linear, a wait per
    /// step (counting instances needs the fleet's size); plus the termination wait.
    pub fn waits(&self, instances: Option<u32>) -> Option<u64> {
        let g = &self.guardrail;
        let steps = match g.traffic {
            Traffic::Canary { .. } => 1,
            Traffic::Linear { step: Size::CapacityPercent(p), .. } => u64::from(100_u32.div_ceil(p)),
            Traffic::Linear { step: Size::InstanceCount(n), .. } => u64::from(instances?.div_ceil(n)),
        };
        Some(steps * u64::from(self.wait_seconds()) + u64::from(g.termination_wait_seconds))
    }

    /// Every alarm of the release rolls the deployment back the moment it fires, with no
    /// coalmine code in the path: SageMaker watches them all, coalmine's tripwire too.
    fn plan(&self) -> DeploymentPlan {
        let mut alarms = self.judged_gates().alarms;
        alarms.push(self.tripwire());
        DeploymentPlan {
            traffic: self.guardrail.traffic,
            termination_wait_seconds: self.guardrail.termination_wait_seconds,
            max_execution_seconds: self.guardrail.max_execution_seconds,
            alarms,
        }
    }

    /// The gate alarms coalmine judges: the release's and SageMaker's, once each.
    pub fn judged_gates(&self) -> Gates {
        let mut gates = self.gates.clone();
        for alarm in &self.guardrail.alarms {
            if !gates.alarms.contains(alarm) {
                gates.alarms.push(alarm.clone());
            }
        }
        gates
    }

    /// How many phases the timeline shows: the shadow (if any), then the deployment.
    pub fn phases(&self) -> usize {
        1 + usize::from(self.shadow.is_some())
    }

    /// "canary 10% of capacity, then the rest after 10m; 5m termination wait"
    pub fn describe_traffic(&self) -> String {
        let size = |s: Size| match s {
            Size::CapacityPercent(p) => format!("{p}% of capacity"),
            Size::InstanceCount(n) => format!("{n} instance{}", if n == 1 { "" } else { "s" }),
        };
        let shift = match self.guardrail.traffic {
            Traffic::Canary { size: s, wait_seconds } => {
                format!("canary {}, then the rest after {}", size(s), duration(u64::from(wait_seconds)))
            }
            Traffic::Linear { step, wait_seconds } => {
                format!("linear steps of {}, {} apart", size(step), duration(u64::from(wait_seconds)))
            }
        };
        format!(
            "{shift}; {} termination wait; at most {}",
            duration(u64::from(self.guardrail.termination_wait_seconds)),
            duration(u64::from(self.guardrail.max_execution_seconds))
        )
    }
}

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
    pub stopped_by: Option<RollbackKind>,
}

type Deps<'a, R, N, A, M> = StepDeps<'a, R, N, A, M>;

/// One tick of a guardrail release.
pub async fn tick(
    release: &GuardrailRelease,
    progress: Option<Progress>,
    execution: &str,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let endpoint = &release.guardrail.endpoint;
    let Some(mut progress) = progress else {
        return start(release, execution, deps, now).await;
    };
    if matches!(progress.status, Status::Promoted | Status::RolledBack) {
        return Err(Error::InvalidRelease(format!(
            "the release already ended {}; start a new execution",
            progress.status.as_str()
        )));
    }
    progress.ticks += 1;
    let state = deps.router.endpoint_state(endpoint).await?;
    let Some(mut g) = progress.guardrail.clone() else {
        return Err(Error::InvalidRelease(
            "progress: no guardrail phase; it is the stepper's own output, do not edit it".into(),
        ));
    };
    g.endpoint = endpoint_text(&state);
    if state.status == "UpdateRollbackFailed" {
        return Err(stuck(release, execution, deps, &state).await);
    }
    let new = &release.guardrail.endpoint_config;
    let in_service_on = |config: &str| state.is_in_service() && state.config == config;
    let stamp_by_operator = state.stamp.as_ref().filter(|s| s.is_by(execution)).and_then(|s| match &s.phase {
        StampPhase::RolledBack(by @ RolledBackBy::Operator { .. }) => Some(by.describe()),
        _ => None,
    });
    match g.phase.clone() {
        Phase::ShadowStarting => {
            let shadow = release.shadow.as_ref().map(|s| s.endpoint_config.clone()).unwrap_or_default();
            if in_service_on(&shadow) {
                g.phase = Phase::Shadowing;
                g.phase_started_at = now;
                let reason = format!(
                    "Shadowing: the candidate serves a copy of live traffic for {}",
                    duration(shadow_duration(release))
                );
                return Ok(keep(progress, g, now, Status::Advanced, release.check_every_seconds, reason, None));
            }
            if in_service_on(&g.original_config) || state.status == "Failed" {
                let why = format!("the shadow config did not come into service ({})", reason_of(&state));
                return end(release, progress, g, execution, deps, now, RollbackKind::Health, why, None).await;
            }
            let reason = format!("Starting the shadow: endpoint {}", g.endpoint);
            Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None))
        }
        Phase::Shadowing => {
            let shadow = release.shadow.clone().unwrap_or(Shadow {
                endpoint_config: String::new(),
                variant: String::new(),
                duration_seconds: 0,
            });
            if let Some(by) = stamp_by_operator {
                deps.router.deploy(endpoint, &g.original_config, None).await?;
                g.phase = Phase::ShadowReverting;
                g.stopped_because = Some(format!("stopped by {by}"));
                g.stopped_by = Some(RollbackKind::Operator);
                let reason = "Shadow stopped by hand: the endpoint goes back to its original config".to_owned();
                return Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None));
            }
            let evidence = judge_fleets(
                release,
                &mut progress,
                deps,
                now,
                &shadow.variant,
                &release.guardrail.variant,
                None,
                g.phase_started_at,
            )
            .await?;
            let over = now >= g.phase_started_at + shadow.duration_seconds;
            let hold_over = now >= g.phase_started_at + shadow.duration_seconds + release.gates.max_hold_seconds;
            let failed = match evidence.verdict {
                Verdict::Unhealthy => Some(evidence.summary()),
                Verdict::Inconclusive if over && release.gates.on_insufficient_data == OnInsufficientData::Rollback => {
                    Some(evidence.summary())
                }
                Verdict::Inconclusive
                    if hold_over && release.gates.on_insufficient_data == OnInsufficientData::Hold =>
                {
                    Some(format!("{}, still after holding", evidence.summary()))
                }
                _ => None,
            };
            if let Some(why) = failed {
                deps.router.deploy(endpoint, &g.original_config, None).await?;
                g.phase = Phase::ShadowReverting;
                g.stopped_because = Some(why.clone());
                let reason = format!("Shadow failed ({why}): the endpoint goes back to its original config");
                return Ok(keep(
                    progress,
                    g,
                    now,
                    Status::Baking,
                    release.check_every_seconds,
                    reason,
                    Some(&evidence),
                ));
            }
            let proceed = over
                && (evidence.verdict == Verdict::Healthy
                    || release.gates.on_insufficient_data == OnInsufficientData::Proceed);
            if !proceed {
                let status = if over { Status::Holding } else { Status::Baking };
                let reason = format!("Shadow: {}", evidence.summary());
                return Ok(keep(progress, g, now, status, release.check_every_seconds, reason, Some(&evidence)));
            }
            deps.router.deploy(endpoint, new, Some(&release.plan())).await?;
            g.previous_config = shadow.endpoint_config.clone();
            g.phase = Phase::Deploying;
            g.phase_started_at = now;
            progress.stage = 1;
            progress.stage_entered_at = now;
            let reason = format!(
                "Shadow passed ({}). SageMaker deploys {new}: {}",
                evidence.summary(),
                release.describe_traffic()
            );
            Ok(keep(progress, g, now, Status::Advanced, release.check_every_seconds, reason, Some(&evidence)))
        }
        Phase::ShadowReverting => {
            if in_service_on(&g.original_config) {
                let kind = g.stopped_by.unwrap_or(RollbackKind::Health);
                let why = g.stopped_because.clone().unwrap_or_default();
                let why = match kind {
                    RollbackKind::Operator => format!("{why} during its shadow test; no user was served by it"),
                    _ => format!("the candidate failed its shadow test ({why}); no user was served by it"),
                };
                return end(release, progress, g, execution, deps, now, kind, why, None).await;
            }
            let reason = format!("Going back to {}: endpoint {}", g.original_config, g.endpoint);
            Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None))
        }
        Phase::Deploying => {
            if let Some(by) = stamp_by_operator.as_deref().filter(|_| !in_service_on(&g.previous_config)) {
                // `coalmine abort` tripped the tripwire; a deployment that completed
                // first is deployed back instead.
                g.stopped_because = Some(format!("stopped by {by}"));
                g.stopped_by = Some(RollbackKind::Operator);
                if in_service_on(new) {
                    deps.router.deploy(endpoint, &g.previous_config, None).await?;
                    g.phase = Phase::Reverting;
                } else {
                    deps.alarms.trip(&g.tripwire).await?;
                    g.phase = Phase::Stopping;
                }
                let reason = format!("Stopped by {by}: {} goes back to {}", endpoint, g.previous_config);
                return Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None));
            }
            if in_service_on(new) {
                let stamp = own_stamp(release, execution, &g.original_config, progress.stage).promoted();
                deps.router.stamp_endpoint(endpoint, &stamp).await?;
                progress.weight = 1.0;
                let reason =
                    format!("Promoted: SageMaker's deployment of {new} completed and coalmine found it healthy");
                return Ok(finish(release, progress, g, now, Status::Promoted, reason, None));
            }
            if in_service_on(&g.previous_config) || state.status == "Failed" {
                // SageMaker rolled back on its own, sometimes without a reason.
                let firing = firing(release, deps).await;
                let kind = if stamp_by_operator.is_some() { RollbackKind::Operator } else { RollbackKind::Guardrail };
                let why = match (state.failure_reason.as_deref(), firing, stamp_by_operator) {
                    (_, _, Some(by)) => format!("stopped by {by}"),
                    (Some(reason), _, _) => format!("SageMaker rolled the deployment back: {reason}"),
                    (None, Some(alarm), _) => format!("SageMaker rolled the deployment back on alarm {alarm}"),
                    (None, None, _) => {
                        "SageMaker rolled the deployment back without saying why (an auto-rollback alarm \
                                        that has since recovered, or the deployment ran out of time)"
                            .to_owned()
                    }
                };
                drop_shadow(release, deps, &g).await?;
                return end(release, progress, g, execution, deps, now, kind, why, None).await;
            }
            let ours = state.pending.as_ref().is_some_and(|p| p.config == *new);
            if ours {
                let previous = g.previous_config.clone();
                let variant = release.guardrail.variant.clone();
                let evidence = judge_fleets(
                    release,
                    &mut progress,
                    deps,
                    now,
                    &variant,
                    &variant,
                    Some((new.as_str(), previous.as_str())),
                    g.phase_started_at,
                )
                .await?;
                if evidence.verdict == Verdict::Unhealthy {
                    deps.alarms.trip(&g.tripwire).await?;
                    g.phase = Phase::Stopping;
                    g.stopped_because = Some(evidence.summary());
                    g.stopped_by = Some(RollbackKind::Health);
                    warn!(release = %release.release, endpoint = %endpoint, decision = "stopping", "tripped {}: {}", g.tripwire, evidence.summary());
                    let reason =
                        format!("Unhealthy ({}): tripped {}, so SageMaker rolls back", evidence.summary(), g.tripwire);
                    return Ok(keep(
                        progress,
                        g,
                        now,
                        Status::Baking,
                        release.check_every_seconds,
                        reason,
                        Some(&evidence),
                    ));
                }
                let reason = format!("SageMaker deploying: {}. {}", g.endpoint, evidence.summary());
                return Ok(keep(
                    progress,
                    g,
                    now,
                    Status::Baking,
                    release.check_every_seconds,
                    reason,
                    Some(&evidence),
                ));
            }
            let reason = format!("SageMaker deploying: {}", g.endpoint);
            Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None))
        }
        Phase::Stopping => {
            if in_service_on(&g.previous_config) || state.status == "Failed" {
                drop_shadow(release, deps, &g).await?;
                let (kind, why) =
                    (g.stopped_by.unwrap_or(RollbackKind::Health), g.stopped_because.clone().unwrap_or_default());
                return end(release, progress, g, execution, deps, now, kind, why, None).await;
            }
            if in_service_on(new) {
                // It completed before the trip took: deploy the previous config back.
                deps.router.deploy(endpoint, &g.previous_config, None).await?;
                g.phase = Phase::Reverting;
            }
            let reason = format!("Rolling back: {}", g.endpoint);
            Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None))
        }
        Phase::Reverting => {
            if in_service_on(&g.previous_config) {
                drop_shadow(release, deps, &g).await?;
                let (kind, why) =
                    (g.stopped_by.unwrap_or(RollbackKind::Health), g.stopped_because.clone().unwrap_or_default());
                return end(release, progress, g, execution, deps, now, kind, why, None).await;
            }
            let reason = format!("Deploying {} back: {}", g.previous_config, g.endpoint);
            Ok(keep(progress, g, now, Status::Baking, release.check_every_seconds, reason, None))
        }
    }
}

async fn start(
    release: &GuardrailRelease,
    execution: &str,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let g = &release.guardrail;
    let state = deps.router.endpoint_state(&g.endpoint).await.map_err(|e| match e {
        Error::NotFound { detail, .. } => Error::InvalidRelease(format!(
            "guardrail.endpoint: {} was not found ({detail}); check the name",
            g.endpoint
        )),
        Error::AccessDenied { operation, detail } => Error::InvalidRelease(format!(
            "guardrail.endpoint: coalmine may not use {} ({operation}: {detail}); check the name, and the stack's \
             SageMakerEndpointArns parameter",
            g.endpoint
        )),
        other => other,
    })?;
    if let Some(stamp) = state.stamp.clone().filter(|s| s.is_by(execution) && s.is_live()) {
        // An earlier attempt of this tick started it: pick it up.
        let shadowing = release.shadow.as_ref().is_some_and(|s| {
            state.config == s.endpoint_config || state.pending.as_ref().is_some_and(|p| p.config == s.endpoint_config)
        });
        let (phase, stage) =
            if shadowing { (Phase::ShadowStarting, 0) } else { (Phase::Deploying, release.phases() - 1) };
        let previous = if shadowing {
            stamp.stable.clone()
        } else {
            release.shadow.as_ref().map_or(stamp.stable.clone(), |s| s.endpoint_config.clone())
        };
        let g = GuardrailProgress {
            phase,
            original_config: stamp.stable.clone(),
            previous_config: previous,
            tripwire: release.tripwire(),
            phase_started_at: now,
            endpoint: endpoint_text(&state),
            stopped_because: None,
            stopped_by: None,
        };
        let progress = new_progress(release, &stamp.stable, stage, now);
        return Ok(keep(
            progress,
            g,
            now,
            Status::Advanced,
            release.check_every_seconds,
            "Picked up what an earlier attempt of this tick started".into(),
            None,
        ));
    }
    preflight(release, &state, deps.router, deps.alarms).await?;
    let tripwire = release.tripwire();
    deps.alarms.ensure_tripwire(&tripwire, &g.endpoint).await.map_err(|e| match e {
        Error::AccessDenied { operation, detail } => Error::InvalidRelease(format!(
            "guardrail.tripwire: coalmine may not create the alarm {tripwire} ({operation}: {detail}); name it with \
             the stack's AlarmNamePrefix"
        )),
        other => other,
    })?;
    deps.router.mark_tripwire(&g.endpoint, &tripwire).await?;
    deps.router.stamp_endpoint(&g.endpoint, &own_stamp(release, execution, &state.config, 0)).await?;
    let (phase, config, plan, stage) = match &release.shadow {
        Some(shadow) => (Phase::ShadowStarting, shadow.endpoint_config.clone(), None, 0),
        None => (Phase::Deploying, g.endpoint_config.clone(), Some(release.plan()), 0),
    };
    deps.router.deploy(&g.endpoint, &config, plan.as_ref()).await?;
    let reason = match &release.shadow {
        Some(shadow) => format!(
            "Started: the shadow config {} (candidate variant {} beside {}), for {}",
            shadow.endpoint_config,
            shadow.variant,
            g.variant,
            duration(shadow.duration_seconds)
        ),
        None => format!(
            "Started: SageMaker deploys {} to {}: {}",
            g.endpoint_config,
            g.endpoint,
            release.describe_traffic()
        ),
    };
    info!(release = %release.release, endpoint = %g.endpoint, decision = "advanced", "{reason}");
    let progress = new_progress(release, &state.config, stage, now);
    let gp = GuardrailProgress {
        phase,
        original_config: state.config.clone(),
        previous_config: state.config.clone(),
        tripwire,
        phase_started_at: now,
        endpoint: endpoint_text(&state),
        stopped_because: None,
        stopped_by: None,
    };
    Ok(keep(progress, gp, now, Status::Advanced, release.check_every_seconds, reason, None))
}

/// What the first tick checks before it moves anything: the endpoint is in service and
/// not on the new config already; the configs exist and keep the variant names; the
/// traffic sizes fit the fleet; the alarms exist and are calm. Said as one line.
pub async fn preflight(
    release: &GuardrailRelease,
    state: &EndpointState,
    router: &impl TrafficRouter,
    alarms: &impl AlarmSource,
) -> Result<String> {
    let g = &release.guardrail;
    if !state.is_in_service() {
        return Err(Error::Refused(format!(
            "{} is {}: another update is in flight; wait for it to end",
            g.endpoint, state.status
        )));
    }
    if state.config == g.endpoint_config {
        return Err(Error::InvalidRelease(format!(
            "guardrail.endpoint_config: {} is already in service on {}",
            g.endpoint_config, g.endpoint
        )));
    }
    let (current, candidate) =
        (router.config_variants(&state.config).await?, router.config_variants(&g.endpoint_config).await?);
    let names = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    if names(&current.production) != names(&candidate.production) {
        return Err(Error::InvalidRelease(format!(
            "guardrail.endpoint_config: its variants {:?} differ from those in service {:?}; a guardrail deployment keeps the variant names",
            candidate.production, current.production
        )));
    }
    let Some(&(_, instances)) = state.variants.iter().find(|(name, _)| *name == g.variant) else {
        return Err(Error::InvalidRelease(format!(
            "guardrail.variant: {} has no production variant {}",
            g.endpoint, g.variant
        )));
    };
    match g.traffic {
        Traffic::Canary { size: Size::InstanceCount(n), .. } if n * 2 > instances => {
            return Err(Error::InvalidRelease(format!(
                "guardrail.traffic.canary.size: {n} instances is over half the variant's {instances}"
            )))
        }
        Traffic::Linear { step: Size::InstanceCount(n), .. } if n * 2 > instances || n * 10 < instances => {
            return Err(Error::InvalidRelease(format!(
                "guardrail.traffic.linear.step: {n} instances is not 10 to 50% of the variant's {instances}"
            )))
        }
        _ => {}
    }
    if let Some(needed) = release.waits(Some(instances)).filter(|w| u64::from(g.max_execution_seconds) <= *w) {
        return Err(Error::InvalidRelease(format!(
            "guardrail.max_execution_seconds: {}: the waits alone take {needed} s",
            g.max_execution_seconds
        )));
    }
    if let Some(shadow) = &release.shadow {
        let with_shadow = router.config_variants(&shadow.endpoint_config).await?;
        if names(&with_shadow.production) != names(&current.production) || !with_shadow.shadow.contains(&shadow.variant)
        {
            return Err(Error::InvalidRelease(format!(
                "shadow.endpoint_config: {} should hold the variants in service {:?} and shadow variant {}, not {:?} and shadows {:?}",
                shadow.endpoint_config, current.production, shadow.variant, with_shadow.production, with_shadow.shadow
            )));
        }
    }
    let gates = release.judged_gates();
    let states = alarms.states(&gates.alarms).await?;
    let (exist, calm) = alarm_checks(&gates, &states);
    exist?;
    calm?;
    Ok(format!(
        "{} {} on {}; {} has {instances} instance{}; {} alarm{} calm",
        g.endpoint,
        state.status,
        state.config,
        g.variant,
        if instances == 1 { "" } else { "s" },
        gates.alarms.len(),
        if gates.alarms.len() == 1 { "" } else { "s" }
    ))
}

/// `coalmine abort` on a guardrail release in flight: stops what SageMaker is deploying
/// (trips the tripwire) first, then stamps the release stopped by `who` and tells the
/// team. Its execution does the rest at its next check: takes a shadow away, or deploys
/// the previous config back if the deployment completed first. Returns what happens now.
#[allow(clippy::too_many_arguments)]
pub async fn abort(
    router: &impl TrafficRouter,
    alarms: &impl AlarmSource,
    notifier: &impl Notifier,
    release: &GuardrailRelease,
    execution: &str,
    who: &str,
    why: &str,
) -> Result<String> {
    let endpoint = &release.guardrail.endpoint;
    let state = router.endpoint_state(endpoint).await?;
    let Some(stamp) = state.stamp.clone().filter(|s| s.is_by(execution)) else {
        return Err(Error::Refused(format!(
            "{endpoint} carries no stamp of release {}: it has not started anything there yet, or another \
             release has since",
            release.release
        )));
    };
    if !stamp.is_live() {
        return Err(Error::Refused(format!("release {} has already ended on {endpoint}", release.release)));
    }
    let deploying = state.pending.as_ref().is_some_and(|p| p.config == release.guardrail.endpoint_config);
    let now = if deploying {
        alarms.trip(&release.tripwire()).await?;
        format!("tripped {}, so SageMaker rolls the deployment back now", release.tripwire())
    } else {
        format!("its execution takes {} back to {} at its next check", endpoint, stamp.stable)
    };
    let by = RolledBackBy::Operator { who: who.to_owned(), why: Some(why.to_owned()) };
    router.stamp_endpoint(endpoint, &stamp.rolled_back(by.clone())).await?;
    let message = message(release, execution, "aborted", &by.describe(), &format!("coalmine {now}."), "aborted");
    notifier.publish(&message).await.map_err(|e| Error::Incomplete {
        summary: format!("release {} was stopped, but the team's message was not sent: {e}", release.release),
        retryable: true,
    })?;
    Ok(now)
}

/// After a tick failed for good: stop what this execution started (trip its alarm, or
/// take a shadow config back), and say how the execution ends.
pub async fn safety_rollback(
    release: Result<GuardrailRelease>,
    failure: &Value,
    execution: &str,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
) -> Result<SafetyOutcome> {
    let cause = failure_cause(failure);
    let release = match release {
        Ok(release) => release,
        // It never parsed, so no tick of it ever ran.
        Err(e) => return Ok(SafetyOutcome::invalid(&e.to_string())),
    };
    let g = &release.guardrail;
    let state = match deps.router.endpoint_state(&g.endpoint).await {
        Ok(state) => state,
        Err(Error::NotFound { .. } | Error::AccessDenied { .. } | Error::InvalidRelease(_)) => {
            return Ok(SafetyOutcome::invalid(&cause))
        }
        Err(other) => return Err(other),
    };
    if state.status == "UpdateRollbackFailed" {
        return Err(stuck(&release, execution, deps, &state).await);
    }
    let ours = state.stamp.as_ref().filter(|s| s.is_by(execution));
    let failed = |undone: bool, what: &str| SafetyOutcome {
        ending: Ending::FailedAfterUndoing,
        undone,
        cause: format!("Failed after undoing: {cause}. {what}"),
    };
    let Some(stamp) = ours else {
        return Ok(failed(false, "This release had started nothing, so there was nothing to undo"));
    };
    if state.is_in_service() && state.config == g.endpoint_config {
        return Ok(SafetyOutcome {
            ending: Ending::Promoted,
            undone: false,
            cause: format!("Promoted; then a tick failed ({cause})"),
        });
    }
    let shadow = release.shadow.as_ref().map(|s| s.endpoint_config.as_str());
    if state.pending.as_ref().is_some_and(|p| p.config == g.endpoint_config) {
        deps.alarms.trip(&release.tripwire()).await?;
        return Ok(failed(
            true,
            &format!("coalmine tripped {}, so SageMaker rolls the deployment back", release.tripwire()),
        ));
    }
    if state.is_in_service() && Some(state.config.as_str()) == shadow {
        deps.router.deploy(&g.endpoint, &stamp.stable, None).await?;
        return Ok(failed(
            true,
            &format!("coalmine took the shadow away: {} goes back to {}", g.endpoint, stamp.stable),
        ));
    }
    Ok(failed(false, "Nothing of it was left in flight"))
}

/// The judge over `canary` against `stable` (variants of the endpoint, or one variant's
/// fleets told apart by config), over `[since, now]`.
#[allow(clippy::too_many_arguments)]
async fn judge_fleets(
    release: &GuardrailRelease,
    progress: &mut Progress,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
    canary: &str,
    stable: &str,
    configs: Option<(&str, &str)>,
    since: u64,
) -> Result<Evidence> {
    let gates = release.judged_gates();
    let states = if gates.alarms.is_empty() { Vec::new() } else { deps.alarms.states(&gates.alarms).await? };
    if judge_alarms(&gates, &states).is_some() {
        return Ok(judge(&gates, &states, None));
    }
    let target = release.target();
    let query = MetricQuery {
        target: &target,
        canary,
        stable,
        start_epoch: since,
        end_epoch: now.max(since + 1),
        custom: &gates.custom,
        configs,
    };
    let snapshot: MetricSnapshot = deps.metrics.fetch(&query).await?;
    Ok(match gates.judge {
        JudgeKind::FixedHorizon => judge(&gates, &states, Some(&snapshot)),
        JudgeKind::Sequential => {
            let sample = StageSample { stage: progress.stage, seconds: now.saturating_sub(since), metrics: snapshot };
            match progress.samples.last_mut() {
                Some(last) if last.stage == progress.stage => *last = sample,
                _ => progress.samples.push(sample),
            }
            judge_sequential(&gates, &states, &progress.samples)
        }
    })
}

/// A gate alarm in ALARM, if any: often why SageMaker rolled back.
async fn firing(
    release: &GuardrailRelease,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
) -> Option<String> {
    let gates = release.judged_gates();
    let states = deps.alarms.states(&gates.alarms).await.ok()?;
    states.into_iter().find(|(_, s)| *s == crate::domain::event::AlarmState::Alarm).map(|(n, _)| n)
}

/// After a rollback from a deployment that followed a shadow phase, the endpoint is back
/// on the shadow config: the candidate still gets a copy of traffic. Take it away.
async fn drop_shadow(
    release: &GuardrailRelease,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    g: &GuardrailProgress,
) -> Result<()> {
    if release.shadow.is_some() && g.previous_config != g.original_config {
        deps.router.deploy(&release.guardrail.endpoint, &g.original_config, None).await?;
    }
    Ok(())
}

/// SageMaker's own rollback failed: traffic may be split between fleets. Said loudly,
/// and the execution fails (its safety step fails too, ending SafetyRollbackFailed).
async fn stuck(
    release: &GuardrailRelease,
    execution: &str,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    state: &EndpointState,
) -> Error {
    let endpoint = &release.guardrail.endpoint;
    let why = format!(
        "SageMaker's rollback of {endpoint} failed (UpdateRollbackFailed: {}): traffic may be split between the old and \
         new fleets",
        state.failure_reason.as_deref().unwrap_or("no reason given")
    );
    let next = "Fix the endpoint by hand now: UpdateEndpoint to the config you trust, and check its variants' weights.";
    let message = message(release, execution, "may be stuck", &why, next, "update_rollback_failed");
    if let Err(e) = deps.notifier.publish(&message).await {
        warn!(release = %release.release, error = %e, "the stuck endpoint's message was not sent");
    }
    Error::Unsupported { target: release.target(), detail: format!("{why}. {next}") }
}

#[allow(clippy::too_many_arguments)]
async fn end(
    release: &GuardrailRelease,
    mut progress: Progress,
    g: GuardrailProgress,
    execution: &str,
    deps: &Deps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
    kind: RollbackKind,
    why: String,
    evidence: Option<&Evidence>,
) -> Result<Progress> {
    let endpoint = &release.guardrail.endpoint;
    // An operator's stamp already says who; anything else is the release's own doing.
    if kind != RollbackKind::Operator {
        let stamp = own_stamp(release, execution, &g.original_config, progress.stage).rolled_back(RolledBackBy::Health);
        if let Err(e) = deps.router.stamp_endpoint(endpoint, &stamp).await {
            warn!(release = %release.release, error = %e, "the endpoint's record was not updated");
        }
    }
    let next = "The endpoint serves its previous config. Fix the model and start a new release.";
    let message = message(release, execution, "rolled back", &why, next, "rolled_back");
    deps.notifier.publish(&message).await.map_err(|e| Error::Incomplete {
        summary: format!("release {}: the rollback's message was not sent: {e}", release.release),
        retryable: true,
    })?;
    progress.rolled_back_by = Some(kind);
    progress.weight = 0.0;
    let reason = format!("{}: {why}", kind.headline());
    Ok(finish(release, progress, g, now, Status::RolledBack, reason, evidence))
}

fn message(
    release: &GuardrailRelease,
    execution: &str,
    headline: &str,
    why: &str,
    next: &str,
    event: &str,
) -> Notification {
    let endpoint = &release.guardrail.endpoint;
    let mut body = format!(
        "Release {} (a guardrail deployment of {} to {endpoint}) {headline}.\n\n",
        release.release, release.guardrail.endpoint_config
    );
    field(&mut body, "Release", &release.release);
    field(&mut body, "Endpoint", endpoint);
    field(&mut body, "Config", &release.guardrail.endpoint_config);
    field(&mut body, "Why", why);
    if let Some(link) = execution_link(execution, execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    field(&mut body, "Next", next);
    Notification {
        subject: subject(&format!("coalmine: {} on {endpoint} {headline}", release.release)),
        body,
        attributes: vec![
            (ATTR_EVENT, event.to_owned()),
            (ATTR_TARGET, format!("sagemaker:{endpoint}")),
            (ATTR_RELEASE, release.release.clone()),
        ],
    }
}

fn own_stamp(release: &GuardrailRelease, execution: &str, original: &str, stage: usize) -> Stamp {
    Stamp {
        execution: execution_id(execution).to_owned(),
        stable: original.to_owned(),
        phase: StampPhase::Live,
        stage: Some((stage + 1, release.phases())),
        release: Some(release.release.clone()),
        hold: None,
        request: None,
    }
}

fn new_progress(release: &GuardrailRelease, original: &str, stage: usize, now: u64) -> Progress {
    let written = Written { stable: original.to_owned(), canary: None, weight: 0.0 };
    Progress { stage, wait_seconds: release.check_every_seconds, ..Progress::new(original, written, now) }
}

fn keep(
    mut progress: Progress,
    g: GuardrailProgress,
    now: u64,
    status: Status,
    wait: u64,
    reason: String,
    evidence: Option<&Evidence>,
) -> Progress {
    progress.status = status;
    progress.wait_seconds = wait;
    progress.reason = reason;
    progress.guardrail = Some(g);
    progress.record(now, evidence.and_then(|e| serde_json::to_value(e).ok()));
    progress
}

fn finish(
    release: &GuardrailRelease,
    progress: Progress,
    g: GuardrailProgress,
    now: u64,
    status: Status,
    reason: String,
    evidence: Option<&Evidence>,
) -> Progress {
    info!(release = %release.release, endpoint = %release.guardrail.endpoint, decision = status.as_str(), "{reason}");
    keep(progress, g, now, status, 0, reason, evidence)
}

fn endpoint_text(state: &EndpointState) -> String {
    match &state.pending {
        Some(pending) => format!("{} ({} deploying: {})", state.status, pending.config, pending.describe()),
        None => format!("{} on {}", state.status, state.config),
    }
}

fn reason_of(state: &EndpointState) -> String {
    state.failure_reason.clone().unwrap_or_else(|| format!("{}, no reason given", state.status))
}

fn shadow_duration(release: &GuardrailRelease) -> u64 {
    release.shadow.as_ref().map_or(0, |s| s.duration_seconds)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::release::spec::tests::sample_json;

    fn sample() -> Value {
        sample_json("sagemaker-guardrail-ai-model-8.json")
    }

    type Edit = fn(&mut Value);

    fn refused(edit: impl FnOnce(&mut Value)) -> String {
        let mut json = sample();
        edit(&mut json);
        match GuardrailRelease::parse(&json) {
            Err(Error::InvalidRelease(why)) => why,
            other => panic!("expected InvalidRelease, got {other:?}"),
        }
    }

    #[test]
    fn the_sample_is_valid_and_reads_as_a_person_would_say_it() {
        let release = GuardrailRelease::parse(&sample()).unwrap();
        assert_eq!(release.tripwire(), "coalmine-tripwire-ai-model-endpoint");
        assert_eq!(release.phases(), 2);
        assert_eq!(
            release.describe_traffic(),
            "canary 10% of capacity, then the rest after 10m; 5m termination wait; at most 1h00m"
        );
        assert_eq!(release.waits(None), Some(900));
        assert_eq!(release.plan().alarms, ["coalmine-ai-model-5xx", "coalmine-tripwire-ai-model-endpoint"]);
    }

    #[test]
    fn what_aws_would_refuse_is_refused_before_any_call() {
        let cases: [(&str, Edit); 8] = [
            ("guardrail.traffic.canary.size", |j| {
                j["guardrail"]["traffic"]["canary"]["size"] = json!({"capacity_percent": 60})
            }),
            ("guardrail.traffic.linear.step", |j| {
                j["guardrail"]["traffic"] = json!({"linear": {"step": {"capacity_percent": 5}, "wait_seconds": 60}})
            }),
            ("instance count of at least 1", |j| {
                j["guardrail"]["traffic"]["canary"]["size"] = json!({"instance_count": 0})
            }),
            ("over AWS's 3600", |j| j["guardrail"]["traffic"]["canary"]["wait_seconds"] = json!(3601)),
            ("outside AWS's 600..=28800", |j| j["guardrail"]["max_execution_seconds"] = json!(300)),
            ("1 to 9", |j| j["guardrail"]["alarms"] = json!((0..10).map(|i| format!("a{i}")).collect::<Vec<_>>())),
            ("its own config", |j| j["shadow"]["endpoint_config"] = json!("ai-model-config-v8")),
            ("unknown field", |j| j["guardrail"]["canary_percent"] = json!(10)),
        ];
        for (expected, edit) in cases {
            let why = refused(edit);
            assert!(why.contains(expected), "{expected:?} not in {why:?}");
        }
    }

    #[test]
    fn a_deadline_shorter_than_the_waits_is_refused() {
        // 10 linear steps of 10%, 10 minutes apart, cannot finish within an hour.
        let why = refused(|j| {
            j["guardrail"]["traffic"] = json!({"linear": {"step": {"capacity_percent": 10}, "wait_seconds": 600}})
        });
        assert!(why.contains("the waits alone take 6300 s"), "{why}");
    }

    #[test]
    fn the_tripwire_is_always_among_the_auto_rollback_alarms() {
        let mut json = sample();
        json["guardrail"]["tripwire"] = json!("coalmine-prod-tripwire");
        let release = GuardrailRelease::parse(&json).unwrap();
        assert_eq!(release.plan().alarms.last().unwrap(), "coalmine-prod-tripwire");
        assert!(release.judged_gates().alarms.contains(&"coalmine-ai-model-5xx".to_owned()));

        json["gates"]["alarms"] = json!(["coalmine-ai-model-latency", "coalmine-ai-model-5xx"]);
        let release = GuardrailRelease::parse(&json).unwrap();
        assert_eq!(
            release.plan().alarms,
            ["coalmine-ai-model-latency", "coalmine-ai-model-5xx", "coalmine-prod-tripwire"],
            "a gate alarm rolls back too, without waiting for a tick; each alarm once"
        );
    }
}
