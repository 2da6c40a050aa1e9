//! A guardrail release, as written: a new endpoint config for SageMaker to deploy with
//! its own guardrails, optionally after a shadow phase. Strictly validated against what
//! AWS would refuse, before any call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::deployment::{DeploymentPlan, Size, Traffic};
use crate::domain::error::Result;
use crate::domain::target::Target;
use crate::release::core::document::{self, check_name, Problems, Rules};
use crate::release::core::limits;
use crate::release::judge::gates::Gates;
use crate::text::duration;

/// A guardrail release, the execution's input: strictly validated against what AWS
/// would refuse, before any call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailRelease {
    pub release: String,
    pub guardrail: Guardrail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    pub check_every_seconds: u64,
    #[serde(default)]
    pub gates: Gates,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    pub endpoint: String,
    /// The new endpoint config: the same variant names as the one in service.
    pub endpoint_config: String,
    /// The production variant whose fleets coalmine's judge compares.
    #[serde(default = "all_traffic")]
    pub variant: String,
    pub traffic: Traffic,
    #[serde(default)]
    pub termination_wait_seconds: u32,
    pub max_execution_seconds: u32,
    /// SageMaker's auto-rollback alarms, with `gates.alarms` (coalmine judges them too).
    #[serde(default)]
    pub alarms: Vec<String>,
    /// coalmine's own auto-rollback alarm for this endpoint; default
    /// `coalmine-tripwire-ENDPOINT` (name it with the stack's AlarmNamePrefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripwire: Option<String>,
}

/// A shadow phase: `endpoint_config` is the one in service plus the candidate as a
/// shadow variant, which gets a copy of a share of live traffic for `duration_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    pub endpoint_config: String,
    pub variant: String,
    pub duration_seconds: u64,
}

fn all_traffic() -> String {
    "AllTraffic".to_owned()
}

/// AWS allows 10 auto-rollback alarms; coalmine's tripwire is one of them.
const MAX_ALARMS: usize = 9;

impl GuardrailRelease {
    pub fn parse(value: &Value) -> Result<GuardrailRelease> {
        document::parse(value)
    }

    /// What SageMaker's deployment asks for: the traffic shift, its waits, its alarms.
    fn check_deployment(&self, problems: &mut Problems) {
        let g = &self.guardrail;
        for (field, value) in [("guardrail.endpoint", &g.endpoint), ("guardrail.endpoint_config", &g.endpoint_config)] {
            if value.trim().is_empty() {
                problems.add(field, "required");
            }
        }
        match g.traffic {
            Traffic::Canary { size: Size::CapacityPercent(p), .. } if !(1..=50).contains(&p) => {
                problems.add("guardrail.traffic.canary.size", format!("{p}% of capacity: a canary is 1 to 50%"))
            }
            Traffic::Linear { step: Size::CapacityPercent(p), .. } if !(10..=50).contains(&p) => {
                problems.add("guardrail.traffic.linear.step", format!("{p}% of capacity: a linear step is 10 to 50%"))
            }
            Traffic::Canary { size: Size::InstanceCount(0), .. }
            | Traffic::Linear { step: Size::InstanceCount(0), .. } => {
                problems.add("guardrail.traffic", "an instance count of at least 1 is required")
            }
            _ => {}
        }
        let wait = self.wait_seconds();
        if wait > 3600 {
            problems.add("guardrail.traffic", format!("wait_seconds {wait} is over AWS's 3600"));
        }
        if g.termination_wait_seconds > 3600 {
            problems.add(
                "guardrail.termination_wait_seconds",
                format!("{} is over AWS's 3600", g.termination_wait_seconds),
            );
        }
        if !(600..=28_800).contains(&g.max_execution_seconds) {
            problems.add(
                "guardrail.max_execution_seconds",
                format!("{} is outside AWS's 600..=28800", g.max_execution_seconds),
            );
        } else if let Some(needed) = self.waits(None).filter(|w| u64::from(g.max_execution_seconds) <= *w) {
            problems.add(
                "guardrail.max_execution_seconds",
                format!(
                    "{}: the waits alone take {needed} s; SageMaker would time the deployment out",
                    g.max_execution_seconds
                ),
            );
        }
        let alarms = self.judged_gates().alarms.len();
        if alarms == 0 || alarms > MAX_ALARMS {
            problems.add(
                "guardrail.alarms",
                format!(
                    "{alarms} alarms with gates.alarms: 1 to {MAX_ALARMS} (AWS allows 10 auto-rollback alarms, and \
                     coalmine's tripwire is one)"
                ),
            );
        }
    }

