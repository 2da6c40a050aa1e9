//! The weight canary's starting point, checked without moving anything: by the first
//! tick (which refuses on the first failure) and by `coalmine validate --live` (which
//! reports every check). One set of rules for both.

use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::ports::{AlarmSource, MetricQuery, MetricSource, TrafficRouter};
use crate::release::canary::spec::Release;
use crate::release::core::preflight::{alarm_checks, not_ready, Check};
use crate::text::{describe, percent, side};

/// Reads the target: a typo in a name, or a target the stack may not touch, is an
/// invalid release, said with what to check.
pub async fn read_target(router: &impl TrafficRouter, release: &Release) -> Result<Split> {
    router.read(&release.target).await.map_err(|e| not_ready(&release.target, e))
}

/// Every check a release must pass before its first write, given its target as read.
pub async fn checks(
    release: &Release,
    live: &Split,
    router: &impl TrafficRouter,
    alarms: &impl AlarmSource,
) -> Vec<Check> {
    let target = &release.target;
    let canary = release.canary_id();
    let mut checks = Vec::new();
    checks.push(Check::new(
        "no canary in flight",
        if live.canary_is_zero() {
            Ok(describe(target, live))
        } else {
            let owner = match &live.stamp {
                Some(stamp) if stamp.is_live() => format!(
                    " (release {}, execution {}{})",
                    stamp.release.as_deref().unwrap_or("unnamed"),
                    stamp.execution,
                    stamp.stage.map(|(at, of)| format!(", stage {at} of {of}")).unwrap_or_default()
                ),
                _ => String::new(),
            };
            Err(Error::Refused(format!(
                "{target} already has a canary in flight: {}{owner}. Wait for it to end, or roll it back, then \
                 start this release again",
                describe(target, live)
            )))
        },
    ));
    checks.push(Check::new(
        "the canary is new",
        if live.stable == canary {
            Err(Error::InvalidRelease(format!("canary_version: {canary} is already the stable version of {target}")))
        } else {
            Ok(format!("{} replaces {}", side(target, canary), side(target, &live.stable)))
        },
    ));
    checks.push(Check::new(
        "the canary exists",
        router.check_canary(target, canary).await.map(|()| side(target, canary)).map_err(|e| not_ready(target, e)),
    ));
    if !release.gates.alarms.is_empty() {
        let (exist, calm) = match alarms.states(&release.gates.alarms).await {
            Ok(states) => alarm_checks(&release.gates, &states),
            Err(e) => (Err(e), Ok("not read".to_owned())),
        };
        checks.push(Check::new("the gate alarms exist", exist));
        checks.push(Check::new("no gate alarm is firing", calm));
    }
    checks
}

/// The metrics the judge needs, over the last hour of the stable: requests (and so
/// what the canary can expect at the first stage) and each custom gate's metric. A
/// stable that served nothing leaves the judge nothing to go on.
pub async fn metrics_check(release: &Release, live: &Split, metrics: &impl MetricSource, now: u64) -> Check {
    let hour = 3600;
    let query = MetricQuery {
        target: &release.target,
        canary: &live.stable,
        stable: &live.stable,
        start_epoch: now.saturating_sub(hour),
        // The minute under way too: a stable that just started serving counts.
        end_epoch: now + 60,
        custom: &release.gates.custom,
        configs: None,
    };
    let found = metrics.fetch(&query).await.and_then(|snapshot| {
        let stable = &snapshot.stable;
        if stable.requests <= 0.0 {
            return Err(Error::Refused(format!(
                "{} served no request in the last hour: the judge would have no evidence; send traffic first",
                side(&release.target, &live.stable)
            )));
        }
        if let Some(i) = stable.custom.iter().position(Option::is_none) {
            let gate = &release.gates.custom[i];
            return Err(Error::Refused(format!(
                "gates.custom[{i}]: {}/{} has no data for {} in the last hour",
                gate.namespace,
                gate.metric,
                side(&release.target, &live.stable)
            )));
        }
        let first = release.stages[0];
        let per_minute = stable.requests / 60.0;
        let expected = per_minute * first.weight() * first.bake_seconds as f64 / 60.0;
        if expected < release.gates.min_requests as f64 {
            return Err(Error::Refused(format!(
                "the stable served {per_minute:.0} requests a minute over the last hour: at {} for {} s the canary \
                 would see about {expected:.0}, below min_requests {}, so the first stage will hold for want of \
                 evidence; lengthen its bake or raise its weight",
                percent(first.weight()),
                first.bake_seconds,
                release.gates.min_requests
            )));
        }
        Ok(format!(
            "stable: {per_minute:.0} requests a minute over the last hour; about {expected:.0} for the canary in its \
             first stage"
        ))
    });
    Check { advisory: true, ..Check::new("the metrics the judge needs", found) }
}
