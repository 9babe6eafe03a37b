"""ε against an independent dp-accounting computation, and against the values the research notes recorded."""

import math

import dp_accounting as dpa
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import RdpAccountant

from fedsim.privacy.accountant import (
    PrivacyAccountant,
    effective_noise_multiplier,
    epsilon_of,
    gaussian_round,
    max_advantage,
)


def _reference(q: float, z: float, rounds: int, delta: float) -> tuple[float, float]:
    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds)
    pld = (
        PLDAccountant(
            neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4
        )
        .compose(event)
        .get_epsilon(delta)
    )
    rdp = RdpAccountant().compose(event).get_epsilon(delta)
    return pld, rdp


@pytest.mark.parametrize(
    "q, z, rounds, delta",
    [
        (0.01, 1.0, 100, 1e-5),
        (0.001, 0.8, 2000, 1e-6),  # small q, large T
        (0.2, 2.5, 30, 1e-5),
        (50 / 943, 1.0, 100, 1e-3),
    ],
)
def test_epsilon_matches_an_independent_dp_accounting_computation(q, z, rounds, delta):
    accountant = PrivacyAccountant(delta)
    for _ in range(rounds):
        accountant.step(q, z)
    pld, rdp = _reference(q, z, rounds, delta)
    assert accountant.epsilon() == pytest.approx(pld, rel=1e-9)
    assert accountant.epsilon("rdp") == pytest.approx(rdp, rel=1e-9)
    assert accountant.epsilon() < accountant.epsilon("rdp")  # PLD is the tighter analysis


def _gaussian_delta(epsilon: float, sigma: float) -> float:
    """δ(ε) of one Gaussian mechanism with sensitivity 1 and noise σ — the analytic formula of Balle & Wang (2018,
    Thm. 8), computed with math.erf only: δ = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)."""

    def phi(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    return phi(0.5 / sigma - epsilon * sigma) - math.exp(epsilon) * phi(-0.5 / sigma - epsilon * sigma)


@pytest.mark.parametrize("z, rounds", [(1.0, 1), (2.0, 4), (4.0, 25)])
def test_unsampled_rounds_match_the_analytic_gaussian_mechanism(z, rounds):
    """q = 1: T Gaussian releases with multiplier z are one Gaussian with σ = z/√T; invert δ(ε) by bisection."""
    delta = 1e-5
    sigma = z / math.sqrt(rounds)
    low, high = 0.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _gaussian_delta(middle, sigma) > delta else (low, middle)
    accountant = PrivacyAccountant(delta)
    accountant.step(1.0, z, count=rounds)
    # the PLD is a pessimistic discretisation: never below the exact value, and within 1%
    assert high * (1 - 1e-6) <= accountant.epsilon() <= high * 1.01


def test_values_recorded_in_the_research_notes():
    # shared/notes/privacy-fairness.md §1.3: q=0.01, z=1, T=100, δ=1e-5 → PLD 0.718, RDP 1.214; §4.4 δ(0)=0.051
    accountant = PrivacyAccountant(1e-5)
    accountant.step(0.01, 1.0, count=100)
    assert accountant.epsilon() == pytest.approx(0.718, abs=0.001)
    assert accountant.epsilon("rdp") == pytest.approx(1.214, abs=0.001)
    assert accountant.max_advantage() == pytest.approx(0.051, abs=0.001)


def test_state_dict_round_trip_continues_epsilon():
    full = PrivacyAccountant(1e-5)
    full.step(0.05, 1.2, count=40)
    half = PrivacyAccountant(1e-5)
    half.step(0.05, 1.2, count=20)
    resumed = PrivacyAccountant(1e-5)
    resumed.load_state_dict(half.state_dict())
    resumed.step(0.05, 1.2, count=20)
    assert resumed.epsilon() == pytest.approx(full.epsilon(), rel=1e-12)
    with pytest.raises(ValueError):
        resumed.load_state_dict({"kind": "something else"})


def test_no_noise_means_infinite_epsilon_and_nothing_released_means_zero():
    accountant = PrivacyAccountant(1e-5)
    assert accountant.epsilon() == 0.0
    accountant.step(0.1, 0.0)
    assert math.isinf(accountant.epsilon()) and accountant.max_advantage() == 1.0


def test_would_exceed_looks_one_release_ahead():
    accountant = PrivacyAccountant(1e-5)
    accountant.step(0.1, 1.0, count=9)
    eps_now = accountant.epsilon()
    trial = PrivacyAccountant(1e-5)
    trial.step(0.1, 1.0, count=10)
    eps_next = trial.epsilon()
    assert accountant.would_exceed(0.1, 1.0, (eps_now + eps_next) / 2)
    assert not accountant.would_exceed(0.1, 1.0, eps_next + 1e-9)


def test_adaptive_round_composes_the_sum_and_the_count_on_one_cohort():
    # Andrew et al. 2021: the update sum (z_Δ) and the centred count (2σ_b) are released on the same Poisson cohort
    q, z_sum, z_count, rounds, delta = 0.1, 3.608, 5.4, 5, 1e-5
    accountant = PrivacyAccountant(delta)
    for _ in range(rounds):
        accountant.step(q, z_sum, z_count=z_count)
    assert accountant.history == [(q, z_sum, rounds, z_count)]
    pair = dp_event.ComposedDpEvent([dp_event.GaussianDpEvent(z_sum), dp_event.GaussianDpEvent(z_count)])
    rdp = RdpAccountant().compose(dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, pair), rounds))
    assert accountant.epsilon("rdp") == pytest.approx(rdp.get_epsilon(delta), rel=1e-9)
    # PLD takes one Gaussian under Poisson sampling: the pair is exactly the Gaussian with z⁻² = z_Δ⁻² + z_count⁻²
    pld, _ = _reference(q, (z_sum**-2 + z_count**-2) ** -0.5, rounds, delta)
    assert accountant.epsilon() == pytest.approx(pld, rel=1e-9)
    assert accountant.epsilon() > _reference(q, z_sum, rounds, delta)[0]  # the count is not free


