"""Per-user evaluation from a score matrix — the same code for every model, baseline and device.

A device scores all items with its private embedding and the shared model, then computes its own metrics on its own
validation/test item; only these per-user numbers (and its top-K list, for exposure metrics) are sent back. The
server never sees the private embedding or the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fedsim.data.protocol import Split
from fedsim.metrics.ranking import hit_at_k, ndcg_at_k, rank_among

# Metric names, in the order they are reported. "sampled" = among 1 + n_negatives candidates; "full" = among all
# items not in the user's training set.
PER_USER_METRICS = (
    "val_hr",
    "val_ndcg",
    "val_recall_full",
    "val_ndcg_full",
    "test_hr",
    "test_ndcg",
    "test_recall_full",
    "test_ndcg_full",
)


@dataclass
class UserMetrics:
    """Per-user metrics for the users in ``users`` (one array per name) and their top-K recommendations."""

    users: np.ndarray
    values: dict[str, np.ndarray]
    top_k: np.ndarray

    @staticmethod
    def concat(parts: list[UserMetrics]) -> UserMetrics:
        parts = [p for p in parts if len(p.users)]
        if not parts:
            return UserMetrics(
                np.zeros(0, dtype=np.int64),
                {m: np.zeros(0) for m in PER_USER_METRICS},
                np.zeros((0, 0), dtype=np.int64),
            )
        users = np.concatenate([p.users for p in parts])
        order = np.argsort(users, kind="stable")
        values = {m: np.concatenate([p.values[m] for p in parts])[order] for m in parts[0].values}
        return UserMetrics(users[order], values, np.concatenate([p.top_k for p in parts])[order])

    def mean(self) -> dict[str, float]:
        return {m: float(np.mean(v)) if len(v) else float("nan") for m, v in self.values.items()}


class ListReranker(Protocol):
    """A device-side re-ranking of the lists it shows (``mitigation=rerank``: :mod:`fedsim.mitigation.rerank`)."""

    def rank_of_last(self, scores: torch.Tensor, items: torch.Tensor, users: np.ndarray) -> torch.Tensor: ...

    def rank_in_pool(
        self,
        scores: torch.Tensor,
        exclude: torch.Tensor,
        target: torch.Tensor,
        base_rank: torch.Tensor,
        users: np.ndarray,
    ) -> torch.Tensor: ...

    def top_k(self, recommendable: torch.Tensor, users: np.ndarray) -> torch.Tensor: ...


def evaluate_scores(
    scores: torch.Tensor, users: np.ndarray, split: Split, k: int = 10, reranker: ListReranker | None = None
) -> UserMetrics:
    """Evaluate ``scores`` (U, n_items), row ``i`` belonging to ``users[i]``.

    Users without held-out items are skipped. With a ``reranker``, every list is re-ranked before it is scored — the
    sampled candidates (held-out item + negatives), the full ranking's top and the top-K — as the device would show it.
    """
    keep = split.test_item[users] >= 0
    users, scores = users[keep], scores[torch.as_tensor(keep)]
    n = len(users)
    if n == 0:
        return UserMetrics.concat([])
    rows = torch.arange(n)
    train_mask = torch.zeros(n, split.n_items, dtype=torch.bool)
    for i, u in enumerate(users.tolist()):
        train_mask[i, torch.as_tensor(split.train_items_of(u))] = True
    val_item = torch.as_tensor(split.val_item[users])
    test_item = torch.as_tensor(split.test_item[users])
    negatives = torch.as_tensor(split.eval_negatives[users])
    values: dict[str, np.ndarray] = {}
    for phase, target in (("val", val_item), ("test", test_item)):
        target_score = scores[rows, target]
        sampled_rank = rank_among(target_score, scores.gather(1, negatives))
        exclude = train_mask.clone()
        exclude[rows, target] = True  # the target does not outrank itself
        if phase == "test":
            exclude[rows, val_item] = True
        full_rank = rank_among(target_score, scores, exclude)
        if reranker is not None:  # the held-out item goes last among its candidates: ties count against it
            candidates = torch.cat([negatives, target.unsqueeze(1)], dim=1)
            sampled_rank = reranker.rank_in_sampled_pool(scores, candidates, sampled_rank, users)  # top-N, as below
            full_rank = reranker.rank_in_pool(scores, exclude, target, full_rank, users)
        values[f"{phase}_hr"] = hit_at_k(sampled_rank, k)
        values[f"{phase}_ndcg"] = ndcg_at_k(sampled_rank, k)
        values[f"{phase}_recall_full"] = hit_at_k(full_rank, k)
        values[f"{phase}_ndcg_full"] = ndcg_at_k(full_rank, k)
    recommendable = scores.masked_fill(train_mask, float("-inf"))
    if reranker is not None:
        top_k = reranker.top_k(recommendable, users).numpy()
    else:
        top_k = torch.topk(recommendable, k=min(k, split.n_items), dim=1).indices.numpy()
    return UserMetrics(users, {m: values[m] for m in PER_USER_METRICS}, top_k)


def metric_tags(means: dict[str, float], k: int) -> dict[str, float]:
    """Per-user metric means under their reported names, e.g. ``val_hr`` -> ``val/hr@10`` (sampled candidates),
    ``test_recall_full`` -> ``test/recall@10_full`` (full ranking)."""
    out = {}
    for name, value in means.items():
        phase, metric = name.split("_", 1)
        base, _, full = metric.partition("_")
        out[f"{phase}/{base}@{k}" + ("_full" if full else "")] = value
    return out
