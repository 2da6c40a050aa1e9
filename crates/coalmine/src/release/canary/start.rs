//! A weight canary's first tick: check the starting point, record the stable, enter the
//! first stage. When an earlier attempt of this very tick already wrote, pick that up.

use crate::release::core::Ports;
use tracing::{info, warn};

use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::domain::stamp::{Phase, Stamp};
use crate::ports::TrafficRouter;
use crate::release::canary::preflight;
use crate::release::canary::progress::{CanaryProgress, Progress};
use crate::release::canary::CanaryTick;
use crate::release::core::preflight::first_blocking;
use crate::release::core::progress::Status;

impl<P: Ports> CanaryTick<'_, P> {
    pub(super) async fn start(&self) -> Result<Progress> {
        let (release, now) = (self.release, self.now);
        let target = &release.target;
        let live = preflight::read_target(self.deps.traffic(), release).await?;
        if let Some(stamp) = live.stamp_by(self.execution).cloned() {
            if stamp.is_live() && stamp.in_shadow() {
                if release.replay.is_some() {
                    return self.start_replay(live).await;
                }
                if release.shadow.is_some() {
                    return self.start_shadow(live).await;
                }
            }
            let adopted = self.adopt(&stamp, &live);
            return match stamp.phase {
                Phase::Live => {
                    info!(release = %release.release, target = %target, decision = "advanced", "picked up the stage an earlier attempt of this tick wrote");
                    Ok(adopted)
                }
                _ => self.after_change(adopted, live).await,
            };
        }
        if let Some(refused) = first_blocking(preflight::checks(release, &live, self.deps, now).await) {
            return Err(refused);
        }
        if release.replay.is_some() {
            return self.start_replay(live).await;
        }
        if release.shadow.is_some() {
            return self.start_shadow(live).await;
        }
        self.publish_cohort(0).await?;
        let desired =
            Split { stamp: Some(self.live_stamp(&live.stable, 0, None)), ..self.stage_split(&live.stable, &live, 0) };
        // A conflict fails the tick (retryable): the retry starts afresh from a new read.
        let written = self.deps.traffic().write(target, &live, &desired).await?;
        let first = release.stages[0];
        let mut progress = Progress::new(&live.stable, now, CanaryProgress::wrote(&written));
        progress.weight = first.weight();
        // Too little traffic to judge is said up front, not found out after a silent hold.
        let traffic = preflight::metrics_check(release, &live, self.deps.metrics(), now).await;
        // What the release can see is said up front too: a shape blind to a 2x error rate.
        let warning = match &traffic.found {
            Ok(line) => format!("; {line}"),
            Err(e) => {
                warn!(release = %release.release, target = %target, decision = "low_traffic", "{e}");
                format!(". Warning: {}", e.to_string().trim_start_matches("refused: "))
            }
        };
        let reason = format!(
            "Started: {} at {} beside {}{warning}",
            target.side(release.canary_id()),
            release.share_text(0),
            target.side(&progress.stable)
        );
        let wait = release.check_every_seconds.min(first.longest_bake().max(1));
        Ok(self.keep(progress, Status::Advanced, wait, reason, None))
    }

    /// The progress an earlier attempt of a tick left only on the target, from its stamp.
    fn adopt(&self, stamp: &Stamp, live: &Split) -> Progress {
        let release = self.release;
        let stage = stamp.stage.map_or(0, |(at, _)| at.saturating_sub(1)).min(release.stages.len() - 1);
        let progress = Progress {
            stage,
            weight: release.stages[stage].weight(),
            ..Progress::new(&stamp.stable, self.now, CanaryProgress::wrote(live))
        };
        let reason = format!(
            "At stage {} of {} ({}): an earlier attempt of this tick wrote it and then failed; baking from now",
            stage + 1,
            release.stages.len(),
            release.share_text(stage)
        );
        let wait = release.check_every_seconds.min(release.stages[stage].longest_bake().max(1));
        progress.decide(self.now, Status::Advanced, wait, reason, None)
    }
}
