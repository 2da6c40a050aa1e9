//! Helpers for tests and the demo against the local AWS (MiniStack + moto, started by
//! `scripts/local-aws`): SDK config, seeded canaries, a topic read back through SQS,
//! tagged alarms, sample events rewritten for a test's own names, and the real
//! bootstraps created as functions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{AliasRoutingConfiguration, FunctionCode, Runtime};
use aws_sdk_sagemaker::types::{ProductionVariant, ProductionVariantInstanceType};
use coalmine::aws::{CloudWatchAlarms, SnsNotifier};
use coalmine::clouds::{CloudMetrics, CloudRouter, Clouds};
use coalmine::config::Config;
use coalmine::domain::mapping::TargetMapping;
use coalmine::ports::TrafficRouter;
use coalmine::release::core::{Adapters, StepDeps};
use coalmine::release::judge::evalues::inverse_normal_cdf;
use coalmine::Split;
use coalmine::Target;
use coalmine_emf::Metrics;
use serde_json::Value;

pub mod azure;
pub mod browser;
pub mod operator;
pub mod proxy;
pub mod sagemaker;
pub mod shadow;

pub const ACCOUNT: &str = "000000000000";
pub const REGION: &str = "us-east-1";
/// The code of the functions that stand for a team's model handler: never invoked,
/// only versioned and aliased.
const PLACEHOLDER_CODE: &[u8] = b"#!/bin/sh\necho '{}'\n";
pub const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/coalmine-local";

/// Found at run time, not baked in: cargo does not rebuild a crate when its clone moves,
/// so a warm target directory shared by two clones (CI's cache) would carry the other
/// clone's path. `cargo test` sets CARGO_MANIFEST_DIR; the demo and bench binaries run
/// from the workspace root.
pub fn workspace_root() -> PathBuf {
    if let Some(tests_dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        return Path::new(&tests_dir).parent().expect("tests/ sits in the workspace").to_path_buf();
    }
    let here = std::env::current_dir().expect("a current directory");
    here.ancestors()
        .find(|dir| dir.join("tests/Cargo.toml").is_file() && dir.join("infra").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
        })
}

/// A name no other test (or earlier run against the same emulator) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("{prefix}-{:x}{:x}-{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A folder of the test's (or the demo's) own under the system's temp dir, removed with
/// everything in it when dropped, on every exit path a drop runs on.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What most integration tests start from: the local AWS, a topic read back through
/// SQS, and the library's adapters publishing to it.
pub struct Scene {
    pub local: LocalAws,
    pub inbox: Inbox,
    pub aws: Clouds,
    pub config: Config,
}

/// A Lambda canary not started yet (version 2 at 0% behind `live`) and its gate alarm.
pub struct Canary {
    pub function: String,
    pub target: Target,
    pub alarm: String,
}

impl Scene {
    pub async fn connect() -> Scene {
        let local = LocalAws::connect().await;
        let inbox = local.topic_with_queue(&unique("coalmine-topic")).await;
        let (aws, config) = local.adapters(&inbox.topic_arn);
        Scene { local, inbox, aws, config }
    }

    pub fn step_deps(&self) -> Adapters<'_, CloudRouter, SnsNotifier, CloudWatchAlarms, CloudMetrics> {
        StepDeps::new(&self.aws.router, &self.aws.notifier, &self.aws.alarms, &self.aws.metrics)
    }

    /// `tagged`: the alarm carries the canary's target tag, as the rollback function needs.
    pub async fn lambda_canary(&self, tagged: bool) -> Canary {
        let function = unique("ai-handler");
        let target = self.local.seed_lambda_canary(&function, 0.0).await;
        let alarm = unique("canary-errors");
        self.local.put_alarm(&alarm, tagged.then(|| target.to_string()).as_deref()).await;
        Canary { function, target, alarm }
    }
}

/// Clients for the local AWS, configured the way the functions configure themselves:
/// from `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_SAGEMAKER` in the environment.
pub struct LocalAws {
    pub sdk: aws_config::SdkConfig,
    pub lambda: aws_sdk_lambda::Client,
    pub sagemaker: aws_sdk_sagemaker::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl LocalAws {
    pub async fn connect() -> Self {
        for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER"] {
            let value = std::env::var(var).unwrap_or_default();
            assert!(
                value.starts_with("http://127.0.0.1:"),
                "{var}={value:?}: start the local AWS and load its environment first \
                 (`scripts/local-aws start && source .local-aws/env`, which `make test` does)"
            );
        }
        Self::from_sdk(coalmine::aws::sdk_config().await)
    }

    pub fn from_sdk(sdk: aws_config::SdkConfig) -> Self {
        LocalAws {
            lambda: aws_sdk_lambda::Client::new(&sdk),
            sagemaker: aws_sdk_sagemaker::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            sfn: aws_sdk_sfn::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sdk,
        }
    }

    /// The library's adapters, as the functions build them.
    pub fn adapters(&self, topic_arn: &str) -> (Clouds, Config) {
        let config = Config {
            topic_arn: topic_arn.to_owned(),
            rollback_targets: TargetMapping::default(),
            sagemaker_max_wait: Duration::from_secs(10),
            shadow_function_arn: None,
            azure_credentials_secret: None,
            azure_max_wait: Duration::from_secs(10),
            webhook_secret: None,
            handoff_function: None,
            claims_table: None,
            cohorts: None,
        };
        (Clouds::new(&self.sdk, &config), config)
    }

