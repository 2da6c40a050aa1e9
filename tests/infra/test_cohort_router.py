"""The Python cohort router routes every unit of the shared vectors as they say (the Rust
router is held to the same file), keeps a unit's answer as the share grows, and sends
garbage to the stable."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "router"))

import coalmine_router  # noqa: E402

VECTORS = json.loads((ROOT / "events" / "cohorts" / "assignment-vectors.json").read_text())


def test_every_bucket_matches_the_vectors():
    assert len(VECTORS["buckets"]) >= 10
    for case in VECTORS["buckets"]:
        assert coalmine_router.bucket(case["release"], case["unit"]) == case["bucket"], case


def test_every_route_matches_the_vectors():
    for case in VECTORS["routes"]:
        cohort = coalmine_router.Cohort.from_json(dict(VECTORS["cohort"], threshold=case["threshold"]))
        decision = coalmine_router.route(cohort, case["unit"], case["attributes"])
        assert (decision.candidate, decision.alias, decision.why) == (case["candidate"], case["alias"], case["why"])


def test_a_unit_drawn_at_5_percent_is_drawn_at_25_and_a_new_release_draws_anew():
    units = [f"user-{i}" for i in range(5000)]

    def drawn(release, threshold):
        cohort = coalmine_router.Cohort(release=release, threshold=threshold)
        return [coalmine_router.route(cohort, u).candidate for u in units]

    at5, at25 = drawn("r1", 500), drawn("r1", 2500)
    assert all(b for a, b in zip(at5, at25) if a)
    assert 0.035 < sum(at5) / len(units) < 0.065
    both = sum(1 for a, b in zip(at5, drawn("r2", 500)) if a and b)
    assert both < 0.01 * len(units)


def test_garbage_goes_to_the_stable():
    cohort = coalmine_router.Cohort(release="r", threshold=10_000)
    for unit in ["", None, 42]:
        decision = coalmine_router.route(cohort, unit, {"group": "internal"})
        assert (decision.candidate, decision.alias) == (False, "live"), unit
