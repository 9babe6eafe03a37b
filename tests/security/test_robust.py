"""Robust aggregation over users: Flower's definitions (checked against Flower's own functions and numpy/scipy
references with literal inputs), and the per-user layout the devices upload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config
from flwr.server.strategy.aggregate import aggregate_krum
from scipy.stats import trim_mean

from fedsim.config import StrategyConfig
from fedsim.runtime import get_runtime
from fedsim.security.describe import vector_length
from fedsim.security.robust import krum, median, multi_krum, norm_bound, stack_user_updates, trimmed_mean, unstack
from fedsim.server.combine import UploadCombiner
from fedsim.updates import LocalResult, UpdateChunk


def _updates(n: int = 11, d: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_norm_bound_scales_only_the_long_updates():
    updates = np.array([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    out, kept, info = norm_bound(updates, StrategyConfig(robust_norm=1.0))
    np.testing.assert_allclose(out, ([0.6, 0.8] + np.array([0.3, 0.4])) / 2)
    assert kept.tolist() == [0, 1]  # the long update is shrunk, not dropped: it is in the mean
    assert info == {"robust/scaled_share": 0.5}


def test_trimmed_mean_and_krum_report_what_they_really_did():
    """β = 0.1 over 7 users cuts int(0.7) = 0 values: the plain mean, and the metric says so; Krum with n ≤ f + 3
    falls back to one neighbour."""
    updates = _updates(n=7)
    out, _, info = trimmed_mean(updates, StrategyConfig(robust_trim=0.1))
    np.testing.assert_allclose(out, updates.mean(axis=0))
    assert info == {"robust/trimmed_per_end": 0.0}
    assert trimmed_mean(_updates(n=20), StrategyConfig(robust_trim=0.1))[2] == {"robust/trimmed_per_end": 2.0}
    _, _, info = krum(updates, StrategyConfig(robust_byzantine=0.49))  # f = 3, n - f - 2 = 2
    assert info == {"robust/byzantine_f": 3.0, "robust/krum_neighbours": 2.0}
    _, _, info = multi_krum(_updates(n=4), StrategyConfig(robust_byzantine=0.4))  # f = 1, max(1, 4 - 1 - 2) = 1
    assert info == {"robust/byzantine_f": 1.0, "robust/krum_neighbours": 1.0}


def _round(rt, updates: np.ndarray) -> list:
    ids = rt.eligible[: len(updates)].astype(np.int64)
    metrics = {"num-users": float(len(updates)), "num-examples": float(len(updates))}
    return [(0, {"__per_user__": updates, "__user_ids__": ids}, metrics)]


def test_combiner_records_the_aggregate_norm_and_warns_when_median_learns_nothing(capsys):
    """Each user touches a different coordinate: every coordinate's median over users is 0, the round changes
    nothing, and the console says so; a rule that learns reports its aggregate's norm."""
    rt = get_runtime(tiny_config("strategy.robust=median"))
    d = vector_length(rt)
    updates = np.zeros((5, d))
    updates[np.arange(5), np.arange(5)] = 1.0
    aggregate, out = UploadCombiner(rt).combine(_round(rt, updates), 3, rt.eligible[:5])
    assert out["robust/update_norm"] == 0.0 and not aggregate.item_sum.any()
    assert "round 3" in capsys.readouterr().out
    rt = get_runtime(tiny_config("strategy.robust=norm_bound", "strategy.robust_norm=10"))
    _, out = UploadCombiner(rt).combine(_round(rt, updates), 3, rt.eligible[:5])
    assert abs(out["robust/update_norm"] - np.linalg.norm(updates.mean(axis=0))) < 1e-12  # √5 / 5
    assert out["robust/kept_share"] == 1.0 and out["robust/scaled_share"] == 0.0
    assert "exactly zero" not in capsys.readouterr().out


def test_median_and_trimmed_mean_match_numpy_and_scipy():
    updates = _updates()
    np.testing.assert_allclose(median(updates, StrategyConfig())[0], np.median(updates, axis=0))
    cfg = StrategyConfig(robust_trim=0.2)
    np.testing.assert_allclose(trimmed_mean(updates, cfg)[0], trim_mean(updates, 0.2, axis=0))


@pytest.mark.parametrize("byzantine", [0.0, 0.2, 0.4])
def test_krum_and_multi_krum_match_flower(byzantine):
    updates = _updates(n=12, d=5, seed=3)
    updates[:3] += 10.0  # three far-away updates
    cfg = StrategyConfig(robust_byzantine=byzantine)
    f = int(np.floor(byzantine * len(updates)))
    results = [([u], 1) for u in updates]
    np.testing.assert_allclose(krum(updates, cfg)[0], aggregate_krum(results, f, 0)[0])
    np.testing.assert_allclose(multi_krum(updates, cfg)[0], aggregate_krum(results, f, len(updates) - f)[0])
    assert not set(krum(updates, cfg)[1].tolist()) & {0, 1, 2}  # Krum never picks an outlier here


def test_stacked_updates_sum_to_the_nodes_weighted_upload():
    """The per-user rows, summed, are the node's plain upload Σ_u w_u Δ_u (an independent path through
    LocalResult.weighted_sum), and unstack is the inverse layout."""
    rng = np.random.default_rng(0)
    items = torch.tensor([[0, 3, -1], [2, 3, 4]])
    delta = torch.as_tensor(rng.normal(size=(2, 3, 2)), dtype=torch.float32)
    delta[0, 2] = 0.0
    dense = {"w": torch.as_tensor(rng.normal(size=(2, 2, 3)), dtype=torch.float32)}
    result = LocalResult(np.array([7, 9]), torch.zeros(2, 1), np.zeros(2), np.ones(2))
    result.chunks.append(UpdateChunk(np.array([1, 0]), items, delta, dense))
    weights = np.array([2.0, 0.5])
    stacked = stack_user_updates(result, weights, 5, 2, {"w": (2, 3)})
    item_sum, dense_sum = result.weighted_sum(weights, 5, 2, {"w": (2, 3)})
    got_items, got_dense = unstack(stacked.sum(axis=0), 5, 2, {"w": (2, 3)})
    np.testing.assert_allclose(got_items, item_sum.numpy(), atol=1e-6)
    np.testing.assert_allclose(got_dense["w"], dense_sum["w"].numpy(), atol=1e-6)
    # position 1 (chunk row 0) trained items 0 and 3 only
    assert np.count_nonzero(unstack(stacked[1], 5, 2, {"w": (2, 3)})[0].any(axis=1)) == 2
