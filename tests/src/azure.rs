//! Azure, stood in for over HTTPS on 127.0.0.1: Entra ID's token endpoint, Resource
//! Manager's online endpoints and deployments with their long-running operations, and
//! Azure Monitor's metrics. No Azure emulator exists; every answer is built on Azure's own
//! published examples (`tests/fixtures/azure`, sources in its SOURCES.md) with the
//! scenario's values in the fields they already have, so the adapters under test read
//! what Azure documents it sends. Its certificate is signed by a CA made for the run
//! (`scripts/local-tls`), which the tests and the functions MiniStack runs trust through
//! `SSL_CERT_FILE`.
//!
//! Traffic follows the endpoints' own weights: each endpoint's deployments serve a
//! steady rate of requests split as its `traffic` says at each moment (and its mirror
//! copies to the mirrored deployment), with the error rate and latency a test gives each
//! deployment, so what Azure Monitor answers for a stage is what that stage served.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio_rustls::rustls;

use coalmine::azure::{Azure, IdentitySource, SecretIdentity};
use coalmine::domain::target::AzureMlDeployments;
use coalmine::Target;

use crate::workspace_root;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
pub const CLIENT_SECRET: &str = "sampleCredentials";
pub const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
pub const RESOURCE_GROUP: &str = "ml-prod";
pub const WORKSPACE: &str = "ml-workspace";
const LOCATION: &str = "westus2";
/// What an endpoint serves a minute, split by its traffic: enough that a 5% stage of
/// two seconds sees a hundred requests.
pub const REQUESTS_PER_MINUTE: f64 = 72_000.0;

/// A published example's file from `tests/fixtures/azure`.
pub fn fixture(name: &str) -> Value {
    let path = workspace_root().join("tests/fixtures/azure").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// How a deployment answers: its share of failures (5xx) and its p95 latency.
#[derive(Clone, Copy, Debug)]
pub struct Health {
    pub error_rate: f64,
    pub p95_ms: f64,
}

impl Health {
    pub const fn good() -> Health {
        Health { error_rate: 0.002, p95_ms: 400.0 }
    }
}

/// One request the stand-in answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub if_match: Option<String>,
    pub status: u16,
}

/// An answer given instead of the real one, once, to the next request that matches.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

struct Endpoint {
    /// The resource as Resource Manager shows it (the published example, filled in).
    resource: Value,
    deployments: Vec<String>,
    etag: u64,
    health: HashMap<String, Health>,
    /// Each traffic and mirror split the endpoint had, oldest first.
    history: Vec<Period>,
    /// The operation running on it, if any.
    operation: Option<String>,
}

/// Deployment → percent.
type Shares = BTreeMap<String, f64>;

/// From `since` on, the endpoint's traffic and mirror.
struct Period {
    since: f64,
    traffic: Shares,
    mirror: Shares,
}

impl Endpoint {
    /// The split as it is now begins now.
    fn record(&mut self) {
        let (traffic, mirror) = (shares(&self.resource, "traffic"), shares(&self.resource, "mirrorTraffic"));
        self.history.push(Period { since: now(), traffic, mirror });
    }
}

struct Operation {
    endpoint: String,
    /// Polls (of it or of the endpoint) before it ends.
    polls_left: u32,
    /// How it ends: `None` succeeds; `Some((code, message))` fails and reverts.
    failure: Option<(String, String)>,
    before: Value,
    status: &'static str,
}

#[derive(Default)]
struct World {
    endpoints: HashMap<String, Endpoint>,
    operations: HashMap<String, Operation>,
    issued: Vec<String>,
    expired: Vec<String>,
    faults: VecDeque<Fault>,
    seen: Vec<Seen>,
    etags: bool,
    polls: u32,
    next_failure: Option<(String, String)>,
    counter: u64,
}

pub struct AzureStandIn {
    pub url: String,
    world: Arc<Mutex<World>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AzureStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Where `scripts/local-aws` put the run's TLS identity.
fn tls_dir() -> PathBuf {
    std::env::var_os("COALMINE_TEST_TLS").map(PathBuf::from).unwrap_or_else(|| {
        panic!("COALMINE_TEST_TLS is not set: start the local AWS and load its environment (make test does)")
    })
}

fn server_config(dir: &Path) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the server's certificate")
}

