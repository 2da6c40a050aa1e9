//! coalmine: canary delivery for AI models on AWS.
//!
//! The domain (targets, alarm events, the rollback use case) depends only on the small
//! traits in [`ports`]; [`aws`] implements them with the AWS SDK. The Lambda functions
//! are thin shells around this crate.

pub mod aws;
pub mod config;
pub mod error;
pub mod event;
pub mod health;
pub mod logging;
pub mod notify;
pub mod ports;
pub mod release;
pub mod resolve;
pub mod rollback;
pub mod step;
pub mod target;

#[cfg(test)]
pub(crate) mod fakes;

pub use config::Config;
pub use error::{Error, Result};
pub use event::{AlarmEvent, AlarmState};
pub use target::Target;
