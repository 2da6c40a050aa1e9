//! `make simulate`: how often the judge rolls back a healthy canary, and how fast it
//! catches a bad one, measured over thousands of releases.
//!
//! Each simulated release is the real stepper's `tick`, driven exactly as the state
//! machine drives it: tick, wait `wait_seconds`, tick again, until it promotes or rolls
//! back. Between ticks, synthetic traffic arrives: Poisson requests at the stage's share,
//! errors and latencies per side. The ports are in memory: the router holds the split,
//! the metric source answers each tick's GetMetricData as CloudWatch would for the
//! window asked (sums of counts; percentiles of the window's latencies, drawn as order
//! statistics of that many requests). Both judges run on identical streams (the same
//! seed per release). Results go to SIMULATION.md.
//!
//! `SIMULATE_RELEASES` (default 10 000) sets releases per cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use coalmine::domain::metrics::{MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use coalmine::memory::{Alarms, Outbox, Router};
use coalmine::ports::{MetricQuery, MetricSource};
use coalmine::release::canary::spec::Release;
use coalmine::release::core::gates::{JudgeKind, DEFAULT_FALSE_ROLLBACK_RATE};
use coalmine::release::core::progress::Status;
use coalmine::release::core::{StepDeps, Tick};
use coalmine::release::judge::evalues::inverse_normal_cdf;
use coalmine::release::judge::fixed::standard_normal_cdf;
use coalmine::{Result, Split, Target};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Beta, Binomial, Distribution, Poisson};
use serde_json::json;

const T0: u64 = 1_800_000_000;
const EXECUTION: &str = "arn:aws:states:us-east-1:000000000000:execution:simulate:release";
const STABLE_ERROR_RATE: f64 = 0.005;
const MEDIAN_MS: f64 = 400.0;
const SIGMA: f64 = 0.5;
const TRAFFIC: [f64; 3] = [100.0, 1000.0, 10_000.0];

#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    errors: f64,
    latency: f64,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario { name: "healthy (A/A)", errors: 1.0, latency: 1.0 },
    Scenario { name: "1.5x error rate", errors: 1.5, latency: 1.0 },
    Scenario { name: "2x error rate", errors: 2.0, latency: 1.0 },
    Scenario { name: "10x error rate", errors: 10.0, latency: 1.0 },
    Scenario { name: "1.1x latency (inside the 20% tolerance)", errors: 1.0, latency: 1.1 },
    Scenario { name: "1.3x latency", errors: 1.0, latency: 1.3 },
    Scenario { name: "2x latency", errors: 1.0, latency: 2.0 },
];

/// The release every simulation runs: the sample `lambda-ai-handler-42.json`'s stages
/// and checks (5/25/50/100 %, 15-minute bakes and 10 at 100 %, a check a minute), its
/// metric gates, and the judge's defaults; no alarms or custom gates (nothing here
/// would move them).
fn release(judge: JudgeKind) -> Release {
    let sample: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/releases/lambda-ai-handler-42.json"))
            .expect("sample release");
    let mut gates = json!({
        "max_error_rate": 0.05, "max_p95_latency_ms": 10000, "max_p95_increase_ratio": 0.2,
        "min_requests": 100, "on_insufficient_data": "hold", "max_hold_seconds": 1800
    });
    if judge == JudgeKind::FixedHorizon {
        gates["judge"] = json!("fixed_horizon");
        gates["max_error_rate_increase"] = json!(0.01);
    }
    let release = json!({
        "release": "simulated", "target": sample["target"], "canary_version": sample["canary_version"],
        "stages": sample["stages"], "check_every_seconds": sample["check_every_seconds"], "gates": gates
    });
    Release::parse(&release).expect("the simulated release is valid")
}

/// One block of traffic between two ticks, at one weight.
#[derive(Clone, Copy, Debug, Default)]
struct Block {
    from: u64,
    to: u64,
    canary_requests: f64,
    canary_errors: f64,
    stable_requests: f64,
    stable_errors: f64,
}

