//! What coalmine reasons about, free of I/O: targets and their traffic splits, alarm
//! events, metric snapshots, and the one error type.

pub mod cause;
pub mod deployment;
pub mod error;
pub mod event;
pub mod mapping;
pub mod metrics;
pub mod problems;
pub mod replay;
pub mod shadow;
pub mod split;
pub mod stamp;
pub mod target;
pub mod watched;
