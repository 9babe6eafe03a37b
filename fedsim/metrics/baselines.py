"""Non-personalised baselines on the same split, so every run states its gap to them."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.protocol import Split
from fedsim.metrics.evaluate import UserMetrics, evaluate_scores


def popularity_scores(split: Split, users: np.ndarray, popularity: np.ndarray | None = None) -> torch.Tensor:
    """ItemPop: every user gets the items ranked by training popularity (ties broken by item id)."""
    pop = split.item_popularity() if popularity is None else popularity
    # scores are rank positions (most popular = n_items, ties by lower id): exact in float32 too, so the order
    # survives the cast when the fallback is written into a device's float32 score matrix
    order = np.lexsort((np.arange(split.n_items), -np.asarray(pop)))
    row = np.empty(split.n_items)
    row[order] = np.arange(split.n_items, 0, -1)
    return torch.as_tensor(row, dtype=torch.float64).unsqueeze(0).expand(len(users), -1)


def item_pop(
    split: Split, k: int = 10, users: np.ndarray | None = None, trained_by: np.ndarray | None = None
) -> UserMetrics:
    """ItemPop on ``users`` (all evaluated users by default) — pass the users a run evaluates, so both compare.

    ``trained_by``: count popularity over these users' training interactions only — the users who train in the
    federation — so the baseline sees no more data than the model it is compared with (default: every user)."""
    users = split.evaluated_users if users is None else users
    popularity = None if trained_by is None else split.item_popularity(trained_by)
    return evaluate_scores(popularity_scores(split, users, popularity), users, split, k)
