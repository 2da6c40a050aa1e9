//! Configuration from the function's environment, read once per cold start.

use std::time::Duration;

use crate::domain::error::Error;
use crate::domain::mapping::TargetMapping;

pub const TOPIC_ARN_VAR: &str = "SNS_TOPIC_ARN";
pub const ROLLBACK_TARGETS_VAR: &str = "ROLLBACK_TARGETS";
pub const SAGEMAKER_MAX_WAIT_VAR: &str = "SAGEMAKER_UPDATE_MAX_WAIT_SECONDS";
pub const SHADOW_FUNCTION_ARN_VAR: &str = "SHADOW_FUNCTION_ARN";
const DEFAULT_SAGEMAKER_MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub topic_arn: String,
    pub rollback_targets: TargetMapping,
    /// How long a write waits for a SageMaker endpoint that is `Updating`; keep it well
    /// below the function's timeout so the invocation fails (and is retried) in time.
    pub sagemaker_max_wait: Duration,
    /// The shadow function's ARN: where a Lambda shadow's feed points. Without it,
    /// releases with a shadow are refused at their start.
    pub shadow_function_arn: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let topic_arn = lookup(TOPIC_ARN_VAR).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            Error::Config(format!("{TOPIC_ARN_VAR} is not set: set it to the ARN of the SNS topic to notify"))
        })?;
        if !topic_arn.starts_with("arn:") || topic_arn.split(':').count() != 6 {
            return Err(Error::Config(format!(
                "{TOPIC_ARN_VAR}={topic_arn:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            )));
        }
        let rollback_targets = match lookup(ROLLBACK_TARGETS_VAR) {
            Some(raw) if !raw.trim().is_empty() => TargetMapping::parse(&raw).map_err(|why| {
                Error::Config(format!(
                    "{ROLLBACK_TARGETS_VAR} {why}; expected a JSON object like {{\"alarm-name-or-prefix-*\": [\"lambda:FUNCTION:ALIAS\"]}}"
                ))
            })?,
            _ => TargetMapping::default(),
        };
        let sagemaker_max_wait = match lookup(SAGEMAKER_MAX_WAIT_VAR) {
            Some(raw) => raw.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| {
                Error::Config(format!("{SAGEMAKER_MAX_WAIT_VAR}={raw:?} is not a whole number of seconds"))
            })?,
            None => DEFAULT_SAGEMAKER_MAX_WAIT,
        };
        let shadow_function_arn = lookup(SHADOW_FUNCTION_ARN_VAR).filter(|v| !v.trim().is_empty());
        if let Some(arn) = &shadow_function_arn {
            if !arn.starts_with("arn:") || !arn.contains(":function:") {
                return Err(Error::Config(format!(
                    "{SHADOW_FUNCTION_ARN_VAR}={arn:?} is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
                )));
            }
        }
        Ok(Config { topic_arn, rollback_targets, sagemaker_max_wait, shadow_function_arn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:coalmine";

    #[test]
    fn only_the_topic_is_required() {
        let config = Config::from_lookup(env(&[(TOPIC_ARN_VAR, TOPIC)])).unwrap();
        assert_eq!(config.topic_arn, TOPIC);
        assert_eq!(config.sagemaker_max_wait, DEFAULT_SAGEMAKER_MAX_WAIT);
        assert_eq!(config.rollback_targets.lookup("anything"), None);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], TOPIC_ARN_VAR),
            (&[(TOPIC_ARN_VAR, "coalmine")], TOPIC_ARN_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (ROLLBACK_TARGETS_VAR, "{")], ROLLBACK_TARGETS_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (ROLLBACK_TARGETS_VAR, r#"{"a": "lambda:f:a"}"#)], ROLLBACK_TARGETS_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (ROLLBACK_TARGETS_VAR, r#"{"a": ["lambda:f"]}"#)], ROLLBACK_TARGETS_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (SAGEMAKER_MAX_WAIT_VAR, "soon")], SAGEMAKER_MAX_WAIT_VAR),
        ];
        for (vars, named) in cases {
            let err = Config::from_lookup(env(vars)).unwrap_err();
            assert!(matches!(err, Error::Config(_)));
            assert!(err.to_string().contains(named), "{err} should name {named}");
        }
    }
}
