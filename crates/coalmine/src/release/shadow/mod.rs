//! A shadow phase, for any kind that can mirror traffic: the candidate answers a copy of
//! live requests, nobody is served its answers, and the judge compares it with
//! production for `duration_seconds` with the same tests, the same false rollback rate
//! and the same `on_insufficient_data` as a stage. A kind composes it by running its own
//! mirror and asking [`step`] what the look means.

use crate::release::core::health::rollback_reason;
use crate::release::core::progress::Status;
use crate::release::judge::gates::{Gates, OnInsufficientData};
use crate::release::judge::{Evidence, Verdict};

pub mod mirror;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowStep {
    /// The candidate failed, and why: the shadow ends, and no user was served by it.
    Failed(String),
    /// Healthy over the whole duration (or, under `proceed`, not shown unhealthy).
    Passed,
    /// Still shadowing (`Baking`), or over and waiting for evidence (`Holding`).
    Continue(Status),
}

/// What a look at the shadow, `started_at` and lasting `duration` seconds, means now.
pub fn step(
    gates: &Gates,
    evidence: &Evidence,
    started_at: u64,
    duration: u64,
    holding_since: &mut Option<u64>,
    now: u64,
) -> ShadowStep {
    let over = now >= started_at + duration;
    if let Some(why) = rollback_reason(gates, evidence, over, holding_since, now) {
        return ShadowStep::Failed(why);
    }
    let proceed = evidence.verdict == Verdict::Healthy || gates.on_insufficient_data == OnInsufficientData::Proceed;
    match (over, proceed) {
        (true, true) => ShadowStep::Passed,
        (true, false) => ShadowStep::Continue(Status::Holding),
        (false, _) => ShadowStep::Continue(Status::Baking),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(verdict: Verdict) -> Evidence {
        Evidence {
            verdict,
            reasons: vec![format!("{verdict:?}")],
            alarms: Vec::new(),
            metrics: None,
            error_rate_z: None,
            error_rate_p_value: None,
            tests: Vec::new(),
            dry_run: Vec::new(),
            conclusive: false,
            weighting: Default::default(),
        }
    }

    #[test]
    fn a_shadow_passes_only_when_its_time_is_up_and_fails_the_moment_it_is_unhealthy() {
        let gates = Gates { max_hold_seconds: 600, ..Gates::default() };
        let mut since = None;
        let at = |verdict, now, since: &mut Option<u64>| step(&gates, &evidence(verdict), 0, 1800, since, now);
        assert_eq!(at(Verdict::Healthy, 60, &mut since), ShadowStep::Continue(Status::Baking));
        assert_eq!(at(Verdict::Unhealthy, 60, &mut since), ShadowStep::Failed("Unhealthy".into()));
        assert_eq!(at(Verdict::Healthy, 1800, &mut since), ShadowStep::Passed);
        // Too little evidence at the end holds, then fails safe.
        assert_eq!(at(Verdict::Inconclusive, 1800, &mut since), ShadowStep::Continue(Status::Holding));
        assert_eq!(since, Some(1800));
        assert!(
            matches!(at(Verdict::Inconclusive, 2400, &mut since), ShadowStep::Failed(why) if why.contains("still after holding 600 s"))
        );
    }
}
