//! One health step for every kind: look (the gate alarms, then the metrics over the
//! window, weighed by the release's judge), then what `on_insufficient_data` makes of a
//! look that found too little.

use crate::domain::error::Result;
use crate::ports::{AlarmSource, MetricQuery, MetricSource};
use crate::release::core::progress::Progress;
use crate::release::judge::gates::{Gates, JudgeKind, OnInsufficientData};
use crate::release::judge::sequential::judge_sequential;
use crate::release::judge::{alarm_evidence, fixed, judge_alarms, Evidence, StageSample, Verdict};

/// The gate alarms first (a firing one is enough, and no metric is read), then the
/// metrics of `query`. The sequential judge weighs every stage so far: this stage's
/// sample joins `progress.samples`; the first finding of a dry run is kept in
/// `progress.dry_run`.
pub async fn observe<X>(
    gates: &Gates,
    alarms: &impl AlarmSource,
    metrics: &impl MetricSource,
    query: &MetricQuery<'_>,
    progress: &mut Progress<X>,
    now: u64,
) -> Result<Evidence> {
    let states = if gates.alarms.is_empty() { Vec::new() } else { alarms.states(&gates.alarms).await? };
    if judge_alarms(gates, &states).is_some() {
        return Ok(alarm_evidence(gates, &states, None));
    }
    let snapshot = metrics.fetch(query).await?;
    let evidence = match gates.judge {
        JudgeKind::FixedHorizon => fixed::judge(gates, &states, Some(&snapshot)),
        JudgeKind::Sequential => {
            let seconds = now.saturating_sub(query.start_epoch);
            progress.keep_sample(StageSample::new(progress.stage, seconds, snapshot));
            let evidence = judge_sequential(gates, &states, &progress.samples);
            if let Some(current) = progress.samples.last_mut() {
                current.settle(&evidence.weighting);
            }
            evidence
        }
    };
    progress.note_dry_run(&evidence, now);
    Ok(evidence)
}

/// Why to roll back now, if the look says so: an unhealthy verdict at any time; an
/// inconclusive one once the bake is `over`, as `on_insufficient_data` says (`hold`
/// counts from its first such tick, kept in `holding_since`, for `max_hold_seconds`).
pub fn rollback_reason(
    gates: &Gates,
    evidence: &Evidence,
    over: bool,
    holding_since: &mut Option<u64>,
    now: u64,
) -> Option<String> {
    match evidence.verdict {
        Verdict::Unhealthy => Some(evidence.summary()),
        Verdict::Inconclusive if over => match gates.on_insufficient_data {
            OnInsufficientData::Rollback => Some(format!("{} at the end of the bake", evidence.summary())),
            OnInsufficientData::Hold => {
                let since = *holding_since.get_or_insert(now);
                (now >= since + gates.max_hold_seconds)
                    .then(|| format!("{}, still after holding {} s", evidence.summary(), now - since))
            }
            OnInsufficientData::Proceed => None,
        },
        _ => None,
    }
}

/// Whether an inconclusive look after the bake keeps the release waiting for evidence.
pub fn holds(gates: &Gates, evidence: &Evidence) -> bool {
    evidence.verdict == Verdict::Inconclusive && gates.on_insufficient_data == OnInsufficientData::Hold
}
