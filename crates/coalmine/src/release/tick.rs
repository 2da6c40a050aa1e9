//! The stepper use case: one tick of a release. Reads the live split, stops if anyone
//! else changed it, judges health, and then rolls back, keeps baking, holds, advances or
//! promotes. Its output is the next tick's input.
//!
//! Every write carries the release's stamp (see [`crate::domain::stamp`]) naming this
//! execution, so the release knows its own writes without its output: a retried tick
//! picks up what the failed attempt wrote, and the safety rollback undoes only traffic
//! this execution moved.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::domain::error::{Error, Result, INVALID_RELEASE};
use crate::domain::metrics::MetricSnapshot;
use crate::domain::split::Split;
use crate::domain::stamp::{execution_id, Phase, Request, RolledBackBy, Stamp};
use crate::domain::target::Target;
use crate::ports::{AlarmSource, MetricQuery, MetricSource, Notifier, TrafficRouter};
use crate::release::guardrail::{self, GuardrailProgress, GuardrailRelease};
use crate::release::judge::{judge, judge_alarms, judge_sequential, Evidence, StageSample, Verdict};
use crate::release::notify::{self as release_notify, RollbackKind};
use crate::release::{preflight, Document, JudgeKind, OnInsufficientData, Release};
use crate::rollback::notify::{describe, duration, percent};
use crate::rollback::{zero_canary, Owner, ZeroOutcome};

/// The history kept in the execution's state (whose payload is capped at 256 KB): the
/// latest decisions, with a count of those dropped.
pub const HISTORY_LIMIT: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Baking,
    Advanced,
    /// Bake over, too little data: still checking (`on_insufficient_data: hold`).
    Holding,
    /// Bake over, held by an operator's `coalmine pause`: still judged.
    Paused,
    /// Bake over at a stage that needs `coalmine approve`: still judged.
    AwaitingApproval,
    Promoted,
    RolledBack,
}

impl Status {
    /// The spelling of `decision` in logs, the same as in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Baking => "baking",
            Status::Advanced => "advanced",
            Status::Holding => "holding",
            Status::Paused => "paused",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Promoted => "promoted",
            Status::RolledBack => "rolled_back",
        }
    }
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
        Split {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            canary_weight: self.weight,
            revision: None,
            stamp: None,
        }
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
    /// When the current stage began waiting for approval (and the team was asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_since: Option<u64>,
    pub status: Status,
    /// When `rolled_back`: what took the traffic away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<RollbackKind>,
    pub wait_seconds: u64,
    /// A sentence a person reads: why this tick decided what it did. When the release
    /// ends, the execution's cause.
    pub reason: String,
    pub ticks: u64,
    pub history: Vec<Decision>,
    #[serde(default)]
    pub history_dropped: u64,
    /// Each stage's metrics as the sequential judge weighs them: the evidence carried
    /// from tick to tick and across stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<StageSample>,
    /// A guardrail release's phase and configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<GuardrailProgress>,
}

impl Progress {
    /// A release's progress as its first tick records it: no decisions yet, at stage 0
    /// unless the caller says otherwise.
    pub(crate) fn new(stable: &str, last_written: Written, now: u64) -> Progress {
        Progress {
            stage: 0,
            weight: 0.0,
            stable: stable.to_owned(),
            last_written,
            started_at: now,
            stage_entered_at: now,
            holding_since: None,
            awaiting_since: None,
            status: Status::Advanced,
            rolled_back_by: None,
            wait_seconds: 0,
            reason: String::new(),
            ticks: 1,
            history: Vec::new(),
            history_dropped: 0,
            samples: Vec::new(),
            guardrail: None,
        }
    }

    /// Keeps this tick's decision, and at most the last [`HISTORY_LIMIT`] of them.
    pub(crate) fn record(&mut self, now: u64, evidence: Option<Value>) {
        self.history.push(Decision {
            at: now,
            stage: self.stage,
            weight: self.weight,
            status: self.status,
            reason: self.reason.clone(),
            evidence,
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
            self.history_dropped += excess as u64;
        }
    }
}

pub struct StepDeps<'a, R, N, A, M> {
    pub router: &'a R,
    pub notifier: &'a N,
    pub alarms: &'a A,
    pub metrics: &'a M,
}

/// How an execution ended after a tick failed for good: what the state machine's
/// `SafetyRollback` step returns, and the `Choice` after it branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The release was promoted before the failure; nothing to undo.
    Promoted,
    /// The release had been rolled back before the failure.
    RolledBack,
    /// Nothing moved: the release is invalid, or its target was not ready.
    InvalidRelease,
    /// The tick failed; whatever this release had moved was undone.
    FailedAfterUndoing,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Promoted => "promoted",
            Ending::RolledBack => "rolled_back",
            Ending::InvalidRelease => "invalid_release",
            Ending::FailedAfterUndoing => "failed_after_undoing",
        }
    }
}

