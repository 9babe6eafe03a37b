"""``cold/*``: how well a method serves users who never trained (the membership attack's hold-out).

The devices report each hold-out user's test hit (``cold-users``, ``cold-test-hr`` in the evaluation reply, only for
methods that serve cold start, e.g. :mod:`.reconstruction`); this callback averages them into ``cold/test_hr@K`` and
puts ItemPop on the same users beside it (``cold/itempop_test_hr@K``), popularity counted over the users who train.
"""

from __future__ import annotations

import numpy as np

from fedsim.callbacks import Callback, RoundReport
from fedsim.metrics.baselines import item_pop
from fedsim.runtime import Runtime


class ColdStartMonitor(Callback):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def on_round_end(self, report: RoundReport) -> None:
        users = report.device_extras.get("cold-users")
        if users is None or len(users) == 0:
            return None
        k = self.rt.cfg.evaluation.k
        users = np.asarray(users, dtype=np.int64)
        report.metrics[f"cold/test_hr@{k}"] = float(np.mean(report.device_extras["cold-test-hr"]))
        baseline = item_pop(self.rt.split, k, users, trained_by=self.rt.eligible).mean()["test_hr"]
        report.metrics[f"cold/itempop_test_hr@{k}"] = float(baseline)
        report.metrics["cold/users"] = float(len(users))
        return None
