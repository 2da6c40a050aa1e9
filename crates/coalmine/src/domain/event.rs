//! The two ways an alarm reaches the rollback function, decoded into one [`AlarmEvent`]:
//! EventBridge's "CloudWatch Alarm State Change" event and the payload a CloudWatch
//! alarm's direct Lambda action sends.

use std::collections::BTreeMap;

use aws_lambda_events::event::cloudwatch_alarms::{CloudWatchAlarm, CloudWatchAlarmData, CloudWatchAlarmStateValue};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::Value;

use crate::domain::error::Error;

pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";
const CLOUDWATCH_SOURCE: &str = "aws.cloudwatch";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
}

/// Which delivery the event came by; kept for the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    EventBridge,
    AlarmAction,
}

/// One metric an alarm watches: its namespace and dimensions (metric-math expressions
/// contribute none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedMetric {
    pub namespace: Option<String>,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlarmEvent {
    pub delivery: Delivery,
    pub alarm_name: String,
    pub alarm_arn: Option<String>,
    pub state: AlarmState,
    pub previous_state: Option<AlarmState>,
    pub reason: String,
    /// When the alarm entered `state`, RFC 3339.
    pub state_time: String,
    pub metrics: Vec<WatchedMetric>,
}

impl AlarmEvent {
    /// Decodes either shape. Anything else is an error that names what was found.
    pub fn decode(payload: &Value) -> Result<Self, Error> {
        let Some(object) = payload.as_object() else {
            return Err(Error::BadEvent(format!(
                "expected a JSON object (an EventBridge alarm event or an alarm action payload), got {}",
                json_kind(payload)
            )));
        };
        if let Some(detail_type) = object.get("detail-type") {
            let source = object.get("source").and_then(Value::as_str).unwrap_or_default();
            if detail_type.as_str() != Some(ALARM_STATE_CHANGE) || source != CLOUDWATCH_SOURCE {
                return Err(Error::BadEvent(format!(
                    "EventBridge event with detail-type {detail_type} from source {source:?}; only \
                     {ALARM_STATE_CHANGE:?} from {CLOUDWATCH_SOURCE:?} is handled: check the rule's event pattern"
                )));
            }
            let event: EventBridgeEvent<CloudWatchAlarmData<Value, Value>> = serde_json::from_value(payload.clone())
                .map_err(|e| Error::BadEvent(format!("malformed {ALARM_STATE_CHANGE:?} event: {e}")))?;
            let arn = event.resources.as_ref().and_then(|r| r.first().cloned());
            return Self::from_alarm_data(Delivery::EventBridge, event.detail, arn);
        }
        if object.contains_key("alarmData") {
            let event: CloudWatchAlarm<Value, Value> = serde_json::from_value(payload.clone())
                .map_err(|e| Error::BadEvent(format!("malformed CloudWatch alarm action payload: {e}")))?;
            return Self::from_alarm_data(Delivery::AlarmAction, event.alarm_data, event.alarm_arn);
        }
        let keys: Vec<&str> = object.keys().map(String::as_str).take(8).collect();
        Err(Error::BadEvent(format!(
            "neither an EventBridge event (no \"detail-type\") nor an alarm action payload (no \"alarmData\"); \
             top-level keys: {keys:?}"
        )))
    }

    fn from_alarm_data(
        delivery: Delivery,
        data: CloudWatchAlarmData<Value, Value>,
        alarm_arn: Option<String>,
    ) -> Result<Self, Error> {
        if data.alarm_name.trim().is_empty() {
            return Err(Error::BadEvent("alarmName is empty".into()));
        }
        let state = data.state.ok_or_else(|| Error::BadEvent(format!("alarm {:?} has no state", data.alarm_name)))?;
        Ok(AlarmEvent {
            delivery,
            metrics: watched_metrics(&data.configuration),
            alarm_name: data.alarm_name,
            alarm_arn,
            state: state_of(&state.value),
            previous_state: data.previous_state.map(|s| state_of(&s.value)),
            reason: state.reason,
            state_time: state.timestamp.to_rfc3339(),
        })
    }
}

fn state_of(value: &CloudWatchAlarmStateValue) -> AlarmState {
    match value {
        CloudWatchAlarmStateValue::Alarm => AlarmState::Alarm,
        CloudWatchAlarmStateValue::InsufficientData => AlarmState::InsufficientData,
        _ => AlarmState::Ok,
    }
}

