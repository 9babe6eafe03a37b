"""Measured privacy risk: attack scores and the statistics that summarise them (ROC maths from scikit-learn).

* **Item-set attack** (curious server; the headline leak of federated recommendation — Melis et al. 2019, Chai et
  al. 2020): from one user's upload, score every item by the L2 norm of its row of the update; the items the user
  trained on stand out. Reported per user and averaged: AUC, TPR at 1% FPR, precision@|user's items|.
* **Membership inference** (loss threshold, Yeom et al. 2018): members (users who trained) vs held-out users; the
  attacker holds a user's data and the released shared model, fits the user's embedding with the shared model
  frozen (the same procedure for both), and predicts "member" when the loss is low. AUC, advantage, TPR@1% FPR,
  each point estimate with a percentile-bootstrap 95% CI, next to a label-shuffle null baseline.
* **Re-identification risk of the data**: the share of users whose s random training interactions match no other
  user (k-anonymity with k = 1; Narayanan & Shmatikov 2008).

ROC statistics and ties. All threshold statistics come from ``sklearn.metrics.roc_curve``, whose thresholds are the
*distinct* score values: users with the same score are always classified together. Splitting a block of tied scores
(as a cumulative sum over a stably sorted list does) credits the attacker with an ordering it cannot observe — with
members listed first, a fully tied block counts as perfectly separated. The advantage is max(TPR − FPR) over the ROC
points (Yeom et al. 2018's membership advantage, maximised over thresholds); the AUC is the trapezoidal area under the
same curve, i.e. the Mann–Whitney statistic with ties counted one half.

What the empirical membership advantage is — and is not — comparable to. ``risk/max_advantage_bound`` comes from the
privacy accountant (``fedsim.privacy.accountant.max_advantage``: the PLD's δ at ε = 0, which bounds TPR − FPR of any
test between two neighbouring inputs — the hypothesis-testing reading of DP, Wasserman & Zhou 2010, Kairouz et al.
2015). Its neighbouring inputs are *populations* that differ by adding or removing one user, from which the server
Poisson-samples each round's cohort with probability q (DP-FedAvg, McMahan et al. 2018); amplification by sampling
relies on the attacker not knowing who was sampled. The attack here tests a different event: "took part in at least
one round" (opted in *and* sampled) against "held out" (never eligible). Its members are selected on the secret
sampling outcome itself, and its threshold is fitted on the same few hundred users, where a maximum over thresholds
is inflated by chance (``risk/mia_advantage_null`` measures how much). So ``risk/mia_advantage`` above
``risk/max_advantage_bound`` does not by itself show the DP guarantee is broken, and one below it does not certify it;
read the advantage's bootstrap CI against the null baseline first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import sklearn
from sklearn.metrics import auc as _trapezoid_auc
from sklearn.metrics import roc_curve

MIA_BOOTSTRAP_SAMPLES = 500
"""Bootstrap resamples for the membership-inference CIs (percentile method; Efron & Tibshirani 1993, ch. 13)."""
MIA_NULL_SHUFFLES = 20
"""Label shuffles averaged into the chance-level baseline."""
MIA_METRICS = (
    "risk/mia_auc",
    "risk/mia_advantage",
    "risk/mia_tpr_at_1pct_fpr",
    "risk/mia_auc_ci_low",
    "risk/mia_auc_ci_high",
    "risk/mia_advantage_ci_low",
    "risk/mia_advantage_ci_high",
    "risk/mia_auc_null",
    "risk/mia_advantage_null",
)
"""Every metric ``membership_attack`` returns."""
_MAX_CELLS = 4_000_000
"""Upper bound on (resamples × max(points, distinct scores)) held in memory at once by the vectorised ROC statistics."""


def _both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any()) and not bool(labels.all())


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score threshold, starting at (0, 0); higher score = predicted positive.

    ``drop_intermediate=False`` keeps every threshold: the dropped collinear points can be the ones that reach the
    largest TPR under an FPR cap (``tpr_at_fpr``).
    """
    fpr, tpr, _ = roc_curve(labels.astype(bool), scores, drop_intermediate=False)
    return fpr, tpr


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count one half); NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    fpr, tpr = _roc(scores, labels)
    return float(_trapezoid_auc(fpr, tpr))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    """The largest TPR among ``roc_curve``'s thresholds whose FPR is at most ``fpr``; NaN without both classes.

    Only achievable thresholds count (no interpolation between ROC points, which would need a randomised attacker),
    and ties are never split. With fewer than 1/``fpr`` negatives the cap allows no false positive at all, so this is
    the share of positives scoring strictly above every negative (Carlini et al. 2022 report TPR at low FPR for this
    reason: an average-case AUC hides whether *some* members are exposed with confidence).
    """
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    curve_fpr, curve_tpr = _roc(scores, labels)
    return float(curve_tpr[curve_fpr <= fpr].max())  # (0, 0) is always on the curve, so the set is never empty


