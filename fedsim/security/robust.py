"""Robust aggregation over a round's individual user updates (``strategy.robust``) — pure numpy, Flower's math.

Each rule maps the (n users × d) matrix of the round's per-user updates (item rows and dense parameters flattened,
as :func:`stack_user_updates` lays them out) to one d-vector that replaces the plain mean, and names the users it
kept. They operate on *users*, not on a node's pre-summed upload: a node hosts many users, and a median over three
node sums would say nothing about one lying device. ``strategy.server_lr`` then scales the result exactly as it
scales the mean.

* ``norm_bound`` — each update scaled to L2 ≤ ``strategy.robust_norm``, then the mean (Sun et al. 2019, "Can you
  really backdoor federated learning?"); the same operation as DP clipping, so it is the one rule central DP keeps;
* ``median`` — coordinate-wise median (Yin et al. 2018): Flower's ``aggregate_median``;
* ``trimmed_mean`` — coordinate-wise mean after cutting ``robust_trim`` of the values at each end (Yin et al. 2018):
  Flower's ``aggregate_trimmed_avg`` (``proportiontocut``);
* ``krum`` / ``multi_krum`` — the update(s) closest to their n − f − 2 nearest neighbours (Blanchard et al. 2017),
  f = ⌊``robust_byzantine`` · n⌋; Multi-Krum averages the n − f best. Flower's ``aggregate_krum`` definitions,
  vectorised (its pairwise loop costs O(n²) Python iterations; ``tests/security`` checks both agree).

Why it costs utility here: an item row is touched only by the users who trained on it, so for most rows most users'
updates are exactly zero — a median or trimmed mean over users silences the long tail along with the attacker.
"""

from __future__ import annotations

import numpy as np
from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg

from fedsim.config import StrategyConfig
from fedsim.updates import LocalResult

# (aggregated d-vector, indices of the users it kept, the rule's own diagnostics as ``robust/*`` metrics)
Rule = tuple[np.ndarray, np.ndarray, dict[str, float]]


def stack_user_updates(
    result: LocalResult, weights: np.ndarray, n_items: int, item_width: int, dense_shapes: dict[str, tuple[int, ...]]
) -> np.ndarray:
    """(U, d) float64: row u is w_u Δ_u, the packed item matrix (n_items × item_width) flattened, then every dense
    parameter flattened in ``dense_shapes`` order — the dense per-user layout robust aggregation and secure
    aggregation both need (a user's update is sparse in items, the protocols are not)."""
    n_dense = sum(int(np.prod(shape)) for shape in dense_shapes.values())
    out = np.zeros((len(result.users), n_items * item_width + n_dense))
    items = out[:, : n_items * item_width].reshape(len(result.users), n_items, item_width)
    for chunk in result.chunks:
        delta = chunk.item_delta.double().numpy()
        for local, position in enumerate(chunk.positions.tolist()):
            valid = chunk.items[local].numpy() >= 0
            items[position, chunk.items[local].numpy()[valid]] += delta[local][valid] * weights[position]
        start = n_items * item_width
        for name, shape in dense_shapes.items():
            size = int(np.prod(shape))
            value = chunk.dense_delta[name].double().reshape(len(chunk.positions), size).numpy()
            out[chunk.positions, start : start + size] = value * weights[chunk.positions, None]
            start += size
    return out


