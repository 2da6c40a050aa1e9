//! The simulated world `make simulate` measures the judge in: synthetic traffic driving
//! the real stepper tick, exactly as the state machine drives it (tick, wait
//! `wait_seconds`, tick again, until it promotes or rolls back).
//!
//! Between ticks, Poisson requests arrive at the stage's share, each with an error draw,
//! a latency, and the AI metrics a model handler publishes: output tokens, response
//! length, a schema-failure flag, and (for a tenth of requests) feedback that may be a
//! thumbs-down. The ports are in memory: the router holds the split, the metric source
//! answers each tick's GetMetricData as CloudWatch would for the window asked (sums of
//! counts; percentiles of the window's values, drawn as order statistics of that many
//! values). A library, so tests can hold other figures (the plan's power) to it.

use std::sync::Mutex;

use coalmine::domain::metrics::{CustomGate, MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use coalmine::memory::{Alarms, Outbox, Router};
use coalmine::ports::{MetricQuery, MetricSource};
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::{StepDeps, Tick};
use coalmine::release::judge::evalues::inverse_normal_cdf;
use coalmine::release::judge::fixed::standard_normal_cdf;
use coalmine::release::judge::gates::JudgeKind;
use coalmine::{Result, Split, Target};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Beta, Binomial, Distribution, Normal, Poisson};
use serde_json::{json, Value};

pub mod replay;
pub mod shadow;
pub mod users;

use users::{Population, Routing};

const T0: u64 = 1_800_000_000;
const EXECUTION: &str = "arn:aws:states:us-east-1:000000000000:execution:simulate:release";
pub const TRAFFIC: [f64; 3] = [100.0, 1000.0, 10_000.0];

/// Latency: lognormal, median 400 ms, sigma 0.5 (p95 910 ms).
pub const LATENCY_MEDIAN_MS: f64 = 400.0;
pub const LATENCY_SIGMA: f64 = 0.5;
/// Output tokens per request: lognormal, median 400.
pub const TOKENS_MEDIAN: f64 = 400.0;
/// Response length in characters: lognormal, median 1 200, sigma 0.6.
pub const LENGTH_MEDIAN: f64 = 1200.0;
pub const LENGTH_SIGMA: f64 = 0.6;
/// The stable's share of answers that fail the output schema.
pub const SCHEMA_FAILURE_RATE: f64 = 0.02;
/// Requests that get feedback, and the stable's share of it that is a thumbs-down.
pub const FEEDBACK_RATE: f64 = 0.1;
pub const THUMBS_DOWN_RATE: f64 = 0.2;

/// How a release is staged, and the stable it is compared against.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub stable_error_rate: f64,
    /// (percent, bake seconds)
    pub stages: &'static [(u32, u64)],
    pub check_every_seconds: u64,
}

/// The sample `lambda-ai-handler-42.json`'s shape.
pub const SAMPLE: Shape = Shape {
    name: "A (the sample: 5/25/50/100 %, bakes 15/15/15/10 min, a check a minute, stable errors 0.5%)",
    stable_error_rate: 0.005,
    stages: &[(5, 900), (25, 900), (50, 900), (100, 600)],
    check_every_seconds: 60,
};

/// A second, differently shaped release: noisier stable, shorter bakes, quicker checks.
pub const BRISK: Shape = Shape {
    name: "B (5/25/50/100 %, bakes of 10 min, a check every 30 s, stable errors 1%)",
    stable_error_rate: 0.01,
    stages: &[(5, 600), (25, 600), (50, 600), (100, 600)],
    check_every_seconds: 30,
};

/// How a release is judged, beyond its shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setup {
    pub name: &'static str,
    pub judge: JudgeKind,
    /// `max_error_rate_ratio`; `None`: the default (any regression counts).
    pub error_rate_ratio: Option<f64>,
    /// Every stage but the last `until_conclusive`, at most this many times its fixed bake.
    pub until_conclusive: Option<u64>,
    /// The AI gates (tokens, response length, schema failures, thumbs-down) on.
    pub ai_gates: bool,
}