def advantage(scores: np.ndarray, labels: np.ndarray) -> float:
    """max over ``roc_curve``'s thresholds of TPR − FPR (the membership advantage of Yeom et al. 2018), ≥ 0.

    Thresholds lie only between distinct scores, so a block of tied scores is never split in the attacker's favour.
    """
    labels = np.asarray(labels).astype(bool)
    if not _both_classes(labels):
        return float("nan")
    fpr, tpr = _roc(scores, labels)
    return float(max(0.0, np.max(tpr - fpr)))


def _weighted_roc_stats(
    levels: np.ndarray, n_levels: int, pos_weight: np.ndarray, neg_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUC and advantage for many reweightings of one scored sample at once.

    ``levels`` is each point's rank among the distinct scores (0 = lowest); row r of ``pos_weight`` / ``neg_weight``
    (R × n) says how many times each point counts as a positive / negative in reweighting r (bootstrap counts, or a
    shuffled 0/1 labelling). Per row this is exactly ``roc_curve`` + trapezoidal AUC with ``sample_weight`` (a test
    checks it), computed as cumulative sums over the distinct scores from the highest down.
    """
    rows = pos_weight.shape[0]
    flat = (np.arange(rows)[:, None] * n_levels + levels[None, :]).ravel()
    pos = np.bincount(flat, weights=pos_weight.ravel(), minlength=rows * n_levels).reshape(rows, n_levels)
    neg = np.bincount(flat, weights=neg_weight.ravel(), minlength=rows * n_levels).reshape(rows, n_levels)
    tpr = np.cumsum(pos[:, ::-1], axis=1) / pos.sum(axis=1, keepdims=True)
    fpr = np.cumsum(neg[:, ::-1], axis=1) / neg.sum(axis=1, keepdims=True)
    advantages = np.maximum(0.0, np.max(tpr - fpr, axis=1))
    zero = np.zeros((rows, 1))
    tpr, fpr = np.hstack([zero, tpr]), np.hstack([zero, fpr])
    aucs = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)
    return aucs, advantages


def _in_chunks(rows: int, n_levels: int, n_points: int) -> list[tuple[int, int]]:
    step = max(1, _MAX_CELLS // max(n_levels, n_points, 1))
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def _bootstrap(
    levels: np.ndarray, n_levels: int, n_pos: int, n_neg: int, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap AUCs and advantages: members and non-members resampled separately (stratified), with replacement.

    Resampling each class on its own keeps the class sizes — which the attack's statistics depend on — fixed at
    their observed values, as in the two-sample bootstrap for the AUC (Efron & Tibshirani 1993; Pepe 2003).
    Points are ordered members first (``levels[:n_pos]``), then non-members.
    """
    aucs, advantages = [], []
    for start, stop in _in_chunks(samples, n_levels, n_pos + n_neg):
        rows = stop - start
        pos_draw = rng.integers(0, n_pos, size=(rows, n_pos)) + (np.arange(rows) * n_pos)[:, None]
        neg_draw = rng.integers(0, n_neg, size=(rows, n_neg)) + (np.arange(rows) * n_neg)[:, None]
        pos_count = np.bincount(pos_draw.ravel(), minlength=rows * n_pos).reshape(rows, n_pos)
        neg_count = np.bincount(neg_draw.ravel(), minlength=rows * n_neg).reshape(rows, n_neg)
        zeros_pos, zeros_neg = np.zeros((rows, n_neg)), np.zeros((rows, n_pos))
        a, v = _weighted_roc_stats(
            levels, n_levels, np.hstack([pos_count, zeros_pos]), np.hstack([zeros_neg, neg_count])
        )
        aucs.append(a)
        advantages.append(v)
    return np.concatenate(aucs), np.concatenate(advantages)


def _shuffled_labels(
    levels: np.ndarray, n_levels: int, n_pos: int, shuffles: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and advantages of the same attack after randomly reassigning the member/non-member labels.

    The labels then carry no information, so what remains is the advantage a max over thresholds finds by chance on
    groups of this size (for two equal groups of n it is the one-sided Kolmogorov–Smirnov statistic, ≈ 0.63·√(2/n)
    for large n; Smirnov 1939). Averaging over shuffles gives that chance level for the observed scores and sizes.
    """
    n = len(levels)
    aucs, advantages = [], []
    for start, stop in _in_chunks(shuffles, n_levels, n):
        rows = stop - start
        members = np.argsort(rng.random((rows, n)), axis=1)[:, :n_pos]
        labels = np.zeros((rows, n))
        np.put_along_axis(labels, members, 1.0, axis=1)
        a, v = _weighted_roc_stats(levels, n_levels, labels, 1.0 - labels)
        aucs.append(a)
        advantages.append(v)
    return np.concatenate(aucs), np.concatenate(advantages)


def precision_at_true_size(scores: np.ndarray, labels: np.ndarray) -> float:
    """Precision of the attacker's guess "the top-|S| items are the user's items", |S| = true set size."""
    k = int(labels.sum())
    if k == 0:
        return float("nan")
    top = np.argsort(-scores, kind="mergesort")[:k]
    return float(labels[top].mean())


def item_set_attack(row_norms: np.ndarray, true_items: list[np.ndarray]) -> dict[str, float]:
    """Score each user's upload (``row_norms`` users × items); return sums over users (for aggregation).

    One ``roc_curve`` per user gives both the AUC and the TPR at 1% FPR (≈ 0.4 ms for 1000 items, faster than the
    hand-written rank loop it replaces); precision@|S| breaks ties by item index, as before.
    """
    out = {"attack-users": 0.0, "attack-auc-sum": 0.0, "attack-tpr1-sum": 0.0, "attack-precision-sum": 0.0}
    # the inputs are built here (finite norms, boolean labels): scikit-learn's per-call argument validation is a third
    # of a roc_curve call at this size, paid every round on every node (issue 7: the attack's share of a round)
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        _score_uploads(row_norms, true_items, out)
    return out


def _score_uploads(row_norms: np.ndarray, true_items: list[np.ndarray], out: dict[str, float]) -> None:
    for norms, items in zip(row_norms, true_items, strict=True):
        labels = np.zeros(len(norms), dtype=bool)
        labels[items] = True
        out["attack-users"] += 1
        if _both_classes(labels):
            fpr, tpr = _roc(norms, labels)
            out["attack-auc-sum"] += float(_trapezoid_auc(fpr, tpr))
            out["attack-tpr1-sum"] += float(tpr[fpr <= 0.01].max())
        else:
            out["attack-auc-sum"] += float("nan")
            out["attack-tpr1-sum"] += float("nan")
        out["attack-precision-sum"] += precision_at_true_size(norms, labels)


def membership_attack(
    member_loss: np.ndarray,
    nonmember_loss: np.ndarray,
    *,
    seed: int = 0,
    bootstrap_samples: int = MIA_BOOTSTRAP_SAMPLES,
    null_shuffles: int = MIA_NULL_SHUFFLES,
) -> dict[str, float]:
    """Loss-threshold membership inference (lower loss ⇒ "member"), with its uncertainty and its chance level.

    Returns ``risk/mia_auc``, ``risk/mia_advantage``, ``risk/mia_tpr_at_1pct_fpr`` (see ``roc_auc``, ``advantage``,
    ``tpr_at_fpr``); percentile-bootstrap 95% CIs ``risk/mia_auc_ci_low``/``_ci_high`` and
    ``risk/mia_advantage_ci_low``/``_ci_high`` (members and non-members resampled separately); and the null baseline
    ``risk/mia_auc_null``/``risk/mia_advantage_null``, the mean over ``null_shuffles`` random reassignments of the
    member/non-member labels — the advantage that groups of these sizes show by chance alone. The advantage is a
    maximum over thresholds, so its bootstrap distribution leans upward (resamples duplicate points, which can only
    help a fitted threshold); compare its CI with the null, not with zero. All NaN when either group is empty.
    See the module docstring for why this is not the accountant's ``risk/max_advantage_bound``.
    """
    member_loss = np.asarray(member_loss, dtype=np.float64).ravel()
    nonmember_loss = np.asarray(nonmember_loss, dtype=np.float64).ravel()
    n_pos, n_neg = len(member_loss), len(nonmember_loss)
    if n_pos == 0 or n_neg == 0:
        return dict.fromkeys(MIA_METRICS, float("nan"))
    scores = -np.concatenate([member_loss, nonmember_loss])
    labels = np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])
    fpr, tpr = _roc(scores, labels)
    distinct, levels = np.unique(scores, return_inverse=True)
    boot_auc, boot_adv = _bootstrap(
        levels, len(distinct), n_pos, n_neg, bootstrap_samples, np.random.default_rng([seed, 43])
    )
    null_auc, null_adv = _shuffled_labels(
        levels, len(distinct), n_pos, null_shuffles, np.random.default_rng([seed, 47])
    )
    return {
        "risk/mia_auc": float(_trapezoid_auc(fpr, tpr)),
        "risk/mia_advantage": float(max(0.0, np.max(tpr - fpr))),
        "risk/mia_tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
        "risk/mia_auc_ci_low": float(np.quantile(boot_auc, 0.025)),
        "risk/mia_auc_ci_high": float(np.quantile(boot_auc, 0.975)),
        "risk/mia_advantage_ci_low": float(np.quantile(boot_adv, 0.025)),
        "risk/mia_advantage_ci_high": float(np.quantile(boot_adv, 0.975)),
        "risk/mia_auc_null": float(null_auc.mean()),
        "risk/mia_advantage_null": float(null_adv.mean()),
    }


