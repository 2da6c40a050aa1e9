//! The stepper function: one tick of a release's state machine. Until the stepper lands
//! (the stepper issue), it refuses every tick without touching traffic, so a state
//! machine wired to it fails safe.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    coalmine::logging::init();
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async {
        Err::<Value, _>(Diagnostic {
            error_type: "NonRetryable".into(),
            error_message: "the stepper is not implemented yet; no traffic was changed".into(),
        })
    }))
    .await
}
