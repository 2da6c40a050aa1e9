//! One release per target: the first tick claims it, a second release is refused untouched.

use super::*;
use crate::memory::Claims;

fn first_tick(execution: &str) -> serde_json::Value {
    serde_json::json!({"execution": execution, "state": serde_json::to_value(release(gates())).unwrap()})
}

#[tokio::test]
async fn a_second_release_on_a_target_is_refused_before_it_reads_or_moves_anything() {
    let world = World::new(stable_only());
    let (deps, claims) = (world.deps(), Claims::default());
    tick_payload(&first_tick(ME), &deps, &claims, T0).await.unwrap();
    let reads = *world.router.reads.lock().unwrap();

    let err = tick_payload(&first_tick(OTHER), &deps, &claims, T0 + 1).await.unwrap_err();

    assert_eq!(err.error_type(), "InvalidRelease", "{err}");
    assert!(err.to_string().contains("another release is in flight on lambda:ai-handler:live"), "{err}");
    assert!(err.to_string().contains("Release:ai-handler-42"), "names the holder: {err}");
    assert_eq!((*world.router.reads.lock().unwrap(), world.router.write_count()), (reads, 1), "untouched");
    // A retried first tick of the holder is still the holder's.
    tick_payload(&first_tick(ME), &deps, &claims, T0 + 2).await.unwrap();
}

#[tokio::test]
async fn a_claim_whose_execution_ended_is_taken_over_and_the_target_still_says_whether_it_is_free() {
    let world = World::new(stable_only());
    let (deps, claims) = (world.deps(), Claims::default());
    tick_payload(&first_tick(ME), &deps, &claims, T0).await.unwrap();
    // The holder died without ending its release: its canary is still live.
    claims.end(ME);
    let err = tick_payload(&first_tick(OTHER), &deps, &claims, T0 + 1).await.unwrap_err();
    assert_eq!(claims.held.lock().unwrap()["lambda:ai-handler:live"], OTHER, "the claim passed on");
    assert!(err.to_string().contains("in flight"), "the stamp still refuses a start over a live canary: {err}");
    assert_eq!(world.router.write_count(), 1);
}