pub const DEFAULTS: Setup = Setup {
    name: "defaults",
    judge: JudgeKind::Sequential,
    error_rate_ratio: None,
    until_conclusive: None,
    ai_gates: true,
};
pub const RATIO: Setup = Setup { name: "max_error_rate_ratio 1.2", error_rate_ratio: Some(1.2), ..DEFAULTS };
pub const RATIO_UNTIL_CONCLUSIVE: Setup = Setup {
    name: "max_error_rate_ratio 1.2, until conclusive (at most 2x each bake)",
    error_rate_ratio: Some(1.2),
    until_conclusive: Some(2),
    ..DEFAULTS
};
pub const FIXED_HORIZON: Setup = Setup {
    name: "fixed-horizon (the old judge, no AI gates)",
    judge: JudgeKind::FixedHorizon,
    error_rate_ratio: None,
    until_conclusive: None,
    ai_gates: false,
};

/// What the canary does differently from the stable: factors on each quantity.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub errors: f64,
    pub latency: f64,
    pub tokens: f64,
    /// Sigma of log tokens, both sides: 0.5, or 1.0 for token counts' heavy tails.
    pub tokens_sigma: f64,
    pub length: f64,
    pub schema: f64,
    pub thumbs_down: f64,
}

impl Scenario {
    pub const HEALTHY: Scenario = Scenario {
        name: "healthy (A/A)",
        errors: 1.0,
        latency: 1.0,
        tokens: 1.0,
        tokens_sigma: 0.5,
        length: 1.0,
        schema: 1.0,
        thumbs_down: 1.0,
    };

    /// Whether the canary is worse than the release's tolerances (a rollback is right).
    pub fn is_bad(&self) -> bool {
        self.errors > 1.0
            || self.latency > 1.2
            || self.tokens > 1.2
            || self.length < 0.75
            || self.schema > 1.5
            || self.thumbs_down > 1.5
    }
}

/// A release of `shape` judged by `setup`: the sample's base gates, and with `ai_gates`
/// one gate of each AI kind.
pub fn release(shape: &Shape, setup: &Setup) -> Release {
    let sample: Value = serde_json::from_str(include_str!("../../../events/releases/lambda-ai-handler-42.json"))
        .expect("sample release");
    let last = shape.stages.len() - 1;
    let stages: Vec<Value> = shape
        .stages
        .iter()
        .enumerate()
        .map(|(i, (percent, bake))| match setup.until_conclusive {
            Some(times) if i < last => {
                json!({"percent": percent, "bake": "until_conclusive", "max_bake_seconds": bake * times})
            }
            _ => json!({"percent": percent, "bake_seconds": bake}),
        })
        .collect();
    let mut gates = json!({
        "max_error_rate": 0.05, "max_p95_latency_ms": 10000, "max_p95_increase_ratio": 0.2,
        "min_requests": 100, "on_insufficient_data": "hold", "max_hold_seconds": 1800
    });
    if let Some(ratio) = setup.error_rate_ratio {
        gates["max_error_rate_ratio"] = json!(ratio);
    }
    if setup.until_conclusive.is_some() {
        // At a stage's longest bake without a conclusion: go on, as a team would.
        gates["on_insufficient_data"] = json!("proceed");
    }
    if setup.judge == JudgeKind::FixedHorizon {
        gates["judge"] = json!("fixed_horizon");
        gates["max_error_rate_increase"] = json!(0.01);
    }
    if setup.ai_gates {
        gates["custom"] = ai_gates();
    }
    let release = json!({
        "release": "simulated", "target": sample["target"], "canary_version": sample["canary_version"],
        "stages": stages, "check_every_seconds": shape.check_every_seconds, "gates": gates
    });
    Release::parse(&release).expect("the simulated release is valid")
}

