"""Adaptive clipping (Andrew et al. 2021) under central DP: the count release is centred and accounted (issue 13.1).

Each round releases, on one Poisson(q) cohort, the noised update sum (sensitivity C, noise z_Δ·C) and the noised
count of centred bits Σ(b_i − ½) (sensitivity ½, noise σ_b). Every reference ε here is computed with dp-accounting
directly, from the test's own parameters, never through fedsim's accountant or calibration.
"""

from __future__ import annotations

import copy

import dp_accounting as dpa
import numpy as np
import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from fedsim.config import PrivacyConfig
from fedsim.privacy.central import CentralDP
from fedsim.updates import Aggregate

# The configuration: default synthetic data (600 users, 540 eligible), participation 0.1, z = 3, 5 rounds.
POPULATION, Q, Z, ROUNDS = 540, 0.1, 3.0, 5
DELTA = min(1e-5, 1 / (10 * POPULATION))
SIGMA_B = Q * POPULATION / 20  # the default rule: σ_b = expected cohort / 20
Z_SUM = (Z**-2 - (2 * SIGMA_B) ** -2) ** -0.5  # Andrew et al. Thm. 1 with centred bits


def _pld_epsilon(q: float, z: float, rounds: int, delta: float) -> float:
    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds)
    accountant = PLDAccountant(dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4)
    return accountant.compose(event).get_epsilon(delta)


def _composed_pld(q: float, z_sum: float, z_count: float, rounds: int, delta: float) -> tuple[float, float]:
    """(ε, δ(ε=0)) of T rounds of Poisson(q) → (sum with z_sum, count with z_count) on the same cohort, by PLD.

    dp-accounting's PLD accountant takes only one Gaussian under PoissonSampledDpEvent; the pair on one cohort is a
    Gaussian on the concatenated vector whose normalised sensitivity has norm (z_sum⁻² + z_count⁻²)^½, and the
    subsampled Gaussian's privacy loss depends on that norm alone — so this is the exact PLD of the pair.
    """
    z_eff = (z_sum**-2 + z_count**-2) ** -0.5
    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z_eff)), rounds)
    pld = PLDAccountant(dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4).compose(event)
    return pld.get_epsilon(delta), pld.get_delta(0.0)


def _composed_rdp(q: float, z_sum: float, z_count: float, rounds: int, delta: float) -> float:
    """RDP ε of the same rounds, given to dp-accounting as the nested event itself (it reduces it on its own)."""
    pair = dp_event.ComposedDpEvent([dp_event.GaussianDpEvent(z_sum), dp_event.GaussianDpEvent(z_count)])
    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, pair), rounds)
    return RdpAccountant().compose(event).get_epsilon(delta)


def _adaptive(**privacy) -> CentralDP:
    cfg = PrivacyConfig(mechanism="central", clipping="adaptive", **privacy)
    return CentralDP(cfg, POPULATION, Q, ROUNDS)


def _aggregate(n_users: int, unclipped: int) -> Aggregate:
    return Aggregate(
        item_sum=torch.zeros(6, 2, dtype=torch.float64),
        dense_sum={},
        total_weight=float(n_users),
        n_users=n_users,
        metrics={"unclipped-count": float(unclipped), "norm-sum": float(n_users)},
    )


def _count_release(mechanism: CentralDP, n_users: int, unclipped: int, seed: int) -> float:
    """The noised count the server released, read back from its fraction estimate (+ constants that cancel in
    differences); the same seed gives the same noise draw, so neighbouring cohorts differ only by the query."""
    _, metrics = copy.deepcopy(mechanism).mean_update(_aggregate(n_users, unclipped), np.random.default_rng(seed))
    return (metrics["privacy/noisy_unclipped_fraction"] - 0.5) * Q * POPULATION


def _count_sensitivity(mechanism: CentralDP) -> float:
    """Largest change of the released count when one user (clipped or not) joins a cohort, noise held fixed."""
    changes = []
    for seed in range(3):
        for n, k in [(54, 27), (50, 20), (60, 33)]:
            base = _count_release(mechanism, n, k, seed)
            changes.append(abs(_count_release(mechanism, n + 1, k + 1, seed) - base))  # an unclipped user joins
            changes.append(abs(_count_release(mechanism, n + 1, k, seed) - base))  # a clipped user joins
    return max(changes)


def test_reported_epsilon_is_the_composed_sum_and_centred_count_mechanism():
    mechanism = _adaptive(noise_multiplier=Z)
    assert mechanism.delta == DELTA and mechanism.count_stddev == pytest.approx(SIGMA_B)
    assert mechanism.noise_std() == pytest.approx(Z_SUM * mechanism.clipping_norm, rel=1e-12)  # the sum's noise
    # the count's noise multiplier is its noise std over its sensitivity, measured on neighbouring cohorts
    z_count = SIGMA_B / _count_sensitivity(mechanism)
    for server_round in range(1, ROUNDS + 1):
        assert mechanism.can_release(server_round)[0]
        metrics = mechanism.after_release(server_round, np.arange(54))
    eps_pld, advantage = _composed_pld(Q, Z_SUM, z_count, ROUNDS, DELTA)
    assert metrics["privacy/epsilon"] == pytest.approx(eps_pld, rel=1e-6)
    assert metrics["privacy/epsilon_rdp"] == pytest.approx(_composed_rdp(Q, Z_SUM, z_count, ROUNDS, DELTA), rel=1e-6)
    assert mechanism.max_advantage_bound() == pytest.approx(advantage, rel=1e-6)
    # the count release costs privacy: more than the update sum alone
    assert metrics["privacy/epsilon"] > _pld_epsilon(Q, Z_SUM, ROUNDS, DELTA) + 0.05


