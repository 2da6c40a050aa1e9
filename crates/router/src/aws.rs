//! The cohort the stepper published, read through AppConfig's data plane (made for many
//! frequent readers), and the alias it names invoked: the same behaviour as the Python
//! router's `AppConfigSource` and `Router`.
//!
//! ```no_run
//! # async fn handler(sdk: &aws_config::SdkConfig, user: &str, request: Vec<u8>) {
//! use coalmine_router::aws::{AppConfigSource, Router};
//! let source = AppConfigSource::new(aws_sdk_appconfigdata::Client::new(sdk), "APP_ID", "ENV_ID", "chat.live");
//! let router = Router::new(source, "live");
//! let served = router.invoke(&aws_sdk_lambda::Client::new(sdk), "chat", user, &[], request).await;
//! # }
//! ```
//!
//! A router that cannot read its source keeps the cohort it last read for a minute (an
//! outage of AppConfig is not a reason to move users), then sends every unit to the
//! stable, and says so in its logs. Nothing here is on a rollback's path: a rollback
//! points the cohort alias back at the stable, so a unit sent there a moment later is
//! served by the stable whatever this cached.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_lambda::primitives::Blob;
use tracing::warn;

use crate::{replicate, route, Cohort};

/// AppConfig's least poll interval: a session may not ask for less.
pub const MIN_POLL: Duration = Duration::from_secs(15);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

pub struct AppConfigSource {
    client: aws_sdk_appconfigdata::Client,
    application: String,
    environment: String,
    profile: String,
    poll_every: Duration,
    keep_through_outage: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    cached: Option<Cohort>,
    read_at: Option<Instant>,
    next_read: Option<Instant>,
}

impl AppConfigSource {
    /// The profile is `FUNCTION.ALIAS` (the primary alias) in the stack's application and
    /// environment (its outputs `CohortApplicationId`, `CohortEnvironmentId`).
    pub fn new(
        client: aws_sdk_appconfigdata::Client,
        application: impl Into<String>,
        environment: impl Into<String>,
        profile: impl Into<String>,
    ) -> Self {
        AppConfigSource {
            client,
            application: application.into(),
            environment: environment.into(),
            profile: profile.into(),
            poll_every: MIN_POLL,
            keep_through_outage: Duration::from_secs(60),
            state: Mutex::new(State::default()),
        }
    }

    /// How often to read; AppConfig itself asks at least [`MIN_POLL`] between reads of a
    /// session (an emulator may not).
    pub fn poll_every(self, every: Duration) -> Self {
        AppConfigSource { poll_every: every, ..self }
    }

