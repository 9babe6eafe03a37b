"""The simulated world of one run: data, split, model structure, user shards and roles — built once per process.

On the default synthetic population the data and split are lazy views (:mod:`fedsim.data.lazy`): a process holds the
per-user scalars (numbers of interactions, attributes, roles, shards) and only the users it reads — a node its
cohort and its evaluation sample, the driver the users it evaluates and attacks.

Client, server, ethics and the centralized baseline all read the same :class:`Runtime`, so none of them has to import
another to know who the users are. It holds no privacy mechanism and no training state: the server owns the
stateful pieces (strategy, accountant, loop), the devices own their private embeddings (``context.state``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedsim.config import ConsentConfig, FedsimConfig
from fedsim.data import Interactions, Split, load_split
from fedsim.data.lazy import LazySplit
from fedsim.data.negatives import UserSamples, draw_user_samples
from fedsim.data.roles import (
    CONTRIBUTION,
    HOLDOUT,
    MALICIOUS,
    MEASUREMENT,
    OPTED_IN,
    PERSONALIZATION,
    assign_purposes,
    assign_roles,
)
from fedsim.data.sharding import number_of_nodes, shard_users
from fedsim.metrics.baselines import popularity_scores
from fedsim.models import RankingModel, build_model
from fedsim.training.local import LocalTrainingParams

AUTO_NODES = 4


@dataclass
class Runtime:
    """Everything a process needs to play devices or serve them: data, split, model, shards, roles."""

    cfg: FedsimConfig
    data: Interactions
    split: Split
    model: RankingModel
    shards: list[np.ndarray]
    roles: np.ndarray
    # (users × purposes) consent matrix (fedsim.data.roles.assign_purposes); None: derived from the roles alone
    purposes: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.purposes is None:
            self.purposes = assign_purposes(self.roles, ConsentConfig(), 0)  # no purpose declined on its own

    @property
    def n_nodes(self) -> int:
        return len(self.shards)

    @property
    def personalised(self) -> np.ndarray:
        """Per user: served its personalised ranking (consents to personalisation) — else the fallback."""
        assert self.purposes is not None
        return self.purposes[:, PERSONALIZATION]

    @property
    def contributes(self) -> np.ndarray:
        """Per user: consents to contributing to the shared model (may be sampled, uploads)."""
        assert self.purposes is not None
        return self.purposes[:, CONTRIBUTION]

    @functools.cached_property
    def in_evaluation_sample(self) -> np.ndarray:
        """Per user: evaluated (and attacked, and in the fairness tables). Everyone up to ``evaluation.max_users``
        users; above, a seeded sample of that size, the same in every round and on every node — evaluation, fairness
        and the membership attack then cost O(sample), and their CIs say what the sample costs in precision."""
        n, cap = self.split.n_users, self.cfg.evaluation.max_users
        mask = np.ones(n, dtype=bool)
        if 0 < cap < n:
            mask[:] = False
            mask[np.random.default_rng([self.cfg.seed, 97]).choice(n, size=cap, replace=False)] = True
        return mask

    @property
    def measured(self) -> np.ndarray:
        """Per user: consents to being measured (metrics reported, attacked, in per_user.csv and fairness)."""
        assert self.purposes is not None
        return self.purposes[:, MEASUREMENT]

    @property
    def local_only(self) -> np.ndarray:
        """Users who fit their own embedding on the device against the frozen shared model and never upload: opted in,
        personalised, declined contribution, with training data."""
        mask = (self.roles == OPTED_IN) & self.personalised & ~self.contributes & (self.split.n_train() > 0)
        return np.flatnonzero(mask)

    @property
    def eligible(self) -> np.ndarray:
        """Users who may be sampled to train: opted in, contributing, not held out, with training data — and the
        malicious devices (attack.poison), which take part like anyone else and train on crafted data."""
        benign = (self.roles == OPTED_IN) & self.contributes & (self.split.n_train() > 0)
        return np.flatnonzero(benign | (self.roles == MALICIOUS))

    @property
    def served(self) -> np.ndarray:
        """The users a federated run scores: those with a held-out item, except the membership attack's hold-out, the
        malicious devices, who declined being measured and who is outside the evaluation sample. ItemPop and the
        centralized ceiling are scored on exactly these users, so the three numbers of every run compare."""
        users = self.split.evaluated_users
        roles = self.roles[users]
        keep = (roles != HOLDOUT) & (roles != MALICIOUS) & self.measured[users] & self.in_evaluation_sample[users]
        return users[keep]

    @property
    def population(self) -> int:
        """N of the privacy accountant: the number of users who may be sampled."""
        return len(self.eligible)

    def partition_of_user(self) -> np.ndarray:
        """The node partition hosting each user."""
        out = np.empty(self.split.n_users, dtype=np.int64)
        for partition, shard in enumerate(self.shards):
            out[shard] = partition
        return out

    def training_params(self, proximal_mu: float = 0.0, train_shared: bool = True) -> LocalTrainingParams:
        return LocalTrainingParams.from_config(
            self.cfg.client, self.cfg.model.loss, proximal_mu=proximal_mu, train_shared=train_shared
        )

    def samples(self, user: int, server_round: int, epochs: int | None = None, mitigate: bool = True) -> UserSamples:
        """User ``user``'s training stream of ``server_round`` (item-set mitigation unless ``mitigate=False``)."""
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
            exclude_held_out=cfg.client.negatives_exclude_held_out,
        )

    def fallback_scores(self, users: np.ndarray, shared: dict[str, np.ndarray]) -> torch.Tensor:
        """The non-personalised ranking served to users who declined personalisation (``consent.fallback``).

        Popularity counts only contributing users' interactions: a user who declined contribution shares no data,
        counts included."""
        if self.cfg.consent.fallback == "shared_model":
            no_embedding = torch.zeros(len(users), self.model.private_dim)
            return self.model.score_all(no_embedding, shared)
        contributing = np.flatnonzero((self.roles == OPTED_IN) & self.contributes)
        return popularity_scores(self.split, users, self.split.item_popularity(contributing)).float()


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
    rt = Runtime(cfg, data, split, model, shards, roles, assign_purposes(roles, cfg.consent, cfg.seed))
    if isinstance(split, LazySplit):  # item popularity is then counted per group in one pass over the population
        split.popularity_groups(_popularity_groups(rt))
    return rt


