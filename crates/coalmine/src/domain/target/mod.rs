//! What a canary runs behind: a Lambda alias, a SageMaker endpoint's pair of variants,
//! or an Azure ML managed online endpoint's pair of deployments. Each kind is a module
//! of its own (`lambda`, `sagemaker`, `azureml`) that owns, in one place, its naming and
//! parsing, how a stage becomes its split, its release rules, what its alarms' dimensions
//! say, how it is shadowed, and how its metrics are asked for. [`Target::kind`] is the
//! one dispatch; a fourth kind is a module, an enum variant, and an arm there (and in
//! the parsers below). The use cases name no kind.

mod azureml;
mod lambda;
mod lambda_cohort;
mod sagemaker;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use azureml::AzureMlDeployments;
pub use lambda::LambdaAlias;
pub use lambda_cohort::LambdaCohort;
pub use sagemaker::SageMakerVariants;

use crate::domain::split::Split;
use crate::domain::watched::WatchedMetric;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Lambda(LambdaAlias),
    LambdaCohort(LambdaCohort),
    Sagemaker(SageMakerVariants),
    /// Boxed: six names would make every `Target` (and every error naming one) larger.
    Azureml(Box<AzureMlDeployments>),
}

/// How a kind of target behaves: what every use case asks of a target, answered by each
/// kind in its own module.
trait Kind {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// The name a list shows in a narrow column: what tells targets apart at a glance.
    fn short_name(&self) -> String {
        struct Named<'a, K: ?Sized>(&'a K);
        impl<K: Kind + ?Sized> fmt::Display for Named<'_, K> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_name(f)
            }
        }
        Named(self).to_string()
    }
    /// What one side is called: "version", "variant", "deployment".
    fn side_noun(&self) -> &'static str;
    fn has_fixed_roles(&self) -> bool;
    fn names_its_stable(&self) -> bool;
    fn claim_key(&self) -> String;
    fn with_roles(&self, stable: &str, canary: &str) -> Target;
    fn as_named_by_dimensions(&self) -> Target;
    fn is_split_of(&self, split: &Split) -> bool;
    fn stage_split(&self, stable: &str, live: &Split, weight: f64, candidate: &str) -> Split;
    fn candidate<'a>(&'a self, canary_version: Option<&'a str>) -> &'a str;
    fn release_rules(&self, rules: &mut ReleaseRules<'_>);
    fn shadow_by(&self) -> ShadowBy<'_>;
    /// How a replay asks the candidate and the stable a request before any user is
    /// served (decision 0023).
    fn replay_by(&self) -> ReplayBy<'_>;
    /// The endpoint whose own deployments coalmine can stop (SageMaker's guardrails).
    fn deploying_endpoint(&self) -> Option<&str> {
        None
    }
    /// Whether an alert raised on `resource` (Azure's `alertTargetIDs`) may act on it.
    fn is_raised_on(&self, _resource: &str) -> bool {
        false
    }
    /// An endpoint whose two sides are peers (only a name says which is stable): its
    /// key and the sides this target names. `None` for a Lambda alias (fixed roles).
    fn peer_sides(&self) -> Option<PeerSides<'_>> {
        None
    }
    fn standard_metrics(&self) -> Option<&'static StandardMetrics>;
    fn metric_dimensions(&self, id: &str, config: Option<&str>, role: Role) -> Vec<(&'static str, String)>;
    /// Who serves what, when the kind says it in its own words (a cohort's two aliases).
    fn describe(&self, _split: &Split) -> Option<String> {
        None
    }
    /// A target that routes units by cohort: the primary alias and the kill switch.
    fn cohort_aliases(&self) -> Option<(&str, &str)> {
        None
    }
    /// Where its routers read the cohort: the AppConfig profile's name.
    fn cohort_profile(&self) -> Option<String> {
        None
    }
    /// Metrics by unit (decision 0021): what its routers publish, and the dimensions of
    /// one side's, by how its units were assigned and, when given, their replicate group.
    fn unit_metrics(&self) -> Option<UnitMetrics> {
        None
    }
}

