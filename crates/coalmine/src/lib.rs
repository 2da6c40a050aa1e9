//! coalmine: canary delivery for AI models on AWS.
//!
//! Layers, lowest first; each may use only those above it in this list:
//! - [`domain`]: targets, splits, stamps, causes, alarm events, metrics, errors. No I/O.
//! - [`text`]: what a person reads (who serves what, percents, durations, subjects).
//! - [`ports`]: one small trait per role the use cases need from AWS.
//! - [`rollback`]: an alarm zeroes the canaries it guards (resolve, zero, notify).
//! - [`release`]: a release climbs its stages: a small core, the judge, the shadow
//!   phase, and one module per kind; it rolls back with the rollback use case's code.
//! - [`aws`], [`azure`] and [`memory`]: the adapters behind the ports, for AWS, for
//!   Azure ML (Resource Manager and Azure Monitor), and in memory;
//!   [`config`] and [`logging`] for the shells.
//!
//! The two Lambda functions and the CLI are thin shells on this crate.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
pub mod config;
pub mod domain;
pub mod logging;
pub mod memory;
pub mod mirror;
pub mod ports;
pub mod release;
pub mod rollback;
pub mod text;

pub use config::Config;
pub use domain::error::{Error, Result};
pub use domain::event::{AlarmEvent, AlarmState};
pub use domain::split::Split;
pub use domain::target::Target;
