//! Configuration from the function's environment, read once per cold start.

use std::time::Duration;

use serde_json::Value;

use crate::domain::error::Error;
use crate::domain::target::Target;

pub const TOPIC_ARN_VAR: &str = "SNS_TOPIC_ARN";
pub const ROLLBACK_TARGETS_VAR: &str = "ROLLBACK_TARGETS";
pub const SAGEMAKER_MAX_WAIT_VAR: &str = "SAGEMAKER_UPDATE_MAX_WAIT_SECONDS";
const DEFAULT_SAGEMAKER_MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub topic_arn: String,
    pub rollback_targets: TargetMapping,
    /// How long a write waits for a SageMaker endpoint that is `Updating`; keep it well
    /// below the function's timeout so the invocation fails (and is retried) in time.
    pub sagemaker_max_wait: Duration,
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
            Some(raw) if !raw.trim().is_empty() => TargetMapping::parse(&raw)?,
            _ => TargetMapping::default(),
        };
        let sagemaker_max_wait = match lookup(SAGEMAKER_MAX_WAIT_VAR) {
            Some(raw) => raw.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| {
                Error::Config(format!("{SAGEMAKER_MAX_WAIT_VAR}={raw:?} is not a whole number of seconds"))
            })?,
            None => DEFAULT_SAGEMAKER_MAX_WAIT,
        };
        Ok(Config { topic_arn, rollback_targets, sagemaker_max_wait })
    }
}

/// `ROLLBACK_TARGETS`: a JSON object from alarm name (or prefix ending in `*`) to a list
/// of targets, e.g. `{"ai-handler-canary-*": ["lambda:ai-handler:production"]}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetMapping {
    entries: Vec<(String, bool, Vec<Target>)>,
}

impl TargetMapping {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let bad = |why: String| {
            Error::Config(format!("{ROLLBACK_TARGETS_VAR} {why}; expected a JSON object like {{\"alarm-name-or-prefix-*\": [\"lambda:FUNCTION:ALIAS\"]}}"))
        };
        let value: Value = serde_json::from_str(raw).map_err(|e| bad(format!("is not valid JSON ({e})")))?;
        let Value::Object(object) = value else {
            return Err(bad("is not a JSON object".into()));
        };
        let mut entries = Vec::with_capacity(object.len());
        for (key, targets) in object {
            let Value::Array(targets) = targets else {
                return Err(bad(format!("entry {key:?} is not a list of targets")));
            };
            let targets = targets
                .iter()
                .map(|t| match t.as_str() {
                    Some(s) => s.parse::<Target>().map_err(|e| bad(format!("entry {key:?}: {e}"))),
                    None => Err(bad(format!("entry {key:?} holds {t}, not a target string"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (name, is_prefix) = match key.strip_suffix('*') {
                Some(prefix) => (prefix.to_owned(), true),
                None => (key, false),
            };
            entries.push((name, is_prefix, targets));
        }
        Ok(TargetMapping { entries })
    }

    /// The targets of an exact match, else of the longest matching prefix.
    pub fn lookup(&self, alarm_name: &str) -> Option<&[Target]> {
        self.entries
            .iter()
            .filter(
                |(name, is_prefix, _)| {
                    if *is_prefix {
                        alarm_name.starts_with(name.as_str())
                    } else {
                        alarm_name == name
                    }
                },
            )
            .max_by_key(|(name, is_prefix, _)| (!is_prefix, name.len()))
            .map(|(_, _, targets)| targets.as_slice())
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

    #[test]
    fn exact_names_beat_prefixes_and_longer_prefixes_beat_shorter() {
        let mapping = TargetMapping::parse(
            r#"{"ai-*": ["lambda:a:live"], "ai-handler-*": ["lambda:b:live"], "ai-handler-p95": ["lambda:c:live"]}"#,
        )
        .unwrap();
        assert_eq!(mapping.lookup("ai-handler-p95"), Some(&[Target::lambda("c", "live")][..]));
        assert_eq!(mapping.lookup("ai-handler-errors"), Some(&[Target::lambda("b", "live")][..]));
        assert_eq!(mapping.lookup("ai-model"), Some(&[Target::lambda("a", "live")][..]));
        assert_eq!(mapping.lookup("other"), None);
    }
}
