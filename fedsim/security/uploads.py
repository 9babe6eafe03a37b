"""What a node uploads when the server must aggregate per user (``strategy.robust``) or securely (``secagg``).

By default a node uploads Σ_u w_u Δ_u over its users (fedsim/client/device.py). A robust rule needs each user's
update, so the node sends them stacked (U × d, :func:`~fedsim.security.robust.stack_user_updates`) with the users' ids;
secure aggregation needs each user's *quantised* update, of which the server may only learn the sum, so the node sends
the sum of its users' quantised vectors mod 2^b (the protocol's sum, in pieces). The server side is
:mod:`fedsim.server.combine`.

Under secure aggregation the node's other statistics (training-loss sum, sample count, and under central DP the
clipping diagnostics norm-sum / unclipped-count) would otherwise arrive per node, unmasked: :func:`seal_metrics`
moves them into a second vector that the server, like the update, only ever adds over all nodes (a real deployment
masks it too, in a field wide enough for these sums). Only ``num-users`` and ``num-examples`` stay outside — a SecAgg+
server knows who survived, and under uniform weighting (the only one secagg allows) the two are equal.

Central DP under secure aggregation: stochastic rounding moves a clipped update by less than one quantisation step
Δ = 2c/2^q per coordinate, so by up to √m·Δ in L2 — beyond the clip C the noise is calibrated to. Each user's
update is therefore scaled to L2 ≤ C − √m·Δ before quantising (:func:`quantisation_margin`), so that what the
server dequantises is still within C.
"""

from __future__ import annotations

import numpy as np

from fedsim.config import SecAggConfig
from fedsim.data.roles import MALICIOUS
from fedsim.runtime import Runtime
from fedsim.security.robust import stack_user_updates
from fedsim.security.secagg import masked_sum, quantize
from fedsim.updates import LocalResult

PER_USER, USER_IDS, SECAGG_SUM, SECAGG_STATS = "__per_user__", "__user_ids__", "__secagg_sum__", "__secagg_stats__"
# the node statistics sealed under secure aggregation, in a fixed order (absent ones are sent as "not present")
SEALED = ("train-loss-sum", "samples", "norm-sum", "unclipped-count")
CLEAR = ("num-users", "num-examples")  # known to a SecAgg+ server anyway (the surviving users)


def quantisation_margin(m: int, cfg: SecAggConfig) -> float:
    """√m·Δ: the most stochastic rounding can add to the L2 norm of an m-vector (Δ = 2c/2^q per coordinate)."""
    return float(np.sqrt(m) * 2 * cfg.clipping_range / 2**cfg.quantization_bits)


def seal_metrics(
    rt: Runtime, upload: dict[str, np.ndarray], metrics: dict[str, float]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Under secure aggregation, move the :data:`SEALED` node statistics into the upload's second summed vector
    (``[present flags..., values...]``) and keep only :data:`CLEAR` in the clear — any other statistic is dropped, so
    a new one never leaks per node by default; otherwise return both unchanged."""
    if not rt.cfg.secagg.enabled:
        return upload, metrics
    present = [1.0 if key in metrics else 0.0 for key in SEALED]
    values = [float(metrics.get(key, 0.0)) for key in SEALED]
    sealed = {**upload, SECAGG_STATS: np.asarray(present + values, dtype=np.float64)}
    return sealed, {key: metrics[key] for key in CLEAR if key in metrics}


def unseal_metrics(uploads: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The server's side of :func:`seal_metrics`: only the sum over all nodes of each sealed statistic."""
    total = np.sum([arrays[SECAGG_STATS] for arrays in uploads if SECAGG_STATS in arrays], axis=0)
    if np.ndim(total) == 0:
        return {}
    k = len(SEALED)
    return {key: float(total[k + i]) for i, key in enumerate(SEALED) if total[i] > 0}


def per_user_upload(
    rt: Runtime,
    result: LocalResult,
    weights: np.ndarray,
    users: np.ndarray,
    server_round: int,
    clip: float | None = None,
) -> dict[str, np.ndarray] | None:
    """The node's upload under robust or secure aggregation; None when neither is on (the plain weighted sum).

    ``clip``: the round's DP clipping norm C, if any; under secure aggregation each benign user's row is then scaled
    to L2 ≤ C − √m·Δ before quantising (module docstring). Malicious devices that skip the clip
    (``attack.poison.skip_clip``) skip this too."""
    cfg = rt.cfg
    if cfg.strategy.robust == "none" and not cfg.secagg.enabled:
        return None
    model = rt.model
    stacked = stack_user_updates(result, weights, rt.split.n_items, model.item_width, model.dense_shapes)
    if cfg.strategy.robust != "none":
        return {PER_USER: stacked, USER_IDS: np.asarray(users, dtype=np.int64)}
    if clip is not None and len(users):
        bound = clip - quantisation_margin(stacked.shape[1], cfg.secagg)
        if bound <= 0:
            raise ValueError(
                f"secagg: clipping norm {clip:g} is within the quantisation error √m·Δ; raise secagg.quantization_bits"
            )
        norms = np.linalg.norm(stacked, axis=1)
        factors = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
        if cfg.attack.poison.skip_clip:
            factors[rt.roles[users] == MALICIOUS] = 1.0
        stacked *= factors[:, None]
    quantized = (
        np.stack(
            [
                quantize(row, cfg.secagg, np.random.default_rng([cfg.seed, server_round, int(user), 4244]))
                for row, user in zip(stacked, users.tolist(), strict=True)
            ]
        )
        if len(users)
        else np.zeros((0, stacked.shape[1]), dtype=np.int64)
    )
    return {SECAGG_SUM: masked_sum(quantized, cfg.secagg)}