/// One gate of each AI kind, in the order [`World`] answers them.
pub fn ai_gates() -> Value {
    let per_version = json!({"FunctionName": "ai-handler", "Version": "{version}"});
    json!([
        {"namespace": "AIService", "metric": "OutputTokens", "stat": "Average", "dimensions": per_version,
         "max_increase_ratio": 0.2},
        {"namespace": "AIService", "metric": "ResponseLength", "stat": "p50", "dimensions": per_version,
         "direction": "either", "max_increase_ratio": 0.25, "max_decrease_ratio": 0.25},
        {"namespace": "AIService", "metric": "SchemaFailures", "stat": "Sum", "dimensions": per_version,
         "per": "requests", "max_increase_ratio": 0.5},
        {"namespace": "AIService", "metric": "ThumbsDown", "stat": "Sum", "dimensions": per_version,
         "per": {"namespace": "AIService", "metric": "Feedback", "dimensions": per_version},
         "max_increase_ratio": 0.5}
    ])
}

/// One side's traffic between two ticks.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    requests: f64,
    errors: f64,
    schema_failures: f64,
    feedback: f64,
    thumbs_down: f64,
    /// With users: their offsets on log latency and log tokens, over these requests.
    latency: users::Moments,
    tokens: users::Moments,
}

impl Counts {
    fn plus(self, o: Counts) -> Counts {
        Counts {
            requests: self.requests + o.requests,
            errors: self.errors + o.errors,
            schema_failures: self.schema_failures + o.schema_failures,
            feedback: self.feedback + o.feedback,
            thumbs_down: self.thumbs_down + o.thumbs_down,
            latency: self.latency.plus(o.latency),
            tokens: self.tokens.plus(o.tokens),
        }
    }
}

/// One block of traffic between two ticks, at one weight.
#[derive(Clone, Debug, Default)]
struct Block {
    from: u64,
    to: u64,
    canary: Counts,
    stable: Counts,
    /// With users: both sides in each of the router's replicate groups.
    groups: Vec<(Counts, Counts)>,
}

/// The simulated world of one release: its traffic so far, and the alias in memory.
pub struct World {
    rng: Mutex<SmallRng>,
    router: Router,
    release: Release,
    blocks: Mutex<Vec<Block>>,
    traffic: f64,
    scenario: Scenario,
    shape: Shape,
    canary: String,
    /// Traffic from these users (a cohort release's world) rather than independent requests.
    users: Option<Population>,
    /// Whether the metric source answers in replicate groups, as it does for a cohort
    /// release (the judge then takes units as the draw); without, the judge counts
    /// requests as independent, as it did before decision 0021.
    replicated: bool,
}

/// A lognormal of `median` and `sigma`, scaled by `factor`.
#[derive(Clone, Copy)]
struct LogNormal {
    median: f64,
    sigma: f64,
}

impl LogNormal {
    fn quantile(&self, u: f64) -> f64 {
        self.median * (self.sigma * inverse_normal_cdf(u)).exp()
    }

    /// The mean of `n` values, drawn from its normal approximation.
    fn sample_mean(&self, rng: &mut SmallRng, n: f64) -> f64 {
        let s2 = self.sigma * self.sigma;
        let mean = self.median * (s2 / 2.0).exp();
        let sd = mean * (s2.exp() - 1.0).sqrt() / n.sqrt();
        Normal::new(mean, sd).map(|d| d.sample(rng)).unwrap_or(mean).max(0.0)
    }
}

impl World {
    fn canary_weight(&self) -> f64 {
        let split = self.router.split(&self.release.target);
        if split.stable == self.canary {
            1.0
        } else {
            split.canary_weight
        }
    }

    fn side(&self, rng: &mut SmallRng, requests: f64, canary: bool) -> Counts {
        let s = if canary { self.scenario } else { Scenario::HEALTHY };
        let feedback = binomial(rng, requests, FEEDBACK_RATE);
        Counts {
            requests,
            errors: binomial(rng, requests, self.shape.stable_error_rate * s.errors),
            schema_failures: binomial(rng, requests, SCHEMA_FAILURE_RATE * s.schema),
            feedback,
            thumbs_down: binomial(rng, feedback, THUMBS_DOWN_RATE * s.thumbs_down),
            ..Counts::default()
        }
    }

