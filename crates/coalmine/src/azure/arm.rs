//! Azure Resource Manager over HTTPS, the way a careful client talks to it: a bearer
//! token for the cloud's Resource Manager; retries on throttling and outages that fit
//! in the caller's deadline, waiting what `Retry-After` asks and never longer than the
//! time left; one fresh identity after a 401 (a rotated secret, an expired token); and
//! long-running operations followed to their end (`Azure-AsyncOperation`, else
//! `Location`, else the resource's own `provisioningState`).

use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;
use tracing::warn;

use super::credentials::{Identity, IdentitySource};
use crate::domain::error::{Error, Result};
use crate::domain::target::Target;

/// Per request: a hung connection fails well inside the functions' timeouts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Between polls of an operation, or retries, when Azure names no wait of its own.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(8);

/// The one HTTPS client every Azure call (tokens included) goes through: HTTPS only,
/// no redirects (Resource Manager uses none), the timeouts above.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coalmine/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("the HTTPS client for Azure could not be built: {e}")))
}

/// An answer from Azure, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Code: message (HTTP 409, request id …)`: what Azure said, and what its support
    /// asks for.
    pub fn detail(&self) -> String {
        let body = self.json();
        let error = body.get("error").unwrap_or(&body);
        let code = error.get("code").and_then(Value::as_str).unwrap_or("NoCode");
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).chars().take(300).collect());
        let request =
            ["x-ms-correlation-request-id", "x-ms-request-id"].iter().find_map(|h| self.header(h)).unwrap_or("none");
        format!("{code}: {message} (HTTP {}, request id {request})", self.status.as_u16())
    }

    /// How long Azure asks to wait before the next call: `Retry-After` in seconds
    /// (Resource Manager sends no HTTP dates), or the milliseconds headers.
    fn retry_after(&self) -> Option<Duration> {
        let ms = |h: &str| self.header(h).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_millis);
        ms("retry-after-ms")
            .or_else(|| ms("x-ms-retry-after-ms"))
            .or_else(|| self.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs))
    }
}

/// A reply no retry will change, as the library's error: denied (a role or a secret to
/// fix), not found, a conflict (re-read), or the service's own words.
pub fn failure(reply: &Reply, operation: &'static str, target: &Target) -> Error {
    let detail = format!("{operation}: {}", reply.detail());
    match reply.status.as_u16() {
        401 | 403 => Error::AccessDenied { operation, detail: reply.detail() },
        404 => Error::NotFound { target: target.clone(), detail },
        409 | 412 => Error::Conflict { target: target.clone(), detail },
        status => Error::Service { operation, detail: reply.detail(), retryable: status == 429 || status >= 500 },
    }
}

/// Resource Manager, with the identity it signs in as. Nothing is built or read before
/// the first Azure call, so a function that never meets an Azure target (or whose Azure
/// setup is broken) serves its AWS targets exactly as before.
pub struct Arm {
    http: OnceCell<reqwest::Client>,
    source: Box<dyn IdentitySource>,
    identity: Mutex<Option<Identity>>,
}

impl Arm {
    pub fn new(source: Box<dyn IdentitySource>) -> Self {
        Arm { http: OnceCell::new(), source, identity: Mutex::new(None) }
    }

    async fn http(&self) -> Result<&reqwest::Client> {
        self.http.get_or_try_init(|| async { http_client() }).await
    }

    /// Loaded at first use, and again after Azure refused a token.
    async fn identity(&self) -> Result<Identity> {
        let mut identity = self.identity.lock().await;
        if let Some(loaded) = identity.as_ref() {
            return Ok(loaded.clone());
        }
        let loaded = self.source.load(self.http().await?).await?;
        *identity = Some(loaded.clone());
        Ok(loaded)
    }

    /// Resource Manager's base URL, `https://management.azure.com` in public Azure.
    pub async fn resource_manager(&self) -> Result<String> {
        Ok(self.identity().await?.cloud.resource_manager)
    }

    async fn token(&self) -> Result<String> {
        let identity = self.identity().await?;
        let scope = identity.cloud.scope();
        let token = identity.credential.get_token(&[scope.as_str()], None).await.map_err(|e| {
            let unreachable =
                matches!(e.kind(), azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection)
                    || e.http_status().is_some_and(|s| u16::from(s) == 429 || u16::from(s) >= 500);
            if unreachable {
                Error::Service { operation: "azure:token", detail: one_line(&e.to_string()), retryable: true }
            } else {
                Error::AccessDenied {
                    operation: "azure:token",
                    detail: format!(
                        "Entra ID gave no token for {scope}: {}; check the service principal (tenant, client id, \
                         secret or federated token) and its role on the endpoint",
                        one_line(&e.to_string())
                    ),
                }
            }
        })?;
        Ok(token.token.secret().to_owned())
    }

    /// Forgets the identity: the next call loads it again (and its token afresh).
    async fn forget(&self) {
        *self.identity.lock().await = None;
    }

