"""``lift/*``: personalisation lift — what the personal parts add over the shared model, overall and per group.

Methods with personal parts (:attr:`~fedsim.personalization.base.Personalization.reports_lift`: ``local_finetune``,
``dual``, ``ditto``) make each device also rank with the shared model alone — its kept embedding against the shared
tables, i.e. what ``private_embedding`` would serve from the same state — and report that test hit
(``shared-users``, ``shared-test-hr``). This callback puts, on the same users:

* ``shared/test_hr@K``: the shared model's HR@K; ``lift/test_hr@K``: personal minus shared;
* per grouping (dataset attributes, e.g. gender/age (ML-100K, synthetic), ``group`` (synthetic_v1), and activity) and
  per group with
  at least ``fairness.min_group_size`` users: ``lift/<grouping>/<group>/test_hr@K`` (mean paired difference) with its
  95% bootstrap CI (``…_ci_low``/``…_ci_high``), and ``shared/<grouping>/<group>/test_hr@K``.

* per grouping: ``lift_gap/<grouping>/<minority>_minus_<majority>/test_hr@K`` = lift(smallest group) − lift(largest
  group) with a 95% bootstrap CI (``…_ci_low``/``…_ci_high``) that resamples users within each group and keeps each
  user's personal and shared hit paired.
  A CI that covers 0 means one run cannot tell whether the minority gains less or more than the majority.

So a reader sees whether the lift is shared by a minority group or concentrated in the majority. Every user's shared
hit is also written to ``per_user.csv`` (``shared_test_hr``), so each of these numbers can be recomputed.
"""

from __future__ import annotations

import numpy as np

from fedsim.callbacks import Callback, RoundReport
from fedsim.ethics.fairness import BOOTSTRAP_SAMPLES, bootstrap_ci, gap_groups
from fedsim.ethics.monitor import user_groupings
from fedsim.runtime import Runtime


def lift_gap_ci(
    minority: np.ndarray, majority: np.ndarray, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """mean(minority) − mean(majority) of per-user paired lifts (personal − shared hit) and its percentile bootstrap
    CI: each resample draws users with replacement within each group, so a user's two hits stay together."""
    rng = np.random.default_rng([seed, 31])
    draws_a = minority[rng.integers(0, len(minority), size=(BOOTSTRAP_SAMPLES, len(minority)))].mean(axis=1)
    draws_b = majority[rng.integers(0, len(majority), size=(BOOTSTRAP_SAMPLES, len(majority)))].mean(axis=1)
    alpha = (1 - level) / 2
    gaps = draws_a - draws_b
    low, high = np.quantile(gaps, [alpha, 1 - alpha])
    return float(minority.mean() - majority.mean()), float(low), float(high)


class LiftMonitor(Callback):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.groupings = {k: v for k, v in user_groupings(rt).items() if k != "consent"}

    def on_round_end(self, report: RoundReport) -> None:
        users = report.device_extras.get("shared-users")
        if users is None or len(users) == 0 or report.evaluation is None:
            return None
        k, seed = self.rt.cfg.evaluation.k, self.rt.cfg.seed
        shared_hr = dict(zip(np.asarray(users).tolist(), report.device_extras["shared-test-hr"].tolist(), strict=True))
        evaluation = report.evaluation
        keep = np.array([u in shared_hr for u in evaluation.users.tolist()], dtype=bool)
        users = evaluation.users[keep]
        personal = evaluation.values["test_hr"][keep]
        plain = np.array([shared_hr[u] for u in users.tolist()])
        diff = personal - plain
        report.metrics[f"shared/test_hr@{k}"] = float(plain.mean())
        report.metrics[f"lift/test_hr@{k}"] = float(diff.mean())
        for name, labels in self.groupings.items():
            labels = labels[users].astype(str)
            kept = gap_groups(labels, self.rt.cfg.fairness.min_group_size)
            if kept:  # minority = the smallest kept group, majority = the largest (ties: the first name)
                sizes = {g: int(np.sum(labels == g)) for g in kept}
                small, large = min(kept, key=lambda g: sizes[g]), max(kept, key=lambda g: sizes[g])
                gap, low, high = lift_gap_ci(diff[labels == small], diff[labels == large], seed)
                tag = f"lift_gap/{name}/{small}_minus_{large}/test_hr@{k}"
                report.metrics[tag], report.metrics[f"{tag}_ci_low"], report.metrics[f"{tag}_ci_high"] = gap, low, high
            for group in kept:
                in_group = labels == group
                tag = f"{name}/{group}/test_hr@{k}"
                report.metrics[f"lift/{tag}"] = float(diff[in_group].mean())
                low, high = bootstrap_ci(diff[in_group], seed)
                report.metrics[f"lift/{tag}_ci_low"], report.metrics[f"lift/{tag}_ci_high"] = low, high
                report.metrics[f"shared/{tag}"] = float(plain[in_group].mean())
        return None
