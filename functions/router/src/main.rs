//! The cohort front function (decision 0020): HTTP clients call its URL (or an
//! Application Load Balancer's Lambda target) with the unit in `x-coalmine-unit` and its
//! attributes in `x-coalmine-attr-NAME` headers; it reads the cohort the stepper published
//! for `MODEL_FUNCTION`'s primary alias, invokes the alias the unit is routed to with the
//! request's JSON body, and answers with what the model answered, naming the version that
//! served. A team that cannot add the router library to its callers deploys one per model
//! (`infra/router.yaml`).
//!
//! Environment: `MODEL_FUNCTION`, `PRIMARY_ALIAS` (default `live`), `COHORTS_APPLICATION`,
//! `COHORTS_ENVIRONMENT` (the stack's outputs `CohortApplicationId`, `CohortEnvironmentId`),
//! `POLL_SECONDS` (default 15, AppConfig's least), and `SERVED_TABLE` (the stack's output
//! `ServedTableName`: where it records which version served each unit, for late feedback;
//! unset or empty records nothing).

use std::time::Duration;

use coalmine_router::aws::{front, AppConfigSource, Router, MIN_POLL};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

fn required(name: &str) -> Result<String, lambda_runtime::Error> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{name} is not set: deploy the router with infra/router.yaml, which sets it").into())
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().without_time().with_target(false).init();
    let function = required("MODEL_FUNCTION")?;
    let alias = std::env::var("PRIMARY_ALIAS").unwrap_or_else(|_| "live".to_owned());
    let poll = match std::env::var("POLL_SECONDS") {
        Ok(raw) => Duration::from_secs(raw.trim().parse().map_err(|_| format!("POLL_SECONDS={raw:?} is not seconds"))?),
        Err(_) => MIN_POLL,
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let source = AppConfigSource::new(
        aws_sdk_appconfigdata::Client::new(&sdk),
        required("COHORTS_APPLICATION")?,
        required("COHORTS_ENVIRONMENT")?,
        coalmine_router::profile_name(&function, &alias),
    )
    .poll_every(poll);
    let profile = coalmine_router::profile_name(&function, &alias);
    let mut router = Router::new(source, alias);
    if let Some(table) = std::env::var("SERVED_TABLE").ok().filter(|t| !t.trim().is_empty()) {
        let log = coalmine_router::served::ServedLog::new(aws_sdk_dynamodb::Client::new(&sdk), table);
        router = router.recording_to(log, profile);
    }
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (router, lambda, function) = (&router, &lambda, &function);
        async move { Ok::<Value, Diagnostic>(front(router, lambda, function, &event.payload).await) }
    }))
    .await
}