/// The tick as the function runs it, its failure logged once with the release it
/// concerns. The state machine's task passes
/// `{"execution": "<execution ARN>", "state": <release, plus progress from the tick
/// before>}`; the output is the state with `progress` updated. A state holding `failure`
/// (the `Catch` puts the failed tick's error there) runs the safety rollback instead.
pub async fn tick_payload(
    input: &Value,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Value> {
    tick_state(input, deps, now).await.inspect_err(|e| {
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

async fn tick_state(
    input: &Value,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Value> {
    let (Some(execution), Some(state)) =
        (input.get("execution").and_then(Value::as_str), input.get("state").and_then(Value::as_object))
    else {
        return Err(Error::InvalidRelease(
            "the stepper expects {\"execution\": <execution ARN>, \"state\": <release>}, as the release state \
             machine passes it; start a release with StartExecution, not by invoking the stepper"
                .into(),
        ));
    };
    let mut release_json = state.clone();
    let failure = release_json.remove("failure");
    let progress = match release_json.remove("progress") {
        None | Some(Value::Null) => Ok(None),
        Some(p) => serde_json::from_value::<Progress>(p).map(Some).map_err(|e| {
            Error::InvalidRelease(format!("progress: {e}; it is the stepper's own output, do not edit it"))
        }),
    };
    let release_json = Value::Object(release_json);
    // Each kind's future is boxed: nested inline, the two kinds' state machines made the
    // stepper's future too deep for rustc's layout query (and large on the stack).
    if Document::is_guardrail(&release_json) {
        let release = GuardrailRelease::parse(&release_json);
        if let Some(failure) = failure {
            return to_json(&Box::pin(guardrail::safety_rollback(release, &failure, execution, deps)).await?);
        }
        let release = release?;
        let progress = Box::pin(guardrail::tick(&release, progress?, execution, deps, now)).await?;
        return with_progress(&release, &progress);
    }
    let release = Release::parse(&release_json);
    if let Some(failure) = failure {
        // The safety rollback needs neither: the target's stamp says what is this
        // execution's to undo, even when what failed was reading them.
        let progress = progress.ok().flatten();
        return to_json(&Box::pin(safety_rollback(release, progress.as_ref(), &failure, execution, deps)).await?);
    }
    let (release, progress) = (release?, progress?);
    let progress = Box::pin(tick(&release, progress, execution, deps, now)).await?;
    with_progress(&release, &progress)
}

fn to_json(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::InvalidRelease(e.to_string()))
}

/// The state the next state reads: the release as given, and its progress beside it.
fn with_progress(release: &impl Serialize, progress: &Progress) -> Result<Value> {
    let mut output = to_json(release)?;
    output["progress"] = to_json(progress)?;
    Ok(output)
}

pub async fn tick(
    release: &Release,
    progress: Option<Progress>,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let target = &release.target;
    let Some(mut progress) = progress else {
        return start(release, execution, deps, now).await;
    };
    if matches!(progress.status, Status::Promoted | Status::RolledBack) {
        return Err(Error::InvalidRelease(format!(
            "the release already ended {}; start a new execution",
            progress.status.as_str()
        )));
    }
    let live = deps.router.read(target).await?;
    progress.ticks += 1;

    // 1. Only traffic as this release left it is judged; anything else is looked into,
    //    never written over.
    let as_left =
        live.stamp_by(execution).is_some_and(Stamp::is_live) && live.same_routing(&progress.last_written.as_split());
    if !as_left {
        return after_change(release, progress, live, execution, deps, now).await;
    }

    // 2. Judge health over the stage so far.
    let stage = release.stages[progress.stage];
    let states =
        if release.gates.alarms.is_empty() { Vec::new() } else { deps.alarms.states(&release.gates.alarms).await? };
    let evidence = if judge_alarms(&release.gates, &states).is_some() {
        judge(&release.gates, &states, None)
    } else {
        let query = MetricQuery {
            target,
            canary: release.canary_id(),
            stable: &progress.stable,
            start_epoch: progress.stage_entered_at,
            end_epoch: now.max(progress.stage_entered_at + 1),
            custom: &release.gates.custom,
            configs: None,
        };
        let snapshot = deps.metrics.fetch(&query).await?;
        match release.gates.judge {
            JudgeKind::FixedHorizon => judge(&release.gates, &states, Some(&snapshot)),
            JudgeKind::Sequential => {
                keep_sample(&mut progress, now, snapshot);
                judge_sequential(&release.gates, &states, &progress.samples)
            }
        }
    };
    let evidence_json = serde_json::to_value(&evidence).ok();
    let stamp =
        live.stamp.clone().unwrap_or_else(|| own_stamp(release, execution, &progress.stable, progress.stage, None));
    // An operator's promote ends the bake now, and goes on even on too little data:
    // their call, said in the reason. Nothing overrides an unhealthy verdict.
    let promote = match &stamp.request {
        Some(Request::Promote { full, by }) => Some((*full, by.clone())),
        _ => None,
    };
    let bake_done = now >= progress.stage_entered_at + stage.bake_seconds;

    // 3. Unhealthy: roll back with the rollback function's own code.
    let rollback_reason = match (evidence.verdict, bake_done, &promote) {
        (Verdict::Unhealthy, _, _) => Some(evidence.summary()),
        (Verdict::Inconclusive, true, None) => match release.gates.on_insufficient_data {
            OnInsufficientData::Rollback => Some(format!("{} at the end of the bake", evidence.summary())),
            OnInsufficientData::Hold => {
                let since = *progress.holding_since.get_or_insert(now);
                (now >= since + release.gates.max_hold_seconds)
                    .then(|| format!("{}, still after holding {} s", evidence.summary(), now - since))
            }
            OnInsufficientData::Proceed => None,
        },
        _ => None,
    };
    if let Some(why) = rollback_reason {
        let kind = if evidence.from_alarms() { RollbackKind::GateAlarm } else { RollbackKind::Health };
        return roll_back(release, progress, live, execution, deps, now, kind, why, Some(&evidence)).await;
    }

    // 4. Keep baking (or holding).
    let bake_over = bake_done || promote.is_some();
    let holding = evidence.verdict == Verdict::Inconclusive
        && bake_over
        && promote.is_none()
        && release.gates.on_insufficient_data == OnInsufficientData::Hold;
    if !bake_over || holding {
        let status = if holding { Status::Holding } else { Status::Baking };
        let remaining = (progress.stage_entered_at + stage.bake_seconds).saturating_sub(now);
        let wait =
            if holding { release.check_every_seconds } else { release.check_every_seconds.min(remaining.max(1)) };
        return Ok(keep(release, progress, now, status, wait, evidence.summary(), &evidence));
    }
    progress.holding_since = None;
    // Proceeding on too little data is the release's own choice, or an operator's; it
    // is never "healthy".
    let verdict = match (evidence.verdict, &promote) {
        (Verdict::Inconclusive, Some((_, by))) => format!("{}; proceeding, as {by} promoted it", evidence.summary()),
        (Verdict::Inconclusive, None) => format!("{}; proceeding, as on_insufficient_data says", evidence.summary()),
        _ => evidence.summary(),
    };

    // 5. Promoted by hand, all the way: the final split, recorded as promoted, at once.
    if let Some((true, by)) = &promote {
        let last = release.stages.len() - 1;
        let desired = Split { stamp: Some(stamp.promoted()), ..stage_split(release, &progress.stable, &live, last) };
        match deps.router.write(target, &live, &desired).await {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => return Err(retry_after_conflict(target, "promoting")),
            Err(other) => return Err(other),
        }
        progress.weight = release.stages[last].weight();
        let reason =
            format!("Promoted by {by} (promote --full) from {}; {verdict}", stage_text(release, progress.stage));
        let done = finish(progress, now, Status::Promoted, reason, evidence_json);
        log_decision(release, &done, Some(&evidence));
        return Ok(done);
    }

    // 6. Paused: the judge goes on (and rolls back), only advancing waits.
    if let (Some(who), None) = (&stamp.hold, &promote) {
        let reason = format!(
            "Paused by {who} at {}, bake done; the judge keeps checking ({verdict}). coalmine resume {} goes on",
            stage_text(release, progress.stage),
            release.release
        );
        return Ok(keep(release, progress, now, Status::Paused, release.check_every_seconds, reason, &evidence));
    }

    // 7. A stage that waits for approval: judged every check, rolled back on no answer.
    let approved = promote.is_some() || matches!(stamp.request, Some(Request::Approve { .. }));
    if stage.approval && !approved {
        let since = match progress.awaiting_since {
            Some(since) => since,
            None => {
                let message = release_notify::awaiting_approval(release, execution, progress.stage, &evidence);
                deps.notifier.publish(&message).await.map_err(|e| unsent(release, "the approval request", e))?;
                *progress.awaiting_since.insert(now)
            }
        };
        let deadline = since + stage.approval_timeout();
        if now >= deadline {
            let why = format!("no approval within {}", duration(stage.approval_timeout()));
            return roll_back(
                release,
                progress,
                live,
                execution,
                deps,
                now,
                RollbackKind::ApprovalTimeout,
                why,
                Some(&evidence),
            )
            .await;
        }
        let reason = format!(
            "Waiting for approval at {} ({verdict}): coalmine approve {}; rolls back without it in {}",
            stage_text(release, progress.stage),
            release.release,
            duration(deadline - now)
        );
        let wait = release.check_every_seconds.min(deadline - now);
        return Ok(keep(release, progress, now, Status::AwaitingApproval, wait, reason, &evidence));
    }
    progress.awaiting_since = None;
    let by = match &stamp.request {
        Some(Request::Approve { by }) if stage.approval => format!(" Approved by {by}."),
        Some(Request::Promote { by, .. }) => format!(" Promoted by {by}."),
        _ => String::new(),
    };

    // 8. Bake over: promote after the last stage, else the next stage.
    if progress.stage + 1 == release.stages.len() {
        // Recorded on the target first: from here on, an alarm no longer reverts it.
        let promoted = Split { stamp: Some(stamp.promoted()), ..live.clone() };
        match deps.router.write(target, &live, &promoted).await {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => return Err(retry_after_conflict(target, "recording the promotion")),
            Err(other) => return Err(other),
        }
        let reason = format!("Promoted: stage {} baked;{by} {verdict}", percent(stage.weight()));
        let done = finish(progress, now, Status::Promoted, reason, evidence_json);
        log_decision(release, &done, Some(&evidence));
        return Ok(done);
    }
    let next = progress.stage + 1;
    let desired = Split {
        stamp: Some(own_stamp(release, execution, &progress.stable, next, stamp.hold.clone())),
        ..stage_split(release, &progress.stable, &live, next)
    };
    let written = match deps.router.write(target, &live, &desired).await {
        Ok(written) => written,
        // Someone moved it between the read and the write: the next tick sees what.
        Err(Error::Conflict { .. }) => return Err(retry_after_conflict(target, "advancing")),
        Err(other) => return Err(other),
    };
    progress.stage = next;
    progress.weight = release.stages[next].weight();
    progress.last_written = Written::of(&written);
    progress.stage_entered_at = now;
    progress.status = Status::Advanced;
    progress.wait_seconds = release.check_every_seconds.min(release.stages[next].bake_seconds.max(1));
    progress.reason = format!(
        "Stage {} baked; now at {}.{by} {verdict}",
        percent(stage.weight()),
        percent(release.stages[next].weight()),
    );
    log_decision(release, &progress, Some(&evidence));
    progress.record(now, evidence_json);
    Ok(progress)
}

/// The current stage's metrics so far replace its previous sample; a new stage starts
/// its own, and the ones before stay as they ended.
fn keep_sample(progress: &mut Progress, now: u64, metrics: MetricSnapshot) {
    let sample = StageSample { stage: progress.stage, seconds: now.saturating_sub(progress.stage_entered_at), metrics };
    match progress.samples.last_mut() {
        Some(last) if last.stage == progress.stage => *last = sample,
        _ => progress.samples.push(sample),
    }
}

/// A tick that changes nothing on the target: baking, holding, paused, or waiting.
fn keep(
    release: &Release,
    mut progress: Progress,
    now: u64,
    status: Status,
    wait: u64,
    reason: String,
    evidence: &Evidence,
) -> Progress {
    progress.status = status;
    progress.wait_seconds = wait;
    progress.reason = reason;
    log_decision(release, &progress, Some(evidence));
    progress.record(now, serde_json::to_value(evidence).ok());
    progress
}

/// A conditional write lost a race: the tick fails retryable, and its retry reads
/// afresh and sees (and names) whatever won.
fn retry_after_conflict(target: &Target, doing: &str) -> Error {
    Error::Conflict { target: target.clone(), detail: format!("the traffic changed while {doing}; reading it again") }
}

/// The stamp this execution writes while at `stage` (0-based); an operator's hold
/// stays, a request it has carried out goes.
fn own_stamp(release: &Release, execution: &str, stable: &str, stage: usize, hold: Option<String>) -> Stamp {
    Stamp {
        execution: execution_id(execution).to_owned(),
        stable: stable.to_owned(),
        phase: Phase::Live,
        stage: Some((stage + 1, release.stages.len())),
        release: Some(release.release.clone()),
        hold,
        request: None,
    }
}

/// The first tick: check the starting point, record the stable version, enter stage 0.
/// When an earlier attempt of this very tick already wrote, it picks that up instead.
async fn start(
    release: &Release,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let target = &release.target;
    let canary = release.canary_id();
    let live = preflight::read_target(deps.router, release).await?;
    if let Some(stamp) = live.stamp_by(execution).cloned() {
        let adopted = adopt(release, &stamp, &live, now);
        return match stamp.phase {
            Phase::Live => {
                info!(release = %release.release, target = %target, decision = "advanced", "picked up the stage an earlier attempt of this tick wrote");
                Ok(adopted)
            }
            _ => after_change(release, adopted, live, execution, deps, now).await,
        };
    }
    if let Some(failed) = preflight::checks(release, &live, deps.router, deps.alarms)
        .await
        .into_iter()
        .find_map(|c| c.blocks().then_some(c.found.err()).flatten())
    {
        return Err(failed);
    }
    let mut progress = Progress::new(&live.stable, Written::of(&live), now);
    let desired = Split {
        stamp: Some(own_stamp(release, execution, &live.stable, 0, None)),
        ..stage_split(release, &live.stable, &live, 0)
    };
    // A conflict fails the tick (retryable): the retry starts afresh from a new read.
    let written = deps.router.write(target, &live, &desired).await?;
    let first = release.stages[0];
    progress.weight = first.weight();
    progress.last_written = Written::of(&written);
    progress.wait_seconds = release.check_every_seconds.min(first.bake_seconds.max(1));
    // Too little traffic to judge is said up front, not found out after a silent hold.
    let traffic = preflight::metrics_check(release, &live, deps.metrics, now).await;
    let warning = match &traffic.found {
        Ok(_) => String::new(),
        Err(e) => {
            warn!(release = %release.release, target = %target, decision = "low_traffic", "{e}");
            format!(". Warning: {}", e.to_string().trim_start_matches("refused: "))
        }
    };
    progress.reason = format!(
        "Started: {} at {} beside {}{warning}",
        crate::rollback::notify::side(target, canary),
        percent(first.weight()),
        crate::rollback::notify::side(target, &progress.stable)
    );
    log_decision(release, &progress, None);
    progress.record(now, None);
    Ok(progress)
}

/// The progress an earlier attempt of a tick left only on the target, from its stamp.
fn adopt(release: &Release, stamp: &Stamp, live: &Split, now: u64) -> Progress {
    let stage = stamp.stage.map_or(0, |(at, _)| at.saturating_sub(1)).min(release.stages.len() - 1);
    let mut progress = Progress {
        stage,
        weight: release.stages[stage].weight(),
        wait_seconds: release.check_every_seconds.min(release.stages[stage].bake_seconds.max(1)),
        reason: format!(
            "At stage {} of {} ({}): an earlier attempt of this tick wrote it and then failed; baking from now",
            stage + 1,
            release.stages.len(),
            percent(release.stages[stage].weight())
        ),
        ..Progress::new(&stamp.stable, Written::of(live), now)
    };
    progress.record(now, None);
    progress
}

/// The live traffic is not as this release left it. Its own stamp may say why (an
/// earlier attempt of this tick advanced, promoted or rolled back; the rollback function
/// or a person rolled it back); otherwise someone changed it outside the release, and
/// the release stops without writing over it.
async fn after_change(
    release: &Release,
    mut progress: Progress,
    live: Split,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let target = &release.target;
    let stage_text = stage_text(release, progress.stage);
    let Some(stamp) = live.stamp_by(execution).cloned() else {
        return outside_change(release, progress, live, execution, deps, now).await;
    };
    match &stamp.phase {
        Phase::Live => {
            let next = progress.stage + 1;
            let advanced = stamp.stage.is_some_and(|(at, _)| at == next + 1)
                && next < release.stages.len()
                && live.same_routing(&stage_split(release, &progress.stable, &live, next));
            if !advanced {
                return outside_change(release, progress, live, execution, deps, now).await;
            }
            progress.stage = next;
            progress.weight = release.stages[next].weight();
            progress.last_written = Written::of(&live);
            progress.stage_entered_at = now;
            progress.status = Status::Advanced;
            progress.wait_seconds = release.check_every_seconds.min(release.stages[next].bake_seconds.max(1));
            progress.reason = format!(
                "Now at {}: an earlier attempt of this tick advanced and then failed; baking from now",
                percent(release.stages[next].weight())
            );
            log_decision(release, &progress, None);
            progress.record(now, None);
            Ok(progress)
        }
        Phase::Promoted => {
            let reason = "Promoted (recorded by an earlier attempt of this tick)".to_owned();
            Ok(finish(progress, now, Status::Promoted, reason, None))
        }
        Phase::RolledBack(RolledBackBy::Alarm(alarm)) => {
            let reason = format!(
                "Rolled back by the rollback function on alarm {alarm}, at {stage_text}: the canary's traffic was \
                 taken away as soon as the alarm fired"
            );
            warn!(release = %release.release, target = %target, decision = "rolled_back", rolled_back_by = "alarm", alarm = %alarm, "{reason}");
            progress.rolled_back_by = Some(RollbackKind::Alarm);
            Ok(finish(progress, now, Status::RolledBack, reason, None))
        }
        Phase::RolledBack(by @ RolledBackBy::Operator { .. }) => {
            let reason = format!("Rolled back at {stage_text} by {}", by.describe());
            warn!(release = %release.release, target = %target, decision = "rolled_back", rolled_back_by = "operator", "{reason}");
            progress.rolled_back_by = Some(RollbackKind::Operator);
            Ok(finish(progress, now, Status::RolledBack, reason, None))
        }
        // An earlier attempt of this tick rolled back and then failed, perhaps before
        // its message went out: say it again (at least once beats never).
        Phase::RolledBack(by @ (RolledBackBy::Health | RolledBackBy::Safety)) => {
            let why = format!("{} rolled it back (an earlier attempt of this tick)", by.describe());
            let outcome = ZeroOutcome::AlreadyZero { split: live };
            roll_back_notified(release, progress, execution, deps, now, RollbackKind::Health, why, None, outcome).await
        }
    }
}

async fn outside_change(
    release: &Release,
    mut progress: Progress,
    live: Split,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
) -> Result<Progress> {
    let target = &release.target;
    let reason = format!(
        "Stopped at {}: the traffic was changed outside the release (expected {}, found {}); coalmine left it as \
         found",
        stage_text(release, progress.stage),
        describe(target, &progress.last_written.as_split()),
        describe(target, &live)
    );
    warn!(release = %release.release, target = %target, decision = "rolled_back", rolled_back_by = "outside_change", "{reason}");
    let message = release_notify::rolled_back(&release_notify::Stopped {
        release,
        execution,
        kind: RollbackKind::OutsideChange,
        why: &reason,
        evidence: None,
        stage: progress.stage,
        before: &progress.last_written.as_split(),
        after: &live,
    });
    deps.notifier.publish(&message).await.map_err(|e| unsent(release, "the rollback's message", e))?;
    progress.rolled_back_by = Some(RollbackKind::OutsideChange);
    Ok(finish(progress, now, Status::RolledBack, reason, None))
}

/// After a tick failed for good: undo whatever this execution moved (only that), tell
/// the team, and say how the execution ends. It only ever lowers the canary.
pub async fn safety_rollback(
    release: Result<Release>,
    progress: Option<&Progress>,
    failure: &Value,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
) -> Result<SafetyOutcome> {
    let error = failure.get("Error").and_then(Value::as_str).unwrap_or("unknown");
    let cause = failure_cause(failure);
    let release = match release {
        Ok(release) => release,
        // It never parsed, so no tick of it ever ran.
        Err(e) => return Ok(SafetyOutcome::invalid(&e.to_string())),
    };
    let target = &release.target;
    let live = match deps.router.read(target).await {
        Ok(live) => live,
        // Not there, or not ours to touch: this release cannot have moved it.
        Err(Error::NotFound { .. } | Error::AccessDenied { .. }) => return Ok(SafetyOutcome::invalid(&cause)),
        Err(other) => return Err(other),
    };
    let stamp = live.stamp_by(execution).cloned();
    let outcome = match stamp.as_ref().map(|s| &s.phase) {
        Some(Phase::Promoted) => SafetyOutcome {
            ending: Ending::Promoted,
            undone: false,
            cause: format!("Promoted; the tick after the promotion failed ({cause})"),
        },
        Some(Phase::RolledBack(by)) => SafetyOutcome {
            ending: Ending::RolledBack,
            undone: false,
            cause: format!("Rolled back by {}; then a tick failed ({cause})", by.describe()),
        },
        Some(Phase::Live) => {
            let done = zero_canary(deps.router, target, &RolledBackBy::Safety, Owner::Execution(execution), Some(live))
                .await?;
            let stage = progress.map_or_else(
                || stamp.as_ref().and_then(|s| s.stage).map_or(0, |(at, _)| at.saturating_sub(1)),
                |p| p.stage,
            );
            let why = format!("the release's tick kept failing: {cause}");
            let changed = matches!(done, ZeroOutcome::RolledBack { .. });
            if changed {
                let message = release_notify::rolled_back(&release_notify::Stopped {
                    release: &release,
                    execution,
                    kind: RollbackKind::Safety,
                    why: &why,
                    evidence: None,
                    stage,
                    before: done.before(),
                    after: done.after(),
                });
                deps.notifier.publish(&message).await.map_err(|e| unsent(&release, "the rollback's message", e))?;
            }
            SafetyOutcome {
                ending: Ending::FailedAfterUndoing,
                undone: changed,
                cause: format!(
                    "Failed after undoing: {why}. {}",
                    if changed {
                        format!("coalmine set the traffic back: {}", describe(target, done.after()))
                    } else {
                        "Its traffic had already been taken away".to_owned()
                    }
                ),
            }
        }
        None if error == INVALID_RELEASE => SafetyOutcome::invalid(&cause),
        None => SafetyOutcome {
            ending: Ending::FailedAfterUndoing,
            undone: false,
            cause: format!("Failed: {cause}. This release had moved no traffic, so there was nothing to undo"),
        },
    };
    warn!(
        release = %release.release, target = %target, decision = "safety_rollback", ending = outcome.ending.as_str(),
        undone = outcome.undone, error, "{}", outcome.cause
    );
    Ok(outcome)
}

/// What the safety rollback did and how the execution ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SafetyOutcome {
    pub ending: Ending,
    /// Whether this step took traffic away.
    pub undone: bool,
    /// The execution's cause: a sentence, not JSON.
    pub cause: String,
}

impl SafetyOutcome {
    /// The release was never valid, or names what it may not touch: nothing moved.
    pub(crate) fn invalid(cause: &str) -> SafetyOutcome {
        SafetyOutcome {
            ending: Ending::InvalidRelease,
            undone: false,
            cause: format!("Invalid release, nothing moved: {}", unprefixed(cause)),
        }
    }
}

/// The failed tick's error as a sentence for the execution's cause.
pub(crate) fn failure_cause(failure: &Value) -> String {
    unprefixed(&plain_cause(failure)).to_owned()
}

/// "Invalid release, nothing moved: invalid release: ..." would say it twice.
fn unprefixed(cause: &str) -> &str {
    cause.strip_prefix("invalid release: ").unwrap_or(cause)
}

/// The failed tick's error as a sentence. Lambda puts the function's error in `Cause` as
/// JSON (`{"errorType": ..., "errorMessage": ...}`); Step Functions' own errors
/// (`States.Timeout`, ...) carry text or nothing.
fn plain_cause(failure: &Value) -> String {
    let error = failure.get("Error").and_then(Value::as_str).unwrap_or("unknown error");
    let cause = failure.get("Cause").and_then(Value::as_str).unwrap_or_default();
    let from_lambda = serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|v| v.get("errorMessage").and_then(Value::as_str).map(str::to_owned));
    match from_lambda {
        Some(message) if !message.is_empty() => message,
        _ if cause.trim().is_empty() => format!("{error}, with no more detail"),
        _ => format!("{error}: {}", cause.trim()),
    }
}

/// The split a stage asks for. Lambda at 100% is a promotion: the canary becomes the
/// alias's version. SageMaker keeps both variants and moves the weights.
fn stage_split(release: &Release, stable: &str, live: &Split, stage: usize) -> Split {
    let s = release.stages[stage];
    match &release.target {
        Target::Lambda(_) if s.is_full() => Split::stable_only(release.canary_id(), None),
        Target::Lambda(_) => Split {
            stable: stable.to_owned(),
            canary: Some(release.canary_id().to_owned()),
            canary_weight: s.weight(),
            revision: None,
            stamp: None,
        },
        Target::Sagemaker(_) => live.with_canary_weight(s.weight()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn roll_back(
    release: &Release,
    progress: Progress,
    live: Split,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
    kind: RollbackKind,
    why: String,
    evidence: Option<&Evidence>,
) -> Result<Progress> {
    let target = &release.target;
    let outcome =
        zero_canary(deps.router, target, &RolledBackBy::Health, Owner::Execution(execution), Some(live)).await?;
    if let ZeroOutcome::NotOurs { split } = outcome {
        // Changed between the read and the write: see what happened instead.
        return after_change(release, progress, split, execution, deps, now).await;
    }
    roll_back_notified(release, progress, execution, deps, now, kind, why, evidence, outcome).await
}

#[allow(clippy::too_many_arguments)]
async fn roll_back_notified(
    release: &Release,
    mut progress: Progress,
    execution: &str,
    deps: &StepDeps<'_, impl TrafficRouter, impl Notifier, impl AlarmSource, impl MetricSource>,
    now: u64,
    kind: RollbackKind,
    why: String,
    evidence: Option<&Evidence>,
    outcome: ZeroOutcome,
) -> Result<Progress> {
    let message = release_notify::rolled_back(&release_notify::Stopped {
        release,
        execution,
        kind,
        why: &why,
        evidence,
        stage: progress.stage,
        before: outcome.before(),
        after: outcome.after(),
    });
    // The rollback stands whatever happens to the message; a failed message fails the
    // tick so the state machine's retry (which finds the rollback in the stamp) re-sends it.
    deps.notifier.publish(&message).await.map_err(|e| unsent(release, "the rollback's message", e))?;
    let reason = format!("{} at {}: {why}", kind.headline(), stage_text(release, progress.stage));
    progress.rolled_back_by = Some(kind);
    let done = finish(progress, now, Status::RolledBack, reason, evidence.and_then(|e| serde_json::to_value(e).ok()));
    log_decision(release, &done, evidence);
    Ok(done)
}

/// A message that did not go out fails the tick, so the state machine's retry sends it.
fn unsent(release: &Release, what: &str, error: Error) -> Error {
    Error::Incomplete { summary: format!("release {}: {what} was not sent: {error}", release.release), retryable: true }
}

/// "stage 2 of 4 (25%)"
fn stage_text(release: &Release, stage: usize) -> String {
    format!("stage {} of {} ({})", stage + 1, release.stages.len(), percent(release.stages[stage].weight()))
}

fn finish(mut progress: Progress, now: u64, status: Status, reason: String, evidence: Option<Value>) -> Progress {
    progress.status = status;
    progress.wait_seconds = 0;
    progress.reason = reason;
    progress.record(now, evidence);
    progress
}

/// One JSON line per decision, with the evidence as an object (see [`crate::logging`]).
fn log_decision(release: &Release, progress: &Progress, evidence: Option<&Evidence>) {
    let evidence = evidence.and_then(|e| serde_json::to_string(e).ok());
    info!(
        release = %release.release, target = %release.target, decision = progress.status.as_str(),
        stage = progress.stage, weight = progress.weight, wait_seconds = progress.wait_seconds,
        rolled_back_by = progress.rolled_back_by.map(RollbackKind::as_str),
        evidence = evidence.as_deref(),
        "{}", progress.reason
    );
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::AlarmState;
    use crate::fakes::{lambda_split, FakeAlarms, FakeMetrics, FakeNotifier, FakeRouter};
    use crate::release::{Gates, InsufficientDataAlarm};
    use crate::Target;

    const T0: u64 = 1_800_000_000;
    const ME: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42";
    const OTHER: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42-again";

    fn release(gates: Gates) -> Release {
        let release = Release {
            release: "ai-handler-42".into(),
            target: Target::lambda("ai-handler", "live"),
            canary_version: Some("42".into()),
            stages: vec![
                crate::release::Stage::new(5.0, 600),
                crate::release::Stage::new(25.0, 600),
                crate::release::Stage::new(100.0, 300),
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

        fn deps(&self) -> StepDeps<'_, FakeRouter, FakeNotifier, FakeAlarms, FakeMetrics> {
            StepDeps { router: &self.router, notifier: &self.notifier, alarms: &self.alarms, metrics: &self.metrics }
        }

        async fn tick(&self, release: &Release, progress: Option<Progress>, now: u64) -> Result<Progress> {
            self.tick_as(ME, release, progress, now).await
        }

        async fn tick_as(
            &self,
            execution: &str,
            release: &Release,
            progress: Option<Progress>,
            now: u64,
        ) -> Result<Progress> {
            tick(release, progress, execution, &self.deps(), now).await
        }

        /// The state machine's safety step, after a tick of `execution` failed.
        async fn safety(&self, execution: &str, release: &Release, progress: Option<&Progress>) -> SafetyOutcome {
            let failure = serde_json::json!({"Error": "Retryable", "Cause": "{\"errorType\":\"Retryable\",\"errorMessage\":\"cloudwatch:GetMetricData failed: ThrottlingException: Rate exceeded (HTTP 400, request id r-1)\"}"});
            safety_rollback(Ok(release.clone()), progress, &failure, execution, &self.deps()).await.unwrap()
        }

        fn live(&self) -> Split {
            self.router.split(&target())
        }

        fn sent(&self) -> Vec<crate::ports::Notification> {
            self.notifier.sent.lock().unwrap().clone()
        }
    }

    fn target() -> Target {
        Target::lambda("ai-handler", "live")
    }

    fn stable_only() -> Split {
        Split { revision: Some("rev-0".into()), ..Split::stable_only("41", None) }
    }

    #[tokio::test]
    async fn the_first_tick_records_stable_and_stamps_the_alias_with_this_execution() {
        let world = World::new(stable_only());
        let p = world.tick(&release(gates()), None, T0).await.unwrap();
        assert_eq!((p.status, p.stage, p.stable.as_str(), p.wait_seconds), (Status::Advanced, 0, "41", 60));
        let live = world.live();
        assert_eq!((live.stable.as_str(), live.canary.as_deref(), live.canary_weight), ("41", Some("42"), 0.05));
        let stamp = live.stamp.unwrap();
        assert_eq!(
            (stamp.execution.as_str(), stamp.stable.as_str(), stamp.phase, stamp.stage),
            ("Release:ai-handler-42", "41", Phase::Live, Some((1, 3)))
        );
        assert_eq!(world.router.write_count(), 1);
        assert_eq!(p.reason, "Started: version 42 at 5% beside version 41");
    }

    #[tokio::test]
    async fn too_little_traffic_to_judge_is_said_at_the_start() {
        let world = World::new(stable_only());
        // 600 stable requests in the last hour: at 5% for 10 minutes, about 5 for the canary.
        world.metrics.set((0.0, 0.0), (600.0, 3.0));
        let p = world.tick(&release(gates()), None, T0).await.unwrap();
        assert!(
            p.reason.contains("Warning: the stable served 10 requests a minute over the last hour: at 5% for 600 s the canary would see about 5, below min_requests 100"),
            "{}",
            p.reason
        );
        assert_eq!(world.metrics.windows.lock().unwrap()[0], (T0 - 3600, T0 + 60), "the stable's last hour");
        assert_eq!(world.live().canary_weight, 0.05, "a warning, not a refusal");
    }

    #[tokio::test]
    async fn a_bad_starting_point_fails_before_any_traffic_moves() {
        let in_flight = World::new(lambda_split("41", "40", 0.1));
        let err = in_flight.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(
            err.to_string().contains("already has a canary in flight: version 41 at 90%, canary version 40 at 10%"),
            "{err}"
        );
        assert_eq!(err.error_type(), "InvalidRelease");

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

        let no_alias = World::new(stable_only());
        no_alias.router.splits.lock().unwrap().clear();
        let err = no_alias.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(err.to_string().contains("target: lambda:ai-handler:live was not found"), "{err}");
        assert_eq!(err.error_type(), "InvalidRelease");

        for world in [in_flight, already_stable, unpublished, no_alarm, no_alias] {
            assert_eq!(world.router.write_count(), 0);
        }
    }

    #[tokio::test]
    async fn a_release_never_starts_into_a_firing_gate_alarm() {
        let firing = World::new(stable_only());
        firing.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Alarm);
        let err = firing.tick(&release(gates()), None, T0).await.unwrap_err();
        assert!(err.to_string().contains("refused: gate alarm errors is ALARM"), "{err}");
        assert_eq!((err.error_type(), firing.router.write_count()), ("InvalidRelease", 0));

        // INSUFFICIENT_DATA blocks only when the release says such an alarm is unhealthy.
        let no_data = World::new(stable_only());
        no_data.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::InsufficientData);
        let strict = release(Gates { alarm_insufficient_data: InsufficientDataAlarm::Unhealthy, ..gates() });
        let err = no_data.tick(&strict, None, T0).await.unwrap_err();
        assert!(err.to_string().contains("gate alarm errors is INSUFFICIENT_DATA"), "{err}");
        assert_eq!(no_data.router.write_count(), 0);
        no_data.tick(&release(gates()), None, T0).await.unwrap();
        assert_eq!(no_data.router.write_count(), 1, "the lenient default starts");
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
        assert_eq!(world.live().stamp.unwrap().stage, Some((2, 3)));

        let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
        assert_eq!((p.status, p.stage), (Status::Advanced, 2));
        let live = world.live();
        assert_eq!((live.stable.as_str(), live.canary), ("42", None), "Lambda at 100%: the alias points at the canary");
        let stamp = live.stamp.unwrap();
        assert_eq!((stamp.stable.as_str(), stamp.phase), ("41", Phase::Live), "the stable to restore is recorded");

        let p = world.tick(&r, Some(p), T0 + 1500).await.unwrap();
        assert_eq!((p.status, p.wait_seconds), (Status::Promoted, 0));
        assert!(p.reason.starts_with("Promoted: stage 100% baked; healthy: canary 1000 requests"), "{}", p.reason);
        assert_eq!(world.live().stamp.unwrap().phase, Phase::Promoted, "an alarm no longer reverts it");
        assert_eq!(world.router.write_count(), 4, "three stages and the promotion's record");
        assert!(world.sent().is_empty());
        assert_eq!(
            p.history.iter().map(|d| d.status).collect::<Vec<_>>(),
            [Status::Advanced, Status::Baking, Status::Baking, Status::Advanced, Status::Advanced, Status::Promoted]
        );

        let err = world.tick(&r, Some(p), T0 + 1600).await.unwrap_err();
        assert!(err.to_string().contains("already ended promoted"), "{err}");
    }

    #[tokio::test]
    async fn a_stage_with_no_canary_traffic_is_never_healthy() {
        let world = World::new(stable_only());
        world.metrics.set((-0.0, 0.0), (20_000.0, 20.0));
        let r = release(Gates { max_hold_seconds: 120, ..gates() });
        let p = world.tick(&r, None, T0).await.unwrap();
        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!(p.status, Status::Holding);
        assert_eq!(p.reason, "inconclusive: 0 canary requests, fewer than min_requests 100");
        let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn a_gate_alarm_rolls_back_with_the_shared_code_and_says_so() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Alarm);
        let fetched_at_start = world.metrics.windows.lock().unwrap().len();

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::GateAlarm)));
        assert_eq!(p.reason, "Rolled back on a gate alarm at stage 1 of 3 (5%): alarm errors is ALARM");
        assert_eq!((world.live().canary_weight, world.live().stable.as_str()), (0.0, "41"));
        assert_eq!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health));
        let sent = world.sent();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].attributes.contains(&("release", "ai-handler-42".into())));
        assert_eq!(sent[0].subject, "coalmine: ai-handler-42 rolled back on lambda:ai-handler:live (gate alarm)");
        for line in [
            "one of its gate alarms fired",
            "Stage:     stage 1 of 3 (5%)",
            "Kind:      gate_alarm",
            "Before:    version 41 at 95%, canary version 42 at 5%",
            "After:     version 41 serves all traffic, no canary",
            "Why:       alarm errors is ALARM",
            "executions/details/arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42",
            "will not start until it is OK",
        ] {
            assert!(sent[0].body.contains(line), "lacks {line:?}:\n{}", sent[0].body);
        }
        assert_eq!(world.metrics.windows.lock().unwrap().len(), fetched_at_start, "an alarm needs no metrics");
    }

    #[tokio::test]
    async fn bad_metrics_roll_back_with_evidence() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((1000.0, 80.0), (20_000.0, 20.0));
        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::Health)));
        let evidence = p.history.last().unwrap().evidence.as_ref().unwrap();
        assert_eq!(evidence["metrics"]["canary"]["errors"], 80.0);
        assert!(
            p.reason.contains("canary error rate 8.00% over 1000 requests, above max_error_rate 5.00%"),
            "{}",
            p.reason
        );
        let body = &world.sent()[0].body;
        assert!(body.contains("its canary failed a health check"), "{body}");
        assert!(
            body.contains(
                "Evidence:  canary 1000 requests, 80 errors (8.00%), p95 n/a; stable 20000 requests, 20 errors (0.10%)"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_split_changed_by_someone_else_stops_the_release_without_writing() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        // A person raises the weight in the console; the description (the stamp) stays.
        let stamp = world.live().stamp;
        world.router.splits.lock().unwrap().insert(target(), Split { stamp, ..lambda_split("41", "42", 0.5) });

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::OutsideChange)));
        assert!(
            p.reason.contains(
                "changed outside the release (expected version 41 at 95%, canary version 42 at 5%, found version 41 \
                 at 50%, canary version 42 at 50%); coalmine left it as found"
            ),
            "{}",
            p.reason
        );
        assert_eq!((world.live().canary_weight, world.router.write_count()), (0.5, 1), "not written over");
        assert!(world.sent()[0].subject.ends_with("(changed outside the release)"), "{}", world.sent()[0].subject);
    }

    #[tokio::test]
    async fn a_rollback_by_the_rollback_function_is_named_and_not_announced_twice() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        let by = RolledBackBy::Alarm("coalmine-ai-handler-errors".into());
        crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Anyone, None).await.unwrap();

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::Alarm)));
        assert!(
            p.reason.starts_with(
                "Rolled back by the rollback function on alarm coalmine-ai-handler-errors, at stage 1 of 3 (5%)"
            ),
            "{}",
            p.reason
        );
        assert!(world.sent().is_empty(), "the rollback function told the team already");
        assert_eq!(world.router.write_count(), 2);
    }

    #[tokio::test]
    async fn a_conflict_while_advancing_is_not_overwritten_and_the_retry_says_what_won() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        // The rollback function zeroes it between the stepper's read and its write.
        let zeroed = Split {
            stamp: world.live().stamp.map(|s| s.rolled_back(RolledBackBy::Alarm("errors-fast".into()))),
            ..lambda_split("41", "42", 0.0)
        };
        world.router.interleaved.lock().unwrap().insert(target(), [zeroed].into());

        let err = world.tick(&r, Some(p.clone()), T0 + 600).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }) && err.is_retryable(), "{err}");
        assert_eq!(world.live().canary_weight, 0.0, "not overwritten");

        let p = world.tick(&r, Some(p), T0 + 602).await.unwrap();
        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::Alarm)));
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
        assert!(world.sent()[0].body.contains("Before:    version 42 serves all traffic"), "{}", world.sent()[0].body);
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
        assert!(p.reason.contains("fewer than min_requests 100, still after holding 300 s"), "{}", p.reason);
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
            if policy == OnInsufficientData::Proceed {
                assert!(p.reason.contains("proceeding, as on_insufficient_data says"), "never 'healthy': {}", p.reason);
            }
        }
    }

    #[tokio::test]
    async fn a_failed_rollback_message_fails_the_tick_and_the_retry_sends_it() {
        let world = World { notifier: FakeNotifier::failing(1), ..World::new(stable_only()) };
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        world.alarms.states.lock().unwrap().insert("errors".into(), AlarmState::Alarm);

        let err = world.tick(&r, Some(p.clone()), T0 + 60).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("message was not sent"), "{err}");
        assert_eq!(world.live().canary_weight, 0.0, "the rollback stands");

        let p = world.tick(&r, Some(p), T0 + 61).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        assert_eq!(world.sent().len(), 1, "the retry told the team");
        assert_eq!(world.router.write_count(), 2, "and wrote nothing more");
    }

    #[tokio::test]
    async fn a_retried_tick_picks_up_what_its_failed_attempt_wrote() {
        // The first tick wrote stage 0, then its answer was lost.
        let world = World::new(stable_only());
        let r = release(gates());
        world.tick(&r, None, T0).await.unwrap();
        let p = world.tick(&r, None, T0 + 2).await.unwrap();
        assert_eq!((p.status, p.stage, p.stable.as_str()), (Status::Advanced, 0, "41"));
        assert_eq!(world.router.write_count(), 1, "not started twice");

        // An advance wrote stage 1, then its answer was lost: the retry has the old progress.
        let before_advance = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        world.tick(&r, Some(before_advance.clone()), T0 + 700).await.unwrap();
        let p = world.tick(&r, Some(before_advance), T0 + 702).await.unwrap();
        assert_eq!((p.status, p.stage, p.weight), (Status::Advanced, 1, 0.25));
        assert!(p.reason.contains("an earlier attempt of this tick advanced"), "{}", p.reason);
        assert_eq!(world.router.write_count(), 2);
        let p = world.tick(&r, Some(p), T0 + 760).await.unwrap();
        assert_eq!(p.status, Status::Baking);
    }

    #[tokio::test]
    async fn a_second_execution_of_the_same_release_is_refused_and_its_safety_step_undoes_nothing() {
        let world = World::new(stable_only());
        let r = release(gates());
        let first = world.tick(&r, None, T0).await.unwrap();

        let err = world.tick_as(OTHER, &r, None, T0 + 5).await.unwrap_err();
        assert!(
            err.to_string().contains("already has a canary in flight: version 41 at 95%, canary version 42 at 5% (release ai-handler-42, execution Release:ai-handler-42, stage 1 of 3)"),
            "{err}"
        );
        let failure = serde_json::json!({"Error": err.error_type(), "Cause": serde_json::json!({"errorType": err.error_type(), "errorMessage": err.to_string()}).to_string()});
        let ended = safety_rollback(Ok(r.clone()), None, &failure, OTHER, &world.deps()).await.unwrap();

        assert_eq!((ended.ending, ended.undone), (Ending::InvalidRelease, false));
        assert!(
            ended
                .cause
                .starts_with("Invalid release, nothing moved: refused: lambda:ai-handler:live already has a canary"),
            "{}",
            ended.cause
        );
        assert_eq!(world.live().canary_weight, 0.05, "the first release's canary is untouched");
        assert!(world.sent().is_empty());
        let p = world.tick(&r, Some(first), T0 + 600).await.unwrap();
        assert_eq!((p.status, p.stage), (Status::Advanced, 1), "and it climbs on");
    }

    #[tokio::test]
    async fn the_safety_rollback_undoes_only_this_executions_traffic() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();

        let ended = world.safety(ME, &r, Some(&p)).await;
        assert_eq!((ended.ending, ended.undone), (Ending::FailedAfterUndoing, true));
        assert_eq!(
            ended.cause,
            "Failed after undoing: the release's tick kept failing: cloudwatch:GetMetricData failed: \
             ThrottlingException: Rate exceeded (HTTP 400, request id r-1). coalmine set the traffic back: version 41 \
             serves all traffic, no canary"
        );
        assert_eq!(world.live().canary_weight, 0.0);
        assert_eq!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Safety));
        assert!(world.sent()[0].body.contains("Kind:      safety"), "{}", world.sent()[0].body);

        // Run again (the state machine retries): the stamp says it is done.
        let again = world.safety(ME, &r, Some(&p)).await;
        assert_eq!((again.ending, again.undone), (Ending::RolledBack, false));
        assert_eq!(world.router.write_count(), 2);

        // A crash after the first write but before the tick answered: no progress, the
        // stamp alone tells the safety step the traffic is this execution's.
        let crashed = World::new(stable_only());
        crashed.tick(&r, None, T0).await.unwrap();
        assert_eq!(crashed.safety(ME, &r, None).await.ending, Ending::FailedAfterUndoing);
        assert_eq!(crashed.live().canary_weight, 0.0);

        // Another execution's canary, or one with no stamp at all, is not ours to touch.
        let theirs = World::new(lambda_split("41", "40", 0.3));
        let ended = theirs.safety(ME, &r, None).await;
        assert_eq!((ended.ending, ended.undone), (Ending::FailedAfterUndoing, false));
        assert!(
            ended.cause.ends_with("This release had moved no traffic, so there was nothing to undo"),
            "{}",
            ended.cause
        );
        assert_eq!(theirs.live().canary_weight, 0.3);
    }

    #[tokio::test]
    async fn a_typo_in_the_target_ends_invalid_not_stuck() {
        let world = World::new(stable_only());
        let mut r = release(gates());
        r.target = Target::lambda("ai-handlr", "live");
        let err = world.tick(&r, None, T0).await.unwrap_err();
        let failure = serde_json::json!({"Error": err.error_type(), "Cause": serde_json::json!({"errorMessage": err.to_string()}).to_string()});
        let ended = safety_rollback(Ok(r), None, &failure, ME, &world.deps()).await.unwrap();
        assert_eq!(ended.ending, Ending::InvalidRelease);
        assert!(ended.cause.contains("lambda:ai-handlr:live was not found"), "{}", ended.cause);
    }

    #[tokio::test]
    async fn a_failure_after_the_promotion_was_recorded_ends_promoted() {
        let world = World::new(stable_only());
        let r = release(gates());
        let mut p = world.tick(&r, None, T0).await.unwrap();
        for at in [T0 + 600, T0 + 1200, T0 + 1500] {
            p = world.tick(&r, Some(p), at).await.unwrap();
        }
        let ended = world.safety(ME, &r, Some(&p)).await;
        assert_eq!((ended.ending, ended.undone), (Ending::Promoted, false));
        assert_eq!(world.live().stable, "42", "a promotion whose bake passed is not undone");
    }

    async fn operator(world: &World, command: crate::release::control::Command) {
        crate::release::control::command(&world.router, &target(), "ai-handler-42", "jane", command).await.unwrap();
    }

    #[tokio::test]
    async fn a_paused_release_is_still_judged_but_does_not_advance_until_resumed() {
        use crate::release::control::Command;
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        operator(&world, Command::Pause).await;

        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!((p.status, p.stage, p.wait_seconds), (Status::Paused, 0, 60));
        assert!(p.reason.starts_with("Paused by jane at stage 1 of 3 (5%), bake done"), "{}", p.reason);
        let p = world.tick(&r, Some(p), T0 + 660).await.unwrap();
        assert_eq!((p.status, world.router.write_count()), (Status::Paused, 2), "only the pause was written");

        operator(&world, Command::Resume).await;
        let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
        assert_eq!((p.status, p.stage), (Status::Advanced, 1));

        // Paused, and then unhealthy: the judge still rolls back.
        operator(&world, Command::Pause).await;
        world.metrics.set((1000.0, 200.0), (20_000.0, 20.0));
        let p = world.tick(&r, Some(p), T0 + 780).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn an_approval_stage_waits_asks_the_team_once_and_goes_on_when_approved() {
        use crate::release::control::Command;
        let world = World::new(stable_only());
        let mut r = release(gates());
        r.stages[1].approval = true;
        r.stages[1].approval_timeout_seconds = Some(3600);
        let mut p = world.tick(&r, None, T0).await.unwrap();
        p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!(p.stage, 1);

        let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
        assert_eq!((p.status, p.awaiting_since, p.wait_seconds), (Status::AwaitingApproval, Some(T0 + 1200), 60));
        assert!(p.reason.contains("coalmine approve ai-handler-42; rolls back without it in 1h00m"), "{}", p.reason);
        let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();
        assert_eq!(p.status, Status::AwaitingApproval);
        let sent = world.sent();
        assert_eq!(sent.len(), 1, "asked once");
        assert!(sent[0].attributes.contains(&("event", "awaiting_approval".into())));
        assert_eq!(sent[0].subject, "coalmine: ai-handler-42 on lambda:ai-handler:live waits for approval at 25%");

        operator(&world, Command::Approve).await;
        let p = world.tick(&r, Some(p), T0 + 1320).await.unwrap();
        assert_eq!((p.status, p.stage), (Status::Advanced, 2));
        assert!(p.reason.contains("Approved by jane."), "{}", p.reason);
        assert_eq!(world.live().stamp.unwrap().request, None, "carried out, then cleared");
    }

    #[tokio::test]
    async fn no_approval_in_time_rolls_back() {
        let world = World::new(stable_only());
        let mut r = release(gates());
        r.stages[0].approval = true;
        r.stages[0].approval_timeout_seconds = Some(120);
        let p = world.tick(&r, None, T0).await.unwrap();
        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!(p.status, Status::AwaitingApproval);
        let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::ApprovalTimeout)));
        assert!(p.reason.contains("no approval within 2m"), "{}", p.reason);
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn promote_ends_the_bake_now_and_promote_full_ends_the_release_promoted() {
        use crate::release::control::Command;
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        operator(&world, Command::Promote { full: false }).await;
        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert_eq!((p.status, p.stage), (Status::Advanced, 1), "10 minutes early");
        assert!(p.reason.contains("Promoted by jane."), "{}", p.reason);

        // Too little data is no reason to refuse an operator's promote; it says so.
        world.metrics.set((3.0, 0.0), (1000.0, 0.0));
        operator(&world, Command::Promote { full: true }).await;
        let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
        assert_eq!(p.status, Status::Promoted);
        assert!(p.reason.starts_with("Promoted by jane (promote --full) from stage 2 of 3 (25%)"), "{}", p.reason);
        assert!(p.reason.contains("proceeding, as jane promoted it"), "{}", p.reason);
        let live = world.live();
        assert_eq!((live.stable.as_str(), live.canary_is_zero()), ("42", true));
        assert_eq!(live.stamp.unwrap().phase, Phase::Promoted);

        // An unhealthy canary is rolled back, whatever was asked.
        let world = World::new(stable_only());
        let p = world.tick(&r, None, T0).await.unwrap();
        operator(&world, Command::Promote { full: true }).await;
        world.metrics.set((1000.0, 200.0), (20_000.0, 20.0));
        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
    }

    #[tokio::test]
    async fn an_abort_by_hand_ends_the_release_naming_who_and_why() {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        crate::release::control::abort(&world.router, &world.notifier, &r, ME, "jane", "answers look truncated")
            .await
            .unwrap();

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RollbackKind::Operator)));
        assert_eq!(p.reason, "Rolled back at stage 1 of 3 (5%) by jane, by hand: answers look truncated");
        assert_eq!(world.sent().len(), 1, "the abort told the team; the release does not again");
        // A later release of the target starts.
        let next = World { router: FakeRouter::with([(target(), world.live())]), ..World::new(stable_only()) };
        next.tick_as(OTHER, &r, None, T0 + 120).await.unwrap();
    }

    #[tokio::test]
    async fn history_stays_bounded() {
        let world = World::new(stable_only());
        let r = Release { stages: vec![crate::release::Stage::new(100.0, 100_000)], ..release(gates()) };
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
    async fn the_payload_is_the_execution_and_the_state_and_round_trips() {
        let world = World::new(stable_only());
        let deps = world.deps();
        let state = serde_json::to_value(release(gates())).unwrap();
        let out = tick_payload(&serde_json::json!({"execution": ME, "state": state}), &deps, T0).await.unwrap();
        assert_eq!(out["progress"]["status"], "advanced");
        assert_eq!(out["release"], "ai-handler-42");
        let again = tick_payload(&serde_json::json!({"execution": ME, "state": out}), &deps, T0 + 60).await.unwrap();
        assert_eq!(again["progress"]["status"], "baking");

        let mut edited = again.clone();
        edited["progress"]["stage"] = "two".into();
        let err =
            tick_payload(&serde_json::json!({"execution": ME, "state": edited}), &deps, T0 + 60).await.unwrap_err();
        assert!(err.to_string().contains("progress:"), "{err}");

        let err = tick_payload(&again, &deps, T0 + 60).await.unwrap_err();
        assert!(err.to_string().contains("start a release with StartExecution"), "{err}");

        let mut failed = again.clone();
        failed["canary_version"] = "$LATEST".into();
        failed["failure"] = serde_json::json!({"Error": "InvalidRelease", "Cause": "x"});
        let ended = tick_payload(&serde_json::json!({"execution": ME, "state": failed}), &deps, T0).await.unwrap();
        assert_eq!(ended["ending"], "invalid_release");
        assert!(ended["cause"].as_str().unwrap().contains("$LATEST"), "{ended}");
    }
}
