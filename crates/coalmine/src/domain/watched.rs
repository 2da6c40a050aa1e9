//! What an alarm watches, in the words of the cloud that raised it. Its own file because
//! both the alarm's decoding (event) and each target kind (which metric names it) read it.

use std::collections::BTreeMap;

/// One metric an alarm watches: its namespace and dimensions (metric-math expressions
/// contribute none), and for an Azure alert the resource it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedMetric {
    pub namespace: Option<String>,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
    /// An Azure alert's target resource (`alertTargetIDs`); CloudWatch names it by
    /// dimensions instead.
    pub resource: Option<String>,
}
