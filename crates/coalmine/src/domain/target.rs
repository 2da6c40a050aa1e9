//! What a canary runs behind: a Lambda alias, a SageMaker endpoint's pair of variants,
//! or an Azure ML managed online endpoint's pair of deployments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Lambda(LambdaAlias),
    Sagemaker(SageMakerVariants),
    /// Boxed: six names would make every `Target` (and every error naming one) larger.
    Azureml(Box<AzureMlDeployments>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaAlias {
    pub function: String,
    pub alias: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageMakerVariants {
    pub endpoint: String,
    /// `None` when only the canary is known (an alarm's `VariantName` dimension): the
    /// stable variant is then the endpoint's only other variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_variant: Option<String>,
    pub canary_variant: String,
}

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
    /// stable is then the endpoint's only other deployment with traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_deployment: Option<String>,
    pub canary_deployment: String,
}

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
}

impl Target {
    /// This target as an alarm's dimensions name it: a SageMaker pair without its stable
    /// variant (the dimensions carry only the canary's), a Lambda alias as it is.
    pub fn as_dimensions_name_it(&self) -> Target {
        match self {
            Target::Sagemaker(variants) => {
                Target::Sagemaker(SageMakerVariants { stable_variant: None, ..variants.clone() })
            }
            Target::Azureml(deployments) => {
                Target::Azureml(Box::new(AzureMlDeployments { stable_deployment: None, ..(**deployments).clone() }))
            }
            lambda => lambda.clone(),
        }
    }

    /// Whether the target itself says which side is the stable, whatever anyone names: a
    /// Lambda alias's `FunctionVersion` is, and its additional version is the canary.
    /// SageMaker variants and Azure ML deployments are peers; only a name (an alarm's
    /// tag or dimensions, a release) says which is which.
    pub fn has_fixed_roles(&self) -> bool {
        matches!(self, Target::Lambda(_))
    }

    /// What one release at a time may move: a Lambda alias, a SageMaker endpoint, an Azure
    /// ML online endpoint (in the letter case Azure ignores), whichever sides are named.
    pub fn claim_key(&self) -> String {
        match self {
            Target::Lambda(alias) => format!("lambda:{}:{}", alias.function, alias.alias),
            Target::Sagemaker(variants) => format!("sagemaker:{}", variants.endpoint),
            Target::Azureml(deployments) => format!("azureml:{}", deployments.endpoint_id().to_ascii_lowercase()),
        }
    }

    /// Whether the stable is named (or fixed), not left to be inferred from the endpoint.
    pub fn names_its_stable(&self) -> bool {
        match self {
            Target::Lambda(_) => true,
            Target::Sagemaker(variants) => variants.stable_variant.is_some(),
            Target::Azureml(deployments) => deployments.stable_deployment.is_some(),
        }
    }

    /// The same endpoint with these roles: how a person names a release's own sides (a
    /// Lambda alias has no roles to name).
    pub fn with_roles(&self, stable: &str, canary: &str) -> Target {
        match self {
            Target::Lambda(_) => self.clone(),
            Target::Sagemaker(variants) => Target::Sagemaker(SageMakerVariants {
                endpoint: variants.endpoint.clone(),
                stable_variant: Some(stable.to_owned()),
                canary_variant: canary.to_owned(),
            }),
            Target::Azureml(deployments) => Target::Azureml(Box::new(AzureMlDeployments {
                stable_deployment: Some(stable.to_owned()),
                canary_deployment: canary.to_owned(),
                ..(**deployments).clone()
            })),
        }
    }

    /// Whether `split`, read through [`Self::as_dimensions_name_it`], is this target's:
    /// the stable variant the dimensions' read inferred must be the one this target names.
    pub fn is_split_of(&self, split: &crate::domain::split::Split) -> bool {
        match self {
            Target::Sagemaker(SageMakerVariants { stable_variant: Some(stable), .. }) => &split.stable == stable,
            Target::Azureml(deployments) => deployments.stable_deployment.as_ref().is_none_or(|s| &split.stable == s),
            _ => true,
        }
    }
}

/// `lambda:FUNCTION:ALIAS`, `sagemaker:ENDPOINT:STABLE:CANARY` (or `sagemaker:ENDPOINT:CANARY`),
/// `azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:ENDPOINT:STABLE:CANARY` (or without STABLE).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Lambda(t) => write!(f, "lambda:{}:{}", t.function, t.alias),
            Target::Sagemaker(t) => match &t.stable_variant {
                Some(stable) => write!(f, "sagemaker:{}:{}:{}", t.endpoint, stable, t.canary_variant),
                None => write!(f, "sagemaker:{}:{}", t.endpoint, t.canary_variant),
            },
            Target::Azureml(t) => {
                write!(f, "azureml:{}:{}:{}:{}:", t.subscription, t.resource_group, t.workspace, t.endpoint)?;
                match &t.stable_deployment {
                    Some(stable) => write!(f, "{stable}:{}", t.canary_deployment),
                    None => write!(f, "{}", t.canary_deployment),
                }
            }
        }
    }
}

const FORMS: &str = "lambda:FUNCTION:ALIAS, sagemaker:ENDPOINT:STABLE:CANARY or \
                     azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:ENDPOINT:STABLE:CANARY";

/// The tag that names, on an alarm, the targets it guards (space-separated).
pub const TARGET_TAG: &str = "coalmine:target";

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
        match parts.as_slice() {
            ["lambda", function, alias] => Ok(Target::lambda(*function, *alias)),
            ["sagemaker", endpoint, stable, canary] if stable == canary => {
                Err(bad("the stable and canary variants must differ"))
            }
            ["sagemaker", endpoint, stable, canary] => Ok(Target::sagemaker(*endpoint, *stable, *canary)),
            ["sagemaker", endpoint, canary] => Ok(Target::Sagemaker(SageMakerVariants {
                endpoint: (*endpoint).to_owned(),
                stable_variant: None,
                canary_variant: (*canary).to_owned(),
            })),
            ["azureml", _, _, _, _, stable, canary] if stable == canary => {
                Err(bad("the stable and canary deployments must differ"))
            }
            ["azureml", subscription, resource_group, workspace, endpoint, rest @ ..] if !rest.is_empty() => {
                let (stable_deployment, canary) = match rest {
                    [stable, canary] => (Some((*stable).to_owned()), *canary),
                    [canary] => (None, *canary),
                    _ => return Err(bad(&format!("expected {FORMS}"))),
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
            _ => Err(bad(&format!("expected {FORMS}"))),
        }
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
}