    /// Traffic from `from` to `to` at the live weight; returns the canary's bad requests
    /// (errors, or requests past 1.2x the stable's p95) in it.
    fn flow(&self, from: u64, to: u64) -> f64 {
        let weight = self.canary_weight();
        let minutes = (to - from) as f64 / 60.0;
        let mut rng = self.rng.lock().unwrap();
        let (canary, stable, groups) = match &self.users {
            None => {
                let canary_requests = poisson(&mut rng, self.traffic * weight * minutes);
                let stable_requests = poisson(&mut rng, self.traffic * (1.0 - weight) * minutes);
                let sides = (self.side(&mut rng, canary_requests, true), self.side(&mut rng, stable_requests, false));
                (sides.0, sides.1, Vec::new())
            }
            Some(users) => {
                // Each user's requests and errors; the rest of what a request carries is drawn
                // per request as before.
                let with = |served: users::Served, counts: Counts| Counts {
                    errors: served.errors,
                    latency: served.latency,
                    tokens: served.tokens,
                    ..counts
                };
                let groups: Vec<(Counts, Counts)> = users
                    .serve(&mut rng, weight, minutes, self.scenario.errors)
                    .into_iter()
                    .map(|(c, s)| {
                        (
                            with(c, self.side(&mut rng, c.requests, true)),
                            with(s, self.side(&mut rng, s.requests, false)),
                        )
                    })
                    .collect();
                let (canary, stable) = groups
                    .iter()
                    .fold(Default::default(), |(c, s): (Counts, Counts), (gc, gs)| (c.plus(*gc), s.plus(*gs)));
                (canary, stable, groups)
            }
        };
        let canary_requests = canary.requests;
        let bad = if self.scenario.errors > 1.0 {
            canary.errors
        } else {
            binomial(&mut rng, canary_requests, slow_share(self.scenario.latency))
        };
        self.blocks.lock().unwrap().push(Block { from, to, canary, stable, groups });
        bad
    }

    fn tokens(&self, canary: bool, c: &Counts) -> LogNormal {
        let factor = if canary { self.scenario.tokens } else { 1.0 };
        by_users(LogNormal { median: TOKENS_MEDIAN * factor, sigma: self.scenario.tokens_sigma }, c, &c.tokens)
    }

    fn length(&self, canary: bool) -> LogNormal {
        let factor = if canary { self.scenario.length } else { 1.0 };
        LogNormal { median: LENGTH_MEDIAN * factor, sigma: LENGTH_SIGMA }
    }

    /// What CloudWatch answers for one side over a window of `c`.
    fn metrics(&self, rng: &mut SmallRng, c: Counts, canary: bool, gates: &[CustomGate]) -> SideMetrics {
        let factor = if canary { self.scenario.latency } else { 1.0 };
        let latency = by_users(LogNormal { median: LATENCY_MEDIAN_MS * factor, sigma: LATENCY_SIGMA }, &c, &c.latency);
        let percentiles = order_statistics(rng, c.requests, &PERCENTILE_LEVELS, latency);
        let mut side = SideMetrics {
            requests: c.requests,
            errors: c.errors,
            p95_ms: percentiles[3],
            percentiles,
            ..Default::default()
        };
        for gate in gates {
            let some = |v: f64| (c.requests > 0.0).then_some(v);
            let (value, count, grid) = match gate.metric.as_str() {
                "OutputTokens" | "ResponseLength" => {
                    let values =
                        if gate.metric == "OutputTokens" { self.tokens(canary, &c) } else { self.length(canary) };
                    let levels = gate.levels();
                    let grid = order_statistics(rng, c.requests, &levels, values);
                    let median = levels.iter().position(|l| *l == 50.0).and_then(|at| grid[at]);
                    let value = if gate.stat == "Average" { some(values.sample_mean(rng, c.requests)) } else { median };
                    (value, some(c.requests), grid)
                }
                "SchemaFailures" => (some(c.schema_failures), None, Vec::new()),
                "ThumbsDown" => (some(c.thumbs_down), (c.feedback > 0.0).then_some(c.feedback), Vec::new()),
                other => unreachable!("the simulation publishes no {other}"),
            };
            side.custom.push(value);
            side.custom_counts.push(count);
            side.custom_percentiles.push(grid);
        }
        side
    }
}

