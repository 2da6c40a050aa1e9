//! Adapter behaviour the emulators cannot produce (throttling, 5xx, an endpoint stuck in
//! `Updating`), with the SDK's own mocks: requests and call counts are asserted.

use std::time::Duration;

use aws_sdk_lambda::operation::get_alias::{GetAliasError, GetAliasOutput};
use aws_sdk_lambda::operation::update_alias::{UpdateAliasError, UpdateAliasOutput};
use aws_sdk_lambda::types::AliasRoutingConfiguration;
use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_sagemaker::operation::update_endpoint_weights_and_capacities::{
    UpdateEndpointWeightsAndCapacitiesError, UpdateEndpointWeightsAndCapacitiesOutput,
};
use aws_sdk_sagemaker::types::{EndpointStatus, ProductionVariantSummary};
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::retry::RetryConfig;

use super::*;
use crate::clouds::CloudRouter;
use crate::domain::cause::RolledBackBy;
use crate::domain::error::Error;
use crate::domain::event::tests::sample;
use crate::domain::mapping::TargetMapping;
use crate::domain::split::Split;
use crate::domain::target::Target;
use crate::memory::Alarms;
use crate::ports::TrafficRouter;
use crate::ports::{AlarmSource, Notification, Notifier};
use crate::rollback::{handle_alarm, zero_canary, Owner, RollbackDeps, ZeroOutcome};

fn by_alarm() -> RolledBackBy {
    RolledBackBy::Alarm("coalmine-ai-handler-canary-errors".into())
}

fn error(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn fast_retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(1))
}

macro_rules! client {
    ($krate:ident, $rules:expr) => {
        mock_client!($krate, RuleMode::MatchAny, $rules, |c| c.retry_config(fast_retries()))
    };
}

fn alias(version: &str, canary: Option<(&str, f64)>, revision: &str) -> GetAliasOutput {
    let mut out = GetAliasOutput::builder().name("production").function_version(version).revision_id(revision);
    if let Some((v, w)) = canary {
        out = out.routing_config(AliasRoutingConfiguration::builder().additional_version_weights(v, w).build());
    }
    out.build()
}

fn lambda_router(rules: &[&Rule]) -> CloudRouter {
    CloudRouter {
        lambda: LambdaAliases::new(client!(aws_sdk_lambda, rules)),
        sagemaker: SageMakerEndpoints::new(
            client!(aws_sdk_sagemaker, &[] as &[&Rule]),
            UpdatingBackoff::within(Duration::ZERO),
        ),
        logs: no_feeds(),
        azure: no_azure(),
        cohorts: no_cohorts(),
    }
}

fn no_cohorts() -> crate::aws::AppConfigCohorts {
    crate::aws::AppConfigCohorts::new(client!(aws_sdk_appconfig, &[] as &[&Rule]), None)
}

fn no_feeds() -> LogFeeds {
    LogFeeds::new(client!(aws_sdk_cloudwatchlogs, &[] as &[&Rule]), None)
}

/// Azure, never reached by these tests: any call would say it is not configured.
fn no_azure() -> crate::azure::AzureEndpoints {
    crate::azure::Azure::new(Box::new(crate::azure::NoIdentity { advice: "not in these tests" }), Duration::ZERO)
        .endpoints
}

fn handler() -> Target {
    Target::lambda("ai-handler", "production")
}

#[tokio::test]
async fn throttled_and_5xx_alias_calls_are_retried_by_the_sdk() {
    let get = mock!(aws_sdk_lambda::Client::get_alias)
        .sequence()
        .error(|| GetAliasError::generic(error("TooManyRequestsException", "Rate exceeded")))
        .http_status(503, None)
        .output(|| alias("41", Some(("42", 0.05)), "r1"))
        .build();
    let update = mock!(aws_sdk_lambda::Client::update_alias)
        .match_requests(|r| {
            r.revision_id() == Some("r1")
                && r.function_version() == Some("41")
                && r.routing_config().and_then(|c| c.additional_version_weights()).is_some_and(|w| w.is_empty())
        })
        .sequence()
        .error(|| UpdateAliasError::generic(error("ThrottlingException", "slow down")))
        .output(|| UpdateAliasOutput::builder().function_version("41").revision_id("r2").build())
        .build();
    let router = lambda_router(&[&get, &update]);

    let outcome = zero_canary(&router, &handler(), &by_alarm(), Owner::Alarm, None).await.unwrap();

    assert!(matches!(outcome, ZeroOutcome::RolledBack { ref after, .. } if after.revision.as_deref() == Some("r2")));
    assert_eq!((get.num_calls(), update.num_calls()), (3, 2));
}

#[tokio::test]
async fn throttling_that_outlasts_the_sdk_retries_is_a_retryable_error_naming_the_call() {
    let get = mock!(aws_sdk_lambda::Client::get_alias)
        .sequence()
        .error(|| GetAliasError::generic(error("TooManyRequestsException", "Rate exceeded")))
        .repeatedly()
        .build();
    let router = lambda_router(&[&get]);
    let err = zero_canary(&router, &handler(), &by_alarm(), Owner::Alarm, None).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("lambda:GetAlias") && err.to_string().contains("Rate exceeded"), "{err}");
    assert_eq!(get.num_calls(), 3);
}

