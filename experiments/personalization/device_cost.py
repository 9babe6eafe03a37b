"""Device compute per round, per method: ``python device_cost.py [hydra overrides]``.

Times :func:`fedsim.client.device.train_shard` (local training, the method's personal step, the privacy step, the
upload) and :func:`evaluate_shard` (ranking all items, metrics) for the users of node 0 in round 1, one torch thread,
best of ``REPEATS``; prints ms per device. The same process, data and users for every method, so the ratios hold on
other machines even though the absolute numbers are this machine's.
"""

from __future__ import annotations

import sys
import time

import torch

from fedsim.cli import compose
from fedsim.client.device import evaluate_shard, train_shard
from fedsim.personalization import build_personalization
from fedsim.runtime import get_runtime

METHODS = ("private_embedding", "local_finetune", "reconstruction", "dual", "ditto")
REPEATS = 2


def cost(overrides: list[str], method: str) -> tuple[float, float]:
    rt = get_runtime(compose([*overrides, f"personalization={method}"]))
    users, shared = rt.shards[0], rt.model.init_shared(rt.cfg.seed)
    private = rt.model.init_private(users, rt.cfg.seed)
    personal_method = build_personalization(rt.cfg.personalization)
    train_s, eval_s = float("inf"), float("inf")
    for _ in range(REPEATS):
        personal = personal_method.init_state(rt, users)
        start = time.perf_counter()
        _, _, trained, _ = train_shard(rt, users, private, shared, 1, {"server-round": 1}, personal)
        middle = time.perf_counter()
        evaluate_shard(rt, users, trained, shared, 1, personal)
        end = time.perf_counter()
        train_s, eval_s = min(train_s, middle - start), min(eval_s, end - middle)
    return 1e3 * train_s / len(users), 1e3 * eval_s / len(users)


if __name__ == "__main__":
    torch.set_num_threads(1)
    overrides = ["attack=off", "audit=off", *sys.argv[1:]]
    for name in METHODS:
        train_ms, eval_ms = cost(overrides, name)
        print(f"| {name} | {train_ms:.2f} | {eval_ms:.2f} |")
