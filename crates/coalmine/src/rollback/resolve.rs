//! Which targets an alarm guards: its `coalmine:target` tag (an Azure alert's custom
//! property of that name), else the configured mapping, else what its metric dimensions
//! (and an Azure alert's target resource) name.

use std::collections::BTreeSet;

use tracing::warn;

use crate::domain::error::Error;
use crate::domain::event::TARGET_TAG;
use crate::domain::event::{AlarmEvent, Delivery};
use crate::domain::mapping::TargetMapping;
use crate::domain::target::{parse_target_list, Target};
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
    let found = match (&event.declared_targets, &event.alarm_arn) {
        (Some(declared), _) => Ok(Some(declared.clone())),
        (None, Some(arn)) => alarms.target_tag(arn).await,
        (None, None) => return TagLookup::NoTargets,
    };
    match found {
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

/// The tag wins when it names targets; otherwise the fallback does. A tag that could not
/// be read is a retryable failure, never a fallback: the tag exists to overrule the
/// dimensions, so they cannot stand in for it.
pub fn resolve(tag: TagLookup, fallback: Fallback) -> Result<Resolution, Error> {
    match tag {
        TagLookup::Targets(targets) => Ok(Resolution { targets, by: ResolvedBy::Tag }),
        TagLookup::NoTargets => Ok(Resolution { targets: fallback.targets, by: fallback.by }),
        TagLookup::Failed(error) => Err(Error::Incomplete {
            summary: format!(
                "the alarm's {TARGET_TAG} tag could not be read, so nothing was moved; Lambda retries the event: {error}"
            ),
            retryable: true,
        }),
    }
}

/// Splits the targets into those the event may act on and those it may not: an Azure
/// alert only on the online endpoint it was raised on (its target resource), whatever
/// its custom properties name; any other event on any target.
pub fn in_scope(event: &AlarmEvent, targets: Vec<Target>) -> (Vec<Target>, Vec<Target>) {
    if event.delivery != Delivery::AzureMonitor {
        return (targets, Vec::new());
    }
    let resource = event.resource.as_deref().unwrap_or_default();
    targets.into_iter().partition(|target| target.is_raised_on(resource))
}

/// What the alarm's watched metrics name by their dimensions (an Azure alert by its
/// resource), each in its target kind's own terms.
pub fn targets_from_dimensions(event: &AlarmEvent) -> Vec<Target> {
    let targets: BTreeSet<Target> = event.metrics.iter().filter_map(Target::from_watched_metric).collect();
    targets.into_iter().collect()
}

fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut seen = BTreeSet::new();
    targets.into_iter().filter(|t| seen.insert(t.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::target::AzureMlDeployments;

    #[test]
    fn an_azure_alert_may_act_on_its_own_endpoint_only() {
        let alert = sample("azure/alert-azureml-canary.common-schema.json");
        let own = targets_from_dimensions(&alert).remove(0);
        let Target::Azureml(d) = &own else { panic!("an Azure target") };
        let other_endpoint =
            Target::Azureml(Box::new(AzureMlDeployments { endpoint: "other".into(), ..(**d).clone() }));
        let candidates = vec![
            own.clone(),
            "sagemaker:ep:spare:prod".parse().unwrap(),
            Target::lambda("ai-handler", "production"),
            other_endpoint.clone(),
        ];
        let (allowed, refused) = in_scope(&alert, candidates);
        assert_eq!(allowed, vec![own.clone()]);
        assert_eq!(refused.len(), 3);
        assert!(refused.contains(&other_endpoint));
        // A CloudWatch alarm's tag may name any target.
        let alarm = sample("alarm-lambda-canary.eventbridge.json");
        assert_eq!(in_scope(&alarm, vec![own.clone()]).0, vec![own]);
        // An alert with no resource acts on nothing.
        let nowhere = AlarmEvent { resource: None, ..alert };
        assert!(in_scope(&nowhere, targets_from_dimensions(&nowhere)).0.is_empty());
    }
    use crate::domain::event::tests::sample;
    use crate::memory::Alarms;

    #[tokio::test]
    async fn an_azure_alert_guards_the_canary_deployment_its_dimension_names_on_its_endpoint() {
        let alert = sample("azure/alert-azureml-canary.common-schema.json");
        let fallback = fallback_targets(&alert, &TargetMapping::default());
        assert_eq!(fallback.by, ResolvedBy::Dimensions);
        assert_eq!(
            fallback.targets.iter().map(Target::to_string).collect::<Vec<_>>(),
            ["azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:green"]
        );
        // No ARN, no declared target: nothing to look up.
        assert!(matches!(tag_targets(&alert, &Alarms::default()).await, TagLookup::NoTargets));
    }

    #[tokio::test]
    async fn an_azure_alert_rules_coalmine_target_property_is_its_tag() {
        let alert = sample("azure/alert-azureml-tagged.common-schema.json");
        assert!(fallback_targets(&alert, &TargetMapping::default()).targets.is_empty(), "latency has no deployment");
        let TagLookup::Targets(targets) = tag_targets(&alert, &Alarms::default()).await else {
            panic!("the custom property names the target")
        };
        assert_eq!(
            targets[0].to_string(),
            "azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:blue:green"
        );
    }

    #[test]
    fn an_alert_on_a_deployment_resource_names_that_deployment() {
        let mut alert = sample("azure/alert-azureml-canary.common-schema.json");
        let metric = &mut alert.metrics[0];
        metric.namespace = Some("Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments".into());
        metric.dimensions.clear();
        metric.resource = Some(format!("{}/deployments/green", metric.resource.clone().unwrap()));
        assert_eq!(
            targets_from_dimensions(&alert)[0].to_string(),
            "azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:green"
        );
    }
}