/// The simulated world of one release: its traffic so far, and the alias in memory.
struct World {
    rng: Mutex<SmallRng>,
    router: Router,
    release: Release,
    blocks: Mutex<Vec<Block>>,
    traffic: f64,
    scenario: Scenario,
    canary: String,
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

    /// Traffic from `from` to `to` at the live weight; returns the canary's bad requests
    /// (errors, or requests past 1.2x the stable's p95) in it.
    fn flow(&self, from: u64, to: u64) -> f64 {
        let weight = self.canary_weight();
        let minutes = (to - from) as f64 / 60.0;
        let mut rng = self.rng.lock().unwrap();
        let mut draw =
            |mean: f64| if mean > 0.0 { Poisson::new(mean).map(|p| p.sample(&mut *rng)).unwrap_or(0.0) } else { 0.0 };
        let canary_requests = draw(self.traffic * weight * minutes);
        let stable_requests = draw(self.traffic * (1.0 - weight) * minutes);
        let binomial = |rng: &mut SmallRng, n: f64, p: f64| {
            Binomial::new(n as u64, p.clamp(0.0, 1.0)).map(|b| b.sample(rng) as f64).unwrap_or(0.0)
        };
        let canary_errors = binomial(&mut rng, canary_requests, STABLE_ERROR_RATE * self.scenario.errors);
        let stable_errors = binomial(&mut rng, stable_requests, STABLE_ERROR_RATE);
        let bad = if self.scenario.errors > 1.0 {
            canary_errors
        } else {
            binomial(&mut rng, canary_requests, slow_share(self.scenario.latency))
        };
        self.blocks.lock().unwrap().push(Block {
            from,
            to,
            canary_requests,
            canary_errors,
            stable_requests,
            stable_errors,
        });
        bad
    }
}

/// The share of a canary `factor` times slower than the stable past 1.2x the stable's p95.
fn slow_share(factor: f64) -> f64 {
    let z = inverse_normal_cdf(0.95) + (1.2 / factor).ln() / SIGMA;
    1.0 - standard_normal_cdf(z)
}

/// A side's latency percentiles over `n` requests: each level's order statistic, drawn
/// from its beta distribution and mapped through the lognormal's quantile function.
fn percentiles(rng: &mut SmallRng, n: f64, factor: f64) -> Vec<Option<f64>> {
    if n < 1.0 {
        return vec![None; PERCENTILE_LEVELS.len()];
    }
    let mut us: Vec<f64> = PERCENTILE_LEVELS
        .iter()
        .map(|level| {
            let k = (level / 100.0 * n).ceil().clamp(1.0, n);
            Beta::new(k, n - k + 1.0).map(|b| b.sample(rng)).unwrap_or(level / 100.0)
        })
        .collect();
    us.sort_by(f64::total_cmp);
    us.iter().map(|u| Some(MEDIAN_MS * factor * (SIGMA * inverse_normal_cdf(*u)).exp())).collect()
}

impl MetricSource for World {
    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        let blocks = self.blocks.lock().unwrap();
        let window: Vec<&Block> = blocks.iter().filter(|b| b.from >= q.start_epoch && b.to <= q.end_epoch).collect();
        let sum = |f: fn(&Block) -> f64| window.iter().map(|b| f(b)).sum::<f64>() + 0.0;
        let mut rng = self.rng.lock().unwrap();
        let side = |rng: &mut SmallRng, requests: f64, errors: f64, factor: f64| {
            let percentiles = percentiles(rng, requests, factor);
            SideMetrics { requests, errors, p95_ms: percentiles[3], percentiles, ..Default::default() }
        };
        let canary = side(&mut rng, sum(|b| b.canary_requests), sum(|b| b.canary_errors), self.scenario.latency);
        let stable = side(&mut rng, sum(|b| b.stable_requests), sum(|b| b.stable_errors), 1.0);
        Ok(MetricSnapshot { canary, stable })
    }

    /// Before the release, the stable served the whole traffic for as long as asked.
    async fn requests_per_minute(&self, _: &Target, _: &str, start: u64, end: u64) -> Result<Vec<(u64, f64)>> {
        Ok((start.div_ceil(60)..end / 60).map(|minute| (minute * 60, self.traffic)).collect())
    }
}

