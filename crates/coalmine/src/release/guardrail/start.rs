//! A guardrail release's first tick: check the endpoint, create and name the tripwire,
//! stamp the endpoint, and start the shadow or SageMaker's deployment. An earlier
//! attempt of this very tick that already started is picked up instead.

use crate::domain::deployment::EndpointState;
use crate::domain::error::{Error, Result};
use crate::domain::stamp::Stamp;
use crate::ports::{EndpointDeployments, Tripwires};
use crate::release::core::progress::{Progress, Status};

use crate::release::core::Ports;
use crate::release::guardrail::preflight::preflight;
use crate::release::guardrail::{endpoint_text, Extra, GuardrailProgress, GuardrailProgressOf, GuardrailTick, Phase};
use crate::text::duration;

impl<P: Ports> GuardrailTick<'_, P> {
    pub(super) async fn start(&self) -> Result<GuardrailProgressOf> {
        let (release, g) = (self.release, &self.release.guardrail);
        let state = self.deps.deployments().endpoint_state(&g.endpoint).await.map_err(|e| match e {
            Error::NotFound { detail, .. } => Error::InvalidRelease(format!(
                "guardrail.endpoint: {} was not found ({detail}); check the name",
                g.endpoint
            )),
            Error::AccessDenied { operation, detail } => Error::InvalidRelease(format!(
                "guardrail.endpoint: coalmine may not use {} ({operation}: {detail}); check the name, and the \
                 stack's SageMakerEndpointArns parameter",
                g.endpoint
            )),
            other => other,
        })?;
        if let Some(stamp) = state.stamp.clone().filter(|s| s.is_by(self.execution) && s.is_live()) {
            return Ok(self.pick_up(&state, &stamp));
        }
        preflight(release, &state, self.deps.deployments(), self.deps.alarms()).await?;
        let tripwire = release.tripwire();
        self.deps.tripwires().ensure_tripwire(&tripwire, &g.endpoint).await.map_err(|e| match e {
            Error::AccessDenied { operation, detail } => Error::InvalidRelease(format!(
                "guardrail.tripwire: coalmine may not create the alarm {tripwire} ({operation}: {detail}); name it \
                 with the stack's AlarmNamePrefix"
            )),
            other => other,
        })?;
        self.deps.deployments().mark_tripwire(&g.endpoint, &tripwire).await?;
        self.deps.deployments().stamp_endpoint(&g.endpoint, &self.live_stamp(&state.config, 0, None)).await?;
        let (phase, config, plan) = match &release.shadow {
            Some(shadow) => (Phase::ShadowStarting, shadow.endpoint_config.clone(), None),
            None => (Phase::Deploying, g.endpoint_config.clone(), Some(release.plan())),
        };
        self.deps.deployments().deploy(&g.endpoint, &config, plan.as_ref()).await?;
        let reason = match &release.shadow {
            Some(shadow) => format!(
                "Started: the shadow config {} (candidate variant {} beside {}), for {}",
                shadow.endpoint_config,
                shadow.variant,
                g.variant,
                duration(shadow.duration_seconds)
            ),
            None => format!(
                "Started: SageMaker deploys {} to {}: {}",
                g.endpoint_config,
                g.endpoint,
                release.describe_traffic()
            ),
        };
        let watch = GuardrailProgress {
            phase,
            original_config: state.config.clone(),
            previous_config: state.config.clone(),
            tripwire,
            phase_started_at: self.now,
            endpoint: endpoint_text(&state),
            stopped_because: None,
            stopped_by: None,
        };
        Ok(self.keep(self.fresh(&state.config, 0), watch, Status::Advanced, reason, None))
    }

    /// An earlier attempt of this tick started the shadow or the deployment.
    fn pick_up(&self, state: &EndpointState, stamp: &Stamp) -> GuardrailProgressOf {
        let release = self.release;
        let shadowing = release.shadow.as_ref().is_some_and(|s| {
            state.config == s.endpoint_config || state.pending.as_ref().is_some_and(|p| p.config == s.endpoint_config)
        });
        let (phase, stage, previous) = match &release.shadow {
            Some(_) if shadowing => (Phase::ShadowStarting, 0, stamp.stable.clone()),
            Some(shadow) => (Phase::Deploying, release.phases() - 1, shadow.endpoint_config.clone()),
            None => (Phase::Deploying, release.phases() - 1, stamp.stable.clone()),
        };
        let watch = GuardrailProgress {
            phase,
            original_config: stamp.stable.clone(),
            previous_config: previous,
            tripwire: release.tripwire(),
            phase_started_at: self.now,
            endpoint: endpoint_text(state),
            stopped_because: None,
            stopped_by: None,
        };
        let reason = "Picked up what an earlier attempt of this tick started".to_owned();
        self.keep(self.fresh(&stamp.stable, stage), watch, Status::Advanced, reason, None)
    }

    /// A new progress at `stage`, with `original` the config in service at the start.
    fn fresh(&self, original: &str, stage: usize) -> GuardrailProgressOf {
        Progress { stage, ..Progress::new(original, self.now, Extra::default()) }
    }
}
