//! SDK-backed adapters for the ports, one per AWS service, built once per cold start.

mod appconfig;
mod claims;
mod cloudwatch;
mod error;
mod lambda;
mod logs;
mod replay;
mod sagemaker;
mod secrets;
mod sns;
#[cfg(test)]
mod tests;

pub use appconfig::AppConfigCohorts;
pub use claims::DynamoClaims;
pub use cloudwatch::{CloudWatchAlarms, CloudWatchMetrics, CloudWatchSink};
pub use error::aws_error;
pub use lambda::{LambdaAliases, LambdaHandoff, LambdaVersions};
pub use logs::{log_group, LogFeeds};
pub use sagemaker::{SageMakerEndpoints, UpdatingBackoff};
pub use secrets::{Secrets, WebhookSecret};
pub use sns::SnsNotifier;

use crate::config::Config;

/// Each AWS call gives up well inside the functions' timeouts (rollback 120 s, stepper
/// 60 s), so a hung connection fails the invocation with time left to report it, and
/// Lambda (or the state machine) retries, instead of the sandbox being killed silently.
pub const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The SDK configuration both functions use: environment credentials and region, the
/// timeouts above, the SDK's standard retries (3 attempts, jittered backoff).
pub async fn sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await
}

/// A model may take a while to answer; the shadow waits for it, off every user's path.
pub const MODEL_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The shadow function's invoker, with the model's own timeouts: the functions' 5 s per
/// attempt would cut a long generation short and count it as skipped.
pub fn model_invoker(sdk: &aws_config::SdkConfig) -> LambdaVersions {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(MODEL_ATTEMPT_TIMEOUT)
        .operation_timeout(MODEL_ATTEMPT_TIMEOUT * 2)
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    let config = aws_sdk_lambda::config::Builder::from(sdk).timeout_config(timeouts).build();
    LambdaVersions::from_client(aws_sdk_lambda::Client::from_conf(config))
}

/// Every AWS adapter the functions use, from one `SdkConfig`: what `crate::clouds`
/// composes with Azure's.
pub struct AwsAdapters {
    pub lambda: LambdaAliases,
    pub sagemaker: SageMakerEndpoints,
    pub logs: LogFeeds,
    pub notifier: SnsNotifier,
    pub alarms: CloudWatchAlarms,
    pub cloudwatch: CloudWatchMetrics,
    pub secrets: Secrets,
    pub cohorts: AppConfigCohorts,
}

impl AwsAdapters {
    pub fn new(sdk: &aws_config::SdkConfig, config: &Config) -> Self {
        AwsAdapters {
            lambda: LambdaAliases::new(aws_sdk_lambda::Client::new(sdk)),
            sagemaker: SageMakerEndpoints::new(
                aws_sdk_sagemaker::Client::new(sdk),
                UpdatingBackoff::within(config.sagemaker_max_wait),
            ),
            logs: LogFeeds::new(aws_sdk_cloudwatchlogs::Client::new(sdk), config.shadow_function_arn.clone())
                .with_replay(aws_sdk_s3::Client::new(sdk), aws_sdk_lambda::Client::new(sdk)),
            notifier: SnsNotifier::new(aws_sdk_sns::Client::new(sdk), config.topic_arn.clone()),
            alarms: CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(sdk)),
            cloudwatch: CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(sdk)),
            secrets: Secrets::new(aws_sdk_secretsmanager::Client::new(sdk)),
            cohorts: AppConfigCohorts::new(aws_sdk_appconfig::Client::new(sdk), config.cohorts.clone()),
        }
    }
}

/// The stepper's claims on targets, in the stack's table.
pub fn claims(sdk: &aws_config::SdkConfig, table: &str) -> DynamoClaims {
    DynamoClaims::new(aws_sdk_dynamodb::Client::new(sdk), aws_sdk_sfn::Client::new(sdk), table.to_owned())
}
