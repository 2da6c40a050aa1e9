//! The rollback function: a CloudWatch alarm in ALARM (via EventBridge or the alarm's
//! Lambda action) zeroes the canary traffic of every target it guards.

use coalmine::aws::Aws;
use coalmine::rollback::{handle_payload, RollbackDeps};
use coalmine::Config;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    coalmine::logging::init();
    let config = Config::from_env()?;
    let sdk = coalmine::aws::sdk_config().await;
    let aws = Aws::new(&sdk, &config);
    let deps = RollbackDeps {
        router: &aws.router,
        notifier: &aws.notifier,
        alarms: &aws.alarms,
        mapping: &config.rollback_targets,
    };

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let deps = &deps;
        async move {
            handle_payload(&event.payload, deps)
                .await
                .map_err(|e| Diagnostic { error_type: e.error_type().into(), error_message: e.to_string() })
        }
    }))
    .await
}
