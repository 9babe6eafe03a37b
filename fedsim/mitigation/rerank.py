"""The post-processing mitigation: calibrated-popularity re-ranking of each device's top-K (on the device).

Steck (RecSys 2018, "Calibrated Recommendations") builds a list greedily to maximise
``(1 - λ) · Σ_{i∈S} rel(i) - λ · KL(p_u ‖ q̃_S)`` where ``p_u`` is the user's own category mix and ``q̃_S = (1-α)·q_S +
α·p_u`` the list's (α = 0.01 keeps the divergence finite). Abdollahpouri et al. (UMAP 2021, "User-centered Evaluation
of Popularity Bias in Recommender Systems") use it with two categories — the short head and the long tail — so a
list carries the long-tail share the user's history has, instead of the far smaller share a popularity-biased model
gives. ``rel`` is the device's score min-max normalised over the candidates, so λ does not depend on the score scale.

With two categories, an item's marginal gain depends only on whether it is in the tail, so each greedy step is one
vectorised argmax over all users of a shard. Ties go to the earlier candidate (callers put the held-out item last,
so ties count against it, as in :mod:`fedsim.metrics.ranking`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.config import MitigationConfig
from fedsim.data.protocol import Split
from fedsim.mitigation.popularity import popularity_proxy, short_head
from fedsim.models.base import RankingModel

ALPHA = 0.01


def _kl_two(p_tail: torch.Tensor, q_tail: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q̃) over {head, tail} with q̃ = (1-α)q + αp (0·log 0 = 0)."""
    q_tail = (1 - ALPHA) * q_tail + ALPHA * p_tail
    out = torch.zeros_like(p_tail)
    for p, q in ((p_tail, q_tail), (1 - p_tail, 1 - q_tail)):
        out = out + torch.where(p > 0, p * torch.log(p.clamp(min=1e-12) / q.clamp(min=1e-12)), torch.zeros_like(p))
    return out


def calibrated_rerank(
    scores: torch.Tensor, is_tail: torch.Tensor, target_tail: torch.Tensor, k: int, weight: float
) -> torch.Tensor:
    """Greedy calibrated re-ranking of each row's candidates; returns (U, k) column indices, best first.

    Parameters
    ----------
    scores : (U, C) the device's scores of its candidates (``-inf`` = not recommendable, picked only when nothing
        else is left).
    is_tail : (U, C) bool, the candidate is in the long tail.
    target_tail : (U,) the user's own long-tail share p_u(tail) in [0, 1].
    k : list length (<= C).
    weight : λ in [0, 1]; 0 keeps the score order.
    """
    scores = scores.double()
    n_users, n_cand = scores.shape
    k = min(k, n_cand)
    valid = torch.isfinite(scores)
    low = torch.where(valid, scores, torch.full_like(scores, float("inf"))).min(dim=1, keepdim=True).values
    high = torch.where(valid, scores, torch.full_like(scores, float("-inf"))).max(dim=1, keepdim=True).values
    span = (high - low).clamp(min=1e-12)
    rel = torch.where(valid, (scores - low) / span, torch.zeros_like(scores))
    p_tail = target_tail.double().clamp(0.0, 1.0)
    tail = is_tail.bool()
    taken = torch.zeros_like(valid)
    n_tail = torch.zeros(n_users, dtype=torch.float64)
    order = torch.empty(n_users, k, dtype=torch.long)
    rows = torch.arange(n_users)
    for step in range(k):
        size = float(step + 1)
        kl_if_tail = _kl_two(p_tail, (n_tail + 1) / size)
        kl_if_head = _kl_two(p_tail, n_tail / size)
        penalty = torch.where(tail, kl_if_tail.unsqueeze(1), kl_if_head.unsqueeze(1))
        gain = (1 - weight) * rel - weight * penalty
        gain = torch.where(valid, gain, torch.full_like(gain, -1e30))  # invalid only when nothing else is left
        gain = gain.masked_fill(taken, float("-inf"))
        pick = gain.argmax(dim=1)  # first maximum: ties go to the earlier column
        order[:, step] = pick
        taken[rows, pick] = True
        n_tail += tail[rows, pick].double()
    return order


