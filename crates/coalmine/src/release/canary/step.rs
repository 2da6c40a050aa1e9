//! One tick of a weight canary: the entry every tick goes through. It reads the target,
//! sends anything this release did not leave to [`super::recovery`], a first tick to
//! [`super::start`], a replay to [`super::replaying`], a shadow to [`super::shadowing`], and a stage to [`super::stages`].
//! The phases share only [`super::ledger`]; none calls back into another's caller.
//!
//! Every write carries the release's stamp (see [`crate::domain::stamp`]) naming this
//! execution, so the release knows its own writes without its output: a retried tick
//! picks up what the failed attempt wrote, and the safety rollback undoes only traffic
//! this execution moved.

use crate::release::core::Ports;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::Result;
use crate::domain::stamp::Stamp;
use crate::ports::{CohortPublisher, TrafficRouter};
use crate::release::canary::progress::Progress;
use crate::release::canary::CanaryTick;
use crate::release::core::limits;
use tracing::warn;

impl<P: Ports> CanaryTick<'_, P> {
    pub async fn step(&self, progress: Option<Progress>) -> Result<Progress> {
        let was_shadowing = progress.as_ref().is_some_and(|p| p.kind.shadow.is_some());
        let mut next = self.step_once(progress).await?;
        self.close_feed_after(was_shadowing, &mut next).await;
        self.end_cohort_after(&mut next).await;
        Ok(next)
    }

    /// A cohort release that ended leaves its routers drawing nobody. Best effort, after
    /// the traffic is as the tick left it: the cohort alias already serves whatever the
    /// release ended on, so a router's stale cohort sends units to that, and the next
    /// release replaces the cohort before its alias moves.
    async fn end_cohort_after(&self, progress: &mut Progress) {
        let Some(nobody) = self.release.cohort_ended().filter(|_| progress.status.has_ended()) else {
            return;
        };
        if let Err(e) = self.deps.cohorts().publish(&self.release.target, &nobody).await {
            warn!(release = %self.release.release, error = %e, "the ended cohort was not published");
            progress.reason.push_str(&format!(
                " (routers were not told the cohort ended: {e}; they keep sending its units to the cohort alias, which \
                 serves what the release left)"
            ));
        }
    }

    async fn step_once(&self, progress: Option<Progress>) -> Result<Progress> {
        let Some(mut progress) = progress else {
            return self.start().await;
        };
        progress.ensure_running()?;
        let live = self.deps.traffic().read(&self.release.target).await?;
        progress.ticks += 1;
        // Only traffic as this release left it is judged; anything else is looked into,
        // never written over.
        let as_left = live.stamp_by(self.execution).is_some_and(Stamp::is_live)
            && live.same_routing(&progress.kind.last_written.as_split());
        if !as_left {
            return self.after_change(progress, live).await;
        }
        if progress.ticks > limits::MAX_TICKS {
            // Holds, pauses and approval waits spent what the execution can hold: ended
            // here, fail-safe, rather than by Step Functions with the canary still in flight.
            let why = format!(
                "it has made {} checks, the most one Step Functions execution holds (its holds, pauses and approval \
                 waits spent them)",
                limits::MAX_TICKS
            );
            return self.roll_back(progress, live, RolledBackBy::Safety, why, None).await;
        }
        if let Some(mut run) = progress.kind.shadow.clone() {
            if let Some(replayed) = run.replay.take() {
                return self.replay_tick(progress, live, run, replayed).await;
            }
            return self.shadow_tick(progress, live, run).await;
        }
        self.stage_tick(progress, live).await
    }
}
