//! A cohort release's share, published in AppConfig (decision 0020): one hosted
//! configuration profile per cohort target ([`Target::cohort_profile`]), in the stack's
//! application, deployed to its
//! environment with its own strategy (no bake: AppConfig's predefined `AllAtOnce` bakes
//! ten minutes, and while it does no other deployment to the environment may start).
//! Routers read it through AppConfig's data plane, made for many frequent readers.

use std::collections::HashMap;
use std::sync::Mutex;

use coalmine_router::Cohort;

use super::error::{aws_error, call_detail, service_code};
use crate::config::CohortStore;
use crate::domain::error::{Error, Result};
use crate::domain::target::Target;
use crate::ports::CohortPublisher;

pub struct AppConfigCohorts {
    client: aws_sdk_appconfig::Client,
    store: Option<CohortStore>,
    /// Profile ids by name, found or made once per cold start.
    profiles: Mutex<HashMap<String, String>>,
}

impl AppConfigCohorts {
    pub fn new(client: aws_sdk_appconfig::Client, store: Option<CohortStore>) -> Self {
        AppConfigCohorts { client, store, profiles: Mutex::new(HashMap::new()) }
    }

    fn store(&self) -> Result<&CohortStore> {
        self.store.as_ref().ok_or_else(|| {
            Error::InvalidRelease(
                "cohorts: this stack was deployed without a place to publish cohorts (COHORTS_APPLICATION, \
                 COHORTS_ENVIRONMENT and COHORTS_DEPLOYMENT_STRATEGY are unset); deploy the stack's template, which \
                 makes them, and run the release again"
                    .to_owned(),
            )
        })
    }

    /// The profile's id: found by name, or made (hosted, freeform JSON) on first use.
    async fn profile(&self, store: &CohortStore, name: &str) -> Result<String> {
        if let Some(id) = self.profiles.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(id.clone());
        }
        let mut pages =
            self.client.list_configuration_profiles().application_id(&store.application).into_paginator().send();
        let mut found = None;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("appconfig:ListConfigurationProfiles", e))?;
            found = page.items().iter().find(|p| p.name() == Some(name)).and_then(|p| p.id().map(str::to_owned));
            if found.is_some() {
                break;
            }
        }
        let id = match found {
            Some(id) => id,
            None => self
                .client
                .create_configuration_profile()
                .application_id(&store.application)
                .name(name)
                .location_uri("hosted")
                .r#type("AWS.Freeform")
                .description("coalmine: the cohort routers of this alias read (decision 0020)")
                .send()
                .await
                .map_err(|e| aws_error("appconfig:CreateConfigurationProfile", e))?
                .id
                .ok_or_else(|| service("appconfig:CreateConfigurationProfile", "no profile id in the answer"))?,
        };
        self.profiles.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), id.clone());
        Ok(id)
    }
}

fn service(operation: &'static str, detail: &str) -> Error {
    Error::Service { operation, detail: detail.to_owned(), retryable: true }
}

impl CohortPublisher for AppConfigCohorts {
    async fn publish(&self, target: &Target, cohort: &Cohort) -> Result<()> {
        let store = self.store()?;
        let name = target.cohort_profile().ok_or_else(|| Error::Unsupported {
            target: target.clone(),
            detail: "only a lambda-cohort target routes units by cohort".to_owned(),
        })?;
        let profile = self.profile(store, &name).await?;
        let content = serde_json::to_vec(cohort).expect("a cohort serializes");
        let version = self
            .client
            .create_hosted_configuration_version()
            .application_id(&store.application)
            .configuration_profile_id(&profile)
            .content_type("application/json")
            .content(content.into())
            .description(format!("{} at {} of 10000", cohort.release, cohort.threshold))
            .send()
            .await
            .map_err(|e| aws_error("appconfig:CreateHostedConfigurationVersion", e))?
            .version_number;
        let started = self
            .client
            .start_deployment()
            .application_id(&store.application)
            .environment_id(&store.environment)
            .deployment_strategy_id(&store.strategy)
            .configuration_profile_id(&profile)
            .configuration_version(version.to_string())
            .description(format!("coalmine: release {} at {} of 10000 units", cohort.release, cohort.threshold))
            .send()
            .await;
        match started {
            Ok(_) => Ok(()),
            // One deployment at a time per environment: another cohort's, done in seconds
            // with no bake. The tick is retried and publishes again.
            Err(e) if matches!(service_code(&e), Some(("ConflictException", _))) => Err(Error::Service {
                operation: "appconfig:StartDeployment",
                detail: format!(
                    "{}; another deployment to the cohorts' environment is in progress, retried with the tick",
                    call_detail("appconfig:StartDeployment", &e)
                ),
                retryable: true,
            }),
            Err(e) => Err(aws_error("appconfig:StartDeployment", e)),
        }
    }
}
