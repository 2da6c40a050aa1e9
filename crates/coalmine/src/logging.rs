//! JSON log lines, one per decision, as CloudWatch Logs and Logs Insights read them.

/// Installs the JSON subscriber. `RUST_LOG` filters (default `info`); Lambda's own
/// `AWS_LAMBDA_LOG_LEVEL` is honoured when set by the function's logging config.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .init();
}
