//! The alert webhook: an Azure Monitor action group posts an alert, in the common alert
//! schema, to the stack's Lambda function URL. Whoever presents the token (in the URL's
//! path, or the `x-coalmine-token` header) has the alert handed to the rollback function;
//! anyone else, and anything malformed, is refused and logged, and nothing moves.
//!
//! The answer comes at once, well inside the 10 seconds an action group waits: the
//! rollback itself runs in the rollback function's own asynchronous invocation, where
//! Lambda retries it and its on-failure destination keeps it, exactly as for a
//! CloudWatch alarm. Only what a retry can help answers 503, which Azure retries; a
//! refusal is 401 or 400, which it does not.

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{error, info, warn};

use crate::domain::event::{AlarmEvent, AlarmState, Delivery};
use crate::ports::{AlertHandoff, WebhookTokens};

/// The header a caller may present the token in, instead of the path.
pub const TOKEN_HEADER: &str = "x-coalmine-token";
/// Shorter tokens are refused as misconfiguration: a guessable token guards nothing.
pub const MIN_TOKEN_LEN: usize = 32;

/// An HTTP answer, as a function URL takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Reply { status, body }
    }

    /// The function URL's response object (payload format 2.0).
    pub fn into_response(self) -> Value {
        json!({
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": self.body.to_string(),
        })
    }
}

/// A Lambda function URL's request (payload format 2.0), not an alarm event.
pub fn is_function_url_request(payload: &Value) -> bool {
    payload.pointer("/requestContext/http/method").is_some() && payload.get("rawPath").is_some()
}

pub async fn receive(request: &Value, tokens: &impl WebhookTokens, handoff: &impl AlertHandoff) -> Reply {
    let source = request.pointer("/requestContext/http/sourceIp").and_then(Value::as_str).unwrap_or("unknown");
    let method = request.pointer("/requestContext/http/method").and_then(Value::as_str).unwrap_or_default();
    if method != "POST" {
        warn!(source, method, decision = "refused", "the alert webhook takes POST only; nothing moved");
        return Reply::new(405, json!({"error": "POST an Azure Monitor alert (common alert schema)"}));
    }
    let Some(presented) = presented_token(request) else {
        warn!(source, decision = "refused", "no token in the path or the x-coalmine-token header; nothing moved");
        return unauthorized();
    };
    match authenticate(&presented, tokens).await {
        Ok(Some(true)) => {}
        Ok(Some(false)) => {
            warn!(source, decision = "refused", "a wrong token; nothing moved");
            return unauthorized();
        }
        Ok(None) => {
            warn!(source, decision = "unsure", "a token that matches no copy read a moment ago; the sender retries");
            return Reply::new(503, json!({"error": "the token cannot be checked again yet; retry"}));
        }
        Err(problem) => {
            error!(source, decision = "unavailable", error = %problem, "cannot check the token; the sender retries");
            return Reply::new(503, json!({"error": "the webhook cannot check tokens right now"}));
        }
    }
    let alert = match body_json(request) {
        Ok(alert) => alert,
        Err(why) => {
            warn!(source, decision = "rejected", why, "not an alert; nothing moved");
            return Reply::new(400, json!({"error": why}));
        }
    };
    let event = match AlarmEvent::decode(&alert) {
        Ok(events) if events.len() == 1 && events[0].delivery == Delivery::AzureMonitor => events.into_iter().next(),
        Ok(_) => None,
        Err(e) => {
            warn!(source, decision = "rejected", error = %e, "not an Azure Monitor alert; nothing moved");
            return Reply::new(400, json!({"error": e.to_string()}));
        }
    };
    let Some(event) = event else {
        warn!(source, decision = "rejected", "the webhook takes Azure Monitor alerts only; nothing moved");
        return Reply::new(
            400,
            json!({"error": "only Azure Monitor alerts in the common alert schema are taken here"}),
        );
    };
    if event.state != AlarmState::Alarm {
        info!(alert = %event.alarm_name, state = event.state.as_str(), decision = "ignored", "only a fired alert rolls back");
        return Reply::new(
            200,
            json!({"alert": event.alarm_name, "outcome": "ignored", "why": "only Fired rolls back"}),
        );
    }
    match handoff.hand_off(&alert).await {
        Ok(()) => {
            info!(alert = %event.alarm_name, source, decision = "handed_off", "the rollback function takes it from here");
            Reply::new(202, json!({"alert": event.alarm_name, "outcome": "accepted"}))
        }
        Err(e) => {
            error!(alert = %event.alarm_name, decision = "handoff_failed", error = %e, "not handed to the rollback function; the sender retries");
            Reply::new(503, json!({"alert": event.alarm_name, "error": "not handed on; retry"}))
        }
    }
}

