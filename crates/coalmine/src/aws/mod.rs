//! SDK-backed adapters for the ports, one per AWS service, built once per cold start.

mod claims;
mod cloudwatch;
mod error;
mod lambda;
mod logs;
mod sagemaker;
mod secrets;
mod sns;
#[cfg(test)]
mod tests;

pub use claims::DynamoClaims;
pub use cloudwatch::{CloudWatchAlarms, CloudWatchMetrics, CloudWatchSink};
pub use error::aws_error;
pub use lambda::{LambdaAliases, LambdaHandoff, LambdaVersions};
pub use logs::{log_group, LogFeeds};
pub use sagemaker::{SageMakerEndpoints, UpdatingBackoff};
pub use secrets::{Secrets, WebhookSecret};
pub use sns::SnsNotifier;

use crate::azure::{Azure, AzureEndpoints, AzureMonitor, IdentitySource, NoIdentity, SecretIdentity};
use crate::config::Config;
use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use crate::domain::error::{Error, Result};
use crate::domain::metrics::MetricSnapshot;
use crate::domain::shadow::Feed;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::{EndpointDeployments, MetricQuery, MetricSource, ShadowFeeds, TrafficRouter};

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
    pub metrics: CloudMetrics,
    pub secrets: Secrets,
}

impl Aws {
    /// As the functions build them: Azure signs in with the stack's secret, if any.
    pub fn new(sdk: &aws_config::SdkConfig, config: &Config) -> Self {
        Self::build(sdk, config, |secrets| functions_identity(secrets, config))
    }

    /// With Azure signed in as `identity` (the CLI: whoever is logged in).
    pub fn with_azure_identity(
        sdk: &aws_config::SdkConfig,
        config: &Config,
        identity: Box<dyn IdentitySource>,
    ) -> Self {
        Self::build(sdk, config, |_| identity)
    }

    fn build(
        sdk: &aws_config::SdkConfig,
        config: &Config,
        identity: impl FnOnce(&Secrets) -> Box<dyn IdentitySource>,
    ) -> Self {
        let secrets = Secrets::new(aws_sdk_secretsmanager::Client::new(sdk));
        let azure = Azure::new(identity(&secrets), config.azure_max_wait);
        Aws {
            router: AwsRouter {
                lambda: LambdaAliases::new(aws_sdk_lambda::Client::new(sdk)),
                sagemaker: SageMakerEndpoints::new(
                    aws_sdk_sagemaker::Client::new(sdk),
                    UpdatingBackoff::within(config.sagemaker_max_wait),
                ),
                logs: LogFeeds::new(aws_sdk_cloudwatchlogs::Client::new(sdk), config.shadow_function_arn.clone()),
                azure: azure.endpoints,
            },
            notifier: SnsNotifier::new(aws_sdk_sns::Client::new(sdk), config.topic_arn.clone()),
            alarms: CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(sdk)),
            metrics: CloudMetrics {
                cloudwatch: CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(sdk)),
                azure: azure.monitor,
            },
            secrets,
        }
    }
}

/// The stepper's claims on targets, in the stack's table.
pub fn claims(sdk: &aws_config::SdkConfig, table: &str) -> DynamoClaims {
    DynamoClaims::new(aws_sdk_dynamodb::Client::new(sdk), aws_sdk_sfn::Client::new(sdk), table.to_owned())
}

/// The functions sign in to Azure with the service principal in the stack's secret.
fn functions_identity(secrets: &Secrets, config: &Config) -> Box<dyn IdentitySource> {
    let Some(secret) = config.azure_credentials_secret.clone() else {
        return Box::new(NoIdentity {
            advice: "this stack was deployed without AzureCredentialsSecretArn; deploy it again naming a Secrets \
                     Manager secret that holds the service principal (docs/azure-ml.md)",
        });
    };
    let secrets = secrets.clone();
    let name = secret.clone();
    Box::new(SecretIdentity {
        name,
        read: Box::new(move || {
            let (secrets, secret) = (secrets.clone(), secret.clone());
            Box::pin(async move { secrets.text(&secret).await })
        }),
    })
}

/// Sends each target to the adapter of its service.
pub struct AwsRouter {
    pub lambda: LambdaAliases,
    pub sagemaker: SageMakerEndpoints,
    pub logs: LogFeeds,
    pub azure: AzureEndpoints,
}

/// CloudWatch for AWS targets, Azure Monitor for Azure ML endpoints.
pub struct CloudMetrics {
    pub cloudwatch: CloudWatchMetrics,
    pub azure: AzureMonitor,
}

impl MetricSource for CloudMetrics {
    async fn fetch(&self, query: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        match query.target {
            Target::Azureml(deployments) => self.azure.fetch(query, deployments).await,
            _ => self.cloudwatch.fetch(query).await,
        }
    }

    async fn requests_per_minute(&self, target: &Target, id: &str, start: u64, end: u64) -> Result<Vec<(u64, f64)>> {
        match target {
            Target::Azureml(deployments) => self.azure.requests_per_minute(target, deployments, id, start, end).await,
            _ => self.cloudwatch.requests_per_minute(target, id, start, end).await,
        }
    }
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
            Target::Azureml(deployments) => self.azure.read(target, deployments).await,
        }
    }

    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> Result<Split> {
        match target {
            Target::Lambda(alias) => self.lambda.write(target, alias, read, desired).await,
            Target::Sagemaker(variants) => self.sagemaker.write(target, variants, read, desired).await,
            Target::Azureml(deployments) => self.azure.write(target, deployments, read, desired).await,
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
            // Both must exist: a misspelt stable would take traffic nowhere.
            Target::Azureml(deployments) => {
                if let Some(stable) = &deployments.stable_deployment {
                    self.azure.check_deployment(target, deployments, stable).await?;
                }
                self.azure.check_deployment(target, deployments, canary).await
            }
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
