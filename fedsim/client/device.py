"""What one virtual node does with its shard of user devices — pure functions, no Flower.

The Flower handlers in :mod:`fedsim.client.app` only unpack messages and ``context.state`` and call these; the
benchmark's compute floor and the unit tests call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.client.local_training import LocalResult, LocalTrainingParams, train_users
from fedsim.config import FedsimConfig
from fedsim.data import Interactions, Split, load_split
from fedsim.data.negatives import draw_user_samples
from fedsim.data.sharding import number_of_nodes, shard_users
from fedsim.metrics.evaluate import UserMetrics, evaluate_scores
from fedsim.models import RankingModel, build_model
from fedsim.privacy import build_mechanism
from fedsim.privacy.mechanism import NoPrivacy


@dataclass
class Runtime:
    """Everything a process needs to play devices: data, split, model, shards, mechanism (built once per process)."""

    cfg: FedsimConfig
    data: Interactions
    split: Split
    model: RankingModel
    shards: list[np.ndarray]
    mechanism: NoPrivacy

    @property
    def n_nodes(self) -> int:
        return len(self.shards)

    def training_params(self, proximal_mu: float = 0.0) -> LocalTrainingParams:
        c = self.cfg.client
        return LocalTrainingParams(
            batch_size=c.batch_size,
            lr=c.lr,
            optimizer=c.optimizer,
            loss=self.cfg.model.loss,
            l2=c.l2,
            proximal_mu=proximal_mu,
            max_rows_per_chunk=c.max_rows_per_chunk,
        )


AUTO_NODES = 4


def nodes_for(cfg: FedsimConfig, n_users: int) -> int:
    """Number of virtual nodes: ``users_per_node`` users each, or (auto, 0) a fixed 4 shards.

    Auto is a constant rather than "one per core" so a config gives the same shards on every machine; 4 keeps the
    two Ray workers of a 2-core machine busy with balanced shards while paying only 4 messages per round.
    """
    if cfg.federation.users_per_node > 0:
        return number_of_nodes(n_users, cfg.federation.users_per_node)
    return min(n_users, AUTO_NODES)


_RUNTIMES: dict[str, Runtime] = {}


def _build_runtime(cfg: FedsimConfig) -> Runtime:
    data, split = load_split(cfg.dataset, cfg.seed, cfg.evaluation.n_negatives)
    model = build_model(cfg.model, data.n_items)
    shards = shard_users(split.n_train(), nodes_for(cfg, data.n_users))
    return Runtime(cfg, data, split, model, shards, build_mechanism(cfg, data.n_users))


def get_runtime(cfg: FedsimConfig) -> Runtime:
    """The per-process runtime for ``cfg`` (memoised: Ray workers build it on their first message)."""
    key = repr(cfg)
    if key not in _RUNTIMES:
        if len(_RUNTIMES) >= 2:
            _RUNTIMES.pop(next(iter(_RUNTIMES)))
        _RUNTIMES[key] = _build_runtime(cfg)
    return _RUNTIMES[key]


def train_shard(
    rt: Runtime,
    users: np.ndarray,
    private: np.ndarray,
    shared: dict[str, np.ndarray],
    server_round: int,
    config: dict[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray, LocalResult]:
    """Train ``users`` (with their private embeddings ``private``) and build the node's upload.

    Returns the upload (Σ_u w_u Δ_u per shared parameter, float64), its metrics (weights, losses, privacy counts),
    the users' new private embeddings, and the raw :class:`LocalResult` (for attacks and tests).
    """
    cfg = rt.cfg
    samples = [
        draw_user_samples(
            rt.split, int(u), server_round, cfg.seed, cfg.client.negatives, cfg.client.epochs, cfg.model.loss
        )
        for u in users
    ]
    result = train_users(rt.model, shared, private, samples, rt.training_params(float(config.get("proximal-mu", 0.0))))
    rng = np.random.default_rng([cfg.seed, server_round, 4242, int(users[0]) if len(users) else 0])
    device_metrics = rt.mechanism.privatize_on_device(result, config, rng)
    weights = rt.mechanism.user_weights(result.n_samples, rt.split.n_train()[users])
    item_sum, dense_sum = result.weighted_sum(weights, rt.split.n_items, rt.model.item_width, rt.model.dense_shapes)
    rt.mechanism.noise_upload(item_sum, dense_sum, len(users), config, rng)
    upload = {"__items__": item_sum.numpy()}
    upload.update({k: v.numpy() for k, v in dense_sum.items()})
    metrics = {
        "num-examples": float(weights.sum()),
        "num-users": float(len(users)),
        "train-loss-sum": float(result.loss.sum()),
        "samples": float(result.n_samples.sum()),
        **device_metrics,
    }
    return upload, metrics, result.private.numpy(), result


def evaluate_shard(rt: Runtime, users: np.ndarray, private: np.ndarray, shared: dict[str, np.ndarray]) -> UserMetrics:
    """Each device ranks all items with its private embedding and scores its own held-out items."""
    scores = rt.model.score_all(torch.as_tensor(private), shared)
    return evaluate_scores(scores, users, rt.split, rt.cfg.evaluation.k)
