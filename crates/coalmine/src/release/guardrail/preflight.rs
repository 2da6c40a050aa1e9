//! What a guardrail release's first tick checks before it moves anything, and
//! `coalmine validate --live` reports.

use crate::domain::deployment::{EndpointState, Size, Traffic};
use crate::domain::error::{Error, Result};
use crate::ports::{AlarmSource, EndpointDeployments};
use crate::release::core::preflight::alarm_checks;
use crate::release::guardrail::spec::GuardrailRelease;

/// What the first tick checks before it moves anything: the endpoint is in service and
/// not on the new config already; the configs exist and keep the variant names; the
/// traffic sizes fit the fleet; the alarms exist and are calm. Said as one line.
pub async fn preflight(
    release: &GuardrailRelease,
    state: &EndpointState,
    router: &impl EndpointDeployments,
    alarms: &impl AlarmSource,
) -> Result<String> {
    let g = &release.guardrail;
    if !state.is_in_service() {
        return Err(Error::Refused(format!(
            "{} is {}: another update is in flight; wait for it to end",
            g.endpoint, state.status
        )));
    }
    if state.config == g.endpoint_config {
        return Err(Error::InvalidRelease(format!(
            "guardrail.endpoint_config: {} is already in service on {}",
            g.endpoint_config, g.endpoint
        )));
    }
    let (current, candidate) =
        (router.config_variants(&state.config).await?, router.config_variants(&g.endpoint_config).await?);
    let names = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    if names(&current.production) != names(&candidate.production) {
        return Err(Error::InvalidRelease(format!(
            "guardrail.endpoint_config: its variants {:?} differ from those in service {:?}; a guardrail deployment keeps the variant names",
            candidate.production, current.production
        )));
    }
    let Some(&(_, instances)) = state.variants.iter().find(|(name, _)| *name == g.variant) else {
        return Err(Error::InvalidRelease(format!(
            "guardrail.variant: {} has no production variant {}",
            g.endpoint, g.variant
        )));
    };
    match g.traffic {
        Traffic::Canary { size: Size::InstanceCount(n), .. } if n * 2 > instances => {
            return Err(Error::InvalidRelease(format!(
                "guardrail.traffic.canary.size: {n} instances is over half the variant's {instances}"
            )))
        }
        Traffic::Linear { step: Size::InstanceCount(n), .. } if n * 2 > instances || n * 10 < instances => {
            return Err(Error::InvalidRelease(format!(
                "guardrail.traffic.linear.step: {n} instances is not 10 to 50% of the variant's {instances}"
            )))
        }
        _ => {}
    }
    if let Some(needed) = release.waits(Some(instances)).filter(|w| u64::from(g.max_execution_seconds) <= *w) {
        return Err(Error::InvalidRelease(format!(
            "guardrail.max_execution_seconds: {}: the waits alone take {needed} s",
            g.max_execution_seconds
        )));
    }
    if let Some(shadow) = &release.shadow {
        let with_shadow = router.config_variants(&shadow.endpoint_config).await?;
        if names(&with_shadow.production) != names(&current.production) || !with_shadow.shadow.contains(&shadow.variant)
        {
            return Err(Error::InvalidRelease(format!(
                "shadow.endpoint_config: {} should hold the variants in service {:?} and shadow variant {}, not {:?} and shadows {:?}",
                shadow.endpoint_config, current.production, shadow.variant, with_shadow.production, with_shadow.shadow
            )));
        }
    }
    let gates = release.judged_gates();
    let states = alarms.states(&gates.alarms).await?;
    let (exist, calm) = alarm_checks(&gates, &states);
    exist?;
    calm?;
    Ok(format!(
        "{} {} on {}; {} has {instances} instance{}; {} alarm{} calm",
        g.endpoint,
        state.status,
        state.config,
        g.variant,
        if instances == 1 { "" } else { "s" },
        gates.alarms.len(),
        if gates.alarms.len() == 1 { "" } else { "s" }
    ))
}
