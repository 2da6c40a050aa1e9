use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_sagemaker::types::{
    Alarm, AutoRollbackConfig, BlueGreenUpdatePolicy, CapacitySize, CapacitySizeType, DeploymentConfig,
    DesiredWeightAndCapacity, EndpointStatus, Tag, TrafficRoutingConfig, TrafficRoutingConfigType,
};
use aws_sdk_sagemaker::Client;
use tokio::time::Instant;
use tracing::warn;

use super::error::{aws_error, call_detail, service_code};
use crate::domain::deployment::{
    ConfigVariants, DeploymentPlan, EndpointState, PendingDeployment, Size, Traffic, TRIPWIRE_TAG,
};
use crate::domain::error::{Error, Result};
use crate::domain::split::{SidesProblem, Split, WEIGHT_TOLERANCE};
use crate::domain::stamp::{Phase, Stamp, ROLLBACK_TAG, STAMP_TAG};
use crate::domain::target::{SageMakerVariants, Target};

/// How long to wait, and how, for an endpoint that is `Updating` before writing.
#[derive(Clone, Copy, Debug)]
pub struct UpdatingBackoff {
    pub first: Duration,
    pub max: Duration,
    pub budget: Duration,
}

impl UpdatingBackoff {
    pub fn within(budget: Duration) -> Self {
        UpdatingBackoff { first: Duration::from_millis(500), max: Duration::from_secs(8), budget }
    }
}

/// An endpoint with a stable and a canary production variant. SageMaker has no
/// conditional write, so the weights are read again just before each write and the
/// write is refused if they moved since the caller's read. The release stamp is an
/// endpoint tag: written before the canary's traffic is raised (so a release owns what
/// it is about to move), after it is lowered (so a rollback waits for nothing).
pub struct SageMakerEndpoints {
    client: Client,
    backoff: UpdatingBackoff,
    /// Endpoint ARNs by name, as DescribeEndpoint gave them: the tag calls need the ARN,
    /// which never changes for a name, so later reads fetch the tags alongside.
    arns: Mutex<HashMap<String, String>>,
}

struct Live {
    status: Option<EndpointStatus>,
    split: Split,
}

impl SageMakerEndpoints {
    pub fn new(client: Client, backoff: UpdatingBackoff) -> Self {
        SageMakerEndpoints { client, backoff, arns: Mutex::default() }
    }

    pub async fn read(&self, target: &Target, variants: &SageMakerVariants) -> Result<Split> {
        let known_arn = self.arns.lock().ok().and_then(|arns| arns.get(&variants.endpoint).cloned());
        let (out, stamp) = match known_arn {
            Some(arn) => {
                let (out, stamp) = tokio::join!(self.describe_endpoint(target, &variants.endpoint), self.stamp(&arn));
                (out?, stamp?)
            }
            None => {
                let out = self.describe_endpoint(target, &variants.endpoint).await?;
                let stamp = match &out.endpoint_arn {
                    Some(arn) => self.stamp(arn).await?,
                    None => None,
                };
                (out, stamp)
            }
        };
        // The stamp helps tell which variant an alarm's dimensions mean by "the other".
        let live = live_of(target, variants, out, stamp.clone())?;
        Ok(Split { stamp, ..live.split })
    }

    async fn stamp(&self, arn: &str) -> Result<Option<Stamp>> {
        Ok(self.tags(arn).await?.0)
    }

    /// The release stamp and the tripwire's name, from the endpoint's tags.
    async fn tags(&self, arn: &str) -> Result<(Option<Stamp>, Option<String>)> {
        let out = self
            .client
            .list_tags()
            .resource_arn(arn)
            .max_results(100)
            .send()
            .await
            .map_err(|e| aws_error("sagemaker:ListTags", e))?;
        // The last one: AWS keeps one value per key; moto appends instead of replacing.
        let tag = |key: &str| out.tags().iter().rev().find(|t| t.key() == Some(key)).and_then(|t| t.value());
        let stamp = Stamp::with_rollback_record(
            tag(STAMP_TAG).and_then(Stamp::parse),
            tag(ROLLBACK_TAG).and_then(Stamp::parse),
        );
        Ok((stamp, tag(TRIPWIRE_TAG).map(str::to_owned)))
    }

