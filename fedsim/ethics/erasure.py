"""The right to erasure: who asks to be forgotten, and what remains of them in the shared model.

``erasure.share`` of the contributing users (a seeded draw) ask at the start of round ``erasure.round``. Under every
policy their devices delete what they hold (the node resets their private-embedding rows: a fresh install keeps
nothing of the old one) and the server never samples them again; they stop reporting metrics. What the shared model
still holds of them depends on ``erasure.policy``:

* ``none`` — nothing is done to the model: the whole federation stops at the request (nobody trains on) and keeps
  the model as it stands, so its utility is an earlier round's, not comparable with the other policies'. The only
  assurance is the DP guarantee, which bounds any membership test's advantage (printed as ``dp_advantage_bound``);
  without DP there is none. It is user-level (privacy=record, a per-rating bound, is refused with erasure);
* ``continue`` — training goes on without them; their influence decays as other users' updates overwrite it (measured,
  not guaranteed);
* ``retrain`` — exact for the model and the embeddings (not for the privacy mechanism's state, the participation
  log or the best-by-validation selection: :func:`fedsim.ethics.controls.controls_threat_model` says so): the model
  restarts from the last model before any of them took part (the initial model: every
  user may be sampled from round 1), the server optimiser's state is reset and every device re-initialises its
  embedding (they were fitted against models the erased users shaped); the rounds already trained are the cost.

:class:`ErasureMonitor` measures it with the membership attack of :mod:`fedsim.ethics.attacks` (the attacker holds
the targets' data, as that threat model assumes): the AUC of erased users who had taken part against never-members
(the attack's hold-out), at the last evaluation before the request and at the end, with bootstrap CIs; the same
attack on the members who stayed is the reference. Once they asked, the run's own ``risk/mia_*`` no longer counts
them as members.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.callbacks import Callback, RoundReport
from fedsim.data.roles import HOLDOUT, MALICIOUS, OPTED_IN
from fedsim.ethics.attacks import membership_attack
from fedsim.runtime import Runtime
from fedsim.tracking.console import say

POLICY_TEXT = {
    "none": "nothing done to the model: the whole federation stopped at the request and the model stands as it was "
    "(its utility is that of an earlier round: not comparable with the other policies')",
    "continue": "training continued without them: their influence decays, unguaranteed",
    "retrain": "exact for the model and the devices' embeddings: retrained from the initial model without them, every "
    "device embedding re-initialised (the privacy mechanism's state and the logs are not: see the threat model)",
}


def erased_users(rt: Runtime) -> np.ndarray:
    """The users who ask to be forgotten: ``erasure.share`` of the benign contributing users (an attacker's device
    does not ask), drawn with the run's seed."""
    share = rt.cfg.erasure.share
    eligible = rt.eligible[rt.roles[rt.eligible] != MALICIOUS]
    if share <= 0 or len(eligible) == 0:
        return np.zeros(0, dtype=np.int64)
    n = max(1, int(round(share * len(eligible))))
    return np.sort(np.random.default_rng([rt.cfg.seed, 131]).choice(eligible, size=n, replace=False))


def erased_by(rt: Runtime, server_round: int) -> np.ndarray:
    """The users erased by (the evaluation of) ``server_round``: none before the request round."""
    er = rt.cfg.erasure
    return erased_users(rt) if er.share > 0 and server_round >= er.round else np.zeros(0, dtype=np.int64)


def dp_bound_text(bound: float | None, epsilon: float | None) -> str:
    """What the DP guarantee says of an erased user's remaining influence (user-level, over the whole run)."""
    if bound is None or not np.isfinite(bound) or bound >= 1.0:
        return "no DP bound: nothing limits what the model holds of them (privacy=none, or ε too large to bound it)"
    eps = f"ε = {epsilon:.3g} spent by the round before the request; " if epsilon is not None else ""
    return (
        f"user-level DP ({eps}no later release used their data) bounds any membership test on an erased user to "
        f"advantage (TPR − FPR) <= {bound:.3g}"
    )


