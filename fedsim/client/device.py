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
from fedsim.ethics.attacks import item_set_attack
from fedsim.ethics.consent import HOLDOUT, OPTED_IN, OPTED_OUT, assign_roles
from fedsim.metrics.baselines import popularity_scores
from fedsim.metrics.evaluate import UserMetrics, evaluate_scores
from fedsim.models import RankingModel, build_model
from fedsim.privacy import build_mechanism
from fedsim.privacy.dpsgd import train_users_dpsgd
from fedsim.privacy.mechanism import NoPrivacy

AUTO_NODES = 4


@dataclass
class Runtime:
    """Everything a process needs to play devices: data, split, model, shards, roles, mechanism (built once)."""

    cfg: FedsimConfig
    data: Interactions
    split: Split
    model: RankingModel
    shards: list[np.ndarray]
    roles: np.ndarray
    mechanism: NoPrivacy

    @property
    def n_nodes(self) -> int:
        return len(self.shards)

    def fresh_mechanism(self) -> NoPrivacy:
        """A new server-side mechanism (its accountant starts at zero) for one run over this population."""
        return build_mechanism(self.cfg, len(self.eligible))

    @property
    def eligible(self) -> np.ndarray:
        """Users who may be sampled to train: opted in, not held out, with training data."""
        return np.flatnonzero((self.roles == OPTED_IN) & (self.split.n_train() > 0))

    def training_params(self, proximal_mu: float = 0.0, train_shared: bool = True) -> LocalTrainingParams:
        c = self.cfg.client
        return LocalTrainingParams(
            batch_size=c.batch_size,
            lr=c.lr,
            optimizer=c.optimizer,
            loss=self.cfg.model.loss,
            l2=c.l2,
            proximal_mu=proximal_mu,
            max_rows_per_chunk=c.max_rows_per_chunk,
            train_shared=train_shared,
        )

    def samples(self, user: int, server_round: int, epochs: int | None = None, mitigate: bool = True):
        cfg, attack = self.cfg, self.cfg.attack
        return draw_user_samples(
            self.split,
            int(user),
            server_round,
            cfg.seed,
            cfg.client.negatives,
            cfg.client.epochs if epochs is None else epochs,
            cfg.model.loss,
            fake_ratio=attack.fake_ratio if mitigate and attack.mitigation == "fake_items" else 0.0,
            dense=mitigate and attack.mitigation == "dense",
        )


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
    roles = assign_roles(data.n_users, data.user_attributes, cfg.consent, cfg.attack, cfg.seed)
    population = int(np.sum((roles == OPTED_IN) & (split.n_train() > 0)))
    # the devices' copy: only its stateless on-device steps (clip, local noise) are used
    return Runtime(cfg, data, split, model, shards, roles, build_mechanism(cfg, population))


def get_runtime(cfg: FedsimConfig) -> Runtime:
    """The per-process runtime for ``cfg`` (memoised: Ray workers build it on their first message)."""
    key = repr(cfg)
    if key not in _RUNTIMES:
        if len(_RUNTIMES) >= 2:
            _RUNTIMES.pop(next(iter(_RUNTIMES)))
        _RUNTIMES[key] = _build_runtime(cfg)
    return _RUNTIMES[key]


def _attack_uploads(
    rt: Runtime, result: LocalResult, users: np.ndarray, config: dict[str, Any], rng: np.random.Generator
) -> dict[str, float]:
    """The curious server's item-set attack on a few users' individual uploads, as the server would see them."""
    n = min(rt.cfg.attack.users_per_round, len(users))
    if not rt.cfg.attack.item_set or n == 0:
        return {}
    chosen = np.sort(rng.choice(len(users), size=n, replace=False))
    norms = result.item_row_norms(rt.split.n_items)[torch.as_tensor(chosen)]
    sigma = float(config.get("local-noise-std", 0.0))
    if sigma > 0:  # local DP: the server sees every row of the upload with noise added on the device
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        rows = torch.zeros(n, rt.split.n_items, rt.model.item_width)
        rows[..., 0] = norms  # a row's norm is rotation invariant: put it on one axis, then add isotropic noise
        rows += torch.randn(rows.shape, generator=generator) * sigma
        norms = rows.norm(dim=2)
    return item_set_attack(norms.numpy(), [rt.split.train_items_of(int(users[i])) for i in chosen])


