//! Lambda aliases and SageMaker endpoints in memory: splits with revisions (a write
//! must present the revision it read, as Lambda's `RevisionId`), and endpoints that
//! deploy configs the way SageMaker reports them, step by step as a test scripts them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::journal::{lock, Journal};
use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState, PendingDeployment};
use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::{PeerSides, SageMakerVariants, Target};
use crate::ports::{EndpointDeployments, TrafficRouter};

#[derive(Default)]
pub struct Router {
    pub splits: Mutex<HashMap<Target, Split>>,
    pub reads: Mutex<usize>,
    pub writes: Mutex<Vec<(Target, Split)>>,
    /// Errors returned, in order, by `write` for a target before it succeeds.
    pub write_failures: Mutex<HashMap<Target, VecDeque<Error>>>,
    /// Someone else's change applied between our read and our write, once per entry.
    pub interleaved: Mutex<HashMap<Target, VecDeque<Split>>>,
    /// Canary versions `check_canary` reports missing.
    pub missing_versions: Mutex<Vec<String>>,
    /// Targets whose read never answers.
    pub hanging_reads: Mutex<Vec<Target>>,
    /// SageMaker endpoints by name, as `DescribeEndpoint` shows them (without tags).
    pub endpoints: Mutex<HashMap<String, EndpointState>>,
    /// What each later `endpoint_state` finds, in turn: SageMaker's own progress
    /// through a deployment, as the test scripts it.
    pub scripts: Mutex<HashMap<String, VecDeque<EndpointState>>>,
    /// Endpoint configs by name.
    pub configs: Mutex<HashMap<String, ConfigVariants>>,
    /// SageMaker and Azure ML endpoints by their sides' weights, read through whatever
    /// roles a target names, as the adapters read them (see [`Router::with_sides`]).
    pub sides: Mutex<HashMap<String, Vec<(String, f64)>>>,
    /// The endpoints' `coalmine:release` and `coalmine:tripwire` tags.
    pub stamps: Mutex<HashMap<String, Stamp>>,
    pub tripwires: Mutex<HashMap<String, String>>,
    pub journal: Journal,
    /// The shadow feeds open now, by filter name.
    pub feeds: Mutex<Vec<String>>,
    /// Errors returned, in order, by `open_feed` before it succeeds.
    pub feed_failures: Mutex<VecDeque<Error>>,
    /// What the shadow function logged as example disagreements.
    pub examples: Mutex<Vec<crate::domain::shadow::Example>>,
    /// Each cohort published, in order, with the version the cohort alias served at that
    /// moment (so a test sees whether the cohort or the alias moved first).
    pub published: Mutex<Vec<Published>>,
    /// Errors returned, in order, by `publish` before it succeeds.
    pub publish_failures: Mutex<VecDeque<Error>>,
    /// Replay sources by how they are shown (`s3://bucket/key`, or the recent window's
    /// words): their lines. A source not here does not exist.
    pub replay_sources: Mutex<HashMap<String, Vec<crate::domain::replay::ReplayLine>>>,
    /// Every batch handed to the shadow function, in order.
    pub dispatched: Mutex<Vec<crate::domain::replay::ReplayBatch>>,
    revision: Mutex<u64>,
}

/// A cohort as routers would read it, and what the cohort alias served when it was published.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub target: Target,
    pub cohort: coalmine_router::Cohort,
    /// A cohort's split read as its adapter reads it: the canary while it has weight,
    /// else the stable (both aliases on one version).
    pub cohort_alias_then: Option<String>,
}

impl Router {
    pub fn with(splits: impl IntoIterator<Item = (Target, Split)>) -> Self {
        let router = Router::default();
        lock(&router.splits).extend(splits);
        router
    }

    /// Records its changes in `journal`, beside the other adapters'.
    pub fn journaled(self, journal: &Journal) -> Self {
        Router { journal: journal.clone(), ..self }
    }

    /// An endpoint whose variants (or deployments) serve `weights`, its release stamp
    /// `stamp`: any target on it reads and writes its split, whatever roles it names.
    pub fn with_sides(endpoint: &Target, weights: &[(&str, f64)], stamp: Option<Stamp>) -> Self {
        let router = Router::default();
        router.put_sides(endpoint, weights, stamp);
        router
    }

    pub fn put_sides(&self, endpoint: &Target, weights: &[(&str, f64)], stamp: Option<Stamp>) {
        let key = endpoint_key(endpoint).expect("an endpoint with sides");
        lock(&self.sides).insert(key.clone(), weights.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect());
        match stamp {
            Some(stamp) => lock(&self.stamps).insert(key, stamp),
            None => lock(&self.stamps).remove(&key),
        };
    }