    pub fn target(&self) -> Target {
        Target::sagemaker(
            self.guardrail.endpoint.clone(),
            self.guardrail.variant.clone(),
            self.guardrail.variant.clone(),
        )
    }

    pub fn tripwire(&self) -> String {
        self.guardrail.tripwire.clone().unwrap_or_else(|| format!("coalmine-tripwire-{}", self.guardrail.endpoint))
    }

    pub(super) fn wait_seconds(&self) -> u32 {
        match self.guardrail.traffic {
            Traffic::Canary { wait_seconds, .. } | Traffic::Linear { wait_seconds, .. } => wait_seconds,
        }
    }

    /// The deployment's waits, when knowable: canary, one wait; linear, a wait per
    /// step (counting instances needs the fleet's size); plus the termination wait.
    pub fn waits(&self, instances: Option<u32>) -> Option<u64> {
        let g = &self.guardrail;
        let steps = match g.traffic {
            Traffic::Canary { .. } => 1,
            Traffic::Linear { step: Size::CapacityPercent(p), .. } => u64::from(100_u32.div_ceil(p)),
            Traffic::Linear { step: Size::InstanceCount(n), .. } => u64::from(instances?.div_ceil(n)),
        };
        Some(steps * u64::from(self.wait_seconds()) + u64::from(g.termination_wait_seconds))
    }

    /// Every alarm of the release rolls the deployment back the moment it fires, with no
    /// coalmine code in the path: SageMaker watches them all, coalmine's tripwire too.
    pub(super) fn plan(&self) -> DeploymentPlan {
        let mut alarms = self.judged_gates().alarms;
        alarms.push(self.tripwire());
        DeploymentPlan {
            traffic: self.guardrail.traffic,
            termination_wait_seconds: self.guardrail.termination_wait_seconds,
            max_execution_seconds: self.guardrail.max_execution_seconds,
            alarms,
        }
    }

    /// The gate alarms coalmine judges: the release's and SageMaker's, once each.
    pub fn judged_gates(&self) -> Gates {
        let mut gates = self.gates.clone();
        for alarm in &self.guardrail.alarms {
            if !gates.alarms.contains(alarm) {
                gates.alarms.push(alarm.clone());
            }
        }
        gates
    }

    /// How many phases the timeline shows: the shadow (if any), then the deployment.
    pub fn phases(&self) -> usize {
        1 + usize::from(self.shadow.is_some())
    }

    /// "canary 10% of capacity, then the rest after 10m; 5m termination wait"
    pub fn describe_traffic(&self) -> String {
        let size = |s: Size| match s {
            Size::CapacityPercent(p) => format!("{p}% of capacity"),
            Size::InstanceCount(n) => format!("{n} instance{}", if n == 1 { "" } else { "s" }),
        };
        let shift = match self.guardrail.traffic {
            Traffic::Canary { size: s, wait_seconds } => {
                format!("canary {}, then the rest after {}", size(s), duration(u64::from(wait_seconds)))
            }
            Traffic::Linear { step, wait_seconds } => {
                format!("linear steps of {}, {} apart", size(step), duration(u64::from(wait_seconds)))
            }
        };
        format!(
            "{shift}; {} termination wait; at most {}",
            duration(u64::from(self.guardrail.termination_wait_seconds)),
            duration(u64::from(self.guardrail.max_execution_seconds))
        )
    }
}

impl Rules for GuardrailRelease {
    fn check(&self, problems: &mut Problems) {
        check_name(&self.release, problems);
        self.check_deployment(problems);
        if let Some(shadow) = &self.shadow {
            if shadow.endpoint_config == self.guardrail.endpoint_config {
                problems.add(
                    "shadow.endpoint_config",
                    "the shadow phase needs its own config, with the candidate as a shadow variant",
                );
            }
            if !(60..=86_400).contains(&shadow.duration_seconds) {
                problems.add("shadow.duration_seconds", format!("{} is outside 60..=86400", shadow.duration_seconds));
            }
        }
        if self.check_every_seconds == 0 || self.check_every_seconds > 86_400 {
            problems.add("check_every_seconds", format!("{} is outside 1..=86400", self.check_every_seconds));
        } else {
            limits::check(&self.planned_phases(), self.check_every_seconds, problems);
        }
        self.gates.check(problems);
    }
}

