"""The privacy mechanism interface: what runs on the device, what runs on the server, what the accountant sees.

Shaped after pfl-research's ``PrivacyMechanism`` (``postprocess_one_user`` / ``postprocess_server``): the device
hook may clip and noise each user's update before it is summed into the node's upload; the server hook turns the
sum of all uploads into the mean update that the strategy applies, adding central noise where the mechanism says.
:class:`NoPrivacy` is the identity and the base every mechanism extends.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fedsim.config import ConfigError
from fedsim.updates import Aggregate


def default_delta(population: int) -> float:
    """δ well below 1/N: min(1e-5, 1/(10·N))."""
    return min(1e-5, 1.0 / (10.0 * max(population, 1)))


class NoPrivacy:
    """No differential privacy: uploads are raw updates, weighted by ``federation.user_weighting``."""

    name = "none"
    unit = "none"
    rounds: int | None = None  # the rounds the noise was planned for (DP mechanisms)
    target_epsilon: float | None = None

    def __init__(self, user_weighting: str = "examples") -> None:
        self.user_weighting = user_weighting
        self.resumed_plan: int | None = None  # the rounds planned by the run a resume continues (its saved state)

    @classmethod
    def from_config(cls, cfg: Any, population: int) -> NoPrivacy:
        """Build from the root config (``FedsimConfig``) for ``population`` eligible users (the registry's hook)."""
        return cls(cfg.federation.user_weighting)

    # --- what the devices do this round -------------------------------------------------------------------------
    def round_config(self, server_round: int) -> dict[str, Any]:
        """Values the devices need this round (sent in the train message's config; see fedsim.privacy.device)."""
        return {"user-weighting": self.user_weighting}

    # --- server side ---------------------------------------------------------------------------------------------
    def mean_update(self, aggregate: Aggregate, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict]:
        """Turn the round's summed uploads into the mean update (item tables packed under ``"__items__"``)."""
        denominator = max(aggregate.total_weight, 1e-12)
        mean = {"__items__": aggregate.item_sum / denominator}
        mean.update({k: v / denominator for k, v in aggregate.dense_sum.items()})
        return mean, {}

    def can_release(self, server_round: int) -> tuple[bool, str]:
        """Whether one more release stays within the privacy budget (always true without DP)."""
        return True, ""

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        """Account for the release just made; return metrics such as ``privacy/epsilon``."""
        return {}

    def scale_noise(self, factor: float) -> None:
        """Remediation: multiply the noise multiplier from the next release on (needs a DP mechanism)."""
        raise ValueError("remediation more_noise needs a privacy mechanism (privacy=central or privacy=local)")

    def set_population(self, n: int) -> None:
        """The users still eligible after an erasure (a public event); only central DP's fixed denominator q·N
        depends on it (every other mean here is over the users who took part)."""
        return None

    def max_advantage_bound(self) -> float:
        """The largest membership advantage any attack can reach under the accountant (1 = no bound)."""
        return 1.0

    def threat_model(self) -> dict[str, Any]:
        return {
            "mechanism": "none",
            "unit": "none",
            "guarantee": "no differential privacy: the server sees each device's raw update to the shared "
            "parameters (private user embeddings never leave the device)",
        }

    def continue_for(self, rounds: int, done: int) -> str | None:
        """A resumed run goes on to ``rounds`` after ``done``: re-plan the noise so the promised ε still holds, or
        refuse with one line (``ConfigError``); return a warning when the plan is valid but costly.

        Nothing to re-plan without a target ε, or when ``rounds`` is the plan the saved noise was calibrated for (an
        interrupted run resumed as it was configured keeps its z, so it ends exactly as the uninterrupted run would).
        A new plan under a target ε is refused here; :class:`~fedsim.privacy.central.CentralDP` recalibrates."""
        if self.target_epsilon is None or math.isinf(self.target_epsilon) or rounds == self.resumed_plan:
            return None
        raise ConfigError(
            f"resume_from with privacy.target_epsilon and another federation.rounds (the earlier run planned "
            f"{self.resumed_plan}) is supported for privacy=central with fixed clipping; for privacy.mechanism="
            f"{self.name} keep federation.rounds={self.resumed_plan} or set privacy.noise_multiplier (the z in force)"
        )

    def resume_problem(self, done: int, participations: np.ndarray) -> str | None:
        """Why the privacy state just loaded cannot be the state after ``done`` rounds in which users took part
        ``participations`` times (the loop's own counts), or None. Catches an edited state that would under-report
        ε — fewer releases, fewer participations — even when its checkpoint's manifest was rewritten to match."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"mechanism": self.name, **({"rounds_planned": self.rounds} if self.rounds is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mechanism") != self.name:
            raise ValueError(f"privacy state is for mechanism {state.get('mechanism')!r}, not {self.name!r}")
        planned = state.get("rounds_planned")
        self.resumed_plan = int(planned) if planned is not None else None


class ClippedMechanism(NoPrivacy):
    """What every DP mechanism here shares: equal user weights (the sensitivity argument needs them), each user's
    whole update clipped to L2 ≤ C on the device, δ defaulting below 1/N, and the run's (N, q, T)."""

    def __init__(self, cfg: Any, population: int, q: float, rounds: int) -> None:
        super().__init__("uniform")
        self.population = population
        self.q = q
        self.rounds = rounds
        self.delta = cfg.delta if cfg.delta is not None else default_delta(population)
        self.target_epsilon = cfg.target_epsilon
        self.max_epsilon = cfg.max_epsilon
        self.clipping_norm = float(cfg.clipping_norm)
        self.secure_rng = bool(cfg.secure_rng)

    @classmethod
    def from_config(cls, cfg: Any, population: int) -> NoPrivacy:
        return cls(cfg.privacy, population, cfg.federation.participation, cfg.federation.rounds)

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {"user-weighting": "uniform", "clipping-norm": self.clipping_norm, "secure-rng": self.secure_rng}
