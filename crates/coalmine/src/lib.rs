//! coalmine: canary delivery for AI models on AWS.
//!
//! Layers, lowest first; each may use only those above it in this list:
//! - [`domain`]: targets, splits, alarm events, metrics, errors. No I/O.
//! - [`ports`]: the small traits the use cases need from AWS.
//! - [`rollback`]: an alarm zeroes the canaries it guards (resolve, zero, notify).
//! - [`release`]: a release climbs its stages (spec, judge, tick); it rolls back with
//!   the rollback use case's own code.
//! - [`aws`]: the SDK adapters behind the ports; [`config`] and [`logging`] for the shells.
//!
//! The two Lambda functions and the CLI are thin shells on this crate.

#[cfg(feature = "aws")]
pub mod aws;
pub mod config;
pub mod domain;
pub mod logging;
pub mod ports;
pub mod release;
pub mod rollback;

#[cfg(test)]
pub(crate) mod fakes;

pub use config::Config;
pub use domain::error::{Error, Result};
pub use domain::event::{AlarmEvent, AlarmState};
pub use domain::split::Split;
pub use domain::target::Target;
