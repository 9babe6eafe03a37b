"""Personalization methods: how a device turns the shared model plus its own data into its ranking.

Every method runs on the same protocol, data and privacy step: what leaves a device is only the shared update that
:func:`fedsim.client.device.train_shard` builds (clipped and noised as the mechanism asks). A method decides only what
the device does *around* that update — which user embedding it starts a round from, whether it keeps it, what else
it keeps (:meth:`Personalization.init_state`), and how it ranks at evaluation. Select one with
``personalization=<name>`` (``conf/personalization/``); the names live in :mod:`fedsim.registry` (kind
``"personalization"``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from fedsim.config import PersonalizationConfig
from fedsim.personalization.base import Personalization
from fedsim.registry import resolve

__all__ = ["Personalization", "build_personalization"]


@functools.lru_cache(maxsize=16)
def _build(fields: tuple[tuple[str, Any], ...]) -> Personalization:
    cfg = PersonalizationConfig(**dict(fields))
    return resolve("personalization", cfg.name)(cfg)


def build_personalization(cfg: PersonalizationConfig) -> Personalization:
    """The method ``cfg.name`` built with every field of ``cfg`` (memoised per process on all of them: methods hold
    no per-run state)."""
    return _build(tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(PersonalizationConfig)))
