"""``privacy=record``: DP-SGD on each device protects single interactions, not users (see :mod:`dpsgd`).

The ε reported is **record-level**: the privacy of one interaction of one user, for the worst user (most rounds
taken part in). It says nothing about a user's whole history; every metric and the threat model say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.config import PrivacyConfig
from fedsim.privacy.accountant import epsilon_of, max_advantage
from fedsim.privacy.calibration import local_sigma_multiplier
from fedsim.privacy.mechanism import NoPrivacy


class RecordDP(NoPrivacy):
    name = "record"
    unit = "record (one interaction)"

    def __init__(
        self, cfg: PrivacyConfig, population: int, rounds: int, epochs: int, negatives: int, user_weighting: str
    ) -> None:
        super().__init__(user_weighting)
        self.delta = cfg.delta if cfg.delta is not None else 1e-5
        self.clip = float(cfg.clipping_norm)
        self.epochs = epochs
        self.group = 1 + negatives  # samples one interaction puts into an epoch's stream
        self.target_epsilon = cfg.target_epsilon
        self.max_epsilon = cfg.max_epsilon
        releases = rounds * epochs
        # a record's epoch release has sensitivity (1 + negatives)·C: the per-step z is that many times the z_eff
        z_eff = (
            float(cfg.noise_multiplier) / self.group
            if cfg.noise_multiplier is not None
            else local_sigma_multiplier(float(cfg.target_epsilon), self.delta, releases)
        )
        self.z_effective = z_eff
        self.z = z_eff * self.group
        self.participations = np.zeros(population, dtype=np.int64)

    @classmethod
    def from_config(cls, cfg: Any, population: int) -> RecordDP:
        return cls(
            cfg.privacy,
            population,
            cfg.federation.rounds,
            cfg.client.epochs,
            cfg.client.negatives,
            cfg.federation.user_weighting,
        )

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {**super().round_config(server_round), "record-clip": self.clip, "record-noise": self.z}

    def _epsilon(self, participations: int) -> float:
        return epsilon_of([(1.0, self.z_effective, participations * self.epochs)], self.delta)

    def can_release(self, server_round: int) -> tuple[bool, str]:
        worst = int(self.participations.max()) if len(self.participations) else 0
        if self.max_epsilon is not None and self._epsilon(worst + 1) > self.max_epsilon:
            return False, (
                f"privacy budget: another round would take the record-level ε above "
                f"privacy.max_epsilon={self.max_epsilon:g}; the last model is kept"
            )
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        needed = int(participants.max()) + 1 if len(participants) else 0
        if needed > len(self.participations):
            self.participations = np.pad(self.participations, (0, needed - len(self.participations)))
        self.participations[participants] += 1
        worst = int(self.participations.max())
        return {
            "privacy/epsilon_record_level": self._epsilon(worst),
            "privacy/delta": self.delta,
            "privacy/noise_multiplier": self.z,
        }

    def max_advantage_bound(self) -> float:
        """Of a record-membership attack (one interaction), not of a user-membership attack."""
        worst = int(self.participations.max()) if len(self.participations) else 0
        return max_advantage([(1.0, self.z_effective, worst * self.epochs)]) if worst else 0.0

    def threat_model(self) -> dict[str, Any]:
        return {
            "mechanism": "record-level DP-SGD on each device (Abadi et al. 2016)",
            "unit": "RECORD (one interaction) — not a user: a user's whole history has no guarantee",
            "trusted": "nobody, for single records",
            "sampling": "no amplification claimed (shuffled minibatches); epochs of every round a user takes part "
            "in compose",
            "adjacency": f"add/remove one interaction, which puts 1 + {self.group - 1} samples into an epoch "
            f"(sensitivity {self.group}·C per epoch in the worst case)",
            "delta": self.delta,
            "accountant": "PLD (dp-accounting); privacy/epsilon_record_level is the worst user's",
            "noise_multiplier": self.z,
            "clipping": f"per-sample L2 ≤ {self.clip:g}",
            "covers": "every upload and the private embedding, for one interaction",
            "not_covered": "users: membership of a user and their interaction set are not protected",
            "guarantee": "record-level (ε, δ)-DP per interaction; NOT user-level",
            "short": f"record-level DP-SGD (per interaction, not per user), z={self.z:.3f}, C={self.clip:g}, "
            f"δ={self.delta:g}, PLD",
        }

    def state_dict(self) -> dict[str, Any]:
        return {"mechanism": self.name, "participations": self.participations.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.participations = np.asarray(state["participations"], dtype=np.int64)
