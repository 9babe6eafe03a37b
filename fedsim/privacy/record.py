"""``privacy=record``: DP-SGD on each device protects single records, not users (see :mod:`fedsim.training.dpsgd`).

A record is one positive interaction together with its own sampled negatives. Each local step Poisson-samples the
user's records with a fixed public rate q, clips each record's gradient to C, sums, adds N(0, z²C²) to every trained
coordinate and divides by the public constant B = ``client.batch_size`` (Abadi et al. 2016; the expected-batch-size
convention of Opacus and TF-Privacy). Under add/remove-one-record adjacency a step is therefore
``PoissonSampledDpEvent(q, GaussianDpEvent(z))``; a round is ``steps_per_epoch × epochs`` of them, and the rounds a
user takes part in compose (no amplification is claimed from user sampling).

The ε reported is **record-level**: the privacy of one record of one user, for the worst user (most rounds taken
part in). It says nothing about a user's whole history; every metric and the threat model say so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedsim.config import ConfigError, PrivacyConfig
from fedsim.privacy.accountant import epsilon_of, max_advantage
from fedsim.privacy.calibration import calibrate_noise
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.privacy.participation import Participation, participation_mismatch


def steps_per_epoch(sample_rate: float) -> int:
    """ceil(1/q): with Poisson rate q each record is used once per epoch in expectation. Public (it depends on q
    only), the same for every user, and sent to the devices so they run exactly the steps accounted here."""
    return max(1, math.ceil(1.0 / sample_rate - 1e-9))


class RecordDP(NoPrivacy):
    name = "record"
    unit = "record (one interaction with its negatives)"

    def __init__(
        self, cfg: PrivacyConfig, population: int, rounds: int, epochs: int, negatives: int, user_weighting: str
    ) -> None:
        if user_weighting != "uniform":
            # "examples" multiplies each upload by the user's number of records: a change of one record would
            # rescale the whole (noised) update, which the per-step sensitivity C does not cover
            raise ConfigError(
                "privacy.mechanism=record needs federation.user_weighting=uniform (examples weighting scales each "
                "upload by the user's record count, which the record-level guarantee does not cover)"
            )
        super().__init__(user_weighting)
        self.delta = cfg.delta if cfg.delta is not None else 1e-5
        self.clip = float(cfg.clipping_norm)
        self.epochs = epochs
        self.negatives = negatives
        self.sample_rate = float(cfg.record_sample_rate)
        self.steps_per_epoch = steps_per_epoch(self.sample_rate)
        self.secure_rng = bool(cfg.secure_rng)  # device keys its draws with OS entropy (fedsim.privacy.randomness)
        self.target_epsilon = cfg.target_epsilon
        self.max_epsilon = cfg.max_epsilon
        self.rounds = rounds
        # the worst user takes part in every round: calibrate for rounds × epochs × steps Poisson(q) Gaussian steps
        self.z = (
            float(cfg.noise_multiplier)
            if cfg.noise_multiplier is not None
            else calibrate_noise(float(cfg.target_epsilon), self.delta, self.sample_rate, self.steps(rounds))
        )
        self.participation = Participation(population)

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

    def steps(self, participations: int) -> int:
        """DP-SGD steps a user who took part in ``participations`` rounds has run."""
        return participations * self.epochs * self.steps_per_epoch

    def history(self, participations: int) -> list[tuple[float, float, int]]:
        """The accountant's events: every step one ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``."""
        return [(self.sample_rate, self.z, self.steps(participations))]

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {
            **super().round_config(server_round),
            "record-clip": self.clip,
            "record-noise": self.z,
            "record-sample-rate": self.sample_rate,
            "record-steps-per-epoch": self.steps_per_epoch,
            "secure-rng": self.secure_rng,
        }

    def _epsilon(self, participations: int) -> float:
        return epsilon_of(self.history(participations), self.delta)

    def can_release(self, server_round: int) -> tuple[bool, str]:
        worst = self.participation.worst()
        if self.max_epsilon is not None and self._epsilon(worst + 1) > self.max_epsilon:
            return False, (
                f"privacy budget: another round would take the record-level ε above "
                f"privacy.max_epsilon={self.max_epsilon:g}; the last model is kept"
            )
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        self.participation.add(participants)
        worst = self.participation.worst()
        return {
            "privacy/epsilon_record_level": self._epsilon(worst),
            "privacy/delta": self.delta,
            "privacy/noise_multiplier": self.z,
        }

    def max_advantage_bound(self) -> float:
        """Of a record-membership attack (one interaction), not of a user-membership attack."""
        worst = self.participation.worst()
        return max_advantage(self.history(worst)) if worst else 0.0

    def threat_model(self) -> dict[str, Any]:
        q, t = self.sample_rate, self.steps_per_epoch
        return {
            "mechanism": "record-level DP-SGD on each device (Abadi et al. 2016), Poisson-sampled records",
            "unit": f"RECORD (one positive interaction with its own {self.negatives} negatives) — not a user: a "
            "user's whole history has no guarantee",
            "trusted": "nobody, for single records",
            "adjacency": "add/remove one record; its negatives and batch memberships are drawn from a generator keyed "
            "by the record, so the other records are unchanged",
            "sampling": f"each step includes every record of the user independently with probability q={q:g} "
            f"(Poisson); {t} steps per epoch (ceil(1/q)), {self.epochs} epochs per round",
            "divisor": "the clipped sum plus noise is divided by the public constant client.batch_size "
            "(expected-batch-size convention of Opacus / TF-Privacy), not by the sampled batch size",
            "delta": self.delta,
            "accountant": f"PLD (dp-accounting): PoissonSampled(q={q:g}, Gaussian(z)) composed over steps × epochs × "
            "rounds taken part in; no amplification from user sampling; privacy/epsilon_record_level is the "
            "worst user's",
            "noise_multiplier": self.z,
            "clipping": f"per-record L2 ≤ {self.clip:g} (user embedding and item rows the record touches, jointly); "
            "noise on the user embedding and the whole item matrix",
            "covers": "the uploaded update and the private embedding, for one record",
            "not_covered": "users: membership of a user and their interaction set are not protected; the per-user "
            "evaluation metrics and the simulated attacker's item-set scores (attack-*), which exist only to "
            "measure the simulation",
            "guarantee": "record-level (ε, δ)-DP per interaction; NOT user-level",
            "short": f"record-level DP-SGD (per interaction, not per user), q={q:g}, z={self.z:.3f}, "
            f"C={self.clip:g}, δ={self.delta:g}, PLD",
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "participations": self.participation.state_dict()}

    def resume_problem(self, done: int, participations: np.ndarray) -> str | None:
        """The DP-SGD steps composed per user follow its participations: they must be the loop's counts."""
        return participation_mismatch([self.participation.counts], participations)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.participation = Participation.from_state(state["participations"])