fn unauthorized() -> Reply {
    Reply::new(401, json!({"error": "unauthorized"}))
}

/// The token in the header, else the URL path's last segment.
fn presented_token(request: &Value) -> Option<String> {
    let header = request
        .get("headers")
        .and_then(Value::as_object)
        .and_then(|headers| headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(TOKEN_HEADER)))
        .and_then(|(_, value)| value.as_str());
    let path = request.get("rawPath").and_then(Value::as_str).and_then(|p| p.rsplit('/').find(|s| !s.is_empty()));
    header.or(path).map(str::to_owned).filter(|t| !t.is_empty())
}

/// Compared as SHA-256 digests, in constant time: neither the content nor the length of
/// a token leaks through the comparison's timing. A mismatch is checked once more
/// against the tokens read afresh, so a rotated secret is honoured at once; `None` when
/// they cannot be read afresh yet (the caller is asked to retry, not refused).
async fn authenticate(presented: &str, tokens: &impl WebhookTokens) -> Result<Option<bool>, String> {
    let digest = Sha256::digest(presented.as_bytes());
    let arrived = std::time::Instant::now();
    for read_since in [None, Some(arrived)] {
        let Some(accepted) = tokens.tokens(read_since).await.map_err(|e| e.to_string())? else { return Ok(None) };
        if let Some(short) = accepted.first().filter(|current| current.len() < MIN_TOKEN_LEN) {
            return Err(format!(
                "the webhook's token is {} characters, under {MIN_TOKEN_LEN}: store a long random one in its secret",
                short.len()
            ));
        }
        let mut matched = subtle::Choice::from(0);
        for token in &accepted {
            matched |= digest.ct_eq(&Sha256::digest(token.as_bytes()));
        }
        if bool::from(matched) {
            return Ok(Some(true));
        }
    }
    Ok(Some(false))
}