def test_state_dict_keeps_the_count_multiplier_and_loads_three_element_states():
    accountant = PrivacyAccountant(1e-5)
    accountant.step(0.1, 1.0, count=3)
    accountant.step(0.1, 1.2, count=2, z_count=4.0)
    state = accountant.state_dict()
    assert state["history"] == [[0.1, 1.0, 3], [0.1, 1.2, 2, 4.0]]  # fixed-clipping entries keep the old format
    resumed = PrivacyAccountant(1e-5)
    resumed.load_state_dict(state)
    assert resumed.history == accountant.history
    assert resumed.epsilon() == pytest.approx(accountant.epsilon(), rel=1e-12)
    old = PrivacyAccountant(1e-5)
    history = [[0.1, 1.0, 3]]  # three elements: written before the count multiplier existed
    old.load_state_dict({"kind": "dp-fedavg-poisson-gaussian", "delta": 1e-5, "method": "pld", "history": history})
    assert old.history == [(0.1, 1.0, 3, None)]
    assert not old.would_exceed(0.1, 1.2, accountant.epsilon() + 1e-9, z_count=4.0)


def test_an_unnoised_count_means_infinite_epsilon():
    accountant = PrivacyAccountant(1e-5)
    accountant.step(0.1, 1.0, z_count=0.0)
    assert math.isinf(accountant.epsilon()) and accountant.max_advantage() == 1.0


@pytest.mark.parametrize(
    "history",
    [
        [(0.01, 1.0, 7)],
        [(1.0, 2.0, 5)],  # q = 1: one Gaussian with z/√T, no sampling
        [(0.1, 1.0, 3), (0.1, 2.0, 4, 5.0), (1.0, 3.0, 2)],  # a remediation, an adaptive entry, then q = 1
    ],
)
def test_cached_composition_is_dp_accountings_to_the_last_bit(history):
    """ε and δ(0) come from the round's PLD built once and self-composed (the accountant caches it): the same numbers,
    exactly, as dp-accounting's PLDAccountant composing the same events."""
    delta = 1e-5
    rounds = [
        dp_event.SelfComposedDpEvent(gaussian_round(q, effective_noise_multiplier(z, *z_count)), n)
        for q, z, n, *z_count in history
    ]
    direct = PLDAccountant(
        neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4
    ).compose(dp_event.ComposedDpEvent(rounds))
    for _ in range(2):  # the second time from the caches
        assert epsilon_of(history, delta) == direct.get_epsilon(delta)
        assert max_advantage(history) == min(1.0, direct.get_delta(0.0))


def test_a_run_builds_its_round_pld_once(monkeypatch):
    """ε is reported every round: the (Poisson-subsampled Gaussian) PLD of a round is built once per run and kind of
    round, not once per round (building it was ~0.15 s of every round at q = 0.001)."""
    built = []
    original = pld_lib.from_gaussian_mechanism

    def counting(*args, **kwargs):
        built.append(kwargs.get("sampling_prob"))
        return original(*args, **kwargs)

    monkeypatch.setattr(pld_lib, "from_gaussian_mechanism", counting)
    accountant = PrivacyAccountant(1e-6)
    epsilons = []
    for _ in range(12):
        accountant.step(0.0123, 1.1)
        epsilons.append(accountant.epsilon())
    assert len(built) <= 1
    assert epsilons == sorted(epsilons) and epsilons[0] < epsilons[-1]
