"""Ranking models; :func:`build_model` builds the one named by ``model.name`` through :mod:`fedsim.registry`."""

from __future__ import annotations

from fedsim.config import ModelConfig
from fedsim.models.base import RankingModel
from fedsim.registry import resolve


def build_model(cfg: ModelConfig, n_items: int) -> RankingModel:
    return resolve("model", cfg.name).from_config(cfg, n_items)


__all__ = ["RankingModel", "build_model"]