/// A side's values as a mixture over its users: the lognormal moved by their mean log
/// offset and widened by its spread. Without users (independent requests) unchanged.
fn by_users(values: LogNormal, c: &Counts, offsets: &users::Moments) -> LogNormal {
    if *offsets == users::Moments::default() {
        return values;
    }
    let (mean, variance) = offsets.mean_and_variance(c.requests);
    LogNormal { median: values.median * mean.exp(), sigma: (values.sigma * values.sigma + variance).sqrt() }
}

fn poisson(rng: &mut SmallRng, mean: f64) -> f64 {
    if mean > 0.0 {
        Poisson::new(mean).map(|p| p.sample(rng)).unwrap_or(0.0)
    } else {
        0.0
    }
}

fn binomial(rng: &mut SmallRng, n: f64, p: f64) -> f64 {
    Binomial::new(n as u64, p.clamp(0.0, 1.0)).map(|b| b.sample(rng) as f64).unwrap_or(0.0)
}

/// The share of a canary `factor` times slower than the stable past 1.2x the stable's p95.
fn slow_share(factor: f64) -> f64 {
    let z = inverse_normal_cdf(0.95) + (1.2 / factor).ln() / LATENCY_SIGMA;
    1.0 - standard_normal_cdf(z)
}

/// Values at `levels` over `n` draws: each level's order statistic, drawn from its beta
/// distribution and mapped through the quantile function.
fn order_statistics(rng: &mut SmallRng, n: f64, levels: &[f64], values: LogNormal) -> Vec<Option<f64>> {
    if n < 1.0 {
        return vec![None; levels.len()];
    }
    let mut us: Vec<f64> = levels
        .iter()
        .map(|level| {
            let k = (level / 100.0 * n).ceil().clamp(1.0, n);
            Beta::new(k, n - k + 1.0).map(|b| b.sample(rng)).unwrap_or(level / 100.0)
        })
        .collect();
    us.sort_by(f64::total_cmp);
    us.iter().map(|u| Some(values.quantile(*u))).collect()
}

impl MetricSource for World {
    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        let blocks = self.blocks.lock().unwrap();
        let window: Vec<&Block> = blocks.iter().filter(|b| b.from >= q.start_epoch && b.to <= q.end_epoch).collect();
        let (canary, stable) =
            window.iter().fold(<(Counts, Counts)>::default(), |(c, s), b| (c.plus(b.canary), s.plus(b.stable)));
        let mut rng = self.rng.lock().unwrap();
        let mut canary = self.metrics(&mut rng, canary, true, q.custom);
        let mut stable = self.metrics(&mut rng, stable, false, q.custom);
        if self.replicated {
            for g in 0..coalmine_router::REPLICATES as usize {
                let (c, s) = window
                    .iter()
                    .filter_map(|b| b.groups.get(g))
                    .fold(<(Counts, Counts)>::default(), |(c, s), (gc, gs)| (c.plus(*gc), s.plus(*gs)));
                canary.replicates.push(self.metrics(&mut rng, c, true, q.custom));
                stable.replicates.push(self.metrics(&mut rng, s, false, q.custom));
            }
        }
        Ok(MetricSnapshot { canary, stable, pinned: None })
    }

    /// Before the release, the stable served the whole traffic for as long as asked.
    async fn requests_per_minute(&self, _: &Target, _: &str, start: u64, end: u64) -> Result<Vec<(u64, f64)>> {
        Ok((start.div_ceil(60)..end / 60).map(|minute| (minute * 60, self.traffic)).collect())
    }
}

/// How one simulated release ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub rolled_back: bool,
    pub minutes: f64,
    /// The canary's bad requests served before the end: errors, or slow requests.
    pub bad: f64,
    /// Why it ended, as the release says it.
    pub reason: String,
}

