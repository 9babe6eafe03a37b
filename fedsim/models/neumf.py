"""NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017): a GMF branch and an MLP tower, fused by a linear
output layer.

Shared: item GMF and MLP embeddings (item tables), the MLP weights and the output layer (dense). Private: the user's
GMF and MLP embeddings, concatenated into one vector of width ``dim + mlp_layers[0] // 2``.
"""

from __future__ import annotations

import torch

from fedsim.config import ModelConfig
from fedsim.models.base import RankingModel


class NeuMF(RankingModel):
    name = "neumf"

    def __init__(self, n_items: int, dim: int = 32, mlp_layers: list[int] | None = None, init_std: float = 0.1) -> None:
        super().__init__(n_items, init_std)
        self.dim = dim
        self.mlp_layers = list(mlp_layers or [64, 32, 16])
        self.mlp_dim = self.mlp_layers[0] // 2

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_items: int) -> NeuMF:
        return cls(n_items, dim=cfg.dim, mlp_layers=list(cfg.mlp_layers), init_std=cfg.init_std)

    @property
    def item_tables(self) -> dict[str, int]:
        return {"item_gmf": self.dim, "item_mlp": self.mlp_dim}

    @property
    def dense_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.mlp_layers[:-1], self.mlp_layers[1:], strict=True)):
            shapes[f"mlp{i}_weight"] = (fan_in, fan_out)
            shapes[f"mlp{i}_bias"] = (fan_out,)
        shapes["out_weight"] = (self.dim + self.mlp_layers[-1], 1)
        shapes["out_bias"] = (1,)
        return shapes

    @property
    def private_dim(self) -> int:
        return self.dim + self.mlp_dim

    def score(self, user: torch.Tensor, items: torch.Tensor, dense: dict[str, torch.Tensor]) -> torch.Tensor:
        n_users, n_rows = items.shape[0], items.shape[1]
        gmf = user[:, None, : self.dim] * items[..., : self.dim]
        hidden = torch.cat(
            [user[:, None, self.dim :].expand(n_users, n_rows, self.mlp_dim), items[..., self.dim :]], -1
        )
        for i in range(len(self.mlp_layers) - 1):
            hidden = torch.relu(torch.matmul(hidden, dense[f"mlp{i}_weight"]) + dense[f"mlp{i}_bias"].unsqueeze(1))
        fused = torch.cat([gmf, hidden], dim=-1)
        return (torch.matmul(fused, dense["out_weight"]) + dense["out_bias"].unsqueeze(1)).squeeze(-1)
