//! A replay before users (decision 0023), simulated: the real tick, with its real reads
//! of the source and hand-offs to the shadow function (the in-memory router's), over the
//! shadow function's counts as CloudWatch would hold them.
//!
//! The source is as unkind as a golden set is. Its requests come in clusters of
//! near-duplicates, the clusters' sizes heavy-tailed (Pareto, alpha 1.2, up to 300) and
//! each cluster contiguous in the file, so a check's slice is correlated. Whether the
//! stable disagrees with itself on a request is its cluster's property, not a fresh
//! draw (a quarter of the clusters are ambiguous, at four times the noise floor; the rest
//! never), and so is what fails: one cluster in twenty makes the model fail one time in
//! ten (0.5% in all). A regressed candidate gets whole clusters wrong. The counts of a
//! hand-off arrive 5 to 60 s after it (the shadow function's invocation, then
//! CloudWatch), and 2% of hand-offs are lost (throttled past the event's age).

use std::sync::Mutex;

use coalmine::domain::metrics::{MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use coalmine::domain::replay::ReplayLine;
use coalmine::memory::{Alarms, Outbox, Router};
use coalmine::ports::{MetricQuery, MetricSource};
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::{StepDeps, Tick};
use coalmine::{Result, Split, Target};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{order_statistics, LogNormal, EXECUTION, LATENCY_MEDIAN_MS, LATENCY_SIGMA, T0};

/// The golden set's place, as the release names it.
const SOURCE: &str = "s3://evals/golden.jsonl";
/// A quarter of the clusters are ambiguous.
const AMBIGUOUS_SHARE: f64 = 0.25;
/// One cluster in twenty fails one time in ten: 0.5% of requests.
const FAILING_SHARE: f64 = 0.05;
const FAILING_RATE: f64 = 0.1;
const LOST_HANDOFFS: f64 = 0.02;

/// What the candidate does, against a stable whose clusters disagree with themselves at
/// a noise floor of `noise_floor` in all.
#[derive(Clone, Copy, Debug)]
pub struct ReplayScenario {
    pub name: &'static str,
    pub noise_floor: f64,
    /// Clusters the candidate gets wrong on every request, as a share of the clusters
    /// (the noise floor's worth doubles the disagreement rate).
    pub regressed_clusters: f64,
    /// The candidate's failure rate in the failing clusters, as a multiple of the stable's;
    pub errors: f64,
    /// Requests in clusters of near-duplicates (the unkind set); `false`: every request
    /// its own, as the plan's power figures assume.
    pub clustered: bool,
}

impl ReplayScenario {
    pub const fn healthy(noise_floor: f64) -> Self {
        ReplayScenario { name: "healthy", noise_floor, regressed_clusters: 0.0, errors: 1.0, clustered: true }
    }
    pub const fn doubled_disagreement(noise_floor: f64) -> Self {
        ReplayScenario {
            name: "2x disagreement",
            noise_floor,
            regressed_clusters: noise_floor,
            errors: 1.0,
            clustered: true,
        }
    }
    pub const fn doubled_errors(noise_floor: f64) -> Self {
        ReplayScenario { name: "2x errors", noise_floor, regressed_clusters: 0.0, errors: 2.0, clustered: true }
    }
}

/// A release that replays `requests` golden requests at 20 a second, checked every
/// minute, allowed to disagree half as often again as the stable does with itself, on
/// the gates of the shadow's simulation.
pub fn replayed_release(requests: u64) -> Release {
    Release::parse(&json!({
        "release": "simulated-replay",
        "target": {"lambda": {"function": "ai-classifier", "alias": "live"}},
        "canary_version": "42",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 60,
        "gates": {"max_error_rate_ratio": 1.2, "max_p95_increase_ratio": 0.2, "min_requests": 100},
        "replay": {"source": {"s3": {"bucket": "evals", "key": "golden.jsonl"}}, "requests": requests,
                   "rate_per_second": 20, "compare": {"label": {"pointer": "/label"}},
                   "max_disagreement_increase_ratio": 0.5}
    }))
    .expect("the simulated replayed release is valid")
}

/// One request of the golden set, as its cluster makes it.
#[derive(Clone, Copy)]
struct Item {
    /// How often the stable disagrees with itself on it.
    ambiguity: f64,
    /// The candidate gets it wrong every time.
    regressed: bool,
    /// How often the stable fails on it.
    failing: f64,
}

fn golden_set(rng: &mut SmallRng, n: usize, s: ReplayScenario) -> Vec<Item> {
    let mut items = Vec::with_capacity(n);
    while items.len() < n {
        let size = if s.clustered { (rng.random::<f64>().powf(-1.0 / 1.2).floor() as usize).clamp(1, 300) } else { 1 };
        let item = Item {
            ambiguity: if rng.random::<f64>() < AMBIGUOUS_SHARE { s.noise_floor / AMBIGUOUS_SHARE } else { 0.0 },
            regressed: rng.random::<f64>() < s.regressed_clusters,
            failing: if rng.random::<f64>() < FAILING_SHARE { FAILING_RATE } else { 0.0 },
        };
        items.extend(std::iter::repeat_n(item, size.min(n - items.len())));
    }
    items
}

#[derive(Clone, Copy, Default)]
struct Counts {
    asked: f64,
    errors: f64,
    compared: f64,
    disagreements: f64,
}

struct ReplayWorld<'a> {
    router: &'a Router,
    items: Vec<Item>,
    scenario: ReplayScenario,
    rng: Mutex<SmallRng>,
    handed: Mutex<usize>,
    /// (when the counts arrive, the candidate's, the stable's asked again)
    blocks: Mutex<Vec<(u64, Counts, Counts)>>,
}