/// What a cohort target's routers publish: requests, errors and latency in ms, by
/// `FunctionName`, `Version`, `Assignment` and `Replicate` ([`coalmine_router::metrics`]).
#[derive(Clone, Debug)]
pub struct UnitMetrics {
    pub metrics: &'static StandardMetrics,
    pub function: String,
}

/// The routers' metrics, as [`StandardMetrics`] name them.
pub static ROUTER_METRICS: StandardMetrics = StandardMetrics {
    namespace: coalmine_router::metrics::NAMESPACE,
    requests: coalmine_router::metrics::REQUESTS,
    errors: coalmine_router::metrics::ERRORS,
    latency: coalmine_router::metrics::LATENCY,
    latency_to_ms: 1.0,
};

impl UnitMetrics {
    /// One side's dimensions: `id` its version, `assignment` `drawn`, `pinned` or
    /// `stable`, `replicate` one group or all of them.
    pub fn dimensions(&self, id: &str, assignment: &str, replicate: Option<u32>) -> Vec<(&'static str, String)> {
        let mut dims = vec![
            ("FunctionName", self.function.clone()),
            ("Version", id.to_owned()),
            ("Assignment", assignment.to_owned()),
        ];
        dims.extend(replicate.map(|r| ("Replicate", r.to_string())));
        dims
    }
}

/// Which side of a release a metric is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Candidate,
    Stable,
}

/// What a release asks of its target, checked by the target's kind: each problem is
/// said against its field.
pub struct ReleaseRules<'a> {
    pub canary_version: Option<&'a str>,
    pub stage_percents: &'a [f64],
    pub has_custom_gates: bool,
    /// (field, problem), in the order found.
    pub problems: Vec<(String, String)>,
}

impl ReleaseRules<'_> {
    fn refuse(&mut self, field: &str, why: &str) {
        self.problems.push((field.to_owned(), why.to_owned()));
    }
}

/// An endpoint's sides as a target names them: the endpoint (a SageMaker endpoint's
/// name, an Azure ML endpoint's resource ID), the stable if named, and the canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSides<'a> {
    pub endpoint: String,
    pub stable: Option<&'a str>,
    pub canary: &'a str,
}

