use std::collections::HashMap;

use aws_sdk_lambda::types::AliasRoutingConfiguration;
use aws_sdk_lambda::Client;

use super::error::{aws_error, call_detail, service_code};
use crate::domain::error::{Error, Result};
use crate::domain::split::{Split, WEIGHT_TOLERANCE};
use crate::domain::stamp::Stamp;
use crate::domain::target::{LambdaAlias, LambdaCohort, Target};

/// A weighted alias: `FunctionVersion` is stable, the one `AdditionalVersionWeights`
/// entry is the canary, the `Description` holds the release's stamp. Writes carry the
/// `RevisionId` read, so Lambda refuses them (412) if anyone changed the alias in
/// between, and the stamp moves in the same call as the traffic.
pub struct LambdaAliases {
    client: Client,
}

impl LambdaAliases {
    pub fn new(client: Client) -> Self {
        LambdaAliases { client }
    }

    pub async fn read(&self, target: &Target, alias: &LambdaAlias) -> Result<Split> {
        let out =
            self.client.get_alias().function_name(&alias.function).name(&alias.alias).send().await.map_err(|e| {
                match service_code(&e) {
                    Some(("ResourceNotFoundException", _)) => {
                        Error::NotFound { target: target.clone(), detail: call_detail("lambda:GetAlias", &e) }
                    }
                    _ => aws_error("lambda:GetAlias", e),
                }
            })?;
        let stable = out.function_version.ok_or_else(|| Error::Unsupported {
            target: target.clone(),
            detail: "GetAlias returned no FunctionVersion".into(),
        })?;
        let weights = out.routing_config.and_then(|r| r.additional_version_weights).unwrap_or_default();
        let mut weights = weights.into_iter();
        let (canary, canary_weight) = match (weights.next(), weights.next()) {
            (None, _) => (None, 0.0),
            (Some((version, weight)), None) => (Some(version), weight),
            (Some(_), Some(_)) => {
                return Err(Error::Unsupported {
                    target: target.clone(),
                    detail: "the alias routes to more than one additional version".into(),
                })
            }
        };
        let stamp = out.description.as_deref().and_then(Stamp::parse);
        Ok(Split { stable, canary, canary_weight, others_weight: 0.0, mirror: 0.0, revision: out.revision_id, stamp })
    }

    pub async fn write(&self, target: &Target, alias: &LambdaAlias, read: &Split, desired: &Split) -> Result<Split> {
        if !(0.0..1.0).contains(&desired.canary_weight) {
            return Err(Error::Unsupported {
                target: target.clone(),
                detail: format!(
                    "a Lambda alias weight must be in [0, 1), not {}; promotion makes the canary the alias's version",
                    desired.canary_weight
                ),
            });
        }
        let weights: HashMap<String, f64> = match &desired.canary {
            Some(canary) if desired.canary_weight > WEIGHT_TOLERANCE => {
                HashMap::from([(canary.clone(), desired.canary_weight)])
            }
            _ => HashMap::new(),
        };
        let out = self
            .client
            .update_alias()
            .function_name(&alias.function)
            .name(&alias.alias)
            .function_version(&desired.stable)
            .routing_config(AliasRoutingConfiguration::builder().set_additional_version_weights(Some(weights)).build())
            .set_revision_id(read.revision.clone())
            .set_description(desired.stamp.as_ref().map(Stamp::render))
            .send()
            .await
            .map_err(|e| match service_code(&e) {
                Some(("PreconditionFailedException", _)) => {
                    Error::Conflict { target: target.clone(), detail: call_detail("lambda:UpdateAlias", &e) }
                }
                Some(("ResourceNotFoundException", _)) => {
                    Error::NotFound { target: target.clone(), detail: call_detail("lambda:UpdateAlias", &e) }
                }
                _ => aws_error("lambda:UpdateAlias", e),
            })?;
        let stamp = desired.stamp.clone().or_else(|| read.stamp.clone());
        Ok(Split { revision: out.revision_id, stamp, ..desired.clone() })
    }

    /// A cohort's alias pair (decision 0020): the primary alias must carry no weights;
    /// the split's revision and stamp are the cohort alias's, the kill switch.
    pub async fn read_cohort(&self, target: &Target, aliases: &LambdaCohort) -> Result<Split> {
        let primary = self.read(target, &aliases.alias_named(&aliases.alias)).await?;
        if primary.canary.is_some() {
            return Err(Error::Unsupported {
                target: target.clone(),
                detail: format!(
                    "alias {} carries weights; a cohort's primary alias serves the stable alone (take its weights \
                     off, or release with a lambda target)",
                    aliases.alias
                ),
            });
        }
        let cohort = self.read(target, &aliases.alias_named(&aliases.cohort_alias)).await?;
        let canary = (cohort.stable != primary.stable).then(|| cohort.stable.clone());
        Ok(Split {
            stable: primary.stable,
            canary_weight: if canary.is_some() { 1.0 } else { 0.0 },
            canary,
            others_weight: 0.0,
            mirror: 0.0,
            revision: cohort.revision,
            stamp: cohort.stamp,
        })
    }