#[tokio::test]
async fn an_aws_failure_is_one_line_with_operation_code_message_status_and_request_id() {
    let missing = mock!(aws_sdk_lambda::Client::get_alias)
        .sequence()
        .error(|| {
            GetAliasError::generic(
                ErrorMetadata::builder()
                    .code("ResourceNotFoundException")
                    .message("Function not found: arn:aws:lambda:us-east-1:123456789012:function:ai-handler")
                    .custom("aws_request_id", "7f1c2e3a-0000-4d5e-9f00-1a2b3c4d5e6f")
                    .build(),
            )
        })
        .build();
    let router = lambda_router(&[&missing]);

    let err = zero_canary(&router, &handler(), &by_alarm(), Owner::Alarm, None).await.unwrap_err();

    // (aws-smithy-mocks answers every modeled error with HTTP 418.)
    assert_eq!(
        err.to_string(),
        "lambda:ai-handler:production: not found: lambda:GetAlias: ResourceNotFoundException: Function not found: \
         arn:aws:lambda:us-east-1:123456789012:function:ai-handler (HTTP 418, request id \
         7f1c2e3a-0000-4d5e-9f00-1a2b3c4d5e6f)"
    );

    let denied = mock!(aws_sdk_lambda::Client::get_alias)
        .sequence()
        .error(|| {
            GetAliasError::generic(error(
                "AccessDeniedException",
                "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: lambda:GetAlias",
            ))
        })
        .build();
    let err = zero_canary(&lambda_router(&[&denied]), &handler(), &by_alarm(), Owner::Alarm, None).await.unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }) && !err.is_retryable(), "{err}");
    assert!(
        !err.to_string().contains('\n')
            && err.to_string().contains("lambda:GetAlias was denied: AccessDeniedException: User:"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stale_revision_is_a_conflict_that_reads_again_and_never_overwrites() {
    // The alias moved to 10% between our read and write; the second read sees it.
    let get = mock!(aws_sdk_lambda::Client::get_alias)
        .sequence()
        .output(|| alias("41", Some(("42", 0.05)), "r1"))
        .output(|| alias("41", Some(("42", 0.10)), "r2"))
        .build();
    let stale = mock!(aws_sdk_lambda::Client::update_alias)
        .match_requests(|r| r.revision_id() == Some("r1"))
        .then_error(|| {
            UpdateAliasError::generic(error("PreconditionFailedException", "The RevisionId provided does not match"))
        });
    let fresh = mock!(aws_sdk_lambda::Client::update_alias)
        .match_requests(|r| r.revision_id() == Some("r2"))
        .then_output(|| UpdateAliasOutput::builder().function_version("41").revision_id("r3").build());
    let router = lambda_router(&[&get, &stale, &fresh]);

    let outcome = zero_canary(&router, &handler(), &by_alarm(), Owner::Alarm, None).await.unwrap();

    assert!(matches!(outcome, ZeroOutcome::RolledBack { ref before, .. } if before.canary_weight == 0.10));
    assert_eq!((get.num_calls(), stale.num_calls(), fresh.num_calls()), (2, 1, 1));
}

fn endpoint(status: EndpointStatus, stable: f32, canary: f32) -> DescribeEndpointOutput {
    let variant = |name: &str, w: f32| {
        ProductionVariantSummary::builder().variant_name(name).current_weight(w).desired_weight(w).build()
    };
    DescribeEndpointOutput::builder()
        .endpoint_name("ai-model-endpoint")
        .endpoint_status(status)
        .production_variants(variant("stable", stable))
        .production_variants(variant("canary", canary))
        .build()
}

fn sagemaker_router(rules: &[&Rule], budget: Duration) -> CloudRouter {
    CloudRouter {
        lambda: LambdaAliases::new(client!(aws_sdk_lambda, &[] as &[&Rule])),
        sagemaker: SageMakerEndpoints::new(client!(aws_sdk_sagemaker, rules), UpdatingBackoff::within(budget)),
        logs: no_feeds(),
        azure: no_azure(),
        cohorts: no_cohorts(),
    }
}

fn model_endpoint() -> Target {
    Target::sagemaker("ai-model-endpoint", "stable", "canary")
}

fn zeroing_request(
    r: &aws_sdk_sagemaker::operation::update_endpoint_weights_and_capacities::UpdateEndpointWeightsAndCapacitiesInput,
) -> bool {
    let weights: Vec<(Option<&str>, Option<f32>)> =
        r.desired_weights_and_capacities().iter().map(|d| (d.variant_name(), d.desired_weight())).collect();
    r.endpoint_name() == Some("ai-model-endpoint")
        && weights == [(Some("stable"), Some(1.0)), (Some("canary"), Some(0.0))]
}

#[tokio::test(start_paused = true)]
async fn an_updating_endpoint_is_waited_for_then_zeroed() {
    let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint)
        .sequence()
        .output(|| endpoint(EndpointStatus::InService, 0.95, 0.05)) // the caller's read
        .output(|| endpoint(EndpointStatus::Updating, 0.95, 0.05))
        .times(2)
        .output(|| endpoint(EndpointStatus::InService, 0.95, 0.05))
        .times(2)
        .build();
    let update = mock!(aws_sdk_sagemaker::Client::update_endpoint_weights_and_capacities)
        .match_requests(zeroing_request)
        .sequence()
        .error(|| UpdateEndpointWeightsAndCapacitiesError::generic(error("ValidationException", "Cannot update in-progress endpoint \"arn:aws:sagemaker:us-east-1:123456789012:endpoint/ai-model-endpoint\".")))
        .output(|| UpdateEndpointWeightsAndCapacitiesOutput::builder().endpoint_arn("arn").build())
        .build();
    let router = sagemaker_router(&[&describe, &update], Duration::from_secs(60));

    let outcome = zero_canary(&router, &model_endpoint(), &by_alarm(), Owner::Alarm, None).await.unwrap();

    assert!(
        matches!(outcome, ZeroOutcome::RolledBack { ref before, ref after } if (before.canary_weight - 0.05).abs() < 1e-6 && after.canary_weight == 0.0)
    );
    // read, two busy describes, one describe before the refused write, one before the good one
    assert_eq!((describe.num_calls(), update.num_calls()), (5, 2));
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_updating_past_the_budget_gives_up_with_a_retryable_error() {
    let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint)
        .sequence()
        .output(|| endpoint(EndpointStatus::InService, 0.95, 0.05))
        .output(|| endpoint(EndpointStatus::Updating, 0.95, 0.05))
        .repeatedly()
        .build();
    let update = mock!(aws_sdk_sagemaker::Client::update_endpoint_weights_and_capacities)
        .then_output(|| UpdateEndpointWeightsAndCapacitiesOutput::builder().build());
    let router = sagemaker_router(&[&describe, &update], Duration::from_secs(10));
    let started = tokio::time::Instant::now();

    let err = zero_canary(&router, &model_endpoint(), &by_alarm(), Owner::Alarm, None).await.unwrap_err();

    assert!(matches!(err, Error::EndpointBusy { .. }) && err.is_retryable());
    assert!(err.to_string().contains("still Updating") && err.to_string().contains("Lambda retries"), "{err}");
    assert!(started.elapsed() <= Duration::from_secs(10), "waited {:?}, past the budget", started.elapsed());
    assert_eq!(update.num_calls(), 0, "never written while Updating");
}

#[tokio::test]
async fn sagemaker_weights_that_moved_since_the_read_are_not_overwritten() {
    let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint)
        .sequence()
        .output(|| endpoint(EndpointStatus::InService, 0.95, 0.05))
        .output(|| endpoint(EndpointStatus::InService, 1.0, 0.0))
        .build();
    let update = mock!(aws_sdk_sagemaker::Client::update_endpoint_weights_and_capacities)
        .then_output(|| UpdateEndpointWeightsAndCapacitiesOutput::builder().build());
    let router = sagemaker_router(&[&describe, &update], Duration::from_secs(10));
    let target = model_endpoint();
    let read = router.read(&target).await.unwrap();

    let err = router.write(&target, &read, &read.with_canary_weight(0.0)).await.unwrap_err();

    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(update.num_calls(), 0);
}

mod stamps {
    use std::sync::{Arc, Mutex};

    use aws_sdk_sagemaker::operation::add_tags::AddTagsOutput;
    use aws_sdk_sagemaker::operation::list_tags::ListTagsOutput;
    use aws_sdk_sagemaker::types::Tag;

    use super::*;
    use crate::domain::stamp::{Phase, Stamp, ROLLBACK_TAG, STAMP_TAG};

    const ARN: &str = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ai-model-endpoint";

    fn stamp(phase: Phase) -> Stamp {
        Stamp {
            execution: "Release:model-7".into(),
            stable: "stable".into(),
            canary: Some("canary".into()),
            phase,
            stage: Some((1, 2)),
            release: Some("model-7".into()),
            hold: None,
            request: None,
        }
    }