def test_centred_count_moves_by_exactly_half_when_one_user_is_added():
    mechanism = _adaptive(noise_multiplier=Z)
    for seed in range(3):
        for n, k in [(54, 27), (10, 0), (10, 10)]:
            base = _count_release(mechanism, n, k, seed)
            assert _count_release(mechanism, n + 1, k + 1, seed) - base == pytest.approx(0.5, abs=1e-9)
            assert _count_release(mechanism, n + 1, k, seed) - base == pytest.approx(-0.5, abs=1e-9)
    assert _count_sensitivity(mechanism) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("target", [1.0, pytest.param(4.0, marks=pytest.mark.slow)])
def test_calibration_with_adaptive_clipping_meets_the_target_for_the_composed_mechanism(target):
    mechanism = _adaptive(target_epsilon=target)
    z_sum = mechanism.noise_std() / mechanism.clipping_norm
    eps, _ = _composed_pld(Q, z_sum, 2 * SIGMA_B, ROUNDS, DELTA)
    assert eps <= target
    assert eps == pytest.approx(target, rel=0.02)
    for server_round in range(1, ROUNDS + 1):
        metrics = mechanism.after_release(server_round, np.arange(54))
    assert metrics["privacy/epsilon"] == pytest.approx(eps, rel=1e-6)


def test_budget_stop_counts_the_count_release():
    eps_t, _ = _composed_pld(Q, Z_SUM, 2 * SIGMA_B, ROUNDS, DELTA)
    eps_sum_only = _pld_epsilon(Q, Z_SUM, ROUNDS, DELTA)
    mechanism = _adaptive(noise_multiplier=Z, max_epsilon=(eps_sum_only + eps_t) / 2)
    released = 0
    for server_round in range(1, ROUNDS + 1):
        if not mechanism.can_release(server_round)[0]:
            break
        mechanism.after_release(server_round, np.arange(54))
        released += 1
    assert released < ROUNDS  # the sum alone would have fitted all ROUNDS rounds in the budget
    assert mechanism.accountant.epsilon() <= mechanism.max_epsilon


def test_more_noise_remediation_doubles_both_releases():
    mechanism = _adaptive(noise_multiplier=Z)
    mechanism.after_release(1, np.arange(54))
    mechanism.scale_noise(2.0)  # would have failed before: σ_b = 2.7 < z/2 = 3
    mechanism.after_release(2, np.arange(54))
    assert mechanism.noise_std() == pytest.approx(2 * Z_SUM * mechanism.clipping_norm)
    assert mechanism.count_stddev == pytest.approx(2 * SIGMA_B)
    pair = [dp_event.GaussianDpEvent(2 * Z_SUM), dp_event.GaussianDpEvent(4 * SIGMA_B)]
    first = [dp_event.GaussianDpEvent(Z_SUM), dp_event.GaussianDpEvent(2 * SIGMA_B)]
    event = dp_event.ComposedDpEvent(
        [
            dp_event.PoissonSampledDpEvent(Q, dp_event.ComposedDpEvent(first)),
            dp_event.PoissonSampledDpEvent(Q, dp_event.ComposedDpEvent(pair)),
        ]
    )
    reference = RdpAccountant().compose(event).get_epsilon(DELTA)
    assert mechanism.accountant.epsilon("rdp") == pytest.approx(reference, rel=1e-9)


def test_state_round_trip_and_states_from_before_the_fix():
    mechanism = _adaptive(noise_multiplier=Z)
    for server_round in range(1, 4):
        mechanism.after_release(server_round, np.arange(54))
    resumed = _adaptive(noise_multiplier=Z)
    resumed.load_state_dict(mechanism.state_dict())
    assert resumed.accountant.epsilon() == pytest.approx(mechanism.accountant.epsilon(), rel=1e-12)
    # a state saved before the fix: nominal z recorded, while the uncentred count (sensitivity 1) went out
    legacy = {
        "mechanism": "central",
        "clipping_norm": 0.7,
        "accountant": {"kind": "dp-fedavg-poisson-gaussian", "delta": DELTA, "method": "pld", "history": [[Q, Z, 3]]},
    }
    resumed = _adaptive(noise_multiplier=Z)
    resumed.load_state_dict(legacy)
    assert resumed.clipping_norm == 0.7
    assert resumed.accountant.epsilon() == pytest.approx(_composed_pld(Q, Z_SUM, SIGMA_B, 3, DELTA)[0], rel=1e-6)


@pytest.mark.parametrize("quantile", [0.5, 0.8])
def test_adaptive_clipping_norm_tracks_the_target_quantile(quantile):
    rng = np.random.default_rng(0)
    population = 2000
    norms = rng.lognormal(mean=0.0, sigma=0.5, size=population)
    cfg = PrivacyConfig(
        mechanism="central", clipping="adaptive", noise_multiplier=1.0, clipping_norm=0.1, target_quantile=quantile
    )
    mechanism = CentralDP(cfg, population, Q, 300)
    trace = []
    for _ in range(300):
        cohort = norms[rng.random(population) < Q]
        unclipped = int(np.sum(cohort <= mechanism.clipping_norm))
        mechanism.mean_update(_aggregate(len(cohort), unclipped), rng)
        trace.append(mechanism.clipping_norm)
    assert np.mean(trace[-100:]) == pytest.approx(np.quantile(norms, quantile), rel=0.1)
