//! A weight release's shadow phase, before its first stage: the stable serves every user
//! (the target's stamp says `stage=0/N`, the shadow) while the candidate answers copies
//! of live requests, and each tick judges it with the release's own tests. A Lambda
//! alias is fed by the shadow function (the stable's logged requests, asked of the
//! candidate and of the stable again, the answers compared); an Azure ML endpoint
//! mirrors a share of its traffic to the candidate deployment itself, in the same write
//! as the stamp. A shadow that fails ends the release before any user was served by the
//! candidate; one that passes enters the first stage, in one write that also ends the
//! mirror. Whatever ends it, a Lambda feed is removed after the tick.

use crate::release::core::Ports;
use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::Result;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::domain::shadow::Feed;
use crate::domain::split::Split;
use crate::domain::stamp::{Stamp, SHADOW_STAGE};
use crate::ports::{MetricQuery, ShadowFeeds, TrafficRouter};
use crate::release::canary::progress::{CanaryProgress, Progress, ShadowRun, Written};
use crate::release::canary::CanaryTick;
use crate::release::core::health::observe;
use crate::release::core::operate::Operated;
use crate::release::core::progress::{BeforeUsers, Status};
use crate::release::judge::gates::Gates;
use crate::release::judge::{Evidence, Verdict};
use crate::release::shadow::{step, ShadowStep};
use crate::rollback::record_rollback;
use crate::text::{duration, percent};

