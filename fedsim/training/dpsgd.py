"""Record-level DP-SGD inside the device (Abadi et al. 2016), vectorised over the users of a chunk.

Each local step clips every training sample's gradient (user embedding and the item rows it touches) to L2 ≤ C,
sums them, adds N(0, z²C²) to **every** coordinate being trained — the user's embedding and the whole item matrix,
so the rows an update touches do not reveal the items in the batch — and takes an SGD step with the noised mean.

What it protects: single interactions (records), not users. One interaction contributes one positive and its
``negatives`` sampled negatives to the stream, each in at most one minibatch per epoch; in the worst case they share
one minibatch, so an epoch is one Gaussian release of sensitivity (1 + negatives)·C per record, and the epochs of
every round the user takes part in compose (no amplification is claimed for shuffled minibatches). Supported for
models without dense shared parameters (MF), with plain SGD.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.negatives import UserSamples
from fedsim.models.base import RankingModel
from fedsim.training.local import LocalTrainingParams, loss_per_sample, pack_streams, plan_chunks
from fedsim.updates import LocalResult, UpdateChunk


def train_users_dpsgd(
    model: RankingModel,
    shared: dict[str, np.ndarray],
    private: np.ndarray,
    samples: list[UserSamples],
    params: LocalTrainingParams,
    clip: float,
    noise_multiplier: float,
    seed: int,
) -> LocalResult:
    if model.dense_shapes:
        raise ValueError(f"record-level DP-SGD supports models without dense shared parameters (mf), not {model.name}")
    n_items = model.n_items
    item_matrix = model.pack_items(shared).float()
    new_private = torch.as_tensor(private, dtype=torch.float32).clone()
    losses = np.zeros(len(samples))
    lengths = np.array([len(s) for s in samples])
    widths = np.full(len(samples), n_items)  # every item row is trained (and noised) on every device
    result = LocalResult(np.array([s.user for s in samples]), new_private, losses, lengths)
    generator = torch.Generator().manual_seed(seed)
    for positions in plan_chunks(lengths, widths, params.max_rows_per_chunk):
        result.chunks.append(
            _dpsgd_chunk(
                model, item_matrix, new_private, losses, samples, positions, params, clip, noise_multiplier, generator
            )
        )
    return result


def _dpsgd_chunk(model, item_matrix, private, losses, samples, positions, p, clip, z, generator) -> UpdateChunk:
    n_users, n_items, width = len(positions), model.n_items, item_matrix.shape[1]
    first, second, label, valid = pack_streams(samples, positions)  # global item ids: every row is trained
    length = first.shape[1]
    start = item_matrix.unsqueeze(0).repeat(n_users, 1, 1)
    rows = start.clone()
    flat_rows = rows.view(n_users * n_items, width)
    offset = (torch.arange(n_users) * n_items).view(-1, 1)
    user = private[torch.as_tensor(positions)].clone()
    loss_sum = torch.zeros(n_users, dtype=torch.float64)
    batches = torch.zeros(n_users)
    for begin in range(0, length, p.batch_size):
        sl = slice(begin, begin + p.batch_size)
        mask = valid[:, sl]
        active = mask.any(dim=1)
        count = mask.sum(dim=1).clamp(min=1)
        batch = mask.shape[1]
        idx_first, idx_second = first[:, sl] + offset, second[:, sl] + offset
        # one copy of everything per sample, so autograd returns per-sample gradients
        user_ps = user.repeat_interleave(batch, dim=0).requires_grad_(True)
        first_rows = flat_rows[idx_first].reshape(n_users * batch, 1, width).requires_grad_(True)
        second_rows = (
            flat_rows[idx_second].reshape(n_users * batch, 1, width).requires_grad_(True)
            if p.loss == "bpr"
            else first_rows
        )
        per_sample = loss_per_sample(
            model, user_ps, first_rows, second_rows, {}, label[:, sl].reshape(-1, 1), p.loss
        ).view(n_users, batch)
        (per_sample * mask).sum().backward()
        with torch.no_grad():
            g_user = user_ps.grad.view(n_users, batch, -1)
            g_first = first_rows.grad.view(n_users, batch, width)
            norms = g_user.pow(2).sum(-1) + g_first.pow(2).sum(-1)
            if p.loss == "bpr":
                g_second = second_rows.grad.view(n_users, batch, width)
                norms = norms + g_second.pow(2).sum(-1)
            factor = (clip / norms.sqrt().clamp(min=1e-12)).clamp(max=1.0) * mask
            scale = (p.lr / count).view(-1, 1, 1)
            user -= (
                scale[:, :, 0]
                * ((g_user * factor.unsqueeze(-1)).sum(1) + torch.randn(user.shape, generator=generator) * z * clip)
            ) * active.view(-1, 1)
            row_updates = [(idx_first, g_first)] + ([(idx_second, g_second)] if p.loss == "bpr" else [])
            for idx, grad in row_updates:
                flat_rows.index_add_(
                    0, idx.reshape(-1), (grad * (factor.unsqueeze(-1) * scale)).reshape(-1, width), alpha=-1.0
                )
            noise = torch.randn(rows.shape, generator=generator) * z * clip
            rows -= noise * scale * active.view(-1, 1, 1)
            loss_sum += ((per_sample.detach() * mask).sum(1) / count).double() * active
            batches += active
    losses[positions] = (loss_sum / batches.clamp(min=1).double()).numpy()
    private[torch.as_tensor(positions)] = user
    items = torch.arange(n_items).unsqueeze(0).repeat(n_users, 1)
    return UpdateChunk(positions=positions, items=items, item_delta=rows - start, dense_delta={})