impl AzureStandIn {
    pub async fn start() -> AzureStandIn {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&tls_dir())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://127.0.0.1:{}", listener.local_addr().expect("address").port());
        let world = Arc::new(Mutex::new(World { etags: true, polls: 1, ..World::default() }));
        let (shared, base) = (world.clone(), url.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, world, base) = (acceptor.clone(), shared.clone(), base.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request| {
                        let (world, base) = (world.clone(), base.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(&world, &base, request).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        AzureStandIn { url, world, server }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("the stand-in's state")
    }

    /// The same service principal as an operator's environment holds it for the CLI (the
    /// usual Azure tools' variables), signing in here.
    pub fn operator_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_owned()),
            ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("AZURE_AUTHORITY_HOST", self.url.clone()),
            ("AZURE_RESOURCE_MANAGER_ENDPOINT", self.url.clone()),
        ]
    }

    /// The service principal, as the stack's secret holds it, signing in here.
    pub fn secret_json(&self) -> String {
        json!({
            "tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "authority_host": self.url, "resource_manager": self.url,
        })
        .to_string()
    }

    /// That service principal as the functions load it, for adapters in the test.
    pub fn identity(&self) -> Box<dyn IdentitySource> {
        let text = self.secret_json();
        Box::new(SecretIdentity {
            name: "coalmine/azure (test)".into(),
            read: Box::new(move || {
                let text = text.clone();
                Box::pin(async move { Ok(text) })
            }),
        })
    }

    pub fn adapters(&self, wait: Duration) -> Azure {
        Azure::new(self.identity(), wait)
    }

    /// A managed online endpoint whose deployments serve `traffic` (percent each, the
    /// stable first), and have served so for the last ten minutes. Its target names
    /// the first two: stable, canary.
    pub fn add_endpoint(&self, name: &str, traffic: &[(&str, u32)]) -> Target {
        let target = AzureMlDeployments {
            subscription: SUBSCRIPTION.into(),
            resource_group: RESOURCE_GROUP.into(),
            workspace: WORKSPACE.into(),
            endpoint: name.into(),
            stable_deployment: Some(traffic[0].0.into()),
            canary_deployment: traffic[1].0.into(),
        };
        let mut resource = fixture("OnlineEndpoint_get.json")["responses"]["200"]["body"].clone();
        resource["id"] = target.endpoint_id().into();
        resource["name"] = name.into();
        resource["type"] = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints".into();
        resource["location"] = LOCATION.into();
        resource["kind"] = "Managed".into();
        resource["properties"]["description"] = format!("{name}, served by coalmine's tests").into();
        resource["properties"]["scoringUri"] = format!("https://{name}.{LOCATION}.inference.ml.azure.com/score").into();
        resource["properties"]["provisioningState"] = "Succeeded".into();
        resource["properties"]["traffic"] = traffic.iter().map(|(d, p)| (d.to_string(), json!(p))).collect();
        resource["properties"]["mirrorTraffic"] = json!({});
        resource["tags"] = json!({"team": "ml-platform"});
        let history = vec![Period {
            since: now() - 600.0,
            traffic: shares(&resource, "traffic"),
            mirror: shares(&resource, "mirrorTraffic"),
        }];
        let endpoint = Endpoint {
            deployments: traffic.iter().map(|(d, _)| d.to_string()).collect(),
            health: traffic.iter().map(|(d, _)| (d.to_string(), Health::good())).collect(),
            resource,
            etag: 1,
            history,
            operation: None,
        };
        self.world().endpoints.insert(target.endpoint_id().to_ascii_lowercase(), endpoint);
        Target::Azureml(Box::new(target))
    }

    fn with_endpoint<T>(&self, target: &Target, f: impl FnOnce(&mut Endpoint) -> T) -> T {
        let Target::Azureml(d) = target else { panic!("{target} is not an Azure ML target") };
        let mut world = self.world();
        let endpoint = world.endpoints.get_mut(&d.endpoint_id().to_ascii_lowercase()).expect("an endpoint added here");
        f(endpoint)
    }

    /// The endpoint as Resource Manager would show it now.
    pub fn resource(&self, target: &Target) -> Value {
        self.with_endpoint(target, |e| e.resource.clone())
    }

    /// `properties.traffic` and `properties.mirrorTraffic`, in percent.
    pub fn traffic(&self, target: &Target) -> (Shares, Shares) {
        self.with_endpoint(target, |e| (shares(&e.resource, "traffic"), shares(&e.resource, "mirrorTraffic")))
    }

    /// How `deployment` answers from now on.
    pub fn set_health(&self, target: &Target, deployment: &str, health: Health) {
        self.with_endpoint(target, |e| e.health.insert(deployment.to_owned(), health));
    }

    /// Someone else changes the endpoint's traffic (the portal, another tool): a new
    /// ETag, the same as any write.
    pub fn interfere(&self, target: &Target, traffic: &[(&str, u32)]) {
        self.with_endpoint(target, |e| {
            e.resource["properties"]["traffic"] = traffic.iter().map(|(d, p)| (d.to_string(), json!(p))).collect();
            e.etag += 1;
            e.record();
        });
    }

    /// The endpoint as a release left it: `stamp` in its `coalmine:release` tag.
    pub fn put_stamp(&self, target: &Target, stamp: &coalmine::domain::stamp::Stamp) {
        self.with_endpoint(target, |e| {
            e.resource["tags"][coalmine::domain::stamp::STAMP_TAG] = json!(stamp.render());
            e.etag += 1;
        });
    }

    /// Whether Resource Manager sends an ETag (and honours `If-Match`); no published
    /// example says whether online endpoints do, so the tests run both ways.
    pub fn set_etags(&self, on: bool) {
        self.world().etags = on;
    }

    /// How many polls an operation answers `InProgress` before it ends.
    pub fn set_polls(&self, polls: u32) {
        self.world().polls = polls;
    }

    /// The next operation ends `Failed` with this error, and its change is reverted.
    pub fn fail_next_operation(&self, code: &str, message: &str) {
        self.world().next_failure = Some((code.into(), message.into()));
    }

    pub fn fail_next(&self, fault: Fault) {
        self.world().faults.push_back(fault);
    }

    /// Every token issued so far stops being accepted: the next call is refused with
    /// `ExpiredAuthenticationToken`, as Resource Manager answers a token past its expiry.
    pub fn expire_tokens(&self) {
        let mut world = self.world();
        let issued = world.issued.clone();
        world.expired.extend(issued);
    }

    /// Whether `deployment` ever had live traffic (a share of `traffic`) on the endpoint.
    pub fn ever_served(&self, target: &Target, deployment: &str) -> bool {
        self.with_endpoint(target, |e| e.history.iter().any(|p| p.traffic.get(deployment).is_some_and(|p| *p > 0.0)))
    }

    /// Whether `deployment` was ever sent mirrored copies.
    pub fn was_mirrored(&self, target: &Target, deployment: &str) -> bool {
        self.with_endpoint(target, |e| e.history.iter().any(|p| p.mirror.get(deployment).is_some_and(|p| *p > 0.0)))
    }

    pub fn tokens_issued(&self) -> usize {
        self.world().issued.len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.world().seen.clone()
    }
}

