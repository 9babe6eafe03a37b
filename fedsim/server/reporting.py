"""Which sampled users actually report: dropouts, availability and stragglers, seeded.

Real phones fail to report, are off-line, or are too slow for the round's deadline. Each is simulated after the
server has drawn the round's cohort, so the accountant's guarantee is untouched: sampling is what it certifies, and a
sampled user who does not report only removes signal from a sum whose denominator is fixed (central DP) — the
released mean is still a DP function of the data (the failures are independent of it), just with less signal.

* ``federation.dropout``: each sampled user fails to report with this probability;
* ``federation.availability``: each sampled user is reachable with this probability, or per group with
  ``federation.availability_by_group`` (values of ``federation.availability_attribute``) — availability that
  correlates with a demographic is a fairness question;
* ``federation.straggler_sigma`` / ``federation.deadline_s``: each device has a fixed speed factor ~ LogNormal(0, σ)
  (seeded per user); its simulated time is (training samples × factor) ms, and users later than the deadline are
  dropped as late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.config import ConfigError
from fedsim.runtime import Runtime

MS_PER_SAMPLE = 1e-3


@dataclass
class Reporting:
    users: np.ndarray  # the users whose updates arrive
    dropped: int  # dropouts and unavailable users
    late: int


class DeviceBehaviour:
    """Decides, per round, which of the sampled users report (seeded by (seed, round))."""

    def __init__(self, rt: Runtime) -> None:
        f = rt.cfg.federation
        self.seed = rt.cfg.seed
        self.dropout = f.dropout
        self.available = np.full(rt.split.n_users, f.availability)
        if f.availability_attribute is not None:
            if f.availability_attribute not in rt.data.user_attributes:
                raise ConfigError(
                    f"federation.availability_attribute={f.availability_attribute!r} is not a user attribute of this "
                    f"dataset; allowed: {', '.join(sorted(rt.data.user_attributes))}"
                )
            groups = np.asarray(rt.data.user_attributes[f.availability_attribute]).astype(str)
            for group, probability in f.availability_by_group.items():
                self.available[groups == group] = probability
        speed = np.random.default_rng([self.seed, 911]).lognormal(0.0, f.straggler_sigma, size=rt.split.n_users)
        self.seconds = rt.split.n_train() * rt.cfg.client.epochs * (1 + rt.cfg.client.negatives) * speed
        self.seconds = self.seconds * MS_PER_SAMPLE
        self.deadline = f.deadline_s

    @property
    def active(self) -> bool:
        return self.dropout > 0 or bool(np.any(self.available < 1)) or self.deadline > 0

    def report(self, server_round: int, users: np.ndarray) -> Reporting:
        if not self.active or len(users) == 0:
            return Reporting(users, 0, 0)
        rng = np.random.default_rng([self.seed, server_round, 313])
        reachable = (rng.random(len(users)) < self.available[users]) & (rng.random(len(users)) >= self.dropout)
        on_time = self.seconds[users] <= self.deadline if self.deadline > 0 else np.ones(len(users), bool)
        return Reporting(users[reachable & on_time], int(np.sum(~reachable)), int(np.sum(reachable & ~on_time)))
