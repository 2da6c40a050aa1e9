"""Publish a model handler's AI metrics per Lambda version, for coalmine's gates.

Copy this file beside your handler. It prints one CloudWatch Embedded Metric Format
line per call to stdout; Lambda sends stdout to CloudWatch Logs, which turns the line
into metrics with the FunctionName and Version dimensions coalmine's gates compare.
No SDK call, no added latency, no extra permission.

    from coalmine_emf import emit_answer, emit_feedback

    def handler(event, context):
        answer = model(event)
        emit_answer(output_tokens=answer.tokens, response_length=len(answer.text),
                    schema_failed=not valid(answer), guardrail_blocked=answer.blocked)
        return answer.text

Feedback arrives later, often in another function: publish it with the version that
*answered* (return it with the answer, e.g. in a header, and pass it back):

    emit_feedback(thumbs_down=True, version=answered_by)

Shadow mode (a release with "shadow"): coalmine asks the candidate version the requests
your stable served, and compares the answers. Print each live request and its answer,
and never write anywhere when shadowed:

    from coalmine_emf import shadow_request, record_pair

    def handler(event, context):
        request, shadowed = shadow_request(event)
        answer = model(request)
        if not shadowed:
            save_to_database(answer)      # side effects only for real users
        record_pair(request, answer, shadowed)
        return answer

The names match crates/emf (Rust) and events/releases/lambda-ai-quality-43.json.
"""

import json
import os
import time

NAMESPACE = "AIService"


def emf_line(values, version=None, function=None, namespace=NAMESPACE, timestamp_ms=None):
    """One EMF line for `values` ({name: number}) of `function`'s `version`."""
    dimensions = {
        "FunctionName": function or os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "unknown"),
        # The version, never the alias: it is what tells the canary from the stable.
        "Version": version or os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "unknown"),
    }
    line = {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in values],
                }
            ],
        },
        **dimensions,
        **values,
    }
    return json.dumps(line, separators=(",", ":"))


def emit_answer(output_tokens, response_length, schema_failed=False, guardrail_blocked=False, **kw):
    """Once per request. The failures are 0 or 1 on every request: a rate needs the zeros."""
    print(
        emf_line(
            {
                "OutputTokens": output_tokens,
                "ResponseLength": response_length,
                "SchemaFailures": int(bool(schema_failed)),
                "GuardrailBlocks": int(bool(guardrail_blocked)),
            },
            **kw,
        ),
        flush=True,
    )


def emit_feedback(thumbs_down, version, **kw):
    """Once per piece of feedback, with the version that answered."""
    print(emf_line({"Feedback": 1, "ThumbsDown": int(bool(thumbs_down))}, version=version, **kw), flush=True)


# The shadow's line and envelope; the same keys as crates/emf's `shadow` module.
PAIR_KEY = "coalmine:pair"
ENVELOPE_KEY = "coalmine:shadowed"


def shadow_request(event):
    """(request, shadowed): what the model answers, and whether coalmine is shadowing it.

    A shadowed request arrives as {"coalmine:shadowed": {"release": ..., "request": ...}}:
    nobody sees the answer, so the handler must not write anywhere."""
    if isinstance(event, dict) and len(event) == 1 and ENVELOPE_KEY in event:
        return event[ENVELOPE_KEY].get("request"), True
    return event, False


def record_pair(request, response, shadowed):
    """After answering a live request, one line with the request and the answer: what the
    shadow reads from the log group. Nothing when shadowed (the shadow never feeds itself)."""
    if not shadowed:
        print(json.dumps({PAIR_KEY: {"request": request, "response": response}}, separators=(",", ":")), flush=True)
