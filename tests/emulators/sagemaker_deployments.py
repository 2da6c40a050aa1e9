#!/usr/bin/env python3
"""moto's SageMaker with what a guardrail deployment shows. Test-only.

moto 5.2.5 (the newest) has no UpdateEndpoint, never sets PendingDeploymentSummary,
VariantStatus or LastDeploymentConfig, and drops ShadowProductionVariants. This module
adds them to moto's SageMaker in this process only (moto on disk is unchanged) and runs
moto's server, as `moto_server` would:

    python tests/emulators/sagemaker_deployments.py -H 127.0.0.1 -p PORT

Shapes are botocore's service model (botocore 1.43.106,
data/sagemaker/2017-07-24/service-2.json, line numbers in the gunzipped file):
UpdateEndpoint 4565 and UpdateEndpointInput 50248; DescribeEndpointOutput 19991 (its
EndpointStatus, LastDeploymentConfig, PendingDeploymentSummary and
ShadowProductionVariants members, 20018-20053); PendingDeploymentSummary 40270,
PendingProductionVariantSummary 40293, ProductionVariantStatus 42320 (VariantStatus:
Creating, ActivatingTraffic, Baking, ...); DeploymentConfig 18065, BlueGreenUpdatePolicy
9042, TrafficRoutingConfig 47436, AutoRollbackConfig 8238; CreateEndpointConfigInput
13934 (ShadowProductionVariants 13966).

Behaviour, from the API reference (UpdateEndpoint: "When SageMaker receives the request,
it sets the endpoint status to Updating. After updating the endpoint, it sets the status
to InService"; EndpointStatus: "UpdateRollbackFailed: Both the rolling deployment and
auto-rollback failed. Your endpoint is in service with a mix of the old and new endpoint
configurations") and the developer guide ("Blue/Green Deployments": "If any of the
pre-specified alarms trip during any baking period, then all endpoint traffic rolls back
to the blue fleet"; "Use canary traffic shifting": canary, baking period, the rest,
final baking period; BlueGreenUpdatePolicy: "If no update policy is specified, SageMaker
uses a blue/green deployment strategy with all at once traffic shifting"):

- UpdateEndpoint starts a blue/green deployment: the new fleet is Creating, then for each
  traffic step (canary then the rest; linear steps; or all at once) ActivatingTraffic
  and Baking for WaitIntervalInSeconds with that share of traffic on the new fleet, then
  TerminationWaitInSeconds more of baking with all of it; then the endpoint is InService
  on the new config and LastDeploymentConfig keeps the request's DeploymentConfig.
- While Baking, an AutoRollbackConfiguration alarm in ALARM in the local CloudWatch
  (MiniStack, read over HTTP at COALMINE_CLOUDWATCH_URL) rolls it back: InService on the
  old config, no FailureReason, as SageMaker's rollbacks often are. So does running past
  MaximumExecutionTimeoutInSeconds. With `rollback_fails` set, the rollback ends
  UpdateRollbackFailed instead.
- Endpoint configs keep their ShadowProductionVariants; endpoints (and a pending
  deployment) describe those of their config.
- UpdateEndpoint on an endpoint already updating, and UpdateEndpointWeightsAndCapacities
  during a deployment, are refused as SageMaker refuses them.

Each endpoint's deployment runs on its own clock, which a test controls over HTTP:

    GET  /_coalmine/sagemaker/endpoints/NAME   the endpoint as this emulator sees it:
         status, config, the deployment's phase, each fleet's share of live traffic
    POST /_coalmine/sagemaker/endpoints/NAME   any of {"rate": 0} (stop its clock; 1 is
         real time), {"advance_seconds": N}, {"finish_phase": true} (to the end of the
         current phase), {"rollback_fails": true}, {"provision_seconds": N},
         {"activation_seconds": N}; answers as GET does

Alarms are read when the endpoint is described or its clock advanced, once per phase an
advance crosses: an alarm that fires and recovers between two reads is not seen.
"""

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

import boto3
from botocore.config import Config as BotoConfig
from werkzeug.serving import run_simple

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

CONTROL_PREFIX = "/_coalmine/sagemaker/endpoints/"
# moto serves requests on threads; deployments advance on reads, under this lock.
LOCK = threading.RLock()


class Clock:
    """An endpoint's virtual seconds: real time times `rate`, plus what tests advanced."""

    def __init__(self) -> None:
        self.rate = 1.0
        self.anchor_real = time.monotonic()
        self.anchor_virtual = 0.0

    def now(self) -> float:
        return self.anchor_virtual + (time.monotonic() - self.anchor_real) * self.rate

    def set_rate(self, rate: float) -> None:
        self.anchor_virtual, self.anchor_real = self.now(), time.monotonic()
        self.rate = rate

    def advance(self, seconds: float) -> None:
        self.anchor_virtual += seconds


