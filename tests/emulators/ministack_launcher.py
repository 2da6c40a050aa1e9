#!/usr/bin/env python3
"""MiniStack with two behaviours of AWS it lacks, for the tests. Test-only.

1. Each CloudWatch alarm evaluated on its own metric.

MiniStack evaluates a metric alarm over every datapoint of its namespace and metric
name, whatever their dimensions (`ministack/services/cloudwatch.py`, `_evaluate_alarm`:
it gathers the points of every `(namespace, name, dims)` key whose namespace and name
match). CloudWatch evaluates an alarm on the one metric its dimensions name. So in
MiniStack, coalmine's tripwire for one endpoint (metric `Tripped` in `coalmine/Tripwire`,
dimension `Alarm`) fires when any other endpoint's tripwire is tripped, and tests that
run side by side stop each other's deployments.

Here `_evaluate_alarm` reads only the points of its alarm's own dimension set.

2. A state's `Retry` honours `MaxDelaySeconds`. The States Language caps each retry's
interval at a retrier's `MaxDelaySeconds` (the "Retrying after an error" section of the
Step Functions developer guide: "MaxDelaySeconds ... sets the maximum value, in seconds,
up to which a retry interval can increase"); MiniStack ignores the field and caps every
interval at 60 s. The release state machine's retries are sized in time, so the
emulator must wait as AWS does: the retrier a failed task matches comes back with the
interval of this attempt already capped.

This runs MiniStack as `python -m ministack` would, with both; MiniStack on disk is
unchanged:

    python tests/emulators/ministack_launcher.py
"""

import threading
import types

import ministack.services.cloudwatch as cloudwatch

_evaluating = threading.local()


class _OwnMetric:
    """What `_evaluate_alarm` sees of the metric store: the alarm's own metric."""

    def items(self):
        wanted = _evaluating.dims_key
        return [(key, points) for key, points in cloudwatch._metrics.items() if key[2] == wanted]


_original = cloudwatch._evaluate_alarm
# The same code, reading `_metrics` from globals where that name is the filtered view.
_on_own_metric = types.FunctionType(
    _original.__code__, {**vars(cloudwatch), "_metrics": _OwnMetric()}, _original.__name__
)


def _evaluate_alarm(alarm):
    dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []}
    _evaluating.dims_key = cloudwatch._dims_key(dims)
    return _on_own_metric(alarm)


cloudwatch._evaluate_alarm = _evaluate_alarm

import ministack.services.stepfunctions as stepfunctions  # noqa: E402

_find_matching_retrier = stepfunctions._find_matching_retrier


def _retrier_with_capped_interval(retriers, error, retry_counts):
    retrier, idx = _find_matching_retrier(retriers, error, retry_counts)
    if retrier is None or "MaxDelaySeconds" not in retrier:
        return retrier, idx
    count = retry_counts.get(idx, 0)
    interval = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** count
    capped = min(interval, retrier["MaxDelaySeconds"])
    # MiniStack sleeps IntervalSeconds * BackoffRate ** count: with a rate of 1, the capped interval.
    return {**retrier, "IntervalSeconds": capped, "BackoffRate": 1.0}, idx


stepfunctions._find_matching_retrier = _retrier_with_capped_interval

if __name__ == "__main__":
    from ministack.app import main

    main()
