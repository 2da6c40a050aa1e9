//! SDK-backed adapters for the ports, one per AWS service, built once per cold start.

mod cloudwatch;
mod lambda;
mod sagemaker;
mod sns;
#[cfg(test)]
mod tests;

pub use cloudwatch::{CloudWatchAlarms, CloudWatchMetrics};
pub use lambda::LambdaAliases;
pub use sagemaker::{SageMakerEndpoints, UpdatingBackoff};
pub use sns::SnsNotifier;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::config::Config;
use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::ports::TrafficRouter;

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

/// An SDK failure that survived the SDK's own retries, as one line a person can act on:
/// the operation, the service's error code and message, the HTTP status and the request
/// id (what AWS support asks for), or what kept the request from an answer. Throttling,
/// 5xx, timeouts and connection failures may pass on a later invocation; other service
/// errors will not. A denied call is its own kind: the name is wrong or the stack's
/// parameters do not cover the resource.
pub(crate) fn aws_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let Failure { detail, retryable, denied } = failure(&err);
    if denied {
        Error::AccessDenied { operation, detail }
    } else {
        Error::Aws { operation, detail, retryable }
    }
}

/// `operation: Code: message (HTTP status, request id ...)`: the detail of a service
/// error an adapter maps to one of the library's own kinds (not found, conflict, ...).
pub(crate) fn call_detail<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    format!("{operation}: {}", failure(err).detail)
}

struct Failure {
    detail: String,
    retryable: bool,
    denied: bool,
}

fn failure<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (detail, retryable, denied) = match err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let status = raw.status().as_u16();
            let code = service.err().code().unwrap_or("UnknownError");
            let message = service.err().message().unwrap_or("no message");
            let request_id = service
                .err()
                .meta()
                .extra("aws_request_id")
                .or_else(|| ["x-amzn-requestid", "x-amz-request-id"].iter().find_map(|h| raw.headers().get(*h)))
                .unwrap_or("none");
            let detail = format!("{code}: {} (HTTP {status}, request id {request_id})", one_line(message));
            let retryable = status >= 500 || status == 429 || is_throttling_code(code);
            (detail, retryable, is_denied_code(code))
        }
        SdkError::TimeoutError(_) => ("no answer before the SDK's timeout".to_owned(), true, false),
        SdkError::DispatchFailure(_) => (format!("could not reach the service: {}", error_chain(err)), true, false),
        SdkError::ResponseError(response) => (
            format!("unreadable response (HTTP {}): {}", response.raw().status().as_u16(), error_chain(err)),
            true,
            false,
        ),
        SdkError::ConstructionFailure(_) => {
            (format!("the request could not be built: {}", error_chain(err)), false, false)
        }
        _ => (error_chain(err), true, false),
    };
    Failure { detail, retryable, denied }
}

/// An error and its sources on one line, each said once.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_denied_code(code: &str) -> bool {
    matches!(code, "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" | "AuthorizationError")
}

fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
    )
}

/// The service error's code and message, when the call reached the service.
pub(crate) fn service_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<(&str, &str)> {
    err.as_service_error().map(|e| (e.code().unwrap_or_default(), e.message().unwrap_or_default()))
}