    /// An endpoint at `canary`%, tagged with `tagged`; every call is written to `calls`.
    fn endpoint_rules(canary: f32, tagged: Option<Stamp>, calls: &Arc<Mutex<Vec<String>>>) -> Vec<Rule> {
        fn log<T>(calls: &Arc<Mutex<Vec<String>>>, what: &'static str) -> impl Fn(&T) -> bool + Send + Sync {
            let calls = calls.clone();
            move |_| {
                calls.lock().unwrap().push(what.to_owned());
                true
            }
        }
        let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint)
            .match_requests(log(calls, "DescribeEndpoint"))
            .then_output(move || {
                let mut out = endpoint(EndpointStatus::InService, 1.0 - canary, canary);
                out.endpoint_arn = Some(ARN.into());
                out
            });
        let tags = tagged.map(|s| Tag::builder().key(STAMP_TAG).value(s.render()).build());
        let list = mock!(aws_sdk_sagemaker::Client::list_tags)
            .match_requests(log(calls, "ListTags"))
            .then_output(move || ListTagsOutput::builder().set_tags(tags.clone().map(|t| vec![t])).build());
        let calls_for_add = calls.clone();
        let add = mock!(aws_sdk_sagemaker::Client::add_tags)
            .match_requests(move |r| {
                for tag in r.tags() {
                    let (key, value) = (tag.key().unwrap_or_default(), tag.value().unwrap_or_default());
                    let key = if key == STAMP_TAG { String::new() } else { format!("{key}=") };
                    calls_for_add.lock().unwrap().push(format!("AddTags {key}{value}"));
                }
                r.resource_arn() == Some(ARN)
            })
            .then_output(|| AddTagsOutput::builder().build());
        let update = mock!(aws_sdk_sagemaker::Client::update_endpoint_weights_and_capacities)
            .match_requests(log(calls, "UpdateEndpointWeightsAndCapacities"))
            .then_output(|| UpdateEndpointWeightsAndCapacitiesOutput::builder().endpoint_arn(ARN).build());
        vec![describe, list, add, update]
    }

    fn router(rules: &[Rule]) -> CloudRouter {
        sagemaker_router(&rules.iter().collect::<Vec<_>>(), Duration::from_secs(10))
    }

    #[tokio::test]
    async fn raising_a_sagemaker_canary_records_the_stamp_first() {
        let calls = Arc::default();
        let router = router(&endpoint_rules(0.0, None, &calls));
        let read = router.read(&model_endpoint()).await.unwrap();
        let desired = Split { stamp: Some(stamp(Phase::Live)), ..read.with_canary_weight(0.1) };

        let written = router.write(&model_endpoint(), &read, &desired).await.unwrap();

        assert_eq!(written.stamp, Some(stamp(Phase::Live)));
        let calls = calls.lock().unwrap().clone();
        let stamp_at = calls.iter().position(|c| c.starts_with("AddTags coalmine/1 phase=live")).expect("stamped");
        let weights_at = calls.iter().position(|c| c == "UpdateEndpointWeightsAndCapacities").expect("weights");
        assert!(stamp_at < weights_at, "the release owns what it is about to move: {calls:?}");
    }

    #[tokio::test]
    async fn lowering_a_sagemaker_canary_moves_the_weights_before_anything_else() {
        let calls = Arc::default();
        let router = router(&endpoint_rules(0.1, Some(stamp(Phase::Live)), &calls));

        let outcome = zero_canary(&router, &model_endpoint(), &by_alarm(), Owner::Alarm, None).await.unwrap();

        let ZeroOutcome::RolledBack { after, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(after.stamp.unwrap().phase, Phase::RolledBack(by_alarm()));
        let calls = calls.lock().unwrap().clone();
        let weights_at = calls.iter().position(|c| c == "UpdateEndpointWeightsAndCapacities").expect("weights");
        let stamp_at = calls
            .iter()
            .position(|c| c.starts_with("AddTags coalmine/1 phase=rolled_back by=alarm:"))
            .expect("stamped");
        assert!(weights_at < stamp_at, "a rollback waits for no record: {calls:?}");
        let record = format!("AddTags {ROLLBACK_TAG}=coalmine/1 phase=rolled_back by=alarm:");
        assert!(calls.iter().any(|c| c.starts_with(&record)), "in its own key too: {calls:?}");
    }

    #[tokio::test]
    async fn a_stamp_written_after_a_rollback_of_its_own_execution_cannot_hide_it() {
        // What a stepper's tag write before its weights leaves, landing after the
        // rollback's: a live stamp over the record, which its own key still holds.
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut rules = endpoint_rules(0.0, None, &calls);
        let later = Stamp { stage: Some((2, 2)), ..stamp(Phase::Live) };
        let record = stamp(Phase::Live).rolled_back(by_alarm());
        let tags = vec![
            Tag::builder().key(ROLLBACK_TAG).value(record.render()).build(),
            Tag::builder().key(STAMP_TAG).value(later.render()).build(),
        ];
        rules[1] = mock!(aws_sdk_sagemaker::Client::list_tags)
            .then_output(move || ListTagsOutput::builder().set_tags(Some(tags.clone())).build());
        let router = router(&rules);

        let read = router.read(&model_endpoint()).await.unwrap();

        assert_eq!(read.stamp, Some(record), "the rollback stands");
    }

    #[tokio::test]
    async fn recording_a_promotion_on_sagemaker_moves_no_weights() {
        let calls = Arc::default();
        let router = router(&endpoint_rules(1.0, Some(stamp(Phase::Live)), &calls));
        let read = router.read(&model_endpoint()).await.unwrap();
        assert_eq!(read.stamp, Some(stamp(Phase::Live)), "the stamp is read from the endpoint's tags");

        router
            .write(&model_endpoint(), &read, &Split { stamp: Some(stamp(Phase::Promoted)), ..read.clone() })
            .await
            .unwrap();

        let calls = calls.lock().unwrap().clone();
        assert!(!calls.iter().any(|c| c == "UpdateEndpointWeightsAndCapacities"), "{calls:?}");
        assert!(calls.iter().any(|c| c.starts_with("AddTags coalmine/1 phase=promoted")), "{calls:?}");
    }
}

#[tokio::test]
async fn sns_failing_past_its_retries_never_blocks_the_rollback() {
    let get = mock!(aws_sdk_lambda::Client::get_alias).then_output(|| alias("41", Some(("42", 0.05)), "r1"));
    let update = mock!(aws_sdk_lambda::Client::update_alias)
        .then_output(|| UpdateAliasOutput::builder().function_version("41").revision_id("r2").build());
    let publish = mock!(aws_sdk_sns::Client::publish).sequence().http_status(503, None).repeatedly().build();
    let router = lambda_router(&[&get, &update]);
    let notifier =
        SnsNotifier::new(client!(aws_sdk_sns, [&publish]), "arn:aws:sns:us-east-1:123456789012:coalmine".into());
    let alarms = Alarms::default();
    let mapping = TargetMapping::default();
    let deps = RollbackDeps::new(&router, &notifier, &alarms, &mapping);

    let err = handle_alarm(&sample("alarm-lambda-canary.eventbridge.json"), &deps).await.unwrap_err();

    assert_eq!(update.num_calls(), 1, "the canary was zeroed");
    assert!(err.is_retryable() && err.to_string().contains("sns:Publish"), "{err}");
    assert_eq!(publish.num_calls(), 3, "the SDK retried before giving up");
}

