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


# The router's source, against the local AWS's AppConfig: what the stepper will publish at
# each stage, read as a Lambda handler would, at most once per poll interval.

import io  # noqa: E402
import uuid  # noqa: E402

import boto3  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Counting:
    """The data-plane client, counting the calls that reach AppConfig."""

    def __init__(self, client):
        self.client, self.calls = client, 0

    def start_configuration_session(self, **kw):
        self.calls += 1
        return self.client.start_configuration_session(**kw)

    def get_latest_configuration(self, **kw):
        self.calls += 1
        return self.client.get_latest_configuration(**kw)


def publish(appconfig, app, env, profile, strategy, threshold):
    """As the stepper publishes a stage: a hosted version, deployed at once."""
    body = dict(VECTORS["cohort"], threshold=threshold)
    version = appconfig.create_hosted_configuration_version(
        ApplicationId=app, ConfigurationProfileId=profile, Content=json.dumps(body).encode(),
        ContentType="application/json",
    )["VersionNumber"]
    appconfig.start_deployment(ApplicationId=app, EnvironmentId=env, DeploymentStrategyId=strategy,
                               ConfigurationProfileId=profile, ConfigurationVersion=str(version))


def cohort_store():
    appconfig = boto3.client("appconfig")
    name = f"coalmine-cohorts-{uuid.uuid4().hex[:8]}"
    app = appconfig.create_application(Name=name)["Id"]
    env = appconfig.create_environment(ApplicationId=app, Name="production")["Id"]
    profile = appconfig.create_configuration_profile(ApplicationId=app, Name=coalmine_router.profile_name("ai-handler", "live"), LocationUri="hosted")["Id"]
    # No bake: a stage's change must not wait for the last one's bake to end.
    strategy = appconfig.create_deployment_strategy(
        Name=f"{name}-immediate", DeploymentDurationInMinutes=0, FinalBakeTimeInMinutes=0, GrowthFactor=100,
        GrowthType="LINEAR", ReplicateTo="NONE",
    )["Id"]
    return appconfig, app, env, profile, strategy


def test_a_published_stage_is_read_once_per_poll_interval_and_the_next_one_after_it(caplog):
    appconfig, app, env, profile, strategy = cohort_store()
    publish(appconfig, app, env, profile, strategy, 500)
    clock, data = Clock(), Counting(boto3.client("appconfigdata"))
    source = coalmine_router.AppConfigSource(app, env, profile, client=data, clock=clock)

    assert source.cohort().threshold == 500
    first = data.calls
    clock.now += 5
    assert source.cohort().threshold == 500 and data.calls == first, "within the poll interval, no call"

    publish(appconfig, app, env, profile, strategy, 2500)
    clock.now += 15
    assert source.cohort().threshold == 2500
    clock.now += 15
    assert source.cohort().threshold == 2500, "an unchanged configuration keeps the cohort"
    assert not [r for r in caplog.records if r.name == "coalmine_router"], "an empty answer is not a failure"
    assert coalmine_router.Router(source).route("carol", {"group": "internal"}).alias == "canary"


def test_a_source_that_cannot_be_read_sends_every_unit_to_the_stable():
    clock = Clock()
    source = coalmine_router.AppConfigSource("no-such-app", "production", "ai-handler",
                                             client=boto3.client("appconfigdata"), clock=clock)
    decision = coalmine_router.Router(source).route("carol", {"group": "internal"})
    assert (decision.candidate, decision.alias) == (False, "live")
    assert "no cohort could be read" in decision.why


class Flaky:
    def __init__(self):
        self.up = True

    def start_configuration_session(self, **kw):
        if not self.up:
            raise ConnectionError("AppConfig unreachable")
        return {"InitialConfigurationToken": "t0"}

    def get_latest_configuration(self, **kw):
        if not self.up:
            raise ConnectionError("AppConfig unreachable")
        body = json.dumps(dict(VECTORS["cohort"], threshold=10_000)).encode()
        return {"NextPollConfigurationToken": "t1", "Configuration": io.BytesIO(body), "NextPollIntervalInSeconds": 15}


