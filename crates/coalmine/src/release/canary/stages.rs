//! A stage: look (the gate alarms, the metrics, an operator's requests), judge, and
//! decide: roll back, keep baking or holding, wait for approval, advance, or promote.

use crate::release::core::Ports;
use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::domain::stamp::{Request, Stamp};
use crate::ports::{MetricQuery, Notifier, TrafficRouter};
use crate::release::canary::notify as canary_notify;
use crate::release::canary::progress::{Progress, Written};
use crate::release::canary::spec::Stage;
use crate::release::canary::CanaryTick;
use crate::release::core::health::{holds, observe, rollback_reason};
use crate::release::core::progress::Status;
use crate::release::core::unsent;
use crate::release::judge::{Evidence, Verdict};
use crate::text::duration;

/// What this tick found: the traffic as read, the stamp on it (with any operator
/// request), the verdict, and whether the stage's bake is over.
pub(super) struct Look {
    pub live: Split,
    pub stamp: Stamp,
    /// An operator's `promote` (`full`, by whom): it ends the bake now.
    pub promote: Option<(bool, String)>,
    pub bake_done: bool,
    /// The bake ended early on evidence: an evidence-driven stage's tests concluded.
    pub concluded: bool,
    pub evidence: Evidence,
}

impl<P: Ports> CanaryTick<'_, P> {
    /// A tick within a stage, the traffic as this release left it.
    pub(super) async fn stage_tick(&self, mut progress: Progress, live: Split) -> Result<Progress> {
        let look = self.look(&mut progress, live).await?;
        self.decide(progress, look).await
    }

    /// The gate alarms and the metrics over the stage so far, and the stamp's requests.
    async fn look(&self, progress: &mut Progress, live: Split) -> Result<Look> {
        let release = self.release;
        let stable = progress.stable.clone();
        let query = MetricQuery {
            target: &release.target,
            canary: release.canary_id(),
            stable: &stable,
            start_epoch: progress.stage_entered_at,
            end_epoch: self.now.max(progress.stage_entered_at + 1),
            custom: &release.gates.custom,
            configs: None,
            shadow_of: None,
            pins: release.cohorts.as_ref().is_some_and(|c| c.has_pins()),
        };
        let mut evidence =
            observe(&release.gates, self.deps.alarms(), self.deps.metrics(), &query, progress, self.now).await?;
        let stamp = live.stamp.clone().unwrap_or_else(|| self.live_stamp(&stable, progress.stage, None));
        // An operator's promote ends the bake now, and goes on even on too little data:
        // their call, said in the reason. Nothing overrides an unhealthy verdict.
        let promote = match &stamp.request {
            Some(Request::Promote { full, by }) => Some((*full, by.clone())),
            _ => None,
        };
        // The bake counts the time this stage was watched, not the clock: a silence
        // between checks longer than they vouch for is not baked.
        let watched = progress.vouch(self.now, release.check_every_seconds);
        let (bake_done, concluded) = bake_over(&release.stages[progress.stage], watched, &mut evidence);
        Ok(Look { live, stamp, promote, bake_done, concluded, evidence })
    }

    /// Roll back, keep baking (or holding), or go on: by the verdict, the bake, and what
    /// an operator asked.
    async fn decide(&self, mut progress: Progress, look: Look) -> Result<Progress> {
        let gates = &self.release.gates;
        let bake_over = look.bake_done || look.promote.is_some();
        let judged_over = look.bake_done && look.promote.is_none();
        if let Some(why) = rollback_reason(gates, &look.evidence, judged_over, &mut progress.holding_since, self.now) {
            let by = if look.evidence.from_alarms() { RolledBackBy::GateAlarm } else { RolledBackBy::Health };
            return self.roll_back(progress, look.live, by, why, Some(&look.evidence)).await;
        }
        let holding = judged_over && holds(gates, &look.evidence);
        if !bake_over || holding {
            return Ok(self.keep_baking(progress, &look.evidence, holding));
        }
        progress.holding_since = None;
        let verdict = self.verdict(&look);
        if let Some((true, by)) = &look.promote {
            return self.promote_fully(progress, &look, by, &verdict).await;
        }
        if let (Some(who), None) = (&look.stamp.hold, &look.promote) {
            return Ok(self.paused(progress, &look.evidence, who, &verdict));
        }
        let approved = look.promote.is_some() || matches!(look.stamp.request, Some(Request::Approve { .. }));
        if self.release.stages[progress.stage].approval && !approved {
            return self.await_approval(progress, look, &verdict).await;
        }
        progress.awaiting_since = None;
        if progress.stage + 1 == self.release.stages.len() {
            return self.promote(progress, &look, &verdict).await;
        }
        self.advance(progress, &look, &verdict).await
    }

    /// Proceeding on too little data is the release's own choice, or an operator's; it
    /// is never "healthy".
    fn verdict(&self, look: &Look) -> String {
        let summary = look.evidence.summary();
        match (look.evidence.verdict, &look.promote) {
            (Verdict::Inconclusive, Some((_, by))) => {
                format!("{summary}; proceeding, as {by} promoted it")
            }
            (Verdict::Inconclusive, None) => {
                format!("{summary}; proceeding, as on_insufficient_data says")
            }
            _ => summary,
        }
    }

    /// The bake goes on, or the stage holds for want of evidence.
    fn keep_baking(&self, progress: Progress, evidence: &Evidence, holding: bool) -> Progress {
        let (check_every, stage) = (self.release.check_every_seconds, &self.release.stages[progress.stage]);
        let remaining = stage.longest_bake().saturating_sub(progress.watched_seconds);
        let (status, wait) =
            if holding { (Status::Holding, check_every) } else { (Status::Baking, check_every.min(remaining.max(1))) };
        self.keep(progress, status, wait, evidence.summary(), Some(evidence))
    }

    /// Held by an operator: the judge goes on (and rolls back), only advancing waits.
    fn paused(&self, progress: Progress, evidence: &Evidence, who: &str, verdict: &str) -> Progress {
        let reason = format!(
            "Paused by {who} at {}, bake done; the judge keeps checking ({verdict}). coalmine resume {} goes on",
            self.at(&progress),
            self.release.release
        );
        // Said once, when the pause began: the checks it holds after are the judge's.
        let began = progress.status != Status::Paused;
        self.keep(progress, Status::Paused, self.release.check_every_seconds, reason, Some(evidence))
            .made_by(began.then_some(who))
    }

    /// A stage that waits for approval: judged every check, the team asked once, rolled
    /// back on no answer.
    async fn await_approval(&self, mut progress: Progress, look: Look, verdict: &str) -> Result<Progress> {
        let (release, now) = (self.release, self.now);
        let stage = &release.stages[progress.stage];
        let since = match progress.awaiting_since {
            Some(since) => since,
            None => {
                let message = canary_notify::awaiting_approval(release, self.execution, progress.stage, &look.evidence);
                self.deps
                    .notifier()
                    .publish(&message)
                    .await
                    .map_err(|e| unsent(&release.release, "the approval request", e))?;
                *progress.awaiting_since.insert(now)
            }
        };
        let deadline = since + stage.approval_timeout();
        if now >= deadline {
            let why = format!("no approval within {}", duration(stage.approval_timeout()));
            return self.roll_back(progress, look.live, RolledBackBy::ApprovalTimeout, why, Some(&look.evidence)).await;
        }
        let reason = format!(
            "Waiting for approval at {} ({verdict}): coalmine approve {}; rolls back without it in {}",
            self.at(&progress),
            release.release,
            duration(deadline - now)
        );
        let wait = release.check_every_seconds.min(deadline - now);
        Ok(self.keep(progress, Status::AwaitingApproval, wait, reason, Some(&look.evidence)))
    }

    /// Promoted by hand, all the way: the final split, recorded as promoted, at once.
    async fn promote_fully(&self, mut progress: Progress, look: &Look, by: &str, verdict: &str) -> Result<Progress> {
        let last = self.release.stages.len() - 1;
        let desired =
            Split { stamp: Some(look.stamp.promoted()), ..self.stage_split(&progress.stable, &look.live, last) };
        self.write(&look.live, &desired, "promoting").await?;
        progress.weight = self.release.stages[last].weight();
        let reason = format!("Promoted by {by} (promote --full) from {}; {verdict}", self.at(&progress));
        Ok(self.promoted(progress, reason, look, verdict).await.made_by(Some(by)))
    }

    /// The last stage baked: recorded on the target first, so that from here on an alarm
    /// no longer reverts it.
    async fn promote(&self, progress: Progress, look: &Look, verdict: &str) -> Result<Progress> {
        let promoted = Split { stamp: Some(look.stamp.promoted()), ..look.live.clone() };
        self.write(&look.live, &promoted, "recording the promotion").await?;
        let stage = &self.release.stages[progress.stage];
        let reason = format!(
            "Promoted: stage {} {};{} {verdict}",
            self.release.share_text(progress.stage),
            baked(look, progress.watched_seconds),
            carried_out(look, stage.approval)
        );
        Ok(self.promoted(progress, reason, look, verdict).await.made_by(requested_by(look, stage.approval)))
    }

    /// The release ends promoted (already recorded on the target). A dry run that would
    /// have rolled it back is told to the team; that message is best effort, as nothing
    /// about the traffic waits on it.
    async fn promoted(&self, progress: Progress, reason: String, look: &Look, verdict: &str) -> Progress {
        let mut progress = self.done(progress, Status::Promoted, reason, Some(&look.evidence));
        if let Some(dry_run) = &progress.dry_run {
            let message = canary_notify::promoted_despite_dry_run(self.release, self.execution, dry_run, verdict);
            if let Err(e) = self.deps.notifier().publish(&message).await {
                warn!(release = %self.release.release, "the dry run's message was not sent: {e}");
                progress.reason.push_str(&format!(" (the team's message about the dry run was not sent: {e})"));
            }
        }
        progress
    }

    /// The next stage, written conditionally on the read.
    async fn advance(&self, mut progress: Progress, look: &Look, verdict: &str) -> Result<Progress> {
        let release = self.release;
        let next = progress.stage + 1;
        let desired = Split {
            stamp: Some(self.live_stamp(&progress.stable, next, look.stamp.hold.clone())),
            ..self.stage_split(&progress.stable, &look.live, next)
        };
        let written = self.write(&look.live, &desired, "advancing").await?;
        // Fails the tick (retried) if unpublished: the retry finds the stage on the target
        // and advances to it again, publishing.
        self.publish_cohort(next).await?;
        let approval = release.stages[progress.stage].approval;
        let reason = format!(
            "Stage {} {}; now at {}.{} {verdict}",
            release.share_text(progress.stage),
            baked(look, progress.watched_seconds),
            release.share_text(next),
            carried_out(look, approval),
        );
        progress.stage = next;
        progress.weight = release.stages[next].weight();
        progress.kind.last_written = Written::of(&written);
        progress.enter_stage(self.now);
        let wait = release.check_every_seconds.min(release.stages[next].longest_bake().max(1));
        Ok(self
            .keep(progress, Status::Advanced, wait, reason, Some(&look.evidence))
            .made_by(requested_by(look, approval)))
    }

    /// A write conditional on the read. Someone moved the traffic in between: the tick
    /// fails retryable, and its retry reads afresh and sees (and names) whatever won.
    async fn write(&self, read: &Split, desired: &Split, doing: &str) -> Result<Split> {
        let target = &self.release.target;
        self.deps.traffic().write(target, read, desired).await.map_err(|e| match e {
            Error::Conflict { .. } => Error::Conflict {
                target: target.clone(),
                detail: format!("the traffic changed while {doing}; reading it again"),
            },
            other => other,
        })
    }
}