    /// A function with versions 1 (stable) and 2 (canary) behind alias `live`, the
    /// canary at `canary_weight`.
    pub async fn seed_lambda_canary(&self, function: &str, canary_weight: f64) -> Target {
        let code = zip_bootstrap(PLACEHOLDER_CODE);
        self.lambda
            .create_function()
            .function_name(function)
            .runtime(Runtime::Providedal2023)
            .role(ROLE_ARN)
            .handler("bootstrap")
            .code(FunctionCode::builder().zip_file(Blob::new(code)).build())
            .send()
            .await
            .expect("create function");
        let stable = self.lambda.publish_version().function_name(function).send().await.expect("publish v1");
        let canary = self.publish_next_version(function).await;
        let mut alias = self
            .lambda
            .create_alias()
            .function_name(function)
            .name("live")
            .function_version(stable.version.unwrap_or_default());
        if canary_weight > 0.0 {
            alias = alias.routing_config(
                AliasRoutingConfiguration::builder().additional_version_weights(canary, canary_weight).build(),
            );
        }
        alias.send().await.expect("create alias");
        Target::lambda(function, "live")
    }

    /// Publishes one more version of a seeded function (a new model release); returns it.
    pub async fn publish_next_version(&self, function: &str) -> String {
        let code = zip_bootstrap(PLACEHOLDER_CODE);
        self.lambda
            .update_function_code()
            .function_name(function)
            .zip_file(Blob::new(code))
            .send()
            .await
            .expect("update code");
        self.lambda.publish_version().function_name(function).send().await.expect("publish").version.unwrap_or_default()
    }

    /// (stable version, canary weights, RevisionId) of a seeded alias.
    pub async fn alias_state(&self, target: &Target) -> (String, HashMap<String, f64>, String) {
        let Target::Lambda(alias) = target else { panic!("{target} is not a Lambda alias") };
        let out =
            self.lambda.get_alias().function_name(&alias.function).name(&alias.alias).send().await.expect("get alias");
        (
            out.function_version.unwrap_or_default(),
            out.routing_config.and_then(|r| r.additional_version_weights).unwrap_or_default(),
            out.revision_id.unwrap_or_default(),
        )
    }

    /// An endpoint with variants `stable` and `canary`, the canary at `canary_weight`.
    pub async fn seed_sagemaker_canary(&self, endpoint: &str, canary_weight: f32) -> Target {
        self.seed_sagemaker_endpoint(endpoint, &[("stable", 1.0 - canary_weight), ("canary", canary_weight)]).await;
        Target::sagemaker(endpoint, "stable", "canary")
    }

    /// An endpoint in service with these production variants (name, weight), one model each.
    pub async fn seed_sagemaker_endpoint(&self, endpoint: &str, variants: &[(&str, f32)]) {
        for (model, _) in variants {
            self.add_model(endpoint, model).await;
        }
        let same_model: Vec<(&str, &str, f32)> =
            variants.iter().map(|(name, weight)| (*name, *name, *weight)).collect();
        self.add_endpoint_config(endpoint, &format!("{endpoint}-config"), &same_model).await;
        self.sagemaker
            .create_endpoint()
            .endpoint_name(endpoint)
            .endpoint_config_name(format!("{endpoint}-config"))
            .send()
            .await
            .expect("create endpoint");
    }

    /// An endpoint config with variants (name, model, weight), where model names one of
    /// `endpoint`'s models (created as `ENDPOINT-MODEL`), one instance per variant.
    pub async fn add_endpoint_config(&self, endpoint: &str, config: &str, variants: &[(&str, &str, f32)]) {
        self.sagemaker
            .create_endpoint_config()
            .endpoint_config_name(config)
            .set_production_variants(Some(
                variants
                    .iter()
                    .map(|(name, model, weight)| production_variant(endpoint, name, model, *weight, 1))
                    .collect(),
            ))
            .send()
            .await
            .expect("create endpoint config");
    }

    /// Variant name → current weight.
    pub async fn variant_weights(&self, endpoint: &str) -> HashMap<String, f32> {
        let out = self.sagemaker.describe_endpoint().endpoint_name(endpoint).send().await.expect("describe endpoint");
        out.production_variants
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.variant_name.unwrap_or_default(), v.current_weight.unwrap_or_default()))
            .collect()
    }

    /// A topic with a queue subscribed to it, so tests read back what was published.
    pub async fn topic_with_queue(&self, name: &str) -> Inbox {
        let topic_arn =
            self.sns.create_topic().name(name).send().await.expect("create topic").topic_arn.unwrap_or_default();
        let queue_url =
            self.sqs.create_queue().queue_name(name).send().await.expect("create queue").queue_url.unwrap_or_default();
        let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
        self.sns
            .subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .send()
            .await
            .expect("subscribe queue");
        Inbox { topic_arn, queue_url, sqs: self.sqs.clone() }
    }

    /// A metric alarm named `name`, tagged `coalmine:target` = `target_tag` when given.
    /// It watches a metric nobody puts, so only the test moves it (`set_alarm`): an
    /// alarm on `AWS/Lambda Errors` would follow whatever traffic the test puts.
    pub async fn put_alarm(&self, name: &str, target_tag: Option<&str>) -> String {
        let mut request = self
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("Coalmine/Test")
            .metric_name("CanaryErrors")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(5.0)
            .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold);
        if let Some(tag) = target_tag {
            request = request.tags(
                aws_sdk_cloudwatch::types::Tag::builder().key(coalmine::domain::event::TARGET_TAG).value(tag).build(),
            );
        }
        request.send().await.expect("put alarm");
        alarm_arn(name)
    }

    /// Creates a function from a real bootstrap binary, with the local AWS endpoints in
    /// its environment (MiniStack gives functions none of their own).
    pub async fn create_function_from(&self, name: &str, bootstrap: &Path, env: &[(&str, &str)]) -> String {
        let binary = std::fs::read(bootstrap)
            .unwrap_or_else(|e| panic!("{}: {e}; build it first (`make test` does)", bootstrap.display()));
        let mut vars: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // The local AWS, unless the test puts something in front of it (a fault proxy).
        for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER"] {
            vars.entry(var.into()).or_insert_with(|| std::env::var(var).unwrap_or_default());
        }
        vars.insert("RUST_LOG".into(), "info".into());
        // A debug bootstrap is tens of megabytes, and MiniStack unpacks it while it serves
        // every other test: setup waits longer than the functions' own calls do.
        let patient = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(Duration::from_secs(120))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let lambda = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&self.sdk).timeout_config(patient).build(),
        );
        let created = lambda
            .create_function()
            .function_name(name)
            .runtime(Runtime::Providedal2023)
            .role(ROLE_ARN)
            .handler("bootstrap")
            .timeout(60)
            .code(FunctionCode::builder().zip_file(Blob::new(zip_bootstrap(&binary))).build())
            .environment(aws_sdk_lambda::types::Environment::builder().set_variables(Some(vars)).build())
            .send()
            .await;
        match created {
            Ok(out) => out.function_arn.unwrap_or_default(),
            // CreateFunction is not idempotent: an attempt that outlived the SDK's timeout
            // on a busy machine created the function, and the retry finds it. The name is
            // this test's own, so it is the function just created.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_conflict_exception()) => {
                let existing = self.lambda.get_function().function_name(name).send().await.expect("get function");
                existing.configuration.and_then(|c| c.function_arn).unwrap_or_default()
            }
            Err(e) => panic!("create function from bootstrap: {e:?}"),
        }
    }
}

