//! A weight release's replay phase (decision 0023), first of all: the stable serves every
//! user (the target's stamp says it is before the first stage, as a shadow's does) while
//! the candidate and the stable answer requests from the release's source. Each tick
//! reads what the pace allows since the last (never past `requests`), hands it to the
//! shadow function in asynchronous invocations, and judges what the shadow function has
//! counted so far, as a shadow is judged. A replay that fails ends the release before
//! any user was served by the candidate; one that passes goes on to the shadow of live
//! requests, if the release has one, or to the first stage.
//!
//! An abort, or any change to the target, ends the phase at the next tick: nothing more
//! is handed out. A slice already handed out finishes (at most one check's worth).

use crate::release::core::Ports;

use crate::domain::error::Result;
use crate::domain::replay::{batches, ReplayBatch};
use crate::domain::shadow::Feed;
use crate::domain::split::Split;
use crate::ports::{ShadowFeeds, TrafficRouter};
use crate::release::canary::progress::{CanaryProgress, Progress, ReplayRun, ShadowRun};
use crate::release::canary::replay_spec::{Replay, MAX_PER_CHECK};
use crate::release::canary::CanaryTick;
use crate::release::core::progress::{BeforeUsers, Status};
use crate::release::judge::{Evidence, Verdict};
use crate::release::shadow::{step, ShadowStep};
use crate::text::duration;

/// An asynchronous invocation's payload limit, which each batch's event stays under.
const ASYNC_PAYLOAD_BYTES: usize = 256 * 1024;