fn shares(resource: &Value, key: &str) -> Shares {
    resource["properties"][key]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0))).collect())
        .unwrap_or_default()
}

type Answer = Response<Full<Bytes>>;

fn reply(status: u16, body: &Value, headers: &[(&str, String)]) -> Answer {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8")
        .header("x-ms-request-id", "a2f0b3c4-test-stand-in")
        .header("x-ms-correlation-request-id", "c0ffee00-test-stand-in");
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response.body(Full::new(Bytes::from(body.to_string()))).expect("a response")
}

fn arm_error(status: u16, code: &str, message: &str) -> Answer {
    reply(status, &json!({"error": {"code": code, "message": message}}), &[])
}

async fn answer(world: &Mutex<World>, base: &str, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (if_match, authorization) = (header("if-match"), header("authorization"));
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let call = Call { method, path, query, if_match, authorization, body };
    let mut world = world.lock().expect("the stand-in's state");
    let answer = world.route(base, &call);
    let status = answer.status().as_u16();
    let Call { method, path, query, if_match, .. } = call;
    world.seen.push(Seen { method: method.to_string(), path, query, if_match, status });
    answer
}

/// One request, read whole.
struct Call {
    method: Method,
    path: String,
    query: String,
    if_match: Option<String>,
    authorization: Option<String>,
    body: Bytes,
}

