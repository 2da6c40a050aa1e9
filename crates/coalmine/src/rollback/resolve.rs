//! Which targets an alarm guards: its `coalmine:target` tag, else the configured
//! mapping, else what its metric dimensions name.

use std::collections::BTreeSet;

use tracing::warn;

use crate::domain::error::Error;
use crate::domain::event::AlarmEvent;
use crate::domain::mapping::TargetMapping;
use crate::domain::target::{parse_target_list, SageMakerVariants, Target, TARGET_TAG};
use crate::ports::AlarmSource;

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

/// The targets an alarm guards when its tag names none: the configured mapping, else its
/// dimensions. Known without any AWS call, so the rollback can read these targets while
/// the tag lookup is still in flight.
#[derive(Debug)]
pub struct Fallback {
    pub targets: Vec<Target>,
    pub by: ResolvedBy,
}

pub fn fallback_targets(event: &AlarmEvent, mapping: &TargetMapping) -> Fallback {
    if let Some(targets) = mapping.lookup(&event.alarm_name) {
        return Fallback { targets: dedup(targets.to_vec()), by: ResolvedBy::Mapping };
    }
    let targets = targets_from_dimensions(event);
    let by = if targets.is_empty() { ResolvedBy::Nothing } else { ResolvedBy::Dimensions };
    Fallback { targets, by }
}

/// What the alarm's `coalmine:target` tag says.
#[derive(Debug)]
pub enum TagLookup {
    Targets(Vec<Target>),
    /// No ARN, no tag, or a tag that names nothing usable (logged).
    NoTargets,
    Failed(Error),
}

pub async fn tag_targets(event: &AlarmEvent, alarms: &impl AlarmSource) -> TagLookup {
    let Some(arn) = &event.alarm_arn else { return TagLookup::NoTargets };
    match alarms.target_tag(arn).await {
        Ok(Some(value)) => match parse_target_list(&value) {
            Ok(targets) if !targets.is_empty() => TagLookup::Targets(dedup(targets)),
            Ok(_) => {
                warn!(alarm = %event.alarm_name, tag = TARGET_TAG, "tag is empty; trying other sources");
                TagLookup::NoTargets
            }
            Err(error) => {
                warn!(alarm = %event.alarm_name, tag = TARGET_TAG, %error, "tag is malformed; trying other sources");
                TagLookup::NoTargets
            }
        },
        Ok(None) => TagLookup::NoTargets,
        Err(error) => {
            warn!(alarm = %event.alarm_name, %error, "could not read the alarm's tags; trying other sources");
            TagLookup::Failed(error)
        }
    }
}

/// The tag wins when it names targets; otherwise the fallback does.
pub fn resolve(tag: TagLookup, fallback: Fallback) -> Resolution {
    match tag {
        TagLookup::Targets(targets) => Resolution { targets, by: ResolvedBy::Tag, tag_lookup_failed: None },
        TagLookup::NoTargets => Resolution { targets: fallback.targets, by: fallback.by, tag_lookup_failed: None },
        TagLookup::Failed(error) => {
            Resolution { targets: fallback.targets, by: fallback.by, tag_lookup_failed: Some(error) }
        }
    }
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