impl GuardrailRelease {
    /// Each phase as planned (the shadow's duration, SageMaker's own waits for the
    /// deployment): what one execution must hold. Holds and a deployment that runs to
    /// its timeout spend checks beyond it; an execution that runs out of them fails, and
    /// the dead-man's switch stops what it left in flight.
    fn planned_phases(&self) -> Vec<(String, u64)> {
        let mut phases = Vec::new();
        if let Some(shadow) = &self.shadow {
            phases.push(("shadow.duration_seconds".to_owned(), shadow.duration_seconds));
        }
        if let Some(waits) = self.waits(None) {
            phases.push(("guardrail.traffic".to_owned(), waits));
        }
        phases
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::release::core::document::tests::sample_json;

    fn sample() -> Value {
        sample_json("sagemaker-guardrail-ai-model-8.json")
    }

    type Edit = fn(&mut Value);

    fn refused(edit: impl FnOnce(&mut Value)) -> String {
        let mut json = sample();
        edit(&mut json);
        match GuardrailRelease::parse(&json) {
            Err(crate::Error::InvalidRelease(why)) => why,
            other => panic!("expected InvalidRelease, got {other:?}"),
        }
    }

    #[test]
    fn the_sample_is_valid_and_reads_as_a_person_would_say_it() {
        let release = GuardrailRelease::parse(&sample()).unwrap();
        assert_eq!(release.tripwire(), "coalmine-tripwire-ai-model-endpoint");
        assert_eq!(release.phases(), 2);
        assert_eq!(
            release.describe_traffic(),
            "canary 10% of capacity, then the rest after 10m; 5m termination wait; at most 1h00m"
        );
        assert_eq!(release.waits(None), Some(900));
        assert_eq!(release.plan().alarms, ["coalmine-ai-model-5xx", "coalmine-tripwire-ai-model-endpoint"]);
    }

    #[test]
    fn what_aws_would_refuse_is_refused_before_any_call() {
        let cases: [(&str, Edit); 8] = [
            ("guardrail.traffic.canary.size", |j| {
                j["guardrail"]["traffic"]["canary"]["size"] = json!({"capacity_percent": 60})
            }),
            ("guardrail.traffic.linear.step", |j| {
                j["guardrail"]["traffic"] = json!({"linear": {"step": {"capacity_percent": 5}, "wait_seconds": 60}})
            }),
            ("instance count of at least 1", |j| {
                j["guardrail"]["traffic"]["canary"]["size"] = json!({"instance_count": 0})
            }),
            ("over AWS's 3600", |j| j["guardrail"]["traffic"]["canary"]["wait_seconds"] = json!(3601)),
            ("outside AWS's 600..=28800", |j| j["guardrail"]["max_execution_seconds"] = json!(300)),
            ("1 to 9", |j| j["guardrail"]["alarms"] = json!((0..10).map(|i| format!("a{i}")).collect::<Vec<_>>())),
            ("its own config", |j| j["shadow"]["endpoint_config"] = json!("ai-model-config-v8")),
            ("unknown field", |j| j["guardrail"]["canary_percent"] = json!(10)),
        ];
        for (expected, edit) in cases {
            let why = refused(edit);
            assert!(why.contains(expected), "{expected:?} not in {why:?}");
        }
    }

    #[test]
    fn a_deadline_shorter_than_the_waits_is_refused() {
        // 10 linear steps of 10%, 10 minutes apart, cannot finish within an hour.
        let why = refused(|j| {
            j["guardrail"]["traffic"] = json!({"linear": {"step": {"capacity_percent": 10}, "wait_seconds": 600}})
        });
        assert!(why.contains("the waits alone take 6300 s"), "{why}");
    }

    #[test]
    fn the_tripwire_is_always_among_the_auto_rollback_alarms() {
        let mut json = sample();
        json["guardrail"]["tripwire"] = json!("coalmine-prod-tripwire");
        let release = GuardrailRelease::parse(&json).unwrap();
        assert_eq!(release.plan().alarms.last().unwrap(), "coalmine-prod-tripwire");
        assert!(release.judged_gates().alarms.contains(&"coalmine-ai-model-5xx".to_owned()));

        json["gates"]["alarms"] = json!(["coalmine-ai-model-latency", "coalmine-ai-model-5xx"]);
        let release = GuardrailRelease::parse(&json).unwrap();
        assert_eq!(
            release.plan().alarms,
            ["coalmine-ai-model-latency", "coalmine-ai-model-5xx", "coalmine-prod-tripwire"],
            "a gate alarm rolls back too, without waiting for a tick; each alarm once"
        );
    }
}
