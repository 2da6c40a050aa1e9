//! The stepper use case: one tick of a release. Reads the live split, stops if someone
//! else changed it, judges health, and then rolls back, keeps baking, holds, advances or
//! promotes. Its output is the next tick's input.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::ports::{AlarmSource, MetricQuery, MetricSource, Notifier, TrafficRouter};
use crate::release::judge::{judge, judge_alarms, Evidence, Verdict};
use crate::release::notify as release_notify;
use crate::release::{OnInsufficientData, Release};
use crate::rollback::notify;
use crate::rollback::restore_stable;

/// The history kept in the execution's state (whose payload is capped at 256 KB): the
/// latest decisions, with a count of those dropped.
pub const HISTORY_LIMIT: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Baking,
    Advanced,
    Holding,
    Promoted,
    RolledBack,
}

/// The split as the stepper wrote it, to compare with the live one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Written {
    pub stable: String,
    pub canary: Option<String>,
    pub weight: f64,
}

impl Written {
    fn of(split: &Split) -> Self {
        Written { stable: split.stable.clone(), canary: split.canary.clone(), weight: split.canary_weight }
    }

    fn as_split(&self) -> Split {
        Split { stable: self.stable.clone(), canary: self.canary.clone(), canary_weight: self.weight, revision: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: u64,
    pub stage: usize,
    pub weight: f64,
    pub status: Status,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: usize,
    pub weight: f64,
    /// The alias version or variant that was stable when the release started.
    pub stable: String,
    pub last_written: Written,
    pub started_at: u64,
    pub stage_entered_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_since: Option<u64>,
    pub status: Status,
    pub wait_seconds: u64,
    pub reason: String,
    pub ticks: u64,
    pub history: Vec<Decision>,
    #[serde(default)]
    pub history_dropped: u64,
}

pub struct StepDeps<'a, R, N, A, M> {
    pub router: &'a R,
    pub notifier: &'a N,
    pub alarms: &'a A,
    pub metrics: &'a M,
}

/// The tick as the function runs it: the input is the release, plus `progress` from
/// the tick before; the output is the same with `progress` updated.
pub async fn tick_payload(
    input: &Value,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Value> {
    let Some(object) = input.as_object() else {
        return Err(Error::InvalidRelease("the execution input must be a JSON object (a release)".into()));
    };
    let mut release_json = object.clone();
    let progress = match release_json.remove("progress") {
        None | Some(Value::Null) => None,
        Some(p) => Some(serde_json::from_value::<Progress>(p).map_err(|e| {
            Error::InvalidRelease(format!("progress: {e}; it is the stepper's own output, do not edit it"))
        })?),
    };
    // The state machine's Catch puts the failed tick's error here: undo, don't tick.
    let failure = release_json.remove("failure");
    let release = Release::parse(&Value::Object(release_json));
    if let Some(failure) = failure {
        return match release {
            Ok(release) => safety_rollback(&release, progress.as_ref(), &failure, deps).await,
            // The first tick refused it, so it never moved traffic.
            Err(invalid) => Ok(serde_json::json!({"safety_rollback": "nothing_to_undo", "cause": invalid.to_string()})),
        };
    }
    let release = release?;
    let progress = tick(&release, progress, deps, now).await?;
    let mut output = serde_json::to_value(&release).map_err(|e| Error::InvalidRelease(e.to_string()))?;
    output["progress"] = serde_json::to_value(&progress).map_err(|e| Error::InvalidRelease(e.to_string()))?;
    Ok(output)
}

pub async fn tick(
    release: &Release,
    progress: Option<Progress>,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let target = &release.target;
    let live = deps.router.read(target).await?;
    let Some(mut progress) = progress else {
        return start(release, live, deps, now).await;
    };
    if matches!(progress.status, Status::Promoted | Status::RolledBack) {
        return Err(Error::InvalidRelease(format!(
            "the release already ended {:?}; start a new execution",
            progress.status
        )));
    }
    progress.ticks += 1;

    // 1. Someone else's change wins: stop, never write over it.
    if !live.same_routing(&progress.last_written.as_split()) {
        let reason = if live.canary_is_zero() && live.stable == progress.stable {
            "the canary's traffic was set to zero outside this release (the rollback function, on alarm?)".to_owned()
        } else {
            format!(
                "the split changed outside this release: expected {}, found {}",
                describe(&progress.last_written.as_split()),
                describe(&live)
            )
        };
        warn!(release = %release.release, target = %target, decision = "rolled_back", %reason, "stopping");
        return Ok(finish(progress, now, Status::RolledBack, reason, None));
    }

    // 2. Judge health over the stage so far.
    let stage = release.stages[progress.stage];
    let states =
        if release.gates.alarms.is_empty() { Vec::new() } else { deps.alarms.states(&release.gates.alarms).await? };
    let evidence = if judge_alarms(&release.gates, &states).is_some() || !needs_metrics(release) {
        judge(&release.gates, &states, None)
    } else {
        let query = MetricQuery {
            target,
            canary: release.canary_id(),
            stable: &progress.stable,
            start_epoch: progress.stage_entered_at,
            end_epoch: now.max(progress.stage_entered_at + 1),
            custom: &release.gates.custom,
        };
        let snapshot = deps.metrics.fetch(&query).await?;
        judge(&release.gates, &states, Some(&snapshot))
    };
    let evidence_json = serde_json::to_value(&evidence).ok();
    let bake_over = now >= progress.stage_entered_at + stage.bake_seconds;

    // 3. Unhealthy: roll back with the rollback function's own code.
    let rollback_reason = match (evidence.verdict, bake_over) {
        (Verdict::Unhealthy, _) => Some(format!("unhealthy: {}", evidence.summary())),
        (Verdict::Inconclusive, true) => match release.gates.on_insufficient_data {
            OnInsufficientData::Rollback => {
                Some(format!("inconclusive at the end of the bake: {}", evidence.summary()))
            }
            OnInsufficientData::Hold => {
                let since = *progress.holding_since.get_or_insert(now);
                (now >= since + release.gates.max_hold_seconds)
                    .then(|| format!("still inconclusive after holding {} s: {}", now - since, evidence.summary()))
            }
            OnInsufficientData::Proceed => None,
        },
        _ => None,
    };
    if let Some(reason) = rollback_reason {
        return roll_back(release, progress, live, deps, now, reason, &evidence).await;
    }

    // 4. Keep baking (or holding).
    let holding = evidence.verdict == Verdict::Inconclusive
        && bake_over
        && release.gates.on_insufficient_data == OnInsufficientData::Hold;
    if !bake_over || holding {
        let status = if holding { Status::Holding } else { Status::Baking };
        let remaining = (progress.stage_entered_at + stage.bake_seconds).saturating_sub(now);
        let wait =
            if holding { release.check_every_seconds } else { release.check_every_seconds.min(remaining.max(1)) };
        progress.status = status;
        progress.wait_seconds = wait;
        progress.reason = evidence.summary();
        log_decision(release, &progress, &evidence);
        record(&mut progress, now, evidence_json);
        return Ok(progress);
    }
    progress.holding_since = None;

    // 5. Bake over and healthy: promote after the last stage, else the next stage.
    if progress.stage + 1 == release.stages.len() {
        let reason =
            format!("stage {} baked healthy: promoted. {}", notify::percent(stage.weight()), evidence.summary());
        info!(release = %release.release, target = %target, decision = "promoted", %reason);
        let mut done = finish(progress, now, Status::Promoted, reason, evidence_json);
        done.wait_seconds = 0;
        return Ok(done);
    }
    let next = progress.stage + 1;
    let desired = stage_split(release, &progress.stable, &live, next);
    let written = match deps.router.write(target, &live, &desired).await {
        Ok(written) => written,
        Err(Error::Conflict { detail, .. }) => {
            let reason = format!("the split changed while advancing to stage {next} ({detail}); not overwritten");
            warn!(release = %release.release, target = %target, decision = "rolled_back", %reason, "stopping");
            return Ok(finish(progress, now, Status::RolledBack, reason, evidence_json));
        }
        Err(other) => return Err(other),
    };
    progress.stage = next;
    progress.weight = release.stages[next].weight();
    progress.last_written = Written::of(&written);
    progress.stage_entered_at = now;
    progress.status = Status::Advanced;
    progress.wait_seconds = release.check_every_seconds.min(release.stages[next].bake_seconds.max(1));
    progress.reason = format!(
        "stage {} baked healthy; now at {}. {}",
        notify::percent(stage.weight()),
        notify::percent(release.stages[next].weight()),
        evidence.summary()
    );
    log_decision(release, &progress, &evidence);
    record(&mut progress, now, evidence_json);
    Ok(progress)
}

/// The first tick: check the starting point, record the stable version, enter stage 0.
async fn start(
    release: &Release,
    live: Split,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let target = &release.target;
    let canary = release.canary_id();
    if !live.canary_is_zero() {
        return Err(Error::InvalidRelease(format!(
            "{target} already has a canary in flight ({}); finish or roll it back first",
            describe(&live)
        )));
    }
    if live.stable == canary {
        return Err(Error::InvalidRelease(format!(
            "canary_version: {canary} is already the stable version of {target}"
        )));
    }
    deps.router.check_canary(target, canary).await?;
    if !release.gates.alarms.is_empty() {
        let states = deps.alarms.states(&release.gates.alarms).await?;
        if let Some(missing) = release.gates.alarms.iter().find(|a| !states.iter().any(|(n, _)| n == *a)) {
            return Err(Error::InvalidRelease(format!("gates.alarms: alarm {missing:?} does not exist")));
        }
    }
    let mut progress = Progress {
        stage: 0,
        weight: 0.0,
        stable: live.stable.clone(),
        last_written: Written::of(&live),
        started_at: now,
        stage_entered_at: now,
        holding_since: None,
        status: Status::Advanced,
        wait_seconds: 0,
        reason: String::new(),
        ticks: 1,
        history: Vec::new(),
        history_dropped: 0,
    };
    let desired = stage_split(release, &progress.stable, &live, 0);
    // A conflict here fails the tick (retryable): the retry starts afresh from a new read.
    let written = deps.router.write(target, &live, &desired).await?;
    let first = release.stages[0];
    progress.weight = first.weight();
    progress.last_written = Written::of(&written);
    progress.wait_seconds = release.check_every_seconds.min(first.bake_seconds.max(1));
    progress.reason =
        format!("started: canary {canary} at {} (stable {})", notify::percent(first.weight()), progress.stable);
    info!(release = %release.release, target = %target, decision = "advanced", stage = 0, weight = first.weight(), stable = %progress.stable, canary, "release started");
    record(&mut progress, now, None);
    Ok(progress)
}

/// After a tick failed for good: bring the canary's traffic back to zero if this release
/// put any there, and tell the team. It only ever lowers the canary.
pub async fn safety_rollback(
    release: &Release,
    progress: Option<&Progress>,
    failure: &Value,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
) -> Result<Value> {
    let target = &release.target;
    let cause = failure.get("Cause").and_then(Value::as_str).unwrap_or("unknown");
    let live = deps.router.read(target).await?;
    let canary = release.canary_id();
    let carries_canary = live.canary.as_deref() == Some(canary) && !live.canary_is_zero();
    let promoted_by_us = progress.is_some_and(|p| live.stable == canary && p.stable != canary);
    if !carries_canary && !promoted_by_us {
        info!(release = %release.release, target = %target, decision = "nothing_to_undo", cause, "safety rollback");
        return Ok(serde_json::json!({"safety_rollback": "nothing_to_undo", "cause": cause}));
    }
    let stable = progress.map(|p| p.stable.as_str());
    let outcome = restore_stable(deps.router, target, stable, Some(live)).await?;
    let reason = format!("the release's tick kept failing ({cause}); safety rollback");
    warn!(release = %release.release, target = %target, decision = "rolled_back", %reason, "safety rollback");
    deps.notifier.publish(&release_notify::stepper_rollback(release, target, &outcome, &reason)).await?;
    Ok(serde_json::json!({"safety_rollback": outcome.event_name(), "cause": cause}))
}

/// The split a stage asks for. Lambda at 100% is a promotion: the canary becomes the
/// alias's version. SageMaker keeps both variants and moves the weights.
fn stage_split(release: &Release, stable: &str, live: &Split, stage: usize) -> Split {
    let s = release.stages[stage];
    match &release.target {
        crate::Target::Lambda(_) if s.is_full() => {
            Split { stable: release.canary_id().to_owned(), canary: None, canary_weight: 0.0, revision: None }
        }
        crate::Target::Lambda(_) => Split {
            stable: stable.to_owned(),
            canary: Some(release.canary_id().to_owned()),
            canary_weight: s.weight(),
            revision: None,
        },
        crate::Target::Sagemaker(_) => live.with_canary_weight(s.weight()),
    }
}

async fn roll_back(
    release: &Release,
    progress: Progress,
    live: Split,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
    reason: String,
    evidence: &Evidence,
) -> Result<Progress> {
    let target = &release.target;
    let outcome = restore_stable(deps.router, target, Some(&progress.stable), Some(live)).await?;
    warn!(release = %release.release, target = %target, decision = "rolled_back", %reason, evidence = %serde_json::to_string(evidence).unwrap_or_default());
    let message = release_notify::stepper_rollback(release, target, &outcome, &reason);
    if let Err(e) = deps.notifier.publish(&message).await {
        // The rollback stands; the message is what failed. Fail the tick so the state
        // machine's retry (which finds the canary at zero and stops) re-sends it.
        warn!(release = %release.release, error = %e, "rollback notification failed");
        return Err(Error::Incomplete {
            summary: format!("rolled back, but the message was not sent: {e}"),
            retryable: true,
        });
    }
    Ok(finish(progress, now, Status::RolledBack, reason, serde_json::to_value(evidence).ok()))
}

fn finish(mut progress: Progress, now: u64, status: Status, reason: String, evidence: Option<Value>) -> Progress {
    progress.status = status;
    progress.wait_seconds = 0;
    progress.reason = reason;
    record(&mut progress, now, evidence);
    progress
}

fn record(progress: &mut Progress, now: u64, evidence: Option<Value>) {
    progress.history.push(Decision {
        at: now,
        stage: progress.stage,
        weight: progress.weight,
        status: progress.status,
        reason: progress.reason.clone(),
        evidence,
    });
    if progress.history.len() > HISTORY_LIMIT {
        let excess = progress.history.len() - HISTORY_LIMIT;
        progress.history.drain(..excess);
        progress.history_dropped += excess as u64;
    }
}

fn log_decision(release: &Release, progress: &Progress, evidence: &Evidence) {
    info!(
        release = %release.release, target = %release.target, decision = ?progress.status,
        stage = progress.stage, weight = progress.weight, verdict = ?evidence.verdict,
        evidence = %serde_json::to_string(evidence).unwrap_or_default(), wait_seconds = progress.wait_seconds,
        "tick"
    );
}

fn needs_metrics(release: &Release) -> bool {
    let g = &release.gates;
    g.min_requests > 0
        || g.max_error_rate.is_some()
        || g.max_error_rate_increase.is_some()
        || g.max_p95_latency_ms.is_some()
        || g.max_p95_increase_ratio.is_some()
        || !g.custom.is_empty()
}

fn describe(split: &Split) -> String {
    match &split.canary {
        Some(c) if !split.canary_is_zero() => {
            format!("stable {} with canary {c} at {}", split.stable, notify::percent(split.canary_weight))
        }
        _ => format!("stable {} with no canary", split.stable),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::domain::event::AlarmState;
    use crate::fakes::{lambda_split, FakeAlarms, FakeMetrics, FakeNotifier, FakeRouter};
    use crate::release::Gates;
    use crate::Target;

    const T0: u64 = 1_800_000_000;

    fn release(gates: Gates) -> Release {
        let release = Release {
            release: "ai-handler-42".into(),
            target: Target::lambda("ai-handler", "live"),
            canary_version: Some("42".into()),
            stages: vec![
                crate::release::Stage { percent: 5.0, bake_seconds: 600 },
                crate::release::Stage { percent: 25.0, bake_seconds: 600 },
                crate::release::Stage { percent: 100.0, bake_seconds: 300 },
            ],
            check_every_seconds: 60,
            gates,
        };
        release.validate().unwrap();
        release
    }

    fn gates() -> Gates {
        Gates { alarms: vec!["errors".into()], max_error_rate: Some(0.05), min_requests: 100, ..Gates::default() }
    }

    struct World {
        router: FakeRouter,
        notifier: FakeNotifier,
        alarms: FakeAlarms,
        metrics: FakeMetrics,
    }

    impl World {
        fn new(split: Split) -> Self {
            let alarms = FakeAlarms::default();
            alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Ok);
            let metrics = FakeMetrics::default();
            metrics.set((1000.0, 1.0), (20_000.0, 20.0));
            World { router: FakeRouter::with([(target(), split)]), notifier: FakeNotifier::default(), alarms, metrics }
        }

        async fn tick(&self, release: &Release, progress: Option<Progress>, now: u64) -> Result<Progress> {
            let deps = StepDeps {
                router: &self.router,
                notifier: &self.notifier,
                alarms: &self.alarms,
                metrics: &self.metrics,
            };
            tick(release, progress, &deps, now).await
        }

        fn live(&self) -> Split {
            self.router.split(&target())
        }
    }

    fn target() -> Target {
        Target::lambda("ai-handler", "live")
    }

    fn stable_only() -> Split {
        Split { stable: "41".into(), canary: None, canary_weight: 0.0, revision: Some("rev-0".into()) }
    }

    #[tokio::test]
    async fn the_first_tick_records_stable_and_enters_stage_zero() {
        let world = World::new(stable_only());
        let p = world.tick(&release(gates()), None, T0).await.unwrap();
        assert_eq!((p.status, p.stage, p.stable.as_str(), p.wait_seconds), (Status::Advanced, 0, "41", 60));
        let live = world.live();
        assert_eq!((live.stable.as_str(), live.canary.as_deref(), live.canary_weight), ("41", Some("42"), 0.05));
        assert_eq!(world.router.write_count(), 1);
    }

    #[tokio::test]
    async fn a_bad_starting_point_fails_before_any_traffic_moves() {
        let in_flight = World::new(lambda_split("41", "40", 0.1));
        let err = in_flight.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(err.to_string().contains("already has a canary in flight"), "{err}");

        let already_stable = World::new(Split { stable: "42".into(), ..stable_only() });
        let err = already_stable.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(err.to_string().contains("42 is already the stable version"), "{err}");

        let unpublished = World::new(stable_only());
        unpublished.router.missing_versions.lock().unwrap().push("42".into());
        let err = unpublished.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(err.to_string().contains("has no version 42"), "{err}");

        let no_alarm = World::new(stable_only());
        no_alarm.alarms.states.lock().unwrap().clear();
        let err = no_alarm.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(err.to_string().contains("gates.alarms: alarm \"errors\" does not exist"), "{err}");

        for world in [in_flight, already_stable, unpublished, no_alarm] {
            assert_eq!(world.router.write_count(), 0);
            assert!(!err.is_retryable());
        }
    }

    #[tokio::test]
    async fn a_healthy_release_bakes_advances_promotes() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert_eq!((p.status, p.wait_seconds, world.router.write_count()), (Status::Baking, 60, 1));
        assert_eq!(world.metrics.windows.lock().unwrap().last(), Some(&(T0, T0 + 60)), "judged over the stage so far");

        let p = world.tick(&r, Some(p), T0 + 570).await.unwrap();
        assert_eq!((p.status, p.wait_seconds), (Status::Baking, 30), "never waits past the bake");

        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!((p.status, p.stage, p.weight, p.stage_entered_at), (Status::Advanced, 1, 0.25, T0 + 600));
        assert_eq!(world.live().canary_weight, 0.25);

        let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
        assert_eq!((p.status, p.stage), (Status::Advanced, 2));
        let live = world.live();
        assert_eq!((live.stable.as_str(), live.canary), ("42", None), "Lambda at 100%: the alias points at the canary");

        let p = world.tick(&r, Some(p), T0 + 1500).await.unwrap();
        assert_eq!((p.status, p.wait_seconds), (Status::Promoted, 0));
        assert_eq!(world.router.write_count(), 3, "promotion at the end writes nothing more");
        assert!(world.notifier.sent.lock().unwrap().is_empty());
        assert_eq!(
            p.history.iter().map(|d| d.status).collect::<Vec<_>>(),
            [Status::Advanced, Status::Baking, Status::Baking, Status::Advanced, Status::Advanced, Status::Promoted]
        );

        let err = world.tick(&r, Some(p), T0 + 1600).await.unwrap_err();
        assert!(err.to_string().contains("already ended"), "{err}");
    }

    #[tokio::test]
    async fn an_alarm_rolls_back_with_the_shared_code_and_tells_the_team() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Alarm);

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!(p.status, Status::RolledBack);
        assert!(p.reason.contains("alarm errors is ALARM"), "{}", p.reason);
        assert_eq!((world.live().canary_weight, world.live().stable.as_str()), (0.0, "41"));
        let sent = world.notifier.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].attributes.contains(&("release", "ai-handler-42".into())));
        assert!(sent[0].body.contains("alarm errors is ALARM"));
        assert!(world.metrics.windows.lock().unwrap().is_empty(), "an alarm needs no metrics");
    }

    #[tokio::test]
    async fn bad_metrics_roll_back_with_evidence() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((1000.0, 80.0), (20_000.0, 20.0));
        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        let evidence = p.history.last().unwrap().evidence.as_ref().unwrap();
        assert_eq!(evidence["metrics"]["canary"]["errors"], 80.0);
        assert!(p.reason.contains("8.00% > max_error_rate 5.00%"), "{}", p.reason);
    }

    #[tokio::test]
    async fn a_split_changed_by_someone_else_stops_the_release_without_writing() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        // The rollback function zeroed it.
        let zeroed = Split { canary_weight: 0.0, canary: None, ..world.live() };
        world.router.splits.lock().unwrap().insert(target(), zeroed);

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!(p.status, Status::RolledBack);
        assert!(p.reason.contains("set to zero outside this release"), "{}", p.reason);
        assert_eq!(world.router.write_count(), 1, "only the first stage's write");

        // A manual change to the weight is not overwritten either.
        let world = World::new(stable_only());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.router.splits.lock().unwrap().insert(target(), lambda_split("41", "42", 0.5));
        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert!(
            p.reason.contains("expected stable 41 with canary 42 at 5%, found stable 41 with canary 42 at 50%"),
            "{}",
            p.reason
        );
        assert_eq!(world.live().canary_weight, 0.5);
    }

    #[tokio::test]
    async fn a_conflict_while_advancing_is_not_overwritten_and_says_why() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.router.interleaved.lock().unwrap().insert(target(), VecDeque::from([lambda_split("41", "42", 0.0)]));

        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();

        assert_eq!(p.status, Status::RolledBack);
        assert!(
            p.reason.contains("changed while advancing to stage 1") && p.reason.contains("not overwritten"),
            "{}",
            p.reason
        );
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn unhealthy_after_promotion_restores_the_recorded_stable_version() {
        let world = World::new(stable_only());
        let r = release(gates());
        let mut p = world.tick(&r, None, T0).await.unwrap();
        for at in [T0 + 600, T0 + 1200] {
            p = world.tick(&r, Some(p), at).await.unwrap();
        }
        assert_eq!(world.live().stable, "42");
        world.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Alarm);

        let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();

        assert_eq!(p.status, Status::RolledBack);
        assert_eq!((world.live().stable.as_str(), world.live().canary), ("41", None));
    }

    #[tokio::test]
    async fn insufficient_data_holds_then_fails_safe() {
        let world = World::new(stable_only());
        let r = release(Gates { max_hold_seconds: 300, ..gates() });
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((10.0, 0.0), (1000.0, 0.0));

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert_eq!(p.status, Status::Baking, "mid-bake, too little data is no reason to stop");
        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!((p.status, p.holding_since, p.wait_seconds), (Status::Holding, Some(T0 + 600), 60));
        let p = world.tick(&r, Some(p), T0 + 840).await.unwrap();
        assert_eq!(p.status, Status::Holding);
        assert_eq!(world.live().canary_weight, 0.05, "holding keeps the weight");
        let p = world.tick(&r, Some(p), T0 + 900).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        assert!(p.reason.contains("still inconclusive after holding 300 s"), "{}", p.reason);
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn insufficient_data_policies_rollback_and_proceed() {
        for (policy, expected) in
            [(OnInsufficientData::Rollback, Status::RolledBack), (OnInsufficientData::Proceed, Status::Advanced)]
        {
            let world = World::new(stable_only());
            let r = release(Gates { on_insufficient_data: policy, ..gates() });
            let p = world.tick(&r, None, T0).await.unwrap();
            world.metrics.set((10.0, 0.0), (1000.0, 0.0));
            let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
            assert_eq!(p.status, expected, "{policy:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_rollback_message_fails_the_tick_and_the_retry_stops_cleanly() {
        let world = World { notifier: FakeNotifier::failing(1), ..World::new(stable_only()) };
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Alarm);

        let err = world.tick(&r, Some(p.clone()), T0 + 60).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("message was not sent"), "{err}");
        assert_eq!(world.live().canary_weight, 0.0, "the rollback stands");

        let p = world.tick(&r, Some(p), T0 + 61).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
    }

    #[tokio::test]
    async fn the_safety_rollback_only_lowers_the_canary() {
        let world = World::new(stable_only());
        let r = release(gates());
        let deps = StepDeps {
            router: &world.router,
            notifier: &world.notifier,
            alarms: &world.alarms,
            metrics: &world.metrics,
        };
        let p = world.tick(&r, None, T0).await.unwrap();
        let mut input = serde_json::to_value(&r).unwrap();
        input["progress"] = serde_json::to_value(&p).unwrap();
        input["failure"] = serde_json::json!({"Error": "Retryable", "Cause": "GetMetricData throttled"});

        let out = tick_payload(&input, &deps, T0 + 60).await.unwrap();
        assert_eq!(out["safety_rollback"], "rolled_back");
        assert_eq!(world.live().canary_weight, 0.0);
        assert!(world.notifier.sent.lock().unwrap()[0].body.contains("GetMetricData throttled"));

        // Run again (the state machine retries): nothing left to undo, nothing written.
        let out = tick_payload(&input, &deps, T0 + 61).await.unwrap();
        assert_eq!(out["safety_rollback"], "nothing_to_undo");
        assert_eq!(world.router.write_count(), 2);

        // Another release's canary is not ours to touch.
        let world = World::new(lambda_split("41", "40", 0.3));
        let deps = StepDeps {
            router: &world.router,
            notifier: &world.notifier,
            alarms: &world.alarms,
            metrics: &world.metrics,
        };
        let mut input = serde_json::to_value(&r).unwrap();
        input["failure"] = serde_json::json!({"Error": "NonRetryable", "Cause": "already has a canary in flight"});
        let out = tick_payload(&input, &deps, T0).await.unwrap();
        assert_eq!(out["safety_rollback"], "nothing_to_undo");
        assert_eq!(world.live().canary_weight, 0.3);

        // An invalid release never moved traffic: nothing to undo, and no error to retry.
        input["canary_version"] = "$LATEST".into();
        let out = tick_payload(&input, &deps, T0).await.unwrap();
        assert_eq!(out["safety_rollback"], "nothing_to_undo");
        assert!(out["cause"].as_str().unwrap().contains("$LATEST"));
    }

    #[tokio::test]
    async fn history_stays_bounded() {
        let world = World::new(stable_only());
        let r = Release {
            stages: vec![crate::release::Stage { percent: 100.0, bake_seconds: 100_000 }],
            ..release(gates())
        };
        let mut p = world.tick(&r, None, T0).await.unwrap();
        for i in 1..=100 {
            p = world.tick(&r, Some(p), T0 + i * 60).await.unwrap();
        }
        assert_eq!(p.history.len(), HISTORY_LIMIT);
        assert_eq!(p.history_dropped, 101 - HISTORY_LIMIT as u64);
        assert_eq!(p.history.last().unwrap().at, T0 + 6000);
        assert!(serde_json::to_string(&p).unwrap().len() < 64 * 1024);
    }

    #[tokio::test]
    async fn the_payload_round_trips_release_and_progress() {
        let world = World::new(stable_only());
        let deps = StepDeps {
            router: &world.router,
            notifier: &world.notifier,
            alarms: &world.alarms,
            metrics: &world.metrics,
        };
        let input = serde_json::to_value(release(gates())).unwrap();
        let out = tick_payload(&input, &deps, T0).await.unwrap();
        assert_eq!(out["progress"]["status"], "advanced");
        assert_eq!(out["release"], "ai-handler-42");
        let again = tick_payload(&out, &deps, T0 + 60).await.unwrap();
        assert_eq!(again["progress"]["status"], "baking");

        let mut edited = out.clone();
        edited["progress"]["stage"] = "two".into();
        let err = tick_payload(&edited, &deps, T0 + 60).await.unwrap_err();
        assert!(err.to_string().contains("progress:"), "{err}");
    }
}
