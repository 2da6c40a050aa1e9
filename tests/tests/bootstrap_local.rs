//! The real `rollback` bootstrap, zipped and created as a function in MiniStack, invoked
//! asynchronously with the sample events as EventBridge would: the same outcomes as the
//! in-process handler.

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use coalmine_tests::{bootstrap_path, poll, sample_event, unique, LocalAws};

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_real_bootstrap_rolls_back_when_invoked_asynchronously() {
    let local = LocalAws::connect().await;
    let inbox = local.topic_with_queue(&unique("fn-topic")).await;
    let rollback_fn = unique("coalmine-rollback");
    local.create_function_from(&rollback_fn, &bootstrap_path("rollback"), &[("SNS_TOPIC_ARN", &inbox.topic_arn)]).await;

    let lambda_target = local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let lambda_alarm = unique("canary-errors");
    local.put_alarm(&lambda_alarm, Some(&lambda_target.to_string())).await;
    // A team's existing paging topic delivers this one: an SNS record, dimensions only.
    let paged_function = unique("ai-paged");
    let paged_target = local.seed_lambda_canary(&paged_function, 0.05).await;
    let paged_alarm = unique("canary-paged");
    local.put_alarm(&paged_alarm, None).await;
    // What the topic delivers is believed only when CloudWatch agrees: it is in ALARM.
    local.set_alarm(&paged_alarm, aws_sdk_cloudwatch::types::StateValue::Alarm).await;
    let endpoint = unique("ai-model");
    let sagemaker_target = local.seed_sagemaker_canary(&endpoint, 0.05).await;
    let sagemaker_alarm = unique("model-5xx");
    local.put_alarm(&sagemaker_alarm, Some(&sagemaker_target.to_string())).await;

    let invoke_async = |event: serde_json::Value| {
        let lambda = local.lambda.clone();
        let name = rollback_fn.clone();
        async move {
            let out = lambda
                .invoke()
                .function_name(name)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(serde_json::to_vec(&event).unwrap()))
                .send()
                .await
                .expect("async invoke accepted");
            assert_eq!(out.status_code, 202);
        }
    };
    invoke_async(sample_event("ok-lambda-canary.eventbridge.json", &lambda_alarm, None)).await;
    invoke_async(sample_event("alarm-lambda-canary.eventbridge.json", &lambda_alarm, None)).await;
    invoke_async(sample_event("alarm-sagemaker-canary.eventbridge.json", &sagemaker_alarm, None)).await;
    invoke_async(sample_event("alarm-lambda-canary.sns.json", &paged_alarm, Some(&paged_function))).await;

    let zeroed = poll(SETTLE, || async {
        let lambda_zero = local.alias_state(&lambda_target).await.1.is_empty();
        let paged_zero = local.alias_state(&paged_target).await.1.is_empty();
        let weights = local.variant_weights(&endpoint).await;
        (lambda_zero && paged_zero && weights["canary"] == 0.0 && weights["stable"] == 1.0).then_some(())
    })
    .await;
    assert!(zeroed.is_some(), "the three canaries should be at zero within {SETTLE:?}");

    let mut seen: Vec<(String, String)> =
        inbox.receive(3, SETTLE).await.iter().map(|m| (m.event().to_owned(), m.target().to_owned())).collect();
    seen.sort();
    let mut expected = vec![
        ("rolled_back".to_owned(), lambda_target.to_string()),
        ("rolled_back".to_owned(), paged_target.to_string()),
        ("rolled_back".to_owned(), sagemaker_target.to_string()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert!(inbox.drain(Duration::from_secs(2)).await.is_empty(), "the OK event sent nothing");
}

#[tokio::test]
async fn the_real_bootstrap_fails_bad_input_without_changing_traffic() {
    let local = LocalAws::connect().await;
    let inbox = local.topic_with_queue(&unique("fn-topic")).await;
    let rollback_fn = unique("coalmine-rollback");
    local.create_function_from(&rollback_fn, &bootstrap_path("rollback"), &[("SNS_TOPIC_ARN", &inbox.topic_arn)]).await;

    let out = local
        .lambda
        .invoke()
        .function_name(&rollback_fn)
        .payload(Blob::new(
            br#"{"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}"#.to_vec(),
        ))
        .send()
        .await
        .expect("invoke");

    assert_eq!(out.function_error.as_deref(), Some("Unhandled"));
    let body: serde_json::Value =
        serde_json::from_slice(out.payload.as_ref().map(|p| p.as_ref()).unwrap_or_default()).unwrap();
    assert_eq!(body["errorType"], "NonRetryable");
    assert!(body["errorMessage"].as_str().unwrap_or_default().contains("rule's event pattern"), "{body}");
}

#[tokio::test]
async fn an_aws_failure_comes_back_as_one_line_naming_the_call_and_the_request() {
    let local = LocalAws::connect().await;
    let inbox = local.topic_with_queue(&unique("fn-topic")).await;
    let rollback_fn = unique("coalmine-rollback");
    local.create_function_from(&rollback_fn, &bootstrap_path("rollback"), &[("SNS_TOPIC_ARN", &inbox.topic_arn)]).await;
    // The shipped sample as it is: its alarm and its alias exist nowhere here.
    let sample =
        std::fs::read(coalmine_tests::workspace_root().join("events/alarm-lambda-canary.eventbridge.json")).unwrap();

    let out =
        local.lambda.invoke().function_name(&rollback_fn).payload(Blob::new(sample)).send().await.expect("invoke");

    let body: serde_json::Value =
        serde_json::from_slice(out.payload.as_ref().map(|p| p.as_ref()).unwrap_or_default()).unwrap();
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert_eq!(body["errorType"], "NonRetryable", "a missing alias will not appear on a retry");
    assert!(!message.contains('\n') && message.len() < 400, "{} chars: {message}", message.len());
    for part in ["lambda:GetAlias", "ResourceNotFoundException", "Function not found", "request id"] {
        assert!(message.contains(part), "lacks {part:?}: {message}");
    }
}