impl World {
    fn route(&mut self, base: &str, call: &Call) -> Answer {
        let (method, path, body) = (&call.method, call.path.as_str(), &call.body[..]);
        if let Some(at) =
            self.faults.iter().position(|f| f.method == method.as_str() && path.contains(&f.path_contains))
        {
            let fault = self.faults.remove(at).expect("found above");
            return reply(fault.status, &fault.body, &fault.headers);
        }
        if method == Method::POST && path.ends_with("/oauth2/v2.0/token") {
            return self.token(path, body);
        }
        if let Some(refused) = self.authorize(call.authorization.as_deref()) {
            return refused;
        }
        let lower = path.to_ascii_lowercase();
        let params: HashMap<String, String> = url::form_urlencoded::parse(call.query.as_bytes()).into_owned().collect();
        if lower.contains("/mfeoperationsstatus/") {
            return self.operation_status(path.rsplit('/').next().unwrap_or_default());
        }
        if let Some(endpoint) = lower.strip_suffix("/providers/microsoft.insights/metrics") {
            return self.metrics(endpoint, &params);
        }
        if let Some((endpoint, deployment)) = lower.split_once("/deployments/") {
            return self.deployment(endpoint, path.rsplit('/').next().unwrap_or(deployment));
        }
        match *method {
            Method::GET => self.get_endpoint(&lower),
            Method::PUT => self.put_endpoint(base, &lower, call.if_match.as_deref(), body),
            _ => arm_error(405, "MethodNotAllowed", "not served here"),
        }
    }

    /// Entra ID's client credentials: a secret, or a federated token as the assertion.
    fn token(&mut self, path: &str, body: &[u8]) -> Answer {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        let right_tenant = path.trim_start_matches('/').starts_with(TENANT);
        let secret_ok = field("client_secret") == CLIENT_SECRET;
        let assertion_ok = field("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            && field("client_assertion").starts_with("eyJ");
        if !right_tenant
            || field("client_id") != CLIENT_ID
            || field("grant_type") != "client_credentials"
            || !(secret_ok || assertion_ok)
        {
            let mut error = fixture("Token_error.json");
            error["error"] = "invalid_client".into();
            error["error_description"] =
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID".into();
            error["error_codes"] = json!([7000215]);
            return reply(401, &error, &[]);
        }
        if !field("scope").ends_with("/.default") {
            return reply(400, &fixture("Token_error.json"), &[]);
        }
        self.counter += 1;
        let token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.stand-in-{}", self.counter);
        self.issued.push(token.clone());
        let mut success = fixture("Token_success.json");
        success["access_token"] = token.into();
        reply(200, &success, &[])
    }

    fn authorize(&self, authorization: Option<&str>) -> Option<Answer> {
        let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
        if self.expired.iter().any(|t| t == token) {
            let challenge = "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", \
                             error_description=\"The access token has expired.\""
                .to_owned();
            return Some(reply(
                401,
                &fixture("Arm_ExpiredAuthenticationToken.json"),
                &[("www-authenticate", challenge)],
            ));
        }
        if !self.issued.iter().any(|t| t == token) {
            return Some(arm_error(401, "InvalidAuthenticationToken", "The access token is invalid."));
        }
        None
    }

    /// A poll of an endpoint or its operation brings the operation closer to its end.
    fn advance(&mut self, operation: &str) {
        let Some(op) = self.operations.get_mut(operation) else { return };
        if op.status != "InProgress" {
            return;
        }
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return;
        }
        let Some(endpoint) = self.endpoints.get_mut(&op.endpoint) else { return };
        endpoint.operation = None;
        match op.failure.take() {
            None => {
                op.status = "Succeeded";
                endpoint.resource["properties"]["provisioningState"] = "Succeeded".into();
            }
            Some((code, message)) => {
                // Resource Manager's contract: a failed update reverts what it changed.
                op.status = "Failed";
                endpoint.resource = op.before.clone();
                endpoint.resource["properties"]["provisioningState"] = "Failed".into();
                endpoint.etag += 1;
                endpoint.record();
                op.failure = Some((code, message));
            }
        }
    }

