"""``reconstruction`` — Federated Reconstruction (Singhal et al. 2021, "Federated Reconstruction: Partially Local
Federated Learning").

No user embedding survives a round: whenever a device trains or ranks, it first *reconstructs* its embedding from a
data-independent start, fitting it on its own data for ``personalization.reconstruction_epochs`` epochs with the
shared model frozen (as the membership attacker does, :func:`fedsim.ethics.risk.membership_losses`); training then
starts from that embedding and uploads only the shared update, and the embedding is discarded. So there is no
per-user state to keep, restore or leak from storage, and a user who never trained — a cold-start user, e.g. the
membership attack's hold-out — is served from its local data alone (``cold/test_hr@10``).

Simplifications against the paper: reconstruction and update use the same local stream (no support/query split),
and during the update the embedding keeps moving jointly with the shared rows (then is discarded). The re-fit uses
no DP-SGD, so the configuration refuses ``privacy=record`` (DP-SGD would start from a state shaped by the records).
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.personalization.base import MEASUREMENT_RELEASE, Personalization, fit_embeddings
from fedsim.runtime import Runtime


class Reconstruction(Personalization):
    name = "reconstruction"
    keeps_embedding = False
    serves_cold_start = True

    def reconstruct(
        self, rt: Runtime, users: np.ndarray, shared: dict[str, np.ndarray], server_round: int
    ) -> np.ndarray:
        """Fit each user's embedding from its seeded, data-independent start with the shared model frozen."""
        start = rt.model.init_private(users, rt.cfg.seed)
        has_data = np.flatnonzero(rt.split.n_train()[users] > 0)
        return fit_embeddings(rt, users, start, shared, server_round, has_data, self.cfg.reconstruction_epochs)

    def train_start(
        self, rt: Runtime, users: np.ndarray, private: np.ndarray, shared: dict[str, np.ndarray], server_round: int
    ) -> np.ndarray:
        return self.reconstruct(rt, users, shared, server_round)

    def scores(
        self,
        rt: Runtime,
        users: np.ndarray,
        private: np.ndarray,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray | None = None,
    ) -> torch.Tensor:
        return rt.model.score_all(torch.as_tensor(self.reconstruct(rt, users, shared, server_round)), shared)

    def describe(self) -> str:
        return (
            f"reconstruction (FedRecon, Singhal et al. 2021; {self.cfg.reconstruction_epochs} reconstruction "
            "epoch(s)): released: only the shared update; on the device: the raw interactions only — the user "
            "embedding is re-fitted from scratch (shared model frozen) whenever the device trains or ranks and is "
            "never stored, so users who never trained (cold start) are served too"
            + MEASUREMENT_RELEASE
            + " and the cold-start users' test hits (cold/*)"
        )
