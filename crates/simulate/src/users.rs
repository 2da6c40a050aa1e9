//! Traffic from users, not independent requests (issue 30): what a cohort release's
//! judge faces. Each active user sends requests at a rate of their own, lognormal with
//! sigma 1.5, and fails at a propensity of their own, Beta with concentration 100
//! around the stable's error rate (Beta(0.5, 99.5) at 0.5%: most users almost never fail,
//! a few fail often), the same on both versions. A user's requests are correlated through
//! that propensity, and bursty through the rate's spread: the heaviest tenth of users
//! send 59% of the requests. Each user's latency and output tokens are also shifted by a
//! log offset of their own (normal, sigma 0.3), so a side's latency and tokens are a
//! mixture over its users: its median moves with who was drawn.
//!
//! Assignment is the router's: with [`Routing::Sticky`] a user is wholly on the candidate
//! when `coalmine_router::bucket(release, user)` is below the stage's threshold, as a
//! cohort release routes; with [`Routing::PerRequest`] the same users' requests each
//! draw a side by the weight, as a weighted alias does, for comparison.

use coalmine_router::{bucket, threshold, REPLICATES};
use rand::rngs::SmallRng;
use rand_distr::{Beta, Distribution, LogNormal as LogNormalDist};

use crate::{binomial, poisson};

/// Sigma of log request rates between users.
pub const RATE_SIGMA: f64 = 1.5;
/// Sigma of a user's log offset on latency, and on output tokens: some users' prompts run
/// long or ask for long answers, on either version.
pub const USER_LATENCY_SIGMA: f64 = 0.3;
pub const USER_TOKENS_SIGMA: f64 = 0.3;
/// Concentration of users' error propensities (alpha + beta of their Beta).
pub const PROPENSITY_CONCENTRATION: f64 = 100.0;

/// How a release sends users' requests to the candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// By the published draw of (release, user): a user stays on one side.
    Sticky,
    /// Each request draws a side by the stage's weight.
    PerRequest,
}

impl Routing {
    pub fn describe(self) -> &'static str {
        match self {
            Routing::Sticky => "sticky by user (a cohort release)",
            Routing::PerRequest => "per request (a weighted alias), the same users",
        }
    }
}

#[derive(Clone, Debug)]
struct User {
    bucket: u32,
    per_minute: f64,
    error_rate: f64,
    latency_offset: f64,
    tokens_offset: f64,
}

/// One release's active users.
#[derive(Clone, Debug)]
pub struct Population {
    users: Vec<User>,
    pub routing: Routing,
}

/// One side's requests and errors in a stretch of traffic, and the request-weighted sums
/// of its users' log offsets (and their squares) on latency and on tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Served {
    pub requests: f64,
    pub errors: f64,
    pub latency: Moments,
    pub tokens: Moments,
}

/// Request-weighted sums of a per-user offset: `sum` of n x offset, `squares` of n x offset².
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub sum: f64,
    pub squares: f64,
}

impl Served {
    pub fn plus(self, other: Served) -> Served {
        Served {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
            latency: self.latency.plus(other.latency),
            tokens: self.tokens.plus(other.tokens),
        }
    }
}

/// Both sides over every group.
pub fn total(groups: &[(Served, Served)]) -> (Served, Served) {
    groups.iter().fold(Default::default(), |(c, s), (gc, gs)| (c.plus(*gc), s.plus(*gs)))
}

impl Moments {
    fn add(&mut self, n: f64, offset: f64) {
        self.sum += n * offset;
        self.squares += n * offset * offset;
    }

    pub fn plus(self, other: Moments) -> Moments {
        Moments { sum: self.sum + other.sum, squares: self.squares + other.squares }
    }

    /// The offsets' mean and variance over `n` requests.
    pub fn mean_and_variance(&self, n: f64) -> (f64, f64) {
        if n <= 0.0 {
            return (0.0, 0.0);
        }
        let mean = self.sum / n;
        (mean, (self.squares / n - mean * mean).max(0.0))
    }
}

impl Population {
    /// `users` active users of release `release` sharing `traffic` requests a minute,
    /// failing around `stable_error_rate`.
    pub fn draw(
        rng: &mut SmallRng,
        release: &str,
        users: usize,
        traffic: f64,
        stable_error_rate: f64,
        routing: Routing,
    ) -> Population {
        let rates = LogNormalDist::new(0.0, RATE_SIGMA).expect("a lognormal");
        let (a, b) =
            (PROPENSITY_CONCENTRATION * stable_error_rate, PROPENSITY_CONCENTRATION * (1.0 - stable_error_rate));
        let propensity = Beta::new(a, b).expect("a beta");
        let latency = rand_distr::Normal::new(0.0, USER_LATENCY_SIGMA).expect("a normal");
        let tokens = rand_distr::Normal::new(0.0, USER_TOKENS_SIGMA).expect("a normal");
        let raw: Vec<f64> = (0..users).map(|_| rates.sample(rng)).collect();
        let total: f64 = raw.iter().sum();
        let users = raw
            .into_iter()
            .enumerate()
            .map(|(i, rate)| User {
                bucket: bucket(release, &format!("user-{i}")),
                per_minute: traffic * rate / total,
                error_rate: propensity.sample(rng),
                latency_offset: latency.sample(rng),
                tokens_offset: tokens.sample(rng),
            })
            .collect();
        Population { users, routing }
    }

