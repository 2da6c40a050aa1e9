//! The stepper use case: one tick of a release. Reads the live split, stops if someone
//! else changed it, judges health, and then rolls back, keeps baking, holds, advances or
//! promotes. Its output is the next tick's input.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::health::{judge, judge_alarms, Evidence, Verdict};
use crate::notify;
use crate::ports::{AlarmSource, MetricQuery, MetricSource, Notifier, Split, TrafficRouter};
use crate::release::{OnInsufficientData, Release};
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
pub async fn tick_payload<R, N, A, M>(input: &Value, deps: &StepDeps<'_, R, N, A, M>, now: u64) -> Result<Value>
where
    R: TrafficRouter,
    N: Notifier,
    A: AlarmSource,
    M: MetricSource,
{
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
    let release = Release::parse(&Value::Object(release_json))?;
    let progress = tick(&release, progress, deps, now).await?;
    let mut output = serde_json::to_value(&release).map_err(|e| Error::InvalidRelease(e.to_string()))?;
    output["progress"] = serde_json::to_value(&progress).map_err(|e| Error::InvalidRelease(e.to_string()))?;
    Ok(output)
}

pub async fn tick<R, N, A, M>(
    release: &Release,
    progress: Option<Progress>,
    deps: &StepDeps<'_, R, N, A, M>,
    now: u64,
) -> Result<Progress>
where
    R: TrafficRouter,
    N: Notifier,
    A: AlarmSource,
    M: MetricSource,
{
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
    let inconclusive_verdict = match (evidence.verdict, bake_over) {
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
    if let Some(reason) = inconclusive_verdict {
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
        let reason = format!("stage {} baked healthy: promoted. {}", stage.percent, evidence.summary());
        info!(release = %release.release, target = %target, decision = "promoted", %reason);
        let mut done = finish(progress, now, Status::Promoted, reason, evidence_json);
        done.wait_seconds = 0;
        return Ok(done);
    }
    let next = progress.stage + 1;
    let desired = stage_split(release, &progress.stable, &live, next);
    let written = deps.router.write(target, &live, &desired).await.map_err(|e| conflict_as_stop(e, target))?;
    progress.stage = next;
    progress.weight = release.stages[next].weight();
    progress.last_written = Written::of(&written);
    progress.stage_entered_at = now;
    progress.status = Status::Advanced;
    progress.wait_seconds = release.check_every_seconds.min(release.stages[next].bake_seconds.max(1));
    progress.reason = format!(
        "stage {} baked healthy; now at {}. {}",
        stage.percent,
        notify::percent(release.stages[next].weight()),
        evidence.summary()
    );
    log_decision(release, &progress, &evidence);
    record(&mut progress, now, evidence_json);
    Ok(progress)
}

/// The first tick: check the starting point, record the stable version, enter stage 0.
async fn start<R, N, A, M>(
    release: &Release,
    live: Split,
    deps: &StepDeps<'_, R, N, A, M>,
    now: u64,
) -> Result<Progress>
where
    R: TrafficRouter,
    N: Notifier,
    A: AlarmSource,
    M: MetricSource,
{
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
    let written = deps.router.write(target, &live, &desired).await.map_err(|e| conflict_as_stop(e, target))?;
    let first = release.stages[0];
    progress.weight = first.weight();
    progress.last_written = Written::of(&written);
    progress.wait_seconds = release.check_every_seconds.min(first.bake_seconds.max(1));
    progress.reason =
        format!("started: stable {}, canary {canary} at {}", progress.stable, notify::percent(first.weight()));
    info!(release = %release.release, target = %target, decision = "advanced", stage = 0, weight = first.weight(), stable = %progress.stable, canary, "release started");
    record(&mut progress, now, None);
    Ok(progress)
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

async fn roll_back<R, N, A, M>(
    release: &Release,
    progress: Progress,
    live: Split,
    deps: &StepDeps<'_, R, N, A, M>,
    now: u64,
    reason: String,
    evidence: &Evidence,
) -> Result<Progress>
where
    R: TrafficRouter,
    N: Notifier,
    A: AlarmSource,
    M: MetricSource,
{
    let target = &release.target;
    let outcome = restore_stable(deps.router, target, Some(&progress.stable), Some(live)).await?;
    warn!(release = %release.release, target = %target, decision = "rolled_back", %reason, evidence = %serde_json::to_string(evidence).unwrap_or_default());
    let message = notify::stepper_rollback(release, target, &outcome, &reason);
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

/// A lost conditional write during advance means someone changed the split: stop.
fn conflict_as_stop(error: Error, target: &crate::Target) -> Error {
    match error {
        Error::Conflict { detail, .. } => Error::Conflict { target: target.clone(), detail },
        other => other,
    }
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
