"""The mechanisms do what their threat model says: clip on the device, noise with the configured σ, stop in budget."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config, v1_dataset

from fedsim.config import ClientConfig, ModelConfig, PrivacyConfig
from fedsim.data.negatives import draw_user_samples
from fedsim.data.protocol import leave_one_out
from fedsim.data.synthetic import generate_synthetic
from fedsim.models import build_model
from fedsim.privacy.central import CentralDP
from fedsim.privacy.device import noise_upload_, privatize_users_
from fedsim.privacy.local import LocalDP
from fedsim.run import run
from fedsim.training.local import LocalTrainingParams, train_users
from fedsim.updates import Aggregate


def local_params(**overrides):
    """client/ defaults (the schema), with ``overrides``."""
    return LocalTrainingParams.from_config(ClientConfig(), **overrides)


def _trained(n_users=10):
    split = leave_one_out(generate_synthetic(v1_dataset(), n_users=n_users, n_items=100, seed=0), n_negatives=20)
    model = build_model(ModelConfig(name="mf", dim=8), split.n_items)
    users = np.arange(n_users)
    samples = [draw_user_samples(split, int(u), 1, 0, 4, 3, "bce") for u in users]
    result = train_users(
        model,
        model.init_shared(0),
        model.init_private(users, 0),
        samples,
        local_params(lr=1.0),
    )
    return model, result


def test_no_released_update_exceeds_the_clipping_norm():
    _, result = _trained()
    assert result.update_norms().max() > 0.12  # the test means something: some updates need clipping
    mechanism = CentralDP(PrivacyConfig(mechanism="central", noise_multiplier=1.0, clipping_norm=0.12), 100, 0.1, 10)
    privatize_users_(result, mechanism.round_config(1))
    assert result.update_norms().max() <= 0.12 + 1e-6


def test_central_noise_has_the_configured_standard_deviation():
    z, clip, q, population = 1.3, 0.7, 0.25, 400
    mechanism = CentralDP(PrivacyConfig(mechanism="central", noise_multiplier=z, clipping_norm=clip), population, q, 10)
    zero = Aggregate(torch.zeros(500, 40, dtype=torch.float64), {}, 0.0, 0)
    mean, _ = mechanism.mean_update(zero, np.random.default_rng(1))
    empirical = float(mean["__items__"].std()) * q * population  # undo the fixed denominator qN
    assert empirical == pytest.approx(z * clip, rel=0.02)


def test_local_noise_has_the_configured_standard_deviation_per_user():
    mechanism = LocalDP(PrivacyConfig(mechanism="local", noise_multiplier=0.9, clipping_norm=0.5), 50, 1.0, 5)
    config = mechanism.round_config(1)
    total = torch.zeros(300, 30, dtype=torch.float64)
    noise_upload_(total, {}, 4, config, np.random.default_rng(2))  # a node summing 4 users' uploads
    assert float(total.std()) == pytest.approx(0.9 * 2 * 0.5 * 2, rel=0.03)  # σ = z·2C per user, ×√4


def test_local_epsilon_composes_over_each_users_participations():
    mechanism = LocalDP(PrivacyConfig(mechanism="local", target_epsilon=8.0), 10, 1.0, 4)
    eps = [mechanism.after_release(r, np.arange(10))["privacy/epsilon"] for r in range(1, 5)]
    assert eps == sorted(eps) and eps[-1] <= 8.0 and eps[-1] == pytest.approx(8.0, rel=0.02)


def _dp_config(**privacy):
    return tiny_config("privacy=central", *(f"privacy.{k}={v}" for k, v in privacy.items()), participation=1.0)


def test_central_dp_with_zero_noise_and_no_clipping_matches_no_dp(tmp_path):
    plain = tiny_config(user_weighting="uniform", sampling="poisson", participation=1.0)
    a = run(plain, tmp_path / "none")
    b = run(_dp_config(noise_multiplier=0.0, clipping_norm=1e6), tmp_path / "z0")
    assert b["final"]["test/hr@10"] == pytest.approx(a["final"]["test/hr@10"], abs=1e-9)
    assert b["final"]["test/ndcg@10"] == pytest.approx(a["final"]["test/ndcg@10"], abs=1e-6)


def test_enormous_noise_is_no_better_than_random(tmp_path):
    summary = run(_dp_config(noise_multiplier=1e4, clipping_norm=1.0), tmp_path)
    # random ranking of 1 positive among 50 candidates: HR@10 = 0.2; 26 users → a wide band
    assert summary["final"]["test/hr@10"] < 0.2 + 0.2
    assert summary["final"]["test/hr@10"] < summary["baselines"]["ItemPop"]["test/hr@10"] + 0.05
    assert summary["final"]["privacy/epsilon"] < 0.01


def test_max_epsilon_stops_before_the_release_that_would_exceed_it(tmp_path):
    cfg = _dp_config(noise_multiplier=2.0, max_epsilon=4.0)
    cfg.federation.rounds = 10  # set after composing: the schema is a plain dataclass
    summary = run(cfg, tmp_path)
    eps = summary["final"].get("privacy/epsilon")
    # q = 1: T rounds at z = 2 are one Gaussian with σ = 2/√T; by the analytic formula (Balle & Wang 2018, δ = 1e-5)
    # ε(3) = 3.709 ≤ 4 < ε(4) = 4.377, so exactly 3 rounds are released
    assert [round(_analytic_gaussian_epsilon(2.0 / math.sqrt(t), 1e-5), 3) for t in (3, 4)] == [3.709, 4.377]
    assert summary["rounds_completed"] == 3
    # stopped by the budget, not finished: a machine-readable reason, the words for people
    assert summary["stop_reason"] == "privacy_budget" and "privacy budget" in summary["stop_detail"]
    assert summary["finished"] is False
    assert eps == pytest.approx(_analytic_gaussian_epsilon(2.0 / math.sqrt(3), 1e-5), rel=1e-3)


def _analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """ε of one Gaussian mechanism (sensitivity 1, noise σ) at δ, inverting δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)
    (Balle & Wang 2018, Thm. 8) by bisection, with math.erf only."""

    def phi(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    low, high = 0.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        gap = phi(0.5 / sigma - middle * sigma) - math.exp(middle) * phi(-0.5 / sigma - middle * sigma)
        low, high = (middle, high) if gap > delta else (low, middle)
    return high


def test_flowers_no_amplification_accountant_gives_a_larger_epsilon_for_the_same_noise():
    mechanism = CentralDP(PrivacyConfig(mechanism="central", noise_multiplier=1.0), 1000, 0.05, 20)
    for r in range(1, 21):
        metrics = mechanism.after_release(r, np.arange(50))
    flower = metrics["privacy/epsilon_flower_no_amplification"]
    assert flower > 5 * metrics["privacy/epsilon"]
    # no amplification: 20 unsampled releases at z = 1 are one Gaussian with σ = 1/√20. Its exact ε is a floor for any
    # valid accountant; RDP (20·α/2 at order α) with the classical conversion ε = RDP + ln(1/δ)/(α−1) is a ceiling, and
    # the improved conversion (Canonne et al. 2020) is what an RDP accountant reports
    orders = np.linspace(1.01, 100, 100_000)
    classical = np.min(10 * orders + math.log(1e5) / (orders - 1))
    improved = np.min(10 * orders + np.log((orders - 1) / orders) - (math.log(1e-5) + np.log(orders)) / (orders - 1))
    assert _analytic_gaussian_epsilon(1 / math.sqrt(20), 1e-5) <= flower <= classical
    assert flower == pytest.approx(improved, rel=0.01)
    assert metrics["privacy/epsilon_rdp"] > metrics["privacy/epsilon"]
