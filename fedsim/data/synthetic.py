"""The first built-in synthetic dataset, ``dataset=synthetic_v1``: kept so that the numbers recorded with it reproduce.

The default is now the calibrated population of :mod:`fedsim.data.population` (MovieLens-100K's statistics at any N,
drawn one user at a time). This one was built to exercise everything fedsim measures, not to imitate one real
service:

* latent taste vectors for users and items, so a factorisation model has real signal to learn;
* Zipf-like item popularity (a short head and a long tail, for exposure and long-tail metrics);
* heavy-tailed user activity between ``min_interactions`` and ``max_interactions`` (activity fairness; the
  vectorised trainer's bucketing);
* an ``activity_tier`` attribute (light < 20 interactions <= medium < 100 <= heavy);
* a binary ``group`` attribute with a configurable minority share whose taste is shifted by ``group_shift``
  (a model fitted to the majority serves the minority worse: a fairness gap to measure);
* timestamps, so the leave-one-out-by-time protocol is the same as on MovieLens.

Everything is drawn from one ``numpy`` generator seeded by ``seed``: same seed, same data — but a user's data
depends on every user drawn before it, so the whole population is built at once, in one process.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from fedsim.config import DatasetConfig
from fedsim.data.interactions import Interactions


def generate_synthetic(cfg: DatasetConfig, seed: int = 0, **overrides: Any) -> Interactions:
    """Draw a synthetic implicit-feedback log from a ``dataset=synthetic_v1`` config (conf/dataset/synthetic_v1.yaml
    holds its values of the keys it shares with the default generator); ``overrides`` replace single fields, e.g.
    ``n_users=30`` in tests.

    Parameters (fields of :class:`~fedsim.config.DatasetConfig`)
    ----------
    activity_exponent : float
        Pareto shape of the number of interactions per user (smaller = heavier tail), clipped to
        ``[min_interactions, min(max_interactions, n_items // 2)]``.
    popularity_exponent : float
        Zipf exponent of item popularity: item of popularity rank r gets prior weight ``r ** -popularity_exponent``.
    minority_share : float
        Fraction of users in group ``"B"`` (the rest are ``"A"``).
    group_shift : float
        Length of the shift added to the taste vectors of group B along a fixed direction; 0 = same tastes.
    taste_strength : float
        Scale of the taste term against popularity in an item's choice logit; 0 = pure popularity.
    """
    c = replace(cfg, **overrides)
    n_users, n_items, latent_dim = c.n_users, c.n_items, c.latent_dim
    min_interactions, max_interactions = c.min_interactions, c.max_interactions
    activity_exponent, popularity_exponent, minority_share = (
        c.activity_exponent,
        c.popularity_exponent,
        c.minority_share,
    )
    group_shift, taste_strength = c.group_shift, c.taste_strength
    rng = np.random.default_rng(seed)
    item_factors = rng.normal(0.0, 1.0, size=(n_items, latent_dim)) / np.sqrt(latent_dim)
    popularity_rank = rng.permutation(n_items) + 1
    log_popularity = -popularity_exponent * np.log(popularity_rank)

    is_minority = rng.random(n_users) < minority_share
    shift_direction = rng.normal(size=latent_dim)
    shift_direction /= np.linalg.norm(shift_direction)
    user_factors = rng.normal(0.0, 1.0, size=(n_users, latent_dim))
    user_factors[is_minority] += group_shift * shift_direction * np.sqrt(latent_dim)

    activity = min_interactions * (1.0 + rng.pareto(activity_exponent, size=n_users))
    # nobody interacts with more than half the catalogue, so every user keeps unseen items to rank against
    counts = np.clip(np.round(activity), min_interactions, min(max_interactions, n_items // 2)).astype(np.int64)

    users, items = [], []
    for u in range(n_users):
        logits = log_popularity + taste_strength * item_factors @ user_factors[u]
        # Gumbel top-k: a weighted sample without replacement, proportional to exp(logits)
        keys = logits + rng.gumbel(size=n_items)
        chosen = np.argpartition(-keys, counts[u] - 1)[: counts[u]]
        users.append(np.full(counts[u], u, dtype=np.int64))
        items.append(chosen.astype(np.int64))
    user = np.concatenate(users)
    item = np.concatenate(items)
    # Timestamps: each user's events in a random order over a common window.
    timestamp = rng.integers(0, 10_000_000, size=len(user), dtype=np.int64)

    group = np.where(is_minority, "B", "A")
    activity_tier = np.select([counts < 20, counts < 100], ["light", "medium"], default="heavy")
    return Interactions(
        user=user,
        item=item,
        timestamp=timestamp,
        n_users=n_users,
        n_items=n_items,
        user_attributes={"group": group, "activity_tier": activity_tier},
        item_names=[f"item {i} (pop. rank {popularity_rank[i]})" for i in range(n_items)],
        source=f"synthetic(n_users={n_users}, n_items={n_items}, seed={seed})",
    )


def synthetic_from_config(cfg: DatasetConfig, seed: int) -> Interactions:
    """The registry's entry point (see :mod:`fedsim.registry`)."""
    return generate_synthetic(cfg, seed)
