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
//!   Azure ML (Resource Manager and Azure Monitor), and in memory; [`clouds`] composes
//!   AWS's and Azure's, sending each target to its cloud; [`config`] and [`logging`] for
//!   the shells.
//!
//! The two Lambda functions and the CLI are thin shells on this crate.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "aws")]
pub mod clouds;
pub mod config;
pub mod domain;
pub mod logging;
pub mod memory;
pub mod ports;
pub mod release;
pub mod rollback;
pub mod text;

/// A file of the workspace (samples, fixtures), for unit tests. Read at run time from
/// what `cargo test` sets, not baked in: cargo does not rebuild a crate when its clone
/// moves, so a target directory shared by two clones would carry the other's path.
#[cfg(test)]
pub(crate) fn workspace_file(relative: &str) -> std::path::PathBuf {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR when it runs tests");
    std::path::Path::new(&crate_dir).join("../..").join(relative)
}

pub use config::Config;
pub use domain::error::{Error, Result};
pub use domain::event::{AlarmEvent, AlarmState};
pub use domain::split::Split;
pub use domain::target::Target;
