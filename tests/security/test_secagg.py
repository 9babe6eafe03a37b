"""Secure aggregation simulated: Flower's quantisation, the sum the server learns, the threshold, the costs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config
from flwr.common.secure_aggregation.quantization import dequantize

from fedsim.client.device import train_shard
from fedsim.config import ConfigError, SecAggConfig
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.security.describe import security_threat_model, vector_length
from fedsim.security.secagg import capacity, dequantize_sum, masked_sum, neighbours, protocol_costs, quantize
from fedsim.security.uploads import SECAGG_STATS, quantisation_margin, unseal_metrics


def test_quantised_sum_recovers_the_float_sum_within_one_step_per_user():
    cfg = SecAggConfig()
    rng = np.random.default_rng(0)
    vectors = rng.normal(scale=0.5, size=(20, 50))
    total = masked_sum(quantize(vectors, cfg, np.random.default_rng(1)), cfg)
    step = 2 * cfg.clipping_range / 2**cfg.quantization_bits
    assert np.max(np.abs(dequantize_sum(total, 20, cfg) - vectors.sum(axis=0))) <= 20 * step


def test_one_user_dequantises_as_flower_does():
    cfg = SecAggConfig()
    vector = np.array([-9.0, -1.25, 0.0, 3.5, 9.0])  # the ends are clipped to ±c
    q = quantize(vector, cfg, np.random.default_rng(0))
    flower = dequantize([q], cfg.clipping_range, 2**cfg.quantization_bits)[0]
    np.testing.assert_allclose(dequantize_sum(q, 1, cfg), flower)
    np.testing.assert_allclose(flower, np.clip(vector, -8, 8), atol=2 * 8 / 2**22)


def test_stochastic_rounding_is_unbiased():
    cfg = SecAggConfig(quantization_bits=4, modulus_bits=16)  # step 1.0: the rounding is visible
    x = np.full(20000, 0.3)  # 0.3 + 8 = 8.3 -> 8 with p=0.7, 9 with p=0.3
    q = quantize(x, cfg, np.random.default_rng(0))
    assert set(np.unique(q).tolist()) == {8, 9}
    assert abs(q.mean() - 8.3) < 0.01


def test_capacity_and_costs_follow_the_formulas():
    cfg = SecAggConfig()
    assert capacity(cfg) == (2**32 - 1) // 2**22 == 1023
    assert neighbours(100, cfg) == 14  # 2 * ceil(log2 100)
    assert neighbours(5, cfg) == 4  # never more than n - 1
    costs = protocol_costs(n=90, dropped=10, m=1000, cfg=cfg)
    k = 14
    assert costs["secagg/client_upload_bytes"] == 1000 * 32 / 8 + 2 * 32 + 3 * k * 48
    assert costs["secagg/client_mask_elements"] == (k + 1) * 1000
    assert costs["secagg/client_key_agreements"] == 2 * k  # two key pairs per client
    assert costs["secagg/server_mask_elements"] == 90 * 1000 + 10 * k * 1000
    assert costs["secagg/server_reconstructions"] == 100


def test_secagg_matches_the_plain_run_and_attacks_only_the_sum(tmp_path):
    plain = run(tiny_config(), tmp_path / "plain")["final"]
    assert "## Integrity" not in (tmp_path / "plain" / "report.md").read_text()  # nothing on: report unchanged
    secure = run(tiny_config("secagg=secagg_plus", "secagg.min_users=5"), tmp_path / "secure")["final"]
    # the same model up to quantisation (2^-18 per coordinate): the same rankings
    assert abs(secure["test/hr@10"] - plain["test/hr@10"]) < 1e-9
    assert secure["secagg/aborted"] == 0.0 and secure["secagg/client_upload_bytes"] > 0
    # the per-upload attack reads each user's items; on the sum it is far weaker
    assert plain["risk/itemset_auc"] > 0.8
    assert abs(secure["risk/itemset_auc"] - 0.5) < abs(plain["risk/itemset_auc"] - 0.5)


def test_a_round_below_min_users_teaches_the_server_nothing(tmp_path):
    summary = run(tiny_config("secagg=secagg_plus", "secagg.min_users=1000", "checkpoint.every=0"), tmp_path)
    rounds = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["secagg/aborted"] == 1.0 for r in rounds if "secagg/aborted" in r)
    model = np.load(tmp_path / "model.npz")
    initial = get_runtime(tiny_config("secagg=secagg_plus", "secagg.min_users=1000")).model.init_shared(0)
    for name, value in initial.items():
        np.testing.assert_allclose(model[name], value, atol=1e-7)
    assert summary["rounds_completed"] == 3


def test_an_aborted_round_under_central_dp_still_releases_its_noise(tmp_path):
    """The combiner's docstring: an aborted round is not skipped — no update reaches the model, but the mechanism's
    noise does (and is charged)."""
    overrides = ("secagg=secagg_plus", "secagg.min_users=1000", "privacy=central", "privacy.noise_multiplier=1")
    run(tiny_config(*overrides, "checkpoint.every=0"), tmp_path)
    model = np.load(tmp_path / "model.npz")
    initial = get_runtime(tiny_config(*overrides)).model.init_shared(0)
    assert any(not np.allclose(model[name], value, atol=1e-7) for name, value in initial.items())


def _secure_shard(*overrides: str, config: dict | None = None, n: int = 4):
    rt = get_runtime(tiny_config("secagg=secagg_plus", "secagg.min_users=2", *overrides))
    users = rt.eligible[:n]
    config = config or {"user-weighting": "uniform"}
    return rt, users, train_shard(rt, users, rt.model.init_private(users, 0), rt.model.init_shared(0), 1, config)


def test_under_secagg_node_statistics_travel_only_summed():
    """Training-loss sum, samples and the clipping diagnostics leave the node inside the summed vector; only the
    user count is in the clear — and the server recovers the same totals as without secagg."""
    config = {"user-weighting": "uniform", "clipping-norm": 0.5, "clip-diagnostics": True}
    rt, users, (upload, metrics, _, result) = _secure_shard(config=config)
    assert set(metrics) == {"num-users", "num-examples"}
    plain = get_runtime(tiny_config())
    private, shared = plain.model.init_private(users, 0), plain.model.init_shared(0)
    _, clear, _, _ = train_shard(plain, users, private, shared, 1, config)
    split = [{SECAGG_STATS: upload[SECAGG_STATS]}, {SECAGG_STATS: upload[SECAGG_STATS]}]  # two identical nodes
    totals = unseal_metrics(split)
    for key in ("train-loss-sum", "samples", "norm-sum", "unclipped-count"):
        assert abs(totals[key] - 2 * clear[key]) < 1e-9 * max(1.0, abs(clear[key]))


def test_under_central_dp_a_dequantised_update_stays_within_the_clip():
    """Stochastic rounding adds up to √m·Δ to an update's norm: each user is clipped to C − √m·Δ first, so what the
    server dequantises is within C (coarse quantisation here makes the margin visible)."""
    sa = ("secagg.clipping_range=1", "secagg.quantization_bits=10", "secagg.modulus_bits=20")
    rt = get_runtime(tiny_config("secagg=secagg_plus", *sa))
    margin = quantisation_margin(vector_length(rt), rt.cfg.secagg)
    clip = margin + 0.01  # the margin is most of C: without it, rounding pushes norms past C
    for user in rt.eligible[:6]:
        config = {"user-weighting": "uniform", "clipping-norm": clip}
        one = np.array([user])
        upload, _, _, _ = train_shard(rt, one, rt.model.init_private(one, 0), rt.model.init_shared(0), 1, config)
        received = dequantize_sum(upload["__secagg_sum__"], 1, rt.cfg.secagg)
        assert np.linalg.norm(received) <= clip


def test_secagg_refuses_example_weighting():
    with pytest.raises(ConfigError, match="user_weighting=examples"):
        tiny_config("secagg=secagg_plus", "federation.user_weighting=examples")


def test_the_threat_model_says_what_the_server_sees():
    assert security_threat_model(tiny_config()) == {}  # nothing on: the threat model is unchanged
    central = security_threat_model(tiny_config("secagg=secagg_plus", "privacy=central", "privacy.noise_multiplier=1"))
    assert "sum" in central["trusted"] and "secure_aggregation" in central
    assert "partial sums" in central["secure_aggregation"] and "quantisation error" in central["trusted"]
    poisoned = security_threat_model(tiny_config("attack.poison.fraction=0.1", "strategy.robust=median"))
    assert "malicious" in poisoned["adversarial_devices"] and "median" in poisoned["robust_aggregation"]