    /// Users on the candidate at `weight` under sticky routing.
    pub fn drawn(&self, weight: f64) -> usize {
        let threshold = threshold(weight * 100.0);
        self.users.iter().filter(|u| u.bucket < threshold).count()
    }

    /// `minutes` of traffic at `weight`: (candidate, stable) in each of the router's
    /// replicate groups (`bucket mod REPLICATES`), the candidate's errors `error_factor`
    /// times each user's propensity.
    pub fn serve(&self, rng: &mut SmallRng, weight: f64, minutes: f64, error_factor: f64) -> Vec<(Served, Served)> {
        let threshold = threshold(weight * 100.0);
        let mut groups = vec![(Served::default(), Served::default()); REPLICATES as usize];
        for user in &self.users {
            let (canary, stable) = &mut groups[(user.bucket % REPLICATES) as usize];
            let requests = poisson(rng, user.per_minute * minutes);
            if requests == 0.0 {
                continue;
            }
            let to_canary = match self.routing {
                Routing::Sticky if user.bucket < threshold => requests,
                Routing::Sticky => 0.0,
                Routing::PerRequest => binomial(rng, requests, weight),
            };
            let to_stable = requests - to_canary;
            canary.requests += to_canary;
            canary.errors += binomial(rng, to_canary, (user.error_rate * error_factor).min(1.0));
            stable.requests += to_stable;
            stable.errors += binomial(rng, to_stable, user.error_rate);
            for (side, n) in [(&mut *canary, to_canary), (&mut *stable, to_stable)] {
                side.latency.add(n, user.latency_offset);
                side.tokens.add(n, user.tokens_offset);
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_few_heavy_users_send_most_requests_and_a_few_fail_far_more_than_the_rest() {
        let mut rng = SmallRng::seed_from_u64(7);
        let population = Population::draw(&mut rng, "r", 5000, 1000.0, 0.005, Routing::Sticky);
        let total: f64 = population.users.iter().map(|u| u.per_minute).sum();
        assert!((total - 1000.0).abs() < 1e-6, "the users share the traffic: {total}");
        let mut rates: Vec<f64> = population.users.iter().map(|u| u.per_minute).collect();
        rates.sort_by(|a, b| b.total_cmp(a));
        // For sigma 1.5, the heaviest tenth sends 1 - Phi(1.28 - 1.5) = 59% of the requests.
        let top = rates[..500].iter().sum::<f64>() / total;
        assert!((0.5..0.68).contains(&top), "the heaviest tenth of users send {top} of the requests");
        let mean = population.users.iter().map(|u| u.error_rate).sum::<f64>() / 5000.0;
        assert!((mean - 0.005).abs() < 0.001, "propensities centre on the stable's rate: {mean}");
        // Beta(0.5, 99.5) is about chi-squared(1) / 200: half the users fail at under half
        // the mean rate, one in twelve at over three times it.
        let share =
            |f: &dyn Fn(f64) -> bool| population.users.iter().filter(|u| f(u.error_rate)).count() as f64 / 5000.0;
        let (low, high) = (share(&|p| p < 0.0025), share(&|p| p > 0.015));
        assert!((0.47..0.57).contains(&low), "under half the mean: {low}");
        assert!((0.06..0.11).contains(&high), "over three times the mean: {high}");
    }

    #[test]
    fn sticky_routing_sends_a_user_wholly_to_one_side_and_keeps_the_drawn_at_a_larger_share() {
        let mut rng = SmallRng::seed_from_u64(8);
        let population = Population::draw(&mut rng, "r", 2000, 1000.0, 0.005, Routing::Sticky);
        assert!((population.drawn(0.05) as f64 - 100.0).abs() < 35.0, "{}", population.drawn(0.05));
        assert!(population.drawn(0.25) >= population.drawn(0.05));
        let (canary, stable) = total(&population.serve(&mut rng, 0.0, 10.0, 1.0));
        assert_eq!(canary.requests, 0.0, "nobody drawn at 0");
        assert!(stable.requests > 9000.0);
        let per_request = Population { routing: Routing::PerRequest, ..population.clone() };
        let (canary, stable) = total(&per_request.serve(&mut rng, 0.5, 10.0, 1.0));
        let share = canary.requests / (canary.requests + stable.requests);
        assert!((share - 0.5).abs() < 0.03, "per request, half of the requests: {share}");
    }
}