    fn operation_status(&mut self, id: &str) -> Answer {
        self.advance(id);
        let Some(op) = self.operations.get(id) else {
            return arm_error(404, "ResourceNotFound", "no such operation");
        };
        let mut status = fixture("AsyncOperation_status.json");
        let object = status.as_object_mut().expect("an object");
        object.insert("id".into(), format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices/locations/{LOCATION}/mfeOperationsStatus/{id}").into());
        object.insert("name".into(), id.into());
        object.insert("status".into(), op.status.into());
        object.insert("startTime".into(), "2026-12-03T16:00:00Z".into());
        object.remove("properties");
        match (&op.failure, op.status) {
            (Some((code, message)), "Failed") => {
                object.insert("error".into(), json!({"code": code, "message": message}));
            }
            _ => {
                object.remove("error");
            }
        }
        if op.status == "InProgress" {
            object.remove("endTime");
        }
        reply(200, &status, &[])
    }

    fn get_endpoint(&mut self, id: &str) -> Answer {
        let operation = self.endpoints.get(id).and_then(|e| e.operation.clone());
        if let Some(operation) = operation {
            self.advance(&operation);
        }
        let etags = self.etags;
        let Some(endpoint) = self.endpoints.get(id) else {
            return arm_error(404, "ResourceNotFound", &format!("The Resource '{id}' was not found."));
        };
        let headers: Vec<(&str, String)> =
            if etags { vec![("etag", format!("\"0x8DD{:08X}\"", endpoint.etag))] } else { Vec::new() };
        reply(200, &endpoint.resource, &headers)
    }

    fn put_endpoint(&mut self, base: &str, id: &str, if_match: Option<&str>, body: &[u8]) -> Answer {
        let etags = self.etags;
        let polls = self.polls;
        let Some(endpoint) = self.endpoints.get_mut(id) else {
            return arm_error(404, "ResourceNotFound", "creating endpoints is not what these tests do");
        };
        if endpoint.operation.is_some() {
            return reply(409, &fixture("Arm_Conflict.json"), &[]);
        }
        let current = format!("\"0x8DD{:08X}\"", endpoint.etag);
        if etags && if_match.is_some_and(|m| m != current) {
            return arm_error(412, "PreconditionFailed", "The specified precondition 'If-Match' is not met.");
        }
        let Ok(sent) = serde_json::from_slice::<Value>(body) else {
            return arm_error(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized.",
            );
        };
        if let Some(problem) = invalid(&sent, &endpoint.deployments) {
            return arm_error(400, "BadRequest", &problem);
        }
        let before = endpoint.resource.clone();
        for key in ["traffic", "mirrorTraffic", "description", "authMode"] {
            if let Some(value) = sent["properties"].get(key) {
                endpoint.resource["properties"][key] = value.clone();
            }
        }
        endpoint.resource["tags"] = sent.get("tags").cloned().unwrap_or(json!({}));
        endpoint.resource["properties"]["provisioningState"] = "Updating".into();
        endpoint.etag += 1;
        endpoint.record();
        self.counter += 1;
        let operation = format!("{:08x}-0000-4000-8000-{:012x}", self.counter, self.counter);
        endpoint.operation = Some(operation.clone());
        let answer = endpoint.resource.clone();
        let failure = self.next_failure.take();
        self.operations.insert(
            operation.clone(),
            Operation { endpoint: id.to_owned(), polls_left: polls, failure, before, status: "InProgress" },
        );
        let mut created = fixture("OnlineEndpoint_createOrUpdate.json")["responses"]["201"]["body"].clone();
        for key in ["id", "name", "type", "location", "kind", "properties", "tags", "identity", "sku"] {
            created[key] = answer[key].clone();
        }
        let status_url = format!(
            "{base}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices/locations/{LOCATION}/mfeOperationsStatus/{operation}?api-version=2024-10-01"
        );
        let mut headers =
            vec![("azure-asyncoperation", status_url), ("x-ms-async-operation-timeout", "PT1H".to_owned())];
        if etags {
            headers.push(("etag", format!("\"0x8DD{:08X}\"", self.endpoints[id].etag)));
        }
        reply(201, &created, &headers)
    }

    fn deployment(&self, endpoint: &str, name: &str) -> Answer {
        let Some(e) = self.endpoints.get(endpoint) else {
            return arm_error(404, "ResourceNotFound", "no such endpoint");
        };
        if !e.deployments.iter().any(|d| d == name) {
            return arm_error(
                404,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.MachineLearningServices/workspaces/{WORKSPACE}/onlineEndpoints/{}/deployments/{name}' under resource group '{RESOURCE_GROUP}' was not found.", e.resource["name"].as_str().unwrap_or_default()),
            );
        }
        let mut body = fixture("ManagedOnlineDeployment_get.json")["responses"]["200"]["body"].clone();
        body["id"] = format!("{}/deployments/{name}", e.resource["id"].as_str().unwrap_or_default()).into();
        body["name"] = name.into();
        body["type"] = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments".into();
        body["location"] = LOCATION.into();
        body["kind"] = "Managed".into();
        body["properties"]["provisioningState"] = "Succeeded".into();
        reply(200, &body, &[])
    }

    /// Azure Monitor's answer for the endpoint's traffic over the whole minutes asked.
    fn metrics(&self, endpoint: &str, params: &HashMap<String, String>) -> Answer {
        let Some(e) = self.endpoints.get(endpoint) else {
            return arm_error(404, "ResourceNotFound", "no such resource");
        };
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
        if param("interval") != "PT1M" || param("aggregation") != "average" {
            return arm_error(400, "BadRequest", "this stand-in answers interval=PT1M, aggregation=average");
        }
        let Some((from, to)) = param("timespan").split_once('/') else {
            return arm_error(400, "BadRequest", "timespan must be START/END");
        };
        let parse = |t: &str| epoch_of(t);
        let (Some(from), Some(to)) = (parse(from), parse(to)) else {
            return arm_error(400, "BadRequest", "timespan's times are not ISO 8601");
        };
        let filter = param("$filter");
        let wanted: Vec<&String> =
            e.deployments.iter().filter(|d| filter.contains(&format!("deployment eq '{d}'"))).collect();
        let by_class = filter.contains("statusCodeClass eq '*'");
        let mut answer = fixture("GetMetric.json")["responses"]["200"]["body"].clone();
        answer["timespan"] = param("timespan").into();
        answer["interval"] = "PT1M".into();
        answer["namespace"] = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints".into();
        answer["resourceregion"] = LOCATION.into();
        let template = answer["value"][0].clone();
        let mut metrics = Vec::new();
        for metric in param("metricnames").split(',') {
            let mut out = template.clone();
            out["id"] = format!(
                "{}/providers/Microsoft.Insights/metrics/{metric}",
                e.resource["id"].as_str().unwrap_or_default()
            )
            .into();
            out["name"] = json!({"value": metric, "localizedValue": metric});
            out["unit"] = if metric.starts_with("RequestLatency") { "Milliseconds" } else { "Count" }.into();
            out.as_object_mut().expect("an object").remove("displayDescription");
            let mut series = Vec::new();
            for deployment in &wanted {
                let minutes = e.minutes(deployment, from, to.min(now() as u64));
                let dims = |class: Option<&str>| {
                    let mut dims = vec![
                        json!({"name": {"value": "deployment", "localizedValue": "deployment"}, "value": deployment}),
                    ];
                    if let Some(class) = class {
                        dims.push(json!({"name": {"value": "statusCodeClass", "localizedValue": "statusCodeClass"}, "value": class}));
                    }
                    dims
                };
                let point = |at: u64, value: f64| json!({"timeStamp": time_of(at), "average": value});
                match metric {
                    "RequestsPerMinute" if by_class => {
                        let ok: Vec<Value> = minutes.iter().map(|m| point(m.at, m.requests - m.errors)).collect();
                        let failed: Vec<Value> = minutes.iter().map(|m| point(m.at, m.errors)).collect();
                        series.push(json!({"metadatavalues": dims(Some("2xx")), "data": ok}));
                        series.push(json!({"metadatavalues": dims(Some("5xx")), "data": failed}));
                    }
                    "RequestsPerMinute" => {
                        let all: Vec<Value> = minutes.iter().map(|m| point(m.at, m.requests)).collect();
                        series.push(json!({"metadatavalues": dims(None), "data": all}));
                    }
                    latency => {
                        let scale = match latency {
                            "RequestLatency_P50" => 0.5,
                            "RequestLatency_P90" => 0.8,
                            "RequestLatency_P95" => 1.0,
                            "RequestLatency_P99" => 1.4,
                            _ => return arm_error(400, "BadRequest", &format!("Failed to find metric configuration for provider: Microsoft.MachineLearningServices, resource Type: workspaces/onlineEndpoints, metric: {latency}")),
                        };
                        let values: Vec<Value> = minutes
                            .iter()
                            .filter(|m| m.requests > 0.0)
                            .map(|m| point(m.at, m.p95_ms * scale))
                            .collect();
                        series.push(json!({"metadatavalues": dims(None), "data": values}));
                    }
                }
            }
            out["timeseries"] = series.into();
            out["errorCode"] = "Success".into();
            metrics.push(out);
        }
        answer["value"] = metrics.into();
        reply(200, &answer, &[])
    }
}

/// One minute a deployment served.
struct Minute {
    at: u64,
    requests: f64,
    errors: f64,
    p95_ms: f64,
}

impl Endpoint {
    /// What `deployment` served each whole minute from `from` to `to`: its share of
    /// [`REQUESTS_PER_MINUTE`] over each part of the minute, plus the copies mirrored
    /// to it.
    fn minutes(&self, deployment: &str, from: u64, to: u64) -> Vec<Minute> {
        let health = self.health.get(deployment).copied().unwrap_or(Health::good());
        let rate = REQUESTS_PER_MINUTE / 60.0;
        let mut out = Vec::new();
        let mut minute = from / 60 * 60;
        while minute < to {
            let (start, end) = (minute as f64, (minute + 60).min(to) as f64);
            let mut requests = 0.0;
            for (i, period) in self.history.iter().enumerate() {
                let until = self.history.get(i + 1).map_or(f64::MAX, |next| next.since);
                let overlap = (end.min(until) - start.max(period.since)).max(0.0);
                let share = period.traffic.get(deployment).copied().unwrap_or(0.0)
                    + period.mirror.get(deployment).copied().unwrap_or(0.0);
                requests += rate * overlap * share / 100.0;
            }
            if requests > 0.0 {
                out.push(Minute { at: minute, requests, errors: requests * health.error_rate, p95_ms: health.p95_ms });
            }
            minute += 60;
        }
        out
    }
}

/// What Azure ML refuses in an endpoint's PUT: traffic that is not whole percents
/// summing to 100 over its deployments, a mirror over 50% or to more than one deployment,
/// or to a deployment that serves live traffic.
fn invalid(sent: &Value, deployments: &[String]) -> Option<String> {
    let traffic = sent["properties"]["traffic"].as_object()?;
    let mut total = 0.0;
    for (name, percent) in traffic {
        if !deployments.contains(name) {
            return Some(format!("Deployment {name} does not exist on the endpoint."));
        }
        let p = percent.as_f64().unwrap_or(-1.0);
        if p < 0.0 || p.fract() != 0.0 {
            return Some(format!("Traffic for {name} must be a whole number between 0 and 100."));
        }
        total += p;
    }
    if total != 100.0 && total != 0.0 {
        return Some(format!("The sum of traffic values must be 100, not {total}."));
    }
    let mirrored: Vec<(&String, f64)> = sent["properties"]["mirrorTraffic"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k, v.as_f64().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect())
        .unwrap_or_default();
    if mirrored.len() > 1 {
        return Some("Mirror traffic can be set for only one deployment.".into());
    }
    if let Some((name, percent)) = mirrored.first() {
        if *percent > 50.0 {
            return Some("Mirror traffic cannot exceed 50 percent.".into());
        }
        if traffic.get(*name).and_then(Value::as_f64).unwrap_or(0.0) > 0.0 {
            return Some(format!("Deployment {name} cannot receive both live and mirror traffic."));
        }
    }
    None
}

fn time_of(epoch: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(epoch as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn epoch_of(text: &str) -> Option<u64> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp()).ok()
}