    /// How long the last cohort read is kept while reads fail.
    pub fn keep_through_outage(self, keep: Duration) -> Self {
        AppConfigSource { keep_through_outage: keep, ..self }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cohort to route by now, or `None`: every unit to the stable.
    pub async fn cohort(&self) -> Option<Cohort> {
        let now = Instant::now();
        let token = {
            let mut state = self.state();
            if state.next_read.is_some_and(|at| now < at) {
                return state.cached.clone();
            }
            // Callers meanwhile use what is cached; one read at a time.
            state.next_read = Some(now + RETRY_AFTER_FAILURE.min(self.poll_every));
            state.token.take()
        };
        let read = self.read(token).await;
        let mut state = self.state();
        match read {
            Ok((cohort, next_token, interval)) => {
                if let Some(cohort) = cohort {
                    state.cached = cohort;
                }
                state.token = Some(next_token);
                state.read_at = Some(now);
                state.next_read = Some(now + interval.max(self.poll_every));
            }
            Err(why) => {
                let stale = state.read_at.is_none_or(|at| now.duration_since(at) >= self.keep_through_outage);
                if stale {
                    state.cached = None;
                }
                warn!(
                    profile = %self.profile,
                    "coalmine router: the cohort could not be read ({why}); {}",
                    if stale { "sending every unit to the stable" } else { "keeping the last one read" }
                );
            }
        }
        state.cached.clone()
    }

    /// One read: the cohort if it changed (`Some(None)`: unreadable, so nobody drawn),
    /// the next token, and the interval AppConfig asks for.
    async fn read(&self, token: Option<String>) -> Result<(Option<Option<Cohort>>, String, Duration), String> {
        let token = match token {
            Some(token) => token,
            None => self
                .client
                .start_configuration_session()
                .application_identifier(&self.application)
                .environment_identifier(&self.environment)
                .configuration_profile_identifier(&self.profile)
                .required_minimum_poll_interval_in_seconds(MIN_POLL.as_secs() as i32)
                .send()
                .await
                .map_err(|e| format!("appconfigdata:StartConfigurationSession: {}", error_text(&e)))?
                .initial_configuration_token
                .ok_or("appconfigdata:StartConfigurationSession gave no token")?,
        };
        let out = self
            .client
            .get_latest_configuration()
            .configuration_token(token)
            .send()
            .await
            .map_err(|e| format!("appconfigdata:GetLatestConfiguration: {}", error_text(&e)))?;
        let next = out.next_poll_configuration_token.ok_or("appconfigdata:GetLatestConfiguration gave no token")?;
        let interval = Duration::from_secs(out.next_poll_interval_in_seconds.max(0) as u64);
        let body = out.configuration.map(|b| b.into_inner()).unwrap_or_default();
        // An empty body: unchanged since this session's last read.
        let cohort = if body.is_empty() {
            None
        } else {
            Some(match serde_json::from_slice::<Cohort>(&body) {
                Ok(cohort) => Some(cohort),
                Err(e) => {
                    warn!(profile = %self.profile, "coalmine router: the published cohort is not one ({e}); sending every unit to the stable");
                    None
                }
            })
        };
        Ok((cohort, next, interval))
    }
}

pub(crate) fn error_text<E: std::error::Error + 'static>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// Where a unit went, owned: the alias, whether it is the candidate's, why, and the
/// release whose cohort decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub candidate: bool,
    pub alias: String,
    pub why: String,
    pub release: Option<String>,
    /// `drawn`, `pinned` or `stable` ([`crate::Why::assignment`]).
    pub assignment: &'static str,
    /// The unit's replicate group ([`crate::replicate`]); none without a unit or a cohort.
    pub replicate: Option<u32>,
}

/// What the invoked alias answered, and which version actually served it.
#[derive(Clone, Debug)]
pub struct Served {
    pub routed: Routed,
    pub version: String,
    pub answer: Vec<u8>,
    pub function_error: Option<String>,
}

/// Routes units by the cohort its source gives, and invokes the alias it names.
pub struct Router {
    source: AppConfigSource,
    stable_alias: String,
    emit: fn(&str),
    /// Where the version that served each unit is kept, and the profile it is kept under.
    served: Option<(crate::served::ServedLog, String)>,
}

fn print_line(line: &str) {
    println!("{line}");
}

impl Router {
    /// `stable_alias`: where units go when no cohort can be read (the primary alias).
    pub fn new(source: AppConfigSource, stable_alias: impl Into<String>) -> Self {
        Router { source, stable_alias: stable_alias.into(), emit: print_line, served: None }
    }

    /// Records in `log`, under `profile` (`FUNCTION.ALIAS`, [`crate::profile_name`]),
    /// which version served each unit, for late feedback to find ([`crate::served`]).
    pub fn recording_to(self, log: crate::served::ServedLog, profile: impl Into<String>) -> Self {
        Router { served: Some((log, profile.into())), ..self }
    }

    /// Where the EMF lines go: stdout by default, which Lambda sends to CloudWatch Logs.
    pub fn emitting_to(self, emit: fn(&str)) -> Self {
        Router { emit, ..self }
    }

    pub async fn route(&self, unit: &str, attributes: &[(&str, &str)]) -> Routed {
        match self.source.cohort().await {
            Some(cohort) => {
                let decision = route(&cohort, unit, attributes);
                Routed {
                    candidate: decision.candidate,
                    alias: decision.alias.to_owned(),
                    why: decision.why.to_string(),
                    release: Some(cohort.release.clone()),
                    assignment: decision.why.assignment(),
                    replicate: (!unit.is_empty()).then(|| replicate(&cohort.release, unit)),
                }
            }
            None => Routed {
                candidate: false,
                alias: self.stable_alias.clone(),
                why: "no cohort could be read: sent to the stable".to_owned(),
                release: None,
                assignment: "stable",
                replicate: None,
            },
        }
    }