/// How a target's candidate is shadowed before it serves anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowBy<'a> {
    /// The stable's logged requests feed the shadow function, which asks the candidate.
    LogFeed { function: &'a str },
    /// The target itself mirrors a share of live traffic to the candidate.
    Mirror,
    /// Not as a phase of this release, and why.
    No(&'static str),
}

/// How a target's versions are asked a replayed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayBy<'a> {
    /// The shadow function invokes the function's qualified versions, never its alias.
    Invoke { function: &'a str },
    /// Not yet for this kind, and why.
    No(&'static str),
}

/// A target's own requests, errors and latency in CloudWatch: the metrics AWS publishes
/// for it, by the dimensions [`Target::metric_dimensions`] gives.
#[derive(Debug, PartialEq)]
pub struct StandardMetrics {
    pub namespace: &'static str,
    pub requests: &'static str,
    pub errors: &'static str,
    pub latency: &'static str,
    /// Multiply the latency statistic by this to get milliseconds.
    pub latency_to_ms: f64,
}

impl Target {
    pub fn lambda(function: impl Into<String>, alias: impl Into<String>) -> Self {
        Target::Lambda(LambdaAlias { function: function.into(), alias: alias.into() })
    }

    pub fn sagemaker(endpoint: impl Into<String>, stable: impl Into<String>, canary: impl Into<String>) -> Self {
        Target::Sagemaker(SageMakerVariants {
            endpoint: endpoint.into(),
            stable_variant: Some(stable.into()),
            canary_variant: canary.into(),
        })
    }

    /// The one dispatch on the kind of target.
    fn kind(&self) -> &dyn Kind {
        match self {
            Target::Lambda(alias) => alias,
            Target::LambdaCohort(aliases) => aliases,
            Target::Sagemaker(variants) => variants,
            Target::Azureml(deployments) => deployments.as_ref(),
        }
    }

    /// The targets an alarm's watched metric names by its dimensions (or an Azure alert
    /// by its resource), in each kind's own terms.
    pub fn from_watched_metric(metric: &WatchedMetric) -> Option<Target> {
        AzureMlDeployments::from_watched_metric(metric)
            .or_else(|| LambdaAlias::from_watched_metric(metric))
            .or_else(|| SageMakerVariants::from_watched_metric(metric))
    }

    /// A version, variant or deployment as a person names it: "version 41", "variant
    /// stable", "deployment blue".
    /// The target as a narrow column shows it (`azureml:chat-endpoint:blue→green`); its
    /// whole name where there is room.
    pub fn short_name(&self) -> String {
        self.kind().short_name()
    }

    pub fn side(&self, id: &str) -> String {
        format!("{} {id}", self.kind().side_noun())
    }

    /// This target as an alarm's dimensions name it: known by its canary alone (a
    /// Lambda alias as it is).
    pub fn as_dimensions_name_it(&self) -> Target {
        self.kind().as_named_by_dimensions()
    }

    /// Whether the target itself says which side is the stable, whatever anyone names: a
    /// Lambda alias's `FunctionVersion` is, and its additional version is the canary.
    /// SageMaker variants and Azure ML deployments are peers; only a name (an alarm's
    /// tag or dimensions, a release) says which is which.
    pub fn has_fixed_roles(&self) -> bool {
        self.kind().has_fixed_roles()
    }

    /// What one release at a time may move: a Lambda alias, a SageMaker endpoint, an Azure
    /// ML online endpoint, whichever sides are named.
    pub fn claim_key(&self) -> String {
        self.kind().claim_key()
    }

    /// Whether the stable is named (or fixed), not left to be inferred from the endpoint.
    pub fn names_its_stable(&self) -> bool {
        self.kind().names_its_stable()
    }

    /// The same endpoint with these roles: how a person names a release's own sides (a
    /// Lambda alias has no roles to name).
    pub fn with_roles(&self, stable: &str, canary: &str) -> Target {
        self.kind().with_roles(stable, canary)
    }

    /// Whether `split`, read through [`Self::as_dimensions_name_it`], is this target's:
    /// the stable the dimensions' read inferred must be the one this target names.
    pub fn is_split_of(&self, split: &Split) -> bool {
        self.kind().is_split_of(split)
    }

    /// The split a stage at `weight` asks for, from the `live` one: on a Lambda alias,
    /// 100% is the promotion (the candidate becomes its version); elsewhere both sides
    /// stay and the weights move (and a shadow's mirror ends).
    pub fn stage_split(&self, stable: &str, live: &Split, weight: f64, candidate: &str) -> Split {
        self.kind().stage_split(stable, live, weight, candidate)
    }

    /// The candidate's identity on this target: a Lambda version (the release's
    /// `canary_version`), a SageMaker variant or Azure deployment (named by the target).
    pub fn candidate<'a>(&'a self, canary_version: Option<&'a str>) -> &'a str {
        self.kind().candidate(canary_version)
    }

    /// Every problem a release's fields have on this kind of target, each with its field.
    pub fn release_problems(
        &self,
        canary_version: Option<&str>,
        stage_percents: &[f64],
        has_custom_gates: bool,
    ) -> Vec<(String, String)> {
        let mut rules = ReleaseRules { canary_version, stage_percents, has_custom_gates, problems: Vec::new() };
        self.kind().release_rules(&mut rules);
        rules.problems
    }

    pub fn shadow_by(&self) -> ShadowBy<'_> {
        self.kind().shadow_by()
    }

    pub fn replay_by(&self) -> ReplayBy<'_> {
        self.kind().replay_by()
    }

    /// For a target that routes units by cohort (decision 0020): its primary alias, which
    /// serves the stable, and the cohort alias, the kill switch.
    pub fn cohort_aliases(&self) -> Option<(&str, &str)> {
        self.kind().cohort_aliases()
    }

    /// The AppConfig configuration profile its routers read the cohort from
    /// ([`coalmine_router::profile_name`]).
    pub fn cohort_profile(&self) -> Option<String> {
        self.kind().cohort_profile()
    }

    /// Where its requests are measured by unit, when its routers publish that.
    pub fn unit_metrics(&self) -> Option<UnitMetrics> {
        self.kind().unit_metrics()
    }

    /// The endpoint whose own deployments coalmine can stop (SageMaker's guardrails).
    pub fn deploying_endpoint(&self) -> Option<&str> {
        self.kind().deploying_endpoint()
    }

    /// Whether an alert raised on `resource` may act on this target: only an Azure ML
    /// endpoint's own alerts.
    pub fn is_raised_on(&self, resource: &str) -> bool {
        self.kind().is_raised_on(resource)
    }

    /// The endpoint and the sides it names, when its sides are peers (not a Lambda alias).
    pub fn peer_sides(&self) -> Option<PeerSides<'_>> {
        self.kind().peer_sides()
    }

    /// Its own metrics in CloudWatch, when AWS publishes them (not for Azure ML).
    pub fn standard_metrics(&self) -> Option<&'static StandardMetrics> {
        self.kind().standard_metrics()
    }

    /// The dimensions of one side's metrics: `id` the side (a version, a variant, a
    /// deployment), `config` the endpoint config a guardrail deployment's fleet runs.
    pub fn metric_dimensions(&self, id: &str, config: Option<&str>, role: Role) -> Vec<(&'static str, String)> {
        self.kind().metric_dimensions(id, config, role)
    }

    /// Who serves what in the kind's own words, where a split's weights do not say it.
    pub fn describe_in_own_words(&self, split: &Split) -> Option<String> {
        self.kind().describe(split)
    }
}