class ErasureMonitor(Callback):
    """``erasure/*`` scalars at every evaluation and the before/after table in ``summary.json`` (``erasure``)."""

    def __init__(self, rt: Runtime, seed: int = 0) -> None:
        self.rt = rt
        self.cfg = rt.cfg.erasure
        self.seed = seed
        self.erased = erased_users(rt)
        self.loss: dict[int, float] = {}
        self.before: dict[str, Any] | None = None
        self.after: dict[str, Any] | None = None
        self.members_at_request: int | None = None

    def measure(self, participations: np.ndarray) -> dict[str, float]:
        """Membership attack on erased members vs never-members, and on the members who stayed (reference)."""
        users = np.array(sorted(self.loss), dtype=np.int64)
        if len(users) == 0:
            return {}
        losses = np.array([self.loss[u] for u in users])
        counts = np.zeros(len(users), dtype=np.int64)
        known = users < len(participations)
        counts[known] = participations[users[known]]
        erased = np.isin(users, self.erased)
        roles = self.rt.roles[users]
        never = roles == HOLDOUT
        out: dict[str, float] = {}
        took_part = counts > 0
        for tag, members in (("erased", erased & took_part), ("retained", ~erased & (roles == OPTED_IN) & took_part)):
            if members.any() and never.any():
                attack = membership_attack(losses[members], losses[never], seed=self.seed)
                out[f"erasure/mia_auc_{tag}"] = attack["risk/mia_auc"]
                out[f"erasure/mia_auc_{tag}_ci_low"] = attack["risk/mia_auc_ci_low"]
                out[f"erasure/mia_auc_{tag}_ci_high"] = attack["risk/mia_auc_ci_high"]
                out[f"erasure/mia_advantage_{tag}"] = attack["risk/mia_advantage"]
                out[f"erasure/{tag}_members"] = float(members.sum())
        out["erasure/never_members"] = float(never.sum())
        return out

    def on_round_end(self, report: RoundReport) -> None:
        if report.evaluation is None or report.participations is None:
            return None
        extras = report.device_extras
        if "mia-users" in extras:
            self.loss.update(zip(extras["mia-users"].tolist(), extras["mia-loss"].tolist(), strict=True))
        scalars = self.measure(report.participations)
        report.metrics.update(scalars)
        snapshot = {
            "round": report.server_round,
            **{k.removeprefix("erasure/"): v for k, v in scalars.items()},
            "epsilon": report.metrics.get("privacy/epsilon"),
            "dp_advantage_bound": report.metrics.get("risk/max_advantage_bound"),
        }
        if report.server_round < self.cfg.round:
            self.before = snapshot
        self.after = snapshot
        return None

    def summary(self, rounds_completed: int) -> dict[str, Any]:
        """The before/after table, the policy's claim and its cost (``summary.json`` → ``erasure``)."""
        after = self.after if self.after is not None and self.after["round"] >= self.cfg.round else None
        if self.cfg.policy == "none":
            after = self.before  # the model was not touched again: what the attack saw before still holds
        # their data was last used in round request - 1 (measured there: erasure.round - 1 is an evaluation round);
        # later releases never touch it, so the guarantee they keep is the one spent by then
        bound = (self.before or {}).get("dp_advantage_bound")
        epsilon = (self.before or {}).get("epsilon")
        request = self.cfg.round
        cost = {
            "none": f"0 rounds; the {self.rt.cfg.federation.rounds - request + 1} planned rounds from round {request} "
            "were not trained",
            "continue": "0 rounds",
            "retrain": f"{request - 1} rounds of training discarded (rounds 1–{request - 1}); the kept model trained "
            f"{max(rounds_completed - request + 1, 0)} rounds without them",
        }[self.cfg.policy]
        return {
            "policy": self.cfg.policy,
            "claim": POLICY_TEXT[self.cfg.policy],
            "request_round": request,
            "erased_users": int(len(self.erased)),
            "protocol": "loss-threshold membership attack (attacker fits an embedding on the target's data, shared "
            "model frozen); AUC of erased users who had taken part vs never-members (the attack's hold-out), "
            "95% bootstrap CI; 0.5 = nothing to tell them apart",
            "before": self.before,
            "after": after,
            "cost": cost,
            "dp_bound": dp_bound_text(bound, epsilon),
        }

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """Say the outcome on the console: the attack before/after and the DP bound (or that there is none)."""
        erasure = summary.get("erasure")
        if not erasure:
            return
        before, after = erasure.get("before") or {}, erasure.get("after") or {}
        say(
            f"erasure ({erasure['policy']}): membership AUC on erased users vs never-members "
            f"{before.get('mia_auc_erased', float('nan')):.3f} before (round {before.get('round')}), "
            f"{after.get('mia_auc_erased', float('nan')):.3f} after (round {after.get('round')}); {erasure['dp_bound']}"
        )
