"""coalmine's cohort router for Python model handlers and front functions: which alias a
unit (a user, a conversation, a tenant) is sent to during a cohort release, and why.

Copy this file beside your handler; it needs only the standard library. The function is
the one coalmine publishes (events/cohorts/assignment-vectors.json holds its test
vectors, shared with the Rust router and `coalmine route`):

    bucket = first 8 bytes, big-endian, of SHA-256(release UTF-8, 0x1F, unit UTF-8) mod 10000
    the unit is drawn into the candidate's cohort when bucket < threshold

(the threshold, of 10000, is what the stepper publishes for the stage: 500 at 5 %), so a
unit gets the same answer all through a release, a unit drawn at 5 % is still drawn at
25 %, and a new release draws a new cohort. Before the draw: an empty unit goes to the
stable; a unit the release never gives the candidate goes to the stable; a pinned unit
(internal users, a beta tenant) goes to the candidate from the first stage.

    from coalmine_router import Cohort, route
    cohort = Cohort.from_json(config)          # what the stepper published for the release
    decision = route(cohort, unit=user_id, attributes={"group": "internal"})
    alias = decision.alias                      # "canary" or "live": invoke that
"""

import hashlib
import json
from dataclasses import dataclass, field

BUCKETS = 10_000
SEPARATOR = b"\x1f"


def bucket(release, unit):
    """The unit's place in [0, 10000) for this release."""
    digest = hashlib.sha256(release.encode("utf-8") + SEPARATOR + unit.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass
class Match:
    """Units named outright, or by an attribute: a unit matches when its id is listed, or
    when any listed attribute has one of the listed values."""

    units: list = field(default_factory=list)
    attributes: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, value):
        value = value or {}
        return cls(units=list(value.get("units", [])), attributes=dict(value.get("match", {})))

    def why(self, unit, attributes):
        if unit in self.units:
            return "listed"
        for key in sorted(self.attributes):
            if attributes.get(key) in self.attributes[key]:
                return f"{key}={attributes[key]}"
        return None


@dataclass
class Cohort:
    release: str
    threshold: int
    pinned: Match = field(default_factory=Match)
    never: Match = field(default_factory=Match)
    alias: str = "canary"
    stable_alias: str = "live"

    @classmethod
    def from_json(cls, value):
        if isinstance(value, (str, bytes)):
            value = json.loads(value)
        return cls(
            release=value["release"],
            threshold=int(value["threshold"]),
            pinned=Match.from_json(value.get("pinned")),
            never=Match.from_json(value.get("never")),
            alias=value.get("alias", "canary"),
            stable_alias=value.get("stable_alias", "live"),
        )


@dataclass
class Decision:
    candidate: bool
    alias: str
    why: str


def route(cohort, unit, attributes=None):
    """Which alias `unit` is sent to, and why, in words."""
    attributes = attributes or {}
    stable = lambda why: Decision(False, cohort.stable_alias, why)  # noqa: E731
    candidate = lambda why: Decision(True, cohort.alias, why)  # noqa: E731
    if not isinstance(unit, str) or not unit:
        return stable("no unit id: sent to the stable")
    never = cohort.never.why(unit, attributes)
    if never:
        return stable(f"never given the candidate ({never})")
    pinned = cohort.pinned.why(unit, attributes)
    if pinned:
        return candidate(f"pinned to the candidate ({pinned})")
    b, t = bucket(cohort.release, unit), min(max(cohort.threshold, 0), BUCKETS)
    if b < t:
        return candidate(f"drawn: bucket {b} is below {t} of {BUCKETS}")
    return stable(f"not drawn: bucket {b} is not below {t} of {BUCKETS}")
