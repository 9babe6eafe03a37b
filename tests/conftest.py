"""Shared fixtures: tiny runs composed from the real ``conf/`` (what ``fedsim`` runs), the ML-100K path (tests skip
cleanly without it), Flower identities."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity

from fedsim.cli import compose
from fedsim.config import DatasetConfig, FedsimConfig, data_path

# One intra-op thread: the runs here are tiny, and on a shared 2-core machine torch's thread pool spin-waits against
# other processes (measured 30× slower under load). Ray workers set their own (OMP_NUM_THREADS per node).
torch.set_num_threads(1)

# where fedsim's CLI looks by default: $FEDSIM_DATA/ml-100k, else ../shared/data/ml-100k (a relative path is read
# from the repository root here, so pytest finds it from any folder)
ML100K = Path(__file__).resolve().parents[1] / data_path("ml-100k")

TINY = (
    "name=test",
    "progress=false",
    "dataset.n_users=40",
    "dataset.n_items=120",
    "dataset.max_interactions=40",
    "model.dim=8",
    "federation.rounds=3",
    "federation.backend=inprocess",
    "evaluation.every=1",
    "evaluation.n_negatives=49",
)


# the first synthetic generator: for tests whose thresholds or groups (``group`` A/B) were set on its data
V1 = "dataset=synthetic_v1"


def v1_dataset() -> DatasetConfig:
    """The ``dataset=synthetic_v1`` settings (the first generator's, whose numbers the older tests were written
    against), for tests that call :func:`fedsim.data.synthetic.generate_synthetic` directly."""
    return compose([V1]).dataset


def tiny_config(*overrides: str, **federation: object) -> FedsimConfig:
    """``fedsim`` with the real conf/ defaults on a run that finishes in seconds: 40 users, 120 items, 3 rounds,
    evaluated every round. ``overrides`` are Hydra overrides; keyword arguments set ``federation.<key>``. With another
    dataset than the synthetic one, the generator's sizes are left out (a key the run does not read is refused)."""
    extra = [f"federation.{key}={value}" for key, value in federation.items()]
    other_data = any(o.startswith("dataset=") and o != "dataset=synthetic" for o in overrides)
    centralized = "mode=centralized" in overrides  # pooled training: no backend
    base = [o for o in TINY if not (other_data and o.startswith("dataset.") or centralized and "backend" in o)]
    return compose([*base, *overrides, *extra])


@pytest.fixture
def tiny_cfg() -> FedsimConfig:
    return tiny_config()


@pytest.fixture
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not found at {ML100K} (set FEDSIM_DATA to the folder that holds ml-100k/)")
    return ML100K


@pytest.fixture
def flower_identity() -> None:
    """Flower refuses to build a Message outside a run unless these are set (as they are inside a ClientApp)."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 0
