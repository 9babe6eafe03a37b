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
            valid = chunk.items >= 0
            weight_of_row = w.view(-1, 1).expand(valid.shape)[valid].unsqueeze(1)
            item_sum.index_add_(0, chunk.items[valid], chunk.item_delta[valid].double() * weight_of_row)
            for name, value in chunk.dense_delta.items():
                dense_sum[name] += torch.tensordot(w, value.double(), dims=1)
        return item_sum, dense_sum

    def item_row_norms(self, n_items: int) -> torch.Tensor:
        """(U, n_items) L2 norm of each user's update to each item row: what a curious server sees per upload."""
        out = torch.zeros(len(self.users), n_items)
        for chunk in self.chunks:
            valid = chunk.items >= 0
            norms = chunk.item_delta.norm(dim=2)
            user_pos = torch.as_tensor(chunk.positions).view(-1, 1).expand_as(chunk.items)
            out[user_pos[valid], chunk.items[valid]] = norms[valid]
        return out


@dataclass
class Aggregate:
    """The sum of all uploads of a round, as the server receives it."""

    item_sum: torch.Tensor
    dense_sum: dict[str, torch.Tensor]
    total_weight: float
    n_users: int
    metrics: dict[str, float] = field(default_factory=dict)
