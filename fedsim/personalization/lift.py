"""``lift/*``: personalisation lift — what the personal parts add over the shared model, overall and per group.

Methods with personal parts (:attr:`~fedsim.personalization.base.Personalization.reports_lift`: ``local_finetune``,
``dual``, ``ditto``) make each device also rank with the shared model alone — its kept embedding against the shared
tables, i.e. what ``private_embedding`` would serve from the same state — and report that test hit
(``shared-users``, ``shared-test-hr``). This callback puts, on the same users:

* ``shared/test_hr@K``: the shared model's HR@K; ``lift/test_hr@K``: personal minus shared;
* per grouping (dataset attributes, e.g. ML-100K gender/age, synthetic ``group``, and activity) and per group with
  at least ``fairness.min_group_size`` users: ``lift/<grouping>/<group>/test_hr@K`` (mean paired difference) with its
  95% bootstrap CI (``…_ci_low``/``…_ci_high``), and ``shared/<grouping>/<group>/test_hr@K``.

So a reader sees whether the lift is shared by a minority group or concentrated in the majority.
"""

from __future__ import annotations

import numpy as np

from fedsim.callbacks import Callback, RoundReport
from fedsim.ethics.fairness import bootstrap_ci, gap_groups
from fedsim.ethics.monitor import user_groupings
from fedsim.runtime import Runtime


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
            labels = labels[users]
            for group in gap_groups(labels, self.rt.cfg.fairness.min_group_size):
                in_group = labels == group
                tag = f"{name}/{group}/test_hr@{k}"
                report.metrics[f"lift/{tag}"] = float(diff[in_group].mean())
                low, high = bootstrap_ci(diff[in_group], seed)
                report.metrics[f"lift/{tag}_ci_low"], report.metrics[f"lift/{tag}_ci_high"] = low, high
                report.metrics[f"shared/{tag}"] = float(plain[in_group].mean())
        return None