@dataclass
class Reranker:
    """What a device needs to re-rank: the long-tail mask (from the shared model), each user's own long-tail share
    (from its own training items), λ, the list length K and the re-ranked pool size N."""

    tail: np.ndarray  # (n_items,) bool
    target_tail: dict[int, float]  # user -> share of its training items in the long tail
    k: int
    pool: int
    weight: float

    def order(self, scores: torch.Tensor, items: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        """(U, k) column indices into ``items`` (U, C), re-ranked (see :func:`calibrated_rerank`)."""
        is_tail = torch.as_tensor(self.tail)[items]
        target = torch.as_tensor([self.target_tail[int(u)] for u in users], dtype=torch.float64)
        return calibrated_rerank(scores, is_tail, target, self.k, self.weight)

    def rank_of_last(self, scores: torch.Tensor, items: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        """0-based position of each row's *last* candidate (the held-out item) in its re-ranked list; ``k`` (a miss)
        when it is not in the list."""
        order = self.order(scores, items, users)
        hit = order == (items.shape[1] - 1)
        position = torch.argmax(hit.long(), dim=1)
        return torch.where(hit.any(dim=1), position, torch.full_like(position, self.k))

    def rank_in_sampled_pool(
        self, scores: torch.Tensor, candidates: torch.Tensor, base_rank: torch.Tensor, users: np.ndarray
    ) -> torch.Tensor:
        """Sampled-candidate rank of the held-out item (``candidates``' last column) after re-ranking only the
        top-``pool`` candidates by score — the same pool rule as the full ranking (:meth:`rank_in_pool`): a held-out
        item whose plain rank ``base_rank`` (ties against it) leaves it outside the pool is a miss (``k``)."""
        n_cand = candidates.shape[1]
        cand_scores = scores.gather(1, candidates)
        if self.pool >= n_cand:  # every candidate is in the pool
            return self.rank_of_last(cand_scores, candidates, users)
        n = self.pool
        others = torch.topk(cand_scores[:, :-1], k=n, dim=1).indices  # the n best negatives, best first
        qualifies = base_rank < n
        others[qualifies, n - 1] = n_cand - 1  # the held-out item takes the weakest place, last: ties against it
        rank = self.rank_of_last(cand_scores.gather(1, others), candidates.gather(1, others), users)
        return torch.where(qualifies, rank, torch.full_like(rank, self.k))

    def rank_in_pool(
        self,
        scores: torch.Tensor,
        exclude: torch.Tensor,
        target: torch.Tensor,
        base_rank: torch.Tensor,
        users: np.ndarray,
    ) -> torch.Tensor:
        """Full-ranking rank of ``target`` after re-ranking the top-``pool`` recommendable items: the pool is the
        ``pool`` best items, the held-out item among them when its plain rank puts it there (last column)."""
        rows = torch.arange(len(target))
        masked = scores.masked_fill(exclude, float("-inf"))
        masked[rows, target] = float("-inf")
        n = min(self.pool, scores.shape[1])
        others = torch.topk(masked, k=n, dim=1).indices
        qualifies = base_rank < n
        others[qualifies, n - 1] = target[qualifies]
        pool_scores = masked.gather(1, others)
        pool_scores[qualifies, n - 1] = scores[rows, target][qualifies]
        rank = self.rank_of_last(pool_scores, others, users)
        return torch.where(qualifies, rank, torch.full_like(rank, self.k))

    def top_k(self, recommendable: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        """(U, k) item ids: the re-ranked list each device shows."""
        pool = torch.topk(recommendable, k=min(self.pool, recommendable.shape[1]), dim=1).indices
        order = self.order(recommendable.gather(1, pool), pool, users)
        return pool.gather(1, order)


def build_reranker(
    model: RankingModel, shared: dict[str, np.ndarray], split: Split, users: np.ndarray, cfg: MitigationConfig, k: int
) -> Reranker:
    """The re-ranker of the devices of ``users``: the long tail from the shared model they received, each user's
    target share from its own training items (both computed on the device)."""
    tail = ~short_head(popularity_proxy(model, shared), cfg.head_share)
    counts = split.n_train()
    target = {int(u): float(np.mean(tail[split.train_items_of(int(u))])) if counts[u] else 0.0 for u in users}
    return Reranker(tail, target, k, cfg.rerank_pool, cfg.rerank_weight)
