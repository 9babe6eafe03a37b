"""The seam every personalization method plugs into (the reference behaviour is :mod:`.private_embedding`).

A device's round is: pick the user embedding to start from (:meth:`Personalization.train_start`) → train as today
(:func:`fedsim.training.local.train_users`, the one local objective) → privacy step → upload the shared update; keep
the new embedding in ``context.state`` only if :attr:`Personalization.keeps_embedding`. At evaluation the device ranks
all items with :meth:`Personalization.scores`. No hook can add anything to a message: the upload is built by the
client from the shared update alone.

Methods that keep more than the user embedding (``dual``: a fine-tuned item offset; ``ditto``: a whole personal
model) declare it with :meth:`Personalization.init_state`: one float32 row per user that the node keeps in
``context.state`` beside the embeddings and hands to :meth:`Personalization.after_training` (right after local
training, before the privacy step) and to :meth:`Personalization.scores`. It never enters a message.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.config import PersonalizationConfig
from fedsim.data.roles import HOLDOUT
from fedsim.metrics.evaluate import evaluate_scores
from fedsim.runtime import Runtime
from fedsim.training.local import train_users
from fedsim.updates import LocalResult

# What every evaluation reply carries besides the shared update (so each describe() names all that is released)
MEASUREMENT_RELEASE = (
    "; plus measurement replies, outside ε: per measured user its hits and top-K list of the ranking it is served"
)
SHARED_HIT_RELEASE = " and the shared model's test hit (lift/*)"


def fit_embeddings(
    rt: Runtime,
    users: np.ndarray,
    start: np.ndarray,
    shared: dict[str, np.ndarray],
    server_round: int,
    rows: np.ndarray,
    epochs: int | None = None,
) -> np.ndarray:
    """A copy of ``start`` (the embeddings of ``users``) whose ``rows`` are fitted on their own users' data with the
    shared model frozen (``epochs`` local epochs; default ``client.epochs``). The one device-side fit of an embedding
    alone: PFedRec's score step, FedRecon's reconstruction, and users who declined contributing all use it."""
    out = np.array(start, copy=True)
    if len(rows):
        samples = [rt.samples(int(u), server_round, epochs=epochs, mitigate=False) for u in users[rows]]
        fitted = train_users(rt.model, shared, start[rows], samples, rt.training_params(train_shared=False))
        out[rows] = fitted.private.numpy()
    return out


class Personalization:
    """Base class; its defaults are today's behaviour (a private user embedding kept on the device)."""

    name = "base"
    keeps_embedding = True  # the device stores its user embedding in context.state between rounds
    serves_cold_start = False  # users who never trained (attack hold-out) can be served a personalised ranking
    reports_lift = False  # ranks with personal parts: the devices also report the shared model's hits (lift/*)

    def __init__(self, cfg: PersonalizationConfig) -> None:
        self.cfg = cfg

    def train_start(
        self, rt: Runtime, users: np.ndarray, private: np.ndarray, shared: dict[str, np.ndarray], server_round: int
    ) -> np.ndarray:
        """The user embeddings local training starts from (default: the ones the device kept)."""
        return private

    def init_state(self, rt: Runtime, users: np.ndarray) -> np.ndarray | None:
        """The personal state (one row per user) a device keeps besides its embedding; None (default): nothing."""
        return None

    def after_training(
        self,
        rt: Runtime,
        users: np.ndarray,
        result: LocalResult,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray,
    ) -> None:
        """Update ``personal`` (the rows of ``users``) in place from this round's local training ``result`` (before
        the privacy step touches it) and the received ``shared`` model. Default: nothing."""

    def scores(
        self,
        rt: Runtime,
        users: np.ndarray,
        private: np.ndarray,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray | None = None,
    ) -> torch.Tensor:
        """(U, n_items) scores the devices of ``users`` rank with (default: kept embedding × shared item table)."""
        return rt.model.score_all(torch.as_tensor(private), shared)

    def describe(self) -> str:
        """What is released and what stays on the device (shown in summary.json under ``personalization``)."""
        raise NotImplementedError

    def record_dp_uncovered(self) -> str | None:
        """Under ``privacy=record``, the personal part this method fits on the records WITHOUT DP-SGD (so the
        record-level guarantee does not cover it; the threat model says so); None: everything it keeps is covered."""
        return None

    def cold_start_extras(
        self, rt: Runtime, users: np.ndarray, shared: dict[str, np.ndarray], server_round: int
    ) -> dict[str, np.ndarray]:
        """Per-user test HR@K of the shard's hold-out users (never trained, consenting to measurement), served by
        this method from their local data alone — only for methods that can (:attr:`serves_cold_start`)."""
        if not self.serves_cold_start:
            return {}
        cold = users[(rt.roles[users] == HOLDOUT) & rt.measured[users] & (rt.split.n_train()[users] > 0)]
        cold = cold[rt.split.evaluated[cold]]
        if len(cold) == 0:
            return {}
        start = rt.model.init_private(cold, rt.cfg.seed)
        metrics = evaluate_scores(
            self.scores(rt, cold, start, shared, server_round), cold, rt.split, rt.cfg.evaluation.k
        )
        return {"cold-users": metrics.users, "cold-test-hr": metrics.values["test_hr"]}