    /// Each side's share of the endpoint's traffic now.
    pub fn shares(&self, endpoint: &Target) -> HashMap<String, f64> {
        let key = endpoint_key(endpoint).expect("an endpoint with sides");
        let sides = lock(&self.sides);
        let weights = sides.get(&key).cloned().unwrap_or_default();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        weights.into_iter().map(|(n, w)| (n, if total > 0.0 { w / total } else { 0.0 })).collect()
    }

    pub fn stamp_on(&self, endpoint: &Target) -> Option<Stamp> {
        lock(&self.stamps).get(&endpoint_key(endpoint)?).cloned()
    }

    fn read_sides(&self, target: &Target) -> Option<Result<Split>> {
        let key = endpoint_key(target)?;
        let weights = lock(&self.sides).get(&key).cloned()?;
        let PeerSides { stable: named, canary, .. } = target.peer_sides()?;
        let stamp = lock(&self.stamps).get(&key).cloned();
        let revision = Some(format!("sides-{}", *lock(&self.revision)));
        Some(
            Split::of_sides(named, canary, &weights, stamp)
                .map(|split| Split { revision, ..split })
                .map_err(|problem| Error::NotFound { target: target.clone(), detail: format!("{problem:?}") }),
        )
    }

    fn write_sides(&self, target: &Target, read: &Split, desired: &Split) -> Option<Result<Split>> {
        let key = endpoint_key(target)?;
        let mut sides = lock(&self.sides);
        let weights = sides.get_mut(&key)?;
        if read.revision != Some(format!("sides-{}", *lock(&self.revision))) {
            return Some(Err(Error::Conflict { target: target.clone(), detail: "the endpoint changed".into() }));
        }
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let others_raw = read.others_weight * total;
        for (name, weight) in weights.iter_mut() {
            if Some(name.as_str()) == desired.canary.as_deref() {
                *weight = desired.canary_weight * total;
            } else if *name == desired.stable {
                *weight = total - others_raw - desired.canary_weight * total;
            }
        }
        if let Some(stamp) = &desired.stamp {
            lock(&self.stamps).insert(key, stamp.clone());
        }
        let written = Split {
            revision: self.next_revision(),
            stamp: desired.stamp.clone().or(read.stamp.clone()),
            ..desired.clone()
        };
        lock(&self.writes).push((target.clone(), written.clone()));
        Some(Ok(written))
    }

    pub fn split(&self, target: &Target) -> Split {
        lock(&self.splits).get(target).cloned().unwrap_or_else(|| Split::stable_only("(no such target)", None))
    }

    pub fn write_count(&self) -> usize {
        lock(&self.writes).len()
    }

    /// An endpoint as SageMaker would describe it now, and the configs it may deploy.
    pub fn put_endpoint(&self, endpoint: &str, state: EndpointState) {
        lock(&self.endpoints).insert(endpoint.to_owned(), state);
    }

    pub fn put_config(&self, config: &str, variants: ConfigVariants) {
        lock(&self.configs).insert(config.to_owned(), variants);
    }

    /// What the endpoint shows at each of the next reads, one read each.
    pub fn script(&self, endpoint: &str, states: impl IntoIterator<Item = EndpointState>) {
        lock(&self.scripts).entry(endpoint.to_owned()).or_default().extend(states);
    }

    fn next_revision(&self) -> Option<String> {
        let mut r = lock(&self.revision);
        *r += 1;
        Some(format!("rev-{r}"))
    }

    /// The split a one-variant endpoint shows: its only variant, with no canary beside
    /// it (SageMaker's own deployments move its traffic).
    fn endpoint_split(&self, target: &Target) -> Option<Split> {
        let (endpoint, canary) = (target.deploying_endpoint()?, target.peer_sides()?.canary);
        let endpoints = lock(&self.endpoints);
        let only = matches!(endpoints.get(endpoint)?.variants.as_slice(), [(name, _)] if name == canary);
        only.then(|| Split::stable_only(canary, lock(&self.stamps).get(endpoint).cloned()))
    }
}

/// A Lambda alias with a canary at `weight`, at revision `rev-0`.
pub fn lambda_split(stable: &str, canary: &str, weight: f64) -> Split {
    Split {
        stable: stable.into(),
        canary: Some(canary.into()),
        canary_weight: weight,
        others_weight: 0.0,
        mirror: 0.0,
        revision: Some("rev-0".into()),
        stamp: None,
    }
}

fn endpoint_key(target: &Target) -> Option<String> {
    target.peer_sides().map(|sides| sides.endpoint)
}

