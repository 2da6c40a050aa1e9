//! A bake is counted only over checks that watched it.

use super::*;
use crate::release::canary::progress::CanaryProgress;
use crate::release::core::progress::vouched_span;

#[tokio::test]
async fn a_stage_never_passes_on_the_clock_alone_a_silence_between_checks_is_not_baked() {
    let world = World::new(stable_only());
    let r = release(gates());
    assert_eq!(vouched_span(r.check_every_seconds), 120);
    let p = world.tick(&r, None, T0).await.unwrap();
    // The tick fails for a long while (retried, then everything out of reach): the next
    // check that succeeds comes 700 s in, past the 600 s bake.
    let p = world.tick_unwatched(ME, &r, Some(p), T0 + 700).await.unwrap();
    assert_eq!((p.status, p.stage, p.watched_seconds), (Status::Baking, 0, 120), "{}", p.reason);
    assert_eq!(world.router.write_count(), 1, "still at its first stage");
    // Regular checks bake on, and the stage passes once 600 s were watched.
    let mut p = p;
    let mut now = T0 + 700;
    while p.stage == 0 {
        now += 60;
        p = world.tick_unwatched(ME, &r, Some(p), now).await.unwrap();
    }
    assert_eq!(now, T0 + 700 + 8 * 60, "120 s vouched by the late check, then eight of 60 s");
    assert_eq!((p.status, p.weight), (Status::Advanced, 0.25));
}

#[test]
fn a_check_vouches_for_twice_the_time_between_checks_and_at_least_ten_seconds_more() {
    assert_eq!((vouched_span(1), vouched_span(5), vouched_span(60), vouched_span(u64::MAX)), (11, 15, 120, u64::MAX));
    let mut p: Progress = Progress::new("41", T0, CanaryProgress::wrote(&lambda_split("41", "42", 0.05)));
    assert_eq!(p.vouch(T0 + 61, 60), 61);
    assert_eq!(p.vouch(T0 + 61 + 45, 60), 106);
    assert_eq!(p.vouch(T0 + 61 + 45 + 1000, 60), 226, "a silence of 1000 s counts 120");
    assert_eq!(p.vouch(T0, 60), 226, "a clock that went back counts nothing");
}
