"""Which users take part in a round.

Flower's samplers pick *nodes* and always a fixed number of them; fedsim samples *users* (devices), because the
privacy accountant's guarantee is about users:

* ``fixed``: ``round(participation × N)`` users drawn uniformly without replacement (all users when 1.0);
* ``poisson``: every user joins independently with probability ``participation`` — the sampling that the
  Poisson-subsampled Gaussian accountant (central DP) certifies; the cohort size varies from round to round;
* ``cyclic``: users fall into p = ``period`` groups by id (user id mod p, public and data-independent); round t
  serves group (t − 1) mod p, each of its users joining with probability min(1, participation × p) — the b-min-sep
  schedule of amplified banded matrix factorization (``privacy.noise=banded_mf``, fedsim/privacy/ftrl.py): a user
  takes part at most once in any p consecutive rounds.

Draws come from a generator seeded by (seed, round), so a run is reproducible and the cohort does not depend on
sharding.
"""

from __future__ import annotations

import numpy as np

from fedsim.privacy.randomness import dp_rng


class UserSampler:
    """Draw the cohort of round ``r`` from the ``eligible`` users."""

    def __init__(
        self,
        eligible: np.ndarray,
        participation: float,
        method: str,
        seed: int,
        secure_rng: bool = False,
        period: int = 1,
    ) -> None:
        if method not in ("fixed", "poisson", "cyclic"):
            raise ValueError(f"federation.sampling={method!r} is not allowed; choose one of: fixed, poisson, cyclic")
        self.period = period
        self.eligible = np.sort(np.asarray(eligible, dtype=np.int64))
        self.participation = participation
        self.method = method
        self.seed = seed
        self.secure_rng = secure_rng  # cohorts from OS entropy (privacy.secure_rng): who took part is not replayable

    def sample(self, server_round: int) -> np.ndarray:
        rng = dp_rng(self.secure_rng, self.seed, server_round, 5)
        if self.method == "cyclic":
            group = self.eligible[self.eligible % self.period == (server_round - 1) % self.period]
            rate = min(1.0, self.participation * self.period)
            return group if rate >= 1.0 else group[rng.random(len(group)) < rate]
        if self.method == "poisson":
            return self.eligible[rng.random(len(self.eligible)) < self.participation]
        if self.participation >= 1.0:
            return self.eligible.copy()
        size = max(1, int(round(self.participation * len(self.eligible))))
        return np.sort(rng.choice(self.eligible, size=size, replace=False))