/// `lambda:FUNCTION:ALIAS`, `lambda-cohort:FUNCTION:ALIAS:COHORT_ALIAS`,
/// `sagemaker:ENDPOINT:STABLE:CANARY` (or `sagemaker:ENDPOINT:CANARY`),
/// `azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:ENDPOINT:STABLE:CANARY` (or without STABLE).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind().write_name(f)
    }
}

const FORMS: &str =
    "lambda:FUNCTION:ALIAS, lambda-cohort:FUNCTION:ALIAS:COHORT_ALIAS, sagemaker:ENDPOINT:STABLE:CANARY or \
                     azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:ENDPOINT:STABLE:CANARY";

/// A target string or object that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {input:?}: {reason}")]
pub struct BadTarget {
    pub input: String,
    pub reason: String,
}

impl FromStr for Target {
    type Err = BadTarget;

    fn from_str(input: &str) -> Result<Self, BadTarget> {
        let bad = |reason: &str| BadTarget { input: input.to_owned(), reason: reason.to_owned() };
        let parts: Vec<&str> = input.trim().split(':').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad(&format!("empty part; expected {FORMS}")));
        }
        let parsed = match parts.as_slice() {
            ["lambda", rest @ ..] => LambdaAlias::parse(rest),
            ["lambda-cohort", rest @ ..] => LambdaCohort::parse(rest),
            ["sagemaker", rest @ ..] => SageMakerVariants::parse(rest),
            ["azureml", rest @ ..] => AzureMlDeployments::parse(rest),
            _ => Err(String::new()),
        };
        // A kind says what is wrong, or nothing when the shape is not its own.
        parsed.map_err(|why| if why.is_empty() { bad(&format!("expected {FORMS}")) } else { bad(&why) })
    }
}