@dataclass
class Step:
    status: str  # the new fleet's VariantStatus
    seconds: float
    new_share: float  # of live traffic on the new fleet
    watched: bool  # auto-rollback alarms can roll it back


@dataclass
class Deployment:
    old_config: str
    new_config: str
    steps: list[Step]
    alarms: list[str]
    deadline: Optional[float]  # virtual seconds after the start
    started: float  # virtual
    started_at: Any  # wall clock, for StartTime

    def position(self, now: float) -> Optional[tuple[int, float]]:
        """The step at `now` and when it began (virtual); None once all are done."""
        at = self.started
        for index, step in enumerate(self.steps):
            if now < at + step.seconds:
                return index, at
            at += step.seconds
        return None


@dataclass
class Watch:
    """What this emulator keeps beside moto's endpoint."""

    clock: Clock = field(default_factory=Clock)
    provision_seconds: float = 10.0
    activation_seconds: float = 2.0
    rollback_fails: bool = False
    deployment: Optional[Deployment] = None
    last_outcome: Optional[str] = None


WATCHES: dict[str, Watch] = {}


def watch_of(endpoint: FakeEndpoint) -> Watch:
    return WATCHES.setdefault(endpoint.arn, Watch())


def traffic_steps(routing: dict[str, Any], instances: int) -> list[float]:
    """The new fleet's share of traffic after each shift."""

    def share(size: dict[str, Any]) -> float:
        value = float(size.get("Value", 0))
        if size.get("Type") == "INSTANCE_COUNT":
            return min(1.0, value / max(instances, 1))
        return min(1.0, value / 100.0)

    kind = routing.get("Type", "ALL_AT_ONCE")
    if kind == "CANARY":
        return [share(routing.get("CanarySize") or {}), 1.0]
    if kind == "LINEAR":
        step = share(routing.get("LinearStepSize") or {})
        if step <= 0:
            raise ValidationError(message="LinearStepSize must be above zero.")
        return [min(1.0, step * k) for k in range(1, math.ceil(1.0 / step) + 1)]
    return [1.0]


