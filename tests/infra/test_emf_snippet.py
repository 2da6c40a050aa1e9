"""The Python EMF snippet prints what the Rust helper prints: the same metric names,
the same FunctionName/Version dimensions, from the environment Lambda sets."""

import io
import json
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "emf"))

import coalmine_emf  # noqa: E402


def rust_names():
    source = (ROOT / "crates" / "emf" / "src" / "lib.rs").read_text()
    return set(re.findall(r'pub const [A-Z_]+: &str = "(\w+)";', source))


def lines(call):
    out = io.StringIO()
    with redirect_stdout(out):
        call()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_an_answer_is_one_emf_line_with_this_version(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ai-handler")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "43")
    [line] = lines(lambda: coalmine_emf.emit_answer(output_tokens=512, response_length=1830, schema_failed=True))
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "AIService"
    assert directive["Dimensions"] == [["FunctionName", "Version"]]
    assert (line["FunctionName"], line["Version"]) == ("ai-handler", "43")
    assert (line["OutputTokens"], line["SchemaFailures"], line["GuardrailBlocks"]) == (512, 1, 0)
    names = {m["Name"] for m in directive["Metrics"]}
    assert names <= rust_names(), names - rust_names()


def test_feedback_carries_the_version_that_answered(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "44")
    [line] = lines(lambda: coalmine_emf.emit_feedback(thumbs_down=True, version="43"))
    assert (line["Version"], line["Feedback"], line["ThumbsDown"]) == ("43", 1, 1)
    assert {m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]} <= rust_names()


def test_a_live_request_is_recorded_and_a_shadowed_one_is_not_with_the_rust_keys():
    rust = (ROOT / "crates" / "emf" / "src" / "lib.rs").read_text() + (ROOT / "crates" / "coalmine" / "src" / "domain" / "shadow.rs").read_text()
    for key in (coalmine_emf.PAIR_KEY, coalmine_emf.ENVELOPE_KEY):
        assert rust.count(f'KEY: &str = "{key}";') == 2, key  # the helper and the library agree
    request, shadowed = coalmine_emf.shadow_request({"prompt": "hi"})
    assert (request, shadowed) == ({"prompt": "hi"}, False)
    [line] = lines(lambda: coalmine_emf.record_pair(request, {"label": "greeting"}, shadowed))
    assert line == {"coalmine:pair": {"request": {"prompt": "hi"}, "response": {"label": "greeting"}}}

    request, shadowed = coalmine_emf.shadow_request({"coalmine:shadowed": {"release": "r-7", "request": {"prompt": "hi"}}})
    assert (request, shadowed) == ({"prompt": "hi"}, True)
    assert lines(lambda: coalmine_emf.record_pair(request, {"label": "greeting"}, shadowed)) == []
    # A request that merely mentions the key is a live one.
    assert coalmine_emf.shadow_request({"coalmine:shadowed": 1, "q": 2})[1] is False