impl LocalAws {
    /// Puts the metrics CloudWatch would hold for one side of a target at `at` (epoch
    /// seconds): requests, errors, and latency samples (ms for Lambda, µs for SageMaker).
    pub async fn put_side_metrics(
        &self,
        target: &Target,
        id: &str,
        at: u64,
        requests: f64,
        errors: f64,
        latencies: &[f64],
    ) {
        let dim = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
        let (metrics, dims) = match target {
            Target::Lambda(a) => (
                ("AWS/Lambda", ["Invocations", "Errors", "Duration"]),
                vec![
                    dim("FunctionName", &a.function),
                    dim("Resource", &format!("{}:{}", a.function, a.alias)),
                    dim("ExecutedVersion", id),
                ],
            ),
            Target::Sagemaker(s) => {
                (sagemaker::SAGEMAKER_METRICS, vec![dim("EndpointName", &s.endpoint), dim("VariantName", id)])
            }
            Target::Azureml(_) => panic!("an Azure ML endpoint's metrics are Azure Monitor's, not CloudWatch's"),
            Target::LambdaCohort(_) => {
                panic!("a cohort's sides are metered per alias: put them with put_cohort_metrics")
            }
        };
        self.put_metrics(metrics, dims, at, requests, errors, latencies).await;
    }

    /// As [`Self::put_side_metrics`] for a cohort's side: the candidate metered through the
    /// cohort alias, the stable through the primary one, as Lambda meters each alias; and
    /// the same requests as its routers publish them (decision 0021), the candidate's as
    /// drawn units' and the stable's as the stable's, spread evenly over the replicate
    /// groups, in one call.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_cohort_metrics(
        &self,
        target: &Target,
        id: &str,
        role: coalmine::domain::target::Role,
        at: u64,
        requests: f64,
        errors: f64,
        latencies: &[f64],
    ) {
        let dims = target
            .metric_dimensions(id, None, role)
            .into_iter()
            .map(|(name, value)| Dimension::builder().name(name).value(value).build())
            .collect();
        self.put_metrics(("AWS/Lambda", ["Invocations", "Errors", "Duration"]), dims, at, requests, errors, latencies)
            .await;
        let assignment = match role {
            coalmine::domain::target::Role::Candidate => "drawn",
            coalmine::domain::target::Role::Stable => "stable",
        };
        self.put_router_metrics(target, id, assignment, at, requests, errors, latencies).await;
    }

    /// What a cohort's routers publish for `requests` served by version `id` to units
    /// assigned `assignment`: whole, and spread evenly over the sixteen replicate groups.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_router_metrics(
        &self,
        target: &Target,
        id: &str,
        assignment: &str,
        at: u64,
        requests: f64,
        errors: f64,
        latencies: &[f64],
    ) {
        use coalmine_router::metrics::{ERRORS, LATENCY, NAMESPACE, REQUESTS};
        let units = target.unit_metrics().expect("a cohort target");
        let when = aws_sdk_cloudwatch::primitives::DateTime::from_secs(at as i64);
        let groups = f64::from(coalmine_router::REPLICATES);
        let mut put = self.cloudwatch.put_metric_data().namespace(NAMESPACE);
        let replicates = (0..coalmine_router::REPLICATES).map(Some);
        for replicate in std::iter::once(None).chain(replicates) {
            let dims: Vec<Dimension> = units
                .dimensions(id, assignment, replicate)
                .into_iter()
                .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                .collect();
            let share = if replicate.is_some() { 1.0 / groups } else { 1.0 };
            let datum = |name: &str| {
                MetricDatum::builder().metric_name(name).set_dimensions(Some(dims.clone())).timestamp(when)
            };
            put = put
                .metric_data(datum(REQUESTS).value(requests * share).build())
                .metric_data(datum(ERRORS).value(errors * share).build())
                .metric_data(datum(LATENCY).set_values(Some(latencies.to_vec())).build());
        }
        put.send().await.expect("put the routers' metrics");
    }

    /// The stack's served table, as the template makes it: which version served each
    /// cohort unit, by `profile` and `unit`.
    pub async fn served_table(&self) -> String {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let name = unique("coalmine-served");
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.sdk);
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("a key")
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("an attribute")
        };
        dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("profile", KeyType::Hash))
            .key_schema(key("unit", KeyType::Range))
            .attribute_definitions(attribute("profile"))
            .attribute_definitions(attribute("unit"))
            .send()
            .await
            .expect("the served table");
        name
    }

    /// The stack's AppConfig application, environment and no-bake deployment strategy, as
    /// the template makes them: the stepper's `COHORTS_*` environment.
    pub async fn cohort_store(&self) -> CohortStore {
        let appconfig = aws_sdk_appconfig::Client::new(&self.sdk);
        let application = appconfig
            .create_application()
            .name(unique("coalmine-cohorts"))
            .send()
            .await
            .expect("the cohorts' application")
            .id
            .expect("an application id");
        let environment = appconfig
            .create_environment()
            .application_id(&application)
            .name("routers")
            .send()
            .await
            .expect("the routers' environment")
            .id
            .expect("an environment id");
        let strategy = appconfig
            .create_deployment_strategy()
            .name(unique("cohort-at-once"))
            .deployment_duration_in_minutes(0)
            .final_bake_time_in_minutes(0)
            .growth_factor(100.0)
            .growth_type(aws_sdk_appconfig::types::GrowthType::Linear)
            .replicate_to(aws_sdk_appconfig::types::ReplicateTo::None)
            .send()
            .await
            .expect("the no-bake strategy")
            .id
            .expect("a strategy id");
        CohortStore { application, environment, strategy }
    }

    /// A model (see [`Self::seed_model`]) whose primary alias `live` and cohort alias
    /// `canary` both serve version 1; version 2 is the candidate.
    pub async fn seed_cohort_model(&self, stable: &str, candidate: &str) -> Target {
        let function = self.seed_model(stable, candidate).await;
        self.lambda
            .create_alias()
            .function_name(&function)
            .name("canary")
            .function_version("1")
            .send()
            .await
            .expect("the cohort alias");
        format!("lambda-cohort:{function}:live:canary").parse().expect("a cohort target")
    }

    /// Puts requests, errors and latency samples at `at` (epoch seconds) under `dims`, as
    /// `(namespace, [requests, errors, latency])` name them.
    pub async fn put_metrics(
        &self,
        (namespace, names): (&str, [&str; 3]),
        dims: Vec<Dimension>,
        at: u64,
        requests: f64,
        errors: f64,
        latencies: &[f64],
    ) {
        let when = aws_sdk_cloudwatch::primitives::DateTime::from_secs(at as i64);
        let datum =
            |name: &str| MetricDatum::builder().metric_name(name).set_dimensions(Some(dims.clone())).timestamp(when);
        self.cloudwatch
            .put_metric_data()
            .namespace(namespace)
            .metric_data(datum(names[0]).value(requests).build())
            .metric_data(datum(names[1]).value(errors).build())
            .metric_data(datum(names[2]).set_values(Some(latencies.to_vec())).build())
            .send()
            .await
            .expect("put metric data");
    }

    /// An alarm already `OK`, as a release's gate is before anything goes wrong: a new
    /// one is `INSUFFICIENT_DATA` until set, and nobody puts its metric here.
    pub async fn put_quiet_alarm(&self, name: &str, target_tag: Option<&str>) -> String {
        let arn = self.put_alarm(name, target_tag).await;
        self.set_alarm(name, aws_sdk_cloudwatch::types::StateValue::Ok).await;
        arn
    }

    pub async fn set_alarm(&self, name: &str, state: aws_sdk_cloudwatch::types::StateValue) {
        self.cloudwatch
            .set_alarm_state()
            .alarm_name(name)
            .state_value(state)
            .state_reason("set by the test")
            .send()
            .await
            .expect("set alarm state");
    }
}

