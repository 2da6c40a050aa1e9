//! What every phase of a canary tick shares and nothing else: where the release is in
//! words, the split a stage asks for, and a decision recorded and logged. It calls no
//! phase, so the phases form no circle through it.

use crate::release::core::Ports;

use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::ports::CohortPublisher;
use crate::release::canary::progress::Progress;
use crate::release::canary::CanaryTick;
use crate::release::core::progress::Status;
use crate::release::judge::Evidence;

impl<P: Ports> CanaryTick<'_, P> {
    /// The split a stage asks for. Lambda at 100% is a promotion: the canary becomes the
    /// alias's version. SageMaker and Azure ML keep both sides and move the weights.
    pub(super) fn stage_split(&self, stable: &str, live: &Split, stage: usize) -> Split {
        let release = self.release;
        release.target.stage_split(stable, live, release.stages[stage].weight(), release.canary_id())
    }

    /// A cohort release's share at `stage`, published for the routers (decision 0020).
    /// Entering the first stage it goes before the cohort alias moves, so no router is
    /// left with an earlier release's cohort once the alias serves this candidate; a later
    /// stage's goes after the write that records it, so exposure never runs ahead of the
    /// stage the target says. Either way the alias, not this, is what a rollback moves.
    pub(super) async fn publish_cohort(&self, stage: usize) -> Result<()> {
        match self.release.cohort_at(stage) {
            Some(cohort) => self.deps.cohorts().publish(&self.release.target, &cohort).await,
            None => Ok(()),
        }
    }

    /// Where the release is: "the shadow", or its stage.
    pub(super) fn at(&self, progress: &Progress) -> String {
        match &progress.kind.shadow {
            Some(run) if run.replay.is_some() => "the replay (before any user was served by the candidate)".into(),
            Some(_) => "the shadow (before any user was served by the candidate)".into(),
            None => self.stage_text(progress.stage),
        }
    }

    /// "stage 2 of 4 (25%)", "stage 2 of 4 (25% of users)"
    pub(super) fn stage_text(&self, stage: usize) -> String {
        format!("stage {} of {} ({})", stage + 1, self.release.stages.len(), self.release.share_text(stage))
    }

    /// A decision that changes nothing on the target, logged and kept.
    pub(super) fn keep(
        &self,
        progress: Progress,
        status: Status,
        wait: u64,
        reason: String,
        evidence: Option<&Evidence>,
    ) -> Progress {
        let progress = mark_shadow(progress.decide(self.now, status, wait, reason, evidence));
        self.log_decision(&self.release.target.to_string(), &progress, evidence);
        progress
    }

    /// The release's last decision, logged and kept.
    pub(super) fn done(
        &self,
        progress: Progress,
        status: Status,
        reason: String,
        evidence: Option<&Evidence>,
    ) -> Progress {
        let progress = mark_shadow(progress.finish(self.now, status, reason, evidence));
        self.log_decision(&self.release.target.to_string(), &progress, evidence);
        progress
    }
}

/// A decision made in the shadow says so in the history.
fn mark_shadow(mut progress: Progress) -> Progress {
    if let Some(run) = &progress.kind.shadow {
        let replay = run.replay.is_some();
        if let Some(last) = progress.history.last_mut() {
            last.shadow = true;
            last.replay = replay;
        }
    }
    progress
}