    /// Invokes `function` at the alias `unit` is routed to, and prints one EMF line (namespace
    /// `coalmine/Router`) naming the version that actually served, so per-version metrics
    /// count what users got.
    pub async fn invoke(
        &self,
        lambda: &aws_sdk_lambda::Client,
        function: &str,
        unit: &str,
        attributes: &[(&str, &str)],
        payload: Vec<u8>,
    ) -> Result<Served, aws_sdk_lambda::Error> {
        let routed = self.route(unit, attributes).await;
        let asked = Instant::now();
        let out = lambda
            .invoke()
            .function_name(function)
            .qualifier(&routed.alias)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(aws_sdk_lambda::Error::from)?;
        let version = out.executed_version.unwrap_or_default();
        let waited = asked.elapsed().as_secs_f64() * 1000.0;
        (self.emit)(&emf_line(function, &version, &routed, out.function_error.is_some(), waited));
        if let Some((log, profile)) = &self.served {
            if let Err(why) = log.record(profile, unit, &routed, &version).await {
                warn!(%profile, "coalmine router: which version served {unit} was not recorded ({why}); late feedback on it will not find its version");
            }
        }
        Ok(Served {
            routed,
            version,
            answer: out.payload.map(Blob::into_inner).unwrap_or_default(),
            function_error: out.function_error,
        })
    }
}

/// The router's EMF line: one request for `version`, an error if the function failed, and
/// how long the user waited, by version, by version and how the unit was assigned, and by
/// those and its replicate group (decision 0021: what judges a cohort with units as the
/// draw; the pinned units' own figures are the `pinned` assignment's).
pub fn emf_line(function: &str, version: &str, routed: &Routed, failed: bool, latency_ms: f64) -> String {
    use crate::metrics::{ERRORS, LATENCY, NAMESPACE, REQUESTS};
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let replicate = routed.replicate.map_or("-".to_owned(), |r| r.to_string());
    serde_json::json!({
        "_aws": {"Timestamp": millis, "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": [
                ["FunctionName", "Version"],
                ["FunctionName", "Version", "Assignment"],
                ["FunctionName", "Version", "Assignment", "Replicate"],
            ],
            "Metrics": [
                {"Name": REQUESTS, "Unit": "Count"},
                {"Name": ERRORS, "Unit": "Count"},
                {"Name": LATENCY, "Unit": "Milliseconds"},
            ],
        }]},
        "FunctionName": function, "Version": version, "Cohort": if routed.candidate { "candidate" } else { "stable" },
        "Assignment": routed.assignment, "Replicate": replicate,
        REQUESTS: 1, ERRORS: u8::from(failed), LATENCY: latency_ms,
    })
    .to_string()
}

/// The header that names the unit, and the prefix of those that carry its attributes
/// (`x-coalmine-attr-group: internal`), on a request to the front function.
pub const UNIT_HEADER: &str = "x-coalmine-unit";
pub const ATTRIBUTE_PREFIX: &str = "x-coalmine-attr-";

/// What the front function takes from an HTTP request (a function URL's or an
/// Application Load Balancer's event): the unit, its attributes, and the JSON body the
/// model function is invoked with. Header names are matched without regard to case.
#[derive(Debug, PartialEq)]
pub struct FrontRequest {
    pub unit: String,
    pub attributes: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FrontRequest {
    /// `Err`: what is wrong with it, for a 400 (a body that is not JSON cannot be a Lambda
    /// payload). A request with no unit is not wrong: it goes to the stable.
    pub fn parse(event: &serde_json::Value) -> Result<FrontRequest, String> {
        use base64::Engine;
        let headers = event.get("headers").and_then(serde_json::Value::as_object);
        let header = |name: &str| -> Vec<(String, String)> {
            headers
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_owned())))
                .filter(|(k, _)| k.starts_with(name))
                .collect()
        };
        let unit = header(UNIT_HEADER).into_iter().find(|(k, _)| k == UNIT_HEADER).map(|(_, v)| v).unwrap_or_default();
        let attributes = header(ATTRIBUTE_PREFIX)
            .into_iter()
            .map(|(k, v)| (k[ATTRIBUTE_PREFIX.len()..].to_owned(), v))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        let raw = event.get("body").and_then(serde_json::Value::as_str).unwrap_or("{}");
        let body = if event.get("isBase64Encoded").and_then(serde_json::Value::as_bool).unwrap_or(false) {
            base64::engine::general_purpose::STANDARD.decode(raw).map_err(|e| format!("the body is not base64: {e}"))?
        } else {
            raw.as_bytes().to_vec()
        };
        serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| format!("the body must be JSON, the payload the model function takes: {e}"))?;
        Ok(FrontRequest { unit, attributes, body })
    }
}