#[tokio::test]
async fn sns_messages_carry_subject_body_and_filterable_attributes() {
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|r| {
            let attrs = r.message_attributes().cloned().unwrap_or_default();
            r.topic_arn() == Some("arn:aws:sns:us-east-1:123456789012:coalmine")
                && r.subject() == Some("s")
                && r.message() == Some("b")
                && attrs.get("event").and_then(|v| v.string_value()) == Some("rolled_back")
                && attrs.get("event").map(|v| v.data_type()) == Some("String")
        })
        .then_output(|| PublishOutput::builder().message_id("m1").build());
    let notifier =
        SnsNotifier::new(client!(aws_sdk_sns, [&publish]), "arn:aws:sns:us-east-1:123456789012:coalmine".into());
    let note =
        Notification { subject: "s".into(), body: "b".into(), attributes: vec![("event", "rolled_back".into())] };
    notifier.publish(&note).await.unwrap();
    assert_eq!(publish.num_calls(), 1);
}

#[tokio::test]
async fn an_ok_transition_makes_no_aws_call_at_all() {
    // Clients with no rules: any call would fail the handler.
    let router = lambda_router(&[]);
    let notifier = SnsNotifier::new(client!(aws_sdk_sns, &[] as &[&Rule]), "arn:aws:sns:us-east-1:1:t".into());
    let alarms = CloudWatchAlarms::new(client!(aws_sdk_cloudwatch, &[] as &[&Rule]));
    let mapping = TargetMapping::default();
    let deps = RollbackDeps::new(&router, &notifier, &alarms, &mapping);
    let report = handle_alarm(&sample("ok-lambda-canary.eventbridge.json"), &deps).await.unwrap();
    assert!(report.outcomes.is_empty() && report.notified == 0);
}

#[tokio::test]
async fn the_tag_of_an_alarm_deleted_since_it_fired_is_no_tag_but_other_failures_stay_failures() {
    use aws_sdk_cloudwatch::operation::list_tags_for_resource::ListTagsForResourceError;
    let gone = mock!(aws_sdk_cloudwatch::Client::list_tags_for_resource).then_error(|| {
        ListTagsForResourceError::ResourceNotFoundException(
            aws_sdk_cloudwatch::types::error::ResourceNotFoundException::builder()
                .message("Alarm coalmine-gone not found")
                .meta(error("ResourceNotFoundException", "Alarm coalmine-gone not found"))
                .build(),
        )
    });
    let alarms = CloudWatchAlarms::new(client!(aws_sdk_cloudwatch, [&gone]));
    assert_eq!(alarms.target_tag("arn:aws:cloudwatch:us-east-1:1:alarm:coalmine-gone").await.unwrap(), None);

    let denied = mock!(aws_sdk_cloudwatch::Client::list_tags_for_resource)
        .then_error(|| ListTagsForResourceError::generic(error("AccessDenied", "not authorized")));
    let alarms = CloudWatchAlarms::new(client!(aws_sdk_cloudwatch, [&denied]));
    let err = alarms.target_tag("arn:aws:cloudwatch:us-east-1:1:alarm:coalmine-x").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("cloudwatch:ListTagsForResource") && message.contains("AccessDenied"), "{message}");
}

mod stepper {
    use aws_sdk_cloudwatch::operation::get_metric_data::{GetMetricDataInput, GetMetricDataOutput};
    use aws_sdk_cloudwatch::types::{MetricDataResult, StatusCode};

    use super::*;
    use crate::memory::{Metrics, Outbox};
    use crate::ports::{MetricQuery, MetricSource};
    use crate::release::canary::progress::{CanaryProgress, Progress, Written};
    use crate::release::canary::spec::tests::lambda_release;
    use crate::release::canary::spec::Release;
    use crate::release::core::progress::Status;
    use crate::release::core::StepDeps;
    use crate::release::judge::gates::Gates;

    fn result(id: &str, values: &[f64]) -> MetricDataResult {
        MetricDataResult::builder().id(id).set_values(Some(values.to_vec())).status_code(StatusCode::Complete).build()
    }

    fn dims(q: &aws_sdk_cloudwatch::types::MetricDataQuery) -> Vec<(String, String)> {
        let metric = q.metric_stat().and_then(|s| s.metric()).unwrap();
        metric.dimensions().iter().map(|d| (d.name().unwrap().to_owned(), d.value().unwrap().to_owned())).collect()
    }

    fn shape_is_right(r: &GetMetricDataInput) -> bool {
        let queries = r.metric_data_queries();
        let find = |id: &str| queries.iter().find(|q| q.id() == Some(id));
        let (Some(c_p95), Some(s_err), Some(c_x0), Some(s_x1)) =
            (find("c_p95"), find("s_err"), find("c_x0"), find("s_x1"))
        else {
            return false;
        };
        let stat = |q: &aws_sdk_cloudwatch::types::MetricDataQuery| {
            q.metric_stat().and_then(|s| s.stat()).unwrap_or_default().to_owned()
        };
        let period = c_p95.metric_stat().and_then(|s| s.period()).unwrap_or_default();
        let tail: Vec<String> = (0..9).filter_map(|i| find(&format!("c_q{i}")).map(stat)).collect();
        let grid: Vec<String> = (0..11).filter_map(|j| find(&format!("c_g1_{j}")).map(stat)).collect();
        // Both sides: requests, errors, p95, the tail's nine, the count gate's sum, and the
        // distribution gate's statistic, its SampleCount and its eleven percentiles.
        queries.len() == 2 * (3 + 9 + 1 + 1 + 1 + 11)
            && tail == ["p50", "p75", "p90", "p95", "p97", "p98", "p99", "p99.5", "p99.9"]
            && grid == ["p1", "p5", "p10", "p25", "p40", "p50", "p60", "p75", "p90", "p95", "p99"]
            && find("s_n1").map(stat).as_deref() == Some("SampleCount")
            && stat(c_p95) == "p95"
            && c_p95.metric_stat().and_then(|s| s.metric()).and_then(|m| m.metric_name()) == Some("Duration")
            && dims(c_p95).contains(&("ExecutedVersion".into(), "42".into()))
            && dims(c_p95).contains(&("Resource".into(), "ai-handler:production".into()))
            && dims(s_err).contains(&("ExecutedVersion".into(), "41".into()))
            && dims(c_x0).contains(&("Version".into(), "42".into()))
            && dims(s_x1).contains(&("Version".into(), "41".into()))
            && stat(s_x1) == "p95"
            && period == 540
            && r.start_time().map(|t| t.secs()) == Some(1_800_000_000)
            && r.end_time().map(|t| t.secs()) == Some(1_800_000_540)
    }

