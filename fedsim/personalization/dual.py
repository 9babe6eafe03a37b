"""``dual`` — PFedRec-style dual personalization (Zhang et al., IJCAI 2023, "Dual Personalization on Federated
Recommendation", Alg. 1).

Each device has two personal parts: a **score function** and an **item embedding fine-tuned from the global one**.
PFedRec's score function is a linear layer over the item embedding, kept on the device and never aggregated; for
``model=mf`` that layer *is* the private user vector (score = ⟨θ_u, q_i⟩ + b_i), kept in ``context.state``. A round
on the device follows the paper's order:

1. update the score function with the received item table frozen (``personalization.score_epochs`` epochs);
2. update the item rows on the local data (the usual local training; here the score function moves jointly, since
   the one local trainer has no frozen-user mode) — the change to the shared rows is the upload, as for every method;
3. keep this round's item change ``δ_u`` (before clipping and noise) as the device's personal offset.

The device ranks with θ_u against its own item table ``w + s·δ_u`` — the newest global table plus its own fine-tuning
(:mod:`.offsets`), amplified by ``personalization.offset_scale`` = s (default 1). Why a scale: one device's local SGD
moves a row far less than the server step does (the server multiplies the mean update by ``strategy.server_lr``), so
an un-amplified offset is a tiny perturbation of the shared row; PFedRec likewise gives the item embedding its own,
larger learning rate. ``δ_u`` is replaced at each round the device trains. Only the shared update is uploaded.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.personalization.base import Personalization
from fedsim.personalization.offsets import as_offsets, offsets_of, score_with_offsets
from fedsim.runtime import Runtime
from fedsim.training.local import train_users
from fedsim.updates import LocalResult


class Dual(Personalization):
    name = "dual"
    reports_lift = True

    def init_state(self, rt: Runtime, users: np.ndarray) -> np.ndarray:
        return np.zeros((len(users), rt.model.n_items * rt.model.item_width), dtype=np.float32)

    def train_start(
        self, rt: Runtime, users: np.ndarray, private: np.ndarray, shared: dict[str, np.ndarray], server_round: int
    ) -> np.ndarray:
        """Step 1: fit the score function to the received item table, which stays frozen."""
        has_data = np.flatnonzero(rt.split.n_train()[users] > 0)
        if self.cfg.score_epochs == 0 or len(has_data) == 0:
            return private
        epochs = self.cfg.score_epochs
        samples = [rt.samples(int(u), server_round, epochs=epochs, mitigate=False) for u in users[has_data]]
        fitted = train_users(rt.model, shared, private[has_data], samples, rt.training_params(train_shared=False))
        out = np.array(private, copy=True)
        out[has_data] = fitted.private.numpy()
        return out

    def after_training(
        self,
        rt: Runtime,
        users: np.ndarray,
        result: LocalResult,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray,
    ) -> None:
        """Step 3: keep this round's fine-tuning of the item rows (un-clipped, un-noised: it never leaves)."""
        personal[:] = offsets_of(result, rt.model.n_items, rt.model.item_width).flatten(1).numpy()

    def scores(
        self,
        rt: Runtime,
        users: np.ndarray,
        private: np.ndarray,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray | None = None,
    ) -> torch.Tensor:
        if personal is None:
            return super().scores(rt, users, private, shared, server_round)
        offsets = as_offsets(personal, rt.model) * self.cfg.offset_scale
        return score_with_offsets(rt.model, torch.as_tensor(private), shared, offsets)

    def describe(self) -> str:
        return (
            f"dual (PFedRec, Zhang et al. 2023; {self.cfg.score_epochs} score-function epoch(s) per round, offset "
            f"scale {self.cfg.offset_scale:g}): released: "
            "only the shared update, exactly as private_embedding; on the device: the personal score function (the "
            "user vector) and the personal item offset (this round's un-clipped fine-tuning of the item rows), both "
            "kept across rounds in context.state and never uploaded"
        )
