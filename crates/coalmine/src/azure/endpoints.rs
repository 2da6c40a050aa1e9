//! An Azure ML managed online endpoint's traffic between two deployments, read with
//! `GET …/onlineEndpoints/{name}` and written with a full `PUT` of the endpoint (Resource
//! Manager's PATCH of an online endpoint takes no traffic), conditional on what was read:
//! `If-Match` with the ETag when Resource Manager gives one; without one, the endpoint is
//! read again just before the write and the write refused if its traffic or stamp moved
//! (as the SageMaker adapter does, with the same small window between the two). The
//! release stamp is an endpoint tag, written in the same `PUT` as the traffic, so the two
//! never disagree. A split is only read off a settled endpoint: one mid-update is waited
//! for (bounded), since what Resource Manager shows then is where the update is going,
//! not where the traffic is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::warn;

use super::arm::{failure, is_terminal, provisioning_state, Arm};
use crate::domain::error::{Error, Result};
use crate::domain::split::{SidesProblem, Split, WEIGHT_TOLERANCE};
use crate::domain::stamp::{Stamp, STAMP_TAG};
use crate::domain::target::{AzureMlDeployments, Target};

/// The Azure Machine Learning REST API version these calls are written against.
pub const API_VERSION: &str = "2024-10-01";
const READ: &str = "azure:GET onlineEndpoints";
const WRITE: &str = "azure:PUT onlineEndpoints";
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(8);
/// Azure ML mirrors at most half an endpoint's traffic.
const MAX_MIRROR_PERCENT: u32 = 50;
/// Properties Resource Manager sets itself; a PUT leaves them out.
const READ_ONLY: [&str; 3] = ["provisioningState", "scoringUri", "swaggerUri"];

pub struct AzureEndpoints {
    arm: Arc<Arm>,
    /// How long a read waits for an endpoint mid-update, and a write for its operation.
    wait: Duration,
}

/// The endpoint as Resource Manager showed it, whole: a write sends it back changed.
struct Endpoint {
    resource: Value,
    etag: Option<String>,
}

impl AzureEndpoints {
    pub fn new(arm: Arc<Arm>, wait: Duration) -> Self {
        AzureEndpoints { arm, wait }
    }

    async fn url(&self, d: &AzureMlDeployments, below: &str) -> Result<String> {
        Ok(format!("{}{}{below}?api-version={API_VERSION}", self.arm.resource_manager().await?, d.endpoint_id()))
    }

    pub async fn read(&self, target: &Target, d: &AzureMlDeployments) -> Result<Split> {
        let endpoint = self.settled(target, d, Instant::now() + self.wait).await?;
        endpoint.split(target, d)
    }