/// `configuration.metrics[].metricStat.metric`, read leniently: metric-math entries
/// (`expression` instead of `metricStat`) and composite alarms simply contribute nothing.
fn watched_metrics(configuration: &Value) -> Vec<WatchedMetric> {
    let Some(metrics) = configuration.get("metrics").and_then(Value::as_array) else {
        return Vec::new();
    };
    metrics
        .iter()
        .filter_map(|m| m.pointer("/metricStat/metric"))
        .filter_map(|metric| {
            let name = metric.get("name")?.as_str()?.to_owned();
            let dimensions = metric
                .get("dimensions")
                .and_then(Value::as_object)
                .map(|d| d.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
                .unwrap_or_default();
            Some(WatchedMetric {
                namespace: metric.get("namespace").and_then(Value::as_str).map(str::to_owned),
                name,
                dimensions,
            })
        })
        .collect()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    fn events_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
    }

    pub(crate) fn sample(file: &str) -> AlarmEvent {
        let raw = std::fs::read_to_string(events_dir().join(file)).unwrap();
        AlarmEvent::decode(&serde_json::from_str(&raw).unwrap()).unwrap()
    }

    #[test]
    fn every_sample_alarm_event_decodes_and_round_trips() {
        let mut seen = 0;
        for entry in std::fs::read_dir(events_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.ends_with(".eventbridge.json") || name.ends_with(".alarm-action.json")) {
                continue;
            }
            let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let event = AlarmEvent::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!event.alarm_name.is_empty() && event.alarm_arn.is_some(), "{name}");
            // Round trip through the aws_lambda_events types keeps what we read.
            let again = if name.ends_with(".eventbridge.json") {
                let typed: EventBridgeEvent<CloudWatchAlarmData<Value, Value>> = serde_json::from_value(raw).unwrap();
                AlarmEvent::decode(&serde_json::to_value(typed).unwrap()).unwrap()
            } else {
                let typed: CloudWatchAlarm<Value, Value> = serde_json::from_value(raw).unwrap();
                AlarmEvent::decode(&serde_json::to_value(typed).unwrap()).unwrap()
            };
            assert_eq!(again, event, "{name}");
            seen += 1;
        }
        assert!(seen >= 6, "expected the six documented samples, saw {seen}");
    }

    #[test]
    fn samples_carry_the_states_and_dimensions_they_claim() {
        let alarm = sample("alarm-lambda-canary.eventbridge.json");
        assert_eq!(
            (alarm.state, alarm.previous_state, alarm.delivery),
            (AlarmState::Alarm, Some(AlarmState::Ok), Delivery::EventBridge)
        );
        assert_eq!(alarm.metrics[0].dimensions["Resource"], "ai-handler:production");
        assert_eq!(alarm.state_time, "2026-11-23T17:04:40.989+00:00");

        let action = sample("alarm-lambda-canary.alarm-action.json");
        assert_eq!(
            (action.delivery, action.alarm_name.as_str(), action.state),
            (Delivery::AlarmAction, "ai-handler-canary-errors", AlarmState::Alarm)
        );
        assert_eq!(action.alarm_arn, alarm.alarm_arn);

        assert_eq!(sample("ok-lambda-canary.eventbridge.json").state, AlarmState::Ok);
        assert_eq!(sample("insufficient-data-lambda-canary.eventbridge.json").state, AlarmState::InsufficientData);
        let math = sample("alarm-metric-math.eventbridge.json");
        assert_eq!(math.metrics.len(), 2, "the expression contributes no metric");
        let sagemaker = sample("alarm-sagemaker-canary.eventbridge.json");
        assert_eq!(sagemaker.metrics[0].dimensions["VariantName"], "canary");
    }

    #[test]
    fn malformed_input_is_a_clear_error_not_a_panic() {
        let base: Value = serde_json::from_str(
            &std::fs::read_to_string(events_dir().join("alarm-lambda-canary.eventbridge.json")).unwrap(),
        )
        .unwrap();
        let mut no_state = base.clone();
        no_state["detail"].as_object_mut().unwrap().remove("state");
        let mut no_name = base.clone();
        no_name["detail"].as_object_mut().unwrap().remove("alarmName");
        let mut wrong_type = base.clone();
        wrong_type["detail"]["state"]["value"] = serde_json::json!(42);
        let mut bad_time = base.clone();
        bad_time["detail"]["state"]["timestamp"] = serde_json::json!("yesterday");
        let mut other_source = base.clone();
        other_source["source"] = serde_json::json!("my.app");
        let cases: Vec<(Value, &str)> = vec![
            (serde_json::json!(null), "JSON object"),
            (serde_json::json!([1, 2]), "an array"),
            (serde_json::json!("ALARM"), "a string"),
            (serde_json::json!({"hello": "world"}), "\"hello\""),
            (
                serde_json::json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}),
                "rule's event pattern",
            ),
            (other_source, "my.app"),
            (no_state, "has no state"),
            (no_name, "alarmName"),
            (wrong_type, "malformed"),
            (bad_time, "malformed"),
            (serde_json::json!({"alarmData": {"alarmName": "x"}}), "alarm action payload"),
        ];
        for (payload, expected) in cases {
            let err = AlarmEvent::decode(&payload).expect_err(&payload.to_string());
            assert!(matches!(err, Error::BadEvent(_)));
            assert!(err.to_string().contains(expected), "{err} should mention {expected:?}");
        }
    }
}
