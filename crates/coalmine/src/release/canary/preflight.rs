//! The weight canary's starting point, checked without moving anything: by the first
//! tick (which refuses on the first failure) and by `coalmine validate --live` (which
//! reports every check). One set of rules for both.

use crate::domain::error::{Error, Result};
use crate::domain::metrics::{GateKind, SideMetrics, PERCENTILE_LEVELS};
use crate::domain::split::Split;
use crate::ports::{AlarmSource, MetricQuery, MetricSource, ShadowFeeds, TrafficRouter};
use crate::release::canary::spec::Release;
use crate::release::core::preflight::{alarm_checks, not_ready, Check};
use crate::release::core::Ports;
use crate::release::judge::power::{power, Sees, Traffic as Power, POWER};
use crate::text::{describe, duration, pct, percent};

/// Reads the target: a typo in a name, or a target the stack may not touch, is an
/// invalid release, said with what to check.
pub async fn read_target(router: &impl TrafficRouter, release: &Release) -> Result<Split> {
    router.read(&release.target).await.map_err(|e| not_ready(&release.target, e))
}

/// Every check a release must pass before its first write, given its target as read.
pub async fn checks(release: &Release, live: &Split, deps: &impl Ports, now: u64) -> Vec<Check> {
    let target = &release.target;
    let canary = release.canary_id();
    let mut checks = Vec::new();
    // A release in its shadow owns the alias at no weight: in flight all the same.
    let shadowing = live.stamp.as_ref().is_some_and(|s| s.is_live() && s.in_shadow());
    checks.push(Check::new(
        "no canary in flight",
        if live.canary_is_zero() && !shadowing {
            Ok(describe(target, live))
        } else {
            let owner = match &live.stamp {
                Some(stamp) if stamp.is_live() => format!(
                    " (release {}, execution {}{})",
                    stamp.release.as_deref().unwrap_or("unnamed"),
                    stamp.execution,
                    match stamp.stage {
                        Some(_) if stamp.in_shadow() => ", in its shadow".to_owned(),
                        Some((at, of)) => format!(", stage {at} of {of}"),
                        None => String::new(),
                    }
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
            Ok(format!("{} replaces {}", target.side(canary), target.side(&live.stable)))
        },
    ));
    checks.push(Check::new(
        "the canary exists",
        deps.traffic()
            .check_canary(target, canary)
            .await
            .map(|()| target.side(canary))
            .map_err(|e| not_ready(target, e)),
    ));
    if !release.gates.alarms.is_empty() {
        let (exist, calm) = match deps.alarms().states(&release.gates.alarms).await {
            Ok(states) => alarm_checks(&release.gates, &states),
            Err(e) => (Err(e), Ok("not read".to_owned())),
        };
        checks.push(Check::new("the gate alarms exist", exist));
        checks.push(Check::new("no gate alarm is firing", calm));
    }
    if let Some(feed) = release.shadow_feed(&live.stable) {
        checks.push(Check::new("the shadow can be fed", deps.feeds().check_feed(&feed).await));
    }
    if let (Some(replay), Some(feed)) = (&release.replay, release.replay_feed(&live.stable)) {
        checks.push(Check::new(
            "the replay's source can be read",
            deps.feeds().check_replay(&replay.source, &feed, now).await,
        ));
    }
    checks
}

/// The metrics the judge needs: the stable's recent traffic, which says what the first
/// stage will see, and each custom gate's metric. A stable that served nothing leaves
/// the judge nothing to go on. Advice, never a refusal.
pub async fn metrics_check(release: &Release, live: &Split, metrics: &impl MetricSource, now: u64) -> Check {
    let found = async {
        let traffic = recent_traffic(release, live, metrics, now).await?;
        let line = traffic_check(release, live, traffic.as_ref())?;
        let stable = custom_data_check(release, live, metrics, now).await?;
        let sees = traffic.as_ref().and_then(|t| sees(release, t.per_minute, &stable));
        let line = match sees {
            Some(sees) => format!("{line}. {sees}"),
            None => line,
        };
        let line = match traffic.and_then(|t| exposure(release, t.per_minute)) {
            Some(exposure) => format!("{line}. {exposure}"),
            None => line,
        };
        Ok(match replay_cost(release, &stable) {
            Some(cost) => format!("{line}. {cost}"),
            None => line,
        })
    };
    Check { advisory: true, ..Check::new("the metrics the judge needs", found.await) }
}

/// What a replay's invocations cost in function time, at the stable's recent median
/// latency: the candidate has served nothing yet, so its own duration is not known.
pub fn replay_cost(release: &Release, stable: &SideMetrics) -> Option<String> {
    let replay = release.replay.as_ref()?;
    let p50 =
        PERCENTILE_LEVELS.iter().position(|l| *l == 50.0).and_then(|i| stable.percentiles.get(i).copied().flatten())?;
    let seconds = (replay.invocations() as f64 * p50 / 1000.0).round() as u64;
    Some(format!(
        "The replay's {} invocations take about {} of function time at the stable's recent p50 of {p50:.0} ms",
        replay.invocations(),
        duration(seconds.max(1))
    ))
}

/// What each share of a cohort release exposes at the stable's recent traffic, in
/// requests a minute: the router meters units, not this, so it is the even-spread
/// estimate, said as one.
pub fn exposure(release: &Release, per_minute: f64) -> Option<String> {
    let cohorts = release.cohorts.as_ref()?;
    let shares: Vec<String> = release
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.percent > 0.0 && s.percent < 100.0)
        .map(|(i, s)| format!("{} about {:.0}", release.share_text(i), per_minute * s.weight()))
        .collect();
    let pinned = if cohorts.has_pins() { "; the pinned units' own requests on top, from the first stage" } else { "" };
    Some(format!(
        "Its shares reach, of the stable's {per_minute:.0} requests a minute if they are spread evenly over {}: {}{pinned} \
         (one heavy {} drawn or not moves this)",
        cohorts.share(100.0).trim_start_matches("100% of "),
        shares.join(", "),
        cohorts.unit.trim()
    ))
}

/// What the release can see on the stable's recent traffic, in a sentence; `None` when
/// no power can be stated (the fixed-horizon judge).
pub fn sees(release: &Release, per_minute: f64, stable: &SideMetrics) -> Option<String> {
    let stages: Vec<(f64, u64)> = release.stages.iter().map(|s| (s.weight(), s.longest_bake())).collect();
    let (by_unit, design_effect) = by_unit(release, stable);
    let stable = &SideMetrics { replicates: Vec::new(), ..stable.clone() };
    let power = power(&release.gates, &Power { per_minute, stable, stages: &stages, design_effect })?;
    let ratio = |r: Option<f64>, max: &str| r.map_or(format!("not even {max}"), |r| format!("{r:.2}x"));
    let both = |s: &Sees| {
        let latency = match (release.gates.max_p95_increase_ratio, s.latency_shift) {
            (None, _) => String::new(),
            (Some(_), l) => format!(", latency {}", ratio(l, "3x")),
        };
        format!("errors {}{latency}", ratio(s.error_ratio, "10x"))
    };
    let per_stage: Vec<String> = release
        .stages
        .iter()
        .zip(&power.stages)
        .map(|(stage, s)| format!("{} alone {}", percent(stage.weight()), both(s)))
        .collect();
    let doubled = match power.doubled_errors_by {
        Some(at) => format!("a 2x error rate is seen {} into the release", duration(at)),
        None => {
            let needs: Vec<String> = release
                .stages
                .iter()
                .zip(&power.doubled_errors_needs)
                .map(|(stage, n)| {
                    format!("{} {}", percent(stage.weight()), n.map_or("more than a week".into(), duration))
                })
                .collect();
            format!(
                "a 2x error rate is not seen before promotion; to see it, a stage alone would need to bake: {}",
                needs.join(", ")
            )
        }
    };
    Some(format!(
        "{by_unit}With {:.0}% power at false_rollback_rate {}, the release sees a canary worse than the stable by {} ({}); {doubled}",
        POWER * 100.0,
        pct(release.gates.false_rollback_rate),
        both(&power.release),
        per_stage.join("; ")
    ))
}

/// For a cohort release, how many of the stable's recent requests one independent unit's
/// worth of evidence takes (its replicate groups' spread of errors, as the judge reads
/// it), and a sentence saying so; 1 and nothing where requests are the unit.
fn by_unit(release: &Release, stable: &SideMetrics) -> (String, f64) {
    use crate::release::judge::replicates::{design_effect, DESIGN_LEVEL};
    let Some(cohorts) = release.cohorts.as_ref() else { return (String::new(), 1.0) };
    let unit = cohorts.unit.trim();
    let groups: Vec<(f64, f64)> = stable.replicates.iter().map(|g| (g.errors, g.requests)).collect();
    match design_effect(&groups, DESIGN_LEVEL) {
        Some(effect) => (
            format!(
                "Judged by {unit}: the stable's {units} over the last hour vary as if every {effect:.0} of their \
                 requests were one independent request (the design effect of its {} groups), so the power below \
                 is in effective requests. ",
                coalmine_router::REPLICATES,
                units = cohorts.units(),
            ),
            effect,
        ),
        None => (
            format!(
                "Judged by {unit}, but the stable's groups of {units} showed no spread to read in the last hour (too \
                 few with traffic, or no errors): the power below counts requests as independent, and overstates \
                 what the release will see. ",
                units = cohorts.units(),
            ),
            1.0,
        ),
    }
}

/// The stable's requests a minute over the minutes it served in the last hour, from its
/// first whole minute to its last (a quiet minute between counts as none); the minute
/// under way counts only when it is all there is. `None`: no request at all.
pub struct Traffic {
    pub per_minute: f64,
    pub minutes: u64,
}

pub async fn recent_traffic(
    release: &Release,
    live: &Split,
    metrics: &impl MetricSource,
    now: u64,
) -> Result<Option<Traffic>> {
    let served = metrics.requests_per_minute(&release.target, &live.stable, now.saturating_sub(3600), now + 60).await?;
    let whole: Vec<&(u64, f64)> = served.iter().filter(|(at, _)| at + 60 <= now).collect();
    let counted = if whole.is_empty() { served.iter().collect() } else { whole };
    let (Some(first), Some(last)) = (counted.first(), counted.last()) else { return Ok(None) };
    let minutes = (last.0 - first.0) / 60 + 1;
    let requests: f64 = counted.iter().map(|(_, r)| r).sum();
    Ok((requests > 0.0).then(|| Traffic { per_minute: requests / minutes as f64, minutes }))
}

fn traffic_check(release: &Release, live: &Split, traffic: Option<&Traffic>) -> Result<String> {
    let Some(&Traffic { per_minute, minutes }) = traffic else {
        return Err(Error::Refused(format!(
            "{} served no request in the last hour: the judge would have no evidence; send traffic first",
            release.target.side(&live.stable)
        )));
    };
    let over = match minutes {
        1 => "the last minute".to_owned(),
        60.. => "the last hour".to_owned(),
        m => format!("the last {m} minutes"),
    };
    let first = release.stages[0];
    let expected = per_minute * first.weight() * first.longest_bake() as f64 / 60.0;
    if expected < release.gates.min_requests as f64 {
        return Err(Error::Refused(format!(
            "the stable served {per_minute:.0} requests a minute over {over}: at {} for {} s the canary would see \
             about {expected:.0}, below min_requests {}, so the first stage will hold for want of evidence; \
             lengthen its bake or raise its weight",
            percent(first.weight()),
            first.longest_bake(),
            release.gates.min_requests
        )));
    }
    Ok(format!(
        "stable: {per_minute:.0} requests a minute over {over}; about {expected:.0} for the canary in its first stage"
    ))
}

/// A custom gate whose metric the stable never published cannot judge the canary. The
/// stable's last hour, read for it, also says what the release can see.
async fn custom_data_check(
    release: &Release,
    live: &Split,
    metrics: &impl MetricSource,
    now: u64,
) -> Result<SideMetrics> {
    let query = MetricQuery {
        target: &release.target,
        canary: &live.stable,
        stable: &live.stable,
        start_epoch: now.saturating_sub(3600),
        end_epoch: now + 60,
        custom: &release.gates.custom,
        configs: None,
        shadow_of: None,
        pins: false,
    };
    let snapshot = metrics.fetch(&query).await?;
    // A counter published only when something happens (a guardrail block) has no data
    // in a quiet hour; a distribution or a rate's own denominator always should.
    let published = |i: usize| match release.gates.custom[i].kind() {
        Some(GateKind::Distribution { .. }) => snapshot.stable.values(i) > 0.0,
        Some(GateKind::Rate) => snapshot.stable.denominator(i, &release.gates.custom[i]).is_some(),
        _ => true,
    };
    match (0..release.gates.custom.len()).find(|i| !published(*i)) {
        Some(i) => {
            let gate = &release.gates.custom[i];
            Err(Error::Refused(format!(
                "gates.custom[{i}]: {}/{} has no data for {} in the last hour",
                gate.namespace,
                gate.metric,
                release.target.side(&live.stable)
            )))
        }
        None => Ok(snapshot.stable),
    }
}