/// One release of `release` (of `shape`) at `traffic` requests a minute.
pub fn simulate(
    release: &Release,
    shape: &Shape,
    traffic: f64,
    scenario: Scenario,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> Outcome {
    drive(World::new(release, shape, traffic, scenario, seed, None), release, runtime)
}

/// Who the users of a cohort cell are: how many are active, how they are routed, and
/// whether the judge sees them as units (the router's replicate groups) or only their
/// requests.
#[derive(Clone, Copy, Debug)]
pub struct Cohort {
    pub users: usize,
    pub routing: Routing,
    pub by_units: bool,
}

/// One release whose `traffic` requests a minute come from `cohort`'s users, a new
/// population each release.
pub fn simulate_users(
    release: &Release,
    shape: &Shape,
    traffic: f64,
    cohort: Cohort,
    scenario: Scenario,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(seed.rotate_left(17) ^ 0xc0407);
    let name = format!("{}-{seed}", release.release);
    let population = Population::draw(&mut rng, &name, cohort.users, traffic, shape.stable_error_rate, cohort.routing);
    let world =
        World { replicated: cohort.by_units, ..World::new(release, shape, traffic, scenario, seed, Some(population)) };
    drive(world, release, runtime)
}

/// Releases `0..releases` of one cohort cell, spread over the machine's cores.
pub fn run_users_cell(
    release: &Release,
    shape: &Shape,
    traffic: f64,
    cohort: Cohort,
    scenario: Scenario,
    seeds: u64,
    releases: usize,
) -> Vec<Outcome> {
    in_parallel(releases, |i, runtime| {
        simulate_users(release, shape, traffic, cohort, scenario, seeds ^ i as u64, runtime)
    })
}

impl World {
    fn new(
        release: &Release,
        shape: &Shape,
        traffic: f64,
        scenario: Scenario,
        seed: u64,
        users: Option<Population>,
    ) -> World {
        World {
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            router: Router::with([(release.target.clone(), Split::stable_only("41", None))]),
            release: release.clone(),
            blocks: Mutex::new(Vec::new()),
            traffic,
            scenario,
            shape: *shape,
            canary: release.canary_id().to_owned(),
            users,
            replicated: false,
        }
    }
}

/// The state machine's loop: tick, wait, tick again, until the release ends.
fn drive(world: World, release: &Release, runtime: &tokio::runtime::Runtime) -> Outcome {
    let (notifier, alarms) = (Outbox::default(), Alarms::default());
    let deps = StepDeps::new(&world.router, &notifier, &alarms, &world);
    let mut now = T0;
    let mut progress = None;
    let mut bad = 0.0;
    loop {
        let tick = Tick { release, execution: EXECUTION, deps: &deps, now };
        let p = runtime.block_on(tick.step(progress)).expect("a simulated tick cannot fail");
        if matches!(p.status, Status::Promoted | Status::RolledBack) {
            let rolled_back = p.status == Status::RolledBack;
            return Outcome { rolled_back, minutes: (now - T0) as f64 / 60.0, bad, reason: p.reason };
        }
        let next = now + p.wait_seconds.max(1);
        bad += world.flow(now, next);
        now = next;
        progress = Some(p);
    }
}

/// Releases `0..releases` of one cell, spread over the machine's cores.
pub fn run_cell(
    release: &Release,
    shape: &Shape,
    traffic: f64,
    scenario: Scenario,
    seeds: u64,
    releases: usize,
) -> Vec<Outcome> {
    in_parallel(releases, |i, runtime| simulate(release, shape, traffic, scenario, seeds ^ i as u64, runtime))
}

/// `run(i, runtime)` for `i` in `0..n`, spread over the machine's cores, each thread
/// with a runtime of its own (the order of the results is not `i`'s).
fn in_parallel<T: Send>(n: usize, run: impl Fn(usize, &tokio::runtime::Runtime) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let results = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (results, run) = (&results, &run);
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                let mine: Vec<T> = (thread..n).step_by(threads).map(|i| run(i, &runtime)).collect();
                results.lock().unwrap().extend(mine);
            });
        }
    });
    results.into_inner().unwrap()
}

