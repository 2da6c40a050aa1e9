//! Which targets an alarm guards: its `coalmine:target` tag, else the configured
//! mapping, else what its metric dimensions name.

use std::collections::BTreeSet;

use tracing::warn;

use crate::config::TargetMapping;
use crate::error::Error;
use crate::event::AlarmEvent;
use crate::ports::AlarmSource;
use crate::target::{parse_target_list, SageMakerVariants, Target};

pub const TARGET_TAG: &str = "coalmine:target";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedBy {
    Tag,
    Mapping,
    Dimensions,
    Nothing,
}

impl ResolvedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedBy::Tag => "tag",
            ResolvedBy::Mapping => "mapping",
            ResolvedBy::Dimensions => "dimensions",
            ResolvedBy::Nothing => "nothing",
        }
    }
}

#[derive(Debug)]
pub struct Resolution {
    pub targets: Vec<Target>,
    pub by: ResolvedBy,
    /// The tag could not be read. The other sources were still used so traffic moves
    /// now, but the invocation must fail afterwards so a retry can honour the tag.
    pub tag_lookup_failed: Option<Error>,
}

pub async fn resolve_targets(event: &AlarmEvent, mapping: &TargetMapping, alarms: &impl AlarmSource) -> Resolution {
    let mut tag_lookup_failed = None;
    if let Some(arn) = &event.alarm_arn {
        match alarms.target_tag(arn).await {
            Ok(Some(value)) => match parse_target_list(&value) {
                Ok(targets) if !targets.is_empty() => {
                    return Resolution { targets: dedup(targets), by: ResolvedBy::Tag, tag_lookup_failed: None }
                }
                Ok(_) => {
                    warn!(alarm = %event.alarm_name, tag = TARGET_TAG, "tag is empty; trying other sources")
                }
                Err(error) => {
                    warn!(alarm = %event.alarm_name, tag = TARGET_TAG, %error, "tag is malformed; trying other sources")
                }
            },
            Ok(None) => {}
            Err(error) => {
                warn!(alarm = %event.alarm_name, %error, "could not read the alarm's tags; trying other sources");
                tag_lookup_failed = Some(error);
            }
        }
    }
    let (targets, by) = if let Some(targets) = mapping.lookup(&event.alarm_name) {
        (dedup(targets.to_vec()), ResolvedBy::Mapping)
    } else {
        let targets = targets_from_dimensions(event);
        let by = if targets.is_empty() { ResolvedBy::Nothing } else { ResolvedBy::Dimensions };
        (targets, by)
    };
    Resolution { targets, by, tag_lookup_failed }
}

/// `AWS/Lambda` metrics by `FunctionName` + `Resource` "function:alias", and
/// `AWS/SageMaker` metrics by `EndpointName` + `VariantName` (the canary variant).
pub fn targets_from_dimensions(event: &AlarmEvent) -> Vec<Target> {
    let mut targets = BTreeSet::new();
    for metric in &event.metrics {
        let dims = &metric.dimensions;
        match metric.namespace.as_deref() {
            Some("AWS/Lambda") => {
                let (Some(function), Some(resource)) = (dims.get("FunctionName"), dims.get("Resource")) else {
                    continue;
                };
                if let Some((resource_function, alias)) = resource.rsplit_once(':') {
                    if resource_function == function && !alias.is_empty() {
                        targets.insert(Target::lambda(function.as_str(), alias));
                    }
                }
            }
            Some("AWS/SageMaker") => {
                if let (Some(endpoint), Some(variant)) = (dims.get("EndpointName"), dims.get("VariantName")) {
                    targets.insert(Target::Sagemaker(SageMakerVariants {
                        endpoint: endpoint.clone(),
                        stable_variant: None,
                        canary_variant: variant.clone(),
                    }));
                }
            }
            _ => {}
        }
    }
    targets.into_iter().collect()
}

fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut seen = BTreeSet::new();
    targets.into_iter().filter(|t| seen.insert(t.clone())).collect()
}
