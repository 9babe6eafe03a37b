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
from dp_accounting.pld import PLDAccountant
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import RdpAccountant
from scipy.stats import binom

PLD_DISCRETIZATION = 1e-4
PLD_SPAN = 20.0  # ε up to which the grid step stays PLD_DISCRETIZATION (see _discretization)

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


def _discretization(history: list[HistoryEntry], delta: float) -> float:
    """PLD grid step: 1e-4, coarser where the privacy loss spans a wide range — so that the PLD's memory is bounded
    whatever the noise and the number of rounds.

    The PLD is an array over the privacy-loss values its mass covers, one entry per step. Two things widen that range:

    * one round at a tiny noise multiplier: a Gaussian's loss range grows like 1/z² (z = 0.01 needs ~10⁸ points);
    * many rounds: the composed loss has mean μ and spread ~√(2μ) that grow with the rounds (10⁴ rounds at q = 1 and
      z = 0.3 span ~10⁵ in loss: 10⁹ points, past 8 GiB — issue 18). ε sits at μ plus a few spreads, so the range
      the composed mass covers is O(ε): the step grows with ε beyond :data:`PLD_SPAN`, estimated by the RDP
      accountant (an upper bound on the PLD's ε, computed in O(orders) memory for any number of rounds).

    A coarser step keeps dp-accounting's pessimistic (upper-bound) estimate valid, only looser; it is coarser only
    where ε is above 20 (or z below 0.5) anyway.
    """
    smallest = min(effective_noise_multiplier(z, z_count) for _, z, _, z_count in history)
    spread = float(RdpAccountant().compose(_rdp_event(history)).get_epsilon(delta))
    return PLD_DISCRETIZATION * max(1.0, (0.5 / smallest) ** 2, spread / PLD_SPAN)


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


def pld_accountant(history: list[HistoryEntry], delta: float) -> PLDAccountant:
    """An empty PLD accountant whose grid step suits ``history`` (:func:`_discretization`)."""
    return PLDAccountant(
        neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=_discretization(history, delta),
    )


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
    return float(_history_pld(tuple(released), _discretization(released, delta)).get_epsilon_for_delta(delta))


def max_advantage(history: Sequence[Sequence[Any]], delta: float = 1e-5) -> float:
    """The largest membership advantage (TPR − FPR) any attack can reach: the PLD's δ at ε = 0 (``delta`` only sizes
    the PLD's grid)."""
    released = _released(history)
    if not released:
        return 0.0
    if _noiseless(released):
        return 1.0
    return float(min(1.0, _history_pld(tuple(released), _discretization(released, delta)).get_delta_for_epsilon(0.0)))


def secagg_abort_delta(population: int, rate: float, min_users: int) -> float:
    """Per round, the δ that central DP must add when secure aggregation aborts a round of fewer than ``min_users``
    (fedsim/security/secagg.py; issue 18): the probability that one user decides between "noise only" and "a sum of
    ≥ ``min_users`` updates + noise".

    The round releases M(D) = N(0, z²C²) + 1[n ≥ m]·Σ_{i∈S} x_i, where S is the cohort that reports, n = |S| and
    m = ``min_users``. Take neighbours D' = D ∪ {u} and let K be the number of users *other than u* in S; K has the
    same distribution under D and D' (each other user is sampled and reports independently of u), and so has S∖{u}.
    Condition on S∖{u} = S₀, |S₀| = k:

    * k ≥ m: D releases Σ_{S₀} + noise, D' adds x_u with probability ``rate`` — the Poisson-subsampled Gaussian the
      accountant charges;
    * k ≤ m − 2: both abort whether or not u takes part — identical outputs, no privacy loss;
    * k = m − 1: D aborts (noise only); D' releases Σ_{S₀} + x_u + noise with probability ``rate``. The sum of m
      clipped updates differs from nothing by up to m·C: the two outputs are at total variation ≤ ``rate``, and for
      aligned updates (m/z ≫ 1) close to it — no useful ε bounds this case.

    The hockey-stick divergence is jointly convex and S₀ is common to both sides, so δ(ε) ≤ E_{S₀}[δ_{S₀}(ε)]; over T
    rounds, a round at total variation ≤ p composed with any mechanism adds at most p to δ (couple its outputs: they
    agree with probability ≥ 1 − p), and fewer Gaussian rounds never cost more. Hence

        δ_total(ε) ≤ δ_PLD(ε; q, z, T) + T · rate · P[K = m − 1],   K ~ Binomial(n_others, rate),

    with n_others = N − 1 (u, one of the run's N eligible users, is removed) or N (u is added): the larger of the two
    is taken. ``rate`` is the probability that a user is sampled *and reports*: q times the common reporting
    probability (1 − federation.dropout)·federation.availability — fedsim.config refuses reporting that differs by
    user or node (per-group availability, deadlines, node crashes) with secure aggregation under central DP. The
    bound is tight up to the Gaussian tail when the updates are aligned and the adversary knows the cohort (the
    trusted server sees who takes part). Not modelled: a node that fails unplanned (a lost Ray worker) lowers the
    count, which may move it to m − 1.

    Binomial probabilities from scipy; tests/privacy/test_secagg_abort.py recomputes them with exact rational
    arithmetic and the resulting ε with dp-accounting directly.
    """
    if rate <= 0:
        return 0.0
    return rate * max(float(binom.pmf(min_users - 1, n, rate)) for n in (max(population - 1, 0), population))


