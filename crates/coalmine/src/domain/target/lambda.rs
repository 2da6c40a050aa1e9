//! A Lambda alias: the stable is its `FunctionVersion`, the canary the one version in
//! its `AdditionalVersionWeights`. The alias itself says which side is which, and 100%
//! is a promotion: the candidate becomes the alias's version.

use serde::{Deserialize, Serialize};

use super::{Kind, ReleaseRules, ReplayBy, Role, ShadowBy, StandardMetrics, Target};
use crate::domain::split::Split;
use crate::domain::watched::WatchedMetric;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaAlias {
    pub function: String,
    pub alias: String,
}

/// `AWS/Lambda`, by `FunctionName`, `Resource` (`function:alias`) and `ExecutedVersion`.
pub(super) static METRICS: StandardMetrics = StandardMetrics {
    namespace: "AWS/Lambda",
    requests: "Invocations",
    errors: "Errors",
    latency: "Duration",
    latency_to_ms: 1.0,
};

impl LambdaAlias {
    /// `lambda:FUNCTION:ALIAS`, the parts after `lambda`.
    pub(super) fn parse(parts: &[&str]) -> Result<Target, String> {
        match parts {
            [function, alias] => Ok(Target::lambda(*function, *alias)),
            _ => Err(String::new()),
        }
    }

    /// An `AWS/Lambda` metric names its alias by `FunctionName` and `Resource` ("fn:alias").
    pub(super) fn from_watched_metric(metric: &WatchedMetric) -> Option<Target> {
        if metric.namespace.as_deref() != Some("AWS/Lambda") {
            return None;
        }
        let (function, resource) = (metric.dimensions.get("FunctionName")?, metric.dimensions.get("Resource")?);
        let (resource_function, alias) = resource.rsplit_once(':')?;
        (resource_function == function && !alias.is_empty()).then(|| Target::lambda(function.as_str(), alias))
    }
}

impl Kind for LambdaAlias {
    fn write_name(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lambda:{}:{}", self.function, self.alias)
    }

    fn side_noun(&self) -> &'static str {
        "version"
    }

    fn has_fixed_roles(&self) -> bool {
        true
    }

    fn names_its_stable(&self) -> bool {
        true
    }

    fn claim_key(&self) -> String {
        format!("lambda:{}:{}", self.function, self.alias)
    }

    fn with_roles(&self, _stable: &str, _canary: &str) -> Target {
        Target::Lambda(self.clone())
    }

    fn as_named_by_dimensions(&self) -> Target {
        Target::Lambda(self.clone())
    }

    fn is_split_of(&self, _split: &Split) -> bool {
        true
    }

    fn stage_split(&self, stable: &str, _live: &Split, weight: f64, candidate: &str) -> Split {
        if weight >= 1.0 {
            return Split::stable_only(candidate, None);
        }
        Split {
            stable: stable.to_owned(),
            canary: Some(candidate.to_owned()),
            canary_weight: weight,
            others_weight: 0.0,
            mirror: 0.0,
            revision: None,
            stamp: None,
        }
    }

    fn candidate<'a>(&'a self, canary_version: Option<&'a str>) -> &'a str {
        canary_version.unwrap_or_default()
    }

    fn release_rules(&self, rules: &mut ReleaseRules<'_>) {
        version_rules(rules);
    }

    fn shadow_by(&self) -> ShadowBy<'_> {
        ShadowBy::LogFeed { function: &self.function }
    }

    fn replay_by(&self) -> ReplayBy<'_> {
        ReplayBy::Invoke { function: &self.function }
    }

    fn standard_metrics(&self) -> Option<&'static StandardMetrics> {
        Some(&METRICS)
    }

    fn metric_dimensions(&self, id: &str, _config: Option<&str>, _role: Role) -> Vec<(&'static str, String)> {
        vec![
            ("FunctionName", self.function.clone()),
            ("Resource", format!("{}:{}", self.function, self.alias)),
            ("ExecutedVersion", id.to_owned()),
        ]
    }
}

/// A Lambda release names the published version it canaries.
pub(super) fn version_rules(rules: &mut ReleaseRules<'_>) {
    match rules.canary_version {
        None => rules.refuse("canary_version", "required for a Lambda target: the published version to canary"),
        Some("$LATEST") => rules.refuse("canary_version", "must be a published version number, not $LATEST"),
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') => {
            rules.refuse("canary_version", &format!("{v:?} is not a published version number (1, 2, ...)"))
        }
        Some(_) => {}
    }
}
