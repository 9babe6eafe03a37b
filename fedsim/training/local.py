"""Local training of many users at once: each user runs its own SGD on its own copy of the shared parameters.

Why vectorised: in cross-device FL every participating device trains *independently* from the same global model.
Simulating that one user at a time costs ~1 ms of Python per user per round; here the users of a chunk train in
lock-step instead — step ``t`` processes the ``t``-th minibatch of every user — so the cost is a few tensor ops per step
for the whole chunk. Nothing couples the users: user ``u``'s result is exactly what ``train_users([u])`` gives
(``tests/client/test_local_training.py`` checks it).

Layout of one chunk of U users:

* ``rows`` (U, M, W): the user's copy of the item rows it touches (its positives and sampled negatives), gathered
  from the packed item matrix; padded with unused rows;
* ``user`` (U, P): the private embeddings;
* ``dense``: per-user copies (U, *shape) of the dense shared parameters.

Users are sorted by stream length and cut into chunks whose padded size stays under ``max_rows_per_chunk``, so a
heavy user does not make every light user pay for its padding.

Optimisers: ``sgd`` (plain) and ``adam``. For Adam, item rows use the *lazy* (sparse) variant — a row's moments and
step only change when the row is in the user's minibatch, as in ``torch.optim.SparseAdam`` — while the user vector
and dense parameters use ordinary Adam with a per-user step count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.config import ClientConfig
from fedsim.data.negatives import UserSamples
from fedsim.mitigation.popularity import popularity_proxy
from fedsim.mitigation.regularizer import popularity_correlation_penalty
from fedsim.models.base import RankingModel
from fedsim.updates import LocalResult, UpdateChunk


@dataclass(frozen=True)
class LocalTrainingParams:
    """Hyper-parameters of one round of local training. The values come from ``client/`` (one source of defaults:
    :class:`~fedsim.config.ClientConfig`) through :meth:`from_config`, plus the strategy's proximal term."""

    batch_size: int
    lr: float
    optimizer: str
    loss: str
    l2: float
    max_rows_per_chunk: int
    proximal_mu: float = 0.0
    train_shared: bool = True
    exposure_weight: float = 0.0  # mitigation=exposure_regularizer: λ of the popularity-correlation penalty (0 = off)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    @classmethod
    def from_config(cls, client: ClientConfig, loss: str = "bce", **overrides: Any) -> LocalTrainingParams:
        values = dict(
            batch_size=client.batch_size,
            lr=client.lr,
            optimizer=client.optimizer,
            loss=loss,
            l2=client.l2,
            max_rows_per_chunk=client.max_rows_per_chunk,
        )
        return cls(**{**values, **overrides})


