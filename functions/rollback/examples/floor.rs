//! The floor for the cold-path benchmark: a minimal program that makes the two calls a
//! rollback cannot do without (zero the alias's weights, publish one message) and exits.
//! Same SDK configuration as the function; no decoding, resolution or logging.

#[tokio::main]
async fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"));
    let sdk = coalmine::aws::sdk_config().await;
    aws_sdk_lambda::Client::new(&sdk)
        .update_alias()
        .function_name(var("FLOOR_FUNCTION"))
        .name(var("FLOOR_ALIAS"))
        .function_version(var("FLOOR_STABLE"))
        .routing_config(
            aws_sdk_lambda::types::AliasRoutingConfiguration::builder()
                .set_additional_version_weights(Some(Default::default()))
                .build(),
        )
        .send()
        .await
        .expect("update alias");
    aws_sdk_sns::Client::new(&sdk)
        .publish()
        .topic_arn(var("SNS_TOPIC_ARN"))
        .subject("floor")
        .message("floor")
        .send()
        .await
        .expect("publish");
}
