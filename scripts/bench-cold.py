#!/usr/bin/env python3
"""Cold path of the rollback function, and its peak RSS, under a minimal Lambda Runtime
API emulator on loopback; compared with the floor (the two bare SDK calls from a minimal
program). Prints one JSON object per measurement.

usage: bench-cold.py BOOTSTRAP FLOOR EVENTS_DIR   (with the local AWS's env loaded)"""

import http.server
import io
import zipfile
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import boto3

RUNS = 15
WARM_INVOCATIONS = 200


class RuntimeApi(http.server.ThreadingHTTPServer):
    """Hands out queued events on /next and records when each response arrives."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.events = []
        self.cond = threading.Condition()
        self.responses = []

    def push(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        api = self.server
        with api.cond:
            while not api.events:
                api.cond.wait()
            event = api.events.pop(0)
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 120_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:coalmine-rollback")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        with self.server.cond:
            self.server.responses.append((time.perf_counter(), self.path, body))
            self.server.cond.notify_all()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def wait_responses(api, n, timeout=60):
    deadline = time.time() + timeout
    with api.cond:
        while len(api.responses) < n:
            left = deadline - time.time()
            if left <= 0:
                raise SystemExit(f"bench-cold: no response after {timeout}s")
            api.cond.wait(left)


def main():
    bootstrap, floor, events_dir = sys.argv[1:4]
    lam = boto3.client("lambda")
    sns = boto3.client("sns")
    cw = boto3.client("cloudwatch")
    suffix = uuid.uuid4().hex[:8]
    function, alias, alarm = f"cold-{suffix}", "live", f"cold-alarm-{suffix}"
    topic = sns.create_topic(Name=f"cold-{suffix}")["TopicArn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    lam.create_function(FunctionName=function, Runtime="provided.al2023", Role="arn:aws:iam::000000000000:role/x",
                        Handler="bootstrap", Code={"ZipFile": buf.getvalue()})
    lam.publish_version(FunctionName=function)
    lam.update_function_code(FunctionName=function, ZipFile=buf.getvalue())
    lam.publish_version(FunctionName=function)
    lam.create_alias(FunctionName=function, Name=alias, FunctionVersion="1")
    cw.put_metric_alarm(AlarmName=alarm, Namespace="Coalmine/Test", MetricName="CanaryErrors", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold",
                        Tags=[{"Key": "coalmine:target", "Value": f"lambda:{function}:{alias}"}])
    event = json.load(open(os.path.join(events_dir, "alarm-lambda-canary.eventbridge.json")))
    event["resources"] = [f"arn:aws:cloudwatch:us-east-1:000000000000:alarm:{alarm}"]
    event["detail"]["alarmName"] = alarm
    # A real canary alarm watches the alias it is tagged with.
    for metric in event["detail"]["configuration"]["metrics"]:
        metric["metricStat"]["metric"]["dimensions"].update({"FunctionName": function, "Resource": f"{function}:{alias}"})

    def reset():
        lam.update_alias(FunctionName=function, Name=alias, FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.05}})

    def weights():
        return lam.get_alias(FunctionName=function, Name=alias).get("RoutingConfig", {}).get("AdditionalVersionWeights", {})

    base_env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PATH", "HOME")}
    base_env.update({"SNS_TOPIC_ARN": topic, "RUST_LOG": "warn"})
    lambda_env = {**base_env, "AWS_LAMBDA_FUNCTION_NAME": "coalmine-rollback", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
                  "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
                  "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/coalmine-rollback"}

    cold, floor_times = [], []
    for _ in range(RUNS):
        reset()
        api = RuntimeApi()
        threading.Thread(target=api.serve_forever, daemon=True).start()
        api.push(event)
        env = {**lambda_env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}"}
        started = time.perf_counter()
        proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_responses(api, 1)
        done, path, body = api.responses[0]
        proc.kill()
        proc.wait()
        api.shutdown()
        api.server_close()
        assert path.endswith("/response"), (path, body)
        assert not weights(), "the canary was zeroed"
        cold.append((done - started) * 1000)

        reset()
        env = {**base_env, "FLOOR_FUNCTION": function, "FLOOR_ALIAS": alias, "FLOOR_STABLE": "1"}
        started = time.perf_counter()
        subprocess.run([floor], env=env, check=True, stdout=subprocess.DEVNULL)
        floor_times.append((time.perf_counter() - started) * 1000)
        assert not weights()

    print(json.dumps({"bench": "cold_path", "runs": RUNS, "median_ms": statistics.median(cold),
                      "floor_median_ms": statistics.median(floor_times),
                      "ratio": statistics.median(cold) / statistics.median(floor_times)}))

    # Peak RSS of a warm process after many invocations.
    api = RuntimeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    env = {**lambda_env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}"}
    proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for i in range(WARM_INVOCATIONS):
        reset()
        api.push(event)
        wait_responses(api, i + 1)
    status = open(f"/proc/{proc.pid}/status").read()
    hwm_kb = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
    proc.kill()
    proc.wait()
    api.shutdown()
    print(json.dumps({"bench": "peak_rss", "invocations": WARM_INVOCATIONS, "vm_hwm_mib": hwm_kb / 1024}))


if __name__ == "__main__":
    main()