    /// A rolled-back stamp goes into the rollback's own key as well, in the same call:
    /// no stamp a stepper writes can then hide it.
    async fn record(&self, target: &Target, endpoint: &str, stamp: &Stamp) -> Result<()> {
        let text = stamp.render();
        let mut tags = vec![(STAMP_TAG, text.as_str())];
        if matches!(stamp.phase, Phase::RolledBack(_)) {
            tags.insert(0, (ROLLBACK_TAG, text.as_str()));
        }
        self.put_tags(target, endpoint, &tags).await
    }

    async fn tag(&self, target: &Target, endpoint: &str, key: &str, value: &str) -> Result<()> {
        self.put_tags(target, endpoint, &[(key, value)]).await
    }

    async fn put_tags(&self, target: &Target, endpoint: &str, tags: &[(&str, &str)]) -> Result<()> {
        let known_arn = self.arns.lock().ok().and_then(|arns| arns.get(endpoint).cloned());
        let arn = match known_arn {
            Some(arn) => arn,
            None => self.describe_arn(target, endpoint).await?,
        };
        let tags = tags.iter().map(|(key, value)| Tag::builder().key(*key).value(*value).build()).collect();
        self.client
            .add_tags()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| aws_error("sagemaker:AddTags", e))?;
        Ok(())
    }

    async fn describe_arn(&self, target: &Target, endpoint: &str) -> Result<String> {
        self.describe_endpoint(target, endpoint).await?.endpoint_arn.ok_or_else(|| Error::Unsupported {
            target: target.clone(),
            detail: "DescribeEndpoint returned no EndpointArn".into(),
        })
    }

    /// `DescribeEndpoint`, remembering the endpoint's ARN for the tag calls; a missing
    /// endpoint is `NotFound` (SageMaker reports it as a ValidationException).
    async fn describe_endpoint(&self, target: &Target, endpoint: &str) -> Result<DescribeEndpointOutput> {
        let out =
            self.client.describe_endpoint().endpoint_name(endpoint).send().await.map_err(|e| {
                match service_code(&e) {
                    Some(("ValidationException", message)) if message.contains("Could not find endpoint") => {
                        Error::NotFound {
                            target: target.clone(),
                            detail: call_detail("sagemaker:DescribeEndpoint", &e),
                        }
                    }
                    _ => aws_error("sagemaker:DescribeEndpoint", e),
                }
            })?;
        if let Some(arn) = &out.endpoint_arn {
            self.remember_arn(endpoint, arn);
        }
        Ok(out)
    }

    fn remember_arn(&self, endpoint: &str, arn: &str) {
        if let Ok(mut arns) = self.arns.lock() {
            arns.insert(endpoint.to_owned(), arn.to_owned());
        }
    }

    pub async fn write(
        &self,
        target: &Target,
        variants: &SageMakerVariants,
        read: &Split,
        desired: &Split,
    ) -> Result<Split> {
        if !(0.0..=1.0).contains(&desired.canary_weight)
            || desired.stable != read.stable
            || desired.canary != read.canary
        {
            return Err(Error::Unsupported {
                target: target.clone(),
                detail: format!("a SageMaker write moves weights between {} and {:?} only", read.stable, read.canary),
            });
        }
        let moves_traffic = !read.same_routing(desired);
        let new_stamp = desired.stamp.as_ref().filter(|stamp| read.stamp.as_ref() != Some(*stamp));
        let raises = desired.canary_weight > read.canary_weight + WEIGHT_TOLERANCE;
        if let Some(stamp) = new_stamp.filter(|_| raises || !moves_traffic) {
            self.record(target, &variants.endpoint, stamp).await?;
        }
        if moves_traffic {
            self.move_weights(target, variants, read, desired).await?;
        }
        let mut written = Split { stamp: desired.stamp.clone().or_else(|| read.stamp.clone()), ..desired.clone() };
        if let Some(stamp) = new_stamp.filter(|_| !raises && moves_traffic) {
            if let Err(e) = self.record(target, &variants.endpoint, stamp).await {
                // The traffic is down, which is what mattered; the record says less.
                warn!(target = %target, error = %e, "weights lowered, but the release stamp was not updated");
                written.stamp = read.stamp.clone();
            }
        }
        Ok(written)
    }

    async fn move_weights(
        &self,
        target: &Target,
        variants: &SageMakerVariants,
        read: &Split,
        desired: &Split,
    ) -> Result<()> {
        let started = Instant::now();
        let mut pause = self.backoff.first;
        // The roles as read: a target known only by its canary was resolved by that read.
        let variants = SageMakerVariants { stable_variant: Some(read.stable.clone()), ..variants.clone() };
        loop {
            let live = self.describe(target, &variants).await?;
            let busy_status = live.status.as_ref().filter(|s| is_busy(s)).map(|s| s.as_str().to_owned());
            if busy_status.is_none() {
                if let Some(status) = live.status.as_ref().filter(|s| !matches!(s, EndpointStatus::InService)) {
                    return Err(Error::Unsupported {
                        target: target.clone(),
                        detail: format!(
                            "endpoint is {}; weights can only change while it is InService",
                            status.as_str()
                        ),
                    });
                }
                if !live.split.same_routing(read) {
                    return Err(Error::Conflict {
                        target: target.clone(),
                        detail: format!(
                            "canary weight is {} now, {} when read",
                            live.split.canary_weight, read.canary_weight
                        ),
                    });
                }
                match self.update_weights(target, &variants.endpoint, &live.split, desired.canary_weight).await {
                    Ok(()) => return Ok(()),
                    Err(Busy(status)) if started.elapsed() + pause <= self.backoff.budget => {
                        warn!(target = %target, status, "endpoint became busy; waiting to write")
                    }
                    Err(Busy(status)) => return Err(self.busy(target, status, started)),
                    Err(Failed(e)) => return Err(e),
                }
            } else if started.elapsed() + pause > self.backoff.budget {
                return Err(self.busy(target, busy_status.unwrap_or_default(), started));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.backoff.max);
        }
    }

    fn busy(&self, target: &Target, status: String, started: Instant) -> Error {
        Error::EndpointBusy { target: target.clone(), status, waited_ms: started.elapsed().as_millis() }
    }

    async fn describe(&self, target: &Target, variants: &SageMakerVariants) -> Result<Live> {
        let out = self.describe_endpoint(target, &variants.endpoint).await?;
        live_of(target, variants, out, None)
    }

    async fn update_weights(
        &self,
        target: &Target,
        endpoint: &str,
        live: &Split,
        canary_weight: f64,
    ) -> Result<(), WriteFailure> {
        let canary = live.canary.as_deref().unwrap_or_default();
        let weight = |variant: &str, w: f64| {
            DesiredWeightAndCapacity::builder().variant_name(variant).desired_weight(w as f32).build()
        };
        let request = self
            .client
            .update_endpoint_weights_and_capacities()
            .endpoint_name(endpoint)
            .desired_weights_and_capacities(weight(&live.stable, 1.0 - canary_weight))
            .desired_weights_and_capacities(weight(canary, canary_weight));
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match service_code(&e) {
                Some(("ValidationException", message)) if is_busy_message(message) => Err(Busy(message.to_owned())),
                Some(("ValidationException", message)) if message.contains("not present") => {
                    let detail = call_detail("sagemaker:UpdateEndpointWeightsAndCapacities", &e);
                    Err(Failed(Error::NotFound { target: target.clone(), detail }))
                }
                _ => Err(Failed(aws_error("sagemaker:UpdateEndpointWeightsAndCapacities", e))),
            },
        }
    }
}

