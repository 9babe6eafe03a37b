"""Secure aggregation simulated: Flower's quantisation, the sum the server learns, the threshold, the costs."""

from __future__ import annotations

import json

import numpy as np
from conftest import tiny_config
from flwr.common.secure_aggregation.quantization import dequantize

from fedsim.config import SecAggConfig
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.security.describe import security_threat_model
from fedsim.security.secagg import capacity, dequantize_sum, masked_sum, neighbours, protocol_costs, quantize


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


def test_the_threat_model_says_what_the_server_sees():
    assert security_threat_model(tiny_config()) == {}  # nothing on: the threat model is unchanged
    central = security_threat_model(tiny_config("secagg=secagg_plus", "privacy=central", "privacy.noise_multiplier=1"))
    assert "sum" in central["trusted"] and "secure_aggregation" in central
    poisoned = security_threat_model(tiny_config("attack.poison.fraction=0.1", "strategy.robust=median"))
    assert "malicious" in poisoned["adversarial_devices"] and "median" in poisoned["robust_aggregation"]
