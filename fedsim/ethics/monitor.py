"""The per-evaluation ethics measurements: fairness by group, item exposure, and ``per_user.csv``.

A measurement callback: it runs before the writers (TensorBoard, metrics.jsonl) and adds its scalars to the round's
metrics, so they are logged like any other metric and the audit can gate on them.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.callbacks import Callback, RoundReport
from fedsim.data.roles import HOLDOUT, MALICIOUS, OPTED_IN, OPTED_OUT, PURPOSES, declines_any
from fedsim.ethics.exposure import exposure_metrics
from fedsim.ethics.fairness import GroupStats, activity_groups, bootstrap_ci, fairness_report
from fedsim.metrics.evaluate import PER_USER_METRICS, UserMetrics
from fedsim.mitigation.popularity import short_head
from fedsim.runtime import Runtime


def user_groupings(rt: Runtime) -> dict[str, np.ndarray]:
    """Every grouping of users fedsim reports on: dataset attributes, activity, consent (all users)."""
    groupings = {name: np.asarray(values).astype(str) for name, values in rt.data.user_attributes.items()}
    groupings.update(activity_groups(rt.split.n_train()))
    if rt.cfg.mode == "federated" and np.any(rt.roles == OPTED_OUT):
        groupings["consent"] = rt.roles.astype(str)
    return groupings


def write_per_user_csv(
    path: Path,
    rt: Runtime,
    evaluation: UserMetrics,
    groupings: dict[str, np.ndarray],
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """``extra``: more per-user columns aligned with ``evaluation.users`` (e.g. ``shared_test_hr``, so the
    personalisation lift per group is recomputable from the file)."""
    users = evaluation.users
    extra = extra or {}
    columns = ["user", "role", "n_train", *groupings, *PER_USER_METRICS, *extra]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        n_train = rt.split.n_train()
        for row, user in enumerate(users.tolist()):
            writer.writerow(
                [
                    user,
                    rt.roles[user],
                    int(n_train[user]),
                    *(g[user] for g in groupings.values()),
                    *(f"{evaluation.values[m][row]:.6g}" for m in PER_USER_METRICS),
                    *(f"{values[row]:.6g}" for values in extra.values()),
                ]
            )
        for user in np.flatnonzero(rt.roles == MALICIOUS).tolist():  # attack.poison: listed, never evaluated
            writer.writerow(
                [user, rt.roles[user], int(n_train[user]), *(g[user] for g in groupings.values())]
                + ["nan"] * (len(PER_USER_METRICS) + len(extra))
            )


class EthicsMonitor(Callback):
    """Fairness gaps, exposure and per-user files at every evaluation round."""

    def __init__(self, rt: Runtime, run_dir: str | Path, seed: int = 0) -> None:
        self.rt = rt
        self.run_dir = Path(run_dir)
        (self.run_dir / "per_user").mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.groupings = user_groupings(rt)
        self.latest_tables: dict[str, dict[str, dict[str, GroupStats]]] = {}

    @functools.cached_property
    def popularity(self) -> np.ndarray:
        """Training interactions per item (exposure's reference), counted at the first evaluation: on a lazily drawn
        population that is after the data audit, whose pass it then shares (fedsim/data/lazy.py)."""
        return self.rt.split.item_popularity()

    def on_round_end(self, report: RoundReport) -> Any:
        evaluation = report.evaluation
        if evaluation is not None and not self.rt.measured[evaluation.users].all():
            # devices of users who declined being measured report nothing; a path that evaluates them anyway
            # (the centralized baseline) must still leave them out of the analytics and per_user.csv
            keep = self.rt.measured[evaluation.users]
            evaluation = UserMetrics(
                evaluation.users[keep], {m: v[keep] for m, v in evaluation.values.items()}, evaluation.top_k[keep]
            )
        if evaluation is None or len(evaluation.users) == 0:
            return None
        users = evaluation.users
        labels = {name: values[users] for name, values in self.groupings.items()}
        cfg = self.rt.cfg
        min_size = cfg.fairness.min_group_size
        scalars, tables = fairness_report(evaluation.values, labels, cfg.evaluation.k, self.seed, min_size)
        val_scalars, _ = fairness_report(evaluation.values, labels, cfg.evaluation.k, self.seed, min_size, "val")
        scalars.update(val_scalars)
        scalars.update(exposure_metrics(evaluation.top_k, self.popularity))
        roles = self.rt.roles[users]
        for role, tag in ((OPTED_IN, "opted_in"), (OPTED_OUT, "opted_out")):
            if np.any(roles == role):
                scalars[f"consent/{tag}_test_hr"] = float(evaluation.values["test_hr"][roles == role].mean())
                scalars[f"consent/{tag}_users"] = float(np.sum(roles == role))
        if declines_any(cfg.consent):
            scalars.update(self.purpose_metrics(evaluation))
        if "consent/opted_out_test_hr" in scalars and "consent/opted_in_test_hr" in scalars:
            scalars["consent/personalization_lift_hr"] = (
                scalars["consent/opted_in_test_hr"] - scalars["consent/opted_out_test_hr"]
            )
        if not self.rt.in_evaluation_sample.all():  # a sample of users: say what it costs in precision
            k = cfg.evaluation.k
            for split in ("val", "test"):
                low, high = bootstrap_ci(evaluation.values[f"{split}_hr"], self.seed)
                scalars[f"{split}/hr@{k}_ci_low"], scalars[f"{split}/hr@{k}_ci_high"] = low, high
        report.metrics.update(scalars)
        self.latest_tables = tables
        # each user's own long-tail share of the top-K shown (its mean is items/long_tail_share): what a mitigation
        # such as rerank changes, per user, so that fedsim-report compare can pair it
        extra = {"long_tail_share": np.mean(~short_head(self.popularity)[evaluation.top_k], axis=1)}
        if "shared-users" in report.device_extras:  # personalization lift: the shared model's hit of the same user
            shared_users, shared_hr = report.device_extras["shared-users"], report.device_extras["shared-test-hr"]
            hit = dict(zip(shared_users.tolist(), shared_hr.tolist(), strict=True))
            extra["shared_test_hr"] = np.array([hit.get(u, np.nan) for u in users.tolist()], dtype=float)
        for path in (self.run_dir / "per_user.csv", self.run_dir / "per_user" / f"round_{report.server_round:04d}.csv"):
            write_per_user_csv(path, self.rt, evaluation, self.groupings, extra)
        return None

    def purpose_metrics(self, evaluation: UserMetrics) -> dict[str, float]:
        """Per purpose, the users who consent and who decline it (``consent/<purpose>/{consented,declined}_users``,
        among everyone served) and their mean test HR (``…_test_hr``, among the measured ones): what each choice
        costs the user who makes it. Who declined being measured has no HR, by construction."""
        served = self.rt.roles != HOLDOUT
        hr = evaluation.values["test_hr"]
        out: dict[str, float] = {}
        for column, purpose in enumerate(PURPOSES):
            assert self.rt.purposes is not None
            consents = self.rt.purposes[:, column]
            for side, mask in (("consented", consents), ("declined", ~consents)):
                out[f"consent/{purpose}/{side}_users"] = float(np.sum(served & mask))
                measured = mask[evaluation.users]
                if measured.any():
                    out[f"consent/{purpose}/{side}_test_hr"] = float(hr[measured].mean())
        return out