enum WriteFailure {
    Busy(String),
    Failed(Error),
}
use WriteFailure::{Busy, Failed};

fn is_busy(status: &EndpointStatus) -> bool {
    matches!(
        status,
        EndpointStatus::Updating
            | EndpointStatus::SystemUpdating
            | EndpointStatus::Creating
            | EndpointStatus::RollingBack
    )
}

/// SageMaker refuses a change to an endpoint mid-update with a ValidationException such
/// as "Cannot update in-progress endpoint ...".
fn is_busy_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("in-progress") || lower.contains("in progress") || lower.contains("updating")
}

/// The endpoint's traffic as `variants` name it; `stamp` only helps find the stable
/// of a target known by its canary alone.
fn live_of(
    target: &Target,
    variants: &SageMakerVariants,
    out: DescribeEndpointOutput,
    stamp: Option<Stamp>,
) -> Result<Live> {
    let weights: Vec<(String, f64)> = out
        .production_variants
        .unwrap_or_default()
        .iter()
        // A variant that reports no weight serves none (moto shows a 0.0 weight so).
        .filter_map(|v| {
            let weight = v.desired_weight.or(v.current_weight).unwrap_or(0.0);
            Some((v.variant_name()?.to_owned(), f64::from(weight)))
        })
        .collect();
    let named = variants.stable_variant.as_deref();
    let split = match Split::of_sides(named, &variants.canary_variant, &weights, stamp) {
        Ok(split) => Split { stamp: None, ..split },
        // One production variant (a guardrail deployment's endpoint): no canary variant
        // to zero; SageMaker's guardrails own the traffic.
        Err(SidesProblem::OnlyTheCanary) => Split::stable_only(&variants.canary_variant, None),
        Err(SidesProblem::NoCanary) => {
            return Err(Error::NotFound {
                target: target.clone(),
                detail: format!("endpoint has no production variant {:?}", variants.canary_variant),
            })
        }
        Err(SidesProblem::NoStable(stable)) => {
            return Err(Error::NotFound {
                target: target.clone(),
                detail: format!("endpoint has no production variant {stable:?}"),
            })
        }
        Err(SidesProblem::Ambiguous(others)) => {
            return Err(Error::Unsupported {
                target: target.clone(),
                detail: format!(
                    "cannot tell the stable variant among {others:?}; tag the alarm with \
                     coalmine:target sagemaker:ENDPOINT:STABLE:CANARY"
                ),
            })
        }
    };
    Ok(Live { status: out.endpoint_status, split })
}

