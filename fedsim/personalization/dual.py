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

Deviations from the public code (github.com/Zhangcx19/IJCAI-23-PFedRec, ``engine.py``), so results here are
"PFedRec-style", not a reproduction of its numbers:

a. **Training order.** The reference alternates, within *every mini-batch*, one SGD step of the score function (its
   own optimizer) and one step of the item embedding (a second optimizer; the score function held fixed). Here the
   score function gets ``score_epochs`` whole epochs first (items frozen), then the usual ``client.epochs`` epochs
   update user vector and item rows *jointly*.
b. **Item learning rate.** The reference's item optimizer uses ``lr · num_items · lr_eta`` — far larger than the
   score function's ``lr`` — for the table it uploads *and* keeps. Here the item rows train at ``client.lr`` like
   every method (the upload is the reference method's), and only the *ranking* offset is amplified
   (``offset_scale``); the server step is FedAvg with ``strategy.server_lr``, not the reference's plain mean of the
   tables. This is one likely reason the paper's gain is not reproduced.
c. **Compute.** A round costs ``score_epochs + client.epochs`` local epochs over the data, against ``client.epochs``
   for the reference method. So a gain over ``private_embedding`` at equal ``client.epochs`` mixes PFedRec's order
   with more user-vector training; ``experiments/personalization/README.md`` reports the compute-matched control
   (``private_embedding`` with ``client.epochs`` + ``score_epochs`` epochs).
d. **Ranking table.** The reference ranks with the item table the device kept after its last round; here with the
   newest global table plus this device's last fine-tuning (``w^{t+1} + s·δ_u``).

Under ``privacy=record`` step 1 would fit the user vector on the records without DP-SGD, so the configuration
refuses ``dual`` with ``score_epochs > 0`` there (:func:`fedsim.config._personalization`).
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.personalization.base import MEASUREMENT_RELEASE, SHARED_HIT_RELEASE, Personalization, fit_embeddings
from fedsim.personalization.offsets import as_offsets, offsets_of, score_with_offsets
from fedsim.runtime import Runtime
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
        if self.cfg.score_epochs == 0:
            return private
        has_data = np.flatnonzero(rt.split.n_train()[users] > 0)
        return fit_embeddings(rt, users, private, shared, server_round, has_data, self.cfg.score_epochs)

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
            "kept across rounds in context.state and never uploaded" + MEASUREMENT_RELEASE + SHARED_HIT_RELEASE
        )
