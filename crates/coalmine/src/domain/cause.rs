//! What took a release's traffic away. One answer, wherever it is told: in the target's
//! stamp (`by=alarm:NAME`), in the release's progress (`rolled_back_by`), in the
//! execution's cause and in the team's message. A retried tick that finds its own
//! rollback in the stamp says it again with the very cause it was written with.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolledBackBy {
    /// The stepper's judge, on the canary's metrics.
    Health,
    /// The stepper's judge, on one of the release's gate alarms.
    GateAlarm,
    /// The rollback function, on this alarm, as it fired.
    Alarm(String),
    /// Someone changed the traffic outside the release; coalmine stopped, writing nothing.
    OutsideChange,
    /// The state machine's safety rollback after a tick kept failing.
    Safety,
    /// A person, through `coalmine abort` or `coalmine rollback`, and why.
    Operator { who: String, why: Option<String> },
    /// A stage waited for approval longer than its `approval_timeout_seconds`.
    ApprovalTimeout,
    /// SageMaker's deployment guardrails rolled a guardrail release back themselves.
    Guardrail,
}

impl RolledBackBy {
    /// The kind, as the progress, logs and message attributes spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            RolledBackBy::Health => "health",
            RolledBackBy::GateAlarm => "gate_alarm",
            RolledBackBy::Alarm(_) => "alarm",
            RolledBackBy::OutsideChange => "outside_change",
            RolledBackBy::Safety => "safety",
            RolledBackBy::Operator { .. } => "operator",
            RolledBackBy::ApprovalTimeout => "approval_timeout",
            RolledBackBy::Guardrail => "guardrail",
        }
    }

    /// The kind without its details, for a spelling read back from a progress.
    fn of_kind(kind: &str) -> Option<RolledBackBy> {
        Some(match kind {
            "health" => RolledBackBy::Health,
            "gate_alarm" => RolledBackBy::GateAlarm,
            "alarm" => RolledBackBy::Alarm(String::new()),
            "outside_change" => RolledBackBy::OutsideChange,
            "safety" => RolledBackBy::Safety,
            "operator" => RolledBackBy::Operator { who: String::new(), why: None },
            "approval_timeout" => RolledBackBy::ApprovalTimeout,
            "guardrail" => RolledBackBy::Guardrail,
            _ => return None,
        })
    }

    /// The person who took the traffic away, when a person did.
    pub fn person(&self) -> Option<&str> {
        match self {
            RolledBackBy::Operator { who, .. } => Some(who),
            _ => None,
        }
    }

    /// How the execution's cause begins.
    pub fn headline(&self) -> &'static str {
        match self {
            RolledBackBy::Health => "Rolled back by its health check",
            RolledBackBy::GateAlarm => "Rolled back on a gate alarm",
            RolledBackBy::Alarm(_) => "Rolled back by the rollback function",
            RolledBackBy::OutsideChange => "Stopped: changed outside the release",
            RolledBackBy::Safety => "Undone by the safety rollback",
            RolledBackBy::Operator { .. } => "Rolled back by hand",
            RolledBackBy::ApprovalTimeout => "Rolled back for want of approval",
            RolledBackBy::Guardrail => "Rolled back by SageMaker's deployment guardrails",
        }
    }

    /// In a subject, in brackets.
    pub fn short(&self) -> &'static str {
        match self {
            RolledBackBy::Health => "health check",
            RolledBackBy::GateAlarm => "gate alarm",
            RolledBackBy::Alarm(_) => "alarm",
            RolledBackBy::OutsideChange => "changed outside the release",
            RolledBackBy::Safety => "safety rollback",
            RolledBackBy::Operator { .. } => "by hand",
            RolledBackBy::ApprovalTimeout => "no approval",
            RolledBackBy::Guardrail => "SageMaker guardrails",
        }
    }

    /// In a sentence: "the rollback function, on alarm X", ...
    pub fn describe(&self) -> String {
        match self {
            RolledBackBy::Alarm(name) => format!("the rollback function, on alarm {name}"),
            RolledBackBy::Health => "the release's own health check".to_owned(),
            RolledBackBy::GateAlarm => "the release's own health check, on a gate alarm".to_owned(),
            RolledBackBy::OutsideChange => "a change made outside the release".to_owned(),
            RolledBackBy::Safety => "the safety rollback, after the release's tick kept failing".to_owned(),
            RolledBackBy::Operator { who, why: Some(why) } => format!("{who}, by hand: {why}"),
            RolledBackBy::Operator { who, why: None } => format!("{who}, by hand"),
            RolledBackBy::ApprovalTimeout => "the release, for want of approval in time".to_owned(),
            RolledBackBy::Guardrail => "SageMaker's deployment guardrails".to_owned(),
        }
    }
}

/// A progress keeps the kind (`"rolled_back_by": "alarm"`); who and why are in its reason.
impl Serialize for RolledBackBy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RolledBackBy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kind = String::deserialize(deserializer)?;
        RolledBackBy::of_kind(&kind)
            .ok_or_else(|| serde::de::Error::custom(format!("{kind:?} is not a kind of rollback coalmine knows")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_keeps_the_kind_of_rollback_and_reads_it_back() {
        let jane = RolledBackBy::Operator { who: "jane".into(), why: Some("truncated answers".into()) };
        assert_eq!(serde_json::to_value(&jane).unwrap(), "operator");
        let back: RolledBackBy = serde_json::from_value(serde_json::json!("operator")).unwrap();
        assert_eq!(back.as_str(), "operator");
        for kind in ["health", "gate_alarm", "alarm", "outside_change", "safety", "approval_timeout", "guardrail"] {
            let by: RolledBackBy = serde_json::from_value(serde_json::json!(kind)).unwrap();
            assert_eq!(by.as_str(), kind);
        }
        assert!(serde_json::from_value::<RolledBackBy>(serde_json::json!("gremlins")).is_err());
    }
}
