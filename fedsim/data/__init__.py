"""Datasets, the evaluation protocol and user sharding.

:func:`load_split` is the one entry point: config in, leave-one-out split out. It is memoised per process, because
each Flower virtual node loads its data lazily *inside* its Ray worker (datasets are never captured in the app
closures, which Ray would serialise with every message).
"""

from __future__ import annotations

import functools

from fedsim.config import DatasetConfig
from fedsim.data.interactions import Interactions
from fedsim.data.movielens import DatasetError, load_ml1m, load_ml100k
from fedsim.data.protocol import Split, leave_one_out
from fedsim.data.synthetic import generate_synthetic


def load_interactions(cfg: DatasetConfig, seed: int) -> Interactions:
    """Build the interaction log named by ``cfg.name`` (raises :class:`DatasetError` with one clear line)."""
    if cfg.name == "synthetic":
        return generate_synthetic(
            n_users=cfg.n_users,
            n_items=cfg.n_items,
            latent_dim=cfg.latent_dim,
            min_interactions=cfg.min_interactions,
            max_interactions=cfg.max_interactions,
            activity_exponent=cfg.activity_exponent,
            popularity_exponent=cfg.popularity_exponent,
            minority_share=cfg.minority_share,
            group_shift=cfg.group_shift,
            taste_strength=cfg.taste_strength,
            seed=seed,
        )
    if cfg.name == "ml-100k":
        return load_ml100k(cfg.path or "")
    if cfg.name == "ml-1m":
        return load_ml1m(cfg.path or "")
    raise DatasetError(f"dataset.name={cfg.name!r} is not allowed; choose one of: synthetic, ml-100k, ml-1m")


@functools.lru_cache(maxsize=4)
def _cached(cfg_key: tuple, seed: int, n_negatives: int) -> tuple[Interactions, Split]:
    cfg = DatasetConfig(**dict(cfg_key))
    data = load_interactions(cfg, seed)
    return data, leave_one_out(data, n_negatives=n_negatives, seed=seed)


def load_split(cfg: DatasetConfig, seed: int, n_negatives: int = 99) -> tuple[Interactions, Split]:
    """The interactions and their leave-one-out split (cached per process)."""
    key = tuple(sorted((k, v) for k, v in vars(cfg).items()))
    return _cached(key, seed, n_negatives)


__all__ = ["DatasetError", "Interactions", "Split", "load_interactions", "load_split", "leave_one_out"]
