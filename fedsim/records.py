"""Typed conversions between numpy arrays and Flower's records — the one place the message format is spelled out.

Flower's ``RecordDict`` values are unions (arrays, configs, metrics); server and client read them through these
helpers so both sides agree on the format and the type checker knows what comes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in arrays.items()})


def to_metrics(values: Mapping[str, float]) -> MetricRecord:
    """A node's scalar metrics as a MetricRecord (Flower's value type is a union of scalars and lists)."""
    return MetricRecord(cast(dict[str, Any], dict(values)))


def arrays_of(message: Message, key: str = "arrays") -> dict[str, np.ndarray]:
    record = cast(ArrayRecord, message.content[key])
    return {name: cast(Array, value).numpy() for name, value in record.items()}


def config_of(message: Message) -> dict[str, Any]:
    return dict(cast(ConfigRecord, message.content["config"])) if "config" in message.content else {}


def metrics_of(message: Message) -> dict[str, Any]:
    return dict(cast(MetricRecord, message.content["metrics"]))
