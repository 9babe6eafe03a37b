"""``local_finetune`` — rank with a private, locally fine-tuned copy of the item rows the device uses.

The "FedAvg + local fine-tuning" baseline of personalised FL (e.g. Wang et al. 2019, "Federated Evaluation of
On-device Personalization"): training and uploads are exactly :mod:`.private_embedding`'s; only at evaluation does
each device fine-tune, for ``personalization.finetune_steps`` local epochs starting from the shared model and its
kept embedding, a private copy of the rows it touches (its training items and their sampled negatives) together
with a copy of its user embedding. It ranks those items with its fine-tuned rows and every other item with the shared
table. The fine-tuned copies are thrown away after ranking: nothing of them is uploaded or kept.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.personalization.base import MEASUREMENT_RELEASE, SHARED_HIT_RELEASE, Personalization
from fedsim.runtime import Runtime
from fedsim.training.local import train_users


class LocalFinetune(Personalization):
    name = "local_finetune"
    reports_lift = True

    def scores(
        self,
        rt: Runtime,
        users: np.ndarray,
        private: np.ndarray,
        shared: dict[str, np.ndarray],
        server_round: int,
        personal: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Shared-table scores with the fine-tuned embedding, then each user's own rows re-scored with its copy."""
        trained = np.flatnonzero(rt.split.n_train()[users] > 0)
        if len(trained) == 0:
            return super().scores(rt, users, private, shared, server_round)
        samples = [
            rt.samples(int(u), server_round, epochs=self.cfg.finetune_steps, mitigate=False) for u in users[trained]
        ]
        tuned = train_users(rt.model, shared, private[trained], samples, rt.training_params())
        user = torch.as_tensor(private, dtype=torch.float32).clone()
        user[torch.as_tensor(trained)] = tuned.private
        scores = rt.model.score_all(user, shared)
        item_matrix = rt.model.pack_items(shared).float()
        dense = {k: torch.as_tensor(shared[k]).float().unsqueeze(0) for k in rt.model.dense_shapes}
        with torch.no_grad():
            for chunk in tuned.chunks:  # each user's personal rows = shared rows + its fine-tuning delta
                rows = item_matrix[chunk.items.clamp(min=0)] + chunk.item_delta
                row_of_user = torch.as_tensor(trained[chunk.positions])
                local = rt.model.score(user[row_of_user], rows, dense)
                valid = chunk.items >= 0
                scores[row_of_user.view(-1, 1).expand_as(chunk.items)[valid], chunk.items[valid]] = local[valid]
        return scores

    def describe(self) -> str:
        return (
            f"local_finetune ({self.cfg.finetune_steps} local epoch(s) at evaluation; Wang et al. 2019): released: "
            "only the shared update, exactly as private_embedding; on the device: the user embedding and, only while "
            "ranking, a fine-tuned copy of the item rows it uses (never uploaded, never kept)"
            + MEASUREMENT_RELEASE
            + SHARED_HIT_RELEASE
        )

    def record_dp_uncovered(self) -> str | None:
        return "local_finetune's fine-tuned copy it ranks with (fitted on the records without DP-SGD at evaluation)"
