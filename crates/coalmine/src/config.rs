//! Configuration from the function's environment, read once per cold start.

use std::time::Duration;

use crate::domain::error::Error;
use crate::domain::mapping::TargetMapping;

pub const TOPIC_ARN_VAR: &str = "SNS_TOPIC_ARN";
pub const ROLLBACK_TARGETS_VAR: &str = "ROLLBACK_TARGETS";
pub const SAGEMAKER_MAX_WAIT_VAR: &str = "SAGEMAKER_UPDATE_MAX_WAIT_SECONDS";
pub const SHADOW_FUNCTION_ARN_VAR: &str = "SHADOW_FUNCTION_ARN";
pub const AZURE_CREDENTIALS_SECRET_VAR: &str = "AZURE_CREDENTIALS_SECRET_ARN";
pub const AZURE_MAX_WAIT_VAR: &str = "AZURE_UPDATE_MAX_WAIT_SECONDS";
pub const WEBHOOK_SECRET_VAR: &str = "ALERT_WEBHOOK_SECRET_ARN";
pub const HANDOFF_VAR: &str = "ROLLBACK_FUNCTION_ARN";
pub const CLAIMS_TABLE_VAR: &str = "CLAIMS_TABLE";
pub const COHORTS_APPLICATION_VAR: &str = "COHORTS_APPLICATION";
pub const COHORTS_ENVIRONMENT_VAR: &str = "COHORTS_ENVIRONMENT";
pub const COHORTS_STRATEGY_VAR: &str = "COHORTS_DEPLOYMENT_STRATEGY";
const DEFAULT_SAGEMAKER_MAX_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_AZURE_MAX_WAIT: Duration = Duration::from_secs(60);

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
    /// The Secrets Manager secret holding the Azure service principal (or federated
    /// token) for Azure ML targets. Without it, Azure targets are refused.
    pub azure_credentials_secret: Option<String>,
    /// How long an Azure call waits for an endpoint mid-update, its own operation, or
    /// throttling to pass; below the function's timeout, like `sagemaker_max_wait`.
    pub azure_max_wait: Duration,
    /// The secret holding the token an Azure Monitor alert's webhook presents to the
    /// function URL. Without it, the URL refuses every request.
    pub webhook_secret: Option<String>,
    /// Where the webhook hands authenticated alerts: the rollback function.
    pub handoff_function: Option<String>,
    /// The DynamoDB table in which a release claims its target (the stepper's).
    pub claims_table: Option<String>,
    /// Where the stepper publishes a cohort release's share. Without it, cohort releases
    /// are refused before anything moves.
    pub cohorts: Option<CohortStore>,
}

/// The AppConfig application, environment and deployment strategy (ids) that carry
/// cohorts to the routers (decision 0020).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CohortStore {
    pub application: String,
    pub environment: String,
    pub strategy: String,
}

/// All three AppConfig ids, or none.
fn cohort_store(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<CohortStore>, Error> {
    let vars = [COHORTS_APPLICATION_VAR, COHORTS_ENVIRONMENT_VAR, COHORTS_STRATEGY_VAR];
    let values: Vec<Option<String>> =
        vars.iter().map(|var| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())).collect();
    match values.as_slice() {
        [Some(application), Some(environment), Some(strategy)] => Ok(Some(CohortStore {
            application: application.clone(),
            environment: environment.clone(),
            strategy: strategy.clone(),
        })),
        [None, None, None] => Ok(None),
        _ => {
            let missing: Vec<&str> = vars.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
            Err(Error::Config(format!(
                "{} unset while the other cohort variables are set: set all three (the stack's AppConfig \
                 application, environment and deployment strategy ids) or none",
                missing.join(", ")
            )))
        }
    }
}

fn seconds(lookup: &impl Fn(&str) -> Option<String>, var: &str, default: Duration) -> Result<Duration, Error> {
    match lookup(var) {
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| Error::Config(format!("{var}={raw:?} is not a whole number of seconds"))),
        None => Ok(default),
    }
}

/// A Secrets Manager secret, by ARN or by name (GetSecretValue takes either; CloudFormation's
/// `Ref` of a secret is its ARN, MiniStack's its name).
fn secret_id(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Result<Option<String>, Error> {
    let value = lookup(var).filter(|v| !v.trim().is_empty());
    match &value {
        Some(id) if id.starts_with("arn:") && !id.contains(":secretsmanager:") => Err(Error::Config(format!(
            "{var}={id:?} is not a Secrets Manager secret (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME, or its name)"
        ))),
        Some(id) if id.len() > 2048 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c)) => {
            Err(Error::Config(format!("{var}={id:?} is not a Secrets Manager secret's ARN or name")))
        }
        _ => Ok(value),
    }
}