/// The deployed system as `sam deploy` would leave it, in the local AWS: the real
/// bootstraps as functions, the real ASL as a state machine.
pub struct Deployed {
    pub rollback_fn: String,
    pub stepper_fn: String,
    pub state_machine_arn: String,
}

/// Where a stack publishes cohorts: AppConfig ids.
pub struct CohortStore {
    pub application: String,
    pub environment: String,
    pub strategy: String,
}

impl CohortStore {
    /// The stepper's environment naming it.
    pub fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("COHORTS_APPLICATION", &self.application),
            ("COHORTS_ENVIRONMENT", &self.environment),
            ("COHORTS_DEPLOYMENT_STRATEGY", &self.strategy),
        ]
    }
}

impl LocalAws {
    pub async fn deploy(&self, topic_arn: &str) -> Deployed {
        self.deploy_with(topic_arn, &[]).await
    }

    /// The stack's claims table (one release per target), as the template makes it.
    pub async fn claims_table(&self) -> String {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let name = unique("coalmine-claims");
        self.dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("target")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attribute"),
            )
            .key_schema(
                KeySchemaElement::builder().attribute_name("target").key_type(KeyType::Hash).build().expect("key"),
            )
            .send()
            .await
            .expect("create the claims table");
        name
    }

    /// As [`Self::deploy`], with more environment for the rollback and stepper functions.
    pub async fn deploy_with(&self, topic_arn: &str, extra: &[(&str, &str)]) -> Deployed {
        let shadow_arn = self.create_function_from(&unique("coalmine-shadow"), &bootstrap_path("shadow"), &[]).await;
        let claims = self.claims_table().await;
        let mut env = vec![
            ("SNS_TOPIC_ARN", topic_arn),
            ("SAGEMAKER_UPDATE_MAX_WAIT_SECONDS", "20"),
            ("SHADOW_FUNCTION_ARN", &shadow_arn),
            ("CLAIMS_TABLE", &claims),
        ];
        env.extend_from_slice(extra);
        let rollback_fn = unique("coalmine-rollback");
        self.create_function_from(&rollback_fn, &bootstrap_path("rollback"), &env).await;
        let stepper_fn = unique("coalmine-stepper");
        let stepper_arn = self.create_function_from(&stepper_fn, &bootstrap_path("stepper"), &env).await;
        let asl = std::fs::read_to_string(workspace_root().join("infra/statemachine/release.asl.json")).expect("ASL");
        let definition = asl.replace("${StepperFunctionArn}", &stepper_arn);
        assert!(!definition.contains("${"), "every substitution filled in");
        let state_machine_arn = self
            .sfn
            .create_state_machine()
            .name(unique("coalmine-release"))
            .definition(definition)
            .role_arn(ROLE_ARN)
            .send()
            .await
            .expect("create state machine")
            .state_machine_arn;
        Deployed { rollback_fn, stepper_fn, state_machine_arn }
    }

    pub async fn start_release(&self, deployed: &Deployed, release: &Value) -> String {
        self.start_release_named(deployed, &unique("release"), release).await
    }

    pub async fn start_release_named(&self, deployed: &Deployed, name: &str, release: &Value) -> String {
        self.sfn
            .start_execution()
            .state_machine_arn(&deployed.state_machine_arn)
            .name(name)
            .input(release.to_string())
            .send()
            .await
            .expect("start execution")
            .execution_arn
    }

    /// Waits for the execution to end; returns (status, error, cause, output).
    pub async fn finished(&self, execution_arn: &str, within: Duration) -> (String, String, String, Value) {
        poll(within, || async {
            let out =
                self.sfn.describe_execution().execution_arn(execution_arn).send().await.expect("describe execution");
            let status = out.status.as_str().to_owned();
            (status != "RUNNING").then(|| {
                (
                    status,
                    out.error.unwrap_or_default(),
                    out.cause.unwrap_or_default(),
                    out.output.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or(Value::Null),
                )
            })
        })
        .await
        .unwrap_or_else(|| panic!("execution {execution_arn} still running after {within:?}"))
    }

    /// A Secrets Manager secret holding `text`; its ARN.
    pub async fn put_secret(&self, name: &str, text: &str) -> String {
        let secrets = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let out = secrets.create_secret().name(name).secret_string(text).send().await.expect("create secret");
        out.arn.expect("the secret's ARN")
    }

    /// A public function URL (`AuthType` NONE) on `function`, as MiniStack serves it on
    /// its own port: `http://127.0.0.1:PORT/_aws/lambda-url/ID/`.
    pub async fn function_url(&self, function: &str) -> String {
        let out = self
            .lambda
            .create_function_url_config()
            .function_name(function)
            .auth_type(aws_sdk_lambda::types::FunctionUrlAuthType::None)
            .send()
            .await
            .expect("create function URL");
        let id = out.function_url.trim_start_matches("https://").split('.').next().unwrap_or_default().to_owned();
        format!("{}/_aws/lambda-url/{id}/", std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL"))
    }

    /// Invokes `function` and waits for its answer: its result, or its error as the
    /// runtime reports it (`errorType`, `errorMessage`).
    pub async fn invoke(&self, function: &str, event: &Value) -> Result<Value, (String, String)> {
        let out = self
            .lambda
            .invoke()
            .function_name(function)
            .payload(Blob::new(serde_json::to_vec(event).expect("JSON")))
            .send()
            .await
            .expect("invoke");
        let payload: Value =
            out.payload.map(|p| serde_json::from_slice(p.as_ref()).unwrap_or(Value::Null)).unwrap_or_default();
        match out.function_error {
            None => Ok(payload),
            Some(_) => Err((
                payload["errorType"].as_str().unwrap_or_default().to_owned(),
                payload["errorMessage"].as_str().unwrap_or_default().to_owned(),
            )),
        }
    }

    /// The real rollback function alone, publishing to `topic_arn`, with `extra` in its
    /// environment; its name.
    pub async fn rollback_function(&self, topic_arn: &str, extra: &[(&str, &str)]) -> String {
        let mut env = vec![("SNS_TOPIC_ARN", topic_arn), ("SAGEMAKER_UPDATE_MAX_WAIT_SECONDS", "20")];
        env.extend_from_slice(extra);
        let name = unique("coalmine-rollback");
        self.create_function_from(&name, &bootstrap_path("rollback"), &env).await;
        name
    }

    pub async fn invoke_async(&self, function: &str, event: &Value) {
        let out = self
            .lambda
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(Blob::new(serde_json::to_vec(event).expect("JSON")))
            .send()
            .await
            .expect("async invoke");
        assert_eq!(out.status_code, 202);
    }
}

