//! The tests' hold on SageMaker's guardrail deployments in the local AWS. moto runs with
//! `tests/emulators/sagemaker_deployments.py`, which serves `UpdateEndpoint` as a
//! blue/green deployment on a clock of each endpoint's own: [`Deployments`] stops and
//! moves that clock, and reads how live traffic splits between the fleets, from which
//! [`LocalAws::pump_fleet_traffic`] puts the metrics SageMaker would publish.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::Dimension;
use aws_sdk_sagemaker::types::ContainerDefinition;
use serde_json::{json, Value};

use crate::{latencies_ms, poll, production_variant, LocalAws, Traffic, TRAFFIC_PER_MINUTE};

/// The emulator's control routes for the endpoints' deployments.
#[derive(Clone)]
pub struct Deployments {
    http: reqwest::Client,
    base: String,
}

impl Deployments {
    pub fn connect() -> Deployments {
        let sagemaker = std::env::var("AWS_ENDPOINT_URL_SAGEMAKER")
            .expect("AWS_ENDPOINT_URL_SAGEMAKER: run the tests with scripts/with-local-aws (make test does)");
        Deployments { http: reqwest::Client::new(), base: format!("{sagemaker}/_coalmine/sagemaker/endpoints") }
    }

    /// The endpoint as the emulator sees it: `status`, `config`, the `deployment`'s
    /// phase, each fleet's share of live `traffic`, the `last_outcome`.
    pub async fn state(&self, endpoint: &str) -> Value {
        let answer = self.http.get(format!("{}/{endpoint}", self.base)).send().await.expect("the emulator answers");
        Self::read(answer).await
    }

    /// Sets the endpoint's knobs (`rate`, `advance_seconds`, `finish_phase`,
    /// `rollback_fails`, `provision_seconds`, `activation_seconds`); its state after.
    pub async fn set(&self, endpoint: &str, asked: Value) -> Value {
        let answer = self
            .http
            .post(format!("{}/{endpoint}", self.base))
            .body(asked.to_string())
            .send()
            .await
            .expect("the emulator answers");
        Self::read(answer).await
    }

    async fn read(answer: reqwest::Response) -> Value {
        let status = answer.status();
        let bytes = answer.bytes().await.expect("the emulator answers");
        let body: Value = serde_json::from_slice(&bytes).expect("the emulator answers JSON");
        assert!(status.is_success(), "the emulator refused: {status} {body}");
        body
    }

    /// Stops the endpoint's clock: its deployments move only when the test moves them.
    pub async fn hold(&self, endpoint: &str) {
        self.set(endpoint, json!({"rate": 0})).await;
    }

    /// Moves the endpoint's deployment on a phase at a time until `check` holds for its
    /// state; while no deployment runs (the stepper has not asked for one yet), waits.
    pub async fn drive_until(&self, endpoint: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let within = Duration::from_secs(90);
        let last = std::sync::Mutex::new(Value::Null);
        let found = poll(within, || async {
            let state = self.state(endpoint).await;
            if check(&state) {
                return Some(state);
            }
            if !state["deployment"].is_null() {
                self.set(endpoint, json!({"finish_phase": true})).await;
            }
            *last.lock().unwrap() = state;
            None
        })
        .await;
        found.unwrap_or_else(|| panic!("{endpoint}: not {what} within {within:?}: {}", last.lock().unwrap()))
    }

    /// Drives the deployment of `config` to its first bake with traffic on the new fleet.
    pub async fn drive_to_baking(&self, endpoint: &str, config: &str) -> Value {
        self.drive_until(endpoint, "baking", |s| {
            s["deployment"]["config"] == config && s["deployment"]["status"] == "Baking"
        })
        .await
    }
}

/// The variant every guardrail endpoint here serves on.
pub const VARIANT: &str = "AllTraffic";

/// An endpoint in service on `ENDPOINT-config` (variant [`VARIANT`], model `blue`), with
/// `ENDPOINT-v2` (model `green`) to deploy, and `ENDPOINT-v2-shadow`: the config in
/// service plus `green` as shadow variant `candidate`. Its clock is held.
pub struct GuardrailEndpoint {
    pub name: String,
    pub in_service: String,
    pub next: String,
    pub shadow: String,
}

