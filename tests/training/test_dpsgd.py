"""Record-level DP-SGD: per-sample clipping, noise on every trained coordinate, record-level accounting."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from fedsim.config import ClientConfig, ConfigError, ModelConfig, PrivacyConfig, validate
from fedsim.data.negatives import draw_user_samples
from fedsim.data.protocol import leave_one_out
from fedsim.data.synthetic import generate_synthetic
from fedsim.models import build_model
from fedsim.privacy.accountant import epsilon_of
from fedsim.privacy.record import RecordDP
from fedsim.run import run
from fedsim.training.dpsgd import train_users_dpsgd
from fedsim.training.local import LocalTrainingParams, train_users


@pytest.fixture(scope="module")
def setup():
    split = leave_one_out(generate_synthetic(n_users=12, n_items=60, max_interactions=25, seed=4), n_negatives=10)
    model = build_model(ModelConfig(name="mf", dim=4), split.n_items)
    users = np.arange(6)
    samples = [draw_user_samples(split, int(u), 1, 0, 2, 1, "bce") for u in users]
    return model, model.init_shared(0), model.init_private(users, 0), samples


def test_each_step_moves_parameters_by_at_most_lr_times_clip_without_noise(setup):
    model, shared, private, samples = setup
    params = LocalTrainingParams.from_config(ClientConfig(), batch_size=8, lr=0.5)
    result = train_users_dpsgd(model, shared, private, samples, params, clip=1e-3, noise_multiplier=0.0, seed=0)
    steps = np.ceil(np.array([len(s) for s in samples]) / 8)
    user_moves = np.linalg.norm(result.private.numpy() - private, axis=1)
    assert np.all(result.update_norms() <= 0.5 * 1e-3 * steps + 1e-7)
    assert np.all(user_moves <= 0.5 * 1e-3 * steps + 1e-7)


def test_without_clipping_or_noise_it_is_plain_sgd(setup):
    model, shared, private, samples = setup
    params = LocalTrainingParams.from_config(ClientConfig(), batch_size=8, lr=0.1)
    dp = train_users_dpsgd(model, shared, private, samples, params, clip=1e6, noise_multiplier=0.0, seed=0)
    plain = train_users(model, shared, private, samples, params)
    assert torch.allclose(dp.private, plain.private, atol=1e-5)
    assert np.allclose(dp.update_norms(), plain.update_norms(), rtol=1e-4)


def test_noise_reaches_every_item_row_with_the_configured_scale(setup):
    model, shared, private, samples = setup
    params = LocalTrainingParams.from_config(
        ClientConfig(), batch_size=1000, lr=1.0
    )  # one step per user: the noise is seen once
    result = train_users_dpsgd(model, shared, private, samples, params, clip=0.5, noise_multiplier=2.0, seed=1)
    norms = result.item_row_norms(model.n_items)
    assert torch.all(norms > 0)  # the whole catalogue is touched: row sparsity reveals nothing
    chunk = result.chunks[0]
    pure_noise = []
    for row, position in enumerate(chunk.positions.tolist()):
        untouched = np.setdiff1d(np.arange(model.n_items), samples[position].first)
        pure_noise.append(chunk.item_delta[row, untouched] * len(samples[position]))  # undo the 1/count
    assert float(torch.cat(pure_noise).std()) == pytest.approx(1.0 * 2.0 * 0.5, rel=0.05)  # lr · z · C


def test_record_level_accounting_and_its_label():
    mechanism = RecordDP(
        PrivacyConfig(mechanism="record", noise_multiplier=5.0),
        10,
        rounds=4,
        epochs=2,
        negatives=4,
        user_weighting="uniform",
    )
    for r in range(1, 4):
        metrics = mechanism.after_release(r, np.arange(3))
    # 3 rounds × 2 epochs of a Gaussian with sensitivity (1 + 4)·C, i.e. z_eff = 5 / 5 = 1
    assert metrics["privacy/epsilon_record_level"] == pytest.approx(epsilon_of([(1.0, 1.0, 6)], 1e-5))
    assert "privacy/epsilon" not in metrics and "NOT user-level" in mechanism.threat_model()["guarantee"]
    calibrated = RecordDP(
        PrivacyConfig(mechanism="record", target_epsilon=4.0),
        10,
        rounds=3,
        epochs=2,
        negatives=4,
        user_weighting="uniform",
    )
    assert epsilon_of([(1.0, calibrated.z_effective, 6)], 1e-5) <= 4.0


def test_record_dp_config_rules_and_a_run(tmp_path):
    cfg = tiny_config()
    cfg.client.optimizer = "sgd"
    cfg.client.lr = 0.5
    cfg.privacy = PrivacyConfig(mechanism="record", noise_multiplier=1.0, clipping_norm=1.0)
    summary = run(cfg, tmp_path)
    assert summary["final"]["privacy/epsilon_record_level"] > 0
    assert "record" in summary["threat_model"]["unit"].lower()
    cfg.model.name = "neumf"
    with pytest.raises(ConfigError, match="model=mf"):
        validate(cfg)
