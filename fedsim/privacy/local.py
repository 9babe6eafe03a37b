"""Local DP: each device noises its own clipped update before upload — protection against the server itself.

Each participating device clips its whole update to L2 ≤ C and adds N(0, σ²) with σ = z·2C to *every* coordinate
of the shared parameters (the 2C: any two updates of one user differ by at most 2C, the local-DP neighbouring
relation), so the upload reveals neither the update nor which item rows it touched. The server then averages
what it receives. The server sees who took part, so there is no amplification by sampling: a user who took part in
k rounds has spent k Gaussian releases, composed with the PLD accountant. σ is calibrated with the exact
(numerical) Gaussian analysis for any ε — unlike the classical σ = Δ·√(2 ln(1.25/δ))/ε used by Flower's
``LocalDpMod``, which only holds for ε ≤ 1.
The device side (clip, then noise) is :mod:`fedsim.privacy.device`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsim.config import PrivacyConfig
from fedsim.privacy.accountant import epsilon_of, max_advantage
from fedsim.privacy.calibration import local_sigma_multiplier
from fedsim.privacy.mechanism import Aggregate, ClippedMechanism
from fedsim.privacy.participation import Participation, participation_mismatch


class LocalDP(ClippedMechanism):
    name = "local"
    unit = "user (local: each upload)"

    def __init__(self, cfg: PrivacyConfig, population: int, q: float, rounds: int) -> None:
        super().__init__(cfg, population, q, rounds)
        # calibrated for the worst case: a user who takes part in every planned round
        self.z = (
            float(cfg.noise_multiplier)
            if cfg.noise_multiplier is not None
            else local_sigma_multiplier(float(cfg.target_epsilon), self.delta, rounds)
        )
        # participations per noise level: one count array per z used so far (z changes only by remediation)
        self.segments: list[tuple[float, Participation]] = [(self.z, Participation(population))]
        self._eps_cache: dict[tuple, float] = {}

    def sigma(self) -> float:
        return self.z * 2.0 * self.clipping_norm

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {**super().round_config(server_round), "local-noise-std": self.sigma()}

    def mean_update(self, aggregate: Aggregate, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict]:
        n = max(aggregate.n_users, 1)
        mean = {"__items__": aggregate.item_sum / n}
        mean.update({k: v / n for k, v in aggregate.dense_sum.items()})
        return mean, {
            "privacy/noise_multiplier": self.z,
            "privacy/local_noise_std": self.sigma(),
            "privacy/clipping_norm": self.clipping_norm,
        }

    def _history(self, pattern: tuple[int, ...]) -> list[tuple[float, float, int]]:
        return [(1.0, z, n) for (z, _), n in zip(self.segments, pattern, strict=True) if n > 0]

    def epsilon_for(self, pattern: tuple[int, ...]) -> float:
        """ε of a user who took part ``pattern[j]`` times at the j-th noise level (no amplification)."""
        if pattern not in self._eps_cache:
            history = self._history(pattern)
            self._eps_cache[pattern] = epsilon_of(history, self.delta) if history else 0.0
        return self._eps_cache[pattern]

    def _patterns(self) -> list[tuple[int, ...]]:
        length = max(len(part.counts) for _, part in self.segments)
        matrix = np.stack([np.pad(part.counts, (0, length - len(part.counts))) for _, part in self.segments], axis=1)
        return [tuple(int(x) for x in row) for row in np.unique(matrix, axis=0)]

    def worst_epsilon(self, extra_release: bool = False) -> float:
        patterns = self._patterns()
        if extra_release:
            patterns = [p[:-1] + (p[-1] + 1,) for p in patterns]
        return max(self.epsilon_for(p) for p in patterns)

    def can_release(self, server_round: int) -> tuple[bool, str]:
        if self.max_epsilon is not None and self.worst_epsilon(extra_release=True) > self.max_epsilon:
            return False, (
                f"privacy budget: one more upload by the most active user would take its local ε above "
                f"privacy.max_epsilon={self.max_epsilon:g}; the last model is kept"
            )
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        self.segments[-1][1].add(participants)
        return {"privacy/epsilon": self.worst_epsilon(), "privacy/delta": self.delta}

    def scale_noise(self, factor: float) -> None:
        self.z *= factor
        self.segments.append((self.z, Participation(len(self.segments[0][1].counts))))
        self._eps_cache.clear()

    def max_advantage_bound(self) -> float:
        return max(max_advantage(self._history(p)) for p in self._patterns())

    def threat_model(self) -> dict[str, Any]:
        return {
            "mechanism": "local DP (Gaussian on each clipped upload)",
            "unit": "user, per upload, composed over the rounds the user took part in",
            "trusted": "nobody (the server only sees noised uploads)",
            "sampling": "no amplification (the server knows who took part)",
            "adjacency": "replace one user's data (L2 sensitivity 2C)",
            "delta": self.delta,
            "accountant": "PLD (dp-accounting) of k Gaussian releases, k = the user's participations; "
            "privacy/epsilon is the worst user",
            "noise_multiplier": self.z,
            "noise_std_per_coordinate": self.sigma(),
            "clipping": f"fixed C={self.clipping_norm:g}",
            "rounds_planned": self.rounds,
            "covers": "every value a device uploads about its training: the clipped, noised update to the shared "
            "parameters (no loss, sample count or clipping statistic leaves the device under local DP)",
            "not_covered": "that the device took part, the number of users a node hosts, the per-user "
            "evaluation metrics, and the simulated attacker's item-set scores (attack-*) — the last two exist only "
            "to measure the simulation and a real device would not send them",
            "guarantee": "local user-level (ε, δ)-DP per device, see privacy/epsilon (worst user)",
            "short": f"local DP, z={self.z:.3f} (σ={self.sigma():.3g}), C={self.clipping_norm:g}, δ={self.delta:g}, "
            "no amplification, PLD",
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "segments": [[z, part.state_dict()] for z, part in self.segments]}

    def resume_problem(self, done: int, participations: np.ndarray) -> str | None:
        """Each user's uploads over all noise levels are the rounds it took part in, as the loop counted them."""
        return participation_mismatch([part.counts for _, part in self.segments], participations)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.segments = [(float(z), Participation.from_state(c)) for z, c in state["segments"]]
        self.z = self.segments[-1][0]
        self._eps_cache.clear()
