"""The project's local AWS cleans up after itself: `scripts/local-aws stop` removes what
its start made (MiniStack unpacks every function's code into its temp folder, ~100 MB a
run), and only that.

A pair of emulators of its own, in a state folder of its own, beside the ones the other
tests use.
"""

import io
import os
import pathlib
import subprocess
import tempfile
import zipfile

import boto3
import botocore.config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def bootstrap_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, b"#!/bin/sh\necho '{}'\n")
    return buffer.getvalue()


def local_aws(command, state):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["LOCAL_AWS_STATE"] = str(state)
    return subprocess.run([ROOT / "scripts/local-aws", command], env=env, check=True, capture_output=True, text=True)


def test_stop_removes_what_the_start_made_and_nothing_else(tmp_path):
    state = tmp_path / "state"
    neighbour = tmp_path / "someone-elses"
    neighbour.mkdir()
    local_aws("start", state)
    try:
        port = (state / "ministack.port").read_text().strip()
        lam = boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
            config=botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30),
        )
        lam.create_function(FunctionName="litter", Runtime="provided.al2023", Handler="bootstrap", Timeout=3,
                            Role="arn:aws:iam::000000000000:role/coalmine-local", Code={"ZipFile": bootstrap_zip()})
        # Invoked, the function's code is unpacked: what used to stay in /tmp.
        lam.invoke(FunctionName="litter", Payload=b"{}")
        unpacked = state / "tmp" / f"ministack-provided-code-{port}"
        assert unpacked.is_dir() and any(unpacked.iterdir()), list((state / "tmp").iterdir())
        assert not (pathlib.Path(tempfile.gettempdir()) / f"ministack-provided-code-{port}").exists()
    finally:
        local_aws("stop", state)

    assert not (state / "tmp").exists(), list(state.iterdir())
    assert not (state / "ministack.pid").exists() and not (state / "moto.pid").exists()
    assert (state / "ministack.log").exists(), "the logs stay, to read after a failure"
    assert neighbour.is_dir(), "only what the local AWS made is removed"