def plan_chunks(lengths: np.ndarray, widths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Group positions (sorted by length, longest first) so that each chunk's padded size stays under ``budget``."""
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    chunks, current, current_max = [], [], 0
    for pos in order.tolist():
        size = int(max(lengths[pos], widths[pos], 1))
        new_max = max(current_max, size)
        if current and new_max * (len(current) + 1) > budget:
            chunks.append(np.array(current))
            current, new_max = [], size
        current.append(pos)
        current_max = new_max
    if current:
        chunks.append(np.array(current))
    return chunks


def _masked_adam_(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: torch.Tensor,
    active: torch.Tensor,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """Adam on (U, ...) tensors where only ``active`` users take a step (``step`` is the per-user count)."""
    shape = (-1,) + (1,) * (param.dim() - 1)
    a = active.view(shape)
    m.copy_(torch.where(a, betas[0] * m + (1 - betas[0]) * grad, m))
    v.copy_(torch.where(a, betas[1] * v + (1 - betas[1]) * grad * grad, v))
    t = step.clamp(min=1).view(shape).to(param.dtype)
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    param.sub_(torch.where(a, lr * m_hat / (v_hat.sqrt() + eps), torch.zeros_like(param)))


def _lazy_adam_rows_(
    rows: torch.Tensor,
    index: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: torch.Tensor,
    p: LocalTrainingParams,
) -> None:
    """Lazy (sparse) Adam on item rows, as ``torch.optim.SparseAdam``: only the rows in this minibatch (``index``,
    repeated rows' gradients summed) update their moments and step count — the rest of a user's rows stay put."""
    rows_hit, inverse = torch.unique(index, return_inverse=True)
    summed = torch.zeros(len(rows_hit), rows.shape[1]).index_add_(0, inverse, grad)
    step[rows_hit] += 1
    b1, b2 = p.adam_betas
    m[rows_hit] = b1 * m[rows_hit] + (1 - b1) * summed
    v[rows_hit] = b2 * v[rows_hit] + (1 - b2) * summed * summed
    t = step[rows_hit].view(-1, 1)
    rows[rows_hit] -= p.lr * (m[rows_hit] / (1 - b1**t)) / ((v[rows_hit] / (1 - b2**t)).sqrt() + p.adam_eps)


def loss_per_sample(model: RankingModel, user, first_rows, second_rows, dense, label, loss: str) -> torch.Tensor:
    score_first = model.score(user, first_rows, dense)
    if loss == "bpr":
        return -F.logsigmoid(score_first - model.score(user, second_rows, dense))
    return F.binary_cross_entropy_with_logits(score_first, label, reduction="none")


def sample_objective(
    model: RankingModel, user, first_rows, second_rows, dense, label, loss: str, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, loss + L2 penalty) per sample — the one local objective, used by the devices and the centralized
    baseline alike. ``user`` is (…, P), rows are (…, B, W); the penalty is l2·(‖q_first‖² [+ ‖q_second‖² for BPR] +
    ‖p_u‖²), so a user's mean objective over its minibatch adds its embedding's penalty exactly once."""
    per_sample = loss_per_sample(model, user, first_rows, second_rows, dense, label, loss)
    if l2 <= 0:
        return per_sample, per_sample
    reg = first_rows.pow(2).sum(-1) + user.pow(2).sum(-1).unsqueeze(-1)
    if loss == "bpr":
        reg = reg + second_rows.pow(2).sum(-1)
    return per_sample, per_sample + l2 * reg


def train_users(
    model: RankingModel,
    shared: dict[str, np.ndarray],
    private: np.ndarray,
    samples: list[UserSamples],
    params: LocalTrainingParams,
) -> LocalResult:
    """Run every user's local training from the same shared parameters.

    Parameters
    ----------
    shared : dict of numpy arrays
        The global shared parameters received from the server.
    private : np.ndarray (U, private_dim)
        The users' private embeddings, in the order of ``samples``.
    samples : list of UserSamples
        Each user's training stream for this round (see :mod:`fedsim.data.negatives`).
    """
    n = len(samples)
    item_matrix = model.pack_items(shared).float()
    dense_global = {k: torch.as_tensor(shared[k]).float() for k in model.dense_shapes}
    new_private = torch.as_tensor(private, dtype=torch.float32).clone()
    losses = np.zeros(n)
    lengths = np.array([len(s) for s in samples])
    local_items = [np.unique(np.concatenate([s.first, s.second])) for s in samples]
    widths = np.array([len(x) for x in local_items])
    result = LocalResult(np.array([s.user for s in samples]), new_private, losses, lengths)
    # mitigation=exposure_regularizer: item popularity as the device can know it, from the shared model it received
    popularity = torch.as_tensor(popularity_proxy(model, shared)).float() if params.exposure_weight > 0 else None

    for positions in plan_chunks(lengths, widths, params.max_rows_per_chunk):
        result.chunks.append(
            _train_chunk(
                model,
                item_matrix,
                dense_global,
                new_private,
                losses,
                samples,
                local_items,
                positions,
                params,
                popularity,
            )
        )
    return result


def pack_streams(
    samples: list[UserSamples], positions: np.ndarray, local_items: list[np.ndarray] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The streams of the users at ``positions`` as padded (U, L) tensors: first/second item (as indices into each
    user's sorted ``local_items``, or global ids when None), label, and a validity mask."""
    length = max(int(max(len(samples[i]) for i in positions)), 1)
    n_users = len(positions)
    first = torch.zeros((n_users, length), dtype=torch.long)
    second = torch.zeros((n_users, length), dtype=torch.long)
    label = torch.zeros((n_users, length))
    valid = torch.zeros((n_users, length), dtype=torch.bool)
    for row, pos in enumerate(positions.tolist()):
        s = samples[pos]
        local = local_items[pos] if local_items is not None else None
        first[row, : len(s)] = torch.from_numpy(s.first if local is None else np.searchsorted(local, s.first))
        second[row, : len(s)] = torch.from_numpy(s.second if local is None else np.searchsorted(local, s.second))
        label[row, : len(s)] = torch.from_numpy(s.label)
        valid[row, : len(s)] = True
    return first, second, label, valid


def _train_chunk(
    model: RankingModel,
    item_matrix: torch.Tensor,
    dense_global: dict[str, torch.Tensor],
    private: torch.Tensor,
    losses: np.ndarray,
    samples: list[UserSamples],
    local_items: list[np.ndarray],
    positions: np.ndarray,
    p: LocalTrainingParams,
    popularity: torch.Tensor | None = None,
) -> UpdateChunk:
    n_users = len(positions)
    n_rows = max(int(max(len(local_items[i]) for i in positions)), 1)

    # --- gather: each user's local rows, and its stream as local row indices ---------------------------------------
    items = torch.full((n_users, n_rows), -1, dtype=torch.long)
    for row, pos in enumerate(positions.tolist()):
        items[row, : len(local_items[pos])] = torch.from_numpy(local_items[pos])
    first, second, label, valid = pack_streams(samples, positions, local_items)
    length = first.shape[1]
    start_rows = item_matrix[items.clamp(min=0)]
    rows = start_rows.clone()
    flat_rows = rows.view(n_users * n_rows, -1)
    offset = (torch.arange(n_users) * n_rows).view(-1, 1)
    user = private[torch.as_tensor(positions)].clone()
    dense = {k: v.unsqueeze(0).repeat(n_users, *([1] * v.dim())) for k, v in dense_global.items()}
    dense_start = {k: v.clone() for k, v in dense.items()}

    adam = p.optimizer == "adam"
    if adam:
        row_m, row_v = torch.zeros_like(flat_rows), torch.zeros_like(flat_rows)
        row_step = torch.zeros(n_users * n_rows)
        user_m, user_v = torch.zeros_like(user), torch.zeros_like(user)
        dense_m = {k: torch.zeros_like(v) for k, v in dense.items()}
        dense_v = {k: torch.zeros_like(v) for k, v in dense.items()}
        steps = torch.zeros(n_users, dtype=torch.long)

    loss_sum = torch.zeros(n_users, dtype=torch.float64)
    batches = torch.zeros(n_users)
    for begin in range(0, length, p.batch_size):
        sl = slice(begin, begin + p.batch_size)
        mask = valid[:, sl]
        active = mask.any(dim=1)
        count = mask.sum(dim=1).clamp(min=1)
        idx_first = first[:, sl] + offset
        idx_second = second[:, sl] + offset
        first_rows = flat_rows[idx_first].requires_grad_(True)
        second_rows = flat_rows[idx_second].requires_grad_(True) if p.loss == "bpr" else first_rows
        user_leaf = user.clone().requires_grad_(True)
        dense_leaf = {k: v.clone().requires_grad_(True) for k, v in dense.items()}

        per_sample, regularised = sample_objective(
            model, user_leaf, first_rows, second_rows, dense_leaf, label[:, sl], p.loss, p.l2
        )
        per_user = (per_sample * mask).sum(dim=1) / count
        objective = (regularised * mask).sum(dim=1) / count
        if popularity is not None:  # λ·corr(score, popularity)² over the minibatch's positives (fedsim/mitigation)
            batch_items = items.gather(1, first[:, sl]).clamp(min=0)
            positive = mask & (label[:, sl] > 0.5)
            scores = model.score(user_leaf, first_rows, dense_leaf)
            objective = objective + p.exposure_weight * popularity_correlation_penalty(
                scores, popularity[batch_items], positive
            )
        objective.sum().backward()
        loss_sum += per_user.detach().double() * active
        batches += active

        with torch.no_grad():
            row_grads = [(idx_first, first_rows.grad)]
            if p.loss == "bpr":
                row_grads.append((idx_second, second_rows.grad))
            flat_idx = torch.cat([i[mask] for i, _ in row_grads])
            flat_grad = torch.cat([g[mask] for _, g in row_grads])
            if p.proximal_mu > 0:  # FedProx's proximal term, applied to the rows in the minibatch (lazily)
                start_flat = start_rows.view(n_users * n_rows, -1)
                flat_grad = flat_grad + p.proximal_mu * (flat_rows[flat_idx] - start_flat[flat_idx])
            user_grad = user_leaf.grad
            dense_grad = {k: dense_leaf[k].grad for k in dense}
            if p.proximal_mu > 0:
                dense_grad = {
                    k: g + p.proximal_mu * (dense[k] - dense_start[k]) * _bcast(active, g)
                    for k, g in dense_grad.items()
                }
            if not p.train_shared:  # fit the private embedding only, shared parameters frozen
                flat_idx = flat_idx[:0]
                flat_grad = flat_grad[:0]
                dense_grad = {k: torch.zeros_like(g) for k, g in dense_grad.items()}
            if adam:
                steps += active.long()
                _lazy_adam_rows_(flat_rows, flat_idx, flat_grad, row_m, row_v, row_step, p)
                _masked_adam_(user, user_grad, user_m, user_v, steps, active, p.lr, p.adam_betas, p.adam_eps)
                for k in dense:
                    _masked_adam_(
                        dense[k], dense_grad[k], dense_m[k], dense_v[k], steps, active, p.lr, p.adam_betas, p.adam_eps
                    )
            else:
                flat_rows.index_add_(0, flat_idx, flat_grad, alpha=-p.lr)
                user -= p.lr * user_grad
                for k in dense:
                    dense[k] -= p.lr * dense_grad[k]

    losses[positions] = (loss_sum / batches.clamp(min=1).double()).numpy()
    private[torch.as_tensor(positions)] = user
    item_delta = rows - start_rows
    item_delta[items < 0] = 0.0
    return UpdateChunk(
        positions=positions,
        items=items,
        item_delta=item_delta,
        dense_delta={k: dense[k] - dense_start[k] for k in dense},
    )


def _bcast(active: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return active.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)