def _popularity_groups(rt: Runtime) -> np.ndarray:
    """Per user, a small label such that every user set whose item popularity a run asks for (everyone, the
    eligible, the contributing opted-in users) is a union of labels: role × contributes × has training data."""
    _, role = np.unique(rt.roles, return_inverse=True)
    return (role * 2 + rt.contributes) * 2 + (rt.split.n_train() > 0)


def get_runtime(cfg: FedsimConfig, world: str | Path | None = None, required: bool = False) -> Runtime:
    """The per-process runtime for ``cfg`` (memoised: Ray workers build it on their first message).

    With ``world`` (a folder :func:`export_world` wrote for this ``cfg``), the arrays are memory-mapped from it instead
    of built: a Ray worker then neither regenerates the population nor holds a copy of it — a node's pages are read
    only when it touches its own users' rows. The default synthetic population has no arrays to map: every process
    builds its runtime from the config in about a second at 10⁶ users (per-user scalars only) and draws the users it
    reads (:mod:`fedsim.data.lazy`), so its world folder holds only the index. A folder that is missing (a worker on
    another machine of a Ray
    cluster) or was written for another population falls back to building — unless ``required`` (a SuperNode told
    to map it), then that is a ValueError naming the folder.
    """
    key = repr(cfg)
    if key not in _RUNTIMES:
        if len(_RUNTIMES) >= 2:
            _RUNTIMES.pop(next(iter(_RUNTIMES)))
        loaded = _load_world(cfg, Path(world), required) if world is not None else None
        _RUNTIMES[key] = loaded if loaded is not None else _build_runtime(cfg)
    return _RUNTIMES[key]


