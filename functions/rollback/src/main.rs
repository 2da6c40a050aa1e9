//! The rollback function: a CloudWatch alarm in ALARM (via EventBridge, the alarm's
//! Lambda action or SNS), or an Azure Monitor alert handed on by the webhook, zeroes the
//! canary traffic of every target it guards. It is also the dead-man's switch: a release
//! execution that ended with its release still in flight has what it moved taken back.
//! The same binary is the alert webhook behind the stack's function URL: a function
//! URL's request is checked and handed to the rollback function, never acted on here.

use coalmine::aws::{LambdaHandoff, WebhookSecret};
use coalmine::clouds::Clouds;
use coalmine::release::core::StepDeps;
use coalmine::release::execution_ended;
use coalmine::release::watchdog::ExecutionEnded;
use coalmine::rollback::webhook::{self, is_function_url_request};
use coalmine::rollback::{handle_payload, RollbackDeps};
use coalmine::Config;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    coalmine::logging::init();
    let config = Config::from_env()?;
    let sdk = coalmine::aws::sdk_config().await;
    let aws = Clouds::new(&sdk, &config);
    let deps = RollbackDeps::new(&aws.router, &aws.notifier, &aws.alarms, &config.rollback_targets);
    let release_deps = StepDeps::new(&aws.router, &aws.notifier, &aws.alarms, &aws.metrics);
    let tokens = WebhookSecret::new(aws.secrets.clone(), config.webhook_secret.clone());
    let handoff = LambdaHandoff::new(aws_sdk_lambda::Client::new(&sdk), config.handoff_function.clone());

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (deps, release_deps, tokens, handoff) = (&deps, &release_deps, &tokens, &handoff);
        async move {
            if is_function_url_request(&event.payload) {
                return Ok(webhook::receive(&event.payload, tokens, handoff).await.into_response());
            }
            let handled = if ExecutionEnded::is_status_change(&event.payload) {
                execution_ended(&event.payload, release_deps).await
            } else {
                handle_payload(&event.payload, deps).await
            };
            handled.map_err(|e| Diagnostic { error_type: e.error_type().into(), error_message: e.to_string() })
        }
    }))
    .await
}
