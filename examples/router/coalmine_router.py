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

    from coalmine_router import AppConfigSource, Router
    router = Router(AppConfigSource(APP_ID, ENV_ID, profile_name("ai-handler", "live")))
    decision, answer = router.invoke(lambda_client, "ai-handler", unit=user_id,
                                     attributes={"group": "internal"}, payload=request)

The cohort is read from AppConfig (what the stepper publishes at each stage), at most once
per poll interval; a router that cannot read it sends every unit to the stable and logs
why. Nothing here is on a rollback's path: a rollback points the cohort alias back at the
stable, so a unit routed to it a moment later is served by the stable anyway.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

LOG = logging.getLogger("coalmine_router")

BUCKETS = 10_000
SEPARATOR = b"\x1f"
# The groups a side's units fall in for the judge (decision 0021): each a random sample of
# whole units, so their spread measures the variance with units as the draw.
REPLICATES = 16


def replicate(release, unit):
    """Which of the REPLICATES groups `unit` is in, for `release`."""
    return bucket(release, unit) % REPLICATES


def profile_name(function, alias):
    """The AppConfig profile a function's cohort is published in, by its primary alias
    (the stack's outputs CohortApplicationId and CohortEnvironmentId name the rest)."""
    return f"{function}.{alias}"


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
    # "drawn", "pinned" or "stable"; the unit's replicate group (None without a unit).
    assignment: str = "stable"
    replicate: object = None


def route(cohort, unit, attributes=None):
    """Which alias `unit` is sent to, and why, in words."""
    attributes = attributes or {}
    if not isinstance(unit, str) or not unit:
        return Decision(False, cohort.stable_alias, "no unit id: sent to the stable")
    group = replicate(cohort.release, unit)
    stable = lambda why: Decision(False, cohort.stable_alias, why, "stable", group)  # noqa: E731
    candidate = lambda why, how: Decision(True, cohort.alias, why, how, group)  # noqa: E731
    never = cohort.never.why(unit, attributes)
    if never:
        return stable(f"never given the candidate ({never})")
    pinned = cohort.pinned.why(unit, attributes)
    if pinned:
        return candidate(f"pinned to the candidate ({pinned})", "pinned")
    b, t = bucket(cohort.release, unit), min(max(cohort.threshold, 0), BUCKETS)
    if b < t:
        return candidate(f"drawn: bucket {b} is below {t} of {BUCKETS}", "drawn")
    return stable(f"not drawn: bucket {b} is not below {t} of {BUCKETS}")


class AppConfigSource:
    """The cohort the stepper published to AppConfig, read through its data plane (made
    for many frequent readers): at most once per poll interval, and kept while reads fail
    for up to `max_stale_seconds`; after that, or before any read worked, `cohort()` is
    None and every unit goes to the stable."""

    def __init__(self, application, environment, profile, client=None, poll_seconds=15,
                 max_stale_seconds=60, clock=time.monotonic):
        self.names = (application, environment, profile)
        self.client = client
        self.poll_seconds = max(15, int(poll_seconds))
        self.max_stale_seconds = max_stale_seconds
        self.clock = clock
        self.token = None
        self.cached = None
        self.read_at = None
        self.next_read = 0.0

    def _client(self):
        if self.client is None:
            import boto3  # in every Lambda Python runtime

            self.client = boto3.client("appconfigdata")
        return self.client

    def _poll(self):
        client = self._client()
        if self.token is None:
            application, environment, profile = self.names
            self.token = client.start_configuration_session(
                ApplicationIdentifier=application, EnvironmentIdentifier=environment,
                ConfigurationProfileIdentifier=profile, RequiredMinimumPollIntervalInSeconds=self.poll_seconds,
            )["InitialConfigurationToken"]
        out = client.get_latest_configuration(ConfigurationToken=self.token)
        self.token = out["NextPollConfigurationToken"]
        body = out["Configuration"].read()
        interval = int(out.get("NextPollIntervalInSeconds") or self.poll_seconds)
        # An empty body means "unchanged since your last read".
        return (Cohort.from_json(body) if body else self.cached), max(interval, self.poll_seconds)

    def cohort(self):
        now = self.clock()
        if now < self.next_read:
            return self.cached
        try:
            cohort, interval = self._poll()
            self.cached, self.read_at, self.next_read = cohort, now, now + interval
        except Exception as e:  # noqa: BLE001 - any failure to read sends units to the stable
            self.token = None
            self.next_read = now + 1.0
            stale = self.read_at is None or now - self.read_at > self.max_stale_seconds
            LOG.warning("coalmine router: the cohort could not be read (%s); %s", e,
                        "sending every unit to the stable" if stale else "keeping the last one read")
            if stale:
                self.cached = None
        return self.cached