impl Deployed {
    /// The stack's dead-man's switch: the state machine's executions that end failed,
    /// timed out or stopped go to the rollback function, by an EventBridge rule with the
    /// template's pattern (MiniStack emits the status changes, and delivers them).
    pub async fn watch_executions(&self, local: &LocalAws) {
        let events = aws_sdk_eventbridge::Client::new(&local.sdk);
        let rule = unique("coalmine-execution-ended");
        let pattern = serde_json::json!({
            "source": ["aws.states"],
            "detail-type": ["Step Functions Execution Status Change"],
            "detail": {"stateMachineArn": [self.state_machine_arn], "status": ["FAILED", "TIMED_OUT", "ABORTED"]},
        });
        events.put_rule().name(&rule).event_pattern(pattern.to_string()).send().await.expect("put rule");
        let function = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}", self.rollback_fn);
        let target =
            aws_sdk_eventbridge::types::Target::builder().id("rollback").arn(function).build().expect("target");
        let out = events.put_targets().rule(&rule).targets(target).send().await.expect("put targets");
        assert_eq!(out.failed_entry_count, 0, "{out:?}");
    }

    /// The ARN an execution named `name` gets: known before it starts.
    pub fn execution_arn(&self, name: &str) -> String {
        format!("{}:{name}", self.state_machine_arn.replacen(":stateMachine:", ":execution:", 1))
    }
}

/// Healthy traffic on both sides of a target, put into CloudWatch every half second as
/// it would record it, until dropped.
pub struct Traffic(tokio::task::JoinHandle<()>);

