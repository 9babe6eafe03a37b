"""The update containers that travel between training, privacy and aggregation.

Training (:mod:`fedsim.training`) produces a :class:`LocalResult` per node and round (each user's change to the shared
parameters, in padded :class:`UpdateChunk` form); the device-side privacy step clips and noises it in place; the
node uploads a weighted sum; the server sums the uploads into an :class:`Aggregate`. Keeping these types in one
leaf module lets training, privacy, client and server all use them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class UpdateChunk:
    """The updates of a chunk of users, in padded form.

    ``positions`` index into the ``users`` array given to :func:`train_users`; ``items`` (U, M) holds the item id of
    each local row (-1 = padding); ``item_delta`` (U, M, W) and ``dense_delta`` (U, *shape) are the changes each
    user made to the shared parameters (zero on padding rows).
    """

    positions: np.ndarray
    items: torch.Tensor
    item_delta: torch.Tensor
    dense_delta: dict[str, torch.Tensor]

    def squared_norms(self) -> torch.Tensor:
        total = self.item_delta.pow(2).sum(dim=(1, 2))
        for value in self.dense_delta.values():
            total = total + value.pow(2).flatten(1).sum(1)
        return total

    def scale_(self, factors: torch.Tensor) -> None:
        self.item_delta.mul_(factors.view(-1, 1, 1))
        for name, value in self.dense_delta.items():
            self.dense_delta[name] = value * factors.view(-1, *([1] * (value.dim() - 1)))


@dataclass
class LocalResult:
    """What local training returns for the users given to :func:`train_users` (in that order)."""

    users: np.ndarray
    private: torch.Tensor
    loss: np.ndarray
    n_samples: np.ndarray
    chunks: list[UpdateChunk] = field(default_factory=list)

    def update_norms(self) -> np.ndarray:
        """L2 norm of each user's whole update to the shared parameters (item rows and dense)."""
        norms = np.zeros(len(self.users))
        for chunk in self.chunks:
            norms[chunk.positions] = chunk.squared_norms().sqrt().numpy()
        return norms

    def scale_updates_(self, factors: np.ndarray) -> None:
        for chunk in self.chunks:
            chunk.scale_(torch.as_tensor(factors[chunk.positions], dtype=chunk.item_delta.dtype))

    def weighted_sum(
        self, weights: np.ndarray, n_items: int, item_width: int, dense_shapes: dict[str, tuple[int, ...]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Σ_u w_u Δ_u as a dense item matrix (n_items, W) and dense tensors."""
        item_sum = torch.zeros(n_items, item_width, dtype=torch.float64)
        dense_sum = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in dense_shapes.items()}
        for chunk in self.chunks:
            w = torch.as_tensor(weights[chunk.positions], dtype=torch.float64)
            rows = torch.nonzero(chunk.items.view(-1) >= 0).squeeze(1)  # the valid rows (index_select: 2× a mask)
            delta = chunk.item_delta.reshape(-1, chunk.item_delta.shape[-1]).index_select(0, rows).double()
            if not bool((w == 1).all()):  # uniform weighting (the default): ×1 is exact, skip the pass
                delta.mul_(w[rows // chunk.items.shape[1]].unsqueeze(1))
            item_sum.index_add_(0, chunk.items.view(-1)[rows], delta)
            for name, value in chunk.dense_delta.items():
                dense_sum[name] += torch.tensordot(w, value.double(), dims=1)
        return item_sum, dense_sum

    def item_row_norms(self, n_items: int, positions: np.ndarray | None = None) -> torch.Tensor:
        """(U, n_items) L2 norm of each user's update to each item row: what a curious server sees per upload.

        ``positions``: only these users' rows, in that order (the item-set attack reads a few users per node: the
        norms of the whole shard's padded updates were most of its cost)."""
        wanted = np.arange(len(self.users)) if positions is None else np.asarray(positions, dtype=np.int64)
        out = torch.zeros(len(wanted), n_items)
        row_of = np.full(len(self.users), -1)
        row_of[wanted] = np.arange(len(wanted))
        for chunk in self.chunks:
            rows = row_of[chunk.positions]
            hit = torch.as_tensor(np.flatnonzero(rows >= 0))
            if len(hit) == 0:
                continue
            items = chunk.items[hit]
            valid = items >= 0
            norms = chunk.item_delta[hit].norm(dim=2)
            out_row = torch.as_tensor(rows[hit.numpy()]).view(-1, 1).expand_as(items)
            out[out_row[valid], items[valid]] = norms[valid]
        return out


@dataclass
class Aggregate:
    """The sum of all uploads of a round, as the server receives it."""

    item_sum: torch.Tensor
    dense_sum: dict[str, torch.Tensor]
    total_weight: float
    n_users: int
    metrics: dict[str, float] = field(default_factory=dict)