class ServedLog:
    """Which version served each unit, and since when, in the coalmine stack's served table
    (its output ServedTableName), for feedback that arrives later to find the version that
    answered: the same records as the Rust router's `served::ServedLog`."""

    KEEP_SECONDS = 30 * 24 * 3600
    # A record is written just after the answer it follows.
    RECORD_SLACK_SECONDS = 60

    def __init__(self, table, client=None, clock=time.time):
        self.table = table
        self.client = client
        self.clock = clock
        self.recorded = {}

    def _client(self):
        if self.client is None:
            import boto3  # in every Lambda Python runtime

            self.client = boto3.client("dynamodb")
        return self.client

    def record(self, profile, unit, decision, version, release=None):
        """Appends `version` to the unit's record unless it is already the latest; a
        conversation's later turns write nothing from this instance."""
        if not unit or not version or self.recorded.get((profile, unit)) == version:
            return
        now = int(self.clock())
        entry = {"version": {"S": version}, "since": {"N": str(now)}, "assignment": {"S": decision.assignment}}
        if release:
            entry["release"] = {"S": release}
        if decision.replicate is not None:
            entry["replicate"] = {"N": str(decision.replicate)}
        try:
            self._client().update_item(
                TableName=self.table,
                Key={"profile": {"S": profile}, "unit": {"S": unit}},
                UpdateExpression="SET versions = list_append(if_not_exists(versions, :none), :entry), "
                                 "latest = :version, expires = :expires",
                ConditionExpression="attribute_not_exists(latest) OR latest <> :version",
                ExpressionAttributeValues={":none": {"L": []}, ":entry": {"L": [{"M": entry}]},
                                           ":version": {"S": version},
                                           ":expires": {"N": str(now + self.KEEP_SECONDS)}},
            )
        except Exception as e:  # noqa: BLE001 - a record never fails the request
            if "ConditionalCheckFailed" not in str(e):
                logging.warning("coalmine router: which version served %s was not recorded (%s); late feedback on "
                                "it will not find its version", unit, e)
                return
        if len(self.recorded) >= 100_000:
            self.recorded.clear()
        self.recorded[(profile, unit)] = version

    def history(self, profile, unit):
        """Every version that served the unit, oldest first: dicts of version, since,
        assignment, replicate, release."""
        item = self._client().get_item(TableName=self.table, Key={"profile": {"S": profile}, "unit": {"S": unit}},
                                       ConsistentRead=True).get("Item", {})
        out = []
        for entry in item.get("versions", {}).get("L", []):
            m = entry.get("M", {})
            if "version" in m and "since" in m:
                out.append({
                    "version": m["version"]["S"], "since": int(m["since"]["N"]),
                    "assignment": m.get("assignment", {}).get("S", "stable"),
                    "replicate": int(m["replicate"]["N"]) if "replicate" in m else None,
                    "release": m.get("release", {}).get("S"),
                })
        return out

    def version_at(self, profile, unit, at):
        """The record of the version that served `unit` at `at` (seconds since the epoch,
        the answer's time), or None."""
        history = self.history(profile, unit)
        for served in reversed(history):
            if served["since"] <= at:
                return served
        if history and at + self.RECORD_SLACK_SECONDS >= history[0]["since"]:
            return history[0]
        return None


class Router:
    """Routes units by the cohort its source gives, and invokes the alias it names; given
    a `served` log and the `profile` it keeps records under, records which version served
    each unit."""

    def __init__(self, source, stable_alias="live", emit=print, served=None, profile=None):
        self.source = source
        self.stable_alias = stable_alias
        self.emit = emit
        self.served = served
        self.profile = profile

    def route(self, unit, attributes=None):
        cohort = self.source.cohort()
        if cohort is None:
            return Decision(False, self.stable_alias, "no cohort could be read: sent to the stable")
        return route(cohort, unit, attributes)

    def invoke(self, lambda_client, function, unit, attributes=None, payload=None):
        """Invokes `function` at the alias the unit is routed to; publishes one EMF line
        naming the version that actually served, and returns (decision, answer bytes)."""
        decision = self.route(unit, attributes)
        asked = time.monotonic()
        out = lambda_client.invoke(FunctionName=function, Qualifier=decision.alias,
                                   Payload=json.dumps(payload if payload is not None else {}).encode("utf-8"))
        answer = out["Payload"].read()
        waited_ms = (time.monotonic() - asked) * 1000.0
        version = out.get("ExecutedVersion", "")
        self.emit(json.dumps({
            "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
                "Namespace": "coalmine/Router",
                "Dimensions": [["FunctionName", "Version"], ["FunctionName", "Version", "Assignment"],
                               ["FunctionName", "Version", "Assignment", "Replicate"]],
                "Metrics": [{"Name": "RoutedRequests", "Unit": "Count"}, {"Name": "RoutedErrors", "Unit": "Count"},
                            {"Name": "RoutedLatency", "Unit": "Milliseconds"}],
            }]},
            "FunctionName": function, "Version": version, "Cohort": "candidate" if decision.candidate else "stable",
            "Assignment": decision.assignment,
            "Replicate": "-" if decision.replicate is None else str(decision.replicate),
            "RoutedRequests": 1, "RoutedErrors": 1 if out.get("FunctionError") else 0,
            "RoutedLatency": waited_ms,
        }))
        if self.served is not None and self.profile:
            cohort = self.source.cohort()
            self.served.record(self.profile, unit, decision, version, cohort.release if cohort else None)
        return decision, answer
