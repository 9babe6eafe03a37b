"""From what a user reasons in (ε, δ, rounds, participation) to the noise multiplier z — one function each."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import dp_accounting as dpa
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant

from fedsim.privacy.accountant import HistoryEntry, epsilon_of, gaussian_round, pld_accountant
from fedsim.privacy.clipping import count_noise_multiplier, update_noise_multiplier

# Below this the PLD of a Gaussian spans a huge privacy-loss range (memory explodes) and ε is far beyond any
# meaningful target anyway; calibration searches z ≥ 0.3 (as dp-accounting's own examples do).
MIN_NOISE_MULTIPLIER = 0.3


@functools.lru_cache(maxsize=64)
def calibrate_noise(target_epsilon: float, delta: float, q: float, rounds: int, method: str = "pld") -> float:
    """Smallest z (to ~0.1%) whose ε after ``rounds`` Poisson(q) releases is ≤ ``target_epsilon`` — never above.

    Uses ``dp_accounting.calibrate_dp_mechanism`` (Brent's method), then nudges z up until the accountant
    confirms the target, since the search is only accurate to its tolerance in z. Memoised: it is a pure function
    that takes seconds, and a run builds the mechanism twice in the driver (the devices' copy and the server's).

    Memory does not grow with ``rounds``: the search starts from the RDP calibration (RDP's accountant holds one
    number per order whatever z and the rounds, and its ε bounds PLD's from above, so its z is the bracket's upper
    end) and evaluates the PLD only near the answer, on a grid sized for the ε there
    (:func:`fedsim.privacy.accountant.pld_accountant`). Searching from z = 0.3 instead, as before, composed PLDs of
    ε in the thousands: past 8 GiB at 10⁴ rounds, a MemoryError at 10⁶ (issue 18;
    experiments/reliability/calibration_memory.py).
    """

    if math.isinf(target_epsilon):
        return 0.0  # ε = ∞: the same pipeline (sampling, clipping, fixed denominator) without noise

    def event(noise: float) -> dp_event.DpEvent:
        return dp_event.SelfComposedDpEvent(gaussian_round(q, noise), rounds)

    def search(make_accountant: Callable[[], Any], bracket: Any) -> float:
        return float(dpa.calibrate_dp_mechanism(make_accountant, event, target_epsilon, delta, bracket, tol=1e-4))

    if epsilon_of([(q, MIN_NOISE_MULTIPLIER, rounds)], delta, "rdp") <= target_epsilon:
        return MIN_NOISE_MULTIPLIER  # the floor already meets the target (RDP's ε bounds PLD's)
    z = search(RdpAccountant, dpa.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0))
    if method == "pld":
        high, low = z * 1.05, max(z / 1.5, MIN_NOISE_MULTIPLIER)  # RDP's z (to its tolerance) meets the target
        while epsilon_of([(q, low, rounds)], delta) <= target_epsilon:
            if low == MIN_NOISE_MULTIPLIER:
                return low
            high, low = low, max(low / 1.5, MIN_NOISE_MULTIPLIER)
        grid: list[HistoryEntry] = [(q, low, rounds, None)]
        z = search(lambda: pld_accountant(grid, delta), dpa.ExplicitBracketInterval(low, high))
    while epsilon_of([(q, z, rounds)], delta, method) > target_epsilon:
        z *= 1.001
    return z


@functools.lru_cache(maxsize=64)
def calibrate_adaptive_noise(
    target_epsilon: float, delta: float, q: float, rounds: int, count_stddev: float, method: str = "pld"
) -> tuple[float, float]:
    """(z, z_Δ) for adaptive clipping: ε of the *composed* rounds (update sum with z_Δ, centred count with 2σ_b) is
    ≤ ``target_epsilon`` — never above.

    With centred bits the pair is exactly as private as one Gaussian with z⁻² = z_Δ⁻² + (2σ_b)⁻² (Andrew et al.
    2021, Thm. 1), so z is calibrated as a single Gaussian and split with :func:`update_noise_multiplier`; the split
    is then checked with the accountant on the composed events and z nudged up if rounding put ε above the target.
    Raises ``ConfigError`` when σ_b ≤ z/2 (the count alone would spend the whole budget).
    """
    z = calibrate_noise(target_epsilon, delta, q, rounds, method)
    if z <= 0:
        return 0.0, 0.0
    z_count = count_noise_multiplier(count_stddev)
    z_update = update_noise_multiplier(z, count_stddev)
    while epsilon_of([(q, z_update, rounds, z_count)], delta, method) > target_epsilon:
        z *= 1.001
        z_update = update_noise_multiplier(z, count_stddev)
    return z, z_update


def local_sigma_multiplier(target_epsilon: float, delta: float, releases: int) -> float:
    """z for *local* DP: ε after ``releases`` unamplified Gaussian releases (the server sees who took part)."""
    return calibrate_noise(target_epsilon, delta, q=1.0, rounds=releases)


def calibrate_remaining(
    history: list, target_epsilon: float, delta: float, q: float, remaining: int, method: str = "pld"
) -> float | None:
    """Smallest z (to ~0.5%) such that the releases already in ``history`` plus ``remaining`` Poisson(q) releases at
    z stay within ``target_epsilon`` — how a resumed run with a larger ``federation.rounds`` keeps its promise.
    None when no z can (the rounds already spent leave too little budget)."""
    if math.isinf(target_epsilon):
        return 0.0
    spent = epsilon_of(history, delta, method)
    if spent >= target_epsilon:
        return None

    return smallest_noise(lambda z: epsilon_of([*history, (q, z, remaining)], delta, method) <= target_epsilon)


def smallest_noise(
    fits: Callable[[float], bool], start: float = MIN_NOISE_MULTIPLIER, tolerance: float = 1.005
) -> float | None:
    """The smallest z ≥ ``start`` (to ``tolerance``×) for which ``fits(z)`` — ε within its target — holds, assuming
    ε falls as z grows: doubling from ``start``, then bisection on a log scale; the returned z always fits. None
    when not even z = 10⁴ does."""
    low, high = start, start
    while not fits(high):
        low, high = high, high * 2.0
        if high > 1e4:
            return None
    if high == start:
        return high
    while high / low > tolerance:
        middle = math.sqrt(low * high)
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high
