"""The privacy accountant: ε(δ) of the releases made so far, from Google's ``dp-accounting``.

Each release is one round of the Poisson-subsampled Gaussian mechanism: every user takes part independently with
probability q, their clipped updates are summed and N(0, z²C²) is added (DP-FedAvg, McMahan et al. 2018). Under
add/remove-one-user adjacency the sum has L2 sensitivity C, so a round is ``PoissonSampledDpEvent(q,
GaussianDpEvent(z))``. ε is computed with the privacy-loss-distribution (PLD) accountant (tight), with Rényi DP
(RDP) as the second, looser figure. The state is the run-length history ``[(q, z, count), ...]`` (as Opacus keeps
it), so it is cheap to save and a loaded accountant continues exactly.
"""

from __future__ import annotations

import math
from typing import Any

import dp_accounting as dpa
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

PLD_DISCRETIZATION = 1e-4


def _discretization(history: list[tuple[float, float, int]]) -> float:
    """PLD grid step: 1e-4, coarser for tiny noise multipliers.

    The privacy-loss range of a Gaussian grows like 1/z², and so does the PLD's memory at a fixed step (z = 0.01
    needs ~10⁸ points and gigabytes). A coarser step keeps dp-accounting's pessimistic (upper-bound) estimate valid,
    only looser; at such z, ε is in the hundreds or more anyway.
    """
    smallest = min(z for _, z, _ in history)
    return PLD_DISCRETIZATION * max(1.0, (0.5 / smallest) ** 2)


def gaussian_round(q: float, z: float) -> dp_event.DpEvent:
    """One DP-FedAvg release: Poisson sampling with rate q, Gaussian noise multiplier z (sensitivity-normalised)."""
    gaussian = dp_event.GaussianDpEvent(noise_multiplier=z)
    return gaussian if q >= 1.0 else dp_event.PoissonSampledDpEvent(sampling_probability=q, event=gaussian)


def _composed(history: list[tuple[float, float, int]]) -> dp_event.DpEvent:
    return dp_event.ComposedDpEvent([dp_event.SelfComposedDpEvent(gaussian_round(q, z), n) for q, z, n in history])


def epsilon_of(history: list[tuple[float, float, int]], delta: float, method: str = "pld") -> float:
    """ε at ``delta`` after the releases in ``history`` (∞ if any release had no noise)."""
    history = [h for h in history if h[2] > 0]
    if not history:
        return 0.0
    if any(z <= 0 for _, z, _ in history):
        return math.inf
    if method == "rdp":
        return float(RdpAccountant().compose(_composed(history)).get_epsilon(delta))
    accountant = PLDAccountant(
        neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=_discretization(history),
    )
    return float(accountant.compose(_composed(history)).get_epsilon(delta))


def max_advantage(history: list[tuple[float, float, int]]) -> float:
    """The largest membership advantage (TPR − FPR) any attack can reach: the PLD's δ at ε = 0."""
    history = [h for h in history if h[2] > 0]
    if not history:
        return 0.0
    if any(z <= 0 for _, z, _ in history):
        return 1.0
    accountant = PLDAccountant(
        neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=_discretization(history),
    )
    return float(min(1.0, accountant.compose(_composed(history)).get_delta(0.0)))


class PrivacyAccountant:
    """Tracks DP-FedAvg releases and answers ε(δ), the RDP figure and "would one more release exceed ε_max?".

    Parameters
    ----------
    delta : float
        The δ at which ε is reported.
    method : str (default: "pld")
        Primary accountant, ``"pld"`` or ``"rdp"``; the other is reported alongside.
    """

    def __init__(self, delta: float, method: str = "pld") -> None:
        if method not in ("pld", "rdp"):
            raise ValueError(f"privacy.accountant={method!r} is not allowed; choose one of: pld, rdp")
        self.delta = delta
        self.method = method
        self.history: list[tuple[float, float, int]] = []

    def step(self, q: float, z: float, count: int = 1) -> None:
        if self.history and self.history[-1][:2] == (q, z):
            self.history[-1] = (q, z, self.history[-1][2] + count)
        else:
            self.history.append((q, z, count))

    def epsilon(self, method: str | None = None) -> float:
        return epsilon_of(self.history, self.delta, method or self.method)

    def would_exceed(self, q: float, z: float, max_epsilon: float) -> bool:
        trial = PrivacyAccountant(self.delta, self.method)
        trial.history = list(self.history)
        trial.step(q, z)
        return trial.epsilon() > max_epsilon

    def max_advantage(self) -> float:
        return max_advantage(self.history)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "dp-fedavg-poisson-gaussian",
            "delta": self.delta,
            "method": self.method,
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "dp-fedavg-poisson-gaussian":
            raise ValueError(f"accountant state of kind {state.get('kind')!r} cannot be loaded here")
        self.delta, self.method = float(state["delta"]), str(state["method"])
        self.history = [(float(q), float(z), int(n)) for q, z, n in state["history"]]