/// The front function's answer to an HTTP request: the model's answer from the alias the
/// unit is routed to, with the version that served and the alias in headers (what a "why
/// did I get the new model?" ticket starts from), a 400 for a body that is not JSON, a
/// 502 when the model function failed or could not be invoked.
pub async fn front(
    router: &Router,
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    event: &serde_json::Value,
) -> serde_json::Value {
    let request = match FrontRequest::parse(event) {
        Ok(request) => request,
        Err(why) => return http(400, &[], serde_json::json!({ "error": why }).to_string()),
    };
    let attributes: Vec<(&str, &str)> = request.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match router.invoke(lambda, function, &request.unit, &attributes, request.body).await {
        Ok(served) => {
            let status = if served.function_error.is_some() { 502 } else { 200 };
            let headers = [("x-coalmine-version", served.version.as_str()), ("x-coalmine-alias", &served.routed.alias)];
            http(status, &headers, String::from_utf8_lossy(&served.answer).into_owned())
        }
        Err(e) => {
            warn!(function, "coalmine router: the model function could not be invoked: {}", error_text(&e));
            http(502, &[], serde_json::json!({ "error": "the model function could not be invoked" }).to_string())
        }
    }
}

fn http(status: u16, headers: &[(&str, &str)], body: String) -> serde_json::Value {
    let mut all = serde_json::Map::new();
    all.insert("content-type".into(), "application/json".into());
    for (name, value) in headers {
        all.insert((*name).into(), (*value).into());
    }
    serde_json::json!({ "statusCode": status, "headers": all, "body": body, "isBase64Encoded": false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_front_request_names_its_unit_and_attributes_in_headers_of_any_case() {
        let event = json!({
            "rawPath": "/", "headers": {"X-Coalmine-Unit": "user-7", "x-coalmine-attr-group": "internal",
                                        "X-Coalmine-Attr-Region": "eu", "x-coalmine-attr-": "nameless", "accept": "*/*"},
            "body": "{\"q\": 1}", "isBase64Encoded": false
        });
        let request = FrontRequest::parse(&event).unwrap();
        assert_eq!(request.unit, "user-7");
        let mut attributes = request.attributes.clone();
        attributes.sort();
        assert_eq!(attributes, [("group".to_owned(), "internal".to_owned()), ("region".to_owned(), "eu".to_owned())]);
        assert_eq!(request.body, br#"{"q": 1}"#);
    }

    mod source {
        use std::time::Duration;

        use aws_sdk_appconfigdata::operation::get_latest_configuration::{
            GetLatestConfigurationError, GetLatestConfigurationOutput,
        };
        use aws_sdk_appconfigdata::operation::start_configuration_session::StartConfigurationSessionOutput;
        use aws_sdk_appconfigdata::primitives::Blob;
        use aws_sdk_appconfigdata::types::error::InternalServerException;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};

        use crate::aws::AppConfigSource;

        /// AppConfig answering a session, then `bodies` in turn (`None`: a failed read).
        fn source(bodies: Vec<Option<&'static str>>, keep: Duration) -> AppConfigSource {
            let session = mock!(aws_sdk_appconfigdata::Client::start_configuration_session)
                .then_output(|| StartConfigurationSessionOutput::builder().initial_configuration_token("t0").build());
            let mut reads = mock!(aws_sdk_appconfigdata::Client::get_latest_configuration).sequence();
            for body in bodies {
                reads = match body {
                    Some(body) => reads.output(move || {
                        GetLatestConfigurationOutput::builder()
                            .next_poll_configuration_token("t1")
                            .next_poll_interval_in_seconds(0)
                            .configuration(Blob::new(body))
                            .build()
                    }),
                    None => reads.error(|| {
                        GetLatestConfigurationError::InternalServerException(
                            InternalServerException::builder().message("down").build(),
                        )
                    }),
                };
            }
            let client = mock_client!(aws_sdk_appconfigdata, RuleMode::MatchAny, [&session, &reads.build()], |c| c
                .retry_config(aws_sdk_appconfigdata::config::retry::RetryConfig::disabled()));
            AppConfigSource::new(client, "app", "env", "chat.live").poll_every(Duration::ZERO).keep_through_outage(keep)
        }

        const COHORT: &str = r#"{"release": "chat-v7", "threshold": 500}"#;

        #[tokio::test]
        async fn an_outage_keeps_the_last_cohort_for_a_while_then_sends_every_unit_to_the_stable() {
            let kept = source(vec![Some(COHORT), None, Some("")], Duration::from_secs(60));
            assert_eq!(kept.cohort().await.map(|c| c.threshold), Some(500));
            assert_eq!(kept.cohort().await.map(|c| c.threshold), Some(500), "kept through a failed read");
            assert_eq!(kept.cohort().await.map(|c| c.threshold), Some(500), "an empty body: unchanged");

            let dropped = source(vec![Some(COHORT), None], Duration::ZERO);
            assert!(dropped.cohort().await.is_some());
            assert_eq!(dropped.cohort().await, None, "past the outage allowance: nobody on the candidate");
        }

        #[tokio::test]
        async fn a_published_cohort_that_is_not_one_sends_every_unit_to_the_stable() {
            let garbage = source(
                vec![Some(COHORT), Some(r#"{"release": "chat-v7", "threshold": "all"}"#)],
                Duration::from_secs(60),
            );
            assert!(garbage.cohort().await.is_some());
            assert_eq!(garbage.cohort().await, None);
        }
    }

    #[test]
    fn the_emf_line_counts_a_request_and_an_error_for_the_version_that_served() {
        let drawn = Routed {
            candidate: true,
            alias: "canary".into(),
            why: "drawn".into(),
            release: Some("chat-v7".into()),
            assignment: "drawn",
            replicate: Some(11),
        };
        let line: serde_json::Value = serde_json::from_str(&emf_line("chat", "7", &drawn, true, 812.5)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "coalmine/Router");
        assert_eq!(
            directive["Dimensions"],
            json!([
                ["FunctionName", "Version"],
                ["FunctionName", "Version", "Assignment"],
                ["FunctionName", "Version", "Assignment", "Replicate"]
            ])
        );
        assert_eq!(directive["Metrics"][2], json!({"Name": "RoutedLatency", "Unit": "Milliseconds"}));
        assert_eq!(line["RoutedLatency"], json!(812.5));
        assert_eq!(
            (&line["FunctionName"], &line["Version"], &line["Cohort"]),
            (&json!("chat"), &json!("7"), &json!("candidate"))
        );
        assert_eq!((&line["Assignment"], &line["Replicate"]), (&json!("drawn"), &json!("11")));
        assert_eq!((&line["RoutedRequests"], &line["RoutedErrors"]), (&json!(1), &json!(1)));
        let anonymous = Routed { candidate: false, assignment: "stable", replicate: None, ..drawn };
        let ok: serde_json::Value = serde_json::from_str(&emf_line("chat", "6", &anonymous, false, 90.0)).unwrap();
        assert_eq!((&ok["Cohort"], &ok["RoutedErrors"], &ok["Replicate"]), (&json!("stable"), &json!(0), &json!("-")));
    }

    #[test]
    fn a_front_request_without_a_unit_goes_on_and_one_whose_body_is_not_json_is_refused() {
        let anonymous = FrontRequest::parse(&json!({"body": "eyJxIjogMX0=", "isBase64Encoded": true})).unwrap();
        assert_eq!((anonymous.unit.as_str(), anonymous.body.as_slice()), ("", br#"{"q": 1}"#.as_slice()));
        assert!(FrontRequest::parse(&json!({})).is_ok(), "no body is an empty request");
        let garbage = FrontRequest::parse(&json!({"body": "q=1"})).unwrap_err();
        assert!(garbage.starts_with("the body must be JSON"), "{garbage}");
        assert!(FrontRequest::parse(&json!({"body": "%%%", "isBase64Encoded": true})).is_err());
    }
}