impl LocalAws {
    pub async fn add_model(&self, endpoint: &str, model: &str) {
        self.sagemaker
            .create_model()
            .model_name(format!("{endpoint}-{model}"))
            .execution_role_arn("arn:aws:iam::123456789012:role/sagemaker")
            .primary_container(
                ContainerDefinition::builder().image("123456789012.dkr.ecr.us-east-1.amazonaws.com/ai-model:1").build(),
            )
            .send()
            .await
            .expect("create model");
    }

    pub async fn seed_guardrail_endpoint(&self, name: &str, deployments: &Deployments) -> GuardrailEndpoint {
        self.add_model(name, "blue").await;
        self.add_model(name, "green").await;
        let endpoint = GuardrailEndpoint {
            name: name.to_owned(),
            in_service: format!("{name}-config"),
            next: format!("{name}-v2"),
            shadow: format!("{name}-v2-shadow"),
        };
        self.add_endpoint_config(name, &endpoint.in_service, &[(VARIANT, "blue", 1.0)]).await;
        self.add_endpoint_config(name, &endpoint.next, &[(VARIANT, "green", 1.0)]).await;
        let variant = |variant: &str, model: &str| production_variant(name, variant, model, 1.0, 4);
        self.sagemaker
            .create_endpoint_config()
            .endpoint_config_name(&endpoint.shadow)
            .production_variants(variant(VARIANT, "blue"))
            .shadow_production_variants(variant("candidate", "green"))
            .send()
            .await
            .expect("create the shadow config");
        self.sagemaker
            .create_endpoint()
            .endpoint_name(name)
            .endpoint_config_name(&endpoint.in_service)
            .send()
            .await
            .expect("create endpoint");
        deployments.hold(name).await;
        endpoint
    }

    /// Live traffic of [`TRAFFIC_PER_MINUTE`] requests to `endpoint`, split between its
    /// fleets (and copied to its shadow variants) as the emulator routes it at that
    /// moment, put every half second as SageMaker publishes it: by variant, and by
    /// variant and endpoint config. First the fleet in service's last ten minutes. The
    /// fleets of `failing_config` err 20%, the others 0.5%.
    pub fn pump_fleet_traffic(
        &self,
        endpoint: &str,
        deployments: &Deployments,
        failing_config: Option<&str>,
    ) -> Traffic {
        let local = LocalAws::from_sdk(self.sdk.clone());
        let (endpoint, deployments) = (endpoint.to_owned(), deployments.clone());
        let failing = failing_config.map(str::to_owned);
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        Traffic(tokio::spawn(async move {
            let serve = |fleet: &Value, at: u64, requests: f64| {
                let config = fleet["config"].as_str().unwrap_or_default().to_owned();
                let variant = fleet["variant"].as_str().unwrap_or_default().to_owned();
                let error_rate = if failing.as_deref() == Some(config.as_str()) { 0.2 } else { 0.005 };
                let (local, endpoint) = (&local, &endpoint);
                async move {
                    let dim = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
                    let by_variant = vec![dim("EndpointName", endpoint), dim("VariantName", &variant)];
                    let mut by_config = by_variant.clone();
                    by_config.push(dim("EndpointConfigName", &config));
                    let latencies: Vec<f64> = latencies_ms(800.0).iter().map(|ms| ms * 1000.0).collect();
                    for dims in [by_variant, by_config] {
                        local
                            .put_metrics(SAGEMAKER_METRICS, dims, at, requests, requests * error_rate, &latencies)
                            .await;
                    }
                }
            };
            let first = deployments.state(&endpoint).await;
            for minute in 1..=10 {
                for fleet in first["traffic"].as_array().into_iter().flatten() {
                    let share = fleet["share"].as_f64().unwrap_or_default();
                    serve(fleet, now() - minute * 60, TRAFFIC_PER_MINUTE * share).await;
                }
            }
            loop {
                let state = deployments.state(&endpoint).await;
                for fleet in state["traffic"].as_array().into_iter().flatten() {
                    let share = fleet["share"].as_f64().unwrap_or_default();
                    serve(fleet, now(), TRAFFIC_PER_MINUTE / 120.0 * share).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}

/// SageMaker's metrics: the namespace, and requests, errors and latency (µs).
pub const SAGEMAKER_METRICS: (&str, [&str; 3]) =
    ("AWS/SageMaker", ["Invocations", "Invocation5XXErrors", "ModelLatency"]);
