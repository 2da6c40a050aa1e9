//! An Azure ML managed online endpoint's pair of deployments: peers, whose traffic is
//! whole percents summing to 100; Azure itself mirrors a share to a shadow. Its metrics
//! are Azure Monitor's, and its alerts come through the stack's webhook.

use serde::{Deserialize, Serialize};

use super::{Kind, PeerSides, ReleaseRules, ReplayBy, Role, ShadowBy, StandardMetrics, Target};
use crate::domain::split::Split;
use crate::domain::watched::WatchedMetric;

/// An Azure ML managed online endpoint and the two deployments a release moves traffic
/// between. Azure keeps traffic as whole percents summing to 100.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureMlDeployments {
    pub subscription: String,
    pub resource_group: String,
    pub workspace: String,
    pub endpoint: String,
    /// `None` when only the canary is known (an alert's `deployment` dimension): the
    /// stable is then the stable of record, or the endpoint's only other deployment with
    /// traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_deployment: Option<String>,
    pub canary_deployment: String,
}

const ONLINE_ENDPOINTS: &str = "microsoft.machinelearningservices/workspaces/onlineendpoints";

impl AzureMlDeployments {
    /// The endpoint's Azure Resource Manager ID.
    pub fn endpoint_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}/onlineEndpoints/{}",
            self.subscription, self.resource_group, self.workspace, self.endpoint
        )
    }

    /// Reads an online endpoint's resource ID (any letter case, as alerts spell them).
    pub fn from_endpoint_id(id: &str, canary_deployment: &str) -> Option<AzureMlDeployments> {
        let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let shape = ["subscriptions", "resourcegroups", "providers", "workspaces", "onlineendpoints"];
        let at = [0, 2, 4, 6, 8];
        let fits = parts.len() == 10
            && at.iter().zip(shape).all(|(i, word)| lower[*i] == word)
            && lower[5] == "microsoft.machinelearningservices"
            && [1, 3, 7, 9].iter().all(|i| !parts[*i].is_empty());
        fits.then(|| AzureMlDeployments {
            subscription: parts[1].to_owned(),
            resource_group: parts[3].to_owned(),
            workspace: parts[7].to_owned(),
            endpoint: parts[9].to_owned(),
            stable_deployment: None,
            canary_deployment: canary_deployment.to_owned(),
        })
    }

    /// `azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:ENDPOINT:STABLE:CANARY` (or without
    /// STABLE), the parts after `azureml`.
    pub(super) fn parse(parts: &[&str]) -> Result<Target, String> {
        match parts {
            [_, _, _, _, stable, canary] if stable == canary => {
                Err("the stable and canary deployments must differ".into())
            }
            [subscription, resource_group, workspace, endpoint, rest @ ..] if !rest.is_empty() => {
                let (stable_deployment, canary) = match rest {
                    [stable, canary] => (Some((*stable).to_owned()), *canary),
                    [canary] => (None, *canary),
                    _ => return Err(String::new()),
                };
                Ok(Target::Azureml(Box::new(AzureMlDeployments {
                    subscription: (*subscription).to_owned(),
                    resource_group: (*resource_group).to_owned(),
                    workspace: (*workspace).to_owned(),
                    endpoint: (*endpoint).to_owned(),
                    stable_deployment,
                    canary_deployment: canary.to_owned(),
                })))
            }
            _ => Err(String::new()),
        }
    }

    /// An alert on an online endpoint names its canary by its `deployment` dimension; one
    /// on a deployment's own resource is that deployment.
    pub(super) fn from_watched_metric(metric: &WatchedMetric) -> Option<Target> {
        let namespace = metric.namespace.as_deref()?.to_ascii_lowercase();
        let resource = metric.resource.as_deref()?;
        let found = if namespace == ONLINE_ENDPOINTS {
            let deployment = metric.dimensions.iter().find(|(k, _)| k.eq_ignore_ascii_case("deployment"))?.1;
            AzureMlDeployments::from_endpoint_id(resource, deployment)
        } else if namespace == format!("{ONLINE_ENDPOINTS}/deployments") {
            let (endpoint, deployment) = resource.trim_end_matches('/').rsplit_once('/')?;
            let endpoint = endpoint.strip_suffix("/deployments").or_else(|| endpoint.strip_suffix("/Deployments"))?;
            AzureMlDeployments::from_endpoint_id(endpoint, deployment)
        } else {
            None
        };
        found.map(|d| Target::Azureml(Box::new(d)))
    }

    /// The online endpoint an alert's resource is, or belongs to (a deployment's), by its ID.
    pub(super) fn endpoint_of_resource(resource: &str) -> Option<String> {
        let trimmed = resource.trim_end_matches('/');
        let endpoint = match trimmed.to_ascii_lowercase().rfind("/deployments/") {
            Some(at) => &trimmed[..at],
            None => trimmed,
        };
        AzureMlDeployments::from_endpoint_id(endpoint, "-").map(|d| d.endpoint_id())
    }
}

