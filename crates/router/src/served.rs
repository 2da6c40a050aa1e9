//! Which version served a unit, kept for the life of a release (issue 30, decision 0021):
//! feedback arrives after the answer (a thumbs-down minutes later, a downstream error an
//! hour later), often through another function, and must be counted against the version
//! that *answered* that unit, not the one the unit would get now.
//!
//! The router records, per unit, each version that began serving it and when: one
//! `UpdateItem` the first time an instance sees a unit at a version (a conversation's
//! later turns write nothing), in a DynamoDB table the coalmine stack makes
//! (`ServedTableName`), expiring after [`KEEP`]. A late signal looks the unit up with
//! the time of the answer ([`ServedLog::version_at`]) and publishes its metric with that
//! version (`coalmine_emf::Metrics::for_served`). A record that fails to be written
//! never fails the request: the answer is what the user is waiting for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::aws::{error_text, Routed};

/// How long a unit's record is kept after its last change: longer than any release, and
/// than the feedback a team waits for.
pub const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long after an answer its record may be written.
const RECORD_SLACK: Duration = Duration::from_secs(60);
/// The most units one instance remembers having recorded before it starts over (a
/// repeated record is harmless: it is the same version again, not appended twice).
const REMEMBERED: usize = 100_000;

/// A unit's record: each version that began serving it, and how it was assigned then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub version: String,
    /// Seconds since the epoch at which this version first served the unit.
    pub since: u64,
    pub release: Option<String>,
    pub assignment: String,
    pub replicate: Option<u32>,
}

pub struct ServedLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
    recorded: Mutex<HashMap<(String, String), String>>,
}

impl ServedLog {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        ServedLog { client, table: table.into(), recorded: Mutex::new(HashMap::new()) }
    }

    /// Records that `version` served `unit` of `profile` (`FUNCTION.ALIAS`) as `routed`
    /// says, unless this instance already recorded that version for the unit.
    pub async fn record(&self, profile: &str, unit: &str, routed: &Routed, version: &str) -> Result<(), String> {
        if unit.is_empty() || version.is_empty() {
            return Ok(());
        }
        let key = (profile.to_owned(), unit.to_owned());
        if self.remembered().get(&key).is_some_and(|v| v == version) {
            return Ok(());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut entry = HashMap::from([
            ("version".to_owned(), AttributeValue::S(version.to_owned())),
            ("since".to_owned(), AttributeValue::N(now.to_string())),
            ("assignment".to_owned(), AttributeValue::S(routed.assignment.to_owned())),
        ]);
        if let Some(release) = &routed.release {
            entry.insert("release".to_owned(), AttributeValue::S(release.clone()));
        }
        if let Some(replicate) = routed.replicate {
            entry.insert("replicate".to_owned(), AttributeValue::N(replicate.to_string()));
        }
        // Appended only when the unit's last version differs: two instances that both
        // see the unit first write one entry, and a rollback's return to the stable
        // appends it again, with its own time.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("profile", AttributeValue::S(profile.to_owned()))
            .key("unit", AttributeValue::S(unit.to_owned()))
            .update_expression(
                "SET versions = list_append(if_not_exists(versions, :none), :entry), latest = :version, expires = :expires",
            )
            .condition_expression("attribute_not_exists(latest) OR latest <> :version")
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":entry", AttributeValue::L(vec![AttributeValue::M(entry)]))
            .expression_attribute_values(":version", AttributeValue::S(version.to_owned()))
            .expression_attribute_values(":expires", AttributeValue::N((now + KEEP.as_secs()).to_string()))
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(format!("dynamodb:UpdateItem on {}: {}", self.table, error_text(&e))),
        }
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key, version.to_owned());
        Ok(())
    }

    /// The version that served `unit` of `profile` at `at` (seconds since the epoch: when
    /// the answer the feedback is about was given), or `None` if no router recorded one
    /// by then.
    pub async fn version_at(&self, profile: &str, unit: &str, at: u64) -> Result<Option<Served>, String> {
        let history = self.history(profile, unit).await?;
        // A record is written just after the answer it follows: an answer's own time may
        // fall a moment before its version's first record.
        let first = history.first().filter(|first| at + RECORD_SLACK.as_secs() >= first.since).cloned();
        Ok(history.into_iter().rev().find(|served| served.since <= at).or(first))
    }

    /// Every version that served the unit, oldest first.
    pub async fn history(&self, profile: &str, unit: &str) -> Result<Vec<Served>, String> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("profile", AttributeValue::S(profile.to_owned()))
            .key("unit", AttributeValue::S(unit.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| format!("dynamodb:GetItem on {}: {}", self.table, error_text(&e)))?;
        let Some(AttributeValue::L(versions)) = out.item.as_ref().and_then(|item| item.get("versions")) else {
            return Ok(Vec::new());
        };
        Ok(versions.iter().filter_map(|entry| served(entry.as_m().ok()?)).collect())
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn served(entry: &HashMap<String, AttributeValue>) -> Option<Served> {
    let s = |name: &str| entry.get(name).and_then(|v| v.as_s().ok()).cloned();
    let n = |name: &str| entry.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok());
    Some(Served {
        version: s("version")?,
        since: n("since")?,
        release: s("release"),
        assignment: s("assignment").unwrap_or_else(|| "stable".to_owned()),
        replicate: n("replicate").and_then(|r| u32::try_from(r).ok()),
    })
}
