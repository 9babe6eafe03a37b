"""Poisoning devices: a share of users are malicious devices that try to push one target item into benign users'
top-K lists (``attack.poison``), and the measurement of how far they get.

Who: ``attack.poison.fraction`` of all users get the role ``malicious`` (:func:`fedsim.data.roles.assign_roles`, drawn
from the seed); they are sampled like any contributing user, never evaluated (their metrics would be the attacker's),
and listed in ``per_user.csv`` with their role. What they promote: ``attack.poison.target``, by default a cold item —
the one with the fewest (≥ 1) training interactions, lowest id first (:func:`default_target`). What an attacker knows:
the shared model it receives each round and public item popularity (the ``filler_items`` most popular items).

Strategies (``attack.poison.strategy``):

* ``fake_users`` — data poisoning: the device trains honestly, but on crafted interactions — the target plus the most
  popular items (the "bandwagon" shilling profile, Burke et al. 2005; fake users in federated recommenders, e.g.
  Rong et al. 2022, "FedRecAttack"'s baseline). Its update passes every check a benign update does.
* ``boost_target`` — model-update poisoning: the device uploads a crafted update that touches only the target's item
  row: the gradient of benign users' summed scores of the target, their embeddings approximated by the popular
  items' mean embedding (PipAttack's popularity alignment, Zhang et al. 2022; FedRecAttack, Rong et al. 2022,
  approximates benign users' embeddings from public interactions the same way), bias raised, and scaled to
  ``attack.poison.update_norm``.

Clipping (``attack.poison.skip_clip``, default true): a real malicious device does not run the clip the protocol asks
of it — it uploads whatever it crafted. Nothing on the server enforces a per-user bound unless
``strategy.robust=norm_bound`` does: with central DP (no secagg) the server receives node sums, under secure
aggregation only the round's total, and the only bound left there is secagg's ±``secagg.clipping_range`` per
coordinate. With ``skip_clip=false`` the attackers play by the rules: the device clip applies to them, and
``boost_target`` aims at just inside the round's ``clipping-norm`` (× (1 − 10⁻⁶), so float rounding never makes the
clip shrink it).

Who may be malicious: the role is drawn among opted-in users, independently of the per-purpose declines
(``consent.decline_*``) and of the training data, and every malicious device is eligible (:attr:`Runtime.eligible`):
it may hold no training interaction of its own (it trains on its crafted profile), and a "declined contribution"
drawn for it is ignored — an attacker does not honour it. Under ``federation.user_weighting=examples`` its FedAvg
weight is its real training count (what the server's bookkeeping says; 0 for a device with no data, whose upload
then counts for nothing), not its profile's length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsim.callbacks import Callback, RoundReport
from fedsim.config import ConfigError, PoisonConfig
from fedsim.data.negatives import UserSamples, draw_user_samples
from fedsim.data.protocol import Split
from fedsim.data.roles import MALICIOUS
from fedsim.registry import resolve
from fedsim.runtime import Runtime
from fedsim.updates import LocalResult


def default_target(train_counts: np.ndarray) -> int:
    """The cold item an attacker would promote: fewest training interactions among items with at least one (an item
    nobody ever chose may not even be a real product), lowest id on ties."""
    candidates = np.flatnonzero(train_counts >= 1)
    if len(candidates) == 0:
        raise ConfigError("attack.poison: the training data has no interactions to pick a target item from")
    return int(candidates[np.argmin(train_counts[candidates])])  # argmin returns the first (lowest id) minimum


def popular_items(train_counts: np.ndarray, n: int, exclude: int) -> np.ndarray:
    """The ``n`` most popular items (ties by lowest id), without ``exclude``: the attacker's public knowledge."""
    order = np.lexsort((np.arange(len(train_counts)), -train_counts))
    return order[order != exclude][:n]


def target_of(cfg: PoisonConfig, split: Split) -> int:
    """``attack.poison.target``, checked against the catalogue, or the default cold item."""
    if cfg.target is None:
        return default_target(split.item_popularity())
    if not 0 <= cfg.target < split.n_items:
        raise ConfigError(
            f"attack.poison.target={cfg.target} is not an item of this dataset; allowed: 0..{split.n_items - 1}"
        )
    return int(cfg.target)


