"""The device side of every privacy mechanism: a stateless step driven by the round's config.

The server's mechanism (stateful: accountant, calibrated z, adaptive C) decides each round what the devices must do
and says it in the train message's config (``round_config``); a device never builds a mechanism, never calibrates
and holds no privacy state. Keys it understands:

* ``user-weighting`` — ``uniform`` (every user counts once: DP needs it) or ``examples`` (FedAvg);
* ``clipping-norm`` — clip each user's whole update to L2 ≤ C (central and local DP);
* ``clip-diagnostics`` — report the number of users whose update needed no clipping and the sum of norms (central
  DP only: the adaptive-clipping query and diagnostics; under local DP nothing un-noised leaves the device);
* ``local-noise-std`` — add N(0, σ²) to every coordinate of each user's clipped upload (local DP).

Simulation shortcut for local DP: a node sums its users' noised uploads before replying, so instead of n independent
noise vectors it draws one with variance n·σ² — the same distribution for the sum, which is all the server's
aggregate depends on. Attacks that inspect single uploads draw that user's noise explicitly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsim.updates import LocalResult


def user_weights(config: dict[str, Any], n_positives: np.ndarray) -> np.ndarray:
    """FedAvg weights: the user's number of training interactions, or 1 per user (``user-weighting``)."""
    if config.get("user-weighting", "uniform") == "uniform":
        return np.ones(len(n_positives))
    return n_positives.astype(np.float64)


def clip_updates_(result: LocalResult, clipping_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale each user's update (all shared parameters together) to L2 norm ≤ C; return (norms before, clipped)."""
    norms = result.update_norms()
    factors = np.minimum(1.0, clipping_norm / np.maximum(norms, 1e-12))
    result.scale_updates_(factors)
    return norms, norms > clipping_norm


def privatize_users_(result: LocalResult, config: dict[str, Any]) -> dict[str, float]:
    """Clip each user's update in place when the round asks for it; return the sums the server may see."""
    if "clipping-norm" not in config:
        return {}
    norms, clipped = clip_updates_(result, float(config["clipping-norm"]))
    if not config.get("clip-diagnostics", False):
        return {}
    return {"unclipped-count": float(np.sum(~clipped)), "norm-sum": float(norms.sum())}


def noise_upload_(
    item_sum: torch.Tensor,
    dense_sum: dict[str, torch.Tensor],
    n_users: int,
    config: dict[str, Any],
    rng: np.random.Generator,
) -> None:
    """Local DP: add each user's N(0, σ²) noise to the node's summed upload (one draw with variance n·σ²)."""
    sigma = float(config.get("local-noise-std", 0.0))
    if sigma <= 0:
        return
    std = sigma * np.sqrt(n_users)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    item_sum += torch.randn(item_sum.shape, generator=generator, dtype=item_sum.dtype) * std
    for value in dense_sum.values():
        value += torch.randn(value.shape, generator=generator, dtype=value.dtype) * std


def uploads_training_metrics(config: dict[str, Any]) -> bool:
    """Whether the device may report its training loss and sample counts: not under local or record-level DP, whose
    guarantees cover only the noised update (those statistics would leave the device un-noised), nor under
    on-device training (``train-shared`` False: nothing that depends on the data is uploaded)."""
    return "local-noise-std" not in config and "record-clip" not in config and bool(config.get("train-shared", True))
