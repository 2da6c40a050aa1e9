//! The stepper function: one tick of a release, invoked by the state machine. Its output
//! (the release plus `progress`) is the next tick's input; `progress.wait_seconds` is how
//! long the state machine waits before the next tick.

use std::time::{SystemTime, UNIX_EPOCH};

use coalmine::clouds::Clouds;
use coalmine::release::core::StepDeps;
use coalmine::release::tick_payload;
use coalmine::Config;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    coalmine::logging::init();
    let config = Config::from_env()?;
    let sdk = coalmine::aws::sdk_config().await;
    let aws = Clouds::new(&sdk, &config);
    let claims = coalmine::aws::claims(&sdk, config.require_claims_table()?);
    let deps = StepDeps::new(&aws.router, &aws.notifier, &aws.alarms, &aws.metrics);

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (deps, claims) = (&deps, &claims);
        async move {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
            tick_payload(&event.payload, deps, claims, now)
                .await
                .map_err(|e| Diagnostic { error_type: e.error_type().into(), error_message: e.to_string() })
        }
    }))
    .await
}
