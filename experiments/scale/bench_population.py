"""What the lazily drawn synthetic population costs a process: ``python bench_population.py [--users N ...]``.

Per population size, one row: building a run's runtime from the config (every user's traits, shards, roles — what
every process does, the driver and each worker), drawing users on demand (µs per user: what a node pays per cohort
member it has not drawn yet), and one streaming pass over the whole population (what the driver pays for the
re-identification audit and item popularity; ``--pass-users`` caps it, the rest is extrapolated linearly and the row
says so), with the peak RSS of this process after each step.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from fedsim import runtime
from fedsim.cli import compose
from fedsim.runtime import get_runtime


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def row(n_users: int, draws: int, pass_users: int) -> str:
    runtime._RUNTIMES.clear()
    cfg = compose([f"dataset.n_users={n_users}", "federation.participation=0.001", "attack=off", "audit=off"])
    start = time.perf_counter()
    rt = get_runtime(cfg)
    build = time.perf_counter() - start
    users = np.random.default_rng(0).choice(n_users, size=min(draws, n_users), replace=False)
    start = time.perf_counter()
    for u in users.tolist():
        rt.split.train_items_of(u)
    per_user = (time.perf_counter() - start) / len(users)
    streamed = np.arange(min(pass_users, n_users))
    start = time.perf_counter()
    events = sum(len(items) for chunk in rt.split.stream_train_items(streamed) for items in chunk)
    full_pass = (time.perf_counter() - start) * n_users / len(streamed)
    note = "" if len(streamed) == n_users else f" (extrapolated from {len(streamed):,})"
    return (
        f"| {n_users:,} | {build:.1f} | {per_user * 1e6:.0f} | {full_pass:.0f}{note} | "
        f"{events / len(streamed):.1f} | {_peak_gib():.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--draws", type=int, default=2000, help="users drawn one at a time, for the µs/user column")
    parser.add_argument("--pass-users", type=int, default=100_000, help="users streamed for the pass column")
    args = parser.parse_args()
    header = ("users", "runtime build (s)", "draw a user (µs)", "stream all users (s)", "items/user", "peak RSS (GiB)")
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|")
    for n in args.users:
        print(row(n, args.draws, args.pass_users), flush=True)


if __name__ == "__main__":
    main()
