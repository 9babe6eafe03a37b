"""What a ranking model is to fedsim, and which of its parameters leave the device.

A model is written *functionally*: its parameters are plain tensors handed to :meth:`RankingModel.score`, with a
leading "user" dimension. That one choice lets the same model code run

* vectorised local training of many users at once (each user has its own copy of the rows it touches),
* on-device evaluation (one row per user against all items), and
* centralized training on pooled data.

Parameters come in three kinds:

* **item tables** (shared): per-item rows, concatenated column-wise into one item matrix so a user's local copy is
  one gather; a device only touches the rows of items it trained on;
* **dense** (shared): everything else that is released to the server (e.g. NeuMF's MLP);
* **private**: the user's own embedding. It is created on the device and stays there (in Flower's
  ``context.state``); no code path puts it into a message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np
import torch


class RankingModel(ABC):
    """Base class: subclasses declare their item tables and dense shapes and implement :meth:`score`.

    Parameters
    ----------
    n_items : int
        Catalogue size.
    init_std : float
        Standard deviation of the normal initialisation of embeddings.
    """

    name: str = "base"

    def __init__(self, n_items: int, init_std: float = 0.1) -> None:
        self.n_items = n_items
        self.init_std = init_std

    # --- structure -------------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def item_tables(self) -> dict[str, int]:
        """Name -> width of every per-item table, in the column order of the packed item matrix."""

    @property
    @abstractmethod
    def dense_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every shared parameter that is not indexed by item."""

    @property
    @abstractmethod
    def private_dim(self) -> int:
        """Width of the private user embedding."""

    @property
    def item_width(self) -> int:
        return sum(self.item_tables.values())

    @property
    def shared_names(self) -> list[str]:
        return list(self.item_tables) + list(self.dense_shapes)

    # --- parameters ------------------------------------------------------------------------------------------------
    def init_shared(self, seed: int) -> dict[str, np.ndarray]:
        """Initial shared parameters (float32 numpy arrays keyed by name), deterministic in ``seed``."""
        rng = np.random.default_rng([seed, 1])
        shared = {}
        for name, width in self.item_tables.items():
            std = 0.0 if name.endswith("bias") else self.init_std
            shared[name] = rng.normal(0.0, std, size=(self.n_items, width)).astype(np.float32)
        for name, shape in self.dense_shapes.items():
            if name.endswith("bias"):
                shared[name] = np.zeros(shape, dtype=np.float32)
            else:  # Glorot-uniform for weight matrices stored as (in, out)
                limit = np.sqrt(6.0 / (shape[0] + shape[-1]))
                shared[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        return shared

    def init_private(self, users: np.ndarray, seed: int) -> np.ndarray:
        """Initial private embeddings for ``users``; seeded by user id so a user's start does not depend on sharding."""
        out = np.empty((len(users), self.private_dim), dtype=np.float32)
        for row, user in enumerate(np.asarray(users).tolist()):
            out[row] = np.random.default_rng([seed, 2, user]).normal(0.0, self.init_std, self.private_dim)
        return out

    def pack_items(self, shared: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Concatenate the item tables into one (n_items, item_width) matrix."""
        return torch.cat([torch.as_tensor(shared[name]) for name in self.item_tables], dim=1)

    def unpack_items(self, matrix: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, width in self.item_tables.items():
            out[name] = matrix[:, start : start + width]
            start += width
        return out

    # --- scoring ---------------------------------------------------------------------------------------------------
    @abstractmethod
    def score(self, user: torch.Tensor, items: torch.Tensor, dense: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of shape (U, B).

        Parameters
        ----------
        user : Tensor (U, private_dim)
            Private embeddings.
        items : Tensor (U, B, item_width)
            Packed item rows to score for each user.
        dense : dict of Tensor (U or 1, *shape)
            Dense shared parameters with a leading user dimension (1 = shared by all rows).
        """

    #: whether :meth:`score_backward` is implemented; else local training differentiates :meth:`score` by autograd
    closed_form_gradients: bool = False

    def score_backward(
        self, user: torch.Tensor, items: torch.Tensor, dense: dict[str, torch.Tensor], grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The gradients of Σ grad·score(user, items, dense) w.r.t. (user, items, dense), in closed form — what
        autograd would give, without its graph (:func:`fedsim.training.local.train_users`'s fast path)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form score gradient")

    def score_all(self, user: torch.Tensor, shared: dict[str, np.ndarray], chunk: int = 256) -> torch.Tensor:
        """Scores of every item for each user (U, n_items): what a device ranks to recommend or evaluate."""
        items = self.pack_items(shared).float()
        dense = {k: torch.as_tensor(shared[k]).unsqueeze(0) for k in self.dense_shapes}
        rows = []
        with torch.no_grad():
            for start in range(0, len(user), chunk):
                u = user[start : start + chunk]
                rows.append(self.score(u, items.unsqueeze(0).expand(len(u), -1, -1), dense))
        return torch.cat(rows) if rows else torch.zeros(0, self.n_items)
