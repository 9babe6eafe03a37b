"""Ranking models and the registry that builds them from ``model/`` config."""

from __future__ import annotations

from fedsim.config import ModelConfig
from fedsim.models.base import RankingModel
from fedsim.models.mf import MatrixFactorization
from fedsim.models.neumf import NeuMF

MODEL_REGISTRY: dict[str, type[RankingModel]] = {"mf": MatrixFactorization, "neumf": NeuMF}


def build_model(cfg: ModelConfig, n_items: int) -> RankingModel:
    if cfg.name not in MODEL_REGISTRY:
        raise ValueError(f"model.name={cfg.name!r} is not allowed; choose one of: {', '.join(MODEL_REGISTRY)}")
    if cfg.name == "neumf":
        return NeuMF(n_items, dim=cfg.dim, mlp_layers=list(cfg.mlp_layers), init_std=cfg.init_std)
    return MatrixFactorization(n_items, dim=cfg.dim, init_std=cfg.init_std)


__all__ = ["MODEL_REGISTRY", "MatrixFactorization", "NeuMF", "RankingModel", "build_model"]
