"""Matrix factorisation / GMF: score(u, i) = <p_u, q_i> + b_i.

The classic federated-recommendation model (Ammad-ud-din et al. 2019, "Federated Collaborative Filtering"): the item
table ``q`` and item bias ``b`` are shared; the user vector ``p_u`` never leaves the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.config import ModelConfig
from fedsim.models.base import RankingModel


class MatrixFactorization(RankingModel):
    name = "mf"

    def __init__(self, n_items: int, dim: int = 32, init_std: float = 0.1) -> None:
        super().__init__(n_items, init_std)
        self.dim = dim

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_items: int) -> MatrixFactorization:
        return cls(n_items, dim=cfg.dim, init_std=cfg.init_std)

    @property
    def item_tables(self) -> dict[str, int]:
        return {"item_embedding": self.dim, "item_bias": 1}

    @property
    def dense_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    @property
    def private_dim(self) -> int:
        return self.dim

    def score(self, user: torch.Tensor, items: torch.Tensor, dense: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.einsum("ud,ubd->ub", user, items[..., : self.dim]) + items[..., self.dim]

    closed_form_gradients = True

    def score_backward(
        self, user: torch.Tensor, items: torch.Tensor, dense: dict[str, torch.Tensor], grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """∂/∂p_u = Σ_b g_b q_b; ∂/∂(q_b, b_b) = g_b (p_u, 1)."""
        grad_user = torch.einsum("ub,ubd->ud", grad, items[..., : self.dim])
        grad_items = grad.unsqueeze(-1) * F.pad(user, (0, 1), value=1.0).unsqueeze(1)
        return grad_user, grad_items, {}