/// How the bake ended, for the reason: "baked", or on evidence and when.
fn baked(look: &Look, elapsed: u64) -> String {
    if look.concluded {
        format!("concluded in {}, its tests ruling out twice their tolerance", duration(elapsed))
    } else {
        "baked".into()
    }
}

/// Whether the stage's bake is over after `elapsed` s, and whether it ended on evidence.
/// An evidence-driven stage ends when its look is healthy and conclusive (not before
/// `bake_seconds`); at its longest bake, a healthy look that did not conclude is too
/// little evidence, and `on_insufficient_data` decides, as for too few requests.
fn bake_over(stage: &Stage, elapsed: u64, evidence: &mut Evidence) -> (bool, bool) {
    if !stage.is_evidence_driven() {
        return (elapsed >= stage.bake_seconds, false);
    }
    let healthy = evidence.verdict == Verdict::Healthy;
    if healthy && evidence.conclusive && elapsed >= stage.bake_seconds {
        return (true, true);
    }
    if elapsed < stage.longest_bake() {
        return (false, false);
    }
    if healthy {
        evidence.verdict = Verdict::Inconclusive;
        let unsettled = evidence.unsettled().join(", ");
        let so_far = evidence.summary();
        evidence.reasons = vec![format!(
            "inconclusive after {}: {unsettled} could not yet rule out twice the tolerance; so far {}",
            duration(elapsed),
            so_far.trim_start_matches("healthy: ")
        )];
    }
    (true, false)
}

/// Who let the stage go on, if anyone: an approval where one was needed, or a promotion.
fn requested_by(look: &Look, approval: bool) -> Option<&str> {
    match &look.stamp.request {
        Some(Request::Approve { by }) if approval => Some(by),
        Some(Request::Promote { by, .. }) => Some(by),
        _ => None,
    }
}

/// " Approved by jane." or " Promoted by sam.": who let the stage go on, if anyone.
fn carried_out(look: &Look, approval: bool) -> String {
    match &look.stamp.request {
        Some(Request::Approve { by }) if approval => format!(" Approved by {by}."),
        Some(Request::Promote { by, .. }) => format!(" Promoted by {by}."),
        _ => String::new(),
    }
}
