"""What a sweep varies: the settings that tell its runs apart, so that only runs differing in ``seed`` are averaged.

A frontier's mean ± CI is over *seeds* of one setting. Grouping by a fixed list of keys (dataset, mechanism, target ε)
silently averages whatever else the sweep varied: ``+experiment=privacy_population`` sweeps ``dataset.n_users``, and
its N = 1000 and N = 10000 runs were averaged as if they were seeds of one setting. So the keys are found, not
listed: every configuration value (each run's ``summary.json`` config, flattened to dotted keys) that is not the same
in every run is a setting, except ``seed`` (the replicate) and the keys that only say where or how a run is shown.

The keys are named as the user typed them when that is possible: when the runs' command-line overrides
(``.hydra/overrides.yaml``) that vary split the runs exactly as the varying configuration values do, their keys are
used (``dataset=movielens_100k`` rather than ``dataset.name`` and ``dataset.path``); otherwise the configuration keys
are (an override that changes nothing, or runs without ``.hydra/``, cannot mislabel a group).

The keys that set ε (``privacy.target_epsilon``, ``privacy.noise_multiplier``) place a setting on the frontier's
x axis; the other keys are its *lines* (one line per N, one per mechanism, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedsim.report.collect import RunRecord

NOT_SETTINGS = frozenset({"seed", "output_dir", "resume_from", "progress", "verbose", "name"})
"""Keys that differ between runs without making them different experiments: the replicate, the run's name (derived
from its overrides, seed included: fedsim.tracking.naming), and where / how a run
writes or shows its output."""
EPSILON_KEYS = ("privacy.target_epsilon", "privacy.noise_multiplier")
"""What sets a run's ε: a setting's position on the x axis, not a line of its own."""
_MISSING = "(default)"  # a group or preset one run's overrides choose and another's leave at its default


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"dataset.n_users": 1000, ...}``; lists become tuples (hashable, compared by value)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        return {prefix[:-1]: tuple(repr(v) if isinstance(v, dict | list) else v for v in node)}
    return {prefix[:-1]: node}


def _override_values(overrides: Sequence[str]) -> dict[str, str]:
    """``["+experiment=a", "dataset.n_users=1000"]`` as ``{"experiment": "a", "dataset.n_users": "1000"}``."""
    out = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+~")
        if sep and not key.startswith("hydra."):
            out[key] = value
    return out


def _varying(values: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for v in values for k in v} - NOT_SETTINGS)
    return [k for k in keys if len({repr(v.get(k, _MISSING)) for v in values}) > 1]


def _partition(values: list[dict[str, Any]], keys: list[str]) -> set[frozenset[int]]:
    blocks: dict[tuple, set[int]] = {}
    for index, value in enumerate(values):
        blocks.setdefault(tuple(repr(value.get(k, _MISSING)) for k in keys), set()).add(index)
    return {frozenset(block) for block in blocks.values()}


@dataclass(frozen=True)
class Sweep:
    """The settings that vary across a sweep's runs, and each run's values of them."""

    keys: tuple[str, ...]
    values: dict[str, dict[str, Any]]  # per run folder: its keys and values (config or overrides)
    source: str  # "overrides" or "config": where the key names come from

    @property
    def line_keys(self) -> tuple[str, ...]:
        """The varying keys other than those that set ε: one line of the frontier per combination of their values."""
        return tuple(k for k in self.keys if k not in EPSILON_KEYS)

    def setting(self, record: RunRecord) -> dict[str, Any]:
        """The run's value of every varying key."""
        values = self.values.get(str(record.path), {})
        return {k: values.get(k, _MISSING) for k in self.keys}


def describe(records: Sequence[RunRecord]) -> Sweep:
    """The varying settings of ``records`` (see the module docstring)."""
    configs = [flatten(r.summary.get("config") or {}) for r in records]
    config_keys = _varying(configs)
    overrides = [_override_values(r.overrides) for r in records]
    for values, config in zip(overrides, configs, strict=True):  # a key left out of one run's overrides: its value
        values.update({k: config[k] for k in {k for v in overrides for k in v} - set(values) if k in config})
    override_keys = _varying(overrides)
    paths = [str(r.path) for r in records]
    if all(r.overrides for r in records) and _partition(overrides, override_keys) == _partition(configs, config_keys):
        return Sweep(tuple(override_keys), dict(zip(paths, overrides, strict=True)), "overrides")
    return Sweep(tuple(config_keys), dict(zip(paths, configs, strict=True)), "config")


def label(setting: dict[str, Any], keys: Sequence[str]) -> str:
    """``"dataset.n_users=1000, privacy=central"``; "" when no key varies."""
    return ", ".join(f"{k}={_text(setting.get(k, _MISSING))}" for k in keys)


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def order(value: Any) -> tuple:
    """Sort key that puts numbers (also numbers written as text, as overrides are) in numeric order, then text."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
    return (0, number, "") if not math.isnan(number) else (1, 0.0, str(value))