def unstack(
    vector: np.ndarray, n_items: int, item_width: int, dense_shapes: dict[str, tuple[int, ...]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inverse of one row of :func:`stack_user_updates`: (item matrix (n_items, W), {dense name: array})."""
    items = vector[: n_items * item_width].reshape(n_items, item_width)
    dense, start = {}, n_items * item_width
    for name, shape in dense_shapes.items():
        size = int(np.prod(shape))
        dense[name] = vector[start : start + size].reshape(shape)
        start += size
    return items, dense


def mean(updates: np.ndarray, cfg: StrategyConfig) -> Rule:
    """The plain mean (``strategy.robust=none``)."""
    return updates.mean(axis=0), np.arange(len(updates)), {}


def norm_bound(updates: np.ndarray, cfg: StrategyConfig) -> Rule:
    """Mean of the updates scaled to L2 ≤ ``cfg.robust_norm``. Every user is kept (a long update is shrunk, not
    dropped); ``robust/scaled_share`` says how many needed shrinking."""
    norms = np.linalg.norm(updates, axis=1)
    factors = np.minimum(1.0, cfg.robust_norm / np.maximum(norms, 1e-12))
    scaled = float(np.mean(norms > cfg.robust_norm)) if len(norms) else 0.0
    return (updates * factors[:, None]).mean(axis=0), np.arange(len(updates)), {"robust/scaled_share": scaled}


def median(updates: np.ndarray, cfg: StrategyConfig) -> Rule:
    """Coordinate-wise median (Flower's ``aggregate_median``; every user kept). Where fewer than half the users
    touched a coordinate, its median is exactly 0: on sparse recommender updates that is most of the model."""
    return aggregate_median([([u], 1) for u in updates])[0], np.arange(len(updates)), {}


def trimmed_mean(updates: np.ndarray, cfg: StrategyConfig) -> Rule:
    """Coordinate-wise trimmed mean (Flower's ``aggregate_trimmed_avg`` with ``proportiontocut=robust_trim``). It cuts
    ⌊β·n⌋ values at each end — none at all when n < 1/β, where it is the plain mean: ``robust/trimmed_per_end``
    records the count actually cut."""
    cut = float(int(cfg.robust_trim * len(updates)))  # scipy.stats.trimboth's count, which Flower calls
    out = aggregate_trimmed_avg([([u], 1) for u in updates], cfg.robust_trim)[0]
    return out, np.arange(len(updates)), {"robust/trimmed_per_end": cut}


def krum_scores(updates: np.ndarray, n_byzantine: int) -> np.ndarray:
    """Krum's score per update: the sum of squared distances to its n − f − 2 nearest others (Flower's definition:
    ``max(1, n - f - 2)`` neighbours, the nearest — itself — skipped)."""
    squared = np.einsum("ij,ij->i", updates, updates)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * updates @ updates.T, 0.0)
    np.fill_diagonal(distances, 0.0)
    closest = max(1, len(updates) - n_byzantine - 2)
    return np.sort(distances, axis=1)[:, 1 : closest + 1].sum(axis=1)


def _byzantine(n: int, cfg: StrategyConfig) -> int:
    return int(np.floor(cfg.robust_byzantine * n))


def _krum_info(n: int, f: int) -> dict[str, float]:
    """f in force and Krum's neighbour count: with n ≤ f + 3 it falls back to one neighbour (Flower's
    ``max(1, n - f - 2)``), and Krum's guarantee (n > 2f + 2) does not hold — both are recorded, not hidden."""
    return {"robust/byzantine_f": float(f), "robust/krum_neighbours": float(max(1, n - f - 2))}


def krum(updates: np.ndarray, cfg: StrategyConfig) -> Rule:
    """The one update with the lowest Krum score (Flower's ``aggregate_krum`` with ``to_keep=0``)."""
    f = _byzantine(len(updates), cfg)
    best = int(np.argmin(krum_scores(updates, f)))
    return updates[best].copy(), np.array([best]), _krum_info(len(updates), f)


def multi_krum(updates: np.ndarray, cfg: StrategyConfig) -> Rule:
    """The mean of the n − f updates with the lowest Krum scores (Flower's ``aggregate_krum``, ``to_keep=n − f``)."""
    f = _byzantine(len(updates), cfg)
    scores = krum_scores(updates, f)
    keep = max(1, len(updates) - f)
    best = np.argsort(scores)[::-1][len(scores) - keep :]  # Flower's selection, ties included
    return updates[best].mean(axis=0), np.sort(best), _krum_info(len(updates), f)