fn endpoint_target(endpoint: &str) -> Target {
    Target::Sagemaker(SageMakerVariants {
        endpoint: endpoint.to_owned(),
        stable_variant: None,
        canary_variant: "(endpoint)".to_owned(),
    })
}

impl TrafficRouter for Router {
    async fn read(&self, target: &Target) -> Result<Split> {
        *lock(&self.reads) += 1;
        if lock(&self.hanging_reads).contains(target) {
            std::future::pending::<()>().await;
        }
        if let Some(split) = lock(&self.splits).get(target).cloned() {
            return Ok(split);
        }
        if let Some(read) = self.read_sides(target) {
            return read;
        }
        self.endpoint_split(target)
            .ok_or_else(|| Error::NotFound { target: target.clone(), detail: "no such alias".into() })
    }

    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> Result<Split> {
        if let Some(change) = lock(&self.interleaved).get_mut(target).and_then(VecDeque::pop_front) {
            let revision = self.next_revision();
            lock(&self.splits).insert(target.clone(), Split { revision, ..change });
        }
        if let Some(error) = lock(&self.write_failures).get_mut(target).and_then(VecDeque::pop_front) {
            return Err(error);
        }
        if !lock(&self.splits).contains_key(target) {
            if let Some(written) = self.write_sides(target, read, desired) {
                return written;
            }
        }
        let mut splits = lock(&self.splits);
        let live =
            splits.get(target).ok_or_else(|| Error::NotFound { target: target.clone(), detail: "gone".into() })?;
        if live.revision != read.revision {
            return Err(Error::Conflict { target: target.clone(), detail: "revision mismatch".into() });
        }
        // As the adapters do: no stamp in the desired split leaves the live one.
        let stamp = desired.stamp.clone().or_else(|| live.stamp.clone());
        let written = Split { revision: self.next_revision(), stamp, ..desired.clone() };
        splits.insert(target.clone(), written.clone());
        lock(&self.writes).push((target.clone(), written.clone()));
        Ok(written)
    }

    async fn check_canary(&self, target: &Target, canary: &str) -> Result<()> {
        if lock(&self.missing_versions).iter().any(|v| v == canary) {
            return Err(Error::InvalidRelease(format!("canary_version: {target} has no version {canary}")));
        }
        Ok(())
    }
}

impl Router {
    /// The cohort routers of `target` read now, if any was published.
    pub fn cohort(&self, target: &Target) -> Option<coalmine_router::Cohort> {
        lock(&self.published).iter().rev().find(|p| &p.target == target).map(|p| p.cohort.clone())
    }
}

impl crate::ports::CohortPublisher for Router {
    async fn publish(&self, target: &Target, cohort: &coalmine_router::Cohort) -> Result<()> {
        if let Some(error) = lock(&self.publish_failures).pop_front() {
            return Err(error);
        }
        let cohort_alias_then = lock(&self.splits).get(target).map(|s| match &s.canary {
            Some(canary) if !s.canary_is_zero() => canary.clone(),
            _ => s.stable.clone(),
        });
        self.journal.record(format!("publish {} for {target} at {} of 10000", cohort.release, cohort.threshold));
        lock(&self.published).push(Published { target: target.clone(), cohort: cohort.clone(), cohort_alias_then });
        Ok(())
    }
}

impl EndpointDeployments for Router {
    async fn endpoint_state(&self, endpoint: &str) -> Result<EndpointState> {
        let scripted = lock(&self.scripts).get_mut(endpoint).and_then(VecDeque::pop_front);
        let mut endpoints = lock(&self.endpoints);
        if let Some(next) = scripted {
            endpoints.insert(endpoint.to_owned(), next);
        }
        let state = endpoints.get(endpoint).cloned().ok_or_else(|| Error::NotFound {
            target: endpoint_target(endpoint),
            detail: format!("Could not find endpoint {endpoint}"),
        })?;
        Ok(EndpointState {
            stamp: lock(&self.stamps).get(endpoint).cloned(),
            tripwire: lock(&self.tripwires).get(endpoint).cloned(),
            ..state
        })
    }

    async fn config_variants(&self, config: &str) -> Result<ConfigVariants> {
        lock(&self.configs).get(config).cloned().ok_or_else(|| {
            Error::InvalidRelease(format!(
                "endpoint config {config} was not found (Could not find endpoint configuration); create it first, \
                 or check the name"
            ))
        })
    }

