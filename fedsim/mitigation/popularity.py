"""Item popularity as the devices can know it: from the shared model they received, not from anyone's counts.

A device cannot count what other users interacted with. The shared model already encodes it: the score of an item
for a user with no taste (a zero user embedding) is the model's non-personalised preference — for MF, the item bias
``b_i``, which the implicit-feedback loss drives up for items that are often positives. Reading it is post-processing
of the release, so it is covered by whatever guarantee the release has. The *measured* long-tail share
(:mod:`fedsim.ethics.exposure`) uses the true training counts; how well this proxy tracks them is part of what the
experiment in ``experiments/fairness_mitigation`` measures.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.models.base import RankingModel


def popularity_proxy(model: RankingModel, shared: dict[str, np.ndarray]) -> np.ndarray:
    """(n_items,) non-personalised score of every item under ``shared`` (zero user embedding)."""
    with torch.no_grad():
        return model.score_all(torch.zeros(1, model.private_dim), shared)[0].double().numpy()


def short_head(popularity: np.ndarray, share: float = 0.2) -> np.ndarray:
    """Boolean mask of the ``share`` most popular items (ties broken by item id; Abdollahpouri et al. 2019)."""
    order = np.lexsort((np.arange(len(popularity)), -np.asarray(popularity)))
    head = np.zeros(len(popularity), dtype=bool)
    head[order[: int(np.ceil(share * len(popularity)))]] = True
    return head
