"""Record-level DP-SGD: Poisson-sampled records, per-record clipping, noise on every trained coordinate, the fixed
divisor B, record-level accounting and a whole run (the sensitivity argument itself: tests/validity)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, v1_dataset

from fedsim.config import ClientConfig, ConfigError, ModelConfig, PrivacyConfig, validate
from fedsim.data.protocol import leave_one_out
from fedsim.data.synthetic import generate_synthetic
from fedsim.models import build_model
from fedsim.privacy.accountant import epsilon_of
from fedsim.privacy.record import RecordDP, steps_per_epoch
from fedsim.run import run
from fedsim.training.dpsgd import RecordDpParams, draw_records, train_users_dpsgd
from fedsim.training.local import LocalTrainingParams


@pytest.fixture(scope="module")
def setup():
    split = leave_one_out(
        generate_synthetic(v1_dataset(), n_users=12, n_items=60, max_interactions=25, seed=4), n_negatives=10
    )
    model = build_model(ModelConfig(name="mf", dim=4), split.n_items)
    users = np.arange(6)
    positives = [split.train_items_of(int(u)) for u in users]
    return model, model.init_shared(0), model.init_private(users, 0), users, positives


def _dp(**overrides) -> RecordDpParams:
    values = dict(
        clip=1.0,
        noise_multiplier=0.0,
        sample_rate=0.25,
        steps_per_epoch=4,
        epochs=2,
        negatives=2,
        seed=0,
        server_round=1,
    )
    return RecordDpParams(**{**values, **overrides})


def test_each_step_moves_parameters_by_at_most_lr_times_clip_over_b_per_sampled_record(setup):
    model, shared, private, users, positives = setup
    params = LocalTrainingParams.from_config(ClientConfig(), batch_size=8, lr=0.5)
    dp = _dp(clip=1e-3)
    result = train_users_dpsgd(model, shared, private, users, positives, params, dp)
    sampled = result.n_samples / (1 + dp.negatives)  # record inclusions over all steps
    user_moves = np.linalg.norm(result.private.numpy() - private, axis=1)
    assert np.all(sampled > 0)
    assert np.all(result.update_norms() <= 0.5 * 1e-3 / 8 * sampled + 1e-7)
    assert np.all(user_moves <= 0.5 * 1e-3 / 8 * sampled + 1e-7)


def test_without_clipping_or_noise_one_full_step_is_gradient_descent_on_the_records_sum_over_b(setup):
    """q = 1, one step, C = ∞, z = 0: the update is −lr/B · ∇ Σ_records loss (autograd on model.score)."""
    model, shared, private, users, positives = setup
    params = LocalTrainingParams.from_config(ClientConfig(), batch_size=8, lr=0.1)
    dp = _dp(clip=1e9, sample_rate=1.0, steps_per_epoch=1, epochs=1, negatives=3)
    result = train_users_dpsgd(model, shared, private, users, positives, params, dp)
    records = draw_records(users, positives, model.n_items, dp)
    items = model.pack_items(shared).float()
    for row in range(len(users)):
        p = torch.as_tensor(private[row]).clone().requires_grad_(True)
        q = items.clone().requires_grad_(True)
        n = len(positives[row])
        slots = torch.cat([records.item[row, :n, None], records.negatives[row, :n, 0]], dim=1)  # (n, 1 + K)
        scores = model.score(p.expand(n, -1), q[slots], {})
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        F.binary_cross_entropy_with_logits(scores, labels, reduction="sum").backward()
        assert torch.allclose(result.private[row], p.detach() - 0.1 / 8 * p.grad, atol=1e-6)
        chunk = next(c for c in result.chunks if row in c.positions.tolist())
        delta = chunk.item_delta[chunk.positions.tolist().index(row)]
        assert torch.allclose(delta, -0.1 / 8 * q.grad, atol=1e-6)


def test_noise_reaches_every_item_row_with_the_configured_scale(setup):
    model, shared, private, users, positives = setup
    params = LocalTrainingParams.from_config(ClientConfig(), batch_size=4, lr=2.0)
    # one step in which (q ≈ 0) no record is sampled: the update is pure noise, lr · z · C / B per coordinate
    dp = _dp(clip=0.5, noise_multiplier=2.0, sample_rate=1e-12, steps_per_epoch=1, epochs=1)
    result = train_users_dpsgd(model, shared, private, users, positives, params, dp)
    assert np.all(result.n_samples == 0)
    assert torch.all(result.item_row_norms(model.n_items) > 0)  # the whole catalogue is touched
    noise = torch.cat([c.item_delta.flatten() for c in result.chunks])
    assert float(noise.std()) == pytest.approx(2.0 * 2.0 * 0.5 / 4, rel=0.05)
    user_noise = torch.as_tensor(private) - result.private
    assert float(user_noise.std()) == pytest.approx(2.0 * 2.0 * 0.5 / 4, rel=0.35)  # only 6 × 4 draws


def test_a_users_training_does_not_depend_on_who_else_is_trained_with_it(setup):
    """Every random draw is keyed by (seed, round, user, record): sharding and chunking are speed knobs only."""
    model, shared, private, users, positives = setup
    params = LocalTrainingParams.from_config(ClientConfig(), batch_size=8, lr=0.5)
    dp = _dp(noise_multiplier=1.0)
    together = train_users_dpsgd(model, shared, private, users, positives, params, dp)
    alone = train_users_dpsgd(model, shared, private[3:4], users[3:4], positives[3:4], params, dp)
    chunk = next(c for c in together.chunks if 3 in c.positions.tolist())
    assert torch.allclose(together.private[3], alone.private[0], atol=1e-6)
    assert torch.allclose(chunk.item_delta[chunk.positions.tolist().index(3)], alone.chunks[0].item_delta[0], atol=1e-6)


def test_record_level_accounting_and_its_label():
    mechanism = RecordDP(
        PrivacyConfig(mechanism="record", noise_multiplier=1.0, record_sample_rate=0.2),
        10,
        rounds=4,
        epochs=2,
        negatives=4,
        user_weighting="uniform",
    )
    for r in range(1, 4):
        metrics = mechanism.after_release(r, np.arange(3))
    # 3 rounds × 2 epochs × ceil(1/0.2) = 5 steps, each Poisson(0.2)-sampled with a Gaussian of sensitivity C
    assert metrics["privacy/epsilon_record_level"] == pytest.approx(epsilon_of([(0.2, 1.0, 30)], 1e-5))
    assert "privacy/epsilon" not in metrics and "NOT user-level" in mechanism.threat_model()["guarantee"]
    calibrated = RecordDP(
        PrivacyConfig(mechanism="record", target_epsilon=4.0, record_sample_rate=0.2),
        10,
        rounds=3,
        epochs=2,
        negatives=4,
        user_weighting="uniform",
    )
    assert epsilon_of([(0.2, calibrated.z, 3 * 2 * steps_per_epoch(0.2))], 1e-5) <= 4.0


def test_record_dp_config_rules_and_a_run(tmp_path):
    cfg = tiny_config("privacy=record", "privacy.noise_multiplier=1.0")
    summary = run(cfg, tmp_path)
    final = summary["final"]
    q, steps = cfg.privacy.record_sample_rate, cfg.federation.rounds * cfg.client.epochs * steps_per_epoch(0.1)
    assert final["privacy/epsilon_record_level"] == pytest.approx(epsilon_of([(q, 1.0, steps)], 1e-5))
    assert "record" in summary["threat_model"]["unit"].lower()
    assert np.isfinite(final["val/hr@10"])
    cfg.model.name = "neumf"
    with pytest.raises(ConfigError, match="model=mf"):
        validate(cfg)
    cfg.model.name = "mf"
    cfg.privacy.record_sample_rate = 0.0
    with pytest.raises(ConfigError, match="record_sample_rate"):
        validate(cfg)