impl<P: Ports> CanaryTick<'_, P> {
    /// The alias's stamp while shadowing: the release owns the alias, nothing moved.
    pub(super) fn shadow_stamp(&self, stable: &str) -> Stamp {
        Stamp { stage: Some((SHADOW_STAGE, self.release.stages.len())), ..self.live_stamp(stable, 0, None) }
    }

    /// Owns the target (with the mirror, where the target mirrors; unless an earlier
    /// attempt of this tick wrote it), then opens a Lambda feed. A failure fails the
    /// tick; its retry picks up here.
    pub(super) async fn start_shadow(&self, live: Split) -> Result<Progress> {
        let release = self.release;
        let written = match live.stamp_by(self.execution) {
            Some(_) => live.clone(),
            None => {
                let desired = Split {
                    stamp: Some(self.shadow_stamp(&live.stable)),
                    mirror: release.mirror_share(),
                    ..live.clone()
                };
                self.deps.traffic().write(&release.target, &live, &desired).await?
            }
        };
        if let Some(feed) = release.shadow_feed(&live.stable) {
            self.deps.feeds().open_feed(&feed).await?;
        }
        let shadow = release.shadow.as_ref().expect("a shadowing release has a shadow");
        let mut progress: Progress = Progress::new(&live.stable, self.now, CanaryProgress::wrote(&written));
        progress.weight = 0.0;
        progress.kind.shadow = Some(ShadowRun { started_at: self.now, examples: Vec::new(), replay: None });
        let reason = format!(
            "Shadowing: {} answers copies of {} of {}'s live requests for {}; no user is served by it",
            release.target.side(release.canary_id()),
            percent(shadow.sample),
            release.target.side(&live.stable),
            duration(shadow.duration_seconds)
        );
        let wait = release.check_every_seconds.min(shadow.duration_seconds);
        Ok(self.keep(progress, Status::Advanced, wait, reason, None))
    }

    /// One look at the shadow: fail it, keep shadowing, or enter the first stage.
    pub(super) async fn shadow_tick(&self, mut progress: Progress, live: Split, run: ShadowRun) -> Result<Progress> {
        let release = self.release;
        let shadow = release.shadow.as_ref().expect("a shadowing release has a shadow");
        // A Lambda shadow is read off the shadow function's counts; a mirror, off the
        // candidate deployment's own metrics.
        let feed = release.shadow_feed(&progress.stable);
        let (gates, evidence) =
            self.look_before_users(&mut progress, BeforeUsers::Shadow, run.started_at, feed.as_ref()).await?;
        let concluded = shadow.until_conclusive && evidence.verdict == Verdict::Healthy && evidence.conclusive;
        if concluded {
            return self.leave_shadow(progress, live, "Shadow", &evidence).await;
        }
        match step(&gates, &evidence, run.started_at, shadow.duration_seconds, &mut progress.holding_since, self.now) {
            ShadowStep::Failed(why) => self.shadow_failed(progress, live, why, "shadow", &evidence).await,
            ShadowStep::Passed => self.leave_shadow(progress, live, "Shadow", &evidence).await,
            ShadowStep::Continue(status) => {
                let left = (run.started_at + shadow.duration_seconds).saturating_sub(self.now);
                let wait = release.check_every_seconds.min(left.max(1));
                let reason = format!("Shadowing: {}", evidence.summary());
                Ok(self.keep(progress, status, wait, reason, Some(&evidence)))
            }
        }
    }

    /// One look at a phase before any user (`before`, running since `started_at`): the
    /// release's tests on that phase's gates, over what `feed`'s counts say (the shadow
    /// function's, under the feed's own `Release`), or over the candidate's own metrics
    /// without a feed (a mirror); the disagreements kept for `coalmine status`, what was
    /// seen leading the reasons.
    pub(super) async fn look_before_users(
        &self,
        progress: &mut Progress,
        before: BeforeUsers,
        started_at: u64,
        feed: Option<&Feed>,
    ) -> Result<(Gates, Evidence)> {
        let release = self.release;
        let gates = release.judged_by(Some(before));
        let query = MetricQuery {
            target: &release.target,
            canary: release.canary_id(),
            stable: &progress.stable.clone(),
            start_epoch: started_at,
            end_epoch: self.now.max(started_at + 1),
            custom: &gates.custom,
            configs: None,
            shadow_of: feed.map(|f| f.release.as_str()),
            pins: false,
        };
        let evidence = observe(&gates, self.deps.alarms(), self.deps.metrics(), &query, progress, self.now).await?;
        // Only a candidate that disagreed has examples to show.
        let disagreed = evidence.metrics.as_ref().and_then(|m| m.canary.custom.first().copied().flatten());
        if let Some(feed) = feed.filter(|_| disagreed.is_some_and(|d| d > 0.0)) {
            self.keep_examples(progress, feed, started_at).await;
        }
        let replayed = before == BeforeUsers::Replay;
        let seen = evidence.metrics.as_ref().map(|m| seen(m, feed.is_some(), replayed)).unwrap_or_default();
        let evidence = Evidence { reasons: with_seen(&evidence, &seen), ..evidence };
        Ok((gates, evidence))
    }

    /// What the shadow function showed last, kept for `coalmine status`; a failed read
    /// keeps the ones before.
    async fn keep_examples(&self, progress: &mut Progress, feed: &Feed, since: u64) {
        match self.deps.feeds().examples(feed, since).await {
            Ok(examples) if !examples.is_empty() => {
                if let Some(run) = progress.kind.shadow.as_mut() {
                    run.examples = examples;
                }
            }
            Ok(_) => {}
            Err(e) => warn!(release = %self.release.release, error = %e, "the shadow's examples were not read"),
        }
    }

    /// The candidate failed its shadow (or its replay, the `phase`): recorded on the
    /// alias (nothing to take away), then told.
    pub(super) async fn shadow_failed(
        &self,
        progress: Progress,
        live: Split,
        why: String,
        phase: &str,
        evidence: &Evidence,
    ) -> Result<Progress> {
        let by = if evidence.from_alarms() { RolledBackBy::GateAlarm } else { RolledBackBy::Health };
        let outcome = record_rollback(self.deps.traffic(), &self.release.target, live, &by).await?;
        let why = format!("{why}. No user was served by the candidate: it never left the {phase}");
        self.announce_rollback(progress, by, why, Some(evidence), outcome).await
    }

    /// The shadow (or the replay, `what`) passed: the first stage, written like any advance.
    pub(super) async fn leave_shadow(
        &self,
        mut progress: Progress,
        live: Split,
        what: &str,
        evidence: &Evidence,
    ) -> Result<Progress> {
        let release = self.release;
        let hold = live.stamp.as_ref().and_then(|s| s.hold.clone());
        let desired = Split {
            stamp: Some(self.live_stamp(&progress.stable, 0, hold)),
            ..self.stage_split(&progress.stable, &live, 0)
        };
        self.publish_cohort(0).await?;
        let written = self.deps.traffic().write(&release.target, &live, &desired).await?;
        let first = release.stages[0];
        progress.kind.shadow = None;
        progress.holding_since = None;
        // The stages judge the canary's live traffic afresh; the shadow's looks are its own.
        progress.samples.clear();
        progress.stage = 0;
        progress.weight = first.weight();
        progress.kind.last_written = Written::of(&written);
        progress.enter_stage(self.now);
        let reason = format!("{what} passed ({}); now at {}", evidence.summary(), release.share_text(0));
        let wait = release.check_every_seconds.min(first.longest_bake().max(1));
        Ok(self.keep(progress, Status::Advanced, wait, reason, Some(evidence)))
    }

    /// After a tick that left the shadow, however (the first stage, a rollback, an
    /// outside change, an abort seen): the feed goes. Best effort: the traffic is
    /// already as the tick left it, and a feed left open costs invocations, not users.
    pub(super) async fn close_feed_after(&self, was_shadowing: bool, progress: &mut Progress) {
        let left_shadow = progress.status.has_ended() || (was_shadowing && progress.kind.shadow.is_none());
        let Some(feed) = self.release.shadow_feed(&progress.stable).filter(|_| left_shadow) else {
            return;
        };
        if let Err(e) = self.deps.feeds().close_feed(&feed).await {
            warn!(release = %self.release.release, error = %e, "the shadow's feed was not removed");
            progress.reason.push_str(&format!(
                " (the shadow's feed was not removed: {e}; delete subscription filter {} from /aws/lambda/{})",
                feed.filter_name(),
                feed.function
            ));
        }
    }
}

