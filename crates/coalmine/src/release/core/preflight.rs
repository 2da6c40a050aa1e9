//! The checks a release passes before its first write, without moving anything: by the
//! first tick (which refuses on the first that blocks) and by `coalmine validate --live`
//! (which reports every one). Each kind lists its own; these are the pieces they share.

use crate::domain::error::{Error, Result};
use crate::domain::event::AlarmState;
use crate::domain::target::Target;
use crate::release::judge::gates::{Gates, InsufficientDataAlarm};

/// One check: what was checked, and what was found (or why it fails).
#[derive(Debug)]
pub struct Check {
    pub what: &'static str,
    pub found: Result<String>,
    /// A failure to know about, not to refuse for (thin traffic: the release would
    /// hold for want of evidence, and say so).
    pub advisory: bool,
}

impl Check {
    pub fn new(what: &'static str, found: Result<String>) -> Self {
        Check { what, found, advisory: false }
    }

    /// Failed, and the start must not go ahead.
    pub fn blocks(&self) -> bool {
        self.found.is_err() && !self.advisory
    }
}

/// The first check that blocks the start, if any.
pub fn first_blocking(checks: Vec<Check>) -> Option<Error> {
    checks.into_iter().find_map(|c| c.blocks().then_some(c.found.err()).flatten())
}

/// Whether the gate alarms exist, and whether any is firing (INSUFFICIENT_DATA counts
/// when the release treats it as unhealthy).
pub fn alarm_checks(gates: &Gates, states: &[(String, AlarmState)]) -> (Result<String>, Result<String>) {
    let exist = match gates.alarms.iter().find(|a| !states.iter().any(|(n, _)| n == *a)) {
        Some(missing) => Err(Error::InvalidRelease(format!("gates.alarms: alarm {missing:?} does not exist"))),
        None => Ok(gates.alarms.join(", ")),
    };
    let strict = gates.alarm_insufficient_data == InsufficientDataAlarm::Unhealthy;
    let firing = states
        .iter()
        .find(|(_, state)| *state == AlarmState::Alarm || (strict && *state == AlarmState::InsufficientData));
    let calm = match firing {
        Some((name, state)) => Err(Error::Refused(format!(
            "gate alarm {name} is {}: coalmine does not start a release into a firing alarm. Start it again once \
             the alarm is OK",
            state.as_str()
        ))),
        None => Ok(states.iter().map(|(n, s)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", ")),
    };
    (exist, calm)
}

/// A first tick that cannot even see its target moved nothing: the release is invalid
/// (a typo in a name), and saying so beats a generic failure.
pub fn not_ready(target: &Target, error: Error) -> Error {
    match error {
        Error::NotFound { detail, .. } => {
            Error::InvalidRelease(format!("target: {target} was not found ({detail}); check the names in the release"))
        }
        Error::AccessDenied { operation, detail } => Error::InvalidRelease(format!(
            "target: coalmine may not use {target} ({operation}: {detail}); check the names in the release, and \
             that the stack's LambdaTargetFunctionArns or SageMakerEndpointArns parameter covers it"
        )),
        other => other,
    }
}
