//! A SageMaker endpoint's pair of production variants: peers, whose weights move; only a
//! name (a release, an alarm's tag or dimensions) says which is stable. A one-variant
//! endpoint's traffic is moved by SageMaker's own deployments (guardrail releases).

use serde::{Deserialize, Serialize};

use super::{Kind, PeerSides, ReleaseRules, ReplayBy, Role, ShadowBy, StandardMetrics, Target};
use crate::domain::split::Split;
use crate::domain::watched::WatchedMetric;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageMakerVariants {
    pub endpoint: String,
    /// `None` when only the canary is known (an alarm's `VariantName` dimension): the
    /// stable variant is then the stable of record, or the endpoint's only other variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_variant: Option<String>,
    pub canary_variant: String,
}

/// `AWS/SageMaker`, by `EndpointName` and `VariantName` (and `EndpointConfigName` to tell
/// a guardrail deployment's fleets apart). `ModelLatency` is in microseconds.
static METRICS: StandardMetrics = StandardMetrics {
    namespace: "AWS/SageMaker",
    requests: "Invocations",
    errors: "Invocation5XXErrors",
    latency: "ModelLatency",
    latency_to_ms: 0.001,
};

impl SageMakerVariants {
    /// `sagemaker:ENDPOINT:STABLE:CANARY` or `sagemaker:ENDPOINT:CANARY`, the parts after
    /// `sagemaker`.
    pub(super) fn parse(parts: &[&str]) -> Result<Target, String> {
        match parts {
            [_, stable, canary] if stable == canary => Err("the stable and canary variants must differ".into()),
            [endpoint, stable, canary] => Ok(Target::sagemaker(*endpoint, *stable, *canary)),
            [endpoint, canary] => Ok(Target::Sagemaker(SageMakerVariants {
                endpoint: (*endpoint).to_owned(),
                stable_variant: None,
                canary_variant: (*canary).to_owned(),
            })),
            _ => Err(String::new()),
        }
    }

    /// An `AWS/SageMaker` metric names its canary variant by `EndpointName` and `VariantName`.
    pub(super) fn from_watched_metric(metric: &WatchedMetric) -> Option<Target> {
        if metric.namespace.as_deref() != Some("AWS/SageMaker") {
            return None;
        }
        let (endpoint, variant) = (metric.dimensions.get("EndpointName")?, metric.dimensions.get("VariantName")?);
        Some(Target::Sagemaker(SageMakerVariants {
            endpoint: endpoint.clone(),
            stable_variant: None,
            canary_variant: variant.clone(),
        }))
    }
}

impl Kind for SageMakerVariants {
    fn write_name(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.stable_variant {
            Some(stable) => write!(f, "sagemaker:{}:{}:{}", self.endpoint, stable, self.canary_variant),
            None => write!(f, "sagemaker:{}:{}", self.endpoint, self.canary_variant),
        }
    }

    fn side_noun(&self) -> &'static str {
        "variant"
    }

    fn has_fixed_roles(&self) -> bool {
        false
    }

    fn names_its_stable(&self) -> bool {
        self.stable_variant.is_some()
    }

    fn claim_key(&self) -> String {
        format!("sagemaker:{}", self.endpoint)
    }

    fn with_roles(&self, stable: &str, canary: &str) -> Target {
        Target::sagemaker(self.endpoint.clone(), stable, canary)
    }

    fn as_named_by_dimensions(&self) -> Target {
        Target::Sagemaker(SageMakerVariants { stable_variant: None, ..self.clone() })
    }

    fn is_split_of(&self, split: &Split) -> bool {
        self.stable_variant.as_ref().is_none_or(|stable| &split.stable == stable)
    }

    fn stage_split(&self, _stable: &str, live: &Split, weight: f64, _candidate: &str) -> Split {
        // Both variants stay, the weights move.
        Split { mirror: 0.0, ..live.with_canary_weight(weight) }
    }

    fn candidate<'a>(&'a self, _canary_version: Option<&'a str>) -> &'a str {
        &self.canary_variant
    }

    fn release_rules(&self, rules: &mut ReleaseRules<'_>) {
        if rules.canary_version.is_some() {
            rules.refuse("canary_version", "not used for a SageMaker target: the target names the canary variant");
            return;
        }
        match &self.stable_variant {
            None => rules.refuse("target.sagemaker.stable_variant", "required"),
            Some(stable) if stable == &self.canary_variant => {
                rules.refuse("target.sagemaker", "stable_variant and canary_variant must differ")
            }
            Some(_) => {}
        }
    }

    fn shadow_by(&self) -> ShadowBy<'_> {
        ShadowBy::No(
            "a Lambda or Azure ML release's phase: a SageMaker endpoint shadows with its own shadow variants (a \
             guardrail release's \"shadow\")",
        )
    }

    fn replay_by(&self) -> ReplayBy<'_> {
        ReplayBy::No(
            "a Lambda release's phase for now: a SageMaker endpoint could be replayed through InvokeEndpoint with \
             TargetVariant (the variant, not the weights), which coalmine does not do yet; use the release's stages, \
             or a guardrail release's shadow variants",
        )
    }

    fn deploying_endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }

    fn peer_sides(&self) -> Option<PeerSides<'_>> {
        Some(PeerSides {
            endpoint: self.endpoint.clone(),
            stable: self.stable_variant.as_deref(),
            canary: &self.canary_variant,
        })
    }

    fn standard_metrics(&self) -> Option<&'static StandardMetrics> {
        Some(&METRICS)
    }

    fn metric_dimensions(&self, id: &str, config: Option<&str>, _role: Role) -> Vec<(&'static str, String)> {
        let mut dims = vec![("EndpointName", self.endpoint.clone()), ("VariantName", id.to_owned())];
        dims.extend(config.map(|c| ("EndpointConfigName", c.to_owned())));
        dims
    }
}
