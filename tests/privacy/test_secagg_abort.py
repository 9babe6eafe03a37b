"""Secure aggregation under central DP: a round of fewer than ``secagg.min_users`` aborts (noise only), so one user can
decide between "noise only" and "a sum of ≥ min_users updates + noise" — charged to δ (issue 18, item 6).

The δ charge is recomputed here by a different route than fedsim's (exact rational binomial sums instead of scipy),
and the ε of an accepted configuration by composing dp-accounting's events directly at the δ left.
"""

from __future__ import annotations

import math
from fractions import Fraction

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from scipy import integrate, stats

from fedsim.cli import compose
from fedsim.config import ConfigError
from fedsim.privacy import build_mechanism
from fedsim.privacy.accountant import secagg_abort_delta


def _flip(population: int, q: Fraction, min_users: int) -> Fraction:
    """q · max over n ∈ {N − 1, N} of P[Binomial(n, q) = m − 1], in exact rational arithmetic."""
    k = min_users - 1
    return q * max(math.comb(n, k) * q**k * (1 - q) ** (n - k) for n in (population - 1, population))


def _central_secagg(q: float, min_users: int, rounds: int, *extra: str, noise: str = "privacy.noise_multiplier=1"):
    return compose(
        [
            "privacy=central",
            noise,
            "secagg=secagg_plus",
            f"secagg.min_users={min_users}",
            f"federation.participation={q}",
            f"federation.rounds={rounds}",
            *extra,
        ]
    )


def test_the_abort_probability_is_the_binomial_point_mass_below_the_threshold():
    # the case: 27 users, q = 0.4, min_users 10: one user decides the round with probability ≈ 0.0555
    exact = _flip(27, Fraction(2, 5), 10)
    assert secagg_abort_delta(27, 0.4, 10) == pytest.approx(float(exact), rel=1e-12)
    assert float(exact) == pytest.approx(0.0554573, abs=1e-7)
    for population, q, m in [(300, Fraction(1, 5), 30), (1000, Fraction(1, 10), 10), (10, Fraction(1), 10)]:
        assert secagg_abort_delta(population, float(q), m) == pytest.approx(float(_flip(population, q, m)), rel=1e-9)
    assert secagg_abort_delta(10, 1.0, 10) == 1.0  # q = 1, 9 others: the tenth user decides every round
    assert secagg_abort_delta(12, 1.0, 10) == 0.0  # q = 1, 11 or 12 users always report: never
    assert secagg_abort_delta(100, 0.5, 1000) == 0.0  # the threshold is never reached: the round never releases


def test_the_27_user_case_is_refused_instead_of_reporting_a_wrong_epsilon():
    """Main reported ε = 3.265 here (one round, z = 1, δ = 1e-5) as if the abort did not exist; one user decides the
    round with probability 0.055, 5,500 times δ: no ε holds at δ = 1e-5, so fedsim refuses in one line."""
    cfg = _central_secagg(0.4, 10, 1, "federation.sampling=poisson")
    with pytest.raises(ConfigError) as error:
        build_mechanism(cfg, 27)
    message = str(error.value)
    assert "secagg.min_users" in message and "0.0555" in message and "\n" not in message


def test_an_accepted_cohort_reports_epsilon_at_the_delta_the_aborts_leave():
    """300 users, q = 0.2 (60 expected), min_users 30, z = 1, 5 rounds: the flip costs 1.3e-7 per round, 6.3e-7 in
    all (below δ/10 = 1e-6); ε is the Poisson-subsampled Gaussian's at δ − 6.3e-7, recomputed with dp-accounting."""
    cfg = _central_secagg(0.2, 30, 5, "federation.sampling=poisson")
    mechanism = build_mechanism(cfg, 300)
    for server_round in range(1, 6):
        metrics = mechanism.after_release(server_round, np.arange(60))
    charged = 5 * _flip(300, Fraction(1, 5), 30)
    assert metrics["privacy/delta_secagg_abort"] == pytest.approx(float(charged), rel=1e-9)
    assert metrics["privacy/delta"] == 1e-5
    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(0.2, dp_event.GaussianDpEvent(1.0)), 5)
    pld = PLDAccountant(dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4).compose(event)
    assert metrics["privacy/epsilon"] == pytest.approx(pld.get_epsilon(1e-5 - float(charged)), rel=1e-9)
    assert metrics["privacy/epsilon"] > pld.get_epsilon(1e-5)  # the charge costs ε, it is not free
    assert "secagg_abort" in mechanism.threat_model()
    # ten rounds would charge 1.27e-6 > δ/10: refused
    with pytest.raises(ConfigError, match="secagg.min_users"):
        build_mechanism(_central_secagg(0.2, 30, 10, "federation.sampling=poisson"), 300)


def test_a_target_epsilon_is_calibrated_at_the_delta_the_aborts_leave():
    cfg = _central_secagg(0.2, 30, 5, "federation.sampling=poisson", noise="privacy.target_epsilon=4")
    mechanism = build_mechanism(cfg, 300)
    for server_round in range(1, 6):
        metrics = mechanism.after_release(server_round, np.arange(60))
    assert metrics["privacy/epsilon"] <= 4.0  # the promise holds with the aborts charged


def test_no_charge_where_secure_aggregation_cannot_abort_a_round_one_user_decides():
    # 600 users at q = 1: 599 others always report, far above min_users 10 — nothing to charge, ε as before
    mechanism = build_mechanism(_central_secagg(1.0, 10, 3), 600)
    assert mechanism.accountant.abort_delta == 0.0
    assert "privacy/delta_secagg_abort" not in mechanism.after_release(1, np.arange(600))


def test_dropout_lowers_the_rate_the_count_is_drawn_with():
    # each sampled user reports with probability 0.9: the count is Binomial(n, 0.18), not Binomial(n, 0.2)
    cfg = _central_secagg(0.2, 25, 5, "federation.sampling=poisson", "federation.dropout=0.1")
    abort = build_mechanism(cfg, 300).accountant.abort_delta
    assert abort == pytest.approx(float(_flip(300, Fraction(18, 100), 25)), rel=1e-9)
    assert abort != pytest.approx(secagg_abort_delta(300, 0.2, 25), rel=0.5)


def test_reporting_that_differs_by_user_or_node_is_refused():
    with pytest.raises(ConfigError, match="federation.deadline_s"):
        _central_secagg(0.2, 30, 5, "federation.sampling=poisson", "federation.deadline_s=1")


def test_the_charge_is_tight_for_aligned_updates_when_the_cohort_is_known():
    """Why the flip is charged to δ rather than to ε: in the round where the other reporters number m − 1, D gives
    N(0, 1) and D' gives (1 − q)·N(0, 1) + q·N(m, 1) (m aligned updates at the clip, in units of the noise at z = 1).
    Their hockey-stick divergence at ε = 2 is still ≈ q: no moderate ε covers that round."""
    q, m, eps = 0.4, 10, 2.0

    def excess(y: float) -> float:
        without, with_u = stats.norm.pdf(y), (1 - q) * stats.norm.pdf(y) + q * stats.norm.pdf(y, loc=m)
        return max(0.0, with_u - math.exp(eps) * without)

    delta, _ = integrate.quad(excess, -10, 25, points=[m], limit=200)
    assert delta > 0.95 * q
