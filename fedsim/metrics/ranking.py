"""Ranking metrics for one held-out item per user (the leave-one-out protocol).

With a single relevant item, HR@K = Recall@K = 1[rank < K] and NDCG@K = 1/log2(rank + 2) when rank < K (0-based
rank). Ties are counted *against* the held-out item (a candidate scoring equal to it ranks above it), so a model
that scores everything the same gets 0, not 1: a constant ranker cannot look good by accident.
"""

from __future__ import annotations

import numpy as np
import torch


def rank_among(target: torch.Tensor, candidates: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of ``target`` (U,) among ``candidates`` (U, C); ``exclude`` (U, C) marks candidates to ignore."""
    beats = candidates >= target.unsqueeze(1)
    if exclude is not None:
        beats &= ~exclude
    return beats.sum(dim=1)


def hit_at_k(rank: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    return (np.asarray(rank) < k).astype(np.float64)


def ndcg_at_k(rank: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    r = np.asarray(rank, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
