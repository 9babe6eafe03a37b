"""The mechanisms do what their threat model says: clip on the device, noise with the configured σ, stop in budget."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

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
    split = leave_one_out(generate_synthetic(n_users=n_users, n_items=100, seed=0), n_negatives=20)
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
    assert 0 < summary["rounds_completed"] < 10
    assert "privacy budget" in summary["stop_reason"]
    assert eps is not None and eps <= 4.0


def test_flowers_no_amplification_accountant_gives_a_larger_epsilon_for_the_same_noise():
    mechanism = CentralDP(PrivacyConfig(mechanism="central", noise_multiplier=1.0), 1000, 0.05, 20)
    for r in range(1, 21):
        metrics = mechanism.after_release(r, np.arange(50))
    assert metrics["privacy/epsilon_flower_no_amplification"] > 5 * metrics["privacy/epsilon"]
    assert metrics["privacy/epsilon_rdp"] > metrics["privacy/epsilon"]
