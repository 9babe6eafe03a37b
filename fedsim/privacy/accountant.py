"""The privacy accountant: ε(δ) of the releases made so far, from Google's ``dp-accounting``.

Each release is one round of the Poisson-subsampled Gaussian mechanism: every user takes part independently with
probability q, their clipped updates are summed and N(0, z²C²) is added (DP-FedAvg, McMahan et al. 2018). Under
add/remove-one-user adjacency the sum has L2 sensitivity C, so a round is ``PoissonSampledDpEvent(q,
GaussianDpEvent(z))``. With adaptive clipping (Andrew et al. 2021, §3 and Thm. 1) the same sampled cohort also
releases its noised count of centred "unclipped" bits (sensitivity ½, noise multiplier z_count = 2σ_b), so the round
is ``PoissonSampledDpEvent(q, ComposedDpEvent([GaussianDpEvent(z), GaussianDpEvent(z_count)]))``. ε is computed
with the privacy-loss-distribution (PLD) accountant (tight), with Rényi DP (RDP) as the second, looser figure. The
state is the run-length history ``[(q, z, count, z_count), ...]`` (as Opacus keeps it; ``z_count`` is None, and
the entry is saved with three elements, when no count was released), so it is cheap to save and a loaded
accountant continues exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import dp_accounting as dpa
from dp_accounting import dp_event
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import RdpAccountant

PLD_DISCRETIZATION = 1e-4

HistoryEntry = tuple[float, float, int, float | None]
"""``(q, z, count, z_count)``: ``count`` rounds, each Poisson(q)-sampling one cohort and releasing its update sum
with noise multiplier ``z`` and, under adaptive clipping, its centred unclipped-count with ``z_count`` (else None)."""


def _entries(history: Sequence[Sequence[Any]]) -> list[HistoryEntry]:
    """The history as 4-tuples: 3-element entries ``(q, z, count)`` (fixed clipping, local and record-level DP,
    states saved before the count release was accounted) release no count."""
    out: list[HistoryEntry] = []
    for entry in history:
        q, z, n = entry[:3]
        z_count = entry[3] if len(entry) > 3 else None
        out.append((float(q), float(z), int(n), None if z_count is None else float(z_count)))
    return out


def effective_noise_multiplier(z: float, z_count: float | None = None) -> float:
    """The one Gaussian multiplier a round is equivalent to: z_eff⁻² = z⁻² + z_count⁻².

    Releasing Gaussian sums with multipliers z and z_count on the *same* cohort is one Gaussian mechanism on the
    concatenated vector whose worst-case sensitivity, in units of each part's noise, has norm (z⁻² + z_count⁻²)^½;
    the privacy loss of a (subsampled) Gaussian depends only on that norm (Andrew et al. 2021, Thm. 1; McMahan et al.
    2018, "A General Approach to Adding Differential Privacy to Iterative Training Procedures", §3). dp-accounting's
    RDP accountant applies the same reduction to a ``ComposedDpEvent`` under ``PoissonSampledDpEvent``.
    """
    if z_count is None:
        return z
    if z <= 0 or z_count <= 0:
        return 0.0
    return (z**-2 + z_count**-2) ** -0.5


def _discretization(history: list[HistoryEntry]) -> float:
    """PLD grid step: 1e-4, coarser for tiny noise multipliers.

    The privacy-loss range of a Gaussian grows like 1/z², and so does the PLD's memory at a fixed step (z = 0.01
    needs ~10⁸ points and gigabytes). A coarser step keeps dp-accounting's pessimistic (upper-bound) estimate valid,
    only looser; at such z, ε is in the hundreds or more anyway.
    """
    smallest = min(effective_noise_multiplier(z, z_count) for _, z, _, z_count in history)
    return PLD_DISCRETIZATION * max(1.0, (0.5 / smallest) ** 2)


def gaussian_round(q: float, z: float) -> dp_event.DpEvent:
    """One DP-FedAvg release: Poisson sampling with rate q, Gaussian noise multiplier z (sensitivity-normalised)."""
    gaussian = dp_event.GaussianDpEvent(noise_multiplier=z)
    return gaussian if q >= 1.0 else dp_event.PoissonSampledDpEvent(sampling_probability=q, event=gaussian)


def release_round(q: float, z: float, z_count: float | None = None) -> dp_event.DpEvent:
    """One round as a ``DpEvent``: one Poisson(q) cohort, its update sum (z) and, if adaptive, its count (z_count).

    Both Gaussians sit *inside* one ``PoissonSampledDpEvent``: they are computed on the same sampled cohort, which
    is what the mechanism does (two independently sampled releases would be a different mechanism).
    """
    if z_count is None:
        return gaussian_round(q, z)
    both = dp_event.ComposedDpEvent([dp_event.GaussianDpEvent(z), dp_event.GaussianDpEvent(z_count)])
    return both if q >= 1.0 else dp_event.PoissonSampledDpEvent(sampling_probability=q, event=both)


def _rdp_event(history: list[HistoryEntry]) -> dp_event.DpEvent:
    """The whole history as one event for the RDP accountant (:func:`release_round` per entry, as it is)."""
    return dp_event.ComposedDpEvent(
        [dp_event.SelfComposedDpEvent(release_round(q, z, z_count), n) for q, z, n, z_count in history]
    )


def _released(history: Sequence[Sequence[Any]]) -> list[HistoryEntry]:
    return [h for h in _entries(history) if h[2] > 0]


def _noiseless(history: list[HistoryEntry]) -> bool:
    return any(effective_noise_multiplier(z, z_count) <= 0 for _, z, _, z_count in history)


@functools.lru_cache(maxsize=16)
def _round_pld(q: float, z: float, discretization: float) -> pld_lib.PrivacyLossDistribution:
    """The PLD of one Poisson(q)-subsampled Gaussian release with multiplier z — built exactly as dp-accounting's
    ``PLDAccountant`` builds it for a ``PoissonSampledDpEvent``. Cached: building it is most of an ε computation
    (≈ 0.15 s at q = 0.001, z ≈ 1), and a run asks for ε of the same kind of round every round."""
    return pld_lib.from_gaussian_mechanism(
        standard_deviation=z,
        value_discretization_interval=discretization,
        sampling_prob=q,
        neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
    )


@functools.lru_cache(maxsize=4)
def _history_pld(history: tuple[HistoryEntry, ...], discretization: float) -> pld_lib.PrivacyLossDistribution:
    """The PLD of every release in ``history`` (released, all noised) on a grid of step ``discretization``.

    dp-accounting's PLD accountant accepts only a single Gaussian (or Laplace) under ``PoissonSampledDpEvent``, so
    each round's pair (update sum, adaptive count) is its exactly equivalent single Gaussian
    (:func:`effective_noise_multiplier`). The composition is the one ``PLDAccountant`` computes for
    ``ComposedDpEvent([SelfComposedDpEvent(gaussian_round(q, z_eff), count), ...])`` — the identity, then each
    entry's round PLD self-composed ``count`` times (q < 1) or one Gaussian with z/√count (q = 1) — step for step,
    so ε is the same to the last bit (``tests/privacy/test_accountant.py``), with :func:`_round_pld` cached; the
    last few histories are cached too (ε, δ at ε = 0 and the budget check ask about the same history)."""
    composed = pld_lib.identity(value_discretization_interval=discretization)
    for q, z, count, z_count in history:
        z_eff = effective_noise_multiplier(z, z_count)
        if q <= 0:
            continue  # never sampled: dp-accounting composes nothing
        if q >= 1.0:
            round_pld = pld_lib.from_gaussian_mechanism(
                standard_deviation=z_eff / math.sqrt(count),
                value_discretization_interval=discretization,
                neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
            )
        else:
            round_pld = _round_pld(q, z_eff, discretization).self_compose(count)
        composed = composed.compose(round_pld)
    return composed


def epsilon_of(history: Sequence[Sequence[Any]], delta: float, method: str = "pld") -> float:
    """ε at ``delta`` after the releases in ``history`` (∞ if any release had no noise).

    ``history`` holds ``(q, z, count)`` or ``(q, z, count, z_count)`` entries (see :data:`HistoryEntry`).
    """
    released = _released(history)
    if not released:
        return 0.0
    if _noiseless(released):
        return math.inf
    if method == "rdp":
        return float(RdpAccountant().compose(_rdp_event(released)).get_epsilon(delta))
    return float(_history_pld(tuple(released), _discretization(released)).get_epsilon_for_delta(delta))


def max_advantage(history: Sequence[Sequence[Any]]) -> float:
    """The largest membership advantage (TPR − FPR) any attack can reach: the PLD's δ at ε = 0."""
    released = _released(history)
    if not released:
        return 0.0
    if _noiseless(released):
        return 1.0
    return float(min(1.0, _history_pld(tuple(released), _discretization(released)).get_delta_for_epsilon(0.0)))


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
        self.history: list[HistoryEntry] = []

    def step(self, q: float, z: float, count: int = 1, z_count: float | None = None) -> None:
        """Record ``count`` rounds: update sum with multiplier z, plus the adaptive-clipping count with z_count."""
        self.history = _entries(self.history)
        if self.history and (self.history[-1][:2], self.history[-1][3]) == ((q, z), z_count):
            self.history[-1] = (q, z, self.history[-1][2] + count, z_count)
        else:
            self.history.append((q, z, count, z_count))

    def epsilon(self, method: str | None = None) -> float:
        return epsilon_of(self.history, self.delta, method or self.method)

    def would_exceed(self, q: float, z: float, max_epsilon: float, z_count: float | None = None) -> bool:
        """Whether one more round (the same event :meth:`step` would record) takes ε above ``max_epsilon``."""
        trial = PrivacyAccountant(self.delta, self.method)
        trial.history = list(self.history)
        trial.step(q, z, z_count=z_count)
        return trial.epsilon() > max_epsilon

    def max_advantage(self) -> float:
        return max_advantage(self.history)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "dp-fedavg-poisson-gaussian",
            "delta": self.delta,
            "method": self.method,
            # three elements when no count was released: the format older versions wrote and read
            "history": [[q, z, n] if z_count is None else [q, z, n, z_count] for q, z, n, z_count in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "dp-fedavg-poisson-gaussian":
            raise ValueError(f"accountant state of kind {state.get('kind')!r} cannot be loaded here")
        self.delta, self.method = float(state["delta"]), str(state["method"])
        self.history = _entries(state["history"])
