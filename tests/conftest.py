"""Shared fixtures: a tiny synthetic config, the ML-100K path (tests skip cleanly without it), Flower identities."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

from fedsim.config import DatasetConfig, FedsimConfig

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def tiny_config(**federation) -> FedsimConfig:
    """A run that finishes in seconds: 40 users, 120 items, 3 rounds, evaluated every round."""
    cfg = FedsimConfig(name="test", progress=False)
    cfg.dataset = DatasetConfig(n_users=40, n_items=120, max_interactions=40, min_interactions=5)
    cfg.model.dim = 8
    cfg.client.lr = 0.05
    cfg.client.optimizer = "adam"
    cfg.client.epochs = 2
    cfg.federation.rounds = 3
    cfg.federation.backend = "inprocess"
    cfg.evaluation.every = 1
    cfg.evaluation.n_negatives = 49
    for key, value in federation.items():
        setattr(cfg.federation, key, value)
    return cfg


@pytest.fixture
def tiny_cfg() -> FedsimConfig:
    return tiny_config()


@pytest.fixture
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not found at {ML100K}")
    return ML100K


@pytest.fixture
def flower_identity() -> None:
    """Flower refuses to build a Message outside a run unless these are set (as they are inside a ClientApp)."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 0
