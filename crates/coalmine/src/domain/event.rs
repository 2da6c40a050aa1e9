//! The ways an alarm reaches the rollback function, decoded into one [`AlarmEvent`]:
//! EventBridge's "CloudWatch Alarm State Change" event, the payload a CloudWatch alarm's
//! direct Lambda action sends, the SNS notification an alarm publishes to a topic (the
//! team's paging topic, subscribed to the function), and an Azure Monitor alert in the
//! common alert schema (handed on by the alert webhook).

use std::collections::BTreeMap;

use aws_lambda_events::event::cloudwatch_alarms::{CloudWatchAlarm, CloudWatchAlarmData, CloudWatchAlarmStateValue};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sns::SnsEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::domain::error::Error;
use crate::domain::watched::WatchedMetric;

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
    Sns,
    AzureMonitor,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::EventBridge => "eventbridge",
            Delivery::AlarmAction => "alarm_action",
            Delivery::Sns => "sns",
            Delivery::AzureMonitor => "azure_monitor",
        }
    }
}

impl Delivery {
    /// Whether an event that came this way must be confirmed with CloudWatch before it
    /// moves traffic: anyone who may publish to a team's paging topic, or invoke the
    /// function, can write these. EventBridge accepts `aws.cloudwatch` events from
    /// CloudWatch alone, and an Azure alert is checked by the webhook's token and scope.
    pub fn needs_confirmation(self) -> bool {
        matches!(self, Delivery::Sns | Delivery::AlarmAction)
    }
}

/// What CloudWatch says of an alarm a notification claims went to ALARM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// It is in ALARM now.
    InAlarm,
    /// It entered ALARM when the notification says, and has left it since (a late
    /// delivery or a retry): still a real alarm.
    FiredThen,
    /// It exists, but is not in ALARM and did not enter it then.
    NotFired(AlarmState),
    /// No alarm has that name.
    NoSuchAlarm,
}

impl Confirmation {
    pub fn is_real(self) -> bool {
        matches!(self, Confirmation::InAlarm | Confirmation::FiredThen)
    }
}

/// The tag that names, on an alarm, the targets it guards (space-separated).
pub const TARGET_TAG: &str = "coalmine:target";

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
    /// The targets the alert itself names (an Azure alert rule's `coalmine:target`
    /// custom property), honoured as a CloudWatch alarm's tag is.
    pub declared_targets: Option<String>,
    /// An Azure alert's target resource (its first `alertTargetIDs`): the one endpoint
    /// the alert may act on, whatever its custom properties name.
    pub resource: Option<String>,
}

impl AlarmEvent {
    /// coalmine's own tripwire, tripped to stop a guardrail deployment (SageMaker rolls
    /// it back): whoever tripped it has already said so.
    pub fn is_tripwire(&self) -> bool {
        self.metrics.iter().any(|m| m.namespace.as_deref() == Some(crate::domain::deployment::TRIPWIRE_NAMESPACE))
    }

    /// Decodes any of the three shapes: one event, or one per SNS record. Anything else
    /// is an error that names what was found.
    pub fn decode(payload: &Value) -> Result<Vec<Self>, Error> {
        if payload.get("Records").is_some() {
            return Self::from_sns(payload);
        }
        Self::decode_one(payload).map(|event| vec![event])
    }

