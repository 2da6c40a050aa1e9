//! SDK-backed adapters for the ports, one per AWS service, built once per cold start.

mod cloudwatch;
mod error;
mod lambda;
mod logs;
mod sagemaker;
mod sns;
#[cfg(test)]
mod tests;

pub use cloudwatch::{CloudWatchAlarms, CloudWatchMetrics, CloudWatchSink};
pub use error::aws_error;
pub use lambda::{LambdaAliases, LambdaVersions};
pub use logs::{log_group, LogFeeds};
pub use sagemaker::{SageMakerEndpoints, UpdatingBackoff};
pub use sns::SnsNotifier;

use crate::config::Config;
use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use crate::domain::error::{Error, Result};
use crate::domain::shadow::Feed;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::{EndpointDeployments, ShadowFeeds, TrafficRouter};

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

/// Every adapter the functions use, from one `SdkConfig`.
pub struct Aws {
    pub router: AwsRouter,
    pub notifier: SnsNotifier,
    pub alarms: CloudWatchAlarms,
    pub metrics: CloudWatchMetrics,
}

impl Aws {
    pub fn new(sdk: &aws_config::SdkConfig, config: &Config) -> Self {
        Aws {
            router: AwsRouter {
                lambda: LambdaAliases::new(aws_sdk_lambda::Client::new(sdk)),
                sagemaker: SageMakerEndpoints::new(
                    aws_sdk_sagemaker::Client::new(sdk),
                    UpdatingBackoff::within(config.sagemaker_max_wait),
                ),
                logs: LogFeeds::new(aws_sdk_cloudwatchlogs::Client::new(sdk), config.shadow_function_arn.clone()),
            },
            notifier: SnsNotifier::new(aws_sdk_sns::Client::new(sdk), config.topic_arn.clone()),
            alarms: CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(sdk)),
            metrics: CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(sdk)),
        }
    }
}

/// Sends each target to the adapter of its service.
pub struct AwsRouter {
    pub lambda: LambdaAliases,
    pub sagemaker: SageMakerEndpoints,
    pub logs: LogFeeds,
}

/// A Lambda shadow's feed lives beside the alias it shadows.
impl ShadowFeeds for AwsRouter {
    async fn check_feed(&self, feed: &Feed) -> Result<String> {
        self.logs.check_feed(feed).await
    }

    async fn open_feed(&self, feed: &Feed) -> Result<()> {
        self.logs.open_feed(feed).await
    }

    async fn close_feed(&self, feed: &Feed) -> Result<()> {
        self.logs.close_feed(feed).await
    }

    async fn examples(&self, feed: &Feed, since_epoch: u64) -> Result<Vec<crate::domain::shadow::Example>> {
        self.logs.examples(feed, since_epoch).await
    }
}

impl TrafficRouter for AwsRouter {
    async fn read(&self, target: &Target) -> Result<Split> {
        match target {
            Target::Lambda(alias) => self.lambda.read(target, alias).await,
            Target::Sagemaker(variants) => self.sagemaker.read(target, variants).await,
        }
    }

    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> Result<Split> {
        match target {
            Target::Lambda(alias) => self.lambda.write(target, alias, read, desired).await,
            Target::Sagemaker(variants) => self.sagemaker.write(target, variants, read, desired).await,
        }
    }

    async fn check_canary(&self, target: &Target, canary: &str) -> Result<()> {
        match target {
            Target::Lambda(alias) => self.lambda.check_version(target, alias, canary).await,
            // Reading the split already requires both variants to exist.
            Target::Sagemaker(variants) => self.sagemaker.read(target, variants).await.map(drop).map_err(|e| match e {
                Error::NotFound { detail, .. } => Error::InvalidRelease(format!("target: {detail}")),
                other => other,
            }),
        }
    }
}

/// Only SageMaker deploys endpoints.
impl EndpointDeployments for AwsRouter {
    async fn endpoint_state(&self, endpoint: &str) -> Result<EndpointState> {
        self.sagemaker.endpoint_state(endpoint).await
    }

    async fn config_variants(&self, config: &str) -> Result<ConfigVariants> {
        self.sagemaker.config_variants(config).await
    }

    async fn deploy(&self, endpoint: &str, config: &str, plan: Option<&DeploymentPlan>) -> Result<()> {
        self.sagemaker.deploy(endpoint, config, plan).await
    }

    async fn stamp_endpoint(&self, endpoint: &str, stamp: &Stamp) -> Result<()> {
        self.sagemaker.stamp_endpoint(endpoint, stamp).await
    }

    async fn mark_tripwire(&self, endpoint: &str, alarm: &str) -> Result<()> {
        self.sagemaker.mark_tripwire(endpoint, alarm).await
    }
}