def test_a_cohort_read_before_an_outage_is_kept_a_minute_then_the_stable_takes_everyone():
    clock, client = Clock(), Flaky()
    router = coalmine_router.Router(coalmine_router.AppConfigSource("a", "e", "p", client=client, clock=clock))
    assert router.route("user-1").candidate
    client.up = False
    clock.now += 30
    assert router.route("user-1").candidate, "30 s into the outage: the last cohort read"
    clock.now += 45
    assert not router.route("user-1").candidate, "75 s into it: every unit to the stable"


def test_an_invocation_goes_to_the_routed_alias_and_its_line_names_the_version_that_served():
    class Lambda:
        def invoke(self, **kw):
            self.asked = kw
            return {"Payload": io.BytesIO(b'{"answer": 42}'), "ExecutedVersion": "7"}

    class Fixed:
        def cohort(self):
            return coalmine_router.Cohort.from_json(dict(VECTORS["cohort"], threshold=0))

    lines, client = [], Lambda()
    router = coalmine_router.Router(Fixed(), emit=lines.append)
    decision, answer = router.invoke(client, "ai-handler", "carol", {"group": "internal"}, {"q": 1})
    assert (decision.alias, client.asked["Qualifier"], answer) == ("canary", "canary", b'{"answer": 42}')
    line = json.loads(lines[0])
    assert (line["Version"], line["Cohort"], line["RoutedRequests"]) == ("7", "candidate", 1)
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["FunctionName", "Version"], ["FunctionName", "Version", "Assignment"],
        ["FunctionName", "Version", "Assignment", "Replicate"]]
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"][2] == {"Name": "RoutedLatency", "Unit": "Milliseconds"}
    assert line["RoutedLatency"] >= 0
    # carol is pinned (group=internal): her replicate is her bucket's, as the Rust router's.
    release = VECTORS["cohort"]["release"]
    expected = str(coalmine_router.bucket(release, "carol") % coalmine_router.REPLICATES)
    assert (line["Assignment"], line["Replicate"]) == ("pinned", expected)
    assert coalmine_router.route(coalmine_router.Cohort.from_json(dict(VECTORS["cohort"], threshold=0)), "").replicate is None


def served_table():
    dynamodb = boto3.client("dynamodb")
    name = f"coalmine-served-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "profile", "KeyType": "HASH"}, {"AttributeName": "unit", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "profile", "AttributeType": "S"},
                              {"AttributeName": "unit", "AttributeType": "S"}],
    )
    return name


def test_the_served_log_keeps_each_version_that_served_a_unit_and_finds_the_one_at_an_answers_time():
    class Lambda:
        version = "2"

        def invoke(self, **kw):
            return {"Payload": io.BytesIO(b"{}"), "ExecutedVersion": self.version}

    class Fixed:
        def cohort(self):
            return coalmine_router.Cohort.from_json(dict(VECTORS["cohort"], threshold=10_000))

    class Counting:
        def __init__(self):
            self.client, self.writes = boto3.client("dynamodb"), 0

        def update_item(self, **kw):
            self.writes += 1
            return self.client.update_item(**kw)

        def get_item(self, **kw):
            return self.client.get_item(**kw)

    clock, table, counting = Clock(), served_table(), Counting()
    clock.now = 1_800_000_000
    log = coalmine_router.ServedLog(table, client=counting, clock=clock)
    client = Lambda()
    router = coalmine_router.Router(Fixed(), emit=lambda _: None, served=log, profile="ai-handler.live")
    for _ in range(3):
        router.invoke(client, "ai-handler", "user-36")
    assert counting.writes == 1, "a conversation's later turns write nothing"
    clock.now += 300
    client.version = "1"  # rolled back: the same user now gets the stable
    router.invoke(client, "ai-handler", "user-36")

    # Another process (a feedback function) with its own log object, as the Rust one reads.
    reader = coalmine_router.ServedLog(table)
    history = reader.history("ai-handler.live", "user-36")
    assert [(h["version"], h["assignment"]) for h in history] == [("2", "drawn"), ("1", "drawn")]
    release = VECTORS["cohort"]["release"]
    assert history[0]["replicate"] == coalmine_router.replicate(release, "user-36")
    assert history[0]["release"] == release
    assert reader.version_at("ai-handler.live", "user-36", 1_800_000_010)["version"] == "2"
    assert reader.version_at("ai-handler.live", "user-36", 1_800_000_400)["version"] == "1"
    assert reader.version_at("ai-handler.live", "nobody", 1_800_000_400) is None
