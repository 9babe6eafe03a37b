"""Record-level DP-SGD inside the device (Abadi et al. 2016), with Poisson-sampled records, vectorised over users.

**What a record is.** One positive interaction (u, i) *together with its own* ``negatives`` sampled negatives. A
record's negatives, and whether it is in each step's batch, come from a counter-based generator keyed by the record —
(seed, round, user, item, occurrence, epoch, …), see :func:`keyed_uniform` — never from a per-user stream. So adding
or removing one interaction leaves every other record (its negatives, its batch memberships) exactly as it was: the
coupling the sensitivity argument below needs. A negative is any item except the record's own positive; it may be
another positive of the same user (probability ≈ |I_u| / |I|), because excluding those would make a record depend on
the user's other records (the per-stream sampler of :mod:`fedsim.data.negatives` does exactly that, and also shifts
every later batch boundary when one interaction is added: it is not used here).

**One step** (Abadi et al. 2016, Alg. 1, with Poisson sampling and a fixed expected batch size, the convention of
Opacus' ``DPOptimizer(expected_batch_size=…)`` and TF-Privacy's Poisson-sampled DP-SGD):

1. every record of the user is in the batch independently with probability q (``sample_rate``, a public constant,
   the same for every user and step — not ``batch_size / n_u``, which would depend on the data);
2. each sampled record's gradient — the sum of its samples' loss gradients with respect to the user embedding and
   the item rows it touches — is clipped, all of it jointly, to L2 ≤ C;
3. the clipped gradients are **summed** and N(0, z²C²) is added to every trained coordinate: the user embedding
   and the whole item matrix, so the rows a step touches do not reveal which items were sampled;
4. the noised sum is divided by the fixed public B = ``client.batch_size`` (post-processing by a constant) and a
   plain SGD step is taken with ``client.lr``. The expected number of records in a step is q·n_u, which varies per
   user; B does not, so the divisor carries no information about the data.

An epoch is ``steps_per_epoch`` steps (the server sends ceil(1/q): every record is used once per epoch in
expectation), a public number that is the same for every user, including users with one record.

**Why this is accountable.** Fix the state a step starts from. Under add/remove of one record — with every other
record's negatives and inclusions unchanged, as above — the step's summed clipped gradient changes by that record's
clipped gradient if it is sampled and by nothing otherwise: sensitivity C, and the step is exactly the Poisson-
subsampled Gaussian mechanism, ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` (add/remove adjacency). Steps
compose adaptively over ``steps_per_epoch × epochs`` per round and over every round the user takes part in
(:class:`fedsim.privacy.record.RecordDP` accounts exactly that; no amplification is claimed from user sampling).
The key's seed stands in for the device's private randomness: the run's seed by default (reproducible, not a
private release), a fresh OS-entropy value per call under ``privacy.secure_rng`` (:mod:`fedsim.privacy.randomness`).

**Gradients in closed form (MF only).** With score s = <p_u, q_i> + b_i, a record's loss is a function of the scores
of its slots (the positive and its negatives): with a_s = ∂L/∂s_s, the gradient is Σ_s a_s q_s for p_u and
a_s·[p_u, 1] for the row of slot s (rows of equal items add up; the norm is taken after adding them). For BCE
a_s = σ(s_s) − y_s; for BPR (pairs (i, j_k)) a_k = σ(s_jk − s_i) and a_i = −Σ_k a_k. :func:`record_gradients` is
checked against autograd in ``tests/validity/test_record_dpsgd.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.models.base import RankingModel
from fedsim.training.local import LocalTrainingParams, plan_chunks
from fedsim.updates import LocalResult, UpdateChunk

TAG_NEGATIVE, TAG_SAMPLE, TAG_NOISE = 1, 2, 3  # which draw of a record (or user) a key is for

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class RecordDpParams:
    """What the server's :class:`~fedsim.privacy.record.RecordDP` tells the devices, plus the run's public constants.

    ``clip`` C, ``noise_multiplier`` z (per step, relative to C), ``sample_rate`` q (Poisson, per record and step),
    ``steps_per_epoch`` (ceil(1/q), sent by the server so device and accountant use the same number), and from the
    config: ``epochs``, ``negatives`` per record, ``seed`` and the round (keys of every random draw).
    """

    clip: float
    noise_multiplier: float
    sample_rate: float
    steps_per_epoch: int
    epochs: int
    negatives: int
    seed: int
    server_round: int


@dataclass
class RecordSet:
    """The records of the users of a chunk, padded to (U, R): positive item, validity, and the keyed draws.

    ``negatives`` (U, R, epochs, negatives) are global item ids; ``sampled`` (U, R, epochs, steps_per_epoch) says
    whether the record is in each step's batch (False on padding).
    """

    item: torch.Tensor
    valid: torch.Tensor
    negatives: torch.Tensor
    sampled: torch.Tensor


@dataclass
class StepGradient:
    """One step's sum of clipped record gradients (before noise and the 1/B): user part (U, D), item part
    (U, n_items, W); the mean per-sample loss of the sampled records and how many were sampled."""

    user: torch.Tensor
    items: torch.Tensor
    loss: torch.Tensor
    n_sampled: torch.Tensor


def keyed_bits(*fields: np.ndarray | int) -> np.ndarray:
    """64 random bits per element of the broadcast ``fields``: a counter-based generator (Salmon et al. 2011).

    Each field is mixed in with the SplitMix64 finaliser (Steele et al. 2014), so the draw for one key (a record's
    (seed, round, user, item, occurrence, tag, epoch, index)) does not depend on any other key — unlike a sequential
    generator, where adding a record would shift the draws of every record after it. Vectorised over keys.
    """
    h = np.zeros((), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for field in fields:
            x = (h ^ np.asarray(field, dtype=np.int64).astype(np.uint64)) + _GAMMA
            x = (x ^ (x >> np.uint64(30))) * _MIX1
            x = (x ^ (x >> np.uint64(27))) * _MIX2
            h = x ^ (x >> np.uint64(31))
    return h


def keyed_uniform(*fields: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) draws (53 bits) keyed by ``fields`` (see :func:`keyed_bits`)."""
    return (keyed_bits(*fields) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def occurrences(items: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries hold the same item: with the item, the key of a record (a user who
    interacted twice with an item has two records, and the pair (item, occurrence) is unique)."""
    order = np.argsort(items, kind="stable")
    ranked = items[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]]) if len(items) else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, len(items)])
    out = np.empty(len(items), dtype=np.int64)
    out[order] = np.arange(len(items)) - np.repeat(starts, sizes)
    return out


def draw_records(users: np.ndarray, positives: list[np.ndarray], n_items: int, dp: RecordDpParams) -> RecordSet:
    """Each user's records with their own negatives and Poisson batch memberships, from record-keyed draws.

    A negative of record (u, i) is uniform over the items other than i; record (u, i) is in step t of epoch e with
    probability ``dp.sample_rate``, independently of everything else.
    """
    n_users = len(users)
    length = max([len(p) for p in positives] + [1])
    item = np.zeros((n_users, length), dtype=np.int64)
    occurrence = np.zeros((n_users, length), dtype=np.int64)
    valid = np.zeros((n_users, length), dtype=bool)
    for row, items in enumerate(positives):
        items = np.asarray(items, dtype=np.int64)
        item[row, : len(items)] = items
        occurrence[row, : len(items)] = occurrences(items)
        valid[row, : len(items)] = True
    key = (dp.seed, dp.server_round, np.asarray(users, dtype=np.int64)[:, None], item, occurrence)
    key = tuple(np.asarray(k)[..., None, None] for k in key)
    epochs = np.arange(dp.epochs)[:, None]
    u = keyed_uniform(*key, TAG_NEGATIVE, epochs, np.arange(dp.negatives)[None, :])
    negatives = np.minimum((u * (n_items - 1)).astype(np.int64), n_items - 2)
    negatives += negatives >= item[:, :, None, None]  # skip the record's own positive
    sampled = keyed_uniform(*key, TAG_SAMPLE, epochs, np.arange(dp.steps_per_epoch)[None, :]) < dp.sample_rate
    return RecordSet(
        item=torch.from_numpy(item),
        valid=torch.from_numpy(valid),
        negatives=torch.from_numpy(negatives),
        sampled=torch.from_numpy(sampled & valid[:, :, None, None]),
    )


def record_gradients(
    model: RankingModel, user: torch.Tensor, rows: torch.Tensor, records: RecordSet, epoch: int, loss: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every record's (unclipped) gradient in closed form (see the module docstring), for MF.

    Returns ``slots`` (U, R, S) — the item ids the record touches (positive first) —, ``coef`` (U, R, S) = ∂L/∂s per
    slot (the item-row gradient of slot s is ``coef_s · [p_u, 1]``), the user-embedding gradient (U, R, D), the
    record's squared gradient norm (U, R) (rows of equal items added first) and its loss (U, R).
    """
    dim = model.private_dim
    n_users, n_records = records.item.shape
    slots = torch.cat([records.item.unsqueeze(-1), records.negatives[:, :, epoch]], dim=-1)
    q = rows[torch.arange(n_users).view(-1, 1, 1), slots]  # (U, R, S, W)
    score = torch.einsum("ud,ursd->urs", user, q[..., :dim]) + q[..., dim]
    if loss == "bpr":
        diff = score[..., :1] - score[..., 1:]
        pair = torch.sigmoid(-diff)  # ∂(-log σ(s_i - s_j))/∂s_j
        coef = torch.cat([-pair.sum(-1, keepdim=True), pair], dim=-1)
        record_loss = F.softplus(-diff).sum(-1)
    else:
        label = torch.zeros_like(score)
        label[..., 0] = 1.0
        coef = torch.sigmoid(score) - label
        record_loss = F.binary_cross_entropy_with_logits(score, label, reduction="none").sum(-1)
    g_user = torch.einsum("urs,ursd->urd", coef, q[..., :dim])
    same = slots.unsqueeze(-1) == slots.unsqueeze(-2)  # (U, R, S, S): slots hitting the same item row
    row_coef_sq = (coef * (same.to(coef.dtype) @ coef.unsqueeze(-1)).squeeze(-1)).sum(-1)  # Σ_rows (Σ_s∈row a_s)²
    v_sq = user.pow(2).sum(-1, keepdim=True) + 1.0  # ‖[p_u, 1]‖²
    norm_sq = g_user.pow(2).sum(-1) + v_sq * row_coef_sq.clamp(min=0.0)
    return slots, coef, g_user, norm_sq, record_loss


def clip_factors(norm_sq: torch.Tensor, clip: float) -> torch.Tensor:
    """min(1, C / ‖g‖) per record: after scaling, every record's whole gradient has L2 ≤ C."""
    return (clip / norm_sq.sqrt().clamp(min=1e-12)).clamp(max=1.0)


def clipped_step_sum(
    model: RankingModel,
    user: torch.Tensor,
    rows: torch.Tensor,
    records: RecordSet,
    epoch: int,
    step: int,
    clip: float,
    loss: str,
) -> StepGradient:
    """Σ over the records sampled in (epoch, step) of their clipped gradients, from the state (``user``, ``rows``).

    This is the whole data-dependent part of a step: noise and the 1/B come after it. For a fixed state, two
    datasets that differ in one record give sums that differ by that record's clipped gradient (if sampled) — the
    sensitivity-C argument, checked in ``tests/validity/test_record_dpsgd.py``.
    """
    slots, coef, g_user, norm_sq, record_loss = record_gradients(model, user, rows, records, epoch, loss)
    weight = clip_factors(norm_sq, clip) * records.sampled[:, :, epoch, step]  # (U, R); 0 when not sampled
    user_sum = (g_user * weight.unsqueeze(-1)).sum(1)
    n_users, n_items = rows.shape[0], rows.shape[1]
    row_coef = torch.zeros(n_users, n_items, dtype=rows.dtype)
    row_coef.scatter_add_(1, slots.reshape(n_users, -1), (coef * weight.unsqueeze(-1)).reshape(n_users, -1))
    v = torch.cat([user, torch.ones(n_users, 1, dtype=user.dtype)], dim=1)
    n_sampled = records.sampled[:, :, epoch, step].sum(1)
    mean_loss = (record_loss * records.sampled[:, :, epoch, step]).sum(1) / (n_sampled * slots.shape[-1]).clamp(min=1)
    return StepGradient(user_sum, row_coef.unsqueeze(-1) * v.unsqueeze(1), mean_loss, n_sampled)


def noise_generators(users: np.ndarray, dp: RecordDpParams) -> list[torch.Generator]:
    """One generator per user keyed by (seed, round, user): the noise does not depend on sharding or chunking."""
    seeds = keyed_bits(dp.seed, dp.server_round, np.asarray(users, dtype=np.int64), TAG_NOISE) >> np.uint64(1)
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def train_users_dpsgd(
    model: RankingModel,
    shared: dict[str, np.ndarray],
    private: np.ndarray,
    users: np.ndarray,
    positives: list[np.ndarray],
    params: LocalTrainingParams,
    dp: RecordDpParams,
) -> LocalResult:
    """Record-level DP-SGD for every user of ``users`` (their training items ``positives``), from the same shared
    parameters; every item row is trained and noised on every device. Lr ``params.lr``, divisor B =
    ``params.batch_size``, loss ``params.loss``; plain SGD only (MF, no dense shared parameters)."""
    if model.dense_shapes or model.name != "mf":
        raise ValueError(f"record-level DP-SGD supports models without dense shared parameters (mf), not {model.name}")
    if params.optimizer != "sgd" or params.l2 != 0 or params.proximal_mu != 0:
        raise ValueError("record-level DP-SGD is plain SGD (client.optimizer=sgd, client.l2=0, no proximal term)")
    users = np.asarray(users, dtype=np.int64)
    n_items = model.n_items
    item_matrix = model.pack_items(shared).float()
    new_private = torch.as_tensor(private, dtype=torch.float32).clone()
    losses = np.zeros(len(users))
    n_samples = np.zeros(len(users), dtype=np.int64)
    lengths = np.array([len(p) for p in positives])
    result = LocalResult(users, new_private, losses, n_samples)
    for positions in plan_chunks(lengths, np.full(len(users), n_items), params.max_rows_per_chunk):
        records = draw_records(users[positions], [positives[i] for i in positions], n_items, dp)
        result.chunks.append(
            _dpsgd_chunk(model, item_matrix, new_private, losses, n_samples, users, positions, records, params, dp)
        )
    return result


def _dpsgd_chunk(
    model: RankingModel,
    item_matrix: torch.Tensor,
    private: torch.Tensor,
    losses: np.ndarray,
    n_samples: np.ndarray,
    users: np.ndarray,
    positions: np.ndarray,
    records: RecordSet,
    p: LocalTrainingParams,
    dp: RecordDpParams,
) -> UpdateChunk:
    n_users, n_items, width = len(positions), model.n_items, item_matrix.shape[1]
    start = item_matrix.unsqueeze(0).repeat(n_users, 1, 1)
    rows = start.clone()
    user = private[torch.as_tensor(positions)].clone()
    generators = noise_generators(users[positions], dp) if dp.noise_multiplier > 0 else []
    sigma = dp.noise_multiplier * dp.clip
    scale = p.lr / p.batch_size  # the fixed public divisor B (Opacus' expected batch size)
    loss_sum = torch.zeros(n_users, dtype=torch.float64)
    loss_steps = torch.zeros(n_users)
    sampled = torch.zeros(n_users, dtype=torch.long)
    for epoch in range(dp.epochs):
        for step in range(dp.steps_per_epoch):
            g = clipped_step_sum(model, user, rows, records, epoch, step, dp.clip, p.loss)
            if generators:
                noise = torch.stack([torch.randn(user.shape[1] + n_items * width, generator=gen) for gen in generators])
                g.user += sigma * noise[:, : user.shape[1]]
                g.items += sigma * noise[:, user.shape[1] :].view(n_users, n_items, width)
            user -= scale * g.user
            rows -= scale * g.items
            active = g.n_sampled > 0
            loss_sum += g.loss.double() * active
            loss_steps += active
            sampled += g.n_sampled
    losses[positions] = (loss_sum / loss_steps.clamp(min=1).double()).numpy()
    n_samples[positions] = (sampled * (1 + dp.negatives)).numpy()
    private[torch.as_tensor(positions)] = user
    items = torch.arange(n_items).unsqueeze(0).repeat(n_users, 1)
    return UpdateChunk(positions=positions, items=items, item_delta=rows - start, dense_delta={})
