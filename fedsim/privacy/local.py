"""Local DP: each device noises its own clipped update before upload — protection against the server itself.

Each participating device clips its whole update to L2 ≤ C and adds N(0, σ²) with σ = z·2C to *every* coordinate
of the shared parameters (the 2C: any two updates of one user differ by at most 2C, the local-DP neighbouring
relation), so the upload reveals neither the update nor which item rows it touched. The server then averages
what it receives. The server sees who took part, so there is no amplification by sampling: a user who took part in
k rounds has spent k Gaussian releases, composed with the PLD accountant. σ is calibrated with the exact
(numerical) Gaussian analysis for any ε — unlike the classical σ = Δ·√(2 ln(1.25/δ))/ε used by Flower's
``LocalDpMod``, which only holds for ε ≤ 1.

Simulation shortcut: a node sums its users' noised uploads before replying, so instead of drawing n independent
noise vectors and summing them, it draws one with variance n·σ² — the same distribution for the sum, which is all
the server's aggregate depends on. Attacks that inspect single uploads draw that user's noise explicitly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsim.client.local_training import LocalResult
from fedsim.config import PrivacyConfig
from fedsim.privacy.accountant import epsilon_of, max_advantage
from fedsim.privacy.calibration import local_sigma_multiplier
from fedsim.privacy.central import default_delta
from fedsim.privacy.clipping import clip_updates_
from fedsim.privacy.mechanism import Aggregate, NoPrivacy


class LocalDP(NoPrivacy):
    name = "local"
    unit = "user (local: each upload)"

    def __init__(self, cfg: PrivacyConfig, population: int, q: float, rounds: int) -> None:
        super().__init__("uniform")
        self.population = population
        self.q = q
        self.rounds = rounds
        self.delta = cfg.delta if cfg.delta is not None else default_delta(population)
        self.target_epsilon = cfg.target_epsilon
        self.max_epsilon = cfg.max_epsilon
        # calibrated for the worst case: a user who takes part in every planned round
        self.z = (
            float(cfg.noise_multiplier)
            if cfg.noise_multiplier is not None
            else local_sigma_multiplier(float(cfg.target_epsilon), self.delta, rounds)
        )
        self.clipping_norm = float(cfg.clipping_norm)
        self.participations = np.zeros(population, dtype=np.int64)
        self._eps_cache: dict[int, float] = {}

    def sigma(self) -> float:
        return self.z * 2.0 * self.clipping_norm

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {"clipping-norm": self.clipping_norm, "local-noise-std": self.sigma()}

    def user_weights(self, n_samples: np.ndarray, n_positives: np.ndarray) -> np.ndarray:
        return np.ones(len(n_positives))

    def privatize_on_device(self, result: LocalResult, config: dict[str, Any], rng: np.random.Generator):
        norms, clipped = clip_updates_(result, float(config["clipping-norm"]))
        return {"unclipped-count": float(np.sum(~clipped))}

    def noise_upload(self, item_sum, dense_sum, n_users, config, rng) -> None:
        std = float(config["local-noise-std"]) * np.sqrt(n_users)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        item_sum += torch.randn(item_sum.shape, generator=generator, dtype=item_sum.dtype) * std
        for value in dense_sum.values():
            value += torch.randn(value.shape, generator=generator, dtype=value.dtype) * std

    def mean_update(self, aggregate: Aggregate, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict]:
        n = max(aggregate.n_users, 1)
        mean = {"__items__": aggregate.item_sum / n}
        mean.update({k: v / n for k, v in aggregate.dense_sum.items()})
        return mean, {
            "privacy/noise_multiplier": self.z,
            "privacy/local_noise_std": self.sigma(),
            "privacy/clipping_norm": self.clipping_norm,
        }

    def epsilon_for(self, releases: int) -> float:
        if releases not in self._eps_cache:
            self._eps_cache[releases] = epsilon_of([(1.0, self.z, releases)], self.delta) if releases else 0.0
        return self._eps_cache[releases]

    def can_release(self, server_round: int) -> tuple[bool, str]:
        worst = int(self.participations.max()) if len(self.participations) else 0
        if self.max_epsilon is not None and self.epsilon_for(worst + 1) > self.max_epsilon:
            return False, (
                f"privacy budget: one more upload by the most active user would take its local ε above "
                f"privacy.max_epsilon={self.max_epsilon:g}; the last model is kept"
            )
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        self.participations[participants] += 1
        counts = self.participations[self.participations > 0]
        return {
            "privacy/epsilon": self.epsilon_for(int(self.participations.max())),
            "privacy/epsilon_median_user": self.epsilon_for(int(np.median(counts))) if len(counts) else 0.0,
            "privacy/delta": self.delta,
        }

    def max_advantage_bound(self) -> float:
        worst = int(self.participations.max()) if len(self.participations) else 0
        return max_advantage([(1.0, self.z, worst)]) if worst else 0.0

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
            "covers": "everything a device uploads about its shared-parameter update",
            "not_covered": "per-device training metrics (loss, counts), participation, evaluation metrics",
            "guarantee": "local user-level (ε, δ)-DP per device, see privacy/epsilon (worst user)",
            "short": f"local DP, z={self.z:.3f} (σ={self.sigma():.3g}), C={self.clipping_norm:g}, δ={self.delta:g}, "
            "no amplification, PLD",
        }

    def state_dict(self) -> dict[str, Any]:
        return {"mechanism": self.name, "participations": self.participations.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.participations = np.asarray(state["participations"], dtype=np.int64)