fn arn(lookup: &impl Fn(&str) -> Option<String>, var: &str, kind: &str, shape: &str) -> Result<Option<String>, Error> {
    let value = lookup(var).filter(|v| !v.trim().is_empty());
    match &value {
        Some(arn) if !arn.starts_with("arn:") || !arn.contains(kind) => {
            Err(Error::Config(format!("{var}={arn:?} is not a {shape}")))
        }
        _ => Ok(value),
    }
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
        Ok(Config {
            topic_arn,
            rollback_targets,
            sagemaker_max_wait: seconds(&lookup, SAGEMAKER_MAX_WAIT_VAR, DEFAULT_SAGEMAKER_MAX_WAIT)?,
            shadow_function_arn: arn(
                &lookup,
                SHADOW_FUNCTION_ARN_VAR,
                ":function:",
                "Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)",
            )?,
            azure_credentials_secret: secret_id(&lookup, AZURE_CREDENTIALS_SECRET_VAR)?,
            azure_max_wait: seconds(&lookup, AZURE_MAX_WAIT_VAR, DEFAULT_AZURE_MAX_WAIT)?,
            webhook_secret: secret_id(&lookup, WEBHOOK_SECRET_VAR)?,
            handoff_function: arn(
                &lookup,
                HANDOFF_VAR,
                ":function:",
                "Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)",
            )?,
            claims_table: table_name(&lookup, CLAIMS_TABLE_VAR)?,
            cohorts: cohort_store(&lookup)?,
        })
    }

    /// The claims table, which the stepper cannot tick without: one release per target
    /// rests on it.
    pub fn require_claims_table(&self) -> Result<&str, Error> {
        self.claims_table.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "{CLAIMS_TABLE_VAR} is not set: the stepper claims each release's target in the stack's DynamoDB \
                 table (ReleaseClaims); deploy the stack's template, which sets it"
            ))
        })
    }
}

/// A DynamoDB table's name (3 to 255 of `[A-Za-z0-9_.-]`), or its ARN.
fn table_name(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Result<Option<String>, Error> {
    let value = lookup(var).filter(|v| !v.trim().is_empty());
    match &value {
        Some(arn) if arn.starts_with("arn:") && !arn.contains(":dynamodb:") => {
            Err(Error::Config(format!("{var}={arn:?} is not a DynamoDB table")))
        }
        Some(name)
            if !name.starts_with("arn:")
                && (!(3..=255).contains(&name.len())
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))) =>
        {
            Err(Error::Config(format!("{var}={name:?} is not a DynamoDB table's name or ARN")))
        }
        _ => Ok(value),
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
        assert_eq!(config.claims_table, None);
        assert_eq!(config.sagemaker_max_wait, DEFAULT_SAGEMAKER_MAX_WAIT);
        assert_eq!(config.rollback_targets.lookup("anything"), None);
        assert_eq!((&config.azure_credentials_secret, &config.webhook_secret), (&None, &None));
        assert_eq!(config.azure_max_wait, DEFAULT_AZURE_MAX_WAIT);
        let by_name =
            Config::from_lookup(env(&[(TOPIC_ARN_VAR, TOPIC), (WEBHOOK_SECRET_VAR, "coalmine/webhook-token")]));
        assert_eq!(by_name.unwrap().webhook_secret.as_deref(), Some("coalmine/webhook-token"), "a name will do");
        let err = config.require_claims_table().unwrap_err().to_string();
        assert!(err.contains(CLAIMS_TABLE_VAR) && err.contains("deploy the stack's template"), "{err}");
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
            (&[(TOPIC_ARN_VAR, TOPIC), (AZURE_MAX_WAIT_VAR, "1m")], AZURE_MAX_WAIT_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (AZURE_CREDENTIALS_SECRET_VAR, "coalmine azure")], AZURE_CREDENTIALS_SECRET_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (WEBHOOK_SECRET_VAR, "arn:aws:sns:us-east-1:1:t")], WEBHOOK_SECRET_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (CLAIMS_TABLE_VAR, "claims table")], CLAIMS_TABLE_VAR),
            (&[(TOPIC_ARN_VAR, TOPIC), (CLAIMS_TABLE_VAR, "arn:aws:sns:us-east-1:1:t")], CLAIMS_TABLE_VAR),
        ];
        for (vars, named) in cases {
            let err = Config::from_lookup(env(vars)).unwrap_err();
            assert!(matches!(err, Error::Config(_)));
            assert!(err.to_string().contains(named), "{err} should name {named}");
        }
    }
}