def reidentification_risk(
    user_items: Sequence[np.ndarray], n_items: int, sizes: list[int], seed: int, sample: int = 0
) -> dict[str, float]:
    """Share of users (with ≥ s items) whose s randomly drawn items are held by no other user, with a 95% Wilson
    interval (``…_ci_low``/``…_ci_high``); ``user_items[i]`` are user i's items (see :func:`reidentification_stream`).
    """
    lengths = np.array([len(items) for items in user_items], dtype=np.int64)
    chunks = (list(user_items[start : start + HOLDER_CHUNK]) for start in range(0, len(user_items), HOLDER_CHUNK))
    return reidentification_stream(lengths, user_items.__getitem__, chunks, n_items, sizes, seed, sample)


def reidentification_stream(
    lengths: np.ndarray,
    items_of: Callable[[int], np.ndarray],
    chunks: Iterable[list[np.ndarray]],
    n_items: int,
    sizes: list[int],
    seed: int,
    sample: int = 0,
) -> dict[str, float]:
    """:func:`reidentification_risk` over a population read twice and never held: ``lengths`` (items per user),
    ``items_of(i)`` (user i's items, read for the probed users only) and ``chunks`` (every user's items, in order,
    a chunk at a time — one pass).

    Linear in the data: the probes (s random items of each probed user) are drawn first; then one pass over the
    population counts, for every probe, the users holding all its items — a chunk becomes one bit set per item
    (bit j: user j of the chunk holds it), and a probe's holders are the popcount of the AND of its s rows. Memory is
    O(n_items × chunk + probes), whatever N. With ``sample`` > 0 and more eligible users than that, a seeded sample of
    users is probed (the interval says how much that costs in precision); the full population otherwise.
    """
    rng = np.random.default_rng([seed, 41])
    probes: list[np.ndarray] = []
    for s in sizes:
        eligible = np.flatnonzero(lengths >= s)
        probed = eligible
        if 0 < sample < len(eligible):
            probed = np.sort(rng.choice(eligible, size=sample, replace=False))
        drawn = [rng.choice(items_of(int(user)), size=s, replace=False) for user in probed.tolist()]
        probes.append(np.array(drawn, dtype=np.int64).reshape(len(drawn), s))
    holders = _holder_counts(probes, chunks, n_items)
    out: dict[str, float] = {}
    for s, counts in zip(sizes, holders, strict=True):
        n, unique = len(counts), int(np.count_nonzero(counts == 1))  # only the user itself holds all s items
        low, high = wilson_interval(unique, n)
        out.update(
            {f"risk/reid_unique_at_{s}": unique / n if n else float("nan"), f"risk/reid_unique_at_{s}_ci_low": low}
        )
        out[f"risk/reid_unique_at_{s}_ci_high"] = high
    return out