    #[tokio::test]
    async fn one_get_metric_data_call_fetches_both_sides_and_parses_percentiles() {
        let rule =
            mock!(aws_sdk_cloudwatch::Client::get_metric_data).match_requests(shape_is_right).then_output(|| {
                GetMetricDataOutput::builder()
                    .metric_data_results(result("c_req", &[600.0, 400.0]))
                    .metric_data_results(result("c_err", &[3.0, 2.0]))
                    .metric_data_results(result("c_p95", &[800.0, 950.5]))
                    .metric_data_results(result("s_req", &[19_000.0]))
                    .metric_data_results(result("s_err", &[19.0]))
                    .metric_data_results(result("s_p95", &[]))
                    .metric_data_results(result("c_x0", &[4.0, 5.0]))
                    .metric_data_results(result("s_x0", &[]))
                    .metric_data_results(result("c_x1", &[120.0, 300.0]))
                    .metric_data_results(result("s_x1", &[250.0]))
                    .metric_data_results(result("c_n1", &[600.0, 400.0]))
                    .metric_data_results(result("c_g1_5", &[380.0, 420.0]))
                    .metric_data_results(result("c_q3", &[900.0, 950.5]))
                    .metric_data_results(result("c_q8", &[2000.0]))
                    .build()
            });
        let metrics = CloudWatchMetrics::new(client!(aws_sdk_cloudwatch, [&rule]));
        let release = lambda_release();
        let query = MetricQuery {
            target: &release.target,
            canary: "42",
            stable: "41",
            start_epoch: 1_800_000_000,
            end_epoch: 1_800_000_540,
            custom: &release.gates.custom,
            configs: None,
            shadow_of: None,
            pins: false,
        };

        let snapshot = metrics.fetch(&query).await.unwrap();

        assert_eq!(rule.num_calls(), 1);
        assert_eq!(
            (snapshot.canary.requests, snapshot.canary.errors, snapshot.canary.p95_ms),
            (1000.0, 5.0, Some(950.5))
        );
        assert_eq!((snapshot.stable.requests, snapshot.stable.p95_ms), (19_000.0, None));
        assert_eq!(
            snapshot.canary.custom,
            [Some(9.0), Some(210.0)],
            "Sum adds periods; a percentile of two periods is their mean"
        );
        assert_eq!(snapshot.canary.custom_counts, [None, Some(1000.0)], "a distribution's values, counted");
        assert_eq!(snapshot.canary.custom_percentiles[1][5], Some(400.0), "its median, read");
        assert!(snapshot.canary.custom_percentiles[0].is_empty(), "a count has no percentiles");
        assert_eq!(snapshot.stable.custom, [None, Some(250.0)]);
        let expected: Vec<Option<f64>> =
            (0..9).map(|i| [(3, 950.5), (8, 2000.0)].iter().find(|(at, _)| *at == i).map(|(_, v)| *v)).collect();
        assert_eq!(snapshot.canary.percentiles, expected, "the tail's percentiles, worst of the periods");
    }

    #[tokio::test]
    async fn a_failed_query_inside_a_200_is_an_error_not_a_zero() {
        let rule = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(
                    MetricDataResult::builder().id("c_req").status_code(StatusCode::InternalError).build(),
                )
                .build()
        });
        let metrics = CloudWatchMetrics::new(client!(aws_sdk_cloudwatch, [&rule]));
        let release = lambda_release();
        let query = MetricQuery {
            target: &release.target,
            canary: "42",
            stable: "41",
            start_epoch: 0,
            end_epoch: 60,
            custom: &[],
            configs: None,
            shadow_of: None,
            pins: false,
        };
        let err = metrics.fetch(&query).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("c_req returned InternalError"), "{err}");
    }

    #[tokio::test]
    async fn a_revision_conflict_while_advancing_is_not_overwritten_and_fails_the_tick_for_a_fresh_read() {
        let execution = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42";
        let stamp = "coalmine/1 phase=live execution=Release:ai-handler-42 stable=41 stage=1/4 release=ai-handler-42";
        let get = mock!(aws_sdk_lambda::Client::get_alias).then_output(move || {
            let mut out = alias("41", Some(("42", 0.05)), "r1");
            out.description = Some(stamp.into());
            out
        });
        let update = mock!(aws_sdk_lambda::Client::update_alias).then_error(|| {
            UpdateAliasError::generic(error("PreconditionFailedException", "The RevisionId provided does not match"))
        });
        let router = lambda_router(&[&get, &update]);
        let release = Release { gates: Gates::default(), ..lambda_release() };
        let t0 = 1_800_000_000;
        let progress: Progress = Progress {
            weight: 0.05,
            status: Status::Baking,
            wait_seconds: 60,
            ticks: 5,
            // Checked every minute until the last one: the bake of 600 s is over.
            watched_seconds: 840,
            checked_at: Some(t0 + 840),
            ..Progress::new(
                "41",
                t0,
                CanaryProgress {
                    last_written: Written { stable: "41".into(), canary: Some("42".into()), weight: 0.05, mirror: 0.0 },
                    shadow: None,
                },
            )
        };
        let metrics = Metrics::default();
        metrics.set((1000.0, 0.0), (20_000.0, 10.0));
        let (outbox, alarms) = (Outbox::default(), Alarms::default());
        let deps = StepDeps::new(&router, &outbox, &alarms, &metrics);

        let mut state = serde_json::to_value(&release).unwrap();
        state["progress"] = serde_json::to_value(&progress).unwrap();
        let input = serde_json::json!({"execution": execution, "state": state});
        let err =
            crate::release::tick_payload(&input, &deps, &crate::memory::Claims::default(), t0 + 900).await.unwrap_err();

        assert!(matches!(err, Error::Conflict { .. }) && err.is_retryable(), "{err}");
        assert!(err.to_string().contains("changed while advancing"), "{err}");
        assert_eq!(update.num_calls(), 1, "no second, blind write");
    }
}

/// Faults on every call the rollback makes: each is retried by the SDK and the rollback
/// completes; a call that hangs times out well inside the function's timeout.
mod faults {
    use std::collections::HashMap;

    use aws_sdk_cloudwatch::operation::list_tags_for_resource::{ListTagsForResourceError, ListTagsForResourceOutput};
    use aws_sdk_sns::operation::publish::{PublishError, PublishOutput};
    use aws_smithy_runtime::client::http::test_util::NeverClient;

    use super::*;
    use crate::rollback::handle_alarm;

    /// A throttle, then a 503, then success: what the SDK's standard retries absorb.
    macro_rules! flaky {
        ($op:path, $throttle:expr, $ok:expr $(,)?) => {
            mock!($op).sequence().error($throttle).http_status(503, None).output($ok).build()
        };
    }

