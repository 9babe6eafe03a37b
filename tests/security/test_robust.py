"""Robust aggregation over users: Flower's definitions (checked against Flower's own functions and numpy/scipy
references with literal inputs), and the per-user layout the devices upload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.server.strategy.aggregate import aggregate_krum
from scipy.stats import trim_mean

from fedsim.config import StrategyConfig
from fedsim.security.robust import krum, median, multi_krum, norm_bound, stack_user_updates, trimmed_mean, unstack
from fedsim.updates import LocalResult, UpdateChunk


def _updates(n: int = 11, d: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_norm_bound_scales_only_the_long_updates():
    updates = np.array([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    out, kept = norm_bound(updates, StrategyConfig(robust_norm=1.0))
    np.testing.assert_allclose(out, ([0.6, 0.8] + np.array([0.3, 0.4])) / 2)
    assert kept.tolist() == [1]


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