impl ReplayWorld<'_> {
    /// Answers the batches handed out since the last look, at `now`, as the shadow
    /// function would: the stable first for the reference, then both versions.
    fn answer_handed(&self, now: u64) {
        let batches = self.router.dispatched.lock().unwrap();
        let mut handed = self.handed.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        let mut blocks = self.blocks.lock().unwrap();
        for batch in &batches[*handed..] {
            if rng.random::<f64>() < LOST_HANDOFFS {
                continue;
            }
            let (mut candidate, mut stable) = (Counts::default(), Counts::default());
            for line in &batch.lines {
                let item = self.items[line.request["i"].as_u64().unwrap_or_default() as usize];
                if rng.random::<f64>() < item.failing {
                    continue; // no reference: skipped
                }
                let mut ask = |side: &mut Counts, failing: f64, disagreeing: f64| {
                    side.asked += 1.0;
                    if rng.random::<f64>() < failing {
                        side.errors += 1.0;
                    } else {
                        side.compared += 1.0;
                        side.disagreements += f64::from(u8::from(rng.random::<f64>() < disagreeing));
                    }
                };
                let wrong = if item.regressed { 1.0 } else { item.ambiguity };
                ask(&mut candidate, (item.failing * self.scenario.errors).min(1.0), wrong);
                ask(&mut stable, item.failing, item.ambiguity);
            }
            blocks.push((now + rng.random_range(5..=60), candidate, stable));
        }
        *handed = batches.len();
    }
}

impl MetricSource for ReplayWorld<'_> {
    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        self.answer_handed(q.end_epoch);
        let mut sums = [Counts::default(); 2];
        for (_, c, s) in self.blocks.lock().unwrap().iter().filter(|b| b.0 >= q.start_epoch && b.0 <= q.end_epoch) {
            for (sum, side) in sums.iter_mut().zip([c, s]) {
                sum.asked += side.asked;
                sum.errors += side.errors;
                sum.compared += side.compared;
                sum.disagreements += side.disagreements;
            }
        }
        let mut rng = self.rng.lock().unwrap();
        let latency = LogNormal { median: LATENCY_MEDIAN_MS, sigma: LATENCY_SIGMA };
        let mut side = |c: Counts| {
            let percentiles = order_statistics(&mut rng, c.compared, &PERCENTILE_LEVELS, latency);
            let some = |v: f64| (c.compared > 0.0).then_some(v);
            SideMetrics {
                requests: c.asked,
                errors: c.errors,
                p95_ms: percentiles[3],
                percentiles,
                custom: vec![some(c.disagreements); q.custom.len()],
                custom_counts: vec![some(c.compared); q.custom.len()],
                custom_percentiles: vec![Vec::new(); q.custom.len()],
                replicates: Vec::new(),
            }
        };
        let (canary, stable) = (side(sums[0]), side(sums[1]));
        Ok(MetricSnapshot { canary, stable, pinned: None })
    }

    async fn requests_per_minute(&self, _: &Target, _: &str, start: u64, end: u64) -> Result<Vec<(u64, f64)>> {
        Ok((start.div_ceil(60)..end / 60).map(|minute| (minute * 60, 100.0)).collect())
    }
}

