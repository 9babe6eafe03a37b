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


def _adam_(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: torch.Tensor,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """Adam on (U, ...) tensors (views of the users that step), ``step`` being each user's own count."""
    shape = (-1,) + (1,) * (param.dim() - 1)
    m.copy_(betas[0] * m + (1 - betas[0]) * grad)
    v.copy_(betas[1] * v + (1 - betas[1]) * grad * grad)
    t = step.clamp(min=1).view(shape).to(param.dtype)
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


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
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    streams = _Streams.of(samples, params.loss, model.n_items)
    result = LocalResult(np.array([s.user for s in samples]), new_private, losses, lengths)
    # mitigation=exposure_regularizer: item popularity as the device can know it, from the shared model it received
    popularity = torch.as_tensor(popularity_proxy(model, shared)).float() if params.exposure_weight > 0 else None

    for positions in plan_chunks(lengths, streams.widths, params.max_rows_per_chunk):
        result.chunks.append(
            _train_chunk(model, item_matrix, dense_global, new_private, losses, streams, positions, params, popularity)
        )
    return result


@dataclass(frozen=True)
class _Streams:
    """Every user's stream, concatenated, with each user's *local rows* — the sorted distinct items its stream
    touches (its positives and negatives) — and each sample's first/second item as an index into them.

    Built with one ``np.unique`` over (user, item) keys for all users instead of a ``np.unique`` and two
    ``np.searchsorted`` per user: the per-user Python work was a fifth of a round's device time."""

    starts: np.ndarray  # (U + 1,) offsets of each user's samples in the concatenated stream
    first: np.ndarray  # (S,) local row of each sample's first item
    second: np.ndarray  # (S,) local row of each sample's second item (BPR's negative; = first otherwise)
    label: np.ndarray  # (S,) float32
    row_starts: np.ndarray  # (U + 1,) offsets of each user's local rows in ``row_items``
    row_items: np.ndarray  # (R,) item id of each local row, sorted within each user

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.row_starts)

    @classmethod
    def of(cls, samples: list[UserSamples], loss: str, n_items: int) -> _Streams:
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        owner = np.repeat(np.arange(len(samples), dtype=np.int64), lengths)
        first = _concat([s.first for s in samples], np.int64)
        label = _concat([s.label for s in samples], np.float32)
        pair = loss == "bpr"  # only BPR reads the second item (BCE streams repeat the first)
        second = _concat([s.second for s in samples], np.int64) if pair else first
        span = max(n_items, int(first.max(initial=-1)) + 1, int(second.max(initial=-1)) + 1)
        keys = np.concatenate([owner * span + first, owner * span + second]) if pair else owner * span + first
        distinct, inverse = np.unique(keys, return_inverse=True)
        row_owner = distinct // span
        row_starts = np.searchsorted(row_owner, np.arange(len(samples) + 1))
        local = inverse.reshape(-1) - row_starts[np.concatenate([owner, owner]) if pair else owner]
        n = len(first)
        return cls(
            starts=starts,
            first=local[:n],
            second=local[n:] if pair else local[:n],
            label=label,
            row_starts=row_starts,
            row_items=distinct - row_owner * span,
        )

    def padded(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(items (U, M) with -1 padding; first, second (U, L) local rows; label (U, L)) of the users at
        ``positions``; stream padding points at row 0 with label 0 (never read: see :func:`_train_chunk`)."""
        widths = self.widths[positions]
        items = torch.full((len(positions), max(int(widths.max(initial=0)), 1)), -1, dtype=torch.long)
        which, at = _ragged(widths)
        items[which, at] = torch.from_numpy(self.row_items[_gather_index(self.row_starts[positions], widths)])
        lengths = np.diff(self.starts)[positions]
        length = max(int(lengths.max(initial=0)), 1)
        sample = _gather_index(self.starts[positions], lengths)
        which, at = _ragged(lengths)
        out = []
        for values, dtype in ((self.first, torch.long), (self.second, torch.long), (self.label, torch.float32)):
            tensor = torch.zeros((len(positions), length), dtype=dtype)
            tensor[which, at] = torch.from_numpy(values[sample]).to(dtype)
            out.append(tensor)
        return items, out[0], out[1], out[2]


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _gather_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the ranges [starts[i], starts[i] + lengths[i]) back to back."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths - starts, lengths)


def _ragged(lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every element of a ragged array laid out as a padded (len(lengths), max) matrix."""
    which = np.repeat(np.arange(len(lengths)), lengths)
    return torch.from_numpy(which), torch.from_numpy(_gather_index(np.zeros_like(lengths), lengths))


def pack_streams(
    samples: list[UserSamples], positions: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The streams of the users at ``positions`` as padded (U, L) tensors: first/second item ids, label, and a
    validity mask."""
    length = max(int(max(len(samples[i]) for i in positions)), 1)
    n_users = len(positions)
    first = torch.zeros((n_users, length), dtype=torch.long)
    second = torch.zeros((n_users, length), dtype=torch.long)
    label = torch.zeros((n_users, length))
    valid = torch.zeros((n_users, length), dtype=torch.bool)
    for row, pos in enumerate(positions.tolist()):
        s = samples[pos]
        first[row, : len(s)] = torch.from_numpy(s.first)
        second[row, : len(s)] = torch.from_numpy(s.second)
        label[row, : len(s)] = torch.from_numpy(s.label)
        valid[row, : len(s)] = True
    return first, second, label, valid


def _train_chunk(
    model: RankingModel,
    item_matrix: torch.Tensor,
    dense_global: dict[str, torch.Tensor],
    private: torch.Tensor,
    losses: np.ndarray,
    streams: _Streams,
    positions: np.ndarray,
    p: LocalTrainingParams,
    popularity: torch.Tensor | None = None,
) -> UpdateChunk:
    """Lock-step SGD/Adam of the users at ``positions`` (longest stream first, as :func:`plan_chunks` orders them).

    Step ``t`` trains only the users whose stream is longer than ``t`` minibatches: as the users are sorted by
    length, they are a *prefix* of the chunk, so every tensor of the step is a slice ``[:n_active]`` and the users
    that have finished cost nothing (with padding to the longest stream, ML-100K's lock-step did 2.8× the work of
    the samples themselves). Each user's arithmetic is the same as training it alone."""
    lengths = np.diff(streams.starts)[positions]  # non-increasing: plan_chunks orders longest first
    n_users = len(positions)
    items, first, second, label = streams.padded(positions)
    n_rows = items.shape[1]
    length = first.shape[1]
    item_ids = items.clamp(min=0).view(-1)
    flat_rows = item_matrix.index_select(0, item_ids)  # each user's own copy of its rows (padding: row 0's)
    start_flat = flat_rows.clone() if p.proximal_mu > 0 else flat_rows  # FedProx pulls rows toward their start
    offset = (torch.arange(n_users) * n_rows).view(-1, 1)
    flat_first = first + offset
    flat_second = second + offset if p.loss == "bpr" else flat_first
    user = private[torch.as_tensor(positions)].clone()
    dense = {k: v.unsqueeze(0).repeat(n_users, *([1] * v.dim())) for k, v in dense_global.items()}
    dense_start = {k: v.clone() for k, v in dense.items()}
    # steps: how many users are still training at each minibatch, and each one's sample count in it
    step_begins = np.arange(0, length, p.batch_size)
    active_users = (lengths[None, :] > step_begins[:, None]).sum(axis=1)
    in_batch = np.clip(lengths[None, :] - step_begins[:, None], 0, p.batch_size)
    column = torch.arange(p.batch_size)

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
    closed_form = model.closed_form_gradients and popularity is None  # else autograd (NeuMF, the exposure penalty)
    for step, begin in enumerate(step_begins.tolist()):
        u = int(active_users[step])  # users [0, u) train in this step
        if u == 0:
            break
        sl = slice(begin, begin + p.batch_size)
        width = min(p.batch_size, length - begin)
        counts = torch.from_numpy(in_batch[step, :u])
        mask = column[:width].view(1, -1) < counts.view(-1, 1)
        idx_first = flat_first[:u, sl].reshape(-1)
        idx_second = flat_second[:u, sl].reshape(-1) if p.loss == "bpr" else idx_first
        first_rows = flat_rows.index_select(0, idx_first).view(u, width, -1)
        second_rows = flat_rows.index_select(0, idx_second).view(u, width, -1) if p.loss == "bpr" else first_rows
        batch = _Batch(user[:u], first_rows, second_rows, {k: v[:u] for k, v in dense.items()}, label[:u, sl], mask)
        if closed_form:
            per_user, user_grad, row_grads, dense_grad = _closed_form_gradients(model, batch, counts, p)
        else:
            extra = None
            if popularity is not None:  # λ·corr(score, popularity)² over the minibatch's positives (fedsim/mitigation)
                popular = popularity[items[:u].gather(1, first[:u, sl]).clamp(min=0)]
                extra = (p.exposure_weight, popular, mask & (label[:u, sl] > 0.5))
            per_user, user_grad, row_grads, dense_grad = _autograd_gradients(model, batch, counts, p, extra)
        loss_sum[:u] += per_user.double()
        batches[:u] += 1

        with torch.no_grad():
            if p.train_shared and p.proximal_mu > 0:
                dense_grad = {
                    k: g + p.proximal_mu * (batch.dense[k] - dense_start[k][:u]) for k, g in dense_grad.items()
                }
            row_index = [idx_first, idx_second][: len(row_grads)]
            if adam:
                steps[:u] += 1
                if row_grads:  # lazy Adam must not count a padded sample as a visit: valid samples only
                    flat_idx, flat_grad = _row_gradients(p, flat_rows, start_flat, mask, row_index, row_grads, True)
                    _lazy_adam_rows_(flat_rows, flat_idx, flat_grad, row_m, row_v, row_step, p)
                _adam_(user[:u], user_grad, user_m[:u], user_v[:u], steps[:u], p.lr, p.adam_betas, p.adam_eps)
                for k in dense:
                    _adam_(
                        batch.dense[k],
                        dense_grad[k],
                        dense_m[k][:u],
                        dense_v[k][:u],
                        steps[:u],
                        p.lr,
                        p.adam_betas,
                        p.adam_eps,
                    )
            else:
                if row_grads:
                    # padded samples' gradients are exactly zero (masked out of the objective): adding them is a
                    # no-op, cheaper than selecting the valid ones — except under FedProx, whose term is not zero
                    masked = p.proximal_mu > 0
                    flat_idx, flat_grad = _row_gradients(p, flat_rows, start_flat, mask, row_index, row_grads, masked)
                    # = index_add_(…, alpha=-lr), 2.5× faster on CPU (index_add_ dispatches one add per row)
                    flat_rows.scatter_add_(0, flat_idx.view(-1, 1).expand_as(flat_grad), flat_grad * -p.lr)
                user[:u] -= p.lr * user_grad
                for k in dense:
                    batch.dense[k] -= p.lr * dense_grad[k]

    losses[positions] = (loss_sum / batches.clamp(min=1).double()).numpy()
    private[torch.as_tensor(positions)] = user
    # the change of every row, in place (the padding rows were never touched: x − x = 0 exactly)
    item_delta = flat_rows.sub_(item_matrix.index_select(0, item_ids)).view(n_users, n_rows, -1)
    return UpdateChunk(
        positions=positions,
        items=items,
        item_delta=item_delta,
        dense_delta={k: dense[k] - dense_start[k] for k in dense},
    )


@dataclass(frozen=True)
class _Batch:
    """One lock-step minibatch of the users still training: their parameters (views: updated in place) and data."""

    user: torch.Tensor  # (u, P)
    first_rows: torch.Tensor  # (u, B, W) the samples' first items' rows (copies)
    second_rows: torch.Tensor  # (u, B, W) BPR's negatives' rows (= first_rows otherwise)
    dense: dict[str, torch.Tensor]  # (u, *shape)
    label: torch.Tensor  # (u, B)
    mask: torch.Tensor  # (u, B) valid samples


Gradients = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]
"""(per-user mean loss (u,), user gradient (u, P), item-row gradients (first [, second]) (u, B, W) — empty when the
shared model is frozen —, dense gradients (u, *shape)) of Σ_u (user u's mean objective over its minibatch)."""


def _autograd_gradients(
    model: RankingModel,
    b: _Batch,
    counts: torch.Tensor,
    p: LocalTrainingParams,
    exposure: tuple[float, torch.Tensor, torch.Tensor] | None = None,
) -> Gradients:
    """Any model and objective, by autograd. ``exposure``: (λ, the positives' popularity, positive mask) of
    mitigation=exposure_regularizer's penalty."""
    count = counts.clamp(min=1)
    first_rows = b.first_rows.requires_grad_(p.train_shared)
    second_rows = b.second_rows.requires_grad_(p.train_shared) if p.loss == "bpr" else first_rows
    user = b.user.detach().requires_grad_(True)
    dense = {k: v.detach().requires_grad_(p.train_shared) for k, v in b.dense.items()}
    per_sample, regularised = sample_objective(model, user, first_rows, second_rows, dense, b.label, p.loss, p.l2)
    per_user = (per_sample * b.mask).sum(dim=1) / count
    objective = per_user if regularised is per_sample else (regularised * b.mask).sum(dim=1) / count
    if exposure is not None:
        weight, popularity, positive = exposure
        scores = model.score(user, first_rows, dense)
        objective = objective + weight * popularity_correlation_penalty(scores, popularity, positive)
    objective.sum().backward()
    assert user.grad is not None
    rows = [first_rows] + ([second_rows] if p.loss == "bpr" else [])
    row_grads = [r.grad for r in rows if r.grad is not None] if p.train_shared else []
    dense_grads = {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in dense.items()}
    return per_user.detach(), user.grad, row_grads, dense_grads


def _closed_form_gradients(model: RankingModel, b: _Batch, counts: torch.Tensor, p: LocalTrainingParams) -> Gradients:
    """The same gradients as :func:`_autograd_gradients` without an autograd graph, for models whose score has a
    closed-form backward (:meth:`RankingModel.score_backward`; MF): the graph's bookkeeping (slice and view
    backwards that zero-fill whole (u, B, W) buffers) was ~40% of an MF step. The loss's derivative w.r.t. the
    score: BCE σ(s) − y; BPR −log σ(s⁺ − s⁻) → (σ(s⁺ − s⁻) − 1) for s⁺ and its negation for s⁻; each sample weighted
    by 1/(the user's batch count), as the mean over the minibatch is; the L2 penalty's 2·l2·θ per occurrence.
    ``tests/training/test_local.py`` checks it against autograd."""
    weight = b.mask / counts.clamp(min=1).view(-1, 1)
    score_first = model.score(b.user, b.first_rows, b.dense)
    if p.loss == "bpr":
        margin = score_first - model.score(b.user, b.second_rows, b.dense)
        per_sample = -F.logsigmoid(margin)
        grad_scores = [(torch.sigmoid(margin) - 1) * weight]
        grad_scores.append(-grad_scores[0])
    else:
        per_sample = F.binary_cross_entropy_with_logits(score_first, b.label, reduction="none")
        grad_scores = [(torch.sigmoid(score_first) - b.label) * weight]
    per_user = (per_sample * b.mask).sum(dim=1) / counts.clamp(min=1)
    user_grad = torch.zeros_like(b.user)
    row_grads: list[torch.Tensor] = []
    dense_grads = {k: torch.zeros_like(v) for k, v in b.dense.items()}
    for rows, grad_score in zip((b.first_rows, b.second_rows), grad_scores, strict=False):
        grad_user, grad_rows, grad_dense = model.score_backward(b.user, rows, b.dense, grad_score)
        user_grad += grad_user
        for k, g in grad_dense.items():
            dense_grads[k] += g
        if p.l2 > 0:
            grad_rows = grad_rows + (2 * p.l2) * weight.unsqueeze(-1) * rows
        row_grads.append(grad_rows)
    if p.l2 > 0:
        user_grad += (2 * p.l2) * weight.sum(dim=1, keepdim=True) * b.user
    if not p.train_shared:
        row_grads, dense_grads = [], {k: torch.zeros_like(v) for k, v in b.dense.items()}
    return per_user, user_grad, row_grads, dense_grads


def _row_gradients(
    p: LocalTrainingParams,
    flat_rows: torch.Tensor,
    start_flat: torch.Tensor,
    mask: torch.Tensor,
    row_index: list[torch.Tensor],
    row_grads: list[torch.Tensor],
    masked: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch's item-row gradients as (flat row index, gradient) pairs, first items then (BPR) second items;
    ``masked``: only the valid samples'."""
    width = row_grads[0].shape[-1]
    flat = mask.reshape(-1)
    idx = [i[flat] if masked else i for i in row_index]
    grads = [g.reshape(-1, width)[flat] if masked else g.reshape(-1, width) for g in row_grads]
    flat_idx = idx[0] if len(idx) == 1 else torch.cat(idx)
    flat_grad = grads[0] if len(grads) == 1 else torch.cat(grads)
    if p.proximal_mu > 0:  # FedProx's proximal term, applied to the rows in the minibatch (lazily)
        flat_grad = flat_grad + p.proximal_mu * (flat_rows[flat_idx] - start_flat[flat_idx])
    return flat_idx, flat_grad
