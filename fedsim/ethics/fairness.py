"""User-side fairness: per-user metrics disaggregated by group, with bootstrap CIs and the standard gaps.

Groups come from user attributes (MovieLens gender/age, the synthetic ``group``), from activity (the top 5% most
active users vs the rest — Li et al. 2021, "User-oriented Fairness in Recommendation" — and activity quartiles) and
from consent (opted in / opted out). For each grouping:

* disparate-impact ratio of HR@K: min over groups / max over groups (the four-fifths rule flags < 0.8);
* equal-opportunity difference: max − min over groups of Recall@K (full ranking) — the true-positive rate of the
  held-out item appearing in the top-K;
* user-fairness gap on NDCG@K: max − min of the group means (for activity: advantaged − disadvantaged, Li et al.).

Every number here is recomputable from ``per_user.csv`` (a test does it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 500


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
    size: int
    mean: float
    ci_low: float
    ci_high: float


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (``BOOTSTRAP_SAMPLES`` resamples, seeded)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def group_table(values: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict[str, GroupStats]:
    out = {}
    for g in sorted(set(groups.tolist())):
        v = values[groups == g]
        low, high = bootstrap_ci(v, seed)
        out[str(g)] = GroupStats(len(v), float(v.mean()) if len(v) else float("nan"), low, high)
    return out


def fairness_gaps(hr: np.ndarray, recall: np.ndarray, ndcg: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """The three gaps for one grouping (groups with no users are ignored)."""
    names = sorted(set(groups.tolist()))
    hr_means = [hr[groups == g].mean() for g in names]
    recall_means = [recall[groups == g].mean() for g in names]
    ndcg_means = [ndcg[groups == g].mean() for g in names]
    top = max(hr_means)
    return {
        "di_ratio_hr": float(min(hr_means) / top) if top > 0 else float("nan"),
        "eod_recall": float(max(recall_means) - min(recall_means)),
        "ugf_gap_ndcg": float(max(ndcg_means) - min(ndcg_means)),
        "groups": float(len(names)),
    }


def fairness_report(
    per_user: dict[str, np.ndarray], groupings: dict[str, np.ndarray], k: int = 10, seed: int = 0
) -> tuple[dict[str, float], dict[str, dict[str, dict[str, GroupStats]]]]:
    """Scalar gaps (``fair/<grouping>/<gap>``) and per-group tables for every grouping with ≥ 2 groups.

    ``per_user`` holds ``test_hr``, ``test_recall_full``, ``test_ndcg`` (and any other metric arrays) for the
    evaluated users; ``groupings`` maps a grouping name to each user's group label (same order).
    """
    scalars: dict[str, float] = {}
    tables: dict[str, dict[str, dict[str, GroupStats]]] = {}
    for name, labels in groupings.items():
        labels = np.asarray(labels).astype(str)
        if len(set(labels.tolist())) < 2:
            continue
        gaps = fairness_gaps(per_user["test_hr"], per_user["test_recall_full"], per_user["test_ndcg"], labels)
        scalars.update({f"fair/{name}/{gap}": value for gap, value in gaps.items() if gap != "groups"})
        tables[name] = {
            metric: group_table(per_user[metric], labels, seed)
            for metric in ("test_hr", "test_ndcg", "test_recall_full")
        }
    return scalars, tables