/// What the shadow saw, in a person's words: how often each side disagreed with the
/// answer users got (where the answers were `compared`), and their errors and latency.
/// A replay's are compared with its reference (the logged answer, or the stable's first).
fn seen(snapshot: &MetricSnapshot, compared: bool, replayed: bool) -> String {
    let rate = |side: &SideMetrics| match (
        side.custom.first().copied().flatten(),
        side.custom_counts.first().copied().flatten(),
    ) {
        (Some(d), Some(n)) if n > 0.0 => format!("{:.1}% of {n:.0}", 100.0 * d / n),
        _ => "no answers yet".into(),
    };
    let p95 = |side: &SideMetrics| side.p95_ms.map_or("-".into(), |ms| format!("{ms:.0} ms"));
    let (c, s) = (&snapshot.canary, &snapshot.stable);
    if !compared {
        return format!(
            "{:.0} requests mirrored to the candidate beside {:.0} served; errors {:.0} vs {:.0}; p95 {} vs {}",
            c.requests,
            s.requests,
            c.errors,
            s.errors,
            p95(c),
            p95(s)
        );
    }
    let (done, reference) = if replayed { ("replayed", "the reference") } else { ("shadowed", "the live answer") };
    format!(
        "{:.0} requests {done}; disagreeing with {reference}: candidate {}, stable asked again {}; errors {:.0} vs \
         {:.0}; p95 {} vs {}",
        c.requests,
        rate(c),
        rate(s),
        c.errors,
        s.errors,
        p95(c),
        p95(s)
    )
}

/// The verdict's reasons, led by what the shadow saw.
fn with_seen(evidence: &Evidence, seen: &str) -> Vec<String> {
    if seen.is_empty() {
        return evidence.reasons.clone();
    }
    let mut reasons = evidence.reasons.clone();
    if let Some(first) = reasons.first_mut() {
        *first = format!("{first} ({seen})");
    }
    reasons
}
