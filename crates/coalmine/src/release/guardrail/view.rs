//! A guardrail release as an operator sees it: its plan, shadow then SageMaker's deployment.

use serde_json::Value;

use crate::release::guardrail::spec::GuardrailRelease;
use crate::text::duration;

/// A guardrail release as `validate` shows it: the shadow, then SageMaker's deployment.
pub fn plan_text(release: &GuardrailRelease) -> String {
    let g = &release.guardrail;
    let mut phases = Vec::new();
    if let Some(shadow) = &release.shadow {
        phases.push(format!(
            "shadow {} (variant {}) for {}",
            shadow.endpoint_config,
            shadow.variant,
            duration(shadow.duration_seconds)
        ));
    }
    phases.push(format!("SageMaker deploys {}: {}", g.endpoint_config, release.describe_traffic()));
    let alarms = release.judged_gates().alarms;
    format!(
        "{}: valid\n  target   {}, variant {}, guardrail deployment\n  phases   {}\n  checks   every {}\n  \
         rollback alarms {}, and the tripwire {}\n",
        release.release,
        release.target(),
        g.variant,
        phases.join(", then "),
        duration(release.check_every_seconds),
        alarms.join(", "),
        release.tripwire()
    )
}

pub fn plan_json(release: &GuardrailRelease) -> Value {
    serde_json::json!({
        "kind": "guardrail",
        "endpoint": release.guardrail.endpoint,
        "endpoint_config": release.guardrail.endpoint_config,
        "shadow_seconds": release.shadow.as_ref().map(|s| s.duration_seconds),
        "deployment": release.describe_traffic(),
        "tripwire": release.tripwire(),
    })
}