fn body_json(request: &Value) -> Result<Value, &'static str> {
    let body = request.get("body").and_then(Value::as_str).ok_or("no body: POST the alert as JSON")?;
    let bytes = if request.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false) {
        base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| "the body is not valid base64")?
    } else {
        body.as_bytes().to_vec()
    };
    serde_json::from_slice(&bytes).map_err(|_| "the body is not JSON")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::error::{Error, Result};
    use crate::domain::event::tests::sample_json;

    const TOKEN: &str = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";

    struct Tokens {
        now: Mutex<Vec<String>>,
        reads: Mutex<Vec<bool>>,
    }

    impl Tokens {
        /// `versions`: what each read finds, the last one from then on.
        fn new(versions: &[&str]) -> Self {
            Tokens { now: Mutex::new(versions.iter().map(|v| v.to_string()).collect()), reads: Mutex::default() }
        }
    }

    impl WebhookTokens for Tokens {
        async fn tokens(&self, read_since: Option<std::time::Instant>) -> Result<Option<Vec<String>>> {
            let fresh = read_since.is_some();
            self.reads.lock().unwrap().push(fresh);
            let mut now = self.now.lock().unwrap();
            if now.is_empty() {
                return Err(Error::Service {
                    operation: "secretsmanager:GetSecretValue",
                    detail: "down".into(),
                    retryable: true,
                });
            }
            if fresh && now.len() > 1 {
                now.remove(0);
            }
            Ok(Some(vec![now[0].clone()]))
        }
    }

    #[derive(Default)]
    struct Handoff {
        alerts: Mutex<Vec<Value>>,
        fail: bool,
    }

    impl AlertHandoff for Handoff {
        async fn hand_off(&self, alert: &Value) -> Result<()> {
            if self.fail {
                return Err(Error::Service {
                    operation: "lambda:Invoke",
                    detail: "TooManyRequestsException".into(),
                    retryable: true,
                });
            }
            self.alerts.lock().unwrap().push(alert.clone());
            Ok(())
        }
    }

    /// What a function URL hands the function for a POST to `path`, as MiniStack and
    /// AWS build it (payload format 2.0).
    fn request(path: &str, headers: Value, body: &Value) -> Value {
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": headers,
            "requestContext": {"http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "IcMBroadcaster/1.0"},
                               "accountId": "anonymous", "requestId": "r-1", "routeKey": "$default", "stage": "$default"},
            "body": body.to_string(), "isBase64Encoded": false
        })
    }

    fn alert() -> Value {
        sample_json("azure/alert-azureml-canary.common-schema.json")
    }

    #[tokio::test]
    async fn a_fired_alert_with_the_token_in_the_path_or_header_is_handed_on_at_once() {
        let (tokens, handoff) = (Tokens::new(&[TOKEN]), Handoff::default());
        let reply = receive(&request(&format!("/{TOKEN}"), json!({}), &alert()), &tokens, &handoff).await;
        assert_eq!(reply, Reply::new(202, json!({"alert": "coalmine-chat-green-5xx", "outcome": "accepted"})));
        let by_header = request("/", json!({"X-Coalmine-Token": TOKEN, "content-type": "application/json"}), &alert());
        assert_eq!(receive(&by_header, &tokens, &handoff).await.status, 202);
        assert_eq!(handoff.alerts.lock().unwrap().clone(), vec![alert(), alert()], "the alert as sent, untouched");
        let response = reply.into_response();
        assert_eq!(response["statusCode"], 202);
        assert_eq!(response["headers"]["content-type"], "application/json");
    }

    #[tokio::test]
    async fn anyone_without_the_token_is_refused_and_nothing_is_handed_on() {
        let (tokens, handoff) = (Tokens::new(&[TOKEN]), Handoff::default());
        let wrong = format!("{}0", &TOKEN[..TOKEN.len() - 1]);
        for path in ["/".to_owned(), format!("/{wrong}"), format!("/{TOKEN}x"), "/short".to_owned()] {
            let reply = receive(&request(&path, json!({}), &alert()), &tokens, &handoff).await;
            assert_eq!(reply.status, 401, "{path}");
        }
        let mut get = request(&format!("/{TOKEN}"), json!({}), &alert());
        get["requestContext"]["http"]["method"] = "GET".into();
        assert_eq!(receive(&get, &tokens, &handoff).await.status, 405);
        assert!(handoff.alerts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_rotated_token_is_read_again_once_and_then_honoured() {
        let rotated = "f".repeat(48);
        let tokens = Tokens::new(&[TOKEN, &rotated]);
        let handoff = Handoff::default();
        let reply = receive(&request(&format!("/{rotated}"), json!({}), &alert()), &tokens, &handoff).await;
        assert_eq!(reply.status, 202);
        assert_eq!(tokens.reads.lock().unwrap().clone(), vec![false, true], "cached, then read afresh once");
    }

    #[tokio::test]
    async fn malformed_or_foreign_bodies_are_refused_naming_why() {
        let (tokens, handoff) = (Tokens::new(&[TOKEN]), Handoff::default());
        let path = format!("/{TOKEN}");
        let mut not_json = request(&path, json!({}), &json!({}));
        not_json["body"] = "alert!".into();
        assert_eq!(
            receive(&not_json, &tokens, &handoff).await,
            Reply::new(400, json!({"error": "the body is not JSON"}))
        );
        let cloudwatch = sample_json("alarm-lambda-canary.eventbridge.json");
        let reply = receive(&request(&path, json!({}), &cloudwatch), &tokens, &handoff).await;
        assert_eq!(reply.status, 400, "CloudWatch alarms come by EventBridge, not this URL");
        let mut old_schema = alert();
        old_schema["schemaId"] = "AzureMonitorMetricAlert".into();
        let reply = receive(&request(&path, json!({}), &old_schema), &tokens, &handoff).await;
        assert!(reply.body["error"].as_str().unwrap().contains("turn on the common alert schema"), "{reply:?}");
        let mut base64 = request(&path, json!({}), &json!({}));
        base64["body"] = base64::engine::general_purpose::STANDARD.encode(alert().to_string()).into();
        base64["isBase64Encoded"] = true.into();
        assert_eq!(receive(&base64, &tokens, &handoff).await.status, 202, "a base64 body is read too");
        assert_eq!(handoff.alerts.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_resolved_alert_is_acknowledged_and_moves_nothing() {
        let (tokens, handoff) = (Tokens::new(&[TOKEN]), Handoff::default());
        let resolved = sample_json("azure/resolved-azureml-canary.common-schema.json");
        let reply = receive(&request(&format!("/{TOKEN}"), json!({}), &resolved), &tokens, &handoff).await;
        assert_eq!((reply.status, reply.body["outcome"].as_str()), (200, Some("ignored")));
        assert!(handoff.alerts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn what_a_retry_can_mend_answers_503_so_azure_sends_it_again() {
        let path = format!("/{TOKEN}");
        let unreadable = Tokens::new(&[]);
        assert_eq!(receive(&request(&path, json!({}), &alert()), &unreadable, &Handoff::default()).await.status, 503);
        let failing = Handoff { fail: true, ..Handoff::default() };
        assert_eq!(receive(&request(&path, json!({}), &alert()), &Tokens::new(&[TOKEN]), &failing).await.status, 503);
        let weak = Tokens::new(&["letmein"]);
        let reply = receive(&request("/letmein", json!({}), &alert()), &weak, &Handoff::default()).await;
        assert_eq!(reply.status, 503, "a token too short to guard anything is a misconfiguration, not a pass");
    }
}
