"""Summing node uploads into the round's aggregate, in a fixed order (so results do not depend on reply order)."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.models.base import RankingModel
from fedsim.updates import Aggregate

Upload = tuple[int, dict[str, np.ndarray], dict[str, float]]  # (partition, arrays, metrics) from one node


def summed_metrics(uploads: list[Upload]) -> dict[str, float]:
    """The uploads' metrics summed key by key, in partition order."""
    metrics: dict[str, float] = {}
    for _, _, values in sorted(uploads, key=lambda u: u[0]):
        for key, value in values.items():
            metrics[key] = metrics.get(key, 0.0) + float(value)
    return metrics


def aggregate_of(item_sum: torch.Tensor, dense_sum: dict[str, torch.Tensor], metrics: dict[str, float]) -> Aggregate:
    """The round's aggregate from its summed update and summed metrics (weight and user count read from them)."""
    return Aggregate(
        item_sum=item_sum,
        dense_sum=dense_sum,
        total_weight=metrics.get("num-examples", 0.0),
        n_users=int(metrics.get("num-users", 0)),
        metrics=metrics,
    )


def sum_uploads(uploads: list[Upload]) -> Aggregate:
    """Sum ``(partition, arrays, metrics)`` uploads, sorted by partition; metrics are summed key by key."""
    item_sum: torch.Tensor | None = None
    dense: dict[str, torch.Tensor] = {}
    for _, arrays, _ in sorted(uploads, key=lambda u: u[0]):
        for name, value in arrays.items():
            t = torch.as_tensor(value, dtype=torch.float64)
            if name == "__items__":
                item_sum = t.clone() if item_sum is None else item_sum + t
            else:
                dense[name] = t.clone() if name not in dense else dense[name] + t
    if item_sum is None:
        raise ValueError("no uploads to aggregate")
    return aggregate_of(item_sum, dense, summed_metrics(uploads))


def empty_aggregate(model: RankingModel) -> Aggregate:
    """The aggregate of a round in which nobody took part (Poisson sampling can draw an empty cohort)."""
    return Aggregate(
        item_sum=torch.zeros(model.n_items, model.item_width, dtype=torch.float64),
        dense_sum={k: torch.zeros(s, dtype=torch.float64) for k, s in model.dense_shapes.items()},
        total_weight=0.0,
        n_users=0,
    )
