"""User-side fairness: per-user metrics disaggregated by group, with bootstrap CIs and the standard gaps.

Groups come from user attributes (MovieLens gender/age/occupation, the synthetic population's gender/age,
``synthetic_v1``'s ``group``), from activity (the top 5%
most active users vs the rest — Li et al. 2021, "User-oriented Fairness in Recommendation" — and activity quartiles)
and from consent (opted in / opted out). For each grouping:

* disparate-impact ratio of HR@K: min over groups / max over groups (the four-fifths rule flags < 0.8);
* equal-opportunity difference: max − min over groups of Recall@K (full ranking) — the true-positive rate of the
  held-out item appearing in the top-K;
* user-fairness gap on NDCG@K: max − min of the group means. It is unsigned: Li et al. define UGF for activity as
  advantaged − disadvantaged, which equals this only when the active group does better; the per-group table shows
  which group is ahead.

Tiny groups. A gap is a difference of group means, so its noise is that of the smallest group: with 7 users (several
ML-100K occupations) a single hit moves HR@10 by 0.14, and min/max over many such groups is driven by whichever is
luckiest and unluckiest. Groups with fewer than ``min_group_size`` users (default 20) are therefore still listed in
the tables, with their CI and ``in_gaps=False``, but left out of the gaps; a grouping with fewer than two groups of
that size has no gaps (NaN from ``fairness_gaps``, not reported by ``fairness_report``). ``fair/<grouping>/
groups_in_gap`` says how many groups each gap is over.

Every number here is recomputable from ``per_user.csv`` (a test does it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 500
MIN_GROUP_SIZE = 20
"""Default smallest group (users) that enters the gaps; smaller groups are only tabulated."""


def activity_groups(n_train: np.ndarray) -> dict[str, np.ndarray]:
    """``activity_top5``: "top5%" for the 5% users with most training interactions (ties included), else "rest";
    ``activity_quartile``: "Q1" (least active) .. "Q4"."""
    threshold = np.quantile(n_train, 0.95)
    top = np.where(n_train >= threshold, "top5%", "rest")
    edges = np.quantile(n_train, [0.25, 0.5, 0.75])
    quartile = np.array(["Q1", "Q2", "Q3", "Q4"])[np.searchsorted(edges, n_train, side="right")]
    return {"activity_top5": top, "activity_quartile": quartile}


@dataclass
class GroupStats:
    """One group's mean of one metric with its bootstrap CI; ``in_gaps``: whether the grouping's gaps include it."""

    size: int
    mean: float
    ci_low: float
    ci_high: float
    in_gaps: bool = True


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (``BOOTSTRAP_SAMPLES`` resamples, seeded)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def gap_groups(groups: np.ndarray, min_group_size: int = MIN_GROUP_SIZE) -> list[str]:
    """The groups that enter the gaps: those with at least ``min_group_size`` users, if at least two are; else none."""
    names, sizes = np.unique(np.asarray(groups).astype(str), return_counts=True)
    kept = [str(g) for g, size in zip(names, sizes, strict=True) if size >= min_group_size]
    return kept if len(kept) >= 2 else []


def group_table(
    values: np.ndarray, groups: np.ndarray, seed: int = 0, min_group_size: int = MIN_GROUP_SIZE
) -> dict[str, GroupStats]:
    """Every group (however small) with its mean and CI; ``in_gaps`` marks the groups ``gap_groups`` keeps."""
    groups = np.asarray(groups).astype(str)
    in_gaps = set(gap_groups(groups, min_group_size))
    out = {}
    for g in sorted(set(groups.tolist())):
        v = values[groups == g]
        low, high = bootstrap_ci(v, seed)
        out[g] = GroupStats(len(v), float(v.mean()) if len(v) else float("nan"), low, high, g in in_gaps)
    return out


def fairness_gaps(
    hr: np.ndarray,
    recall: np.ndarray,
    ndcg: np.ndarray,
    groups: np.ndarray,
    min_group_size: int = MIN_GROUP_SIZE,
) -> dict[str, float]:
    """The three gaps for one grouping, over the groups with ≥ ``min_group_size`` users (NaN if fewer than two).

    ``groups`` counts every group present, ``groups_in_gap`` those the gaps are over (0 when no gap is defined).
    """
    groups = np.asarray(groups).astype(str)
    kept = gap_groups(groups, min_group_size)
    out = {"groups": float(len(set(groups.tolist()))), "groups_in_gap": float(len(kept))}
    if not kept:
        return {"di_ratio_hr": float("nan"), "eod_recall": float("nan"), "ugf_gap_ndcg": float("nan"), **out}
    hr_means = [hr[groups == g].mean() for g in kept]
    recall_means = [recall[groups == g].mean() for g in kept]
    ndcg_means = [ndcg[groups == g].mean() for g in kept]
    top = max(hr_means)
    return {
        "di_ratio_hr": float(min(hr_means) / top) if top > 0 else float("nan"),
        "eod_recall": float(max(recall_means) - min(recall_means)),
        "ugf_gap_ndcg": float(max(ndcg_means) - min(ndcg_means)),
        **out,
    }


def gap_cis(
    hr: np.ndarray,
    recall: np.ndarray,
    groups: np.ndarray,
    seed: int = 0,
    min_group_size: int = MIN_GROUP_SIZE,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = 0.95,
) -> dict[str, float]:
    """Percentile-bootstrap CIs of the DI ratio and the EOD (``di_ratio_hr_ci_low`` … ``eod_recall_ci_high``): users
    resampled with replacement *within* each group, so group sizes stay fixed — the uncertainty of the ratio that the
    per-group CIs alone do not give. NaN when the gaps are undefined."""
    groups = np.asarray(groups).astype(str)
    kept = gap_groups(groups, min_group_size)
    keys = ("di_ratio_hr_ci_low", "di_ratio_hr_ci_high", "eod_recall_ci_low", "eod_recall_ci_high")
    if not kept:
        return dict.fromkeys(keys, float("nan"))
    rng = np.random.default_rng([seed, 59])
    hr_means, recall_means = [], []
    for g in kept:
        rows = np.flatnonzero(groups == g)
        draws = rows[rng.integers(0, len(rows), size=(samples, len(rows)))]
        hr_means.append(hr[draws].mean(axis=1))
        recall_means.append(recall[draws].mean(axis=1))
    hr_m, recall_m = np.stack(hr_means), np.stack(recall_means)
    top = hr_m.max(axis=0)
    di = np.where(top > 0, hr_m.min(axis=0) / np.where(top > 0, top, 1.0), np.nan)
    eod = recall_m.max(axis=0) - recall_m.min(axis=0)
    alpha = (1 - level) / 2
    out = {}
    for name, values in (("di_ratio_hr", di), ("eod_recall", eod)):
        out[f"{name}_ci_low"] = float(np.nanquantile(values, alpha))
        out[f"{name}_ci_high"] = float(np.nanquantile(values, 1 - alpha))
    return out


def fairness_report(
    per_user: dict[str, np.ndarray],
    groupings: dict[str, np.ndarray],
    k: int = 10,
    seed: int = 0,
    min_group_size: int = MIN_GROUP_SIZE,
    split: str = "test",
) -> tuple[dict[str, float], dict[str, dict[str, dict[str, GroupStats]]]]:
    """Scalar gaps (``fair/<grouping>/<gap>``) and per-group tables for every grouping with ≥ 2 groups.

    ``split="val"`` computes the same gaps on the validation item (tags ``fair_val/…``): that is what an audit gate
    may choose a model on, since test data must never steer training.

    ``per_user`` holds ``test_hr``, ``test_recall_full``, ``test_ndcg`` (and any other metric arrays) for the
    evaluated users; ``groupings`` maps a grouping name to each user's group label (same order). Gaps are over the
    groups with ≥ ``min_group_size`` users; ``fair/<grouping>/groups_in_gap`` counts them, and a grouping with fewer
    than two such groups reports no gaps (its table still appears, every row with ``in_gaps=False``).
    """
    scalars: dict[str, float] = {}
    tables: dict[str, dict[str, dict[str, GroupStats]]] = {}
    for name, labels in groupings.items():
        labels = np.asarray(labels).astype(str)
        if len(set(labels.tolist())) < 2:
            continue
        hr, recall, ndcg = (per_user[f"{split}_{m}"] for m in ("hr", "recall_full", "ndcg"))
        gaps = fairness_gaps(hr, recall, ndcg, labels, min_group_size)
        prefix = "fair" if split == "test" else f"fair_{split}"
        scalars[f"{prefix}/{name}/groups_in_gap"] = gaps["groups_in_gap"]
        if gaps["groups_in_gap"] >= 2:
            scalars.update({f"{prefix}/{name}/{g}": gaps[g] for g in ("di_ratio_hr", "eod_recall", "ugf_gap_ndcg")})
        if split == "test":
            tables[name] = {
                metric: group_table(per_user[metric], labels, seed, min_group_size)
                for metric in ("test_hr", "test_ndcg", "test_recall_full")
            }
    return scalars, tables
