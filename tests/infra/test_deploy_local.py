"""`make deploy`'s own path, into the local AWS: scripts/deploy runs the real `sam deploy`
with the shipped samconfig.toml (plus a platform team's answers) on infra/template.yaml,
MiniStack's CloudFormation applies the SAM transform and creates the stack, and then a
release climbs to promotion and the next one is rolled back by its alarm, both through
the deployed stack's own state machine and functions.

`sam build` would compile the bootstraps for the deployment architecture with
cargo-lambda; here they must run on this machine, so the built directory is assembled
from the host's debug bootstraps instead (what `make bins` builds), with the template
itself unchanged but for the three CodeUri paths, and Architecture=x86_64 or arm64 as the
host is.
"""

import json
import os
import pathlib
import platform
import shutil
import subprocess
import threading
import time
import tomllib
import uuid

import boto3
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGION, ACCOUNT = "us-east-1", "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/coalmine-local"


def client(service):
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint.startswith("http://127.0.0.1:"):
        pytest.fail("AWS_ENDPOINT_URL must point at the local AWS (make test-infra starts it)")
    if service == "sagemaker":
        endpoint = os.environ["AWS_ENDPOINT_URL_SAGEMAKER"]
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


def poll(what, check, within=90.0, every=0.5):
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within} s")
        time.sleep(every)


def debug_bootstrap(name):
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build the bootstraps first (make bins)")
    return path


def built_stack(tmp):
    """The directory `sam build` would leave: the template, the state machine, and one
    folder per function holding its bootstrap."""
    template = (ROOT / "infra/template.yaml").read_text()
    for source, function in (("../functions/rollback", "RollbackFunction"), ("../functions/stepper", "StepperFunction"),
                             ("../functions/shadow", "ShadowFunction")):
        assert f"CodeUri: {source}" in template
        template = template.replace(f"CodeUri: {source}", f"CodeUri: {function}")
        (tmp / function).mkdir()
        shutil.copy(debug_bootstrap(function.removesuffix("Function").lower()), tmp / function / "bootstrap")
    shutil.copytree(ROOT / "infra/statemachine", tmp / "statemachine")
    (tmp / "template.yaml").write_text(template)
    return tmp / "template.yaml"


def samconfig_with_answers(tmp, stack, overrides):
    """The shipped samconfig.toml, with what the guided deploy would have saved."""
    config = tomllib.loads((ROOT / "infra/samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    deploy.update(stack_name=stack, confirm_changeset=False,
                  parameter_overrides=" ".join(f'{k}="{v}"' for k, v in overrides.items()))
    lines = [f"version = {config['version']}"]
    for env, commands in config.items():
        if not isinstance(commands, dict):
            continue
        for command, tables in commands.items():
            lines.append(f"\n[{env}.{command}.parameters]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in tables["parameters"].items()]
    path = tmp / "samconfig.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def seed_function(lam, name):
    """A model handler with versions 1 and 2, alias live on 1."""
    code = tmp_zip(b"#!/bin/sh\necho '{}'\n")
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="bootstrap",
                        Code={"ZipFile": code})
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=code)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]


def tmp_zip(content):
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, content)
    return buffer.getvalue()


