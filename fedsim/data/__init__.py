"""Datasets, the evaluation protocol and user sharding.

:func:`load_split` is the one entry point: config in, leave-one-out split out. It is memoised per process, because
each Flower virtual node loads its data lazily *inside* its Ray worker (datasets are never captured in the app
closures, which Ray would serialise with every message). The calibrated synthetic population
(:mod:`fedsim.data.population`) is not loaded at all: its split is a view that draws a user when a process first
reads it (:mod:`fedsim.data.lazy`).
"""

from __future__ import annotations

import functools

from fedsim.config import DatasetConfig
from fedsim.data.interactions import DatasetError, Interactions
from fedsim.data.lazy import lazy_views
from fedsim.data.population import Population
from fedsim.data.protocol import Split, leave_one_out
from fedsim.registry import resolve


def _load(cfg: DatasetConfig, seed: int) -> Interactions | Population:
    try:
        loader = resolve("dataset", cfg.name)
    except ValueError as error:
        raise DatasetError(f"dataset.name: {error}") from None
    return loader(cfg, seed)


def load_interactions(cfg: DatasetConfig, seed: int) -> Interactions:
    """Build the interaction log named by ``cfg.name`` (raises :class:`DatasetError` with one clear line); a
    synthetic population is drawn in full here — runs read it lazily through :func:`load_split` instead."""
    loaded = _load(cfg, seed)
    return loaded.materialize() if isinstance(loaded, Population) else loaded


@functools.lru_cache(maxsize=4)
def _cached(cfg_key: tuple, seed: int, n_negatives: int) -> tuple[Interactions, Split]:
    cfg = DatasetConfig(**dict(cfg_key))
    loaded = _load(cfg, seed)
    if isinstance(loaded, Population):
        return lazy_views(loaded, seed, n_negatives)
    return loaded, leave_one_out(loaded, n_negatives=n_negatives, seed=seed, tie_break=cfg.tie_break)


def load_split(cfg: DatasetConfig, seed: int, n_negatives: int = 99) -> tuple[Interactions, Split]:
    """The interactions and their leave-one-out split (cached per process)."""
    key = tuple(sorted((k, v) for k, v in vars(cfg).items()))
    return _cached(key, seed, n_negatives)


__all__ = ["DatasetError", "Interactions", "Split", "load_interactions", "load_split", "leave_one_out"]
