//! `make simulate`: how often the judge rolls back a healthy canary, and how fast it
//! catches a bad one, measured over thousands of releases of two release shapes, with
//! every gate on (errors, latency, tokens per request, response length, schema-failure
//! rate, thumbs-down rate). Results go to SIMULATION.md.
//!
//! `SIMULATE_RELEASES` (default 4 000) sets releases per cell; `SIMULATE_COHORT_RELEASES`
//! (default 2 000) those of each cohort cell (users as the unit, issue 30), which
//! `SIMULATE_ONLY=cohorts` runs alone, printing them without writing SIMULATION.md;
//! `SIMULATE_ONLY=replay` likewise runs the replay cells (decision 0023), of
//! `SIMULATE_RELEASES` each.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use coalmine::release::judge::gates::DEFAULT_FALSE_ROLLBACK_RATE;
use coalmine_simulate::users::Routing;
use coalmine_simulate::{
    release, run_cell, run_users_cell, Cohort, Outcome, Scenario, Setup, Shape, BRISK, DEFAULTS, FIXED_HORIZON, RATIO,
    RATIO_UNTIL_CONCLUSIVE, SAMPLE, TRAFFIC,
};

const H: Scenario = Scenario::HEALTHY;
const SCENARIOS: [Scenario; 14] = [
    H,
    Scenario { name: "healthy, heavy-tailed tokens (sigma 1.0)", tokens_sigma: 1.0, ..H },
    Scenario { name: "1.5x error rate", errors: 1.5, ..H },
    Scenario { name: "2x error rate", errors: 2.0, ..H },
    Scenario { name: "10x error rate", errors: 10.0, ..H },
    Scenario { name: "1.1x latency (inside the 20% tolerance)", latency: 1.1, ..H },
    Scenario { name: "1.3x latency", latency: 1.3, ..H },
    Scenario { name: "2x latency", latency: 2.0, ..H },
    Scenario { name: "1.3x tokens per request", tokens: 1.3, ..H },
    Scenario { name: "1.3x tokens per request, heavy tails (sigma 1.0)", tokens: 1.3, tokens_sigma: 1.0, ..H },
    Scenario { name: "2x tokens per request", tokens: 2.0, ..H },
    Scenario { name: "answers 30% shorter", length: 0.7, ..H },
    Scenario { name: "2x schema-failure rate", schema: 2.0, ..H },
    Scenario { name: "2x thumbs-down rate", thumbs_down: 2.0, ..H },
];
const HEALTHY: usize = 0;
const HEAVY: usize = 1;
const ERRORS_1_5: usize = 2;
const ERRORS_2: usize = 3;
const ERRORS_10: usize = 4;
const LATENCY_1_1: usize = 5;
const LATENCY_1_3: usize = 6;
const TOKENS_1_3: usize = 8;
const TOKENS_1_3_HEAVY: usize = 9;

/// Which scenarios each (shape, setup) runs: all of them at the defaults on the sample's
/// shape, what each comparison needs elsewhere.
fn runs() -> Vec<(Shape, Setup, Vec<usize>)> {
    let tolerance = vec![HEALTHY, ERRORS_1_5, ERRORS_2];
    let evidence = vec![HEALTHY, HEAVY, ERRORS_1_5, ERRORS_2, ERRORS_10, TOKENS_1_3];
    vec![
        (SAMPLE, DEFAULTS, (0..SCENARIOS.len()).collect()),
        (BRISK, DEFAULTS, vec![HEALTHY, HEAVY, ERRORS_2, ERRORS_10, LATENCY_1_3, TOKENS_1_3, TOKENS_1_3_HEAVY]),
        (SAMPLE, RATIO, tolerance.clone()),
        (BRISK, RATIO, tolerance),
        (SAMPLE, RATIO_UNTIL_CONCLUSIVE, evidence.clone()),
        (BRISK, RATIO_UNTIL_CONCLUSIVE, evidence),
        (SAMPLE, FIXED_HORIZON, vec![HEALTHY, ERRORS_2, LATENCY_1_1, LATENCY_1_3]),
    ]
}

type Key = (&'static str, &'static str, usize, usize);

struct Cells(BTreeMap<Key, Vec<Outcome>>);

