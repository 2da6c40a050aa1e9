//! What one Step Functions execution can hold, and so what a release may ask for. A
//! standard workflow runs at most a year, records at most 25 000 history events, and
//! passes at most 256 KB of state from task to task; past any of them the execution
//! fails, whatever the release was doing. A release that could reach one is refused at
//! validation, with the limit named, instead of failing days in.

use crate::release::core::document::Problems;

/// Stages a release may have: a progress keeps one sample per stage, and every stage is
/// a write a person reads about.
pub const MAX_STAGES: usize = 20;

/// Ticks the longest run of a release may take. A tick costs the execution nine history
/// events (the task's state entered, scheduled, started, succeeded and exited, the choice
/// and the wait entered and exited); 2 000 ticks are 18 000 of the 25 000, leaving room
/// for retried ticks (three events an attempt) and the safety step.
pub const MAX_TICKS: u64 = 2_000;

/// The longest a release may run: a year (Step Functions' limit) less a week, for retries
/// and the ticks after the last bake.
pub const MAX_RELEASE_SECONDS: u64 = 358 * 86_400;

/// Every phase's longest time in a release (a stage's longest bake, a shadow), checked
/// against what an execution can hold: no value may
/// exceed the release's bound on its own (so no sum of them overflows), nor may their
/// total, nor the ticks they take at `check_every_seconds`.
pub fn check(phases: &[(String, u64)], check_every_seconds: u64, problems: &mut Problems) {
    let mut total: u64 = 0;
    let mut ticks: u64 = 1;
    for (field, seconds) in phases {
        if *seconds > MAX_RELEASE_SECONDS {
            problems.add(
                field,
                format!("{seconds} s is longer than a release can run ({MAX_RELEASE_SECONDS} s, under Step Functions' year)"),
            );
            return;
        }
        total = total.saturating_add(*seconds);
        ticks = ticks.saturating_add(seconds.div_ceil(check_every_seconds.max(1)).max(1));
    }
    if total > MAX_RELEASE_SECONDS {
        problems.add(
            "stages",
            format!(
                "at their longest the bakes run {total} s, longer than a release can ({MAX_RELEASE_SECONDS} s, under \
                 Step Functions' year)"
            ),
        );
    } else if ticks > MAX_TICKS {
        problems.add(
            "check_every_seconds",
            format!(
                "{check_every_seconds}: at their longest the bakes take {ticks} checks, more than one execution holds \
                 ({MAX_TICKS}, within Step Functions' 25 000 history events); check less often (at least {} s), or \
                 shorten the longest bakes",
                total.div_ceil(MAX_TICKS - 1).max(check_every_seconds + 1)
            ),
        );
    }
}

/// What `coalmine validate` says of the limits.
pub fn describe() -> String {
    format!(
        "at most {MAX_STAGES} stages, {MAX_TICKS} checks and {} days in all (one Step Functions execution); holds, \
         pauses and approval waits spend checks too, and a release that runs out of them is rolled back",
        MAX_RELEASE_SECONDS / 86_400
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(phases: &[(&str, u64)], check_every: u64) -> Vec<String> {
        let phases: Vec<(String, u64)> = phases.iter().map(|(f, s)| ((*f).to_owned(), *s)).collect();
        let mut found = Problems::default();
        check(&phases, check_every, &mut found);
        found.into_vec()
    }

    #[test]
    fn what_an_execution_holds_passes_and_what_it_cannot_is_refused_by_name() {
        assert!(problems(&[("stages[0]", 900), ("stages[1]", 900)], 60).is_empty());
        let huge = problems(&[("stages[0].bake_seconds", u64::MAX)], 60);
        assert!(huge[0].starts_with("stages[0].bake_seconds: 18446744073709551615 s is longer"), "{huge:?}");
        let long = problems(&[("stages[0]", 200 * 86_400), ("stages[1]", 200 * 86_400)], 86_400);
        assert!(long[0].starts_with("stages: at their longest"), "{long:?}");
        // Three days of approval waits at one check a minute: 4 320 checks.
        let chatty = problems(&[("a", 86_400), ("b", 86_400), ("c", 86_400)], 60);
        assert!(chatty[0].contains("4321 checks") && chatty[0].contains("at least 130 s"), "{chatty:?}");
        assert!(problems(&[("a", 86_400), ("b", 86_400), ("c", 86_400)], 130).is_empty(), "the advice suffices");
    }
}