class PoisonAttack:
    """What every malicious device does: train on a crafted stream (target + popular fillers). Subclasses may then
    replace the update itself (:meth:`craft_updates_`)."""

    name = "base"

    def __init__(self, cfg: PoisonConfig, split: Split) -> None:
        self.cfg = cfg
        self.target = target_of(cfg, split)
        self.fillers = popular_items(split.item_popularity(), cfg.filler_items, self.target)

    @property
    def profile(self) -> np.ndarray:
        """The crafted interactions of a fake user: the target and the fillers, sorted."""
        return np.sort(np.concatenate([[self.target], self.fillers]))

    def samples(self, rt: Runtime, user: int, server_round: int) -> UserSamples:
        """The device's training stream: its crafted profile with fresh negatives, as a benign device draws them."""
        cfg = rt.cfg
        return draw_user_samples(
            rt.split,
            user,
            server_round,
            cfg.seed,
            cfg.client.negatives,
            cfg.client.epochs,
            cfg.model.loss,
            positives=self.profile,
            exclude_held_out=cfg.client.negatives_exclude_held_out,
        )

    def craft_updates_(
        self, rt: Runtime, result: LocalResult, rows: np.ndarray, shared: dict[str, np.ndarray], config: dict[str, Any]
    ) -> None:
        """Change the trained updates of the malicious positions ``rows`` in place (fake users: nothing to change)."""


class FakeUsers(PoisonAttack):
    """Data poisoning: the crafted stream is the whole attack (see the module docstring)."""

    name = "fake_users"


class BoostTarget(PoisonAttack):
    """Model-update poisoning: upload only a push of the target row toward the popular items' centre, at the bound."""

    name = "boost_target"

    def boost(self, item_matrix: torch.Tensor, tables: dict[str, int], norm: float) -> torch.Tensor:
        """The crafted change to the target's packed item row, of L2 norm ``norm``: the gradient of benign users'
        summed scores <p_u, q_t> + b_t with respect to the target's row, with the users' embedding centre Σ p_u
        approximated by the popular items' mean embedding (users' embeddings align with the items they like): the
        embedding columns move along that mean (unit length), every bias column rises by 1. A direction, not a
        point to reach, so the pushes of many devices add up."""
        centre = item_matrix[torch.as_tensor(self.fillers)].double().mean(0)
        direction, start = torch.zeros_like(centre), 0
        for name, width in tables.items():
            part = slice(start, start + width)
            if name.endswith("bias"):
                direction[part] = 1.0
            else:
                length = float(centre[part].norm())
                direction[part] = centre[part] / length if length > 1e-12 else 0.0
            start += width
        return direction * (norm / float(direction.norm()))

    def craft_updates_(
        self, rt: Runtime, result: LocalResult, rows: np.ndarray, shared: dict[str, np.ndarray], config: dict[str, Any]
    ) -> None:
        if len(rows) == 0:
            return
        if self.cfg.skip_clip or "clipping-norm" not in config:
            norm = self.cfg.update_norm
        else:  # playing by the clip: just inside it, so that float rounding never counts it as clipped
            norm = float(config["clipping-norm"]) * (1.0 - 1e-6)
        received: dict[str, np.ndarray | torch.Tensor] = dict(shared)
        push = self.boost(rt.model.pack_items(received), rt.model.item_tables, norm)
        bad = set(rows.tolist())
        for chunk in result.chunks:
            for local, position in enumerate(chunk.positions.tolist()):
                if position not in bad:
                    continue
                chunk.item_delta[local] = 0.0
                # the crafted stream always trains the target, so it is one of this user's local rows
                at = int(torch.nonzero(chunk.items[local] == self.target)[0, 0])
                chunk.item_delta[local, at] = push.to(chunk.item_delta.dtype)
                for name in chunk.dense_delta:
                    chunk.dense_delta[name][local] = 0.0


Held = list[tuple[int, list[int], torch.Tensor, dict[str, torch.Tensor]]]


def hold_unclipped(result: LocalResult, rows: np.ndarray, cfg: PoisonConfig) -> Held:
    """A copy of the malicious positions' updates before the device clip (``attack.poison.skip_clip``), to put back
    after it with :func:`restore_unclipped`; empty when the attackers play by the clip."""
    if not cfg.skip_clip or len(rows) == 0:
        return []
    bad, held = set(rows.tolist()), []
    for index, chunk in enumerate(result.chunks):
        local = [i for i, position in enumerate(chunk.positions.tolist()) if position in bad]
        if local:
            dense = {name: value[local].clone() for name, value in chunk.dense_delta.items()}
            held.append((index, local, chunk.item_delta[local].clone(), dense))
    return held