    /// Points the cohort alias at the canary (or back at the stable) in one write
    /// conditional on the revision read, the stamp in the same call. At 100% (the
    /// desired split has no canary and a new stable) the primary alias moves first, then
    /// the cohort alias: a promotion is final either way, both then name the candidate.
    pub async fn write_cohort(
        &self,
        target: &Target,
        aliases: &LambdaCohort,
        read: &Split,
        desired: &Split,
    ) -> Result<Split> {
        let cohort_version = match &desired.canary {
            Some(canary) if desired.canary_weight > WEIGHT_TOLERANCE => canary.clone(),
            _ => desired.stable.clone(),
        };
        if desired.stable != read.stable {
            let primary = aliases.alias_named(&aliases.alias);
            let now = self.read(target, &primary).await?;
            if now.stable != read.stable || now.canary.is_some() {
                return Err(Error::Conflict {
                    target: target.clone(),
                    detail: format!("alias {} changed since it was read", aliases.alias),
                });
            }
            let promoted = Split { stable: desired.stable.clone(), canary: None, canary_weight: 0.0, ..now.clone() };
            self.write(target, &primary, &now, &Split { stamp: None, ..promoted }).await?;
        }
        let cohort = aliases.alias_named(&aliases.cohort_alias);
        let cohort_read = Split { stable: String::new(), canary: None, canary_weight: 0.0, ..read.clone() };
        let written = Split {
            stable: cohort_version,
            canary: None,
            canary_weight: 0.0,
            stamp: desired.stamp.clone(),
            ..desired.clone()
        };
        let out = self.write(target, &cohort, &cohort_read, &written).await?;
        Ok(Split { revision: out.revision, stamp: out.stamp.or_else(|| read.stamp.clone()), ..desired.clone() })
    }

    pub async fn check_version(&self, target: &Target, alias: &LambdaAlias, version: &str) -> Result<()> {
        match self.client.get_function_configuration().function_name(&alias.function).qualifier(version).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(service_code(&e), Some(("ResourceNotFoundException", _))) => Err(Error::InvalidRelease(
                format!("canary_version: {target} has no published version {version}; publish it first"),
            )),
            Err(e) => Err(aws_error("lambda:GetFunctionConfiguration", e)),
        }
    }
}

/// Synchronous invokes of a function's published versions: how the shadow function asks
/// the candidate (and the stable, again) a live request.
pub struct LambdaVersions {
    client: Client,
}

impl LambdaVersions {
    pub fn from_client(client: Client) -> Self {
        LambdaVersions { client }
    }
}

impl crate::ports::VersionInvoker for LambdaVersions {
    async fn invoke(&self, function: &str, version: &str, payload: &serde_json::Value) -> Result<crate::ports::Answer> {
        let body = serde_json::to_vec(payload).map_err(|e| Error::BadEvent(format!("shadow request: {e}")))?;
        let started = std::time::Instant::now();
        let out = self
            .client
            .invoke()
            .function_name(function)
            .qualifier(version)
            .payload(aws_sdk_lambda::primitives::Blob::new(body))
            .send()
            .await
            .map_err(|e| aws_error("lambda:Invoke", e))?;
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let bytes = out.payload.as_ref().map(|b| b.as_ref()).unwrap_or_default();
        let outcome = match out.function_error {
            Some(kind) => Err(format!("{kind}: {}", String::from_utf8_lossy(bytes))),
            None => serde_json::from_slice(bytes)
                .map_err(|e| format!("the answer is not JSON ({e}): {}", String::from_utf8_lossy(bytes))),
        };
        Ok(crate::ports::Answer { outcome, millis })
    }
}

/// Hands an authenticated alert to the rollback function as an asynchronous invocation
/// (`Event`): Lambda queues it, retries it, and its on-failure destination keeps it.
pub struct LambdaHandoff {
    client: Client,
    function: Option<String>,
}

impl LambdaHandoff {
    /// `function`: the rollback function's name or ARN; without one, every hand-off says
    /// what to configure.
    pub fn new(client: Client, function: Option<String>) -> Self {
        LambdaHandoff { client, function }
    }
}

impl crate::ports::AlertHandoff for LambdaHandoff {
    async fn hand_off(&self, alert: &serde_json::Value) -> Result<()> {
        let function = self.function.as_deref().ok_or_else(|| {
            Error::Config(format!("{} is not set: name the rollback function alerts go to", crate::config::HANDOFF_VAR))
        })?;
        let body = serde_json::to_vec(alert).map_err(|e| Error::BadEvent(format!("alert: {e}")))?;
        self.client
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(body))
            .send()
            .await
            .map_err(|e| aws_error("lambda:Invoke", e))?;
        Ok(())
    }
}