_WORLD_META = "world.json"


def export_world(rt: Runtime, folder: str | Path) -> Path:
    """Save ``rt``'s arrays as ``.npy`` files (one per array, so each can be memory-mapped) and a small JSON index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # a lazily drawn population has nothing to map: each process draws the users it reads from the config itself
    lazy = isinstance(rt.split, LazySplit)
    arrays = {} if lazy else _world_arrays(rt)
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
    meta = {
        "population": world_key(rt.cfg),
        "arrays": sorted(arrays),
        "n_users": rt.data.n_users,
        "n_items": rt.data.n_items,
        "item_names": rt.data.item_names,
        "source": rt.data.source,
        "attributes": sorted(rt.data.user_attributes),
        "n_shards": len(rt.shards),
        "lazy": lazy,
    }
    (folder / _WORLD_META).write_text(json.dumps(meta))  # written last: its presence marks a complete folder
    return folder


def _world_arrays(rt: Runtime) -> dict[str, np.ndarray]:
    split = rt.split
    arrays = {
        "user": rt.data.user,
        "item": rt.data.item,
        "timestamp": rt.data.timestamp,
        "train_indptr": split.train_indptr,
        "train_items": split.train_items,
        "val_item": split.val_item,
        "test_item": split.test_item,
        "eval_negatives": split.eval_negatives,
        "roles": rt.roles,
        "shard_users": np.concatenate(rt.shards),
        "shard_sizes": np.array([len(s) for s in rt.shards], dtype=np.int64),
    }
    if rt.purposes is not None:
        arrays["purposes"] = rt.purposes
    arrays.update({f"attribute_{name}": np.asarray(v) for name, v in rt.data.user_attributes.items()})
    return arrays


def world_key(cfg: FedsimConfig) -> str:
    """What a saved world depends on (the settings :func:`_build_runtime` reads): the data, its split and negatives,
    the shards and the user roles. Other settings (rounds, privacy, output folder, ...) may differ."""
    parts = (cfg.dataset, cfg.seed, cfg.evaluation.n_negatives, cfg.federation.users_per_node, cfg.consent, cfg.attack)
    return repr(parts)


def _load_world(cfg: FedsimConfig, folder: Path, required: bool = False) -> Runtime | None:
    try:
        meta = json.loads((folder / _WORLD_META).read_text())
    except (OSError, ValueError):
        if required:
            raise ValueError(f"world={folder}: no saved population there (write one with fedsim-world)") from None
        return None
    if meta.get("population") != world_key(cfg):
        if required:
            raise ValueError(
                f"world={folder} was saved for another population (dataset, seed, negatives, shards, consent or "
                "attack settings differ): save it with fedsim-world and the same overrides as the run"
            )
        return None
    if meta.get("lazy"):
        return _build_runtime(cfg)
    a = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in meta["arrays"]}
    data = Interactions(
        user=a["user"],
        item=a["item"],
        timestamp=a["timestamp"],
        n_users=meta["n_users"],
        n_items=meta["n_items"],
        user_attributes={name: a[f"attribute_{name}"] for name in meta["attributes"]},
        item_names=meta["item_names"],
        source=meta["source"],
    )
    split = Split(
        n_users=meta["n_users"],
        n_items=meta["n_items"],
        train_indptr=a["train_indptr"],
        train_items=a["train_items"],
        val_item=a["val_item"],
        test_item=a["test_item"],
        eval_negatives=a["eval_negatives"],
    )
    shards = np.split(np.asarray(a["shard_users"]), np.cumsum(a["shard_sizes"])[:-1])
    model = build_model(cfg.model, data.n_items)
    return Runtime(cfg, data, split, model, shards, np.asarray(a["roles"]), a.get("purposes"))
