"""Correlated-noise central DP (DP-FTRL with banded matrix factorization): ``privacy=central privacy.noise=banded_mf``.

Everything DP-FedAvg does stays (on-device clipping to C, equal weights, fixed denominator q·N, a trusted server);
only the noise changes. Round t adds the t-th row of C⁻¹Z (:class:`~fedsim.privacy.factorization.NoiseStream`,
C the ``privacy.bands``-banded Toeplitz BSR matrix) instead of fresh N(0, z²C²) noise, so the model — the running
sum of the released means — carries B·Z = A·C⁻¹Z, noise that partly cancels across rounds. The privacy of the whole
run is that of C·X + Z, X the rounds' clipped sums (adaptive streaming with Gaussian noise: Denisov et al. 2022).

**Exact sensitivity under the participation the run uses** (one user's contributions g_j, ‖g_j‖ ≤ C, in the rounds
j ∈ π that the schedule allows; all entries of C are ≥ 0, so the worst case is every g_j equal and the bound is met):

* every user in every round (``federation.participation=1``) or deterministic cyclic groups
  (``federation.sampling=cyclic`` with in-group rate 1): each released row i adds a Gaussian release with squared
  sensitivity (Σ_{j∈π, j≤i} c_{i−j})²/z_i², π the worst group's rounds. Gaussian releases compose exactly into one
  Gaussian, so after t rounds the guarantee is that of a Gaussian with multiplier (Σ_{i≤t} …)^(−½); with one band
  (C = I) this is DP-FedAvg's T-fold composition. The accountant is charged row by row.
* cyclic groups subsampled with rate q̃ < 1 and ``bands`` ≤ the separation p (amplified banded MF, Choquette-Choo et
  al. 2023, Thm. 4): a user's participations touch disjoint blocks of rows, each one Poisson(q̃)-subsampled Gaussian
  with multiplier z/‖c‖; the worst group (the one eligible in round 1) is charged one such release at each of its
  rounds, the whole block at once (conservative while the block is being released). Poisson sampling (p = 1) with
  one band is exactly DP-FedAvg.

**Why correlated noise buys nothing at q = 1** (worked out for issue 19, numbers in
experiments/privacy_population/README.md): with every user in every round, the final model's noise is 1ᵀC⁻¹Z and
the sensitivity ‖C·1‖, and Cauchy–Schwarz gives ‖1ᵀC⁻¹‖·‖C1‖ ≥ 1ᵀ1 = T — independent noise (C = I) is optimal for
the final model. For the whole trajectory (the sum of all prefix-sum errors) the optimum over every factorization,
from the dual max over G ⪰ 0, diag G = 1 of ‖A·G^½‖²_*, is attained by a *diagonal* C (a per-round noise scale, 9.5 %
below uniform independent noise at T = 20): no banded C with b ≥ 2 beats independent noise there. Correlated noise
pays when a user participates rarely (cyclic groups), which is where this mechanism is meant to run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fedsim.config import ConfigError, FedsimConfig, PrivacyConfig
from fedsim.privacy.accountant import epsilon_of
from fedsim.privacy.calibration import MIN_NOISE_MULTIPLIER, calibrate_noise, smallest_noise
from fedsim.privacy.central import CentralDP
from fedsim.privacy.factorization import NoiseStream, bsr_coefficients

Event = tuple[float, float]
"""One accountant entry: (sampling rate, Gaussian noise multiplier) — q = 1 for an unamplified Gaussian release."""


def default_bands(cfg: FedsimConfig) -> int:
    """``privacy.bands`` or its default: the cyclic separation p (the most bands amplification allows), else 1."""
    return int(cfg.privacy.bands) if cfg.privacy.bands is not None else cfg.federation.cyclic_period()


class AccountingState:
    """What the charge of the next row depends on: rows released, each cyclic group's squared sensitivity so far
    (noise-normalised), and the largest of them already charged."""

    def __init__(self, period: int) -> None:
        self.rows = 0
        self.group_sums = np.zeros(period)
        self.charged = 0.0

    def copy(self) -> AccountingState:
        out = AccountingState(len(self.group_sums))
        out.rows, out.group_sums, out.charged = self.rows, self.group_sums.copy(), self.charged
        return out


class BandedMF(CentralDP):
    """Central user-level DP with banded-matrix-factorization noise (see the module docstring)."""

    noise = "banded_mf"

    def __init__(
        self,
        cfg: PrivacyConfig,
        population: int,
        q: float,
        rounds: int,
        period: int = 1,
        bands: int = 1,
    ) -> None:
        self.coefs = bsr_coefficients(bands)
        self.period = period
        self.q_group = min(1.0, q * period)  # each eligible-group member joins with this probability
        self.state = AccountingState(period)
        self.stream = NoiseStream(self.coefs)
        self._noise_rms = 0.0
        super().__init__(cfg, population, q, rounds)

    @classmethod
    def from_config(cls, cfg: Any, population: int) -> BandedMF:
        f = cfg.federation
        return cls(cfg.privacy, population, f.participation, f.rounds, f.cyclic_period(), default_bands(cfg))

    @property
    def amplified(self) -> bool:
        return self.q_group < 1.0

    # --- accounting ------------------------------------------------------------------------------------------------
    def _charge(self, state: AccountingState, z: float) -> Event | None:
        """The accountant entry for row ``state.rows + 1`` released with noise multiplier z; advances ``state``."""
        state.rows += 1
        t = state.rows
        if self.amplified:  # the worst group (eligible in round 1) starts a participation block every p rounds
            return (self.q_group, z / float(np.linalg.norm(self.coefs))) if (t - 1) % self.period == 0 else None
        if z <= 0:
            return (1.0, 0.0)
        row = np.zeros(self.period)
        for k in range(min(len(self.coefs), t)):
            row[(t - k - 1) % self.period] += abs(self.coefs[k])  # round t − k belongs to group (t − k − 1) mod p
        added = (row / z) ** 2
        worst = int(np.argmax(state.group_sums + added))
        # the charged worst group stays the worst (always with one group): its own term, without rounding drift
        stays = state.group_sums[worst] == state.charged
        state.group_sums += added
        increment = float(added[worst]) if stays else float(state.group_sums[worst]) - state.charged
        state.charged = max(state.charged, float(state.group_sums[worst]))
        return (1.0, increment**-0.5) if increment > 0 else None

    def _plan(self, z: float, state: AccountingState, rounds: int) -> list[tuple[float, float, int]]:
        """Accountant entries of rows ``state.rows + 1 .. rounds`` at a constant z (``state`` is not changed)."""
        trial = state.copy()
        planned: list[tuple[float, float, int]] = []
        for _ in range(rounds - state.rows):
            event = self._charge(trial, z)
            if event is None:
                continue
            if planned and planned[-1][:2] == event:  # run-length, as the accountant keeps its history
                planned[-1] = (*event, planned[-1][2] + 1)
            else:
                planned.append((*event, 1))
        return planned

    def _fits(self, z: float, rounds: int) -> bool:
        history = [*self.accountant.history, *self._plan(z, self.state, rounds)]
        return epsilon_of(history, self.delta, self.accountant.method) <= float(self.target_epsilon)

    def _initial_noise(self, cfg: PrivacyConfig) -> tuple[float, float]:
        """z set directly, or the smallest z whose planned releases stay within ``target_epsilon`` — checked on the
        same row-by-row events the accountant will be charged, so the run never ends above the target."""
        if cfg.target_epsilon is None or math.isinf(cfg.target_epsilon):
            z = float(cfg.noise_multiplier or 0.0)
            return z, z
        calibrated = self._remaining_noise(self.rounds, 0)
        if calibrated is None:
            raise ConfigError(
                f"privacy.target_epsilon={cfg.target_epsilon:g}: no noise multiplier up to 1e4 reaches it"
            )
        return calibrated, calibrated

    def _remaining_noise(self, rounds: int, done: int) -> float | None:
        """Smallest constant z (to 0.1 %) for rows ``done + 1 .. rounds`` within the target, starting from the
        closed-form guess (one Gaussian, or k Poisson-subsampled ones) just below it."""
        guess = self._closed_form_guess(rounds) if done == 0 else MIN_NOISE_MULTIPLIER
        return smallest_noise(lambda z: self._fits(z, rounds), start=0.98 * guess, tolerance=1.001)

    def _closed_form_guess(self, rounds: int) -> float:
        target = float(self.target_epsilon)
        if self.amplified:
            chances = math.ceil(rounds / self.period)
            return calibrate_noise(target, self.delta, self.q_group, chances) * float(np.linalg.norm(self.coefs))
        unit = self._plan(1.0, AccountingState(self.period), rounds)  # z = 1: the squared sensitivity itself
        squared = sum(multiplier**-2 for _, multiplier, _ in unit)
        return max(calibrate_noise(target, self.delta, 1.0, 1) * math.sqrt(squared), MIN_NOISE_MULTIPLIER)

    def can_release(self, server_round: int) -> tuple[bool, str]:
        if self.max_epsilon is None:
            return True, ""
        event = self._charge(self.state.copy(), self.z_update)
        if event is not None and self.accountant.would_exceed(event[0], event[1], self.max_epsilon):
            return False, (
                f"privacy budget: release {server_round} would take ε above privacy.max_epsilon="
                f"{self.max_epsilon:g} (spent {self.accountant.epsilon():.3f}); the last model is kept"
            )
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        event = self._charge(self.state, self.z_update)
        if event is not None:
            self.accountant.step(*event)
        other = "rdp" if self.accountant.method == "pld" else "pld"
        return {
            "privacy/epsilon": self.accountant.epsilon(),
            f"privacy/epsilon_{other}": self.accountant.epsilon(other),
            "privacy/delta": self.delta,
            "privacy/correlated_noise_std": self._noise_rms,
        }

    # --- noise -----------------------------------------------------------------------------------------------------
    def _noise(self, totals: list[torch.Tensor], generator: torch.Generator, std: float) -> list[torch.Tensor]:
        """Fresh N(0, std²) noise, drawn as DP-FedAvg draws it, passed through the stream: row t of C⁻¹Z."""
        correlated = self.stream.step(super()._noise(totals, generator, std))
        squares = sum(float(torch.sum(w * w)) for w in correlated)
        self._noise_rms = math.sqrt(squares / max(sum(w.numel() for w in correlated), 1))
        return correlated

    # --- reporting and state ---------------------------------------------------------------------------------------
    def _participation_text(self) -> str:
        if self.period == 1 and not self.amplified:
            return f"every one of {self.population} users in every round (q=1)"
        if self.period == 1:
            return f"Poisson, each of {self.population} users with q={self.q:g}"
        return (
            f"cyclic: users in {self.period} groups (user id mod {self.period}), round t serves group (t−1) mod "
            f"{self.period}, each member with probability {self.q_group:g} (q={self.q:g} of all users per round)"
        )

    def threat_model(self) -> dict[str, Any]:
        out = super().threat_model()
        out.pop("contrast", None)
        bands = len(self.coefs)
        accounting = (
            f"amplified banded MF (Choquette-Choo et al. 2023, Thm. 4): one Poisson({self.q_group:g})-subsampled "
            f"Gaussian per participation block of the worst group, composed by {self.accountant.method.upper()}"
            if self.amplified
            else "exact sensitivity of C under the schedule (all entries of C ≥ 0), one Gaussian release per row, "
            f"composed by {self.accountant.method.upper()}"
        )
        out.update(
            {
                "mechanism": f"central DP-FTRL, banded matrix factorization ({bands}-band BSR Toeplitz C; "
                "Kalinin & Lampert 2024) on DP-FedAvg's clipped sums",
                "sampling": self._participation_text(),
                "noise": f"correlated: row t of C⁻¹Z, Z ~ N(0, z²C²), {bands} bands"
                + (" (one band: C = I, independent noise)" if bands == 1 else ""),
                "accountant": f"{accounting}; dp-accounting",
                "short": f"central user-level DP-FTRL (banded MF, {bands} bands), z={self.z:.3f}, "
                f"C={self.clipping_norm:g}, q={self.q:g}, δ={self.delta:g}, {self.accountant.method.upper()}",
            }
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """The accountant and the noise stream together: a resumed run continues the same C⁻¹Z (never rolled back:
        a released row stays spent)."""
        return {
            **super().state_dict(),
            "noise": self.noise,
            "period": self.period,
            "rows": self.state.rows,
            "group_sums": self.state.group_sums.tolist(),
            "charged": self.state.charged,
            "stream": self.stream.state_dict(),
        }

    def resume_problem(self, done: int, participations: np.ndarray) -> str | None:
        """A checkpoint of round ``done`` must hold a stream that released ``done`` rows with its band of past noise
        (the accountant charges rows or participation blocks, not one entry per round, so DP-FedAvg's count of
        releases does not apply)."""
        if self.state.rows != done:
            return f"the noise stream released {self.state.rows} rows, but the checkpoint is of round {done}"
        if len(self.stream.past) != min(done, len(self.coefs) - 1):
            return f"the noise stream holds {len(self.stream.past)} past noise vectors after {done} rounds"
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("noise", "independent") != self.noise or int(state.get("period", 0)) != self.period:
            raise ValueError(
                f"privacy state is for privacy.noise={state.get('noise', 'independent')} with cyclic period "
                f"{state.get('period', 1)}; this run has privacy.noise={self.noise}, period {self.period}"
            )
        super().load_state_dict(state)
        self.stream.load_state_dict(state["stream"])
        self.state.rows = int(state["rows"])
        self.state.group_sums = np.asarray(state["group_sums"], dtype=np.float64)
        self.state.charged = float(state["charged"])
