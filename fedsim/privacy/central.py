"""Central, user-level DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018).

* each user takes part independently with probability q (Poisson sampling by fedsim's server);
* each participating device clips its **whole** update to the shared parameters to L2 ≤ C (on the device);
* the server adds N(0, z²C²) once to the sum and divides by the *expected* cohort size qN (fixed denominator,
  equal user weights), so one user changes the released mean by at most C/(qN);
* optional adaptive clipping: devices also report whether their norm was ≤ C; the server noises that count with
  σ_b and moves C toward the target quantile (Andrew et al. 2021); the count's noise is part of the accounting.

Who must be trusted: the server (it sees each clipped, un-noised upload — pair with secure aggregation to remove
that trust). What is covered: the shared parameters released each round. The private user embedding is never
released, so the guarantee is joint DP for the personalised models. Not covered: the per-device training metrics
(loss, sample counts, clipped-count under fixed clipping) and who took part, which the server sees.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fedsim.config import ConfigError, PrivacyConfig
from fedsim.privacy.accountant import PrivacyAccountant, secagg_abort_delta
from fedsim.privacy.calibration import calibrate_adaptive_noise, calibrate_noise, calibrate_remaining
from fedsim.privacy.clipping import (
    adaptive_clip_update,
    centred_unclipped_sum,
    count_noise_multiplier,
    unclipped_fraction_estimate,
    update_noise_multiplier,
)
from fedsim.privacy.mechanism import Aggregate, ClippedMechanism, NoPrivacy
from fedsim.registry import resolve


class CentralDP(ClippedMechanism):
    """User-level central DP with Poisson sampling and a PLD accountant (see module docstring)."""

    name = "central"
    unit = "user"

    def __init__(self, cfg: PrivacyConfig, population: int, q: float, rounds: int, secagg_abort: float = 0.0) -> None:
        super().__init__(cfg, population, q, rounds)
        # secagg_abort: δ per round for secure aggregation's abort below min_users (accountant.secagg_abort_delta);
        # at most a tenth of δ over the planned rounds, so that ε is still about the Gaussian releases
        if rounds * secagg_abort > self.delta / 10:
            raise ConfigError(
                f"secagg.min_users with privacy=central: in a round where one user decides whether the round aborts "
                f"(noise only) or releases a sum of ≥ secagg.min_users updates — probability {secagg_abort:.3g} per "
                f"round with {population} users at q={q:g} — δ would grow by {rounds * secagg_abort:.3g} over "
                f"{rounds} rounds, above δ/10 = {self.delta / 10:.3g}; lower secagg.min_users or raise "
                "federation.participation (or the number of users)"
            )
        self.accountant = PrivacyAccountant(self.delta, cfg.accountant, secagg_abort)
        planned_delta = self.delta - rounds * secagg_abort  # what the Gaussian releases may spend over the run
        self.adaptive = cfg.clipping == "adaptive"
        self.target_quantile = cfg.target_quantile
        self.clip_lr = cfg.clip_lr
        self.mean_population = population  # the mean's denominator is q·this (set_population after an erasure)
        expected = q * population
        self.count_stddev = cfg.clipped_count_stddev if cfg.clipped_count_stddev is not None else expected / 20.0
        # z: the round's overall (effective) noise multiplier; z_update: the update sum's; z_count: the centred
        # count's (2σ_b, adaptive only). z⁻² = z_update⁻² + z_count⁻² (Andrew et al. 2021, Thm. 1).
        self.planned_delta = planned_delta
        self.z, self.z_update = self._initial_noise(cfg)
        self.z_count = count_noise_multiplier(self.count_stddev) if self.adaptive else None
        self.configured_z = (self.z_update, self.z_count)  # what the config asked for (a remediation doubles it)
        self._flower = None
        self._flower_releases: list[tuple[float, int]] = []  # (z, participants) per round: the contrast's state

    @classmethod
    def from_config(cls, cfg: Any, population: int) -> NoPrivacy:
        """``privacy.noise`` picks the noise: ``independent`` (this class, DP-FedAvg) or a correlated-noise subclass
        (the ``noise`` registry, e.g. ``banded_mf``: DP-FTRL, :mod:`fedsim.privacy.ftrl`)."""
        chosen = resolve("noise", cfg.privacy.noise)
        if chosen is not cls:
            if cfg.secagg.enabled:
                raise ConfigError(
                    f"secagg.enabled with privacy.noise={cfg.privacy.noise}: the δ that secure aggregation's aborts "
                    "add is derived for independent noise only; use privacy.noise=independent or secagg.enabled=false"
                )
            return chosen.from_config(cfg, population)
        f, q = cfg.federation, cfg.federation.participation
        reports = (1.0 - f.dropout) * f.availability  # each sampled user's (common) chance to reach the sum
        abort = secagg_abort_delta(population, q * reports, cfg.secagg.min_users) if cfg.secagg.enabled else 0.0
        return cls(cfg.privacy, population, q, f.rounds, abort)

    def _initial_noise(self, cfg: PrivacyConfig) -> tuple[float, float]:
        """(z, z_update): set directly or calibrated to ``target_epsilon`` for ``rounds`` Poisson(q) releases."""
        if cfg.noise_multiplier is not None:
            z = float(cfg.noise_multiplier)
            return z, update_noise_multiplier(z, self.count_stddev) if self.adaptive else z
        if self.adaptive:
            return calibrate_adaptive_noise(
                float(cfg.target_epsilon), self.planned_delta, self.q, self.rounds, self.count_stddev, cfg.accountant
            )
        z = calibrate_noise(float(cfg.target_epsilon), self.planned_delta, self.q, self.rounds, cfg.accountant)
        return z, z

    def _noise(self, totals: list[torch.Tensor], generator: torch.Generator, std: float) -> list[torch.Tensor]:
        """The noise added to each released sum this round: independent N(0, std²) per coordinate (DP-FedAvg).
        Correlated-noise mechanisms override it."""
        return [torch.randn(total.shape, generator=generator, dtype=torch.float64) * std for total in totals]

    # --- device side ---------------------------------------------------------------------------------------------
    def round_config(self, server_round: int) -> dict[str, Any]:
        return {**super().round_config(server_round), "clip-diagnostics": True}

    # --- server side ---------------------------------------------------------------------------------------------
    def noise_std(self) -> float:
        return self.z_update * self.clipping_norm

    def mean_update(self, aggregate: Aggregate, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict]:
        std = self.noise_std()
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        denominator = self.q * self.mean_population

        names = ["__items__", *aggregate.dense_sum]
        totals = [aggregate.item_sum, *aggregate.dense_sum.values()]
        noises = self._noise(totals, generator, std)
        mean = {name: (total + noise) / denominator for name, total, noise in zip(names, totals, noises, strict=True)}
        n = max(aggregate.n_users, 1)
        metrics = {
            "privacy/noise_multiplier": self.z,
            "privacy/noise_std_sum": std,
            "privacy/clipping_norm": self.clipping_norm,
            "privacy/participants": float(aggregate.n_users),
            "privacy/mean_update_norm_before_clip": aggregate.metrics.get("norm-sum", 0.0) / n,
        }
        unclipped = aggregate.metrics.get("unclipped-count", 0.0)
        if self.adaptive:
            # Andrew et al. 2021, Alg. 1 / Thm. 1: only the centred count Σ(b_i − ½) (sensitivity ½) is noised and
            # released; the accountant charges it with multiplier z_count = 2σ_b (after_release).
            noisy_centred = centred_unclipped_sum(unclipped, aggregate.n_users) + rng.normal(0.0, self.count_stddev)
            noisy_fraction = unclipped_fraction_estimate(noisy_centred, denominator)
            metrics["privacy/noisy_unclipped_fraction"] = noisy_fraction
            metrics["privacy/noise_multiplier_update_sum"] = self.z_update
            metrics["privacy/noise_multiplier_count"] = float(self.z_count)
            self.clipping_norm = adaptive_clip_update(
                self.clipping_norm, noisy_fraction, self.target_quantile, self.clip_lr
            )
        else:
            metrics["privacy/clipped_fraction_not_private"] = 1.0 - unclipped / n
        signal = float(torch.linalg.vector_norm(aggregate.item_sum))
        metrics["privacy/signal_to_noise"] = signal / max(std * np.sqrt(aggregate.item_sum.numel()), 1e-12)
        return mean, metrics

    def can_release(self, server_round: int) -> tuple[bool, str]:
        if self.max_epsilon is not None and self.accountant.would_exceed(
            self.q, self.z_update, self.max_epsilon, z_count=self.z_count
        ):
            return False, (
                f"privacy budget: release {server_round} would take ε above privacy.max_epsilon="
                f"{self.max_epsilon:g} (spent {self.accountant.epsilon():.3f}); the last model is kept"
            )
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        # one Poisson(q) cohort, its update sum (z_update) and, if adaptive, its centred count (z_count)
        self.accountant.step(self.q, self.z_update, z_count=self.z_count)
        other = "rdp" if self.accountant.method == "pld" else "pld"
        return {
            "privacy/epsilon": self.accountant.epsilon(),
            f"privacy/epsilon_{other}": self.accountant.epsilon(other),
            "privacy/epsilon_flower_no_amplification": self._flower_no_amplification(len(participants)),
            "privacy/delta": self.delta,
            **({"privacy/delta_secagg_abort": self.accountant.abort_spent} if self.accountant.abort_delta else {}),
        }

    def _flower_no_amplification(self, participants: int) -> float:
        """The same releases under Flower 1.42's own accountant, which only certifies no amplification by sampling
        (as if every user took part in every round): the teaching contrast — same noise, a much larger ε."""
        if self.z <= 0:
            return math.inf
        from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, RdpAccountant, SamplingMethod
        from flwr.serverapp import PrivacyConfig as FlowerPrivacyConfig

        self._flower_releases.append((self.z, max(participants, 1)))
        if self._flower is None:  # first use, or after a resume: replay every release so far
            self._flower = RdpAccountant(
                FlowerPrivacyConfig(
                    target_delta=self.delta,
                    population_size=self.population,
                    neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                    sampling_method=SamplingMethod.NO_AMPLIFICATION,
                )
            )
            pending = self._flower_releases
        else:
            pending = self._flower_releases[-1:]
        for z, size in pending:
            event = GaussianPrivacyEvent(noise_multiplier=z, sample_size=size, population_size=self.population)
            self._flower.compose(event, count=1)
        return float(self._flower.get_epsilon(self.delta))

    def set_population(self, n: int) -> None:
        """After an erasure the expected sample is q·n of the users left, not q·N of the original population: the
        mean's denominator follows (the erasure set is public, so this costs no privacy; ε depends on q, not N)."""
        self.mean_population = n

    def scale_noise(self, factor: float) -> None:
        """Remediation: ``factor``× the noise of every release from the next round on.

        Under adaptive clipping both releases get it (z_Δ and σ_b), so the effective multiplier is exactly factor·z
        (Andrew et al., Thm. 1 is homogeneous in (z_Δ, 2σ_b)); keeping σ_b fixed instead would fail once z ≥ 2σ_b.
        """
        self.z *= factor
        self.z_update *= factor
        if self.adaptive:
            self.count_stddev *= factor
            self.z_count = count_noise_multiplier(self.count_stddev)

    def max_advantage_bound(self) -> float:
        """δ(ε=0) of the rounds released so far, the adaptive-clipping count release included."""
        return self.accountant.max_advantage()

    def threat_model(self) -> dict[str, Any]:
        eps = f"target ε={self.target_epsilon:g}" if self.target_epsilon is not None else "z set directly"
        return {
            "mechanism": "central DP-FedAvg (McMahan et al. 2018)",
            "unit": "user (all of a user's interactions)",
            "trusted": "the server (it sees each clipped, un-noised upload; no secure aggregation simulated)",
            "sampling": f"Poisson, each of {self.population} eligible users with q={self.q:g}",
            "adjacency": "add/remove one user",
            "delta": self.delta,
            "accountant": f"{self.accountant.method.upper()} (dp-accounting), "
            f"{'RDP' if self.accountant.method == 'pld' else 'PLD'} reported alongside",
            "noise_multiplier": self.z,
            "noise_multiplier_update_sum": self.z_update,
            "noise_multiplier_count": self.z_count,
            "clipping": ("adaptive (Andrew et al. 2021), C for the next round=" if self.adaptive else "fixed C=")
            + f"{self.clipping_norm:g}"
            + (
                f"; each round releases the centred unclipped-count Σ(b_i − ½) (sensitivity ½) with noise "
                f"σ_b={self.count_stddev:g} (multiplier 2σ_b={self.z_count:g}), accounted together with the update "
                f"sum (z_Δ={self.z_update:.3f}) on the same sampled cohort: effective z={self.z:.3f}"
                if self.adaptive
                else ""
            ),
            "rounds_planned": self.rounds,
            "calibration": eps,
            "contrast": "privacy/epsilon_flower_no_amplification: the same releases under Flower's built-in "
            "accountant, which assumes no amplification by sampling",
            "covers": "the shared parameters released each round; the private user embedding is never released, "
            "so personalised models get joint DP",
            "not_covered": "per-device training metrics sent to the server (loss, sample counts, "
            "clipped counts under fixed clipping), participation, evaluation metrics, and the diagnostics the "
            "trusted server computes from the un-noised sum (privacy/signal_to_noise, "
            "privacy/mean_update_norm_before_clip, privacy/participants, privacy/clipped_fraction_not_private)",
            **(
                {
                    "secagg_abort": f"a round of fewer than secagg.min_users is aborted, so one user can decide "
                    f"between noise only and a sum of min_users updates: probability "
                    f"{self.accountant.abort_delta:.3g} per round, charged to δ (privacy/delta_secagg_abort); ε is "
                    "computed at the rest of δ"
                }
                if self.accountant.abort_delta
                else {}
            ),
            "guarantee": f"user-level ({eps}) (ε, δ={self.delta:g})-DP for the shared model, see privacy/epsilon",
            "short": f"central user-level DP, z={self.z:.3f}, C={self.clipping_norm:g}, q={self.q:g}, "
            f"δ={self.delta:g}, Poisson + {self.accountant.method.upper()}",
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "accountant": self.accountant.state_dict(),
            "clipping_norm": self.clipping_norm,
            "z": self.z,
            "z_update": self.z_update,
            "flower_releases": [list(r) for r in self._flower_releases],
        }

    def continue_for(self, rounds: int, done: int) -> str | None:
        """With ``target_epsilon`` and a new plan (``rounds`` other than the one the saved z was calibrated for),
        recalibrate z for the rounds still to come, charging the rounds already spent, so the final ε stays ≤ target.
        Warns when the budget left makes the new rounds mostly noise (z more than doubled). An unchanged plan keeps
        the saved z: recalibrating it (to calibrate_remaining's tolerance) would make a resumed run differ from the
        uninterrupted one."""
        if self.target_epsilon is None or math.isinf(self.target_epsilon) or rounds == self.resumed_plan:
            return None
        if self.adaptive:
            return super().continue_for(rounds, done)
        left = self._gaussian_delta_left(rounds, done)
        if left < 0.9 * self.delta - self.accountant.abort_spent:  # the rounds to come would pass δ/10 (as __init__)
            raise ConfigError(
                f"resume_from: {rounds} rounds would charge secure aggregation's aborts more than δ/10 = "
                f"{self.delta / 10:.3g}; lower secagg.min_users or federation.rounds"
            )
        z = self._remaining_noise(rounds, done)
        if z is None:
            raise ConfigError(
                f"resume_from: the {done} rounds already run spent ε={self.accountant.epsilon():.3f}; no noise "
                f"keeps {rounds} rounds within privacy.target_epsilon={self.target_epsilon:g}"
            )
        previous, self.z, self.z_update = self.z, z, z
        if z > 2 * previous:
            return (
                f"resume_from: ε={self.accountant.epsilon():.3f} of privacy.target_epsilon={self.target_epsilon:g} "
                f"is already spent, so rounds {done + 1}..{rounds} run at z={z:.3g} (was {previous:.3g}): mostly "
                "noise — a larger target or fewer rounds would say more"
            )
        return None

    def resume_problem(self, done: int, participations: np.ndarray) -> str | None:
        """Every completed round is one release of a Poisson(q) cohort: the history must hold ``done`` of them, all at
        this run's q (fewer releases or a smaller q would under-report ε)."""
        history = self.accountant.history
        releases = sum(n for _, _, n, _ in history)
        if releases != done:
            return f"the accountant holds {releases} releases, but the checkpoint is of round {done}"
        if any(q != self.q for q, _, _, _ in history):
            return f"the accountant's sampling rates {sorted({q for q, _, _, _ in history})} are not q={self.q:g}"
        if self.target_epsilon is None:  # z set directly: every release used it, or 2^k times it (more_noise)
            z_update, z_count = self.configured_z
            for _, z, _, count in history:
                if not (_doubled(z, z_update) and (count is None or z_count is None or _doubled(count, z_count))):
                    return f"the accountant holds a release at z={z:g}, not privacy.noise_multiplier's (or 2^k times)"
        if len(self._flower_releases) > done:
            return f"the Flower contrast holds {len(self._flower_releases)} releases for {done} rounds"
        return None

    def _gaussian_delta_left(self, rounds: int, done: int) -> float:
        """The δ the Gaussian releases may spend over the whole run, less what aborts of rounds to come will charge."""
        return self.accountant.gaussian_delta() - (rounds - done) * self.accountant.abort_delta

    def _remaining_noise(self, rounds: int, done: int) -> float | None:
        """The z that keeps rounds ``done + 1 .. rounds`` within the target after the releases already accounted."""
        return calibrate_remaining(
            self.accountant.history,
            self.target_epsilon,
            self._gaussian_delta_left(rounds, done),
            self.q,
            rounds - done,
            self.accountant.method,
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the accountant and C. An adaptive run's entries without a count multiplier were written before
        the count was centred and accounted: they recorded the nominal z while the *uncentred* count (sensitivity 1,
        multiplier σ_b) went out with z_Δ = update_noise_multiplier(z, σ_b) — they are re-accounted as such."""
        super().load_state_dict(state)
        accountant = state["accountant"]
        if float(accountant["delta"]) != self.delta or accountant["method"] != self.accountant.method:
            raise ValueError(
                f"the accountant reports at δ={accountant['delta']} with {accountant['method']}; this run's are "
                f"δ={self.delta:g} with {self.accountant.method}"
            )
        self.accountant.load_state_dict(accountant)
        self._flower, self._flower_releases = None, [(float(z), int(n)) for z, n in state.get("flower_releases", [])]
        if "z" in state:  # the noise in force (an audit remediation may have raised it)
            self.z, self.z_update = float(state["z"]), float(state["z_update"])
        if self.adaptive:
            self.accountant.history = [
                (q, update_noise_multiplier(z, self.count_stddev), n, self.count_stddev)
                if z_count is None
                else (q, z, n, z_count)
                for q, z, n, z_count in self.accountant.history
            ]
        self.clipping_norm = float(state["clipping_norm"])


def _doubled(z: float, configured: float) -> bool:
    """Whether ``z`` is ``configured`` doubled k ≥ 0 times (the only way a run changes a noise it was given)."""
    if configured <= 0:
        return z == configured
    k = math.log2(z / configured) if z > 0 and math.isfinite(z) else -1.0
    return k > -1e-9 and abs(k - round(k)) < 1e-9