impl<P: Ports> CanaryTick<'_, P> {
    fn replay(&self) -> &Replay {
        self.release.replay.as_deref().expect("a replaying release has a replay")
    }

    /// Owns the target at no weight (unless an earlier attempt of this tick wrote it);
    /// the first slice goes out at the next tick, the pace's first share.
    pub(super) async fn start_replay(&self, live: Split) -> Result<Progress> {
        let release = self.release;
        let replay = self.replay();
        let written = match live.stamp_by(self.execution) {
            Some(_) => live.clone(),
            None => {
                let desired = Split { stamp: Some(self.shadow_stamp(&live.stable)), ..live.clone() };
                self.deps.traffic().write(&release.target, &live, &desired).await?
            }
        };
        let mut progress: Progress = Progress::new(&live.stable, self.now, CanaryProgress::wrote(&written));
        progress.weight = 0.0;
        progress.kind.shadow =
            Some(ShadowRun { started_at: self.now, examples: Vec::new(), replay: Some(ReplayRun::default()) });
        let target = &release.target;
        let reason = format!(
            "Replaying: {} and {} answer up to {} requests from {} at {} a second; no user is served by the candidate",
            target.side(release.canary_id()),
            target.side(&live.stable),
            replay.requests,
            replay.source_text(),
            replay.rate_per_second
        );
        let wait = release.check_every_seconds.min(replay.longest(release.check_every_seconds).max(1));
        Ok(self.keep(progress, Status::Advanced, wait, reason, None))
    }

    /// One look at the replay: hand out what is due, then fail it, keep replaying, or
    /// go on.
    pub(super) async fn replay_tick(
        &self,
        mut progress: Progress,
        live: Split,
        run: ShadowRun,
        mut replayed: ReplayRun,
    ) -> Result<Progress> {
        let release = self.release;
        let replay = self.replay();
        let feed = release.replay_feed(&progress.stable).expect("a replay is a Lambda release's, with a feed");
        if replayed.sent_all_at.is_none() {
            self.send_due(&feed, run.started_at, &mut replayed).await?;
        }
        progress.kind.shadow = Some(ShadowRun { replay: Some(replayed.clone()), ..run.clone() });
        let (gates, evidence) =
            self.look_before_users(&mut progress, BeforeUsers::Replay, run.started_at, Some(&feed)).await?;
        // Over when the longest replay is, or a check after the last request went out
        // (for its answers to be counted).
        let longest_end = run.started_at + replay.longest(release.check_every_seconds);
        let ends = replayed.sent_all_at.map_or(longest_end, |at| (at + release.check_every_seconds).min(longest_end));
        if replay.until_conclusive && evidence.verdict == Verdict::Healthy && evidence.conclusive {
            return self.leave_replay(progress, live, &evidence).await;
        }
        let length = ends.saturating_sub(run.started_at);
        match step(&gates, &evidence, run.started_at, length, &mut progress.holding_since, self.now) {
            ShadowStep::Failed(why) => self.shadow_failed(progress, live, why, "replay", &evidence).await,
            ShadowStep::Passed => self.leave_replay(progress, live, &evidence).await,
            ShadowStep::Continue(status) => {
                let wait = release.check_every_seconds.min(ends.saturating_sub(self.now).max(1));
                let sent = match replayed.sent_all_at {
                    Some(_) => format!("all {} sent", replayed.sent),
                    None => format!("{} of {} sent", replayed.sent, replay.requests),
                };
                let reason = format!("Replaying ({sent}): {}", evidence.summary());
                Ok(self.keep(progress, status, wait, reason, Some(&evidence)))
            }
        }
    }

    /// Reads what the pace allows by now and hands it to the shadow function, the
    /// release's concurrency shared among the batches. A failure fails the tick before
    /// the cursor moves: its retry reads the same lines again.
    async fn send_due(&self, feed: &Feed, started_at: u64, replayed: &mut ReplayRun) -> Result<()> {
        let replay = self.replay();
        let due = replay.pace().due(self.now.saturating_sub(started_at), replayed.sent).min(MAX_PER_CHECK);
        if due == 0 && replayed.sent < replay.requests {
            return Ok(());
        }
        let slice =
            self.deps.feeds().read_replay(&replay.source, feed, &replayed.cursor, started_at, due as usize).await?;
        let read = slice.lines.len() as u64;
        let per_batch = (slice.lines.len().div_ceil(feed.max_concurrency.max(1))).max(1);
        let (parts, too_large) = batches(slice.lines, ASYNC_PAYLOAD_BYTES, per_batch);
        let share = (feed.max_concurrency / parts.len().max(1)).max(1);
        let batch_feed = Feed { max_concurrency: share, ..feed.clone() };
        let out: Vec<ReplayBatch> =
            parts.into_iter().map(|lines| ReplayBatch { feed: batch_feed.clone(), lines }).collect();
        if !out.is_empty() {
            self.deps.feeds().dispatch_replay(&out).await?;
        }
        replayed.sent += read - too_large;
        replayed.skipped += slice.skipped + too_large;
        replayed.cursor = slice.cursor;
        if slice.exhausted || replayed.sent >= replay.requests {
            replayed.sent_all_at = Some(self.now);
        }
        Ok(())
    }

    /// The replay passed: the shadow of live requests, if the release has one (its feed
    /// opened, its clock started), else the first stage.
    async fn leave_replay(&self, mut progress: Progress, live: Split, evidence: &Evidence) -> Result<Progress> {
        let release = self.release;
        let Some(shadow) = &release.shadow else {
            return self.leave_shadow(progress, live, "Replay", evidence).await;
        };
        if let Some(feed) = release.shadow_feed(&progress.stable) {
            self.deps.feeds().open_feed(&feed).await?;
        }
        progress.kind.shadow = Some(ShadowRun { started_at: self.now, examples: Vec::new(), replay: None });
        progress.holding_since = None;
        // The shadow judges live requests afresh; the replay's looks are its own.
        progress.samples.clear();
        let reason = format!(
            "Replay passed ({}); now shadowing {} of live requests for {}",
            evidence.summary(),
            crate::text::percent(shadow.sample),
            duration(shadow.duration_seconds)
        );
        let wait = release.check_every_seconds.min(shadow.duration_seconds);
        Ok(self.keep(progress, Status::Advanced, wait, reason, Some(evidence)))
    }
}
