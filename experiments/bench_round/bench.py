"""Seconds per federated round on MovieLens-100K: where the time goes.

MF d=32, all 943 users every round, 1 local epoch, no DP, evaluation only at the end (excluded). Rows:

* floor, per-user loop — the local training function called once per user, in a plain Python loop, no Flower;
* floor, per shard — the same function called once per shard (vectorised over the shard's users), no Flower;
  both floors run on one core (torch single-threaded), as each Ray worker does, so "floor / cores" is the ideal
  time for the round on this machine;
* Flower in-process — the real ServerApp loop + ClientApp handlers + messages, delivered by a direct call (no Ray);
* Flower + Ray, sharded — the Simulation Engine with the default shards (4 nodes) on 2 Ray workers;
* Flower + Ray, one node per user — 943 virtual nodes, 943 messages per round.

Flower rows report the median steady-state round (round 1 — Ray start-up, actor warm-up — is excluded).
Usage: python experiments/bench_round/bench.py [--data ../shared/data/ml-100k] [--rounds 6] [--skip-per-user-nodes]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedsim.client.device import train_shard
from fedsim.config import DatasetConfig, FedsimConfig
from fedsim.data.negatives import draw_user_samples
from fedsim.ethics.risk import attack_uploads
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.training.local import train_users


def bench_config(data: str, rounds: int, **federation) -> FedsimConfig:
    cfg = FedsimConfig(name="bench", progress=False)
    cfg.dataset = DatasetConfig(name="ml-100k", path=data)
    cfg.client.epochs = 1
    cfg.federation.rounds = rounds
    cfg.evaluation.every = 10_000
    for key, value in federation.items():
        setattr(cfg.federation, key, value)
    return cfg


def floor_per_user(cfg: FedsimConfig, repeats: int) -> list[float]:
    torch.set_num_threads(1)  # the floor is single-core compute: each Ray worker gets one core
    rt = get_runtime(cfg)
    users = np.flatnonzero(rt.split.n_train() > 0)
    shared = rt.model.init_shared(0)
    private = rt.model.init_private(users, 0)
    params = rt.training_params()
    times = []
    for r in range(1, repeats + 1):
        start = time.perf_counter()
        for i, u in enumerate(users.tolist()):
            s = draw_user_samples(rt.split, u, r, 0, cfg.client.negatives, 1, cfg.model.loss)
            train_users(rt.model, shared, private[[i]], [s], params)
        times.append(time.perf_counter() - start)
    return times


def floor_per_shard(cfg: FedsimConfig, repeats: int) -> list[float]:
    torch.set_num_threads(1)
    rt = get_runtime(cfg)
    shared = rt.model.init_shared(0)
    times = []
    for r in range(1, repeats + 1):
        start = time.perf_counter()
        for shard in rt.shards:
            train_shard(rt, shard, rt.model.init_private(shard, 0), shared, r, {})
        times.append(time.perf_counter() - start)
    return times


def attack_share(cfg: FedsimConfig, repeats: int) -> tuple[float, float]:
    """Median seconds of one shard's device work (training, privacy step, attack, upload) and of the item-set attack
    inside it, timed in the same process one after the other: the attack's share of a round, free of Ray's noise."""
    torch.set_num_threads(1)
    rt = get_runtime(cfg)
    shared = rt.model.init_shared(0)
    shard = rt.shards[0]
    device, attack = [], []
    for r in range(1, repeats + 1):
        start = time.perf_counter()
        *_, result = train_shard(rt, shard, rt.model.init_private(shard, 0), shared, r, {})
        device.append(time.perf_counter() - start)
        start = time.perf_counter()
        attack_uploads(rt, result, shard, {}, np.random.default_rng(r))
        attack.append(time.perf_counter() - start)
    return statistics.median(device), statistics.median(attack)


def flower_rounds(cfg: FedsimConfig) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(cfg, tmp)
        total = time.perf_counter() - start
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return [r["time/round_s"] for r in rows if "time/round_s" in r], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/ml-100k"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--skip-per-user-nodes", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows: list[tuple[str, float, str]] = []

    cfg = bench_config(args.data, args.rounds)
    per_user = floor_per_user(cfg, 3)
    rows.append(("floor: per-user loop, no Flower, 1 core", statistics.median(per_user), "3 repeats"))
    per_shard = floor_per_shard(cfg, 5)
    floor = statistics.median(per_shard)
    rows.append(
        (f"floor: per-shard vectorised, no Flower, 1 core ({get_runtime(cfg).n_nodes} shards)", floor, "5 repeats")
    )
    device, attack = attack_share(cfg, 5)
    torch.set_num_threads(os.cpu_count() or 1)

    inproc, _ = flower_rounds(bench_config(args.data, args.rounds, backend="inprocess"))
    rows.append(("Flower in-process grid, sharded", statistics.median(inproc[1:]), f"{len(inproc) - 1} rounds"))
    sharded, total = flower_rounds(bench_config(args.data, args.rounds, backend="ray"))
    rows.append(
        (
            "Flower + Ray, sharded (default)",
            statistics.median(sharded[1:]),
            f"{len(sharded) - 1} rounds; round 1 {sharded[0]:.1f}s; run {total:.0f}s",
        )
    )
    quiet = bench_config(args.data, args.rounds, backend="ray")
    quiet.attack.item_set = False  # what the per-round item-set attack measurement costs (issue 7: <= 10%)
    no_attack, total = flower_rounds(quiet)
    rows.append(
        (
            "Flower + Ray, sharded, item-set attack off",
            statistics.median(no_attack[1:]),
            f"attack share of the default round: {1 - statistics.median(no_attack[1:]) / rows[3][1]:.0%}",
        )
    )
    if not args.skip_per_user_nodes:
        per_node, total = flower_rounds(bench_config(args.data, 3, backend="ray", users_per_node=1))
        rows.append(
            (
                "Flower + Ray, one node per user (943)",
                statistics.median(per_node[1:]),
                f"{len(per_node) - 1} rounds; round 1 {per_node[0]:.1f}s; run {total:.0f}s",
            )
        )

    print(f"\nML-100K, MF d=32, 943 users/round, 1 local epoch; {cores} cores")
    print(f"{'setup':<58}{'s/round':>10}  {'x floor/cores':>14}  notes")
    for name, seconds, note in rows:
        print(f"{name:<58}{seconds:>10.3f}  {seconds / (floor / cores):>14.2f}  {note}")
    print(
        f"\nitem-set attack inside one shard's device work: {attack * 1000:.0f} ms of {device * 1000:.0f} ms "
        f"({attack / device:.1%}; attack.users_per_round={cfg.attack.users_per_round} users per node)"
    )
    if not args.skip_per_user_nodes:
        print(f"\nsharded vs one node per user: {rows[-1][1] / rows[3][1]:.1f}x faster")


if __name__ == "__main__":
    main()
