//! A SageMaker endpoint deploying a new endpoint config with its own deployment
//! guardrails (blue/green, canary or linear traffic shifting, auto-rollback alarms), as
//! coalmine starts and watches it.

use serde::{Deserialize, Serialize};

use crate::domain::stamp::Stamp;

/// Where coalmine's tripwires watch: a namespace nothing else writes to. An alarm event
/// from it is coalmine stopping a guardrail deployment, not a canary to zero.
pub const TRIPWIRE_NAMESPACE: &str = "coalmine/Tripwire";

/// The endpoint tag naming the tripwire a guardrail release listed among the endpoint's
/// auto-rollback alarms.
pub const TRIPWIRE_TAG: &str = "coalmine:tripwire";

/// An endpoint as `DescribeEndpoint` shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointState {
    /// `InService`, `Updating`, `SystemUpdating`, `RollingBack`, `UpdateRollbackFailed`,
    /// `Failed`, ...
    pub status: String,
    /// The endpoint config in service.
    pub config: String,
    /// The deployment in flight, if any.
    pub pending: Option<PendingDeployment>,
    /// Why the last update failed; SageMaker often leaves it empty after a rollback.
    pub failure_reason: Option<String>,
    /// Each production variant's name and current instance count.
    pub variants: Vec<(String, u32)>,
    /// The release stamp, from the endpoint's tags.
    pub stamp: Option<Stamp>,
    /// The tripwire a guardrail release put among this endpoint's auto-rollback alarms
    /// (its `coalmine:tripwire` tag): what the rollback function trips on an alarm.
    pub tripwire: Option<String>,
}

impl EndpointState {
    pub fn is_in_service(&self) -> bool {
        self.status == "InService"
    }

    /// A guardrail deployment is in flight that tripping `tripwire` stops: the endpoint
    /// is deploying, and a coalmine release still owns it.
    pub fn stoppable_by(&self) -> Option<&str> {
        let live = self.stamp.as_ref().is_some_and(Stamp::is_live);
        self.tripwire.as_deref().filter(|_| live && self.pending.is_some())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PendingDeployment {
    pub config: String,
    /// Each variant of the new fleet and its statuses (`Creating`, `Updating`,
    /// `ActivatingTraffic`, `Baking`, ...).
    pub variants: Vec<(String, Vec<String>)>,
}

impl PendingDeployment {
    /// "AllTraffic: Baking" — where the deployment is, in a few words.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .variants
            .iter()
            .map(|(name, statuses)| format!("{name}: {}", statuses.last().map(String::as_str).unwrap_or("starting")))
            .collect();
        if parts.is_empty() {
            "starting".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// An endpoint config's variant names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigVariants {
    pub production: Vec<String>,
    pub shadow: Vec<String>,
}

/// How much of the fleet moves at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Size {
    CapacityPercent(u32),
    InstanceCount(u32),
}

/// SageMaker's blue/green traffic shifting, as a release asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Traffic {
    /// A first step of `size`, then the rest after `wait_seconds`.
    Canary { size: Size, wait_seconds: u32 },
    /// Steps of `step`, `wait_seconds` apart.
    Linear { step: Size, wait_seconds: u32 },
}

/// What `UpdateEndpoint`'s `DeploymentConfig` says.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentPlan {
    pub traffic: Traffic,
    pub termination_wait_seconds: u32,
    pub max_execution_seconds: u32,
    /// Auto-rollback alarms: the release's gate alarms and coalmine's own tripwire.
    pub alarms: Vec<String>,
}