#[derive(Clone, Copy, Debug)]
struct Outcome {
    rolled_back: bool,
    minutes: f64,
    /// The canary's bad requests served before the end: errors, or slow requests.
    bad: f64,
}

fn simulate(
    release: &Release,
    traffic: f64,
    scenario: Scenario,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> Outcome {
    let world = World {
        rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        router: Router::with([(release.target.clone(), Split::stable_only("41", None))]),
        release: release.clone(),
        blocks: Mutex::new(Vec::new()),
        traffic,
        scenario,
        canary: release.canary_id().to_owned(),
    };
    let (notifier, alarms) = (Outbox::default(), Alarms::default());
    let deps = StepDeps { router: &world.router, notifier: &notifier, alarms: &alarms, metrics: &world };
    let mut now = T0;
    let mut progress = None;
    let mut bad = 0.0;
    loop {
        let tick = Tick { release, execution: EXECUTION, deps: &deps, now };
        let p = runtime.block_on(tick.step(progress)).expect("a simulated tick cannot fail");
        match p.status {
            Status::Promoted | Status::RolledBack => {
                return Outcome { rolled_back: p.status == Status::RolledBack, minutes: (now - T0) as f64 / 60.0, bad }
            }
            _ => {}
        }
        let next = now + p.wait_seconds.max(1);
        bad += world.flow(now, next);
        now = next;
        progress = Some(p);
    }
}

#[derive(Default)]
struct Cell {
    outcomes: Vec<Outcome>,
}

impl Cell {
    fn rollback_rate(&self) -> f64 {
        self.outcomes.iter().filter(|o| o.rolled_back).count() as f64 / self.outcomes.len() as f64
    }

    fn quantile(&self, q: f64, f: impl Fn(&Outcome) -> f64) -> Option<f64> {
        let mut values: Vec<f64> = self.outcomes.iter().filter(|o| o.rolled_back).map(f).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(values[((values.len() - 1) as f64 * q).round() as usize])
    }
}

fn main() {
    let releases: usize = std::env::var("SIMULATE_RELEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let started = Instant::now();
    let judges = [JudgeKind::Sequential, JudgeKind::FixedHorizon];
    let mut cells: BTreeMap<(usize, usize, usize), Cell> = BTreeMap::new();
    for (j, judge) in judges.iter().enumerate() {
        let release = release(*judge);
        for (t, traffic) in TRAFFIC.iter().enumerate() {
            for (s, scenario) in SCENARIOS.iter().enumerate() {
                let outcomes = Mutex::new(Vec::with_capacity(releases));
                std::thread::scope(|scope| {
                    for thread in 0..threads {
                        let (release, outcomes) = (&release, &outcomes);
                        scope.spawn(move || {
                            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                            let mine: Vec<Outcome> = (thread..releases)
                                .step_by(threads)
                                // The same seed for both judges: identical traffic streams.
                                .map(|i| simulate(release, *traffic, *scenario, seed(t, s, i), &runtime))
                                .collect();
                            outcomes.lock().unwrap().extend(mine);
                        });
                    }
                });
                let cell = Cell { outcomes: outcomes.into_inner().unwrap() };
                eprintln!(
                    "simulate: {:?} {traffic} req/min {}: rolled back {:.2}% ({:.0}s so far)",
                    judge,
                    scenario.name,
                    cell.rollback_rate() * 100.0,
                    started.elapsed().as_secs_f64()
                );
                cells.insert((j, t, s), cell);
            }
        }
    }
    let report = report(&cells, releases, started.elapsed().as_secs_f64());
    std::fs::write("SIMULATION.md", &report).expect("write SIMULATION.md");
    print!("{report}");
}

fn seed(traffic: usize, scenario: usize, release: usize) -> u64 {
    (traffic as u64) << 48 ^ (scenario as u64) << 40 ^ release as u64 ^ 0x5eed_c0a1_0000_0000
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn minutes(x: Option<f64>) -> String {
    x.map_or("-".into(), |m| format!("{m:.0}"))
}

fn report(cells: &BTreeMap<(usize, usize, usize), Cell>, releases: usize, seconds: f64) -> String {
    let cell = |j, t, s| &cells[&(j, t, s)];
    let alpha = DEFAULT_FALSE_ROLLBACK_RATE;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Simulation: false rollbacks and detection\n\nWritten by `make simulate` (crates/simulate): {releases} \
         releases per cell, both judges on identical traffic, {seconds:.0} s on this machine. Each release is the \
         sample lambda-ai-handler-42.json's shape (5/25/50/100 %, bakes of 15, 15, 15 and 10 minutes, a check a \
         minute), gates max_error_rate 5%, max_p95_latency_ms 10000, max_p95_increase_ratio 0.2, min_requests 100, \
         on_insufficient_data hold; the fixed-horizon judge also max_error_rate_increase 0.01 (as the sample had). \
         Stable: 0.5% errors, latency lognormal (median 400 ms, sigma 0.5, p95 910 ms). The sequential judge runs \
         at its defaults: false_rollback_rate {}, any error-rate regression counts (max_error_rate_ratio 1).\n",
        pct(alpha)
    );
    let _ = writeln!(out, "## A healthy canary (A/A): rolled back\n");
    let _ = writeln!(out, "| requests/min | sequential (new) | fixed-horizon (old) |\n|---|---|---|");
    for (t, traffic) in TRAFFIC.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {traffic:.0} | {} | {} |",
            pct(cell(0, t, 0).rollback_rate()),
            pct(cell(1, t, 0).rollback_rate())
        );
    }
    let _ = writeln!(
        out,
        "\n## A bad canary: rolled back before promotion, minutes to rollback (median, p90), bad canary requests \
         served first (median: errors, or requests slower than 1.2x the stable's p95)\n"
    );
    let _ = writeln!(out, "| canary | requests/min | sequential: caught | median / p90 min | bad served | fixed-horizon: caught | median / p90 min | bad served |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (s, scenario) in SCENARIOS.iter().enumerate().skip(1) {
        for (t, traffic) in TRAFFIC.iter().enumerate() {
            let row = |j| {
                let c = cell(j, t, s);
                format!(
                    "{} | {} / {} | {}",
                    pct(c.rollback_rate()),
                    minutes(c.quantile(0.5, |o| o.minutes)),
                    minutes(c.quantile(0.9, |o| o.minutes)),
                    c.quantile(0.5, |o| o.bad).map_or("-".into(), |b| format!("{b:.0}"))
                )
            };
            let _ = writeln!(out, "| {} | {traffic:.0} | {} | {} |", scenario.name, row(0), row(1));
        }
    }
    let _ = writeln!(out, "\n## Targets (sequential judge, default settings)\n");
    let mut target = |ok: bool, what: String| {
        let _ = writeln!(out, "- {} {what}", if ok { "met:" } else { "MISSED:" });
    };
    for (t, traffic) in TRAFFIC.iter().enumerate() {
        let rate = cell(0, t, 0).rollback_rate();
        target(
            rate <= alpha,
            format!("healthy canary rolled back at {traffic:.0} req/min: {} (at most {})", pct(rate), pct(alpha)),
        );
        let inside = cell(0, t, 4).rollback_rate();
        target(
            inside <= alpha,
            format!(
                "p95 10% slower (inside 20%) rolled back at {traffic:.0} req/min: {} (at most {})",
                pct(inside),
                pct(alpha)
            ),
        );
    }
    for (t, traffic) in TRAFFIC.iter().enumerate().skip(1) {
        let doubled = cell(0, t, 2).rollback_rate();
        target(
            doubled >= 0.95,
            format!("2x error rate caught at {traffic:.0} req/min: {} (at least 95%)", pct(doubled)),
        );
        let ten = cell(0, t, 3).quantile(0.5, |o| o.minutes).unwrap_or(f64::INFINITY);
        target(
            ten <= 3.0,
            format!("10x error rate caught in {ten:.0} min (median) at {traffic:.0} req/min (at most 3)"),
        );
        let slow = cell(0, t, 5).rollback_rate();
        target(slow >= 0.95, format!("1.3x p95 caught at {traffic:.0} req/min: {} (at least 95%)", pct(slow)));
    }
    out
}
