"""Which users take part in a round.

Flower's samplers pick *nodes* and always a fixed number of them; fedsim samples *users* (devices), because the
privacy accountant's guarantee is about users:

* ``fixed``: ``round(participation × N)`` users drawn uniformly without replacement (all users when 1.0);
* ``poisson``: every user joins independently with probability ``participation`` — the sampling that the
  Poisson-subsampled Gaussian accountant (central DP) certifies; the cohort size varies from round to round.

Draws come from a generator seeded by (seed, round), so a run is reproducible and the cohort does not depend on
sharding.
"""

from __future__ import annotations

import numpy as np

from fedsim.privacy.randomness import dp_rng


class UserSampler:
    """Draw the cohort of round ``r`` from the ``eligible`` users."""

    def __init__(
        self, eligible: np.ndarray, participation: float, method: str, seed: int, secure_rng: bool = False
    ) -> None:
        if method not in ("fixed", "poisson"):
            raise ValueError(f"federation.sampling={method!r} is not allowed; choose one of: fixed, poisson")
        self.eligible = np.sort(np.asarray(eligible, dtype=np.int64))
        self.participation = participation
        self.method = method
        self.seed = seed
        self.secure_rng = secure_rng  # cohorts from OS entropy (privacy.secure_rng): who took part is not replayable

    def sample(self, server_round: int) -> np.ndarray:
        rng = dp_rng(self.secure_rng, self.seed, server_round, 5)
        if self.method == "poisson":
            return self.eligible[rng.random(len(self.eligible)) < self.participation]
        if self.participation >= 1.0:
            return self.eligible.copy()
        size = max(1, int(round(self.participation * len(self.eligible))))
        return np.sort(rng.choice(self.eligible, size=size, replace=False))
