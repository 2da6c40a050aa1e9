//! The clouds composed: one router and one metric source that send each target to the
//! adapter of its cloud (AWS's in `aws/`, Azure's in `azure/`, peers that know nothing of
//! each other), and the set of adapters the functions and the CLI build once. The one
//! dispatch from a target to its adapters on this side of the ports.

use crate::aws::{
    AppConfigCohorts, AwsAdapters, CloudWatchAlarms, CloudWatchMetrics, LambdaAliases, LogFeeds, SageMakerEndpoints,
    Secrets, SnsNotifier,
};
use crate::azure::{Azure, AzureEndpoints, AzureMonitor, IdentitySource, NoIdentity, SecretIdentity};
use crate::config::Config;
use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use crate::domain::error::{Error, Result};
use crate::domain::metrics::MetricSnapshot;
use crate::domain::replay::{Cursor, ReplayBatch, Slice, Source};
use crate::domain::shadow::Feed;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::{EndpointDeployments, MetricQuery, MetricSource, ShadowFeeds, TrafficRouter};

/// Every adapter the functions use, AWS's and Azure's, from one `SdkConfig`.
pub struct Clouds {
    pub router: CloudRouter,
    pub notifier: SnsNotifier,
    pub alarms: CloudWatchAlarms,
    pub metrics: CloudMetrics,
    pub secrets: Secrets,
}

impl Clouds {
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
        let aws = AwsAdapters::new(sdk, config);
        let azure = Azure::new(identity(&aws.secrets), config.azure_max_wait);
        Clouds {
            router: CloudRouter {
                lambda: aws.lambda,
                sagemaker: aws.sagemaker,
                logs: aws.logs,
                azure: azure.endpoints,
                cohorts: aws.cohorts,
            },
            notifier: aws.notifier,
            alarms: aws.alarms,
            metrics: CloudMetrics { cloudwatch: aws.cloudwatch, azure: azure.monitor },
            secrets: aws.secrets,
        }
    }
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
pub struct CloudRouter {
    pub lambda: LambdaAliases,
    pub sagemaker: SageMakerEndpoints,
    pub logs: LogFeeds,
    pub azure: AzureEndpoints,
    pub cohorts: AppConfigCohorts,
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
impl ShadowFeeds for CloudRouter {
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

    async fn check_replay(&self, source: &Source, feed: &Feed, began_at: u64) -> Result<String> {
        self.logs.check_replay(source, feed, began_at).await
    }

    async fn read_replay(
        &self,
        source: &Source,
        feed: &Feed,
        cursor: &Cursor,
        began_at: u64,
        max: usize,
    ) -> Result<Slice> {
        self.logs.read_replay(source, feed, cursor, began_at, max).await
    }

    async fn dispatch_replay(&self, batches: &[ReplayBatch]) -> Result<()> {
        self.logs.dispatch_replay(batches).await
    }
}

impl TrafficRouter for CloudRouter {
    async fn read(&self, target: &Target) -> Result<Split> {
        match target {
            Target::Lambda(alias) => self.lambda.read(target, alias).await,
            Target::LambdaCohort(aliases) => self.lambda.read_cohort(target, aliases).await,
            Target::Sagemaker(variants) => self.sagemaker.read(target, variants).await,
            Target::Azureml(deployments) => self.azure.read(target, deployments).await,
        }
    }

    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> Result<Split> {
        match target {
            Target::Lambda(alias) => self.lambda.write(target, alias, read, desired).await,
            Target::LambdaCohort(aliases) => self.lambda.write_cohort(target, aliases, read, desired).await,
            Target::Sagemaker(variants) => self.sagemaker.write(target, variants, read, desired).await,
            Target::Azureml(deployments) => self.azure.write(target, deployments, read, desired).await,
        }
    }

    async fn check_canary(&self, target: &Target, canary: &str) -> Result<()> {
        match target {
            Target::Lambda(alias) => self.lambda.check_version(target, alias, canary).await,
            Target::LambdaCohort(aliases) => {
                self.lambda.check_version(target, &aliases.alias_named(&aliases.alias), canary).await
            }
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

/// Cohorts live in AppConfig, whichever cloud a later cohort target is on.
impl crate::ports::CohortPublisher for CloudRouter {
    async fn publish(&self, target: &Target, cohort: &coalmine_router::Cohort) -> Result<()> {
        self.cohorts.publish(target, cohort).await
    }
}

/// Only SageMaker deploys endpoints.
impl EndpointDeployments for CloudRouter {
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