impl LocalAws {
    /// Healthy traffic of [`TRAFFIC_PER_MINUTE`] requests, split between the versions
    /// (or variants) as the target routes it at that moment, put every half second; first
    /// the stable's last ten minutes, as a stable that served before the release shows.
    /// `canary` (the version or variant under release) errs not at all, before or after
    /// a promotion; any other errs at 0.5%.
    pub async fn pump_healthy_traffic(&self, target: &Target, canary: &str) -> Traffic {
        let local = LocalAws::from_sdk(self.sdk.clone());
        let (aws, _) = local.adapters("arn:aws:sns:us-east-1:000000000000:unused");
        let split = aws.router.read(target).await.expect("the target to send traffic to");
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let errors = TRAFFIC_PER_MINUTE * 0.005;
        for minute in 1..=10 {
            let at = now() - minute * 60;
            let latencies = latencies(target, 800.0);
            if matches!(target, Target::LambdaCohort(_)) {
                let stable = coalmine::domain::target::Role::Stable;
                local
                    .put_cohort_metrics(target, &split.stable, stable, at, TRAFFIC_PER_MINUTE, errors, &latencies)
                    .await
            } else {
                local.put_side_metrics(target, &split.stable, at, TRAFFIC_PER_MINUTE, errors, &latencies).await
            }
        }
        let (target, canary) = (target.clone(), canary.to_owned());
        Traffic(tokio::spawn(async move {
            let per_put = TRAFFIC_PER_MINUTE / 120.0;
            use coalmine::domain::target::Role;
            let serve = |id: String, requests: f64, role: Option<Role>| {
                let (local, target) = (&local, &target);
                let (error_rate, p95) = if id == canary { (0.0, 850.0) } else { (0.005, 800.0) };
                async move {
                    let latencies = latencies(target, p95);
                    let errors = requests * error_rate;
                    match role {
                        Some(role) => {
                            local.put_cohort_metrics(target, &id, role, now(), requests, errors, &latencies).await
                        }
                        None => local.put_side_metrics(target, &id, now(), requests, errors, &latencies).await,
                    }
                }
            };
            loop {
                // A read that fails (the target is being written) skips a beat.
                if let Ok(split) = aws.router.read(&target).await {
                    let serves_canary = split.canary.clone().filter(|_| !split.canary_is_zero());
                    if matches!(target, Target::LambdaCohort(_)) {
                        // A router sends a tenth of the units to the cohort alias, whatever it
                        // serves (the candidate, both at 100%, or the stable after a rollback).
                        let cohort_alias = serves_canary.unwrap_or_else(|| split.stable.clone());
                        serve(cohort_alias, per_put * 0.1, Some(Role::Candidate)).await;
                        serve(split.stable.clone(), per_put * 0.9, Some(Role::Stable)).await;
                    } else {
                        let weight = if serves_canary.is_some() { split.canary_weight } else { 0.0 };
                        if let Some(id) = serves_canary {
                            serve(id, per_put * weight, None).await;
                        }
                        serve(split.stable.clone(), per_put * (1.0 - weight), None).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}

/// What [`LocalAws::pump_healthy_traffic`] sends: enough that a 5% stage of two seconds
/// sees a hundred requests.
pub const TRAFFIC_PER_MINUTE: f64 = 72_000.0;

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Twenty latency samples whose p95 is about `p95_ms`: Lambda reports Duration in ms,
/// SageMaker ModelLatency in µs.
pub fn latencies(target: &Target, p95_ms: f64) -> Vec<f64> {
    let unit = if matches!(target, Target::Sagemaker(_)) { 1000.0 } else { 1.0 };
    latencies_ms(p95_ms).into_iter().map(|ms| ms * unit).collect()
}

/// Twenty latency samples (ms) whose p95 is about `p95_ms`.
pub fn latencies_ms(p95_ms: f64) -> Vec<f64> {
    (1..=20).map(|i| p95_ms * f64::from(i) / 19.0).collect()
}

pub fn alarm_arn(name: &str) -> String {
    format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}")
}

/// A variant `name` serving `endpoint`'s model `ENDPOINT-MODEL` on `instances` instances.
pub fn production_variant(endpoint: &str, name: &str, model: &str, weight: f32, instances: i32) -> ProductionVariant {
    ProductionVariant::builder()
        .variant_name(name)
        .model_name(format!("{endpoint}-{model}"))
        .initial_instance_count(instances)
        .instance_type(ProductionVariantInstanceType::MlM5Large)
        .initial_variant_weight(weight)
        .build()
}

/// A debug or release bootstrap built by cargo for this machine, which MiniStack runs
/// on the host: `$COALMINE_BIN_DIR/NAME`, else the workspace's `target/debug/NAME`.
pub fn bootstrap_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("COALMINE_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("debug")
    });
    dir.join(name)
}

/// A zip holding one executable file named `bootstrap`, as Lambda's custom runtimes want.
pub fn zip_bootstrap(binary: &[u8]) -> Vec<u8> {
    zip::store_one("bootstrap", binary, 0o755)
}

/// Messages published to a topic, read back through its subscribed queue.
pub struct Inbox {
    pub topic_arn: String,
    queue_url: String,
    sqs: aws_sdk_sqs::Client,
}

/// One SNS message as SQS received it (the SNS JSON envelope).
#[derive(Clone, Debug)]
pub struct Received {
    pub subject: String,
    pub message: String,
    pub attributes: HashMap<String, String>,
}

impl Received {
    pub fn event(&self) -> &str {
        self.attributes.get("event").map(String::as_str).unwrap_or_default()
    }
    pub fn target(&self) -> &str {
        self.attributes.get("target").map(String::as_str).unwrap_or_default()
    }
}

impl Inbox {
    /// Receives until `want` messages arrived or `within` passed; returns what came.
    pub async fn receive(&self, want: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let mut received = Vec::new();
        while received.len() < want && Instant::now() < deadline {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            for message in out.messages.unwrap_or_default() {
                let envelope: Value = serde_json::from_str(message.body().unwrap_or_default()).expect("SNS envelope");
                let attributes = envelope["MessageAttributes"]
                    .as_object()
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| (k.clone(), v["Value"].as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                received.push(Received {
                    subject: envelope["Subject"].as_str().unwrap_or_default().to_owned(),
                    message: envelope["Message"].as_str().unwrap_or_default().to_owned(),
                    attributes,
                });
                if let Some(handle) = message.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("delete");
                }
            }
        }
        received
    }

    /// Waits out `quiet` and returns anything that arrived: for "no (more) messages".
    pub async fn drain(&self, quiet: Duration) -> Vec<Received> {
        self.receive(usize::MAX, quiet).await
    }
}

/// A sample event from `events/`, rewritten to name `alarm` (its name and ARN) and, for
/// dimensions, the given Lambda function's alias `live`. SNS samples are rewritten inside
/// their JSON message.
pub fn sample_event(file: &str, alarm: &str, function: Option<&str>) -> Value {
    let path = workspace_root().join("events").join(file);
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut event: Value = serde_json::from_str(&raw).expect("sample event is JSON");
    if let Some(records) = event.get_mut("Records").and_then(Value::as_array_mut) {
        for record in records {
            let message = &mut record["Sns"]["Message"];
            let mut notification: Value =
                serde_json::from_str(message.as_str().unwrap_or_default()).expect("alarm JSON");
            notification["AlarmName"] = serde_json::json!(alarm);
            notification["AlarmArn"] = serde_json::json!(alarm_arn(alarm));
            if let Some(function) = function {
                name_function(&mut notification["Trigger"], function);
            }
            *message = serde_json::json!(notification.to_string());
        }
        return event;
    }
    let data = if event.get("detail").is_some() {
        event["resources"] = serde_json::json!([alarm_arn(alarm)]);
        &mut event["detail"]
    } else {
        event["alarmArn"] = serde_json::json!(alarm_arn(alarm));
        &mut event["alarmData"]
    };
    data["alarmName"] = serde_json::json!(alarm);
    if let (Some(function), Some(metrics)) =
        (function, data.pointer_mut("/configuration/metrics").and_then(Value::as_array_mut))
    {
        for metric in metrics {
            if let Some(dims) = metric.pointer_mut("/metricStat/metric/dimensions").and_then(Value::as_object_mut) {
                dims.insert("FunctionName".into(), serde_json::json!(function));
                dims.insert("Resource".into(), serde_json::json!(format!("{function}:live")));
            }
        }
    }
    event
}

/// Every `{"name": "FunctionName" | "Resource", "value": ...}` dimension below `value`
/// (an SNS alarm notification's trigger) made to name `function`'s alias `live`.
fn name_function(value: &mut Value, function: &str) {
    match value {
        Value::Object(object) => {
            let new_value = match object.get("name").and_then(Value::as_str) {
                Some("FunctionName") => Some(function.to_owned()),
                Some("Resource") => Some(format!("{function}:live")),
                _ => None,
            };
            match new_value {
                Some(v) => drop(object.insert("value".into(), Value::String(v))),
                None => object.values_mut().for_each(|v| name_function(v, function)),
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| name_function(v, function)),
        _ => {}
    }
}

/// A sample event from `events/`, as written.
pub fn event_json(file: &str) -> Value {
    let path = workspace_root().join("events").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Polls `check` until it returns `Some`, at most `within`; `None` when time ran out.
pub async fn poll<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A router that lets someone else change a Lambda alias once, between our read and
/// our write: the race the conditional write exists for.
pub struct Interloper<'a> {
    inner: &'a coalmine::clouds::CloudRouter,
    local: &'a LocalAws,
    /// The weight the interloper gives version 2 (0 removes the canary: a rollback).
    weight: f64,
    done: std::sync::atomic::AtomicBool,
}

impl<'a> Interloper<'a> {
    pub fn new(inner: &'a coalmine::clouds::CloudRouter, local: &'a LocalAws, weight: f64) -> Self {
        Interloper { inner, local, weight, done: Default::default() }
    }

    pub fn interfered(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

impl TrafficRouter for Interloper<'_> {
    async fn read(&self, target: &Target) -> coalmine::Result<Split> {
        self.inner.read(target).await
    }

    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> coalmine::Result<Split> {
        if !self.done.swap(true, Ordering::SeqCst) {
            let Target::Lambda(alias) = target else { panic!("the interloper changes Lambda aliases only") };
            let weights =
                if self.weight > 0.0 { HashMap::from([("2".to_owned(), self.weight)]) } else { HashMap::new() };
            self.local
                .lambda
                .update_alias()
                .function_name(&alias.function)
                .name(&alias.alias)
                .routing_config(
                    AliasRoutingConfiguration::builder().set_additional_version_weights(Some(weights)).build(),
                )
                .send()
                .await
                .expect("interloping write");
        }
        self.inner.write(target, read, desired).await
    }

    async fn check_canary(&self, target: &Target, canary: &str) -> coalmine::Result<()> {
        self.inner.check_canary(target, canary).await
    }
}

/// A model for the shadow: `tests/src/bin/model.rs` as a function whose version 1 runs
/// `MODEL=stable` and version 2 `MODEL=candidate`, live behind alias `live` on version 1.
impl LocalAws {
    pub async fn seed_model(&self, stable: &str, candidate: &str) -> String {
        use aws_sdk_lambda::types::Environment;
        let function = unique("model");
        let binary = std::fs::read(bootstrap_path("model")).expect("the model bootstrap; `make bins` builds it");
        let env = |model: &str| Environment::builder().variables("MODEL", model).build();
        self.lambda
            .create_function()
            .function_name(&function)
            .runtime(Runtime::Providedal2023)
            .role(ROLE_ARN)
            .handler("bootstrap")
            .timeout(30)
            .environment(env(stable))
            .code(FunctionCode::builder().zip_file(Blob::new(zip_bootstrap(&binary))).build())
            .send()
            .await
            .expect("create the model");
        self.lambda.publish_version().function_name(&function).send().await.expect("publish v1");
        self.lambda
            .update_function_configuration()
            .function_name(&function)
            .environment(env(candidate))
            .send()
            .await
            .expect("the candidate's configuration");
        self.lambda.publish_version().function_name(&function).send().await.expect("publish v2");
        self.lambda
            .create_alias()
            .function_name(&function)
            .name("live")
            .function_version("1")
            .send()
            .await
            .expect("alias");
        // A stable in production has logged already: Lambda creates its group on the first line.
        let logs = aws_sdk_cloudwatchlogs::Client::new(&self.sdk);
        logs.create_log_group().log_group_name(coalmine::aws::log_group(&function)).send().await.expect("log group");
        function
    }

    /// Users asking the model through its alias, one after another, until dropped.
    pub fn pump_model_requests(&self, function: &str) -> Traffic {
        let (lambda, function) = (self.lambda.clone(), function.to_owned());
        Traffic(tokio::spawn(async move {
            for q in 0.. {
                let payload = Blob::new(serde_json::json!({ "q": q }).to_string());
                // A user's request that fails is the stable's business, not the demo's.
                let _ = lambda.invoke().function_name(&function).qualifier("live").payload(payload).send().await;
            }
        }))
    }

    /// `requests` live requests `{"q": 0}`, `{"q": 1}`, ... through the alias, in turn.
    pub async fn serve_model(&self, function: &str, requests: u64) {
        for q in 0..requests {
            let out = self
                .lambda
                .invoke()
                .function_name(function)
                .qualifier("live")
                .payload(Blob::new(serde_json::json!({ "q": q }).to_string()))
                .send()
                .await
                .expect("a live request");
            assert_eq!(out.function_error, None, "the stable serves every live request");
        }
    }
}

mod zip;

impl LocalAws {
    /// What CloudWatch Logs does with EMF lines: one PutMetricData per metric, values as
    /// the lines gave them.
    pub async fn publish_emf(&self, lines: &[String]) {
        type Key = (String, Vec<(String, String)>, String, String);
        let mut series: BTreeMap<Key, (i64, Vec<f64>)> = BTreeMap::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).expect("an EMF line is JSON");
            let at = v["_aws"]["Timestamp"].as_i64().expect("a timestamp") / 1000;
            for directive in v["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
                let namespace = directive["Namespace"].as_str().expect("a namespace").to_owned();
                for set in directive["Dimensions"].as_array().expect("dimension sets") {
                    let dims: Vec<(String, String)> = set
                        .as_array()
                        .expect("a dimension set")
                        .iter()
                        .map(|d| {
                            let name = d.as_str().expect("a dimension name");
                            (name.to_owned(), v[name].as_str().expect("the dimension's value").to_owned())
                        })
                        .collect();
                    for metric in directive["Metrics"].as_array().expect("metrics") {
                        let name = metric["Name"].as_str().expect("a name").to_owned();
                        let unit = metric["Unit"].as_str().unwrap_or("None").to_owned();
                        let value = v[&name].as_f64().expect("the metric's value");
                        series
                            .entry((namespace.clone(), dims.clone(), name, unit))
                            .or_insert((at, Vec::new()))
                            .1
                            .push(value);
                    }
                }
            }
        }
        for ((namespace, dims, name, unit), (at, values)) in series {
            let dims: Vec<Dimension> =
                dims.iter().map(|(n, v)| Dimension::builder().name(n).value(v).build()).collect();
            // PutMetricData takes at most 150 values a datum.
            for chunk in values.chunks(150) {
                let datum = MetricDatum::builder()
                    .metric_name(&name)
                    .set_dimensions(Some(dims.clone()))
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(at))
                    .unit(StandardUnit::from(unit.as_str()))
                    .set_values(Some(chunk.to_vec()))
                    .build();
                self.cloudwatch.put_metric_data().namespace(&namespace).metric_data(datum).send().await.expect("put");
            }
        }
    }
}

/// The EMF lines of `requests` answers of `version`: tokens lognormal (sigma 0.5) at
/// `tokens_median`, response length at 1200, 2% failing the schema, feedback on every
/// tenth answer and a thumbs-down on every fifth piece of it.
pub fn answers(
    namespace: &str,
    function: &str,
    version: &str,
    requests: usize,
    tokens_median: f64,
    at_ms: u64,
) -> Vec<String> {
    (0..requests)
        .map(|i| {
            let z = inverse_normal_cdf((i as f64 + 0.5) / requests as f64);
            // A different order for the length, so the two are not the same sequence.
            let zl = inverse_normal_cdf(((i * 7919) % requests) as f64 / requests as f64 + 0.5 / requests as f64);
            let mut metrics = Metrics::for_function(namespace, function, version)
                .output_tokens((tokens_median * (0.5 * z).exp()).round())
                .response_length((1200.0 * (0.6 * zl).exp()).round())
                .schema_failure(i % 50 == 0);
            if i % 10 == 0 {
                metrics = metrics.feedback(i % 50 == 0);
            }
            metrics.line(at_ms)
        })
        .collect()
}

impl LocalAws {
    /// A model handler's answers as its EMF lines would publish them, every half second
    /// until dropped: `per_put` output-token counts for each side, the canary's median
    /// `canary_tokens` against the stable's 400.
    pub fn pump_answers(&self, target: &Target, namespace: &str, canary_tokens: f64, per_put: usize) -> Traffic {
        let local = LocalAws::from_sdk(self.sdk.clone());
        let (aws, _) = local.adapters("arn:aws:sns:us-east-1:000000000000:unused");
        let (target, namespace) = (target.clone(), namespace.to_owned());
        let Target::Lambda(alias) = &target else { panic!("answers are published by a Lambda handler") };
        let function = alias.function.clone();
        Traffic(tokio::spawn(async move {
            loop {
                if let Ok(split) = aws.router.read(&target).await {
                    let at =
                        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
                    let mut lines = answers(&namespace, &function, &split.stable, per_put, 400.0, at);
                    if let Some(canary) = split.canary.as_deref().filter(|_| !split.canary_is_zero()) {
                        lines.extend(answers(&namespace, &function, canary, per_put, canary_tokens, at));
                    }
                    local.publish_emf(&lines).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}
