"""The attack simulation as one unit: what the simulated attacker does on the devices' side, and the server-side
callback that turns it into ``risk/*`` metrics.

* **Item-set attack** (curious server): on a few users' individual uploads per node and round, exactly as the server
  would see them (clipped, and with that user's own local-DP noise when local DP is on) — :func:`attack_uploads`.
* **Membership inference**: at each evaluation the devices of opted-in and held-out users report the attacker's loss
  (a fresh embedding fitted with the shared model frozen) — :func:`membership_losses`; members are users who took
  part at least once.
* :class:`RiskMonitor` aggregates both into ``risk/*`` scalars next to the accountant's ceiling, and writes the
  membership attack's per-user scores of the latest evaluation to ``risk/mia_scores.csv`` (user, member label,
  loss, score = −loss), so that ``risk/mia_auc`` can be recomputed from the run's files.

The math (AUC, advantage, intervals) is in :mod:`fedsim.ethics.attacks`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.callbacks import Callback, RoundReport
from fedsim.data.roles import HOLDOUT, MALICIOUS, OPTED_IN
from fedsim.ethics.attacks import item_set_attack, membership_attack
from fedsim.ethics.erasure import erased_by
from fedsim.runtime import Runtime
from fedsim.training.local import train_users
from fedsim.updates import LocalResult

ITEMSET_KEYS = (("auc", "auc"), ("tpr1", "tpr_at_1pct_fpr"), ("precision", "precision"))
MIA_SCORES = Path("risk") / "mia_scores.csv"
"""The membership attack's scores at the latest evaluation, relative to the run folder."""


def attack_uploads(
    rt: Runtime, result: LocalResult, users: np.ndarray, config: dict[str, Any], rng: np.random.Generator
) -> dict[str, float]:
    """The curious server's item-set attack on a few users' individual uploads, as the server would see them (only
    users who consent to being measured are attacked, never the attacker's own malicious devices)."""
    measured = np.flatnonzero(rt.measured[users] & (rt.roles[users] != MALICIOUS))
    n = min(rt.cfg.attack.users_per_round, len(measured))
    if not rt.cfg.attack.item_set or n == 0:
        return {}
    chosen = measured[np.sort(rng.choice(len(measured), size=n, replace=False))]
    norms = result.item_row_norms(rt.split.n_items, chosen)  # only the attacked users' rows
    sigma = float(config.get("local-noise-std", 0.0))
    if sigma > 0:  # local DP: the server sees every row of the upload with noise added on the device
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        rows = torch.zeros(n, rt.split.n_items, rt.model.item_width)
        rows[..., 0] = norms  # a row's norm is rotation invariant: put it on one axis, then add isotropic noise
        rows += torch.randn(rows.shape, generator=generator) * sigma
        norms = rows.norm(dim=2)
    return item_set_attack(norms.numpy(), [rt.split.train_items_of(int(users[i])) for i in chosen])


def membership_losses(rt: Runtime, users: np.ndarray, shared: dict[str, np.ndarray]) -> np.ndarray:
    """The attacker's loss for each user: fit a fresh embedding on the user's data with the shared model frozen."""
    if len(users) == 0:
        return np.zeros(0)
    fit_round = 0  # a fixed stream: the attacker's samples do not change with the evaluation round
    samples = [rt.samples(int(u), fit_round, epochs=rt.cfg.attack.fit_epochs, mitigate=False) for u in users]
    start = rt.model.init_private(users + rt.split.n_users, rt.cfg.seed)  # not the device's own initialisation
    fitted = train_users(rt.model, shared, start, samples, rt.training_params(train_shared=False))
    return fitted.loss


def membership_candidates(rt: Runtime, users: np.ndarray) -> np.ndarray:
    """The users of a shard the membership attacker scores: contributing (opted in) or held out, with training data,
    and consenting to being measured."""
    roles = rt.roles[users]
    candidates = users[(((roles == OPTED_IN) & rt.contributes[users]) | (roles == HOLDOUT)) & rt.measured[users]]
    return candidates[rt.split.n_train()[candidates] > 0]


class RiskMonitor(Callback):
    """``risk/*`` scalars: the item-set attack of the round's uploads, membership inference at each evaluation, and
    the accountant's ceiling (``max_advantage_bound``: a callable returning the mechanism's current bound)."""

    def __init__(self, rt: Runtime, max_advantage_bound: Any, seed: int = 0) -> None:
        self.rt = rt
        self.seed = seed
        self.max_advantage_bound = max_advantage_bound
        self.membership_loss: dict[int, float] = {}
        self.latest: dict[str, float] = {}
        self.run_dir: Path | None = None

    def on_run_begin(self, info: dict[str, Any]) -> None:
        self.run_dir = Path(info["run_dir"]) if info.get("run_dir") else None

    def on_round_end(self, report: RoundReport) -> None:
        uploads = report.upload_metrics
        attacked = uploads.get("attack-users", 0.0)
        if attacked:
            for key, tag in ITEMSET_KEYS:
                report.metrics[f"risk/itemset_{tag}"] = uploads[f"attack-{key}-sum"] / attacked
        if report.evaluation is None:
            return None
        extras = report.device_extras
        if "mia-users" in extras:
            self.membership_loss.update(zip(extras["mia-users"].tolist(), extras["mia-loss"].tolist(), strict=True))
        out = {"risk/max_advantage_bound": float(self.max_advantage_bound())}
        if self.membership_loss and report.participations is not None:
            users = np.array(sorted(self.membership_loss))
            losses = np.array([self.membership_loss[u] for u in users])
            roles = self.rt.roles[users]
            members = (roles == OPTED_IN) & (report.participations[users] > 0)
            members &= ~np.isin(users, erased_by(self.rt, report.server_round))  # erased: measured by erasure/*
            nonmembers = roles == HOLDOUT
            if members.any() and nonmembers.any():
                out.update(membership_attack(losses[members], losses[nonmembers], seed=self.seed))
                self._save_scores(report.server_round, users, losses, members, nonmembers)
        report.metrics.update(out)
        return None

    def _save_scores(
        self, server_round: int, users: np.ndarray, losses: np.ndarray, members: np.ndarray, nonmembers: np.ndarray
    ) -> None:
        """``risk/mia_scores.csv``: one row per user the attack scored at this evaluation (member 1, held out 0),
        replaced at each evaluation (temp file + rename), so it always matches the run's latest ``risk/mia_auc``."""
        if self.run_dir is None:
            return
        path = self.run_dir / MIA_SCORES
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["round", "user", "member", "loss", "score"])
            scored = members | nonmembers
            for user, loss, member in zip(users[scored], losses[scored], members[scored], strict=True):
                writer.writerow([server_round, int(user), int(member), repr(float(loss)), repr(-float(loss))])
        os.replace(tmp, path)
