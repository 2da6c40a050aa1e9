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

use crate::{route, Cohort};

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
            state.next_read = Some(now + RETRY_AFTER_FAILURE);
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
                let stale = state.read_at.is_none_or(|at| now.duration_since(at) > self.keep_through_outage);
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

fn error_text<E: std::error::Error + 'static>(e: &E) -> String {
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
}

impl Router {
    /// `stable_alias`: where units go when no cohort can be read (the primary alias).
    pub fn new(source: AppConfigSource, stable_alias: impl Into<String>) -> Self {
        Router { source, stable_alias: stable_alias.into() }
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
                }
            }
            None => Routed {
                candidate: false,
                alias: self.stable_alias.clone(),
                why: "no cohort could be read: sent to the stable".to_owned(),
                release: None,
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
        let out = lambda
            .invoke()
            .function_name(function)
            .qualifier(&routed.alias)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(aws_sdk_lambda::Error::from)?;
        let version = out.executed_version.unwrap_or_default();
        println!("{}", emf_line(function, &version, routed.candidate, out.function_error.is_some()));
        Ok(Served {
            routed,
            version,
            answer: out.payload.map(Blob::into_inner).unwrap_or_default(),
            function_error: out.function_error,
        })
    }
}

/// The router's EMF line: one request for `version`, an error if the function failed.
pub fn emf_line(function: &str, version: &str, candidate: bool, failed: bool) -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    serde_json::json!({
        "_aws": {"Timestamp": millis, "CloudWatchMetrics": [{
            "Namespace": "coalmine/Router", "Dimensions": [["FunctionName", "Version"]],
            "Metrics": [{"Name": "RoutedRequests", "Unit": "Count"}, {"Name": "RoutedErrors", "Unit": "Count"}],
        }]},
        "FunctionName": function, "Version": version, "Cohort": if candidate { "candidate" } else { "stable" },
        "RoutedRequests": 1, "RoutedErrors": u8::from(failed),
    })
    .to_string()
}
