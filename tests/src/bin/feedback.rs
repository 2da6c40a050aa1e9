//! A team's feedback endpoint, as a Lambda function apart from the model and its router:
//! a thumbs-up or -down on an answer given earlier, to `{"unit", "answered_at",
//! "thumbs_down"}`. It looks up which version served that unit at that time in the
//! routers' served log and publishes the feedback with that version, by unit, through
//! `coalmine-emf`, as a real one would (its line is also the answer, since the local AWS
//! does not turn log lines into metrics).
//!
//! Environment: `SERVED_TABLE` (the stack's output `ServedTableName`), `MODEL_FUNCTION`,
//! `PRIMARY_ALIAS` (default `live`).

use coalmine_emf::Metrics;
use coalmine_router::served::ServedLog;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = |name: &str| std::env::var(name).map_err(|_| Error::from(format!("{name} is not set")));
    let (table, function) = (env("SERVED_TABLE")?, env("MODEL_FUNCTION")?);
    let alias = std::env::var("PRIMARY_ALIAS").unwrap_or_else(|_| "live".to_owned());
    let profile = coalmine_router::profile_name(&function, &alias);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let log = ServedLog::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (log, profile, function) = (&log, &profile, &function);
        async move {
            let unit = event.payload["unit"].as_str().unwrap_or_default();
            let answered_at = event.payload["answered_at"].as_u64().unwrap_or_default();
            let thumbs_down = event.payload["thumbs_down"].as_bool().unwrap_or_default();
            let Some(served) = log.version_at(profile, unit, answered_at).await.map_err(Error::from)? else {
                return Ok::<Value, Error>(
                    json!({"counted": false, "why": format!("no version served {unit} by then")}),
                );
            };
            let metrics = Metrics::for_function("AIService", function, &served.version)
                .by_unit(&served.assignment, served.replicate)
                .feedback(thumbs_down);
            metrics.emit();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            Ok(json!({"counted": true, "version": served.version, "line": metrics.line(now)}))
        }
    }))
    .await
}