def train_shard(
    rt: Runtime,
    users: np.ndarray,
    private: np.ndarray,
    shared: dict[str, np.ndarray],
    server_round: int,
    config: dict[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray, LocalResult]:
    """Train ``users`` (with their private embeddings ``private``) and build the node's upload.

    Returns the upload (Σ_u w_u Δ_u per shared parameter, float64), its metrics (weights, losses, privacy counts,
    the simulated attacker's scores), the users' new private embeddings, and the raw :class:`LocalResult`.
    """
    samples = [rt.samples(int(u), server_round) for u in users]
    params = rt.training_params(float(config.get("proximal-mu", 0.0)))
    rng = np.random.default_rng([rt.cfg.seed, server_round, 4242, int(users[0]) if len(users) else 0])
    if "record-clip" in config:  # record-level DP-SGD on the device
        result = train_users_dpsgd(
            rt.model,
            shared,
            private,
            samples,
            params,
            float(config["record-clip"]),
            float(config["record-noise"]),
            int(rng.integers(2**62)),
        )
    else:
        result = train_users(rt.model, shared, private, samples, params)
    device_metrics = rt.mechanism.privatize_on_device(result, config, rng)
    attack_metrics = _attack_uploads(rt, result, users, config, rng)
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
        **attack_metrics,
    }
    return upload, metrics, result.private.numpy(), result


def fallback_scores(rt: Runtime, users: np.ndarray, shared: dict[str, np.ndarray]) -> torch.Tensor:
    """The non-personalised ranking served to users who opted out."""
    if rt.cfg.consent.fallback == "shared_model":
        no_embedding = torch.zeros(len(users), rt.model.private_dim)
        return rt.model.score_all(no_embedding, shared)
    opted_in = np.flatnonzero(rt.roles == OPTED_IN)
    return popularity_scores(rt.split, users, rt.split.item_popularity(opted_in)).float()


def membership_losses(rt: Runtime, users: np.ndarray, shared: dict[str, np.ndarray]) -> np.ndarray:
    """The attacker's loss for each user: fit a fresh embedding on the user's data with the shared model frozen."""
    if len(users) == 0:
        return np.zeros(0)
    fit_round = 0  # a fixed stream: the attacker's samples do not change with the evaluation round
    samples = [rt.samples(int(u), fit_round, epochs=rt.cfg.attack.fit_epochs, mitigate=False) for u in users]
    start = rt.model.init_private(users + rt.split.n_users, rt.cfg.seed)  # not the device's own initialisation
    fitted = train_users(rt.model, shared, start, samples, rt.training_params(train_shared=False))
    return fitted.loss


def evaluate_shard(
    rt: Runtime, users: np.ndarray, private: np.ndarray, shared: dict[str, np.ndarray]
) -> tuple[UserMetrics, dict[str, np.ndarray]]:
    """Each device ranks all items (personalised, or the fallback if it opted out) and scores its held-out items.

    Also returns the simulated membership attacker's per-user losses (``attack.membership``) for the shard's
    opted-in and held-out users.
    """
    roles = rt.roles[users]
    served = roles != HOLDOUT
    scores = rt.model.score_all(torch.as_tensor(private[served]), shared)
    out_rows = np.flatnonzero(roles[served] == OPTED_OUT)
    if len(out_rows):
        scores[torch.as_tensor(out_rows)] = fallback_scores(rt, users[served][out_rows], shared)
    metrics = evaluate_scores(scores, users[served], rt.split, rt.cfg.evaluation.k)
    extra: dict[str, np.ndarray] = {}
    if rt.cfg.attack.membership:
        candidates = users[(roles == OPTED_IN) | (roles == HOLDOUT)]
        candidates = candidates[rt.split.n_train()[candidates] > 0]
        extra = {"mia-users": candidates, "mia-loss": membership_losses(rt, candidates, shared)}
    return metrics, extra
