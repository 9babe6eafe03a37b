"""What a node uploads when the server must aggregate per user (``strategy.robust``) or securely (``secagg``).

By default a node uploads Σ_u w_u Δ_u over its users (fedsim/client/device.py). A robust rule needs each user's
update, so the node sends them stacked (U × d, :func:`~fedsim.security.robust.stack_user_updates`) with the users' ids;
secure aggregation needs each user's *quantised* update, of which the server may only learn the sum, so the node sends
the sum of its users' quantised vectors mod 2^b (the protocol's sum, in pieces). The server side is
:mod:`fedsim.server.combine`.
"""

from __future__ import annotations

import numpy as np

from fedsim.runtime import Runtime
from fedsim.security.robust import stack_user_updates
from fedsim.security.secagg import masked_sum, quantize
from fedsim.updates import LocalResult

PER_USER, USER_IDS, SECAGG_SUM = "__per_user__", "__user_ids__", "__secagg_sum__"


def per_user_upload(
    rt: Runtime, result: LocalResult, weights: np.ndarray, users: np.ndarray, server_round: int
) -> dict[str, np.ndarray] | None:
    """The node's upload under robust or secure aggregation; None when neither is on (the plain weighted sum)."""
    cfg = rt.cfg
    if cfg.strategy.robust == "none" and not cfg.secagg.enabled:
        return None
    model = rt.model
    stacked = stack_user_updates(result, weights, rt.split.n_items, model.item_width, model.dense_shapes)
    if cfg.strategy.robust != "none":
        return {PER_USER: stacked, USER_IDS: np.asarray(users, dtype=np.int64)}
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
