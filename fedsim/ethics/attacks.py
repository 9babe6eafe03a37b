"""Measured privacy risk: attack scores and the statistics that summarise them (pure numpy).

* **Item-set attack** (curious server; the headline leak of federated recommendation — Melis et al. 2019, Chai et
  al. 2020): from one user's upload, score every item by the L2 norm of its row of the update; the items the user
  trained on stand out. Reported per user and averaged: AUC, TPR at 1% FPR, precision@|user's items|.
* **Membership inference** (loss threshold, Yeom et al. 2018): members (users who trained) vs held-out users; the
  attacker holds a user's data and the released shared model, fits the user's embedding with the shared model
  frozen (the same procedure for both), and predicts "member" when the loss is low. AUC, advantage, TPR@1% FPR.
* **Re-identification risk of the data**: the share of users whose s random training interactions match no other
  user (k-anonymity with k = 1; Narayanan & Shmatikov 2008).
"""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count one half); NaN without both classes."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    """True-positive rate at the threshold where at most ``fpr`` of negatives score above it."""
    labels = labels.astype(bool)
    negatives = np.sort(scores[~labels])[::-1]
    if len(negatives) == 0 or labels.sum() == 0:
        return float("nan")
    allowed = int(np.floor(fpr * len(negatives)))
    threshold = negatives[allowed] if allowed < len(negatives) else -np.inf
    return float(np.mean(scores[labels] > threshold))


def advantage(scores: np.ndarray, labels: np.ndarray) -> float:
    """max over thresholds of TPR − FPR (the membership advantage of Yeom et al.)."""
    labels = labels.astype(bool)
    if labels.sum() == 0 or (~labels).sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    tpr = np.cumsum(labels[order]) / labels.sum()
    fpr = np.cumsum(~labels[order]) / (~labels).sum()
    return float(max(0.0, np.max(tpr - fpr)))


def precision_at_true_size(scores: np.ndarray, labels: np.ndarray) -> float:
    """Precision of the attacker's guess "the top-|S| items are the user's items", |S| = true set size."""
    k = int(labels.sum())
    if k == 0:
        return float("nan")
    top = np.argsort(-scores, kind="mergesort")[:k]
    return float(labels[top].mean())


def item_set_attack(row_norms: np.ndarray, true_items: list[np.ndarray]) -> dict[str, float]:
    """Score each user's upload (``row_norms`` users × items); return sums over users (for aggregation)."""
    out = {"attack-users": 0.0, "attack-auc-sum": 0.0, "attack-tpr1-sum": 0.0, "attack-precision-sum": 0.0}
    for norms, items in zip(row_norms, true_items, strict=True):
        labels = np.zeros(len(norms), dtype=bool)
        labels[items] = True
        out["attack-users"] += 1
        out["attack-auc-sum"] += roc_auc(norms, labels)
        out["attack-tpr1-sum"] += tpr_at_fpr(norms, labels, 0.01)
        out["attack-precision-sum"] += precision_at_true_size(norms, labels)
    return out


def membership_attack(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> dict[str, float]:
    scores = -np.concatenate([member_loss, nonmember_loss])
    labels = np.concatenate([np.ones(len(member_loss), bool), np.zeros(len(nonmember_loss), bool)])
    return {
        "risk/mia_auc": roc_auc(scores, labels),
        "risk/mia_advantage": advantage(scores, labels),
        "risk/mia_tpr_at_1pct_fpr": tpr_at_fpr(scores, labels, 0.01),
    }


def reidentification_risk(user_items: list[np.ndarray], n_items: int, sizes: list[int], seed: int) -> dict[str, float]:
    """Share of users (with ≥ s items) whose s randomly drawn items are held by no other user."""
    rng = np.random.default_rng([seed, 41])
    holders: dict[int, set[int]] = {}
    for user, items in enumerate(user_items):
        for item in items.tolist():
            holders.setdefault(item, set()).add(user)
    out = {}
    for s in sizes:
        unique, eligible = 0, 0
        for user, items in enumerate(user_items):
            if len(items) < s:
                continue
            eligible += 1
            probe = rng.choice(items, size=s, replace=False)
            common = set.intersection(*(holders[int(i)] for i in probe))
            unique += common == {user}
        out[f"risk/reid_unique_at_{s}"] = unique / eligible if eligible else float("nan")
    return out