/// What the plan says a release of `shape` can see at `traffic`: the stable as the
/// simulation's stable is, its percentiles exact.
pub fn planned_power(release: &Release, shape: &Shape, traffic: f64) -> Option<coalmine::release::judge::power::Power> {
    let latency = LogNormal { median: LATENCY_MEDIAN_MS, sigma: LATENCY_SIGMA };
    let percentiles: Vec<Option<f64>> = PERCENTILE_LEVELS.iter().map(|l| Some(latency.quantile(l / 100.0))).collect();
    let requests = traffic * 60.0;
    let stable = SideMetrics {
        requests,
        errors: requests * shape.stable_error_rate,
        p95_ms: percentiles[3],
        percentiles,
        ..Default::default()
    };
    let stages: Vec<(f64, u64)> = release.stages.iter().map(|s| (s.weight(), s.longest_bake())).collect();
    let traffic = coalmine::release::judge::power::Traffic {
        per_minute: traffic,
        stable: &stable,
        stages: &stages,
        design_effect: 1.0,
    };
    coalmine::release::judge::power::power(&release.gates, &traffic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolled_back(shape: &Shape, scenario: Scenario, releases: usize) -> usize {
        let release = release(shape, &DEFAULTS);
        run_cell(&release, shape, 1000.0, scenario, 0x7e57, releases).iter().filter(|o| o.rolled_back).count()
    }

    #[test]
    fn doubled_tokens_per_request_are_caught_and_a_healthy_canary_is_not() {
        let doubled = Scenario { tokens: 2.0, ..Scenario::HEALTHY };
        assert!(rolled_back(&BRISK, doubled, 40) >= 38, "2x tokens at 1000 req/min is caught in the first stage");
        // At a 1% false rollback rate, 3 of 40 happens with probability 0.8%.
        assert!(rolled_back(&BRISK, Scenario::HEALTHY, 40) <= 2, "a healthy canary is promoted");
    }

    /// The plan's 80%-power figures, held to the simulated releases: at the smallest
    /// regression the plan says the release sees, the simulation catches most.
    #[test]
    fn the_plans_power_is_what_the_simulation_catches() {
        for shape in [SAMPLE, BRISK] {
            let release = release(&shape, &DEFAULTS);
            let power = planned_power(&release, &shape, 1000.0).expect("sequential");
            let ratio = power.release.error_ratio.expect("1000 req/min sees some error-rate ratio");
            let shift = power.release.latency_shift.expect("and some latency shift");
            let caught = |scenario: Scenario| {
                let outcomes = run_cell(&release, &shape, 1000.0, scenario, 0x90e5, 300);
                outcomes.iter().filter(|o| o.rolled_back).count() as f64 / outcomes.len() as f64
            };
            let errors = caught(Scenario { errors: ratio, ..Scenario::HEALTHY });
            let latency = caught(Scenario { latency: shift, ..Scenario::HEALTHY });
            let tolerance = 1.0 + release.gates.max_p95_increase_ratio.expect("a latency tolerance");
            let halfway = tolerance + (shift - tolerance) / 2.0;
            let latency_halfway = caught(Scenario { latency: halfway, ..Scenario::HEALTHY });
            eprintln!(
                "shape {}: {ratio}x errors caught {errors}, {shift}x latency {latency}, {halfway}x {latency_halfway}",
                &shape.name[..1]
            );
            // The judge looks at every check, the plan only at the stages' ends: the
            // simulation catches at least 80% (less sampling error), and not so much
            // more that a regression halfway to the tolerance would do.
            assert!((0.72..=0.97).contains(&errors), "shape {}: errors caught {errors}", &shape.name[..1]);
            assert!(latency >= 0.72, "shape {}: latency caught {latency}", &shape.name[..1]);
            assert!(latency_halfway < 0.8, "shape {}: half the shift caught {latency_halfway}", &shape.name[..1]);
        }
    }

    #[test]
    fn a_cohort_world_answers_in_sixteen_groups_of_users_that_add_up_to_its_sides() {
        let release = release(&SAMPLE, &DEFAULTS);
        let mut rng = SmallRng::seed_from_u64(3);
        let population = Population::draw(&mut rng, "r", 500, 1000.0, 0.005, Routing::Sticky);
        let quarter = Split { canary: Some("42".into()), ..Split::stable_only("41", None) }.with_canary_weight(0.25);
        let world = World {
            replicated: true,
            router: Router::with([(release.target.clone(), quarter)]),
            ..World::new(&release, &SAMPLE, 1000.0, Scenario::HEALTHY, 3, Some(population))
        };
        world.flow(T0, T0 + 600);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let query = MetricQuery {
            target: &release.target,
            canary: "42",
            stable: "41",
            start_epoch: T0,
            end_epoch: T0 + 600,
            custom: &release.gates.custom,
            configs: None,
            shadow_of: None,
            pins: false,
        };
        let snapshot = runtime.block_on(world.fetch(&query)).unwrap();
        for side in [&snapshot.canary, &snapshot.stable] {
            assert_eq!(side.replicates.len(), 16);
            let sum = |f: fn(&SideMetrics) -> f64| side.replicates.iter().map(f).sum::<f64>();
            assert_eq!(sum(|g| g.requests), side.requests);
            assert_eq!(sum(|g| g.errors), side.errors);
            assert!(side.replicates.iter().filter(|g| g.requests > 0.0).count() >= 8, "users spread over the groups");
        }
        assert!(snapshot.canary.requests > 0.0 && snapshot.stable.requests > snapshot.canary.requests);
    }

    #[test]
    fn a_healthy_cohort_judged_by_its_users_is_promoted_where_a_request_judge_rolls_it_back() {
        let release = release(&SAMPLE, &DEFAULTS);
        let by_a_test = |by_units: bool| {
            let cohort = Cohort { users: 500, routing: Routing::Sticky, by_units };
            let outcomes = run_users_cell(&release, &SAMPLE, 10_000.0, cohort, Scenario::HEALTHY, 0x5eed, 60);
            outcomes.iter().filter(|o| o.rolled_back && !o.reason.contains("holding")).count()
        };
        // Judged by requests, about a third of these are rolled back (SIMULATION.md).
        assert!(by_a_test(false) >= 10, "the same traffic counted as independent requests");
        assert!(by_a_test(true) <= 1, "judged with users as the draw");
    }

    #[test]
    fn a_sides_latency_is_its_users_mixture_and_independent_requests_are_left_as_they_were() {
        let base = LogNormal { median: 400.0, sigma: 0.5 };
        let plain = Counts { requests: 100.0, ..Counts::default() };
        let same = by_users(base, &plain, &plain.latency);
        assert_eq!((same.median, same.sigma), (400.0, 0.5), "no users: the request model's values, bit for bit");
        // Half the requests from a user 0.3 above, half from one 0.1 below: mean +0.1, spread 0.2.
        let offsets = users::Moments { sum: 50.0 * 0.3 - 50.0 * 0.1, squares: 50.0 * 0.09 + 50.0 * 0.01 };
        let mixed = by_users(base, &Counts { latency: offsets, ..plain }, &offsets);
        assert!((mixed.median - 400.0 * 0.1f64.exp()).abs() < 1e-9, "{}", mixed.median);
        assert!((mixed.sigma - (0.25f64 + 0.04).sqrt()).abs() < 1e-9, "{}", mixed.sigma);
    }

    #[test]
    fn the_ai_gates_read_what_the_world_publishes() {
        let release = release(&SAMPLE, &DEFAULTS);
        let world = World::new(&release, &SAMPLE, 1000.0, Scenario { schema: 2.0, ..Scenario::HEALTHY }, 1, None);
        world.flow(0, 600);
        let q = MetricQuery {
            target: &release.target,
            canary: "42",
            stable: "41",
            start_epoch: 0,
            end_epoch: 600,
            custom: &release.gates.custom,
            configs: None,
            shadow_of: None,
            pins: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let stable = runtime.block_on(world.fetch(&q)).unwrap().stable;
        assert_eq!(stable.requests, stable.custom_counts[0].unwrap(), "one token count per request");
        let median = stable.custom_percentiles[1][5].unwrap();
        assert!((median / LENGTH_MEDIAN - 1.0).abs() < 0.05, "response length median {median} near {LENGTH_MEDIAN}");
        let schema = stable.custom[2].unwrap() / stable.requests;
        assert!((schema - SCHEMA_FAILURE_RATE).abs() < 0.005, "schema failures per request {schema}");
        let thumbs = stable.custom[3].unwrap() / stable.custom_counts[3].unwrap();
        assert!((thumbs - THUMBS_DOWN_RATE).abs() < 0.03, "thumbs-down per feedback {thumbs}");
    }
}