/// How one simulated replay ended.
#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    pub rolled_back: bool,
    pub minutes: f64,
    pub reason: String,
}

/// One replay of a golden set of `size` requests.
pub fn simulate_replay(
    release: &Release,
    size: usize,
    scenario: ReplayScenario,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> ReplayOutcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let items = golden_set(&mut rng, size, scenario);
    let router = Router::with([(release.target.clone(), Split::stable_only("41", None))]);
    let lines = (0..size).map(|i| ReplayLine { request: json!({ "i": i }), response: None }).collect();
    router.replay_sources.lock().unwrap().insert(SOURCE.into(), lines);
    let world = ReplayWorld {
        router: &router,
        items,
        scenario,
        rng: Mutex::new(rng),
        handed: Mutex::new(0),
        blocks: Mutex::new(Vec::new()),
    };
    let (notifier, alarms) = (Outbox::default(), Alarms::default());
    let deps = StepDeps::new(&router, &notifier, &alarms, &world);
    let (mut now, mut progress) = (T0, None);
    loop {
        let tick = Tick { release, execution: EXECUTION, deps: &deps, now };
        let p = runtime.block_on(tick.step(progress)).expect("a simulated tick cannot fail");
        let minutes = (now - T0) as f64 / 60.0;
        if p.status == Status::RolledBack || p.kind.shadow.is_none() {
            return ReplayOutcome { rolled_back: p.status == Status::RolledBack, minutes, reason: p.reason };
        }
        now += p.wait_seconds.max(1);
        progress = Some(p);
    }
}

/// `releases` replays of one cell, spread over the machine's cores.
pub fn run_replays(size: usize, scenario: ReplayScenario, releases: usize) -> Vec<ReplayOutcome> {
    let release = replayed_release(size as u64);
    super::in_parallel(releases, |i, runtime| simulate_replay(&release, size, scenario, 0x7e91 ^ i as u64, runtime))
}

/// The cells `make simulate` writes: golden sets of three sizes, two noise floors.
pub const SIZES: [usize; 3] = [500, 2_000, 10_000];
pub const FLOORS: [f64; 2] = [0.05, 0.2];

#[cfg(test)]
mod tests {
    use super::*;

    fn share(outcomes: &[ReplayOutcome]) -> f64 {
        outcomes.iter().filter(|o| o.rolled_back).count() as f64 / outcomes.len() as f64
    }

    /// A few hundred replays a cell (`make simulate` runs thousands): healthy golden sets
    /// are rarely failed, and a candidate twice as wrong on a large set is caught.
    #[test]
    fn a_healthy_replay_is_rarely_failed_and_a_large_set_catches_a_doubled_disagreement_rate() {
        let n = 200;
        let healthy = run_replays(2_000, ReplayScenario::healthy(0.2), n);
        assert!(share(&healthy) <= 0.03, "healthy rolled back {}", share(&healthy));
        let wrong = run_replays(10_000, ReplayScenario::doubled_disagreement(0.2), n);
        assert!(share(&wrong) >= 0.8, "2x disagreement caught {}", share(&wrong));
        let small = run_replays(500, ReplayScenario::doubled_disagreement(0.05), n);
        assert!(share(&small) < share(&wrong), "a small set sees less: {} vs {}", share(&small), share(&wrong));
    }
}