/// SageMaker's own deployments: what a guardrail release starts and watches.
impl SageMakerEndpoints {
    /// The endpoint as a deployment sees it: a target naming only it, for errors.
    fn endpoint_target(endpoint: &str) -> Target {
        Target::Sagemaker(SageMakerVariants {
            endpoint: endpoint.to_owned(),
            stable_variant: None,
            canary_variant: "(endpoint)".to_owned(),
        })
    }

    pub async fn endpoint_state(&self, endpoint: &str) -> Result<EndpointState> {
        let target = Self::endpoint_target(endpoint);
        let out = self.describe_endpoint(&target, endpoint).await?;
        let (stamp, tripwire) = match &out.endpoint_arn {
            Some(arn) => self.tags(arn).await?,
            None => (None, None),
        };
        let pending = out.pending_deployment_summary.map(|p| PendingDeployment {
            config: p.endpoint_config_name.unwrap_or_default(),
            variants: p
                .production_variants
                .unwrap_or_default()
                .into_iter()
                .map(|v| {
                    let statuses = v
                        .variant_status
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|s| s.status.map(|s| s.as_str().to_owned()))
                        .collect();
                    (v.variant_name.unwrap_or_default(), statuses)
                })
                .collect(),
        });
        Ok(EndpointState {
            status: out.endpoint_status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            config: out.endpoint_config_name.unwrap_or_default(),
            pending,
            failure_reason: out.failure_reason.filter(|r| !r.trim().is_empty()),
            variants: out
                .production_variants
                .unwrap_or_default()
                .into_iter()
                .map(|v| {
                    let count = v.current_instance_count.unwrap_or_default().max(0) as u32;
                    (v.variant_name.unwrap_or_default(), count)
                })
                .collect(),
            stamp,
            tripwire,
        })
    }

    pub async fn config_variants(&self, config: &str) -> Result<ConfigVariants> {
        let out = self.client.describe_endpoint_config().endpoint_config_name(config).send().await.map_err(|e| {
            match service_code(&e) {
                Some(("ValidationException", message)) if message.contains("Could not find") => Error::InvalidRelease(
                    format!("endpoint config {config} was not found ({message}); create it first, or check the name"),
                ),
                _ => aws_error("sagemaker:DescribeEndpointConfig", e),
            }
        })?;
        let names = |variants: Option<Vec<aws_sdk_sagemaker::types::ProductionVariant>>| {
            variants.unwrap_or_default().into_iter().filter_map(|v| v.variant_name).collect()
        };
        Ok(ConfigVariants { production: names(out.production_variants), shadow: names(out.shadow_production_variants) })
    }

    pub async fn deploy(&self, endpoint: &str, config: &str, plan: Option<&DeploymentPlan>) -> Result<()> {
        let mut request = self.client.update_endpoint().endpoint_name(endpoint).endpoint_config_name(config);
        if let Some(plan) = plan {
            request = request.deployment_config(deployment_config(plan));
        }
        request.send().await.map_err(|e| match service_code(&e) {
            Some(("ValidationException", message)) if is_busy_message(message) => {
                Error::Refused(format!("{endpoint} is being updated already ({message}); wait for that to end"))
            }
            _ => aws_error("sagemaker:UpdateEndpoint", e),
        })?;
        Ok(())
    }

    pub async fn stamp_endpoint(&self, endpoint: &str, stamp: &Stamp) -> Result<()> {
        self.record(&Self::endpoint_target(endpoint), endpoint, stamp).await
    }

    pub async fn mark_tripwire(&self, endpoint: &str, alarm: &str) -> Result<()> {
        self.tag(&Self::endpoint_target(endpoint), endpoint, TRIPWIRE_TAG, alarm).await
    }
}

