//! What a canary runs behind: a Lambda alias or a SageMaker endpoint's pair of variants.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Lambda(LambdaAlias),
    Sagemaker(SageMakerVariants),
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
            lambda => lambda.clone(),
        }
    }

    /// Whether `split`, read through [`Self::as_dimensions_name_it`], is this target's:
    /// the stable variant the dimensions' read inferred must be the one this target names.
    pub fn is_split_of(&self, split: &crate::domain::split::Split) -> bool {
        match self {
            Target::Sagemaker(SageMakerVariants { stable_variant: Some(stable), .. }) => &split.stable == stable,
            _ => true,
        }
    }
}

/// `lambda:FUNCTION:ALIAS`, `sagemaker:ENDPOINT:STABLE:CANARY`, or `sagemaker:ENDPOINT:CANARY`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Lambda(t) => write!(f, "lambda:{}:{}", t.function, t.alias),
            Target::Sagemaker(t) => match &t.stable_variant {
                Some(stable) => write!(f, "sagemaker:{}:{}:{}", t.endpoint, stable, t.canary_variant),
                None => write!(f, "sagemaker:{}:{}", t.endpoint, t.canary_variant),
            },
        }
    }
}

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
            return Err(bad("empty part; expected lambda:FUNCTION:ALIAS or sagemaker:ENDPOINT:STABLE:CANARY"));
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
            _ => Err(bad("expected lambda:FUNCTION:ALIAS or sagemaker:ENDPOINT:STABLE:CANARY")),
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
        for s in ["lambda:ai-handler:production", "sagemaker:ep:stable:canary", "sagemaker:ep:canary"] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn malformed_strings_are_rejected_with_the_expected_form() {
        for s in ["", "lambda:fn", "lambda::alias", "ecs:svc:x", "sagemaker:ep:a:a", "lambda:a:b:c"] {
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
    fn json_form_is_externally_tagged_and_strict() {
        let t: Target = serde_json::from_str(r#"{"lambda":{"function":"f","alias":"a"}}"#).unwrap();
        assert_eq!(t, Target::lambda("f", "a"));
        assert!(serde_json::from_str::<Target>(r#"{"lambda":{"function":"f","alias":"a","x":1}}"#).is_err());
    }
}
