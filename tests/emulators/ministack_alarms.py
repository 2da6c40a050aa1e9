#!/usr/bin/env python3
"""MiniStack with each CloudWatch alarm evaluated on its own metric. Test-only.

MiniStack evaluates a metric alarm over every datapoint of its namespace and metric
name, whatever their dimensions (`ministack/services/cloudwatch.py`, `_evaluate_alarm`:
it gathers the points of every `(namespace, name, dims)` key whose namespace and name
match). CloudWatch evaluates an alarm on the one metric its dimensions name. So in
MiniStack, coalmine's tripwire for one endpoint (metric `Tripped` in `coalmine/Tripwire`,
dimension `Alarm`) fires when any other endpoint's tripwire is tripped, and tests that
run side by side stop each other's deployments.

This runs MiniStack as `python -m ministack` would, with `_evaluate_alarm` reading only
the points of its alarm's own dimension set; MiniStack on disk is unchanged:

    python tests/emulators/ministack_alarms.py
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

if __name__ == "__main__":
    from ministack.app import main

    main()