    #[tokio::test]
    async fn every_call_survives_a_throttle_and_a_503() {
        let tags = flaky!(
            aws_sdk_cloudwatch::Client::list_tags_for_resource,
            || ListTagsForResourceError::generic(error("Throttling", "Rate exceeded")),
            || {
                ListTagsForResourceOutput::builder()
                    .tags(
                        aws_sdk_cloudwatch::types::Tag::builder()
                            .key("coalmine:target")
                            .value("sagemaker:ai-model-endpoint:stable:canary lambda:ai-handler:production")
                            .build(),
                    )
                    .build()
            },
        );
        let get = flaky!(
            aws_sdk_lambda::Client::get_alias,
            || GetAliasError::generic(error("TooManyRequestsException", "Rate exceeded")),
            || alias("41", Some(("42", 0.05)), "r1"),
        );
        let update = flaky!(
            aws_sdk_lambda::Client::update_alias,
            || UpdateAliasError::generic(error("TooManyRequestsException", "Rate exceeded")),
            || UpdateAliasOutput::builder().function_version("41").revision_id("r2").build(),
        );
        let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint)
            .sequence()
            .error(|| {
                aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointError::generic(error(
                    "ThrottlingException",
                    "Rate exceeded",
                ))
            })
            .http_status(503, None)
            .output(|| endpoint(EndpointStatus::InService, 0.95, 0.05))
            .output(|| endpoint(EndpointStatus::InService, 0.95, 0.05))
            .build();
        let weights = flaky!(
            aws_sdk_sagemaker::Client::update_endpoint_weights_and_capacities,
            || UpdateEndpointWeightsAndCapacitiesError::generic(error("ThrottlingException", "Rate exceeded")),
            || UpdateEndpointWeightsAndCapacitiesOutput::builder().endpoint_arn("arn").build(),
        );
        // The two targets publish concurrently: one flaky rule each.
        let publish_for = |kind: &'static str| {
            mock!(aws_sdk_sns::Client::publish)
                .match_requests(move |r| r.subject().is_some_and(|s| s.contains(kind)))
                .sequence()
                .error(|| PublishError::generic(error("Throttling", "Rate exceeded")))
                .http_status(503, None)
                .output(|| PublishOutput::builder().message_id("m").build())
                .build()
        };
        let (publish_lambda, publish_sagemaker) = (publish_for("lambda:"), publish_for("sagemaker:"));
        let router = CloudRouter {
            lambda: LambdaAliases::new(client!(aws_sdk_lambda, [&get, &update])),
            sagemaker: SageMakerEndpoints::new(
                client!(aws_sdk_sagemaker, [&describe, &weights]),
                UpdatingBackoff::within(Duration::from_secs(5)),
            ),
            logs: no_feeds(),
            azure: no_azure(),
            cohorts: no_cohorts(),
        };
        let notifier = SnsNotifier::new(
            client!(aws_sdk_sns, [&publish_lambda, &publish_sagemaker]),
            "arn:aws:sns:us-east-1:123456789012:coalmine".into(),
        );
        let alarms = CloudWatchAlarms::new(client!(aws_sdk_cloudwatch, [&tags]));
        let mapping = TargetMapping::default();
        let deps = RollbackDeps::new(&router, &notifier, &alarms, &mapping);

        let report = handle_alarm(&sample("alarm-sagemaker-canary.eventbridge.json"), &deps).await.unwrap();

        assert_eq!(report.outcomes.len(), 2);
        assert!(
            report.outcomes.iter().all(|(_, o)| matches!(o, Ok(ZeroOutcome::RolledBack { .. }))),
            "{:?}",
            report.outcomes
        );
        assert_eq!(report.notified, 2);
        let calls: HashMap<&str, usize> = HashMap::from([
            ("ListTagsForResource", tags.num_calls()),
            ("GetAlias", get.num_calls()),
            ("UpdateAlias", update.num_calls()),
            ("DescribeEndpoint", describe.num_calls()),
            ("UpdateEndpointWeightsAndCapacities", weights.num_calls()),
            ("Publish", publish_lambda.num_calls() + publish_sagemaker.num_calls()),
        ]);
        assert_eq!(
            calls,
            HashMap::from([
                ("ListTagsForResource", 3),
                ("GetAlias", 3),
                ("UpdateAlias", 3),
                // The read (made while the tag was looked up) and the re-read before the write.
                ("DescribeEndpoint", 4),
                ("UpdateEndpointWeightsAndCapacities", 3),
                ("Publish", 6),
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_times_out_inside_the_function_timeout_and_fails_retryable() {
        let get = mock!(aws_sdk_lambda::Client::get_alias).then_output(|| alias("41", Some(("42", 0.05)), "r1"));
        let update = mock!(aws_sdk_lambda::Client::update_alias)
            .then_output(|| UpdateAliasOutput::builder().function_version("41").revision_id("r2").build());
        let router = lambda_router(&[&get, &update]);
        let timeouts = aws_smithy_types::timeout::TimeoutConfig::builder()
            .operation_timeout(OPERATION_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let hanging_sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::Config::builder()
                .with_test_defaults_v2()
                .http_client(NeverClient::new())
                .timeout_config(timeouts)
                .retry_config(fast_retries())
                .build(),
        );
        let notifier = SnsNotifier::new(hanging_sns, "arn:aws:sns:us-east-1:123456789012:coalmine".into());
        let alarms = Alarms::default();
        let mapping = TargetMapping::default();
        let deps = RollbackDeps::new(&router, &notifier, &alarms, &mapping);
        let started = tokio::time::Instant::now();

        let err = handle_alarm(&sample("alarm-lambda-canary.eventbridge.json"), &deps).await.unwrap_err();

        assert_eq!(update.num_calls(), 1, "the rollback happened before the hung publish");
        assert!(err.is_retryable() && err.to_string().contains("sns:Publish"), "{err}");
        let waited = started.elapsed();
        assert!(
            waited >= ATTEMPT_TIMEOUT && waited <= OPERATION_TIMEOUT + Duration::from_secs(1),
            "gave up after {waited:?}"
        );
        assert!(OPERATION_TIMEOUT * 2 < Duration::from_secs(60), "well below both functions' timeouts");
    }
}

/// The SageMaker deployment calls a guardrail release makes, as the API reference
/// shapes them; the release's scenarios run over the in-memory endpoints
/// (`release::guardrail::tests`), since no emulator serves UpdateEndpoint's deployment
/// configs, PendingDeploymentSummary or VariantStatus.
mod guardrails {
    use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointError;
    use aws_sdk_sagemaker::operation::list_tags::ListTagsOutput;
    use aws_sdk_sagemaker::operation::update_endpoint::{UpdateEndpointInput, UpdateEndpointOutput};
    use aws_sdk_sagemaker::types::{
        CapacitySizeType, PendingDeploymentSummary, PendingProductionVariantSummary, ProductionVariantStatus, Tag,
        TrafficRoutingConfigType, VariantStatus,
    };

    use super::*;
    use crate::domain::deployment::{DeploymentPlan, Size, Traffic};
    use crate::domain::stamp::STAMP_TAG;
    use crate::ports::EndpointDeployments;

    const ARN: &str = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ai-model-endpoint";
    const EXECUTION: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-model-8";

    /// `DescribeEndpoint` as the API reference shows it: the config in service, its
    /// variant with 4 instances, and the deployment in flight with its variants' statuses.
    fn described(
        status: EndpointStatus,
        config: &str,
        pending: Option<(&str, &[VariantStatus])>,
    ) -> DescribeEndpointOutput {
        let mut out = DescribeEndpointOutput::builder()
            .endpoint_name("ai-model-endpoint")
            .endpoint_arn(ARN)
            .endpoint_config_name(config)
            .endpoint_status(status)
            .production_variants(
                ProductionVariantSummary::builder()
                    .variant_name("AllTraffic")
                    .current_instance_count(4)
                    .current_weight(1.0)
                    .build(),
            );
        if let Some((pending_config, statuses)) = pending {
            let variant =
                statuses.iter().fold(PendingProductionVariantSummary::builder().variant_name("AllTraffic"), |v, s| {
                    v.variant_status(ProductionVariantStatus::builder().status(s.clone()).build())
                });
            out = out.pending_deployment_summary(
                PendingDeploymentSummary::builder()
                    .endpoint_config_name(pending_config)
                    .production_variants(variant.build())
                    .build(),
            );
        }
        out.build()
    }

    fn live_stamp() -> Tag {
        Tag::builder()
            .key(STAMP_TAG)
            .value("coalmine/1 phase=live execution=Release:ai-model-8 stable=ai-model-config-v7 stage=1/1 release=ai-model-8")
            .build()
    }

    #[tokio::test]
    async fn a_throttled_describe_is_retried_by_the_sdk() {
        let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint)
            .sequence()
            .error(|| DescribeEndpointError::generic(error("ThrottlingException", "Rate exceeded")))
            .output(|| described(EndpointStatus::InService, "ai-model-config-v7", None))
            .build();
        let tags = mock!(aws_sdk_sagemaker::Client::list_tags)
            .then_output(|| ListTagsOutput::builder().tags(live_stamp()).build());
        let router = sagemaker_router(&[&describe, &tags], Duration::ZERO);
        let state = router.endpoint_state("ai-model-endpoint").await.unwrap();
        assert_eq!(
            (state.status.as_str(), state.config.as_str(), describe.num_calls()),
            ("InService", "ai-model-config-v7", 2)
        );
        assert_eq!(state.variants, [("AllTraffic".to_owned(), 4)]);
        assert!(state.stamp.unwrap().is_by(EXECUTION));
    }

    #[tokio::test]
    async fn a_deployment_in_flight_reads_as_its_config_and_its_variants_statuses() {
        let describe = mock!(aws_sdk_sagemaker::Client::describe_endpoint).then_output(|| {
            described(
                EndpointStatus::Updating,
                "ai-model-config-v7",
                Some(("ai-model-config-v8", &[VariantStatus::Creating, VariantStatus::Baking])),
            )
        });
        let tags = mock!(aws_sdk_sagemaker::Client::list_tags).then_output(|| ListTagsOutput::builder().build());
        let router = sagemaker_router(&[&describe, &tags], Duration::ZERO);
        let state = router.endpoint_state("ai-model-endpoint").await.unwrap();
        let pending = state.pending.unwrap();
        assert_eq!((state.status.as_str(), pending.config.as_str()), ("Updating", "ai-model-config-v8"));
        assert_eq!(pending.describe(), "AllTraffic: Baking");
    }

    /// UpdateEndpoint with a blue/green canary: 10% of capacity, the rest after 10 minutes,
    /// a 5-minute termination wait, at most an hour, rolled back by the listed alarms.
    fn guarded_canary(r: &UpdateEndpointInput) -> bool {
        let Some(config) = r.deployment_config() else { return false };
        let policy = config.blue_green_update_policy();
        let routing = policy.and_then(|p| p.traffic_routing_configuration());
        let canary = routing.and_then(|t| t.canary_size());
        let alarms: Vec<&str> = config
            .auto_rollback_configuration()
            .map(|a| a.alarms().iter().filter_map(|a| a.alarm_name()).collect())
            .unwrap_or_default();
        r.endpoint_name() == Some("ai-model-endpoint")
            && r.endpoint_config_name() == Some("ai-model-config-v8")
            && routing.map(|t| t.r#type()) == Some(Some(&TrafficRoutingConfigType::Canary))
            && routing.and_then(|t| t.wait_interval_in_seconds()) == Some(600)
            && canary.map(|c| (c.r#type(), c.value())) == Some((Some(&CapacitySizeType::CapacityPercent), Some(10)))
            && policy.and_then(|p| p.termination_wait_in_seconds()) == Some(300)
            && policy.and_then(|p| p.maximum_execution_timeout_in_seconds()) == Some(3600)
            && alarms == ["coalmine-ai-model-5xx", "coalmine-tripwire-ai-model-endpoint"]
    }

    #[tokio::test]
    async fn a_guarded_deployment_asks_for_blue_green_traffic_shifting_and_auto_rollback_alarms() {
        let guarded = mock!(aws_sdk_sagemaker::Client::update_endpoint)
            .match_requests(guarded_canary)
            .then_output(|| UpdateEndpointOutput::builder().endpoint_arn(ARN).build());
        let plain = mock!(aws_sdk_sagemaker::Client::update_endpoint)
            .match_requests(|r| {
                r.deployment_config().is_none() && r.endpoint_config_name() == Some("ai-model-config-v7")
            })
            .then_output(|| UpdateEndpointOutput::builder().endpoint_arn(ARN).build());
        let router = sagemaker_router(&[&guarded, &plain], Duration::ZERO);
        let plan = DeploymentPlan {
            traffic: Traffic::Canary { size: Size::CapacityPercent(10), wait_seconds: 600 },
            termination_wait_seconds: 300,
            max_execution_seconds: 3600,
            alarms: vec!["coalmine-ai-model-5xx".into(), "coalmine-tripwire-ai-model-endpoint".into()],
        };

        router.deploy("ai-model-endpoint", "ai-model-config-v8", Some(&plan)).await.unwrap();
        router.deploy("ai-model-endpoint", "ai-model-config-v7", None).await.unwrap();

        assert_eq!((guarded.num_calls(), plain.num_calls()), (1, 1));
    }
}

/// The shadow's adapters on answers no emulator gives: CloudWatch Logs' filter limit, a
/// throttled or failed invoke, a model's function error.
mod shadow {
    use aws_sdk_cloudwatchlogs::operation::delete_subscription_filter::DeleteSubscriptionFilterError;
    use aws_sdk_cloudwatchlogs::operation::describe_subscription_filters::DescribeSubscriptionFiltersOutput;
    use aws_sdk_cloudwatchlogs::operation::put_subscription_filter::PutSubscriptionFilterError;
    use aws_sdk_cloudwatchlogs::types::SubscriptionFilter;
    use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
    use aws_sdk_lambda::primitives::Blob;
    use serde_json::json;

    use super::*;
    use crate::domain::shadow::{Compare, Feed, FILTER_PATTERN};
    use crate::ports::{ShadowFeeds, VersionInvoker};

    const SHADOW_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:coalmine-shadow";

    fn feed() -> Feed {
        Feed {
            release: "ai-classifier-7".into(),
            function: "ai-classifier".into(),
            stable: "6".into(),
            candidate: "7".into(),
            sample: 0.1,
            max_payload_bytes: 65_536,
            max_concurrency: 8,
            compare: Compare::Label { pointer: "/label".into() },
            noise_floor: true,
        }
    }

    #[tokio::test]
    async fn the_feed_is_put_on_the_stables_group_pointing_at_the_shadow_function() {
        let put = mock!(aws_sdk_cloudwatchlogs::Client::put_subscription_filter)
            .match_requests(|r| {
                r.log_group_name() == Some("/aws/lambda/ai-classifier")
                    && r.filter_pattern() == Some(FILTER_PATTERN)
                    && r.destination_arn() == Some(SHADOW_ARN)
                    && r.filter_name() == Some(feed().filter_name().as_str())
            })
            .then_output(|| {
                aws_sdk_cloudwatchlogs::operation::put_subscription_filter::PutSubscriptionFilterOutput::builder()
                    .build()
            });
        let feeds = LogFeeds::new(client!(aws_sdk_cloudwatchlogs, [&put]), Some(SHADOW_ARN.into()));
        feeds.open_feed(&feed()).await.unwrap();
        assert_eq!(put.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_group_at_its_filter_limit_refuses_the_feed_naming_the_group() {
        let put = mock!(aws_sdk_cloudwatchlogs::Client::put_subscription_filter).then_error(|| {
            PutSubscriptionFilterError::generic(error("LimitExceededException", "Resource limit exceeded."))
        });
        let feeds = LogFeeds::new(client!(aws_sdk_cloudwatchlogs, [&put]), Some(SHADOW_ARN.into()));
        let refused = feeds.open_feed(&feed()).await.unwrap_err();
        assert!(matches!(refused, Error::Refused(_)), "{refused}");
        assert!(
            refused.to_string().contains("/aws/lambda/ai-classifier already has the two subscription filters"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn two_foreign_filters_refuse_the_check_and_a_feed_already_gone_closes_quietly() {
        let filter = |name: &str| SubscriptionFilter::builder().filter_name(name).build();
        let describe = mock!(aws_sdk_cloudwatchlogs::Client::describe_subscription_filters).then_output(move || {
            DescribeSubscriptionFiltersOutput::builder()
                .subscription_filters(filter("team-log-shipper"))
                .subscription_filters(filter("security-siem"))
                .build()
        });
        let delete = mock!(aws_sdk_cloudwatchlogs::Client::delete_subscription_filter).then_error(|| {
            DeleteSubscriptionFilterError::generic(error(
                "ResourceNotFoundException",
                "The specified subscription filter does not exist.",
            ))
        });
        let feeds = LogFeeds::new(client!(aws_sdk_cloudwatchlogs, [&describe, &delete]), Some(SHADOW_ARN.into()));
        let refused = feeds.check_feed(&feed()).await.unwrap_err();
        assert!(refused.to_string().contains("team-log-shipper, security-siem"), "{refused}");
        feeds.close_feed(&feed()).await.unwrap();
        assert_eq!(delete.num_calls(), 1);
    }

    #[tokio::test]
    async fn without_the_shadow_function_the_feed_does_not_open_and_says_what_to_deploy() {
        let feeds = LogFeeds::new(client!(aws_sdk_cloudwatchlogs, &[] as &[&Rule]), None);
        let refused = feeds.open_feed(&feed()).await.unwrap_err();
        assert!(matches!(refused, Error::Config(ref why) if why.contains("SHADOW_FUNCTION_ARN")), "{refused}");
    }

    #[tokio::test]
    async fn a_version_is_invoked_by_its_qualifier_and_a_function_error_is_the_models_answer() {
        let invoke = mock!(aws_sdk_lambda::Client::invoke)
            .match_requests(|r| r.function_name() == Some("ai-classifier") && r.qualifier() == Some("7"))
            .sequence()
            .output(|| InvokeOutput::builder().status_code(200).payload(Blob::new(r#"{"label":"spam"}"#)).build())
            .output(|| {
                InvokeOutput::builder()
                    .status_code(200)
                    .function_error("Unhandled")
                    .payload(Blob::new(r#"{"errorMessage":"CUDA out of memory"}"#))
                    .build()
            })
            .output(|| InvokeOutput::builder().status_code(200).payload(Blob::new("not json")).build())
            .build();
        let versions = LambdaVersions::from_client(client!(aws_sdk_lambda, [&invoke]));
        let request = json!({"q": 1});
        let ask = || versions.invoke("ai-classifier", "7", &request);
        assert_eq!(ask().await.unwrap().outcome, Ok(json!({"label": "spam"})));
        let failed = ask().await.unwrap().outcome.unwrap_err();
        assert!(failed.starts_with("Unhandled: ") && failed.contains("CUDA out of memory"), "{failed}");
        assert!(ask().await.unwrap().outcome.unwrap_err().contains("not JSON"));
    }

    #[tokio::test]
    async fn a_throttled_invoke_is_retried_and_then_fails_the_request_not_the_model() {
        let invoke = mock!(aws_sdk_lambda::Client::invoke)
            .then_error(|| InvokeError::generic(error("TooManyRequestsException", "Rate Exceeded.")));
        let versions = LambdaVersions::from_client(client!(aws_sdk_lambda, [&invoke]));
        let failed = versions.invoke("ai-classifier", "7", &json!({"q": 1})).await.unwrap_err();
        assert!(matches!(failed, Error::Service { retryable: true, .. }), "{failed}");
        assert_eq!(invoke.num_calls(), 3, "the SDK's standard attempts");
    }
}

mod webhook_tokens {
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_smithy_types::DateTime;

    use super::*;
    use crate::aws::secrets::TOKEN_OVERLAP;
    use crate::ports::WebhookTokens;

    const CURRENT: &str = "current-token-0123456789abcdef0123456789";
    const PREVIOUS: &str = "previous-token-0123456789abcdef012345678";

    /// A secret rotated `ago` seconds ago: the current value stored then, the previous kept.
    fn rotated(ago: u64) -> Vec<Rule> {
        let stored = std::time::SystemTime::now() - Duration::from_secs(ago);
        let current = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .match_requests(|r| r.version_stage() == Some("AWSCURRENT"))
            .then_output(move || {
                GetSecretValueOutput::builder().secret_string(CURRENT).created_date(DateTime::from(stored)).build()
            });
        let previous = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .match_requests(|r| r.version_stage() == Some("AWSPREVIOUS"))
            .then_output(|| GetSecretValueOutput::builder().secret_string(PREVIOUS).build());
        vec![current, previous]
    }

    async fn accepted(ago: u64) -> Vec<String> {
        let rules = rotated(ago);
        let secrets = Secrets::new(client!(aws_sdk_secretsmanager, &rules.iter().collect::<Vec<_>>()));
        WebhookSecret::new(secrets, Some("coalmine/webhook".into())).tokens(None).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_second_mismatch_a_moment_after_a_fresh_read_is_not_refused_but_left_to_a_retry() {
        let rules = rotated(600);
        let secrets = Secrets::new(client!(aws_sdk_secretsmanager, &rules.iter().collect::<Vec<_>>()));
        let tokens = WebhookSecret::new(secrets, Some("coalmine/webhook".into()));
        // The first request reads the secret; its own recheck takes that read as fresh.
        let first = std::time::Instant::now();
        assert!(tokens.tokens(None).await.unwrap().is_some());
        assert!(tokens.tokens(Some(first)).await.unwrap().is_some(), "read after it arrived: fresh");
        // A second request a moment later, whose token matched nothing kept: try again.
        let second = std::time::Instant::now();
        assert_eq!(tokens.tokens(Some(second)).await.unwrap(), None, "read two seconds ago at most: try again");
        assert!(tokens.tokens(None).await.unwrap().is_some(), "a match needs no fresh read");
        assert_eq!(rules[0].num_calls(), 1, "one read of the secret");
    }

    #[tokio::test]
    async fn the_replaced_token_is_accepted_through_the_stated_overlap_and_not_after() {
        assert_eq!(accepted(600).await, [CURRENT, PREVIOUS], "ten minutes after the rotation");
        assert_eq!(accepted(TOKEN_OVERLAP.as_secs() + 60).await, [CURRENT], "an hour and a minute after it");
    }
}
