"""Real MovieLens-100K against the calibrated synthetic population: ``python calibrate.py [--users N] [--seeds K]``.

Prints one markdown table (the one in README.md): the statistics the generator (fedsim/data/population.py) was
calibrated on, computed the same way on both datasets — the synthetic one at ML-100K's 943 users unless ``--users``
says otherwise, averaged over ``--seeds`` seeds (each seed is another world). Utility numbers use fedsim's own
protocol (leave-one-out by time, 99 sampled negatives drawn once per user, test HR@10): ItemPop and PureSVD
(Cremonesi et al. 2010: the rank-r truncated SVD of the training matrix), a cheap stand-in for "how much a
factorisation model beats popularity" that needs no training run; the federated MF runs are in README.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedsim.cli import compose
from fedsim.data import Interactions, Split, load_split
from fedsim.data.lazy import materialize_split
from fedsim.data.population import Population
from fedsim.metrics.baselines import item_pop
from fedsim.metrics.evaluate import evaluate_scores

ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"
SVD_RANK = 20  # PureSVD's rank (the best of 10/20/50 on ML-100K under this protocol)


def gini(counts: np.ndarray) -> float:
    x = np.sort(counts).astype(float)
    n = len(x)
    return float(np.dot(2 * np.arange(1, n + 1) - n - 1, x) / (n * x.sum()))


def train_matrix(split: Split) -> np.ndarray:
    matrix = np.zeros((split.n_users, split.n_items))
    for u in range(split.n_users):
        matrix[u, split.train_items_of(u)] = 1.0
    return matrix


def statistics(data: Interactions, split: Split) -> dict[str, float]:
    """Every row of the table for one dataset."""
    activity = data.interactions_per_user()
    popularity = np.bincount(data.item, minlength=data.n_items)
    ranked = np.sort(popularity)[::-1]
    events = np.zeros((data.n_users, data.n_items))
    events[data.user, data.item] = 1.0
    singular = np.linalg.svd(events - events.mean(axis=0), compute_uv=False) ** 2
    order = np.lexsort((data.timestamp, data.user))
    same_user = data.user[order][1:] == data.user[order][:-1]
    tied = same_user & (data.timestamp[order][1:] == data.timestamp[order][:-1])
    users = split.evaluated_users
    u, s, vt = np.linalg.svd(train_matrix(split), full_matrices=False)
    svd_scores = torch.as_tensor((u[:, :SVD_RANK] * s[:SVD_RANK]) @ vt[:SVD_RANK], dtype=torch.float32)
    svd = evaluate_scores(svd_scores[torch.as_tensor(users)], users, split, 10).values["test_hr"]
    pop = item_pop(split, 10).values["test_hr"]
    gender = np.asarray(data.user_attributes["gender"]).astype(str)[users]
    age = np.asarray(data.user_attributes["age"]).astype(str)
    out = {
        "users": data.n_users,
        "items": data.n_items,
        "events": data.n_interactions,
        "events per user: min": activity.min(),
        "events per user: median": np.median(activity),
        "events per user: mean": activity.mean(),
        "events per user: 90th percentile": np.quantile(activity, 0.9),
        "events per user: 99th percentile": np.quantile(activity, 0.99),
        "events per user: max": activity.max(),
        "item popularity: Gini": gini(popularity),
        "item popularity: share of the top 10% items": ranked[: data.n_items // 10].sum() / ranked.sum(),
        "item popularity: share of the top item": ranked[0] / ranked.sum(),
        "items with ≤ 5 events": np.mean(popularity <= 5),
        "latent rank: variance in the top 10 singular values": singular[:10].sum() / singular.sum(),
        "latent rank: variance in the top 50 singular values": singular[:50].sum() / singular.sum(),
        "drift: popularity of test items / of all events": popularity[split.test_item[users]].mean()
        / popularity[data.item].mean(),
        "ties: consecutive events of a user at the same time": tied.sum() / same_user.sum(),
        "test HR@10: ItemPop": pop.mean(),
        f"test HR@10: PureSVD (rank {SVD_RANK})": svd.mean(),
        "test HR@10: PureSVD − ItemPop": svd.mean() - pop.mean(),
        "test HR@10 PureSVD: F − M": svd[gender == "F"].mean() - svd[gender == "M"].mean(),
        "test HR@10 ItemPop: F − M": pop[gender == "F"].mean() - pop[gender == "M"].mean(),
        "share of users: gender F": np.mean(np.asarray(data.user_attributes["gender"]).astype(str) == "F"),
    }
    for bracket in ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"):
        out[f"share of users: age {bracket}"] = np.mean(age == bracket)
    return {key: float(value) for key, value in out.items()}


def averaged(make: Callable[[int], tuple[Interactions, Split]], seeds: int) -> dict[str, float]:
    rows = [statistics(*make(seed)) for seed in range(seeds)]
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=943, help="synthetic users (default: ML-100K's 943)")
    parser.add_argument("--seeds", type=int, default=3, help="synthetic worlds to average (seeds 0..K-1)")
    parser.add_argument("--ml100k", type=Path, default=ML100K, help="folder with u.data and u.user")
    args = parser.parse_args()
    real = statistics(*load_split(compose(["dataset=movielens_100k", f"dataset.path={args.ml100k}"]).dataset, 0))
    cfg = compose([f"dataset.n_users={args.users}"]).dataset
    synthetic = averaged(lambda seed: materialize_split(Population(cfg, seed), seed, 99), args.seeds)
    print(f"| statistic | ML-100K | synthetic ({args.users} users, mean of {args.seeds} seeds) |")
    print("|---|---|---|")
    for key, value in real.items():
        fmt = (lambda v: f"{v:,.0f}") if abs(value) >= 100 or float(value).is_integer() else (lambda v: f"{v:.3f}")
        print(f"| {key} | {fmt(value)} | {fmt(synthetic[key])} |")


if __name__ == "__main__":
    main()
