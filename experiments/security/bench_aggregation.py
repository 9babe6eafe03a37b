"""Server-side cost of each robust rule over users, against the plain mean, on the poisoning_demo's shape.

    python experiments/security/bench_aggregation.py

n = 600 users per round (participation 1), d = 800 items × (16 + 1) columns = 13,600 coordinates, each user's update
touching ~5% of the item rows (the synthetic world's mean activity). Median of 5 repetitions, one thread.
"""

from __future__ import annotations

import time

import numpy as np

from fedsim.config import StrategyConfig
from fedsim.registry import names, resolve


def main(n: int = 600, items: int = 800, width: int = 17, touched: float = 0.05, repeats: int = 5) -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((n, items)) < touched
    updates = (rng.normal(scale=0.02, size=(n, items, width)) * rows[:, :, None]).reshape(n, items * width)
    cfg = StrategyConfig()
    print(f"| rule | seconds per round (n={n}, d={items * width}) | × mean |")
    print("|---|---|---|")
    base = None
    for name in names("robust"):
        rule = resolve("robust", name)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            rule(updates, cfg)
            times.append(time.perf_counter() - started)
        seconds = float(np.median(times))
        base = base or seconds
        print(f"| {name} | {seconds:.4f} | {seconds / base:.1f} |")


if __name__ == "__main__":
    main()
