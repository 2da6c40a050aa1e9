//! Azure ML managed online endpoints behind the same ports as AWS targets: traffic over
//! Azure Resource Manager, health from Azure Monitor, both through one HTTPS client
//! signed in as an Azure identity. The only place that speaks to Azure.

pub mod arm;
pub mod credentials;
mod endpoints;
mod monitor;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use credentials::{Cloud, DeveloperIdentity, Identity, IdentitySource, ReadSecret, SecretIdentity};
pub use endpoints::AzureEndpoints;
pub use monitor::AzureMonitor;

use crate::domain::error::{Error, Result};

/// Both Azure adapters, sharing one Resource Manager client (and so one identity and
/// one token cache).
pub struct Azure {
    pub endpoints: AzureEndpoints,
    pub monitor: AzureMonitor,
}

impl Azure {
    /// `wait`: how long one call may wait for an endpoint mid-update, an operation, or
    /// throttling to pass, before the invocation fails (retryable).
    pub fn new(identity: Box<dyn IdentitySource>, wait: Duration) -> Azure {
        let arm = Arc::new(arm::Arm::new(identity));
        Azure { endpoints: AzureEndpoints::new(arm.clone(), wait), monitor: AzureMonitor::new(arm, wait) }
    }
}

/// No Azure identity was configured: every Azure call says how to give one.
pub struct NoIdentity {
    pub advice: &'static str,
}

impl IdentitySource for NoIdentity {
    fn load<'a>(&'a self, _: &'a reqwest::Client) -> BoxFuture<'a, Result<Identity>> {
        Box::pin(async move { Err(Error::Config(format!("no Azure credentials: {}", self.advice))) })
    }
}