impl Kind for AzureMlDeployments {
    fn write_name(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "azureml:{}:{}:{}:{}:", self.subscription, self.resource_group, self.workspace, self.endpoint)?;
        match &self.stable_deployment {
            Some(stable) => write!(f, "{stable}:{}", self.canary_deployment),
            None => write!(f, "{}", self.canary_deployment),
        }
    }

    /// Subscription, resource group and workspace are the same on every row of a team's list.
    fn short_name(&self) -> String {
        match &self.stable_deployment {
            Some(stable) => format!("azureml:{}:{stable}→{}", self.endpoint, self.canary_deployment),
            None => format!("azureml:{}:{}", self.endpoint, self.canary_deployment),
        }
    }

    fn side_noun(&self) -> &'static str {
        "deployment"
    }

    fn has_fixed_roles(&self) -> bool {
        false
    }

    fn names_its_stable(&self) -> bool {
        self.stable_deployment.is_some()
    }

    /// In the letter case Azure ignores.
    fn claim_key(&self) -> String {
        format!("azureml:{}", self.endpoint_id().to_ascii_lowercase())
    }

    fn with_roles(&self, stable: &str, canary: &str) -> Target {
        Target::Azureml(Box::new(AzureMlDeployments {
            stable_deployment: Some(stable.to_owned()),
            canary_deployment: canary.to_owned(),
            ..self.clone()
        }))
    }

    fn as_named_by_dimensions(&self) -> Target {
        Target::Azureml(Box::new(AzureMlDeployments { stable_deployment: None, ..self.clone() }))
    }

    fn is_split_of(&self, split: &Split) -> bool {
        self.stable_deployment.as_ref().is_none_or(|stable| &split.stable == stable)
    }

    fn stage_split(&self, _stable: &str, live: &Split, weight: f64, _candidate: &str) -> Split {
        // Both deployments stay, the traffic moves; a stage ends the shadow's mirror.
        Split { mirror: 0.0, ..live.with_canary_weight(weight) }
    }

    fn candidate<'a>(&'a self, _canary_version: Option<&'a str>) -> &'a str {
        &self.canary_deployment
    }

    /// Azure keeps an endpoint's traffic as whole percents summing to 100, so every stage
    /// must be one; its gates are what Azure Monitor reports per deployment.
    fn release_rules(&self, rules: &mut ReleaseRules<'_>) {
        if rules.canary_version.is_some() {
            rules.refuse("canary_version", "not used for an Azure ML target: the target names the canary deployment");
            return;
        }
        for (field, value) in [
            ("subscription", &self.subscription),
            ("resource_group", &self.resource_group),
            ("workspace", &self.workspace),
            ("endpoint", &self.endpoint),
            ("canary_deployment", &self.canary_deployment),
        ] {
            if value.trim().is_empty() || value.contains(['/', ':', '?', '#']) {
                rules.refuse(&format!("target.azureml.{field}"), &format!("{value:?} is not an Azure resource name"));
            }
        }
        match &self.stable_deployment {
            None => rules.refuse("target.azureml.stable_deployment", "required"),
            Some(stable) if stable == &self.canary_deployment => {
                rules.refuse("target.azureml", "stable_deployment and canary_deployment must differ")
            }
            Some(_) => {}
        }
        for (i, percent) in rules.stage_percents.iter().enumerate() {
            if percent.fract() != 0.0 {
                rules.refuse(
                    &format!("stages[{i}].percent"),
                    &format!(
                        "{percent}: Azure ML sets an endpoint's traffic in whole percents; use {} or {}",
                        percent.floor().max(1.0),
                        percent.ceil()
                    ),
                );
            }
        }
        if rules.has_custom_gates {
            rules.refuse(
                "gates.custom",
                "not available for an Azure ML target yet: custom gates read CloudWatch metrics published per Lambda \
                 version or SageMaker variant; an Azure release is judged on Azure Monitor's errors and latency per \
                 deployment",
            );
        }
    }

    fn shadow_by(&self) -> ShadowBy<'_> {
        ShadowBy::Mirror
    }

    fn replay_by(&self) -> ReplayBy<'_> {
        ReplayBy::No(
            "a Lambda release's phase for now: an Azure ML deployment could be replayed through its scoring URI with \
             the azureml-model-deployment header, which coalmine does not do yet; use the release's \"shadow\" \
             (the endpoint mirrors live traffic)",
        )
    }

    fn is_raised_on(&self, resource: &str) -> bool {
        AzureMlDeployments::endpoint_of_resource(resource)
            .is_some_and(|own| own.eq_ignore_ascii_case(&self.endpoint_id()))
    }

    fn peer_sides(&self) -> Option<PeerSides<'_>> {
        Some(PeerSides {
            endpoint: self.endpoint_id(),
            stable: self.stable_deployment.as_deref(),
            canary: &self.canary_deployment,
        })
    }

    fn standard_metrics(&self) -> Option<&'static StandardMetrics> {
        None
    }

    fn metric_dimensions(&self, id: &str, _config: Option<&str>, _role: Role) -> Vec<(&'static str, String)> {
        vec![("EndpointName", self.endpoint.clone()), ("deployment", id.to_owned())]
    }
}
