//! In-memory adapters for every port: what the use-case tests, the simulator and the
//! integration crate's own doubles run on. Each keeps its state behind a lock, counts
//! what it is asked, and can be told to fail the way AWS does; a shared [`Journal`]
//! records the calls that change something, in order, across adapters.

mod alarms;
mod claims;
mod journal;
mod metrics;
mod models;
mod notifier;
mod router;

#[cfg(test)]
mod tests;

pub use alarms::Alarms;
pub use claims::Claims;
pub use journal::Journal;
pub use metrics::Metrics;
pub use models::{Models, Sink};
pub use notifier::Outbox;
pub use router::{lambda_split, Router};
