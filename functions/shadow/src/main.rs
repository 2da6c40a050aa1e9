//! The shadow function: a CloudWatch Logs subscription filter on a stable version's log
//! group delivers the request/response lines its handler printed; this asks the
//! candidate's version the same requests (and the stable's again, for the noise floor),
//! compares the answers with what users got, and publishes the counts to CloudWatch.
//! Nobody is served by what it asks, and it never fails a delivery it could read: a
//! retry would only ask the models twice.
//!
//! A replay (decision 0023) hands it the same work another way: the stepper's
//! asynchronous `{"coalmine:replay": …}` event carries a slice of a golden set or of the
//! stable's recent requests, answered and counted the same way.

use coalmine::aws::{model_invoker, CloudWatchSink};
use coalmine::domain::replay::ReplayBatch;
use coalmine::release::shadow::mirror::{replay_batch, shadow_batch, Delivery, Tally};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    coalmine::logging::init();
    let sdk = coalmine::aws::sdk_config().await;
    let invoker = model_invoker(&sdk);
    let sink = CloudWatchSink::from_sdk(&sdk);

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (invoker, sink) = (&invoker, &sink);
        async move {
            if let Some(batch) = ReplayBatch::in_event(&event.payload) {
                let batch = batch.map_err(|e| Diagnostic { error_type: "BadEvent".into(), error_message: e })?;
                let (release, lines) = (batch.feed.release.clone(), batch.lines.len());
                let tally = replay_batch(&batch.feed, batch.lines, invoker, sink).await;
                return Ok(json!({ "lines": lines, "releases": [counts(&release, &tally)] }));
            }
            let delivery = Delivery::parse(&event.payload)
                .map_err(|e| Diagnostic { error_type: e.error_type().into(), error_message: e.to_string() })?;
            let lines = delivery.lines();
            let mut batches = Vec::new();
            for feed in delivery.feeds() {
                let tally = shadow_batch(&feed, &delivery.log_stream, &lines, invoker, sink).await;
                batches.push(counts(&feed.release, &tally));
            }
            Ok::<Value, Diagnostic>(json!({ "lines": lines.len(), "releases": batches }))
        }
    }))
    .await
}

/// What a batch came to, in the invocation's answer (and its log).
fn counts(release: &str, tally: &Tally) -> Value {
    json!({
        "release": release,
        "candidate": {"shadowed": tally.candidate.shadowed, "errors": tally.candidate.errors,
                      "disagreements": tally.candidate.disagreements},
        "stable": {"shadowed": tally.stable.shadowed, "errors": tally.stable.errors,
                   "disagreements": tally.stable.disagreements},
        "skipped": tally.skipped,
        "ignored": tally.ignored,
    })
}