    /// The endpoint once no update is running on it, waiting for one at most until
    /// `deadline`.
    async fn settled(&self, target: &Target, d: &AzureMlDeployments, deadline: Instant) -> Result<Endpoint> {
        let began = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let endpoint = self.get(target, d, deadline).await?;
            let state = provisioning_state(&endpoint.resource).to_owned();
            if is_terminal(&state) {
                return Ok(endpoint);
            }
            if Instant::now() + pause > deadline {
                return Err(Error::EndpointBusy {
                    target: target.clone(),
                    status: state,
                    waited_ms: began.elapsed().as_millis(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    async fn get(&self, target: &Target, d: &AzureMlDeployments, deadline: Instant) -> Result<Endpoint> {
        let url = self.url(d, "").await?;
        let reply = self.arm.send(Method::GET, &url, None, None, READ, deadline).await?;
        if !reply.status.is_success() {
            return Err(failure(&reply, READ, target));
        }
        let resource = reply.json();
        if !resource.is_object() {
            return Err(Error::Service {
                operation: READ,
                detail: format!("the endpoint came back as no JSON object ({})", reply.detail()),
                retryable: true,
            });
        }
        let etag = reply
            .header("etag")
            .map(str::to_owned)
            .or_else(|| resource.get("etag").and_then(Value::as_str).filter(|e| !e.is_empty()).map(str::to_owned));
        Ok(Endpoint { resource, etag })
    }

    /// Makes `desired` the endpoint's traffic, mirror and stamp, in one `PUT`, only if
    /// the endpoint is still as `read`; follows the operation to its end.
    pub async fn write(&self, target: &Target, d: &AzureMlDeployments, read: &Split, desired: &Split) -> Result<Split> {
        if desired.stable != read.stable || desired.canary != read.canary {
            return Err(Error::Unsupported {
                target: target.clone(),
                detail: format!("an Azure ML write moves traffic between {} and {:?} only", read.stable, read.canary),
            });
        }
        let canary_percent = whole_percent(target, desired.canary_weight, "traffic")?;
        let mirror_percent = whole_percent(target, desired.mirror, "mirror traffic")?;
        if mirror_percent > MAX_MIRROR_PERCENT {
            return Err(Error::Unsupported {
                target: target.clone(),
                detail: format!("Azure ML mirrors at most {MAX_MIRROR_PERCENT}% of traffic, not {mirror_percent}%"),
            });
        }
        let url = self.url(d, "").await?;
        let deadline = Instant::now() + self.wait;
        let began = Instant::now();
        // The roles as read: a target known only by its canary was resolved by that read.
        let d = &AzureMlDeployments { stable_deployment: Some(read.stable.clone()), ..d.clone() };
        let mut pause = FIRST_PAUSE;
        loop {
            let live = self.settled(target, d, deadline).await?;
            let now = live.split(target, d)?;
            match (&read.revision, &live.etag) {
                (Some(was), Some(is)) if was != is => {
                    return Err(Error::Conflict {
                        target: target.clone(),
                        detail: format!("the endpoint's ETag is {is} now, {was} when read"),
                    })
                }
                _ if !now.same_routing(read) || now.stamp != read.stamp => {
                    return Err(Error::Conflict {
                        target: target.clone(),
                        detail: format!("{} now, {} when read", percent_text(&now), percent_text(read)),
                    })
                }
                _ => {}
            }
            if canary_percent > (now.canary_weight * 100.0).round() as u32 {
                if let Some(other) = live.others_serving(d, &now.stable) {
                    return Err(Error::Unsupported {
                        target: target.clone(),
                        detail: format!(
                            "deployment {other} also serves traffic; coalmine moves traffic between two deployments only"
                        ),
                    });
                }
            }
            let body = live.desired(d, &now.stable, canary_percent, mirror_percent, desired.stamp.as_ref());
            let reply = self.arm.send(Method::PUT, &url, Some(&body), live.etag.as_deref(), WRITE, deadline).await?;
            match reply.status.as_u16() {
                200..=202 => {
                    self.arm.follow(&reply, &url, WRITE, target, deadline).await?;
                    let stamp = desired.stamp.clone().or_else(|| read.stamp.clone());
                    return Ok(Split { revision: None, stamp, ..desired.clone() });
                }
                412 => {
                    return Err(Error::Conflict {
                        target: target.clone(),
                        detail: format!("the endpoint changed since it was read ({})", reply.detail()),
                    })
                }
                // Another operation on the endpoint is running: wait for it, then check
                // again that the traffic is still as read before writing.
                409 if Instant::now() + pause <= deadline => {
                    warn!(target = %target, detail = %reply.detail(), "endpoint busy with another operation; waiting to write");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                409 => {
                    return Err(Error::EndpointBusy {
                        target: target.clone(),
                        status: format!("busy with another operation ({})", reply.detail()),
                        waited_ms: began.elapsed().as_millis(),
                    })
                }
                _ => return Err(failure(&reply, WRITE, target)),
            }
        }
    }

    /// Fails with [`Error::InvalidRelease`] unless the deployment exists on the endpoint.
    pub async fn check_deployment(&self, target: &Target, d: &AzureMlDeployments, deployment: &str) -> Result<()> {
        let url = self.url(d, &format!("/deployments/{deployment}")).await?;
        let deadline = Instant::now() + self.wait;
        let reply = self.arm.send(Method::GET, &url, None, None, "azure:GET onlineDeployments", deadline).await?;
        match reply.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::InvalidRelease(format!(
                "target: endpoint {} has no deployment {deployment:?} ({}); create it, or check the name",
                d.endpoint,
                reply.detail()
            ))),
            _ => Err(failure(&reply, "azure:GET onlineDeployments", target)),
        }
    }
}

fn percent_text(split: &Split) -> String {
    format!("canary at {}% (mirror {}%)", split.canary_weight * 100.0, split.mirror * 100.0)
}

/// Azure keeps traffic as whole percents: a share that is not one cannot be written.
fn whole_percent(target: &Target, share: f64, what: &str) -> Result<u32> {
    let percent = share * 100.0;
    if !(0.0..=100.0 + WEIGHT_TOLERANCE).contains(&percent) || (percent - percent.round()).abs() > 1e-6 {
        return Err(Error::Unsupported {
            target: target.clone(),
            detail: format!("Azure ML sets {what} in whole percents from 0 to 100; {percent}% is not one"),
        });
    }
    Ok(percent.round() as u32)
}

impl Endpoint {
    /// `properties.traffic` or `properties.mirrorTraffic`: deployment → percent.
    fn shares(&self, key: &str) -> BTreeMap<String, u32> {
        self.resource
            .pointer(&format!("/properties/{key}"))
            .and_then(Value::as_object)
            .map(|shares| {
                shares
                    .iter()
                    .map(|(name, v)| (name.clone(), v.as_f64().unwrap_or(0.0).round().max(0.0) as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn stamp(&self) -> Option<Stamp> {
        self.resource
            .pointer("/tags")
            .and_then(|tags| tags.get(STAMP_TAG))
            .and_then(Value::as_str)
            .and_then(Stamp::parse)
    }

    /// A deployment besides these two that serves live traffic, if any.
    fn others_serving(&self, d: &AzureMlDeployments, stable: &str) -> Option<String> {
        self.shares("traffic")
            .into_iter()
            .find(|(name, percent)| *percent > 0 && name != stable && *name != d.canary_deployment)
            .map(|(name, percent)| format!("{name} ({percent}%)"))
    }

    fn split(&self, target: &Target, d: &AzureMlDeployments) -> Result<Split> {
        let weights: Vec<(String, f64)> =
            self.shares("traffic").into_iter().map(|(name, percent)| (name, f64::from(percent))).collect();
        let canary = &d.canary_deployment;
        let stamp = self.stamp();
        // An endpoint's traffic may leave out a deployment with no share (whether a
        // named one exists is the preflight's question, asked of its deployments).
        let mut weights = weights;
        for named in [Some(canary), d.stable_deployment.as_ref()].into_iter().flatten() {
            if !weights.iter().any(|(name, _)| name == named) {
                weights.push((named.clone(), 0.0));
            }
        }
        let split =
            Split::of_sides(d.stable_deployment.as_deref(), canary, &weights, stamp.clone()).map_err(|problem| {
                let detail = match problem {
                    SidesProblem::Ambiguous(others) => format!(
                        "cannot tell the stable deployment among {others:?}; name it in the alert rule's \
                     coalmine:target custom property (azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:\
                     ENDPOINT:STABLE:CANARY)"
                    ),
                    SidesProblem::NoCanary | SidesProblem::NoStable(_) | SidesProblem::OnlyTheCanary => {
                        format!("endpoint has no deployment besides {canary:?} to give its traffic to")
                    }
                };
                Error::Unsupported { target: target.clone(), detail }
            })?;
        let mirror = f64::from(self.shares("mirrorTraffic").get(canary).copied().unwrap_or(0)) / 100.0;
        Ok(Split { mirror, revision: self.etag.clone(), stamp, ..split })
    }

    /// The endpoint as a `PUT` sends it: what was read, without what Resource Manager
    /// sets itself, with the stable and canary at their new percents (the stable takes
    /// what the canary gives up or gains; any other deployment keeps its share), the
    /// canary's mirror, and the stamp.
    fn desired(
        &self,
        d: &AzureMlDeployments,
        stable: &str,
        canary_percent: u32,
        mirror_percent: u32,
        stamp: Option<&Stamp>,
    ) -> Value {
        let mut body = self.resource.clone();
        if let Some(object) = body.as_object_mut() {
            for key in ["id", "name", "type", "systemData", "etag"] {
                object.remove(key);
            }
        }
        strip_identity(&mut body);
        let traffic = self.shares("traffic");
        let others: u32 =
            traffic.iter().filter(|(n, _)| *n != stable && **n != d.canary_deployment).map(|(_, p)| *p).sum();
        let properties = object_at(&mut body, "properties");
        for key in READ_ONLY {
            properties.remove(key);
        }
        let traffic = object_at_map(properties, "traffic");
        traffic.insert(stable.to_owned(), Value::from(100u32.saturating_sub(others + canary_percent)));
        traffic.insert(d.canary_deployment.clone(), Value::from(canary_percent));
        let mirrored = properties.get("mirrorTraffic").is_some_and(|m| m.get(&d.canary_deployment).is_some());
        if mirror_percent > 0 || mirrored {
            object_at_map(properties, "mirrorTraffic").insert(d.canary_deployment.clone(), Value::from(mirror_percent));
        }
        if let Some(stamp) = stamp {
            object_at(&mut body, "tags").insert(STAMP_TAG.to_owned(), Value::from(stamp.render()));
        }
        body
    }
}

/// A managed identity's ids are Resource Manager's to set: only its type and the
/// user-assigned identities' names go back.
fn strip_identity(body: &mut Value) {
    let Some(identity) = body.get_mut("identity").and_then(Value::as_object_mut) else {
        return;
    };
    identity.remove("principalId");
    identity.remove("tenantId");
    if let Some(assigned) = identity.get_mut("userAssignedIdentities").and_then(Value::as_object_mut) {
        for value in assigned.values_mut() {
            *value = Value::Object(Map::new());
        }
    }
}

fn object_at<'a>(body: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !body.is_object() {
        *body = Value::Object(Map::new());
    }
    let object = body.as_object_mut().expect("made an object above");
    object_at_map(object, key)
}

fn object_at_map<'a>(object: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = object.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("made an object above")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stamp::Phase;

    fn deployments(stable: Option<&str>) -> AzureMlDeployments {
        AzureMlDeployments {
            subscription: "00000000-1111-2222-3333-444444444444".into(),
            resource_group: "test-rg".into(),
            workspace: "my-aml-workspace".into(),
            endpoint: "chat".into(),
            stable_deployment: stable.map(str::to_owned),
            canary_deployment: "green".into(),
        }
    }

    fn endpoint(resource: Value) -> Endpoint {
        Endpoint { resource, etag: Some("\"0x1\"".into()) }
    }

    fn stamp() -> Stamp {
        Stamp {
            execution: "machine:release-1".into(),
            stable: "blue".into(),
            canary: Some("green".into()),
            phase: Phase::Live,
            stage: Some((1, 3)),
            release: Some("chat-2".into()),
            hold: None,
            request: None,
        }
    }

    #[test]
    fn the_split_is_the_canarys_share_of_the_traffic_and_its_mirror() {
        let d = deployments(Some("blue"));
        let target = Target::Azureml(Box::new(d.clone()));
        let found = endpoint(serde_json::json!({
            "properties": {"traffic": {"blue": 90, "green": 10}, "mirrorTraffic": {"green": 0}},
            "tags": {"coalmine:release": stamp().render(), "team": "ml"}
        }))
        .split(&target, &d)
        .unwrap();
        assert_eq!((found.stable.as_str(), found.canary_weight, found.mirror), ("blue", 0.1, 0.0));
        assert_eq!(found.revision.as_deref(), Some("\"0x1\""));
        assert_eq!(found.stamp, Some(stamp()));
        let shadowing =
            endpoint(serde_json::json!({"properties": {"traffic": {"blue": 100}, "mirrorTraffic": {"green": 20}}}))
                .split(&target, &d)
                .unwrap();
        assert_eq!((shadowing.canary_weight, shadowing.mirror), (0.0, 0.2));
        assert!(!shadowing.canary_is_zero(), "a mirrored canary still gets requests");
    }

    #[test]
    fn an_alert_that_names_only_the_canary_finds_the_one_other_deployment_serving() {
        let d = deployments(None);
        let target = Target::Azureml(Box::new(d.clone()));
        let two = endpoint(serde_json::json!({"properties": {"traffic": {"blue": 75, "green": 25, "old": 0}}}));
        assert_eq!(two.split(&target, &d).unwrap().stable, "blue");
        let three = endpoint(serde_json::json!({"properties": {"traffic": {"blue": 50, "green": 25, "red": 25}}}));
        let err = three.split(&target, &d).unwrap_err().to_string();
        assert!(err.contains("cannot tell the stable deployment among [\"blue\", \"red\"]"), "{err}");
    }

    #[test]
    fn a_put_sends_the_endpoint_back_without_what_resource_manager_sets_and_with_the_new_traffic() {
        let d = deployments(Some("blue"));
        let read = endpoint(serde_json::json!({
            "id": "/subscriptions/s/.../onlineEndpoints/chat", "name": "chat", "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "location": "westus2", "kind": "Managed",
            "identity": {"type": "SystemAssigned,UserAssigned", "principalId": "p", "tenantId": "t",
                         "userAssignedIdentities": {"/id/one": {"principalId": "p1", "clientId": "c1"}}},
            "properties": {"authMode": "Key", "description": "chat", "provisioningState": "Succeeded",
                           "scoringUri": "https://x", "swaggerUri": "https://y", "traffic": {"blue": 100, "green": 0}},
            "systemData": {"createdBy": "someone"},
            "tags": {"team": "ml"}
        }));
        let body = read.desired(&d, "blue", 25, 0, Some(&stamp()));
        assert_eq!(body["properties"]["traffic"], serde_json::json!({"blue": 75, "green": 25}));
        assert_eq!(body["tags"]["team"], "ml", "the team's own tags stay");
        assert_eq!(body["tags"]["coalmine:release"], stamp().render());
        for gone in [
            "/id",
            "/name",
            "/type",
            "/systemData",
            "/properties/provisioningState",
            "/properties/scoringUri",
            "/identity/principalId",
            "/identity/userAssignedIdentities/~1id~1one/clientId",
        ] {
            assert!(body.pointer(gone).is_none(), "{gone} should not be sent");
        }
        assert_eq!(body["properties"]["authMode"], "Key");
        assert_eq!(body["location"], "westus2");
        assert!(body["properties"].get("mirrorTraffic").is_none(), "no mirror is added where none was");

        let shadow = read.desired(&d, "blue", 0, 10, None);
        assert_eq!(shadow["properties"]["mirrorTraffic"], serde_json::json!({"green": 10}));
        assert_eq!(shadow["tags"].get("coalmine:release"), None);
    }

    #[test]
    fn another_deployments_share_is_kept_and_the_stable_takes_the_rest() {
        let d = deployments(Some("blue"));
        let read = endpoint(serde_json::json!({"properties": {"traffic": {"blue": 80, "green": 10, "red": 10}}}));
        let body = read.desired(&d, "blue", 0, 0, None);
        assert_eq!(body["properties"]["traffic"], serde_json::json!({"blue": 90, "green": 0, "red": 10}));
        assert_eq!(read.others_serving(&d, "blue").as_deref(), Some("red (10%)"));
    }

    #[test]
    fn only_whole_percents_can_be_written() {
        let target = Target::Azureml(Box::new(deployments(Some("blue"))));
        assert_eq!(whole_percent(&target, 0.05, "traffic").unwrap(), 5);
        assert_eq!(whole_percent(&target, 0.1 * 0.7, "traffic").unwrap(), 7, "a float a hair off a percent");
        let err = whole_percent(&target, 0.025, "traffic").unwrap_err().to_string();
        assert!(err.contains("whole percents from 0 to 100; 2.5% is not one"), "{err}");
    }
}