    fn decode_one(payload: &Value) -> Result<Self, Error> {
        let Some(object) = payload.as_object() else {
            return Err(Error::BadEvent(format!(
                "expected a JSON object (an EventBridge alarm event, an alarm action payload or SNS records), got {}",
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
        if object.contains_key("schemaId") {
            return Self::from_azure_alert(payload);
        }
        if object.contains_key("alarmData") {
            let event: CloudWatchAlarm<Value, Value> = serde_json::from_value(payload.clone())
                .map_err(|e| Error::BadEvent(format!("malformed CloudWatch alarm action payload: {e}")))?;
            return Self::from_alarm_data(Delivery::AlarmAction, event.alarm_data, event.alarm_arn);
        }
        let keys: Vec<&str> = object.keys().map(String::as_str).take(8).collect();
        Err(Error::BadEvent(format!(
            "neither an EventBridge event (no \"detail-type\"), an alarm action payload (no \"alarmData\"), SNS \
             records (no \"Records\") nor an Azure Monitor alert (no \"schemaId\"); top-level keys: {keys:?}"
        )))
    }

    /// SNS delivers one record per invocation; each `Sns.Message` is the alarm's
    /// notification as JSON (`AlarmName`, `NewStateValue`, `Trigger`, ...).
    fn from_sns(payload: &Value) -> Result<Vec<Self>, Error> {
        let sources: Vec<&str> = payload["Records"]
            .as_array()
            .map(|records| records.iter().filter_map(|r| r.get("EventSource").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        if let Some(other) = sources.iter().find(|s| **s != "aws:sns") {
            return Err(Error::BadEvent(format!(
                "records from {other:?}; only SNS records (\"aws:sns\") carrying CloudWatch alarm notifications are handled"
            )));
        }
        let event: SnsEvent = serde_json::from_value(payload.clone())
            .map_err(|e| Error::BadEvent(format!("malformed SNS event: {e}")))?;
        if event.records.is_empty() {
            return Err(Error::BadEvent("SNS event with no records".into()));
        }
        event
            .records
            .iter()
            .map(|record| {
                let notification: SnsAlarmNotification = serde_json::from_str(&record.sns.message).map_err(|e| {
                    Error::BadEvent(format!(
                        "SNS message {} on {} is not a CloudWatch alarm notification ({e}); subscribe the rollback \
                         function only to topics its alarms publish to",
                        record.sns.message_id, record.sns.topic_arn
                    ))
                })?;
                notification.into_event()
            })
            .collect()
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
            declared_targets: None,
            resource: None,
        })
    }

    /// An Azure Monitor alert in the common alert schema: `Fired` is ALARM, `Resolved`
    /// OK; a metric alert's conditions are its watched metrics, on its target resource.
    fn from_azure_alert(payload: &Value) -> Result<Self, Error> {
        let alert: CommonAlert = serde_path_to_error::deserialize(payload)
            .map_err(|e| Error::BadEvent(format!("malformed Azure Monitor alert at `{}`: {}", e.path(), e.inner())))?;
        if alert.schema_id != COMMON_ALERT_SCHEMA {
            return Err(Error::BadEvent(format!(
                "Azure alert with schemaId {:?}; only {COMMON_ALERT_SCHEMA:?} is handled: turn on the common alert \
                 schema for the webhook in the action group",
                alert.schema_id
            )));
        }
        let essentials = alert.data.essentials;
        if essentials.alert_rule.trim().is_empty() {
            return Err(Error::BadEvent("the Azure alert's alertRule is empty".into()));
        }
        let (state, state_time) = match essentials.monitor_condition.as_str() {
            "Fired" => (AlarmState::Alarm, essentials.fired_date_time),
            "Resolved" => (AlarmState::Ok, essentials.resolved_date_time.or(essentials.fired_date_time)),
            other => {
                return Err(Error::BadEvent(format!(
                    "Azure alert {:?} has monitorCondition {other:?}; expected Fired or Resolved",
                    essentials.alert_rule
                )))
            }
        };
        let resource = essentials.alert_target_ids.first().cloned();
        let conditions = alert.data.alert_context.pointer("/condition/allOf").and_then(Value::as_array);
        let metrics: Vec<WatchedMetric> = conditions
            .into_iter()
            .flatten()
            .filter_map(|condition| {
                let dimensions = condition
                    .get("dimensions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|d| Some((d.get("name")?.as_str()?.to_owned(), d.get("value")?.as_str()?.to_owned())))
                    .collect();
                Some(WatchedMetric {
                    namespace: condition.get("metricNamespace").and_then(Value::as_str).map(str::to_owned),
                    name: condition.get("metricName")?.as_str()?.to_owned(),
                    dimensions,
                    resource: resource.clone(),
                })
            })
            .collect();
        let reason = match (essentials.description.filter(|d| !d.trim().is_empty()), conditions) {
            (Some(description), _) => description,
            (None, Some(conditions)) => conditions.iter().map(condition_text).collect::<Vec<_>>().join("; "),
            (None, None) => format!("{} {}", essentials.signal_type.unwrap_or_default(), "alert").trim().to_owned(),
        };
        let declared_targets = alert
            .data
            .custom_properties
            .and_then(|properties| properties.get(TARGET_TAG).cloned())
            .and_then(|value| value.as_str().map(str::to_owned));
        Ok(AlarmEvent {
            delivery: Delivery::AzureMonitor,
            alarm_name: essentials.alert_rule,
            alarm_arn: None,
            state,
            previous_state: None,
            reason,
            state_time: state_time.unwrap_or_default(),
            metrics,
            declared_targets,
            resource,
        })
    }
}

pub const COMMON_ALERT_SCHEMA: &str = "azureMonitorCommonAlertSchema";

/// Azure Monitor's common alert schema, read leniently: what the rollback needs, any
/// other field ignored (alert types add their own).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonAlert {
    schema_id: String,
    data: CommonAlertData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonAlertData {
    essentials: Essentials,
    #[serde(default)]
    alert_context: Value,
    #[serde(default)]
    custom_properties: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Essentials {
    alert_rule: String,
    monitor_condition: String,
    #[serde(default, rename = "alertTargetIDs")]
    alert_target_ids: Vec<String>,
    #[serde(default)]
    fired_date_time: Option<String>,
    #[serde(default)]
    resolved_date_time: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    signal_type: Option<String>,
}

/// "RequestsPerMinute Total GreaterThan 5 (value 12)": a metric condition as a reason.
fn condition_text(condition: &Value) -> String {
    let field = |name: &str| match condition.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let mut text = ["metricName", "timeAggregation", "operator", "threshold"]
        .iter()
        .map(|name| field(name))
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let value = field("metricValue");
    if !value.is_empty() {
        text.push_str(&format!(" (value {value})"));
    }
    text
}

/// CloudWatch's alarm notification as SNS carries it, read leniently: alarms without a
/// description send `null`, metric-math alarms send `Metrics` instead of one metric.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsAlarmNotification {
    alarm_name: String,
    #[serde(default)]
    alarm_arn: Option<String>,
    new_state_value: String,
    #[serde(default)]
    old_state_value: Option<String>,
    #[serde(default)]
    new_state_reason: Option<String>,
    #[serde(default)]
    state_change_time: Option<String>,
    #[serde(default)]
    trigger: Option<SnsTrigger>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsTrigger {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<SnsDimension>,
    #[serde(default)]
    metrics: Vec<SnsMetricQuery>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsMetricQuery {
    metric_stat: Option<SnsMetricStat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsMetricStat {
    metric: SnsMetric,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsMetric {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<SnsDimension>,
}

/// The notification spells dimensions `{"name": ..., "value": ...}`, in lower case.
#[derive(Deserialize)]
struct SnsDimension {
    name: String,
    value: String,
}

impl SnsAlarmNotification {
    fn into_event(self) -> Result<AlarmEvent, Error> {
        if self.alarm_name.trim().is_empty() {
            return Err(Error::BadEvent("AlarmName is empty".into()));
        }
        let state = AlarmState::parse(&self.new_state_value).ok_or_else(|| {
            Error::BadEvent(format!("alarm {:?} has state {:?}", self.alarm_name, self.new_state_value))
        })?;
        let dimensions = |dims: Vec<SnsDimension>| dims.into_iter().map(|d| (d.name, d.value)).collect();
        let trigger = self.trigger.unwrap_or_default();
        let mut metrics: Vec<WatchedMetric> = trigger
            .metrics
            .into_iter()
            .filter_map(|query| query.metric_stat)
            .filter_map(|stat| {
                Some(WatchedMetric {
                    namespace: stat.metric.namespace,
                    name: stat.metric.metric_name?,
                    dimensions: dimensions(stat.metric.dimensions),
                    resource: None,
                })
            })
            .collect();
        if let Some(name) = trigger.metric_name {
            metrics.push(WatchedMetric {
                namespace: trigger.namespace,
                name,
                dimensions: dimensions(trigger.dimensions),
                resource: None,
            });
        }
        Ok(AlarmEvent {
            delivery: Delivery::Sns,
            alarm_name: self.alarm_name,
            alarm_arn: self.alarm_arn,
            state,
            previous_state: self.old_state_value.as_deref().and_then(AlarmState::parse),
            reason: self.new_state_reason.unwrap_or_default(),
            state_time: self.state_change_time.map(|t| rfc3339_offset(&t)).unwrap_or_default(),
            metrics,
            declared_targets: None,
            resource: None,
        })
    }
}

/// CloudWatch's notifications write the offset without a colon (`+0000`); RFC 3339,
/// as the other two shapes give it, wants `+00:00`.
fn rfc3339_offset(time: &str) -> String {
    let bytes = time.as_bytes();
    let n = bytes.len();
    if n > 5 && matches!(bytes[n - 5], b'+' | b'-') && bytes[n - 4..].iter().all(u8::is_ascii_digit) {
        format!("{}:{}", &time[..n - 2], &time[n - 2..])
    } else {
        time.to_owned()
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
                resource: None,
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
        crate::workspace_file("events")
    }

    pub(crate) fn sample_json(file: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(events_dir().join(file)).unwrap()).unwrap()
    }

    /// The one alarm event a sample file holds.
    pub(crate) fn sample(file: &str) -> AlarmEvent {
        one(AlarmEvent::decode(&sample_json(file)).unwrap())
    }

    fn one(mut events: Vec<AlarmEvent>) -> AlarmEvent {
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    #[test]
    fn every_sample_alarm_event_decodes_and_round_trips() {
        let mut seen = 0;
        for entry in std::fs::read_dir(events_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let event = one(AlarmEvent::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}")));
            assert!(!event.alarm_name.is_empty() && event.alarm_arn.is_some(), "{name}");
            assert!(event.alarm_name.starts_with("coalmine-"), "{name}: the template's default AlarmNamePrefix");
            // Round trip through the aws_lambda_events types keeps what we read.
            let typed = if name.ends_with(".eventbridge.json") {
                serde_json::to_value(
                    serde_json::from_value::<EventBridgeEvent<CloudWatchAlarmData<Value, Value>>>(raw).unwrap(),
                )
            } else if name.ends_with(".alarm-action.json") {
                serde_json::to_value(serde_json::from_value::<CloudWatchAlarm<Value, Value>>(raw).unwrap())
            } else {
                assert!(name.ends_with(".sns.json"), "{name}: an unknown kind of sample");
                serde_json::to_value(serde_json::from_value::<SnsEvent>(raw).unwrap())
            };
            assert_eq!(one(AlarmEvent::decode(&typed.unwrap()).unwrap()), event, "{name}");
            seen += 1;
        }
        assert!(seen >= 8, "expected the eight documented samples, saw {seen}");
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
            (Delivery::AlarmAction, "coalmine-ai-handler-canary-errors", AlarmState::Alarm)
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
    fn an_sns_delivered_alarm_reads_like_the_other_shapes() {
        let eventbridge = sample("alarm-lambda-canary.eventbridge.json");
        let sns = sample("alarm-lambda-canary.sns.json");
        assert_eq!(sns.delivery, Delivery::Sns);
        assert_eq!(
            (&sns.alarm_name, &sns.alarm_arn, sns.state, sns.previous_state, &sns.reason, &sns.state_time),
            (
                &eventbridge.alarm_name,
                &eventbridge.alarm_arn,
                eventbridge.state,
                eventbridge.previous_state,
                &eventbridge.reason,
                &eventbridge.state_time
            ),
        );
        assert_eq!(sns.metrics, eventbridge.metrics, "Trigger.Dimensions as a list of {{name, value}}");

        let math = sample("alarm-metric-math.sns.json");
        assert_eq!(math.metrics.len(), 2, "Trigger.Metrics: the expression contributes no metric");
        assert_eq!(math.metrics[0].dimensions["Resource"], "ai-handler:production");
    }

    #[test]
    fn sns_records_that_are_not_alarm_notifications_are_refused_by_name() {
        let mut not_an_alarm = sample_json("alarm-lambda-canary.sns.json");
        not_an_alarm["Records"][0]["Sns"]["Message"] = "Deploy finished".into();
        let err = AlarmEvent::decode(&not_an_alarm).unwrap_err();
        assert!(err.to_string().contains("is not a CloudWatch alarm notification"), "{err}");
        assert!(err.to_string().contains("arn:aws:sns:us-east-1:123456789012:team-paging"), "{err}");

        let mut sqs = sample_json("alarm-lambda-canary.sns.json");
        sqs["Records"][0]["EventSource"] = "aws:sqs".into();
        assert!(AlarmEvent::decode(&sqs).unwrap_err().to_string().contains("\"aws:sqs\""));

        let empty = serde_json::json!({"Records": []});
        assert!(AlarmEvent::decode(&empty).unwrap_err().to_string().contains("no records"));
    }

    #[test]
    fn an_azure_monitor_alert_in_the_common_schema_reads_like_an_alarm() {
        let fired = sample("azure/alert-azureml-canary.common-schema.json");
        assert_eq!(
            (fired.delivery, fired.alarm_name.as_str(), fired.state, fired.alarm_arn.as_deref()),
            (Delivery::AzureMonitor, "coalmine-chat-green-5xx", AlarmState::Alarm, None)
        );
        assert_eq!(fired.state_time, "2026-11-30T09:14:26.4521807Z");
        assert_eq!(fired.reason, "RequestsPerMinute Average GreaterThan 5 (value 12.4)");
        let metric = &fired.metrics[0];
        assert_eq!(metric.dimensions["deployment"], "green");
        assert_eq!(metric.namespace.as_deref(), Some("Microsoft.MachineLearningServices/workspaces/onlineEndpoints"));
        assert!(metric.resource.as_deref().unwrap().ends_with("/onlineendpoints/chat-endpoint"));
        assert_eq!(fired.declared_targets, None);

        let resolved = sample("azure/resolved-azureml-canary.common-schema.json");
        assert_eq!((resolved.state, resolved.state_time.as_str()), (AlarmState::Ok, "2026-11-30T09:31:02.1180941Z"));

        let tagged = sample("azure/alert-azureml-tagged.common-schema.json");
        assert_eq!(
            tagged.declared_targets.as_deref(),
            Some("azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:blue:green")
        );
    }

    #[test]
    fn azures_published_common_alert_sample_decodes() {
        let path = crate::workspace_file("tests/fixtures/azure/CommonAlertSchema_sample.json");
        let published: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let event = one(AlarmEvent::decode(&published).unwrap());
        assert_eq!((event.alarm_name.as_str(), event.state), ("WCUS-R2-Gen2", AlarmState::Ok), "Resolved");
        assert_eq!(event.state_time, "2019-03-22T14:03:16.2246313Z");
        assert_eq!(event.metrics[0].dimensions["ResourceId"], "a0a0a0a0-bbbb-cccc-dddd-e1e1e1e1e1e1");
        assert_eq!(event.declared_targets, None, "custom properties, but no coalmine:target");
    }

    #[test]
    fn an_azure_alert_that_is_not_one_coalmine_can_read_says_why() {
        let base = sample_json("azure/alert-azureml-canary.common-schema.json");
        let mut old_schema = base.clone();
        old_schema["schemaId"] = "AzureMonitorMetricAlert".into();
        let mut unknown = base.clone();
        unknown["data"]["essentials"]["monitorCondition"] = "Muted".into();
        let mut no_rule = base.clone();
        no_rule["data"]["essentials"].as_object_mut().unwrap().remove("alertRule");
        let cases = [
            (old_schema, "turn on the common alert schema"),
            (unknown, "monitorCondition \"Muted\"; expected Fired or Resolved"),
            (no_rule, "malformed Azure Monitor alert at `data.essentials`: missing field `alertRule`"),
        ];
        for (payload, expected) in cases {
            let err = AlarmEvent::decode(&payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should say {expected:?}");
        }
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