class Traffic:
    """Healthy traffic on a function's canary and stable versions, as CloudWatch records it."""

    def __init__(self, function):
        self.function, self.versions, self.stop = function, ("2", "1"), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        cw = client("cloudwatch")
        while not self.stop.is_set():
            for version, requests, errors in ((self.versions[0], 60.0, 0.0), (self.versions[1], 600.0, 3.0)):
                dims = [{"Name": "FunctionName", "Value": self.function},
                        {"Name": "Resource", "Value": f"{self.function}:live"},
                        {"Name": "ExecutedVersion", "Value": version}]
                cw.put_metric_data(Namespace="AWS/Lambda", MetricData=[
                    {"MetricName": "Invocations", "Dimensions": dims, "Value": requests},
                    {"MetricName": "Errors", "Dimensions": dims, "Value": errors},
                    {"MetricName": "Duration", "Dimensions": dims, "Values": [100.0 * i for i in range(1, 21)]},
                ])
            self.stop.wait(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()


def test_make_deploy_creates_the_stack_that_runs_a_release_and_an_alarm_rollback(tmp_path):
    run = uuid.uuid4().hex[:8]
    lam, sfn, cw, sns, sqs, cfn = (client(s) for s in ("lambda", "stepfunctions", "cloudwatch", "sns", "sqs", "cloudformation"))
    function = f"summarizer-{run}"
    function_arn = seed_function(lam, function)
    prefix = f"coalmine-{run}-"
    alarm = f"{prefix}summarizer-errors"
    cw.put_metric_alarm(AlarmName=alarm, Namespace="Coalmine/Test", MetricName="NobodyPutsThis", Statistic="Sum",
                        Period=60, EvaluationPeriods=1, Threshold=5.0, ComparisonOperator="GreaterThanThreshold",
                        Tags=[{"Key": "coalmine:target", "Value": f"lambda:{function}:live"}])
    cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="the test")

    stack = f"coalmine-{run}"
    architecture = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    config = samconfig_with_answers(tmp_path, stack, {
        "AlarmNamePrefix": prefix, "LambdaTargetFunctionArns": function_arn, "Architecture": architecture,
    })
    env = {**os.environ, "COALMINE_SAMCONFIG": str(config), "COALMINE_TEMPLATE": str(built_stack(tmp_path)),
           "SAM": str(ROOT / ".venv-infra/bin/sam")}
    deployed = subprocess.run([str(ROOT / "scripts/deploy"), "--no-progressbar"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert "Successfully created/updated stack" in deployed.stdout + deployed.stderr, deployed.stdout[-2000:]

    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
    state_machine, rollback_fn, topic = (outputs["ReleaseStateMachineArn"], outputs["RollbackFunctionArn"],
                                         outputs["AlertTopicArn"])
    queue = sqs.create_queue(QueueName=f"inbox-{run}")["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:inbox-{run}")

    def alias():
        out = lam.get_alias(FunctionName=function, Name="live")
        return out["FunctionVersion"], out.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})

    def finished(execution):
        def done():
            out = sfn.describe_execution(executionArn=execution)
            return out if out["status"] != "RUNNING" else None
        return poll(f"execution {execution}", done)

    def release(name, version, stages):
        return {"release": name, "target": {"lambda": {"function": function, "alias": "live"}},
                "canary_version": version, "check_every_seconds": 1,
                "stages": [{"percent": p, "bake_seconds": b} for p, b in stages],
                "gates": {"alarms": [alarm], "max_error_rate": 0.05, "min_requests": 50}}

    cli = [str(debug_bootstrap("coalmine")), "--stack", stack]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_")}
    with Traffic(function) as traffic:
        # A healthy release of version 2 climbs to promotion, started with the CLI,
        # which finds the state machine in the stack's outputs.
        path = tmp_path / "summarizer-2.json"
        path.write_text(json.dumps(release(f"summarizer-2-{run}", "2", [(5, 1), (50, 1), (100, 1)])))
        started = subprocess.run(cli + ["start", str(path), "--wait"], env=env, capture_output=True, text=True,
                                 timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "=> SUCCEEDED" in started.stdout, started.stdout
        assert alias() == ("2", {})

        # The next one: its alarm fires mid-bake and the deployed rollback function stops it.
        lam.update_function_code(FunctionName=function, ZipFile=tmp_zip(b"#!/bin/sh\necho v3\n"))
        lam.publish_version(FunctionName=function)
        traffic.versions = ("3", "2")
        execution = sfn.start_execution(stateMachineArn=state_machine, name=f"summarizer-3-{run}",
                                        input=json.dumps(release("summarizer-3", "3", [(5, 600), (100, 60)])))
        poll("the canary at 5%", lambda: alias()[1].get("3") == 0.05)
        cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="the test")
        event = json.loads((ROOT / "events/alarm-lambda-canary.eventbridge.json").read_text())
        event["resources"] = [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm}"]
        event["detail"]["alarmName"] = alarm
        # MiniStack emits no alarm events: deliver it as EventBridge would.
        assert lam.invoke(FunctionName=rollback_fn, InvocationType="Event",
                          Payload=json.dumps(event))["StatusCode"] == 202
        poll("the canary back to zero", lambda: alias() == ("2", {}), within=30)
        out = finished(execution["executionArn"])
        assert (out["status"], out.get("error")) == ("FAILED", "CanaryRolledBack"), out
        assert out["cause"].startswith(f"Rolled back by the rollback function on alarm {alarm}"), out["cause"]

    def received():
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]
    messages = poll("the team's message", received, within=30)
    assert messages[0]["MessageAttributes"]["event"]["Value"] == "rolled_back"
    assert messages[0]["MessageAttributes"]["release"]["Value"] == "summarizer-3"

    listed = subprocess.run(cli + ["list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "promoted" in rows[f"summarizer-2-{run}"] and "rolled_back" in rows[f"summarizer-3-{run}"], listed.stdout
    status = subprocess.run(cli + ["status", f"summarizer-3-{run}"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 3, status.stdout + status.stderr
    cfn.delete_stack(StackName=stack)


def test_with_azure_the_stack_adds_a_webhook_url_that_refuses_strangers_and_takes_alerts(tmp_path):
    """AzureCredentialsSecretArn turns on the alert webhook: a function URL and a generated
    token, deployed by the same `sam deploy`. Strangers are refused; a resolved alert with
    the token is acknowledged (a fired one would go on to the rollback function)."""
    import urllib.error
    import urllib.request
    run = uuid.uuid4().hex[:8]
    lam, cfn, sm = (client(s) for s in ("lambda", "cloudformation", "secretsmanager"))
    function_arn = seed_function(lam, f"chat-{run}")
    principal = json.dumps({"tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47", "client_id": "c", "client_secret": "s"})
    secret = sm.create_secret(Name=f"coalmine-azure-{run}", SecretString=principal)["ARN"]
    stack = f"coalmine-azure-{run}"
    architecture = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    config = samconfig_with_answers(tmp_path, stack, {
        "AlarmNamePrefix": f"coalmine-{run}-", "LambdaTargetFunctionArns": function_arn, "Architecture": architecture,
        "AzureCredentialsSecretArn": secret,
    })
    env = {**os.environ, "COALMINE_SAMCONFIG": str(config), "COALMINE_TEMPLATE": str(built_stack(tmp_path)),
           "SAM": str(ROOT / ".venv-infra/bin/sam")}
    deployed = subprocess.run([str(ROOT / "scripts/deploy"), "--no-progressbar"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
    token = sm.get_secret_value(SecretId=outputs["AlertWebhookTokenArn"])["SecretString"]
    assert len(token) >= 32 and token.isalnum(), "generated: 48 letters and digits"
    # MiniStack serves the URL's data plane on its own port, by the URL's id.
    url_id = outputs["AlertWebhookUrl"].removeprefix("https://").split(".")[0]
    url = f"{os.environ['AWS_ENDPOINT_URL']}/_aws/lambda-url/{url_id}/"

    def post(path, body):
        request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"{}")

    resolved = json.loads((ROOT / "events/azure/resolved-azureml-canary.common-schema.json").read_text())
    assert post("not-the-token", resolved)[0] == 401
    status, body = poll("the webhook's answer", lambda: post(token, resolved), within=60)
    assert (status, body.get("outcome")) == (200, "ignored"), body
    environment = lam.get_function_configuration(FunctionName=outputs["RollbackFunctionArn"])["Environment"]["Variables"]
    assert environment["AZURE_CREDENTIALS_SECRET_ARN"] == secret
    cfn.delete_stack(StackName=stack)


def test_a_first_deploy_explains_every_parameter_then_asks_for_it(tmp_path):
    """The shipped samconfig.toml names no target yet: `make deploy` goes guided, after
    saying what each parameter means (here SAM's first prompt meets a closed stdin)."""
    from samtranslator.yaml_helper import yaml_parse
    shutil.copy(ROOT / "infra/samconfig.toml", tmp_path / "samconfig.toml")
    (tmp_path / "template.yaml").write_text((ROOT / "infra/template.yaml").read_text())
    env = {**os.environ, "COALMINE_SAMCONFIG": str(tmp_path / "samconfig.toml"),
           "COALMINE_TEMPLATE": str(tmp_path / "template.yaml"), "SAM": str(ROOT / ".venv-infra/bin/sam")}
    out = subprocess.run([str(ROOT / "scripts/deploy")], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120)
    text = " ".join((out.stdout + out.stderr).split())
    assert "first, guided deploy" in text, text[:2000]
    for name, spec in yaml_parse((ROOT / "infra/template.yaml").read_text())["Parameters"].items():
        assert name in text and " ".join(spec["Description"].split()) in text, name
    assert "Configuring SAM deploy" in text, "then sam deploy --guided asks"