def plan(config: Optional[dict[str, Any]], instances: int, watch: Watch) -> list[Step]:
    policy = (config or {}).get("BlueGreenUpdatePolicy") or {}
    routing = policy.get("TrafficRoutingConfiguration") or {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
    wait = float(routing.get("WaitIntervalInSeconds", 0))
    steps = [Step("Creating", watch.provision_seconds, 0.0, False)]
    before = 0.0
    for share in traffic_steps(routing, instances):
        steps.append(Step("ActivatingTraffic", watch.activation_seconds, before, False))
        steps.append(Step("Baking", wait, share, True))
        before = share
    steps.append(Step("Baking", float(policy.get("TerminationWaitInSeconds", 0)), 1.0, True))
    return steps


def region_of(arn: str) -> str:
    return arn.split(":")[3]


CLOUDWATCH: dict[str, Any] = {}


def firing(alarms: list[str], region: str) -> Optional[str]:
    """The first of `alarms` in ALARM in the local CloudWatch, if any."""
    url = os.environ.get("COALMINE_CLOUDWATCH_URL")
    if not alarms or not url:
        return None
    client = CLOUDWATCH.get(region)
    if client is None:
        client = CLOUDWATCH[region] = boto3.client(
            "cloudwatch",
            endpoint_url=url,
            region_name=region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=BotoConfig(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
        )
    try:
        found = client.describe_alarms(AlarmNames=alarms)["MetricAlarms"]
    except Exception as e:  # SageMaker keeps deploying when it cannot read an alarm
        print(f"sagemaker_deployments: alarms {alarms} not read: {e}", file=sys.stderr)
        return None
    return next((a["AlarmName"] for a in found if a.get("StateValue") == "ALARM"), None)


def summaries(variants: Optional[list[dict[str, Any]]]) -> Optional[list[dict[str, Any]]]:
    if not variants:
        return None
    return FakeEndpoint._process_production_variants(None, variants)  # type: ignore[arg-type]


def backend_of(endpoint: FakeEndpoint) -> SageMakerModelBackend:
    account, region = endpoint.arn.split(":")[4], region_of(endpoint.arn)
    return sagemaker_backends[account][region]


def config_named(endpoint: FakeEndpoint, name: str) -> FakeEndpointConfig:
    return backend_of(endpoint).endpoint_configs[name]


def pending_summary(endpoint: FakeEndpoint, d: Deployment, index: int, began: float) -> dict[str, Any]:
    step = d.steps[index]
    config = config_named(endpoint, d.new_config)
    if step.status == "Creating":
        message = "Creating the new fleet"
    elif step.status == "ActivatingTraffic":
        message = f"Turning on traffic for the new fleet: {round(step.new_share * 100)}% so far"
    else:
        message = f"Baking with {round(step.new_share * 100)}% of traffic on the new fleet"
    status = {
        "Status": step.status,
        "StatusMessage": message,
        "StartTime": d.started_at + timedelta(seconds=began - d.started),
    }

    def pending(variants: Optional[list[dict[str, Any]]]) -> Optional[list[dict[str, Any]]]:
        if not variants:
            return None
        out = []
        for v in variants:
            count = v.get("InitialInstanceCount")
            live = count if step.status != "Creating" else 0
            out.append(
                {
                    "VariantName": v["VariantName"],
                    "InstanceType": v.get("InstanceType"),
                    "DesiredInstanceCount": count,
                    "CurrentInstanceCount": live,
                    "DesiredWeight": v.get("InitialVariantWeight"),
                    "CurrentWeight": v.get("InitialVariantWeight"),
                    "VariantStatus": [status],
                }
            )
        return out

    summary = {
        "EndpointConfigName": d.new_config,
        "StartTime": d.started_at,
        "ProductionVariants": pending(config.production_variants),
        "ShadowProductionVariants": pending(getattr(config, "shadow_production_variants", None)),
    }
    return {k: v for k, v in summary.items() if v is not None}


def settle(endpoint: FakeEndpoint, watch: Watch, outcome: str) -> None:
    watch.deployment = None
    watch.last_outcome = outcome
    endpoint.pending_deployment_summary = None
    endpoint.last_modified_time = utcnow()


def roll_back(endpoint: FakeEndpoint, watch: Watch, why: str) -> None:
    if watch.rollback_fails:
        endpoint.endpoint_status = "UpdateRollbackFailed"
        endpoint.failure_reason = f"The deployment was rolled back ({why}), and the rollback failed."
        settle(endpoint, watch, f"rollback failed: {why}")
        return
    # The old fleet never stopped serving: only the status changes back.
    endpoint.endpoint_status = "InService"
    endpoint.failure_reason = None
    settle(endpoint, watch, f"rolled back: {why}")


def complete(endpoint: FakeEndpoint, watch: Watch, d: Deployment) -> None:
    config = config_named(endpoint, d.new_config)
    endpoint.endpoint_config_name = d.new_config
    endpoint.production_variants = summaries(config.production_variants) or []
    endpoint.shadow_production_variants = summaries(getattr(config, "shadow_production_variants", None))
    endpoint.endpoint_status = "InService"
    endpoint.failure_reason = None
    settle(endpoint, watch, f"completed: {d.new_config}")


def observe(endpoint: FakeEndpoint) -> None:
    """Brings the endpoint to its clock's now: phase, rollback or completion."""
    watch = watch_of(endpoint)
    d = watch.deployment
    if d is None:
        return
    now = watch.clock.now()
    if d.deadline is not None and now - d.started > d.deadline:
        roll_back(endpoint, watch, "MaximumExecutionTimeoutInSeconds passed")
        return
    at = d.position(now)
    if at is None:
        complete(endpoint, watch, d)
        return
    index, began = at
    if d.steps[index].watched:
        alarm = firing(d.alarms, region_of(endpoint.arn))
        if alarm:
            roll_back(endpoint, watch, f"alarm {alarm}")
            return
    endpoint.pending_deployment_summary = pending_summary(endpoint, d, index, began)


def current_step(watch: Watch) -> Optional[tuple[Deployment, int, float]]:
    """The running deployment, its step at the clock's now and when that began."""
    d = watch.deployment
    at = d.position(watch.clock.now()) if d else None
    return (d, *at) if d and at else None


def advance(endpoint: FakeEndpoint, seconds: float) -> None:
    """Moves the clock on, observing each phase crossed, as SageMaker would have."""
    watch = watch_of(endpoint)
    target = watch.clock.now() + seconds
    while watch.deployment is not None:
        observe(endpoint)
        step = current_step(watch)
        if step is None:
            break
        d, index, began = step
        phase_end = began + d.steps[index].seconds
        if phase_end > target:
            break
        watch.clock.advance(phase_end - watch.clock.now())
    watch.clock.advance(max(0.0, target - watch.clock.now()))
    observe(endpoint)


def finish_phase(endpoint: FakeEndpoint) -> None:
    watch = watch_of(endpoint)
    observe(endpoint)
    step = current_step(watch)
    if step is not None:
        d, index, began = step
        advance(endpoint, began + d.steps[index].seconds - watch.clock.now())


def fleets(endpoint: FakeEndpoint) -> list[dict[str, Any]]:
    """Each variant of each fleet with its share of live traffic; shadows with the
    share of live traffic copied to them."""
    watch = watch_of(endpoint)
    d = watch.deployment
    if d is not None and endpoint.endpoint_status == "Updating":
        at = d.position(watch.clock.now())
        new_share = d.steps[at[0]].new_share if at else 1.0
        shares = [(d.old_config, 1.0 - new_share), (d.new_config, new_share)]
    else:
        shares = [(endpoint.endpoint_config_name, 1.0)]
    out = []
    for config_name, fleet_share in shares:
        if fleet_share <= 0:
            continue
        config = config_named(endpoint, config_name)
        production = config.production_variants
        total = sum(float(v.get("InitialVariantWeight", 1.0)) for v in production) or 1.0
        for v in production:
            share = fleet_share * float(v.get("InitialVariantWeight", 1.0)) / total
            out.append({"config": config_name, "variant": v["VariantName"], "share": share, "shadow": False})
        for v in getattr(config, "shadow_production_variants", None) or []:
            copied = min(1.0, float(v.get("InitialVariantWeight", 1.0)) / total)
            out.append({"config": config_name, "variant": v["VariantName"], "share": fleet_share * copied, "shadow": True})
    return out


def describe(endpoint: FakeEndpoint) -> dict[str, Any]:
    watch = watch_of(endpoint)
    current = current_step(watch)
    phase = None
    if current is not None:
        d, index, began = current
        step = d.steps[index]
        phase = {
            "config": d.new_config,
            "status": step.status,
            "new_share": step.new_share,
            "ends_in_seconds": began + step.seconds - watch.clock.now(),
        }
    return {
        "endpoint": endpoint.endpoint_name,
        "status": endpoint.endpoint_status,
        "config": endpoint.endpoint_config_name,
        "deployment": phase,
        "last_outcome": watch.last_outcome,
        "traffic": fleets(endpoint),
        "clock": {"now": watch.clock.now(), "rate": watch.clock.rate},
    }


# --- moto, extended ---------------------------------------------------------------


def find_endpoint(backend: SageMakerModelBackend, name: str) -> FakeEndpoint:
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        arn = FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    return endpoint


def update_endpoint(self: SageMakerResponse) -> ActionResult:
    backend = self.sagemaker_backend
    endpoint = find_endpoint(backend, self._get_param("EndpointName"))
    config_name = self._get_param("EndpointConfigName")
    deployment_config = self._get_param("DeploymentConfig")
    with LOCK:
        observe(endpoint)
        if endpoint.endpoint_status != "InService":
            raise ValidationError(message=f'Cannot update in-progress endpoint "{endpoint.arn}".')
        if config_name not in backend.endpoint_configs:
            arn = FakeEndpointConfig.arn_formatter(config_name, backend.account_id, backend.region_name)
            raise ValidationError(message=f"Could not find endpoint configuration '{arn}'.")
        if deployment_config and deployment_config.get("RollingUpdatePolicy"):
            raise ValidationError(message="RollingUpdatePolicy: this emulator serves blue/green deployments only.")
        watch = watch_of(endpoint)
        instances = max([int(v.get("CurrentInstanceCount") or 1) for v in endpoint.production_variants] or [1])
        policy = (deployment_config or {}).get("BlueGreenUpdatePolicy") or {}
        deadline = policy.get("MaximumExecutionTimeoutInSeconds")
        alarms = [a["AlarmName"] for a in ((deployment_config or {}).get("AutoRollbackConfiguration") or {}).get("Alarms") or []]
        watch.deployment = Deployment(
            old_config=endpoint.endpoint_config_name,
            new_config=config_name,
            steps=plan(deployment_config, instances, watch),
            alarms=alarms,
            deadline=float(deadline) if deadline else None,
            started=watch.clock.now(),
            started_at=utcnow(),
        )
        watch.last_outcome = None
        if deployment_config:
            endpoint.last_deployment_config = deployment_config
        endpoint.endpoint_status = "Updating"
        endpoint.failure_reason = None
        endpoint.last_modified_time = utcnow()
        observe(endpoint)
    return ActionResult({"EndpointArn": endpoint.arn})


def create_endpoint_config(self: SageMakerResponse) -> ActionResult:
    shadows = self._get_param("ShadowProductionVariants")
    if shadows:
        self.sagemaker_backend.validate_production_variants(shadows)
    result = ORIGINAL["create_endpoint_config"](self)
    config = self.sagemaker_backend.endpoint_configs[self._get_param("EndpointConfigName")]
    config.shadow_production_variants = shadows or None
    return result


def create_endpoint(self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str, tags: Any) -> FakeEndpoint:
    endpoint = ORIGINAL["create_endpoint"](self, endpoint_name, endpoint_config_name, tags)
    config = self.endpoint_configs[endpoint_config_name]
    endpoint.shadow_production_variants = summaries(getattr(config, "shadow_production_variants", None))
    endpoint.last_deployment_config = None
    endpoint.pending_deployment_summary = None
    WATCHES.pop(endpoint.arn, None)
    return endpoint


def describe_endpoint(self: SageMakerModelBackend, endpoint_name: str) -> dict[str, Any]:
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is not None:
        with LOCK:
            observe(endpoint)
    return ORIGINAL["describe_endpoint"](self, endpoint_name)


def update_endpoint_weights_and_capacities(
    self: SageMakerModelBackend, endpoint_name: str, desired_weights_and_capacities: Any
) -> str:
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is not None:
        with LOCK:
            observe(endpoint)
            if endpoint.endpoint_status != "InService":
                raise ValidationError(message=f'Cannot update in-progress endpoint "{endpoint.arn}".')
    return ORIGINAL["update_endpoint_weights_and_capacities"](
        self, endpoint_name=endpoint_name, desired_weights_and_capacities=desired_weights_and_capacities
    )


ORIGINAL = {
    "create_endpoint_config": SageMakerResponse.create_endpoint_config,
    "create_endpoint": SageMakerModelBackend.create_endpoint,
    "describe_endpoint": SageMakerModelBackend.describe_endpoint,
    "update_endpoint_weights_and_capacities": SageMakerModelBackend.update_endpoint_weights_and_capacities,
}


def install() -> None:
    SageMakerResponse.update_endpoint = update_endpoint  # type: ignore[attr-defined]
    SageMakerResponse.create_endpoint_config = create_endpoint_config  # type: ignore[method-assign]
    SageMakerModelBackend.create_endpoint = create_endpoint  # type: ignore[method-assign]
    SageMakerModelBackend.describe_endpoint = describe_endpoint  # type: ignore[method-assign]
    SageMakerModelBackend.update_endpoint_weights_and_capacities = update_endpoint_weights_and_capacities  # type: ignore[method-assign]


# --- the tests' control -------------------------------------------------------------


def endpoint_anywhere(name: str) -> Optional[FakeEndpoint]:
    for account in list(sagemaker_backends.keys()):
        for region in list(sagemaker_backends[account].keys()):
            found = sagemaker_backends[account][region].endpoints.get(name)
            if found is not None:
                return found
    return None


def control(endpoint: FakeEndpoint, asked: dict[str, Any]) -> None:
    watch = watch_of(endpoint)
    for knob in ("provision_seconds", "activation_seconds"):
        if knob in asked:
            setattr(watch, knob, float(asked[knob]))
    if "rollback_fails" in asked:
        watch.rollback_fails = bool(asked["rollback_fails"])
    if "rate" in asked:
        watch.clock.set_rate(float(asked["rate"]))
    if "advance_seconds" in asked:
        advance(endpoint, float(asked["advance_seconds"]))
    if asked.get("finish_phase"):
        finish_phase(endpoint)


class Control:
    """The tests' routes, in front of moto's own application."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(CONTROL_PREFIX):
            return self.app(environ, start_response)
        name = path[len(CONTROL_PREFIX) :]
        method = environ.get("REQUEST_METHOD")

        def answer(code: str, body: dict[str, Any]) -> list[bytes]:
            start_response(code, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]

        with LOCK:
            endpoint = endpoint_anywhere(name)
            if endpoint is None:
                return answer("404 Not Found", {"error": f"no endpoint {name}"})
            if method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    asked = json.loads(environ["wsgi.input"].read(length) or b"{}")
                except ValueError as e:
                    return answer("400 Bad Request", {"error": f"the body is not JSON: {e}"})
                control(endpoint, asked)
            elif method != "GET":
                return answer("405 Method Not Allowed", {"error": "GET or POST"})
            observe(endpoint)
            return answer("200 OK", describe(endpoint))


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    install()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Control(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1:])