/// `DeploymentConfig`: blue/green with canary or linear traffic shifting, and the
/// auto-rollback alarms.
fn deployment_config(plan: &DeploymentPlan) -> DeploymentConfig {
    let capacity = |size: Size| {
        let (kind, value) = match size {
            Size::CapacityPercent(p) => (CapacitySizeType::CapacityPercent, p),
            Size::InstanceCount(n) => (CapacitySizeType::InstanceCount, n),
        };
        CapacitySize::builder().r#type(kind).value(i32::try_from(value).unwrap_or(i32::MAX)).build()
    };
    let seconds = |s: u32| i32::try_from(s).unwrap_or(i32::MAX);
    let routing = match plan.traffic {
        Traffic::Canary { size, wait_seconds } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::Canary)
            .wait_interval_in_seconds(seconds(wait_seconds))
            .canary_size(capacity(size)),
        Traffic::Linear { step, wait_seconds } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::Linear)
            .wait_interval_in_seconds(seconds(wait_seconds))
            .linear_step_size(capacity(step)),
    }
    .build();
    let policy = BlueGreenUpdatePolicy::builder()
        .traffic_routing_configuration(routing)
        .termination_wait_in_seconds(seconds(plan.termination_wait_seconds))
        .maximum_execution_timeout_in_seconds(seconds(plan.max_execution_seconds))
        .build();
    let alarms = plan.alarms.iter().map(|a| Alarm::builder().alarm_name(a).build()).collect();
    DeploymentConfig::builder()
        .blue_green_update_policy(policy)
        .auto_rollback_configuration(AutoRollbackConfig::builder().set_alarms(Some(alarms)).build())
        .build()
}
