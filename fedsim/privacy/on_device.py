"""ε = 0: personalisation on the device only, against a shared model that never saw private data.

Each participating device fits only its private user embedding against the shared item tables as they were
initialised (seeded, data-independent); the shared parameters are frozen on the device (round config
``"train-shared": False``), the upload is a zero update with no training statistics, and the server releases
nothing: its mean update is zero, so the model never changes. Nothing that depends on a user's data leaves the
device except the evaluation metrics every run reports and the simulated attacks' scores (both listed as not
covered), so the shared model is exactly 0-DP. This is the floor of the privacy frontier: what personalisation
alone buys without any collaboration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsim.privacy.mechanism import Aggregate, NoPrivacy


class OnDevice(NoPrivacy):
    """Nothing is released: devices train only their private embedding; the server keeps the initial model."""

    name = "on_device"
    unit = "user"

    def __init__(self) -> None:
        super().__init__("uniform")

    @classmethod
    def from_config(cls, cfg: Any, population: int) -> OnDevice:
        return cls()

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {"user-weighting": "uniform", "train-shared": False}

    def mean_update(self, aggregate: Aggregate, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict]:
        """A zero update whatever the uploads hold: the server releases nothing and the model stays as it was."""
        mean = {"__items__": torch.zeros_like(aggregate.item_sum)}
        mean.update({k: torch.zeros_like(v) for k, v in aggregate.dense_sum.items()})
        return mean, {}

    def after_release(self, server_round: int, participants: np.ndarray) -> dict[str, float]:
        return {"privacy/epsilon": 0.0, "privacy/delta": 0.0}

    def max_advantage_bound(self) -> float:
        return 0.0

    def threat_model(self) -> dict[str, Any]:
        return {
            "mechanism": "on-device personalisation only (nothing released)",
            "unit": "user (all of a user's interactions)",
            "trusted": "nobody: devices upload a zero update and no training statistics",
            "covers": "the shared model, which is the data-independent initial model in every round",
            "not_covered": "participation, the evaluation metrics the devices report, and the simulated attacks' "
            "scores that the devices compute and send to the server: the item-set attack's attack-* AUC, TPR and "
            "precision on the device's own upload against its user's items, and the membership attack's per-user "
            "loss (mia-loss) — the last two exist only to measure the simulation; a real device would not send them",
            "guarantee": "ε = 0 exactly for the shared model (it never depends on any user's data)",
            "short": "on-device only, ε = 0 (the shared model is never updated)",
        }