    /// SageMaker starts deploying: the endpoint is `Updating` with `config` pending;
    /// what it does next is the test's script.
    async fn deploy(&self, endpoint: &str, config: &str, plan: Option<&DeploymentPlan>) -> Result<()> {
        let mut endpoints = lock(&self.endpoints);
        let state = endpoints.get_mut(endpoint).ok_or_else(|| Error::NotFound {
            target: endpoint_target(endpoint),
            detail: format!("Could not find endpoint {endpoint}"),
        })?;
        if state.status != "InService" {
            return Err(Error::Refused(format!(
                "{endpoint} is being updated already (Cannot update in-progress endpoint); wait for that to end"
            )));
        }
        state.status = "Updating".to_owned();
        state.pending = Some(PendingDeployment {
            config: config.to_owned(),
            variants: state.variants.iter().map(|(name, _)| (name.clone(), vec!["Creating".to_owned()])).collect(),
        });
        self.journal.record(format!("deploy {config}{}", if plan.is_some() { " with guardrails" } else { "" }));
        Ok(())
    }

    async fn mark_tripwire(&self, endpoint: &str, alarm: &str) -> Result<()> {
        lock(&self.tripwires).insert(endpoint.to_owned(), alarm.to_owned());
        self.journal.record(format!("mark_tripwire {alarm}"));
        Ok(())
    }

    async fn stamp_endpoint(&self, endpoint: &str, stamp: &Stamp) -> Result<()> {
        lock(&self.stamps).insert(endpoint.to_owned(), stamp.clone());
        self.journal.record(format!("stamp {}", stamp.render()));
        Ok(())
    }
}

impl crate::ports::ShadowFeeds for Router {
    /// Refuses as a full log group would once `feed_failures` holds an error.
    async fn check_feed(&self, feed: &crate::domain::shadow::Feed) -> Result<String> {
        match lock(&self.feed_failures).front() {
            Some(Error::Refused(why)) => Err(Error::Refused(why.clone())),
            _ => Ok(format!("/aws/lambda/{} can be fed", feed.function)),
        }
    }

    async fn open_feed(&self, feed: &crate::domain::shadow::Feed) -> Result<()> {
        if let Some(e) = lock(&self.feed_failures).pop_front() {
            return Err(e);
        }
        let name = feed.filter_name();
        let mut feeds = lock(&self.feeds);
        if !feeds.contains(&name) {
            self.journal.record(format!("open_feed {}", feed.release));
            feeds.push(name);
        }
        Ok(())
    }

    async fn examples(
        &self,
        _feed: &crate::domain::shadow::Feed,
        _since_epoch: u64,
    ) -> Result<Vec<crate::domain::shadow::Example>> {
        Ok(lock(&self.examples).clone())
    }

    async fn check_replay(
        &self,
        source: &crate::domain::replay::Source,
        _feed: &crate::domain::shadow::Feed,
        _began_at: u64,
    ) -> Result<String> {
        match lock(&self.replay_sources).get(&source.to_string()) {
            Some(lines) => Ok(format!("{source}: {} requests", lines.len())),
            None => Err(Error::InvalidRelease(format!("replay: {source} does not exist"))),
        }
    }

    /// The cursor's offset counts lines here.
    async fn read_replay(
        &self,
        source: &crate::domain::replay::Source,
        _feed: &crate::domain::shadow::Feed,
        cursor: &crate::domain::replay::Cursor,
        _began_at: u64,
        max: usize,
    ) -> Result<crate::domain::replay::Slice> {
        let sources = lock(&self.replay_sources);
        let lines = sources
            .get(&source.to_string())
            .ok_or_else(|| Error::InvalidRelease(format!("replay: {source} does not exist")))?;
        let from = (cursor.offset as usize).min(lines.len());
        let to = from.saturating_add(max).min(lines.len());
        Ok(crate::domain::replay::Slice {
            lines: lines[from..to].to_vec(),
            skipped: 0,
            cursor: crate::domain::replay::Cursor { offset: to as u64, ..Default::default() },
            exhausted: to == lines.len(),
        })
    }

    async fn dispatch_replay(&self, batches: &[crate::domain::replay::ReplayBatch]) -> Result<()> {
        if let Some(e) = lock(&self.feed_failures).pop_front() {
            return Err(e);
        }
        let lines: usize = batches.iter().map(|b| b.lines.len()).sum();
        self.journal.record(format!("dispatch_replay {lines} lines in {} batches", batches.len()));
        lock(&self.dispatched).extend(batches.iter().cloned());
        Ok(())
    }

    async fn close_feed(&self, feed: &crate::domain::shadow::Feed) -> Result<()> {
        let name = feed.filter_name();
        let mut feeds = lock(&self.feeds);
        if feeds.contains(&name) {
            self.journal.record(format!("close_feed {}", feed.release));
            feeds.retain(|f| f != &name);
        }
        Ok(())
    }
}