class PrivacyAccountant:
    """Tracks DP-FedAvg releases and answers ε(δ), the RDP figure and "would one more release exceed ε_max?".

    Parameters
    ----------
    delta : float
        The δ at which ε is reported.
    method : str (default: "pld")
        Primary accountant, ``"pld"`` or ``"rdp"``; the other is reported alongside.

    abort_delta : float (default: 0)
        δ charged per round on top of the Gaussian releases: under secure aggregation, the probability that one user
        decides whether the round aborts (:func:`secagg_abort_delta`). ε is then reported at
        δ − (what the rounds so far charged), so that the whole (ε, δ) claim holds.
    """

    def __init__(self, delta: float, method: str = "pld", abort_delta: float = 0.0) -> None:
        if method not in ("pld", "rdp"):
            raise ValueError(f"privacy.accountant={method!r} is not allowed; choose one of: pld, rdp")
        self.delta = delta
        self.method = method
        self.history: list[HistoryEntry] = []
        self.abort_delta = abort_delta
        self.abort_spent = 0.0  # Σ abort_delta over the rounds recorded (saved: a resume may change abort_delta)

    def step(self, q: float, z: float, count: int = 1, z_count: float | None = None) -> None:
        """Record ``count`` rounds: update sum with multiplier z, plus the adaptive-clipping count with z_count."""
        self.history = _entries(self.history)
        if self.history and (self.history[-1][:2], self.history[-1][3]) == ((q, z), z_count):
            self.history[-1] = (q, z, self.history[-1][2] + count, z_count)
        else:
            self.history.append((q, z, count, z_count))
        self.abort_spent += self.abort_delta * count

    def gaussian_delta(self) -> float:
        """The part of δ left to the Gaussian releases, the one ε is computed at (all of δ without secagg aborts)."""
        return self.delta - self.abort_spent

    def epsilon(self, method: str | None = None) -> float:
        left = self.gaussian_delta()
        return epsilon_of(self.history, left, method or self.method) if left > 0 else math.inf

    def would_exceed(self, q: float, z: float, max_epsilon: float, z_count: float | None = None) -> bool:
        """Whether one more round (the same event :meth:`step` would record) takes ε above ``max_epsilon``."""
        trial = PrivacyAccountant(self.delta, self.method, self.abort_delta)
        trial.history, trial.abort_spent = list(self.history), self.abort_spent
        trial.step(q, z, z_count=z_count)
        return trial.epsilon() > max_epsilon

    def max_advantage(self) -> float:
        """δ at ε = 0 (total variation): the Gaussian releases' plus the abort flips' (each at most one round's)."""
        return min(1.0, max_advantage(self.history, self.delta) + self.abort_spent)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "dp-fedavg-poisson-gaussian",
            "delta": self.delta,
            "method": self.method,
            # three elements when no count was released: the format older versions wrote and read
            "history": [[q, z, n] if z_count is None else [q, z, n, z_count] for q, z, n, z_count in self.history],
            **({"abort_spent": self.abort_spent} if self.abort_spent else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "dp-fedavg-poisson-gaussian":
            raise ValueError(f"accountant state of kind {state.get('kind')!r} cannot be loaded here")
        self.delta, self.method = float(state["delta"]), str(state["method"])
        self.history = _entries(state["history"])
        self.abort_spent = float(state.get("abort_spent", 0.0))