    /// One call, retried on throttling (429), timeouts (408), Azure's 5xx and transport
    /// failures while the wait fits before `deadline`; after a 401, once more with a
    /// fresh identity. Any other reply is returned for the caller to read.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Reply> {
        let mut refreshed = false;
        let mut pause = FIRST_PAUSE;
        loop {
            let token = self.token().await?;
            let mut request = self.http().await?.request(method.clone(), url).bearer_auth(token);
            if let Some(body) = body {
                let bytes = serde_json::to_vec(body).unwrap_or_default();
                request = request.header(CONTENT_TYPE, "application/json").body(bytes);
            }
            if let Some(etag) = if_match {
                request = request.header("If-Match", etag);
            }
            let (wait, why) = match self.answer(request).await {
                Ok(reply) if reply.status == StatusCode::UNAUTHORIZED && !refreshed => {
                    warn!(operation, detail = %reply.detail(), "Azure refused the token; signing in again");
                    refreshed = true;
                    self.forget().await;
                    continue;
                }
                Ok(reply) if is_transient(reply.status) => {
                    let asked = reply.retry_after();
                    (asked.unwrap_or(pause), Ok(reply))
                }
                Ok(reply) => return Ok(reply),
                Err(e) => (pause, Err(e)),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if wait > left {
                return Err(gave_up(operation, why, wait, left));
            }
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> std::result::Result<Reply, String> {
        let response = request.send().await.map_err(|e| transport(&e))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await.map_err(|e| transport(&e))?.to_vec();
        Ok(Reply { status, headers, body })
    }

    /// Follows what a write started to its end: the `Azure-AsyncOperation` resource
    /// until its `status` is terminal, else the `Location` until it stops answering 202,
    /// else the resource until its `provisioningState` is terminal. An operation still
    /// running at `deadline` is [`Error::EndpointBusy`]: the write was accepted, and a
    /// retry of the whole invocation finds the endpoint as the operation left it.
    pub async fn follow(
        &self,
        started: &Reply,
        resource_url: &str,
        operation: &'static str,
        target: &Target,
        deadline: Instant,
    ) -> Result<()> {
        let began = Instant::now();
        let mut pause = FIRST_PAUSE;
        let (url, watch) = match (started.header("azure-asyncoperation"), started.header("location")) {
            (Some(status_url), _) => (status_url.to_owned(), Watch::AsyncOperation),
            (None, Some(location)) if started.status == StatusCode::ACCEPTED => (location.to_owned(), Watch::Location),
            _ if is_terminal(provisioning_state(&started.json())) => return Ok(()),
            _ => (resource_url.to_owned(), Watch::Resource),
        };
        loop {
            let reply = self.send(Method::GET, &url, None, None, operation, deadline).await?;
            let state = match watch {
                Watch::AsyncOperation if reply.status.is_success() => {
                    let body = reply.json();
                    let status = body.get("status").and_then(Value::as_str).unwrap_or("InProgress").to_owned();
                    if is_terminal(&status) && !status.eq_ignore_ascii_case("Succeeded") {
                        return Err(ended(operation, &status, &body, &reply));
                    }
                    status
                }
                Watch::Location if reply.status == StatusCode::ACCEPTED => "InProgress".to_owned(),
                Watch::Location if reply.status.is_success() => "Succeeded".to_owned(),
                Watch::Resource if reply.status.is_success() => {
                    let body = reply.json();
                    let state = provisioning_state(&body).to_owned();
                    if is_terminal(&state) && !state.eq_ignore_ascii_case("Succeeded") {
                        return Err(ended(operation, &state, &body, &reply));
                    }
                    state
                }
                _ => return Err(failure(&reply, operation, target)),
            };
            if state.eq_ignore_ascii_case("Succeeded") {
                return Ok(());
            }
            let wait = reply.retry_after().unwrap_or(pause);
            if Instant::now() + wait > deadline {
                return Err(Error::EndpointBusy {
                    target: target.clone(),
                    status: format!("{state} (the change was accepted; Azure is applying it)"),
                    waited_ms: began.elapsed().as_millis(),
                });
            }
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

#[derive(Clone, Copy)]
enum Watch {
    AsyncOperation,
    Location,
    Resource,
}

/// A resource with no `provisioningState` is taken as settled, as Resource Manager's
/// contract says.
pub fn provisioning_state(resource: &Value) -> &str {
    resource.pointer("/properties/provisioningState").and_then(Value::as_str).unwrap_or("Succeeded")
}

pub fn is_terminal(state: &str) -> bool {
    ["Succeeded", "Failed", "Canceled"].iter().any(|t| t.eq_ignore_ascii_case(state))
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn transport(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The operation's own failure: Azure rolled the change back (or was told to).
fn ended(operation: &'static str, status: &str, body: &Value, reply: &Reply) -> Error {
    let error = body.get("error").unwrap_or(&Value::Null);
    let code = error.get("code").and_then(Value::as_str).unwrap_or("NoCode");
    let message = error.get("message").and_then(Value::as_str).map(one_line).unwrap_or_default();
    let request = reply.header("x-ms-correlation-request-id").or(reply.header("x-ms-request-id")).unwrap_or("none");
    Error::Service {
        operation,
        detail: format!("the operation ended {status}: {code}: {message} (request id {request})"),
        retryable: true,
    }
}

/// No answer worth waiting for any more: the last one, and why the wait stopped.
fn gave_up(operation: &'static str, last: std::result::Result<Reply, String>, wait: Duration, left: Duration) -> Error {
    let (what, detail) = match last {
        Ok(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => ("throttled", reply.detail()),
        Ok(reply) => ("unavailable", reply.detail()),
        Err(transport) => ("unreachable", transport),
    };
    Error::Service {
        operation,
        detail: format!(
            "Azure is {what} ({detail}); the next try would wait {} s, and only {} s are left",
            wait.as_secs_f64().ceil(),
            left.as_secs()
        ),
        retryable: true,
    }
}
