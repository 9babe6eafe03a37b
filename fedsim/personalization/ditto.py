"""``ditto`` — Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through Personalization", Alg. 1):
a generic personalised-FL method, not specific to recommendation.

Each device trains two models per round. The **global** one exactly as :mod:`.private_embedding` does (the upload,
unchanged). The **personal** one, ``v_u = (p̃_u, w + δ_u)``, minimises the local loss plus ``λ/2‖v_u − w‖²`` —
``w`` being the received shared model and, for the user vector, the device's global-side embedding — for
``personalization.personal_epochs`` epochs of SGD (``client.lr``, ``client.batch_size``). The regulariser is applied
as its exact proximal step after each gradient step, ``x ← (x + ηλ·anchor) / (1 + ηλ)``, so any λ ≥ 0 is stable
and λ → ∞ gives back the global model. The device ranks with ``v_u``; it is kept in ``context.state``.

Deviations from the paper's Algorithm 1 (so results are "Ditto-style", not the paper's numbers):

* the regulariser is applied as its exact proximal step, not the paper's gradient step ``v ← v − η(∇F + λ(v − w))``:
  per step the distance to the anchor shrinks by ``1/(1+ηλ)`` instead of ``1 − ηλ`` (at λ = 1, η = 0.5: 0.667 kept
  instead of 0.5), so a given ``ditto_lambda`` is a *weaker* pull than the paper's λ of the same value;
* the user vector's anchor is the device's global-side embedding *after* this round's training, not ``w^t`` (the
  item part is anchored at the received table ``w^t``, as in the paper);
* the personal epochs replay the same seeded sample stream as the global update (``rt.samples`` for the round), not
  fresh samples;
* ``v_u`` is stored as its offset from the shared table (:mod:`.offsets`), so the item part of the personal model
  follows the newest shared table between rounds (``v ← w^{t+1} + δ``) instead of staying where the device left it;
* a user who declined contributing (``consent.decline_contribution``) never trains either model: it is served what
  :func:`fedsim.client.device.fit_local_only` fits (its kept embedding against the shared table), like every method.

Supports ``model=mf``; the personal step is plain SGD whatever ``client.optimizer`` the global update uses. Under
``privacy=record`` the global update is DP-SGD but the personal model is fitted on the same records without DP: the
threat model says the guarantee does not cover it (:meth:`Ditto.record_dp_uncovered`).
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.negatives import UserSamples
from fedsim.models.base import RankingModel
from fedsim.personalization.base import MEASUREMENT_RELEASE, SHARED_HIT_RELEASE, Personalization
from fedsim.personalization.offsets import as_offsets, score_with_offsets
from fedsim.runtime import Runtime
from fedsim.training.local import pack_streams, sample_objective
from fedsim.updates import LocalResult


def personal_sgd_(
    model: RankingModel,
    items: torch.Tensor,
    user: torch.Tensor,
    anchor: torch.Tensor,
    offsets: torch.Tensor,
    samples: list[UserSamples],
    lr: float,
    lam: float,
    batch_size: int,
    loss: str,
    l2: float,
) -> None:
    """SGD on every user's personal model at once (``user`` (U, P) and ``offsets`` (U, n_items, W), in place);
    ``items`` is the shared item matrix w, ``anchor`` the users' global-side embeddings."""
    if not samples:
        return
    first, second, label, valid = pack_streams(samples, np.arange(len(samples)))
    who = torch.arange(len(samples)).view(-1, 1)
    shrink = 1.0 / (1.0 + lr * lam)
    for begin in range(0, first.shape[1], batch_size):
        sl = slice(begin, begin + batch_size)
        mask, f, s = valid[:, sl], first[:, sl], second[:, sl]
        active = mask.any(dim=1)
        rows_f = (items[f] + offsets[who, f]).requires_grad_(True)
        rows_s = (items[s] + offsets[who, s]).requires_grad_(True) if loss == "bpr" else rows_f
        user_leaf = user.clone().requires_grad_(True)
        _, objective = sample_objective(model, user_leaf, rows_f, rows_s, {}, label[:, sl], loss, l2)
        ((objective * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum().backward()
        with torch.no_grad():
            users = who.expand_as(f)
            offsets.index_put_((users[mask], f[mask]), -lr * rows_f.grad[mask], accumulate=True)
            if loss == "bpr":
                offsets.index_put_((users[mask], s[mask]), -lr * rows_s.grad[mask], accumulate=True)
            user.sub_(lr * user_leaf.grad * active.view(-1, 1))
            # proximal step of λ/2‖v − w‖² for the users that stepped (offsets: toward 0; user: toward its anchor)
            factor = torch.where(active, torch.tensor(shrink), torch.tensor(1.0))
            offsets.mul_(factor.view(-1, 1, 1))
            user.copy_(anchor + (user - anchor) * factor.view(-1, 1))


class Ditto(Personalization):
    name = "ditto"
    reports_lift = True

    def init_state(self, rt: Runtime, users: np.ndarray) -> np.ndarray:
        """[p̃_u | δ_u]: the personal user vector (same start as the global-side one) and zero item offsets."""
        offsets = np.zeros((len(users), rt.model.n_items * rt.model.item_width), dtype=np.float32)
        return np.concatenate([rt.model.init_private(users, rt.cfg.seed), offsets], axis=1)

    def after_training(
        self,
        rt: Runtime,
        users: np.ndarray,
        result: LocalResult,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray,
    ) -> None:
        """The personal update: local loss + λ/2‖v − w‖², from the kept personal model, w = the received model."""
        p, dim = rt.training_params(), rt.model.private_dim
        user = torch.as_tensor(personal[:, :dim]).clone()
        offsets = as_offsets(personal, rt.model, dim).clone()
        epochs = self.cfg.personal_epochs
        samples = [rt.samples(int(u), server_round, epochs=epochs, mitigate=False) for u in users]
        items = rt.model.pack_items(shared).float()
        anchor = result.private.float()
        personal_sgd_(
            rt.model, items, user, anchor, offsets, samples, p.lr, self.cfg.ditto_lambda, p.batch_size, p.loss, p.l2
        )
        personal[:, :dim] = user.numpy()
        personal[:, dim:] = offsets.flatten(1).numpy()

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
        dim = rt.model.private_dim
        user, offsets = torch.as_tensor(personal[:, :dim]).clone(), as_offsets(personal, rt.model, dim).clone()
        # who declined contributing never trains a personal model (its row is still at init): serve the embedding it
        # fitted on the device (fit_local_only) against the shared table, not the untrained init vector
        never = torch.as_tensor(np.isin(users, rt.local_only))
        user[never], offsets[never] = torch.as_tensor(private, dtype=user.dtype)[never], 0.0
        return score_with_offsets(rt.model, user, shared, offsets)

    def describe(self) -> str:
        return (
            f"ditto (Li et al. 2021; λ = {self.cfg.ditto_lambda:g}, {self.cfg.personal_epochs} personal epoch(s) per "
            "round): released: only the shared update, exactly as private_embedding (the global model trains as "
            "usual); on the device: the user embedding and a personal model (its own user vector and item offsets, "
            "regularised toward the shared model), kept across rounds in context.state, never uploaded"
            + MEASUREMENT_RELEASE
            + SHARED_HIT_RELEASE
        )

    def record_dp_uncovered(self) -> str | None:
        return "ditto's personal model (user vector and item offsets), fitted on the same records without DP-SGD"