impl Cells {
    fn get(&self, shape: &Shape, setup: &Setup, traffic: usize, scenario: usize) -> &[Outcome] {
        &self.0[&(shape.name, setup.name, traffic, scenario)]
    }
}

fn rollback_rate(outcomes: &[Outcome]) -> f64 {
    outcomes.iter().filter(|o| o.rolled_back).count() as f64 / outcomes.len() as f64
}

/// The `q` quantile of `f` over the releases that ended `rolled_back`.
fn quantile(outcomes: &[Outcome], rolled_back: bool, q: f64, f: impl Fn(&Outcome) -> f64) -> Option<f64> {
    let mut values: Vec<f64> = outcomes.iter().filter(|o| o.rolled_back == rolled_back).map(f).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[((values.len() - 1) as f64 * q).round() as usize])
}

fn main() {
    let releases: usize = std::env::var("SIMULATE_RELEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000);
    let cohort_releases: usize =
        std::env::var("SIMULATE_COHORT_RELEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    match std::env::var("SIMULATE_ONLY").as_deref() {
        Ok("cohorts") => return print!("{}", cohorts(cohort_releases)),
        Ok("replay") => return print!("{}", replays(releases)),
        _ => {}
    }
    let started = Instant::now();
    let mut cells = Cells(BTreeMap::new());
    for (shape, setup, scenarios) in runs() {
        let release = release(&shape, &setup);
        for (t, traffic) in TRAFFIC.iter().enumerate() {
            for &s in &scenarios {
                // The same seeds for every setup: identical traffic streams.
                let seeds = (t as u64) << 48 ^ (s as u64) << 40 ^ 0x5eed_c0a1_0000_0000;
                let outcomes = run_cell(&release, &shape, *traffic, SCENARIOS[s], seeds, releases);
                eprintln!(
                    "simulate: {} | {} | {traffic} req/min | {}: rolled back {} ({:.0}s so far)",
                    &shape.name[..1],
                    setup.name,
                    SCENARIOS[s].name,
                    pct(rollback_rate(&outcomes)),
                    started.elapsed().as_secs_f64()
                );
                cells.0.insert((shape.name, setup.name, t, s), outcomes);
            }
        }
    }
    let mut report = report(&cells, releases, started.elapsed().as_secs_f64());
    report.push_str(&cohorts(cohort_releases));
    report.push_str(&replays(releases));
    std::fs::write("SIMULATION.md", &report).expect("write SIMULATION.md");
    print!("{report}");
}

/// Replays of golden sets before any user (decision 0023): healthy candidates rolled back,
/// and what a doubled disagreement rate or error rate takes to be caught, by the set's
/// size and the stable's noise floor.
fn replays(releases: usize) -> String {
    use coalmine_simulate::replay::{replayed_release, run_replays, ReplayOutcome, ReplayScenario, FLOORS, SIZES};
    let planned = {
        let release = replayed_release(1_000_000);
        let replay = release.replay.as_ref().expect("a replayed release");
        let gates = coalmine::release::judge::gates::Gates { custom: replay.gates(&release.release), ..release.gates };
        coalmine::release::judge::power::replay_requests_needed(&gates, 0.05, 2.0, 1_000_000)
            .map_or("more than a million".to_owned(), |n| n.to_string())
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut caught: BTreeMap<(&str, usize, u32), f64> = BTreeMap::new();
    for size in SIZES {
        for floor in FLOORS {
            for scenario in [
                ReplayScenario::healthy(floor),
                ReplayScenario::doubled_disagreement(floor),
                ReplayScenario::doubled_errors(floor),
                ReplayScenario {
                    name: "2x disagreement, independent requests",
                    clustered: false,
                    ..ReplayScenario::doubled_disagreement(floor)
                },
                ReplayScenario {
                    name: "healthy, independent requests",
                    clustered: false,
                    ..ReplayScenario::healthy(floor)
                },
            ] {
                let outcomes = run_replays(size, scenario, releases);
                let rolled_back: Vec<&ReplayOutcome> = outcomes.iter().filter(|o| o.rolled_back).collect();
                let share = rolled_back.len() as f64 / outcomes.len() as f64;
                caught.insert((scenario.name, size, (floor * 100.0).round() as u32), share);
                let mut minutes: Vec<f64> = rolled_back.iter().map(|o| o.minutes).collect();
                minutes.sort_by(f64::total_cmp);
                let median = minutes.get(minutes.len() / 2).map_or("-".to_owned(), |m| format!("{m:.0}"));
                let mut why: BTreeMap<&str, usize> = BTreeMap::new();
                for o in &rolled_back {
                    let test = if o.reason.contains("Disagreements") {
                        "disagreements"
                    } else if o.reason.contains("error") {
                        "errors"
                    } else if o.reason.contains("latency") || o.reason.contains("p95") {
                        "latency"
                    } else {
                        "too little data"
                    };
                    *why.entry(test).or_default() += 1;
                }
                let why: Vec<String> = why.iter().map(|(k, v)| format!("{k} {v}")).collect();
                eprintln!("simulate: replay {size} at floor {floor}: {}: rolled back {}", scenario.name, pct(share));
                rows.push(format!(
                    "| {} | {size} | {} | {} | {median} | {} |",
                    scenario.name,
                    pct(floor),
                    if scenario.name.starts_with("healthy") { pct(share) } else { format!("**{}**", pct(share)) },
                    why.join(", ")
                ));
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Replays before any user (issue 32)\n\n{releases} releases per cell, {:.0} s. The release replays a \
         golden set of the size given at 20 requests a second, checked every minute, judged on its disagreements \
         (at most 50% above the stable's with itself), its errors (ratio 1.2) and latency (p95 within 20%), at \
         false_rollback_rate 1.00%. The set is unkind: its requests come in clusters of near-duplicates (sizes \
         Pareto, alpha 1.2, up to 300), each contiguous in the file; a quarter of the clusters are ambiguous (the \
         stable disagrees with itself on them at four times the noise floor, the rest never), one in twenty fails \
         one time in ten (0.5% in all); a regressed candidate gets whole clusters wrong (the noise floor's share of \
         them: about twice the disagreement), or fails twice as often in the failing clusters. Counts arrive 5 to \
         60 s after each hand-off, and 2% of hand-offs are lost.\n",
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| candidate | golden requests | noise floor | rolled back | median minutes | why |\n|---|---|---|---|---|---|"
    );
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(
        out,
        "\nA healthy candidate replayed is rolled back no more often than the judge promises, clustered requests \
         and all: both versions answer the same requests, so a cluster's ambiguity and failures are on both sides \
         of every test. What a replay sees grows with the set and the noise floor. The plan's figure holds for \
         independent requests: at a 5% floor `validate` says a 2x disagreement rate is seen with 80% power after \
         {planned} requests under these gates, and 10 000 independent requests catch it {independent} of the time. \
         Clusters make a set's regression lumpy: a small set is sometimes caught because it happens to hold a large \
         wrong cluster, and a large one is caught less often than its size suggests ({clustered} at 10 000, 5%). A \
         doubled error rate at 0.5% is caught {errors} of the time even by 10 000 requests: errors are the stages' \
         and the alarms' to catch, or a far larger set's.",
        independent = pct(caught[&("2x disagreement, independent requests", 10_000, 5)]),
        clustered = pct(caught[&("2x disagreement", 10_000, 5)]),
        errors = pct(caught[&("2x errors", 10_000, 5)]),
    );
    out
}

/// Users in a cohort cell, and the traffic they share.
const COHORT_USERS: [usize; 3] = [50, 500, 5000];
const COHORT_TRAFFIC: [f64; 2] = [1000.0, 10_000.0];

/// Healthy cohort releases judged with units as the draw (decision 0021), beside the same
/// sticky traffic judged as if requests were independent (the judge before it) and the
/// same users routed per request; then what the unit judge catches. Shape A with every
/// gate on.
fn cohorts(releases: usize) -> String {
    let started = Instant::now();
    let release = release(&SAMPLE, &DEFAULTS);
    let mut rows = Vec::new();
    let mut worst = [0.0f64; 3];
    let ways = [(Routing::Sticky, true), (Routing::Sticky, false), (Routing::PerRequest, false)];
    let cell = |users: usize, traffic: f64, (routing, by_units): (Routing, bool), scenario: Scenario| {
        let seeds = (users as u64) << 32 ^ (traffic as u64) << 8 ^ 0xc0_4027;
        let cohort = Cohort { users, routing, by_units };
        let outcomes = run_users_cell(&release, &SAMPLE, traffic, cohort, scenario, seeds, releases);
        let rate = rollback_rate(&outcomes);
        eprintln!(
            "simulate: cohorts | {users} users | {traffic} req/min | {} | {} | judged by {}: rolled back {} ({:.0}s so far)",
            scenario.name,
            routing.describe(),
            if by_units { "units" } else { "requests" },
            pct(rate),
            started.elapsed().as_secs_f64()
        );
        outcomes
    };
    for &users in &COHORT_USERS {
        for &traffic in &COHORT_TRAFFIC {
            let outcomes: Vec<Vec<Outcome>> = ways.iter().map(|way| cell(users, traffic, *way, H)).collect();
            // A test's rollbacks are what the promise bounds; a stage that never had data
            // is rolled back by the release's own on_insufficient_data, said apart.
            let by_a_test = |o: &[Outcome]| {
                o.iter().filter(|o| o.rolled_back && !for_want_of_data(o)).count() as f64 / o.len() as f64
            };
            let rates: Vec<f64> = outcomes.iter().map(|o| by_a_test(o)).collect();
            for (w, r) in worst.iter_mut().zip(&rates) {
                *w = w.max(*r);
            }
            let starved = outcomes[0].iter().filter(|o| for_want_of_data(o)).count() as f64 / releases as f64;
            let (mean, none) = drawn_at_first_stage(users, releases);
            rows.push(format!(
                "| {users} | {traffic:.0} | {mean:.1}; none in {} | **{}** | {} | {} | {} | {} |",
                pct(none),
                pct(rates[0]),
                pct(starved),
                pct(rates[1]),
                pct(rates[2]),
                named(&outcomes[0]),
            ));
        }
    }
    let mut detection = Vec::new();
    for scenario in [
        Scenario { name: "2x error rate", errors: 2.0, ..H },
        Scenario { name: "1.3x tokens per request", tokens: 1.3, ..H },
    ] {
        for &users in &COHORT_USERS[1..] {
            for &traffic in &COHORT_TRAFFIC {
                let outcomes = cell(users, traffic, ways[0], scenario);
                detection.push(format!(
                    "| {} | {users} | {traffic:.0} | {} | {} | {} |",
                    scenario.name,
                    pct(rollback_rate(&outcomes)),
                    median_minutes(&outcomes).map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
                    named(&outcomes),
                ));
            }
        }
    }
    let mut out = format!(
        "\n## Cohort releases: users, not requests (issue 30)\n\n{releases} releases per cell, {:.0} s. \
         Shape A, every gate on. Each release draws its own users: request rates lognormal (sigma {}) sharing \
         the traffic, error propensities Beta({:.1}, {:.1}) around the stable's 0.5%, and log offsets on latency and \
         output tokens (normal, sigma {} and {}), all the same on both versions; a user is on the candidate when the \
         router's draw of (release, user) is below the stage's share. **Judged by units** is the judge of decision \
         0021: the metric source answers in the router's sixteen replicate groups of users, and each test divides \
         both sides' counts by the design effect their spread shows (at its upper {} bound); a canary spanning \
         fewer than {} groups counts each group as one user at most. **Judged by requests** is the judge before it, on the \
         same sticky traffic, counting requests as independent.\n\n### Healthy releases rolled back\n\nBy a test: \
         what `false_rollback_rate` bounds. For want of data: a stage whose canary never served `min_requests` (in a \
         5% stage of 50 users, often nobody at all) held for `max_hold_seconds` and was rolled back, as the \
         release's `on_insufficient_data: hold` says; `validate` warns of it.\n\n| active users | requests/min | \
         users in the 5% stage (mean; none) | sticky, judged by units: by a test | for want of data | sticky, judged \
         by requests: by a test | routed per request: by a test | why (by units) |\n|---|---|---|---|---|---|---|---|\n",
        started.elapsed().as_secs_f64(),
        coalmine_simulate::users::RATE_SIGMA,
        coalmine_simulate::users::PROPENSITY_CONCENTRATION * SAMPLE.stable_error_rate,
        coalmine_simulate::users::PROPENSITY_CONCENTRATION * (1.0 - SAMPLE.stable_error_rate),
        coalmine_simulate::users::USER_LATENCY_SIGMA,
        coalmine_simulate::users::USER_TOKENS_SIGMA,
        pct(coalmine::release::judge::replicates::DESIGN_LEVEL),
        coalmine::release::judge::replicates::MIN_GROUPS,
    );
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(
        out,
        "\nThe judge promises at most {} of healthy releases rolled back by a test. Judged by units, sticky cohorts are \
         rolled back by a test at most {}; the same traffic judged by requests, up to {}: the requests of a user are not independent \
         draws, so one heavy user who fails often, drawn into a small cohort, looks like a regression of the version, \
         and the more requests each user sends the surer a request judge becomes of it. Routed per request, the same \
         users stay at most {}.\n\n### What the unit judge catches\n\n| candidate | active users | requests/min | \
         rolled back | median minutes to the rollback | why |\n|---|---|---|---|---|---|",
        pct(DEFAULT_FALSE_ROLLBACK_RATE),
        pct(worst[0]),
        pct(worst[1]),
        pct(worst[2]),
    );
    for row in detection {
        let _ = writeln!(out, "{row}");
    }
    out.push_str(COHORT_POWER);
    out
}

/// What the detection table means for a team choosing cohorts.
const COHORT_POWER: &str = "\nA cohort's evidence is its users, not its requests: when users differ as they do \
here (a few send most requests, a few fail far more often than the rest), a 2x error rate among 500 users looks \
much like an unlucky draw of users, and more requests from the same users barely help (compare 1000 and 10000 \
requests a minute). Thousands of users, longer stages, or a larger first share buy it back; so does a replay \
before users. The gate alarms and the absolute limits (on pinned users too) stay as fast as before.\n";

/// Over `releases` populations of `users`, the users a 5% stage draws: the mean, and the
/// share of releases in which it draws none.
fn drawn_at_first_stage(users: usize, releases: usize) -> (f64, f64) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(users as u64);
    let drawn: Vec<usize> = (0..releases)
        .map(|i| {
            let name = format!("simulated-{i}");
            coalmine_simulate::users::Population::draw(&mut rng, &name, users, 1000.0, 0.005, Routing::Sticky)
                .drawn(0.05)
        })
        .collect();
    let n = drawn.len().max(1) as f64;
    (drawn.iter().sum::<usize>() as f64 / n, drawn.iter().filter(|d| **d == 0).count() as f64 / n)
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn minutes(x: Option<f64>) -> String {
    x.map_or("-".into(), |m| format!("{m:.0}"))
}

/// "caught | median / p90 min | bad served" for a bad canary's cell.
fn detection(c: &[Outcome]) -> String {
    format!(
        "{} | {} / {} | {}",
        pct(rollback_rate(c)),
        minutes(quantile(c, true, 0.5, |o| o.minutes)),
        minutes(quantile(c, true, 0.9, |o| o.minutes)),
        quantile(c, true, 0.5, |o| o.bad).map_or("-".into(), |b| format!("{b:.0}"))
    )
}

/// A detection table's rows: each scenario at each traffic.
fn detection_rows(out: &mut String, cells: &Cells, shape: &Shape, setup: &Setup, scenarios: &[usize]) {
    for &s in scenarios {
        for (t, traffic) in TRAFFIC.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {traffic:.0} | {} |",
                SCENARIOS[s].name,
                detection(cells.get(shape, setup, t, s))
            );
        }
    }
}

/// The median time to a rollback, over the releases rolled back.
fn median_minutes(outcomes: &[Outcome]) -> Option<f64> {
    let mut minutes: Vec<f64> = outcomes.iter().filter(|o| o.rolled_back).map(|o| o.minutes).collect();
    minutes.sort_by(f64::total_cmp);
    minutes.get(minutes.len() / 2).copied()
}

/// The gates healthy rollbacks named, most often first.
fn named(outcomes: &[Outcome]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.rolled_back) {
        let reason = o.reason.to_lowercase();
        if for_want_of_data(o) {
            *by.entry("too little data").or_default() += 1;
            continue;
        }
        let gate = ["OutputTokens", "ResponseLength", "SchemaFailures", "ThumbsDown", "latency", "p95", "error"]
            .into_iter()
            .find(|g| reason.contains(&g.to_lowercase()))
            .map_or("other", |g| if g == "p95" { "latency" } else { g });
        *by.entry(gate).or_default() += 1;
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    by.iter().map(|(g, n)| format!("{g} {n}")).collect::<Vec<_>>().join(", ")
}

/// Rolled back because a stage never had enough to judge (`on_insufficient_data`), not
/// because a test rejected.
fn for_want_of_data(outcome: &Outcome) -> bool {
    let reason = outcome.reason.to_lowercase();
    outcome.rolled_back && (reason.contains("still after holding") || reason.contains("at the end of the bake"))
}

fn report(cells: &Cells, releases: usize, seconds: f64) -> String {
    let alpha = DEFAULT_FALSE_ROLLBACK_RATE;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Simulation: false rollbacks and detection\n\nWritten by `make simulate` (crates/simulate): {releases} \
         releases per cell, {seconds:.0} s on this machine. Each release is the real stepper tick driven as the \
         state machine drives it, over synthetic traffic. Two release shapes:\n\n- {}\n- {}\n\nGates on every \
         release: max_error_rate 5%, max_p95_latency_ms 10000, max_p95_increase_ratio 0.2, min_requests 100, \
         on_insufficient_data hold, and the AI gates: OutputTokens Average at most 20% above the stable's, \
         ResponseLength p50 within 25% either way, SchemaFailures per request at most 50% above, ThumbsDown per \
         Feedback at most 50% above. The stable: latency lognormal (median 400 ms, sigma 0.5), tokens lognormal \
         (median 400, sigma 0.5 unless said), response length lognormal (median 1200, sigma 0.6), 2% schema \
         failures, feedback on 10% of requests of which 20% thumbs-down. The judge runs at \
         false_rollback_rate {} unless a setup says otherwise.\n",
        SAMPLE.name,
        BRISK.name,
        pct(alpha)
    );

    let _ = writeln!(out, "## Healthy canaries rolled back (every gate on), and how long a healthy release takes\n");
    let _ = writeln!(
        out,
        "| shape | setup | canary | 100 req/min | 1000 | 10000 | median minutes to promotion (100 / 1000 / 10000) | \
         gates named |\n|---|---|---|---|---|---|---|---|"
    );
    for (shape, setup, scenarios) in runs() {
        for s in scenarios.into_iter().filter(|s| !SCENARIOS[*s].is_bad() && *s != LATENCY_1_1) {
            let row: Vec<&[Outcome]> = (0..TRAFFIC.len()).map(|t| cells.get(&shape, &setup, t, s)).collect();
            let times: Vec<String> = row.iter().map(|c| minutes(quantile(c, false, 0.5, |o| o.minutes))).collect();
            let all: Vec<Outcome> = row.iter().flat_map(|c| c.iter().cloned()).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                &shape.name[..1],
                setup.name,
                SCENARIOS[s].name,
                pct(rollback_rate(row[0])),
                pct(rollback_rate(row[1])),
                pct(rollback_rate(row[2])),
                times.join(" / "),
                named(&all)
            );
        }
    }

    for (shape, setup, scenarios) in runs().into_iter().filter(|(_, setup, _)| *setup == DEFAULTS) {
        let _ = writeln!(
            out,
            "\n## A bad canary, shape {}, defaults: rolled back before promotion, minutes to rollback (median / p90), \
             bad canary requests served first (median: errors, or requests slower than 1.2x the stable's p95)\n",
            &shape.name[..1]
        );
        let _ =
            writeln!(out, "| canary | requests/min | caught | median / p90 min | bad served |\n|---|---|---|---|---|");
        let bad: Vec<usize> = scenarios.into_iter().filter(|s| SCENARIOS[*s].is_bad() || *s == LATENCY_1_1).collect();
        detection_rows(&mut out, cells, &shape, &setup, &bad);
    }

    let _ = writeln!(
        out,
        "\n## A tolerance costs detection; evidence-driven stages buy it back\n\nmax_error_rate_ratio 1.2 tolerates a \
         canary up to 20% worse, so the tests must rule out less and see more to call a regression. Until \
         conclusive: every stage but the last advances once each test rules out twice its tolerance, rolls back on \
         evidence against it, and at twice its fixed bake goes on (on_insufficient_data proceed).\n"
    );
    let _ = writeln!(out, "| shape | canary | requests/min | defaults (ratio 1) | ratio 1.2 | ratio 1.2, until conclusive |\n|---|---|---|---|---|---|");
    for shape in [SAMPLE, BRISK] {
        for s in [ERRORS_1_5, ERRORS_2, ERRORS_10, TOKENS_1_3] {
            for (t, traffic) in TRAFFIC.iter().enumerate() {
                let at = |setup: &Setup| {
                    cells
                        .0
                        .get(&(shape.name, setup.name, t, s))
                        .map_or("-".into(), |c| detection(c).replace(" | ", ", "))
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {traffic:.0} | {} | {} | {} |",
                    &shape.name[..1],
                    SCENARIOS[s].name,
                    at(&DEFAULTS),
                    at(&RATIO),
                    at(&RATIO_UNTIL_CONCLUSIVE)
                );
            }
        }
    }

    let _ = writeln!(
        out,
        "\n## The old fixed-horizon judge on the same traffic (shape A, no AI gates: it compared them raw)\n\n| canary | \
         requests/min | rolled back | median / p90 min | bad served |\n|---|---|---|---|---|"
    );
    detection_rows(&mut out, cells, &SAMPLE, &FIXED_HORIZON, &[HEALTHY, ERRORS_2, LATENCY_1_1, LATENCY_1_3]);

    let _ = writeln!(out, "\n## Targets\n");
    let mut target = |ok: bool, what: String| {
        let _ = writeln!(out, "- {} {what}", if ok { "met:" } else { "MISSED:" });
    };
    for (shape, setup, scenarios) in runs().into_iter().filter(|(_, setup, _)| setup.judge == DEFAULTS.judge) {
        for s in scenarios.into_iter().filter(|s| !SCENARIOS[*s].is_bad()) {
            for (t, traffic) in TRAFFIC.iter().enumerate() {
                let rate = rollback_rate(cells.get(&shape, &setup, t, s));
                target(
                    rate <= alpha,
                    format!(
                        "shape {}, {}, {} at {traffic:.0} req/min: rolled back {} (at most {})",
                        &shape.name[..1],
                        setup.name,
                        SCENARIOS[s].name,
                        pct(rate),
                        pct(alpha)
                    ),
                );
            }
        }
    }
    let mut at_least = |shape: &Shape, setup: &Setup, s: usize, t: usize| {
        let rate = rollback_rate(cells.get(shape, setup, t, s));
        target(
            rate >= 0.95,
            format!(
                "shape {}, {}, {} caught at {:.0} req/min: {} (at least 95%)",
                &shape.name[..1],
                setup.name,
                SCENARIOS[s].name,
                TRAFFIC[t],
                pct(rate)
            ),
        );
    };
    for t in 1..TRAFFIC.len() {
        at_least(&SAMPLE, &DEFAULTS, TOKENS_1_3, t);
        at_least(&BRISK, &DEFAULTS, TOKENS_1_3, t);
    }
    for shape in [SAMPLE, BRISK] {
        at_least(&shape, &DEFAULTS, ERRORS_2, 1);
        at_least(&shape, &RATIO_UNTIL_CONCLUSIVE, ERRORS_2, 1);
    }
    for (t, traffic) in TRAFFIC.iter().enumerate().skip(1) {
        let ten =
            quantile(cells.get(&SAMPLE, &DEFAULTS, t, ERRORS_10), true, 0.5, |o| o.minutes).unwrap_or(f64::INFINITY);
        target(
            ten <= 5.0,
            format!(
                "shape A, 10x error rate caught in {ten:.0} min (median) at {traffic:.0} req/min (at most 5: each of the \
                 nine tests holds a ninth of false_rollback_rate, so needs a little more evidence than with four)"
            ),
        );
    }
    out
}
