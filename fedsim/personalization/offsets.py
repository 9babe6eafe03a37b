"""Per-user item offsets: a device's personal item table stored as its difference from the shared one.

``dual`` and ``ditto`` rank with personal item rows ``w + δ_u``; keeping ``δ_u`` (not ``w + δ_u``) means that at
each evaluation the device's rows follow the newest shared table and only its own deviation is personal. The offsets
are a dense (n_items × item_width) float32 block per user, flattened into the user's personal-state row.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.models.base import RankingModel
from fedsim.updates import LocalResult


def offsets_of(result: LocalResult, n_items: int, width: int) -> torch.Tensor:
    """(U, n_items, W): each user's change to the item rows in this round's local training (zero elsewhere)."""
    out = torch.zeros(len(result.users), n_items, width)
    for chunk in result.chunks:
        for row, position in enumerate(chunk.positions.tolist()):
            valid = chunk.items[row] >= 0
            out[position, chunk.items[row][valid]] = chunk.item_delta[row][valid].float()
    return out


def as_offsets(personal: np.ndarray, model: RankingModel, start: int = 0) -> torch.Tensor:
    """View columns ``start:`` of the personal-state rows as (U, n_items, W) offsets."""
    return torch.as_tensor(personal[:, start:]).view(len(personal), model.n_items, model.item_width)


def score_with_offsets(
    model: RankingModel, user: torch.Tensor, shared: dict[str, np.ndarray], offsets: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """(U, n_items) scores with each user's own item table ``shared + offsets[u]`` (the dense part shared)."""
    items = model.pack_items(shared).float()
    dense = {k: torch.as_tensor(shared[k]).float().unsqueeze(0) for k in model.dense_shapes}
    rows = []
    with torch.no_grad():
        for begin in range(0, len(user), chunk):
            end = begin + chunk
            rows.append(model.score(user[begin:end].float(), items.unsqueeze(0) + offsets[begin:end], dense))
    return torch.cat(rows) if rows else torch.zeros(0, model.n_items)