/// Several targets in one string, separated by whitespace: the form a `coalmine:target`
/// tag value takes (tag values cannot hold commas).
pub fn parse_target_list(input: &str) -> Result<Vec<Target>, BadTarget> {
    input.split_whitespace().map(Target::from_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in [
            "lambda:ai-handler:production",
            "lambda-cohort:ai-handler:live:canary",
            "sagemaker:ep:stable:canary",
            "sagemaker:ep:canary",
            "azureml:00000000-1111-2222-3333-444444444444:ml-rg:ml-ws:chat:blue:green",
            "azureml:sub:rg:ws:chat:green",
        ] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn malformed_strings_are_rejected_with_the_expected_form() {
        for s in [
            "",
            "lambda:fn",
            "lambda::alias",
            "ecs:svc:x",
            "sagemaker:ep:a:a",
            "lambda:a:b:c",
            "lambda-cohort:f:live",
            "lambda-cohort:f:live:live",
            "azureml:sub:rg:ws:ep",
            "azureml:sub:rg:ws:ep:a:a",
            "azureml:sub:rg:ws:ep:a:b:c",
            "azureml:sub::ws:ep:a:b",
        ] {
            let err = s.parse::<Target>().unwrap_err().to_string();
            assert!(err.contains(&format!("{s:?}")), "{err}");
        }
    }

    #[test]
    fn a_tag_value_holds_several_targets() {
        let targets = parse_target_list(" lambda:a:live  sagemaker:ep:s:c ").unwrap();
        assert_eq!(targets, vec![Target::lambda("a", "live"), Target::sagemaker("ep", "s", "c")]);
    }

    #[test]
    fn an_online_endpoints_resource_id_names_its_parts_in_any_case() {
        let id = "/subscriptions/sub-1/resourcegroups/ml-rg/providers/microsoft.machinelearningservices/workspaces/ws/onlineendpoints/chat";
        let found = AzureMlDeployments::from_endpoint_id(id, "green").unwrap();
        assert_eq!(Target::Azureml(Box::new(found.clone())).to_string(), "azureml:sub-1:ml-rg:ws:chat:green");
        let canonical = AzureMlDeployments { stable_deployment: Some("blue".into()), ..found };
        assert_eq!(AzureMlDeployments::from_endpoint_id(&canonical.endpoint_id(), "green").unwrap().endpoint, "chat");
        for other in [
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/e/deployments/d",
        ] {
            assert_eq!(AzureMlDeployments::from_endpoint_id(other, "green"), None, "{other}");
        }
    }

    #[test]
    fn json_form_is_externally_tagged_and_strict() {
        let t: Target = serde_json::from_str(r#"{"lambda":{"function":"f","alias":"a"}}"#).unwrap();
        assert_eq!(t, Target::lambda("f", "a"));
        assert!(serde_json::from_str::<Target>(r#"{"lambda":{"function":"f","alias":"a","x":1}}"#).is_err());
    }

    #[test]
    fn a_cohort_names_both_aliases_shares_the_primarys_claim_and_says_who_serves_in_its_own_words() {
        let cohort: Target = serde_json::from_str(
            r#"{"lambda_cohort": {"function": "ai-handler", "alias": "live", "cohort_alias": "canary"}}"#,
        )
        .unwrap();
        assert_eq!(cohort.to_string(), "lambda-cohort:ai-handler:live:canary");
        assert_eq!(cohort.claim_key(), Target::lambda("ai-handler", "live").claim_key());
        assert!(cohort.has_fixed_roles() && cohort.names_its_stable());
        let at_5 = cohort.stage_split("41", &Split::stable_only("41", None), 0.05, "42");
        assert_eq!((at_5.canary.as_deref(), at_5.canary_weight), (Some("42"), 1.0), "the cohort alias wholly");
        let promoted = cohort.stage_split("41", &at_5, 1.0, "42");
        assert_eq!((promoted.stable.as_str(), promoted.canary.as_deref()), ("42", None));
        assert_eq!(
            crate::text::describe(&cohort, &at_5),
            "version 41 serves alias live; the cohort alias canary serves canary version 42"
        );
        assert_eq!(
            crate::text::describe(&cohort, &promoted),
            "version 42 serves both aliases, live and canary, no canary"
        );
        let resource = |role| cohort.metric_dimensions("42", None, role)[1].1.clone();
        assert_eq!(
            (resource(Role::Candidate), resource(Role::Stable)),
            ("ai-handler:canary".into(), "ai-handler:live".into())
        );
        assert_eq!(cohort.release_problems(Some("42"), &[5.0, 100.0], false), []);
        assert_eq!(cohort.release_problems(None, &[5.0, 100.0], false)[0].0, "canary_version");
        assert_eq!(cohort.cohort_aliases(), Some(("live", "canary")));
        assert_eq!(Target::lambda("ai-handler", "live").cohort_aliases(), None);
    }
}