HOLDER_CHUNK = 8192  # users per bit-set chunk: n_items × 1 KB of bits
_PROBE_BATCH = 1024  # probes ANDed at once: ≤ 1024 × s × 1 KB of gathered rows


def _holder_counts(probes: list[np.ndarray], chunks: Iterable[list[np.ndarray]], n_items: int) -> list[np.ndarray]:
    """For each (probes × s) array, per probe: the number of users (over all chunks) holding all its s items."""
    totals = [np.zeros(len(p), dtype=np.int64) for p in probes]
    for chunk in chunks:
        lengths = np.array([len(items) for items in chunk], dtype=np.int64)
        width = -(-max(len(chunk), 1) // 64) * 64
        held = np.zeros((n_items, width), dtype=bool)
        if len(chunk):
            held[np.concatenate(chunk), np.repeat(np.arange(len(chunk)), lengths)] = True
        bits = np.packbits(held, axis=1).view(np.uint64)  # (n_items, width / 64): bit j = user j holds the item
        for rows, total in zip(probes, totals, strict=True):
            for start in range(0, len(rows), _PROBE_BATCH):
                both = np.bitwise_and.reduce(bits[rows[start : start + _PROBE_BATCH]], axis=1)
                total[start : start + _PROBE_BATCH] += np.bitwise_count(both).sum(axis=1, dtype=np.int64)
    return totals


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (exact enough at any n; (nan, nan) when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)