def restore_unclipped(result: LocalResult, held: Held) -> None:
    """Undo the device clip on the malicious positions: a malicious device uploads its crafted update unclipped."""
    for index, local, items, dense in held:
        chunk = result.chunks[index]
        chunk.item_delta[local] = items
        for name, value in dense.items():
            chunk.dense_delta[name][local] = value


def measures_target(cfg: PoisonConfig) -> bool:
    """Whether target exposure is measured: with malicious devices, or with ``attack.poison.target`` set and no
    attacker at all — the reference run that says how exposed the target is without an attack."""
    return cfg.fraction > 0 or cfg.target is not None


def build_attack(rt: Runtime) -> PoisonAttack | None:
    """The run's poisoning strategy (``attack.poison.strategy``), or None when no device is malicious."""
    cfg = rt.cfg.attack.poison
    if cfg.fraction <= 0:
        return None
    return resolve("poison", cfg.strategy)(cfg, rt.split)


def malicious_rows(rt: Runtime, users: np.ndarray) -> np.ndarray:
    """Positions in ``users`` of the malicious devices."""
    return np.flatnonzero(rt.roles[users] == MALICIOUS)


def target_ranks(scores: torch.Tensor, users: np.ndarray, split: Split, target: int) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of ``target`` in each user's ranking of every item they have not trained on (ties count against
    the target, as in :func:`fedsim.metrics.ranking.rank_among`); users who trained on the target are left out.

    Returns (users, ranks)."""
    keep = np.array([target not in set(split.train_items_of(int(u)).tolist()) for u in users], dtype=bool)
    users, scores = users[keep], scores[torch.as_tensor(keep)]
    exclude = torch.zeros_like(scores, dtype=torch.bool)
    for row, user in enumerate(users.tolist()):
        exclude[row, torch.as_tensor(split.train_items_of(user))] = True
    exclude[:, target] = True  # the target does not outrank itself
    beats = (scores >= scores[:, target].unsqueeze(1)) & ~exclude
    return users, beats.sum(dim=1).numpy().astype(np.float64) + 1.0


def exposure(top_k: np.ndarray, target: int) -> float:
    """Share of users whose top-K list holds ``target``."""
    return float(np.mean(np.any(top_k == target, axis=1))) if len(top_k) else float("nan")


class PoisonMonitor(Callback):
    """``risk/target_exposure@K``, ``risk/target_rank_mean`` / ``_median`` over the benign users evaluated who did not
    train on the target (the malicious devices are never evaluated; a user who trained on it cannot be shown it, so
    both metrics leave them out), and ``risk/target_in_benign_train``: how many evaluated benign users were left out
    for that reason. With ``mitigation=rerank`` the exposure reads the re-ranked top-K each device shows, while the
    rank is the target's place in the device's raw scores (before re-ranking)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.target = target_of(rt.cfg.attack.poison, rt.split)
        self.k = rt.cfg.evaluation.k

    def on_round_end(self, report: RoundReport) -> None:
        if report.evaluation is None or len(report.evaluation.users) == 0:
            return None
        users = np.asarray(report.evaluation.users)
        trained = np.array([self.target in set(self.rt.split.train_items_of(int(u)).tolist()) for u in users], bool)
        out = {
            f"risk/target_exposure@{self.k}": exposure(report.evaluation.top_k[~trained], self.target),
            "risk/target_in_benign_train": float(trained.sum()),
        }
        ranks = report.device_extras.get("target-rank")
        if ranks is not None and len(ranks):
            out["risk/target_rank_mean"] = float(np.mean(ranks))
            out["risk/target_rank_median"] = float(np.median(ranks))
        report.metrics.update(out)
        return None

    def describe(self) -> dict[str, Any]:
        cfg = self.rt.cfg.attack.poison
        counts = self.rt.split.item_popularity()
        return {
            "strategy": cfg.strategy,
            "malicious_devices": int(np.sum(self.rt.roles == MALICIOUS)),
            "target_item": self.target,
            "target_train_interactions": int(counts[self.target]),
            "target_popularity_rank": int(np.sum(counts > counts[self.target])) + 1,
            "filler_items": int(cfg.filler_items),
        }


def target_extras(rt: Runtime, scores: torch.Tensor, users: np.ndarray) -> dict[str, np.ndarray]:
    """What a benign device reports at evaluation when poisoning is simulated: the rank of the attacker's target in
    its own ranking (``target-users``, ``target-rank``; see :func:`target_ranks`)."""
    ranked, ranks = target_ranks(scores, users, rt.split, target_of(rt.cfg.attack.poison, rt.split))
    return {"target-users": ranked, "target-rank": ranks}
