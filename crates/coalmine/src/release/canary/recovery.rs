//! A weight canary whose traffic is not as it left it, and its own rollbacks.
//!
//! The stamp on the target says why the traffic changed: an earlier attempt of this
//! tick advanced, promoted or rolled back; the rollback function or a person rolled it
//! back. Anything else was changed outside the release, which then stops without
//! writing over it.

use crate::release::core::Ports;
use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::domain::stamp::Phase;
use crate::ports::Notifier;
use crate::release::canary::notify::{self as canary_notify, Stopped};
use crate::release::canary::progress::{Progress, Written};
use crate::release::canary::CanaryTick;
use crate::release::core::progress::Status;
use crate::release::core::unsent;
use crate::release::judge::Evidence;
use crate::rollback::{zero_canary, Owner, ZeroOutcome};
use crate::text::describe;

impl<P: Ports> CanaryTick<'_, P> {
    pub(super) async fn after_change(&self, progress: Progress, live: Split) -> Result<Progress> {
        let Some(stamp) = live.stamp_by(self.execution).cloned() else {
            return self.outside_change(progress, live).await;
        };
        match stamp.phase {
            Phase::Live => self.picked_up_advance(progress, live, stamp.stage).await,
            Phase::Promoted => {
                let reason = "Promoted (recorded by an earlier attempt of this tick)".to_owned();
                Ok(progress.finish(self.now, Status::Promoted, reason, None))
            }
            Phase::RolledBack(by @ (RolledBackBy::Alarm(_) | RolledBackBy::Operator { .. })) => {
                Ok(self.rolled_back_by_others(progress, by, &live))
            }
            // An earlier attempt of this tick rolled back and then failed, perhaps before
            // its message went out: say it again (at least once beats never), with the
            // cause it was written with.
            Phase::RolledBack(by) => {
                let why = format!("{} rolled it back (an earlier attempt of this tick)", by.describe());
                let outcome = ZeroOutcome::AlreadyZero { split: live };
                self.announce_rollback(progress, by, why, None, outcome).await
            }
        }
    }

    /// The stamp names this execution one stage ahead: an earlier attempt of this tick
    /// advanced and then failed. Anything else live is someone else's doing.
    async fn picked_up_advance(
        &self,
        mut progress: Progress,
        live: Split,
        stamped_stage: Option<(usize, usize)>,
    ) -> Result<Progress> {
        let release = self.release;
        let next = progress.stage + 1;
        let advanced = stamped_stage.is_some_and(|(at, _)| at == next + 1)
            && next < release.stages.len()
            && live.same_routing(&self.stage_split(&progress.stable, &live, next));
        if !advanced {
            return self.outside_change(progress, live).await;
        }
        self.publish_cohort(next).await?;
        progress.stage = next;
        progress.weight = release.stages[next].weight();
        progress.kind.last_written = Written::of(&live);
        progress.enter_stage(self.now);
        let reason = format!(
            "Now at {}: an earlier attempt of this tick advanced and then failed; baking from now",
            release.share_text(next)
        );
        let wait = release.check_every_seconds.min(release.stages[next].longest_bake().max(1));
        Ok(self.keep(progress, Status::Advanced, wait, reason, None))
    }

    /// The rollback function, on an alarm, or a person by hand, took the traffic away
    /// and told the team already: the release ends, naming them, and what serves now.
    fn rolled_back_by_others(&self, mut progress: Progress, by: RolledBackBy, live: &Split) -> Progress {
        let (release, target) = (&self.release.release, &self.release.target);
        let at = self.at(&progress);
        // A promoted Lambda canary is not zeroed but replaced: the stable it replaced is back.
        let put_back = (live.stable != progress.kind.last_written.stable).then(|| {
            format!(
                "{} had been promoted; {} was put back",
                target.side(self.release.canary_id()),
                target.side(&live.stable)
            )
        });
        let reason = match (&by, put_back) {
            (RolledBackBy::Alarm(alarm), Some(put_back)) => format!(
                "Rolled back by the rollback function on alarm {alarm}, at {at}: {put_back} as soon as the alarm fired"
            ),
            (RolledBackBy::Alarm(alarm), None) => format!(
                "Rolled back by the rollback function on alarm {alarm}, at {at}: the canary's traffic was taken away \
                 as soon as the alarm fired"
            ),
            (other, Some(put_back)) => format!("Rolled back at {at} by {}: {put_back}", other.describe()),
            (other, None) => format!("Rolled back at {at} by {}", other.describe()),
        };
        let alarm = match &by {
            RolledBackBy::Alarm(alarm) => Some(alarm.as_str()),
            _ => None,
        };
        warn!(release = %release, target = %target, decision = "rolled_back", rolled_back_by = by.as_str(), alarm, "{reason}");
        let who = by.person().map(str::to_owned);
        progress.rolled_back_by = Some(by);
        left(&mut progress, live);
        progress.finish(self.now, Status::RolledBack, reason, None).made_by(who.as_deref())
    }

    async fn outside_change(&self, mut progress: Progress, live: Split) -> Result<Progress> {
        let release = self.release;
        let target = &release.target;
        let before = progress.kind.last_written.as_split();
        let reason = format!(
            "Stopped at {}: the traffic was changed outside the release (expected {}, found {}); coalmine left it as \
             found",
            self.at(&progress),
            describe(target, &before),
            describe(target, &live)
        );
        warn!(release = %release.release, target = %target, decision = "rolled_back", rolled_back_by = "outside_change", "{reason}");
        let message = canary_notify::rolled_back(&Stopped {
            release,
            execution: self.execution,
            by: &RolledBackBy::OutsideChange,
            why: &reason,
            evidence: None,
            stage: progress.stage,
            before: &before,
            after: &live,
            dry_run: progress.dry_run.as_ref(),
            in_shadow: progress.kind.shadow.is_some(),
            replayed: progress.kind.shadow.as_ref().is_some_and(|run| run.replay.is_some()),
            examples: progress.kind.shadow.as_ref().map_or(&[], |run| &run.examples),
        });
        self.deps
            .notifier()
            .publish(&message)
            .await
            .map_err(|e| unsent(&release.release, "the rollback's message", e))?;
        progress.rolled_back_by = Some(RolledBackBy::OutsideChange);
        left(&mut progress, &live);
        Ok(progress.finish(self.now, Status::RolledBack, reason, None))
    }

    /// Takes the canary's traffic away with the rollback function's own code, then says so.
    pub(super) async fn roll_back(
        &self,
        progress: Progress,
        live: Split,
        by: RolledBackBy,
        why: String,
        evidence: Option<&Evidence>,
    ) -> Result<Progress> {
        let outcome =
            zero_canary(self.deps.traffic(), &self.release.target, &by, Owner::Execution(self.execution), Some(live))
                .await?;
        if let ZeroOutcome::NotOurs { split } = outcome {
            // Changed between the read and the write: see what happened instead.
            return self.after_change(progress, split).await;
        }
        self.announce_rollback(progress, by, why, evidence, outcome).await
    }

    pub(super) async fn announce_rollback(
        &self,
        mut progress: Progress,
        by: RolledBackBy,
        why: String,
        evidence: Option<&Evidence>,
        outcome: ZeroOutcome,
    ) -> Result<Progress> {
        let release = self.release;
        let message = canary_notify::rolled_back(&Stopped {
            release,
            execution: self.execution,
            by: &by,
            why: &why,
            evidence,
            stage: progress.stage,
            before: outcome.before(),
            after: outcome.after(),
            dry_run: progress.dry_run.as_ref(),
            in_shadow: progress.kind.shadow.is_some(),
            replayed: progress.kind.shadow.as_ref().is_some_and(|run| run.replay.is_some()),
            examples: progress.kind.shadow.as_ref().map_or(&[], |run| &run.examples),
        });
        // The rollback stands whatever happens to the message; a failed message fails the
        // tick so the state machine's retry (which finds the rollback in the stamp) re-sends it.
        self.deps
            .notifier()
            .publish(&message)
            .await
            .map_err(|e| unsent(&release.release, "the rollback's message", e))?;
        let reason = format!("{} at {}: {why}", by.headline(), self.at(&progress));
        let who = by.person().map(str::to_owned);
        progress.rolled_back_by = Some(by);
        left(&mut progress, outcome.after());
        Ok(self.done(progress, Status::RolledBack, reason, evidence).made_by(who.as_deref()))
    }
}

/// The release ends with the traffic as `split` has it: its last decision shows the
/// weight it left, and its record what serves now.
fn left(progress: &mut Progress, split: &Split) {
    progress.weight = if split.canary_is_zero() { 0.0 } else { split.canary_weight };
    progress.kind.last_written = Written::of(split);
}
