"""Seconds per federated round: the compute floor, where its CPU goes, and what Flower adds.

Default: MovieLens-100K, MF d=32, all 943 users every round, 1 local epoch, no DP, evaluation only at the end
(excluded). ``--population N``: the synthetic population of N users with a 0.1% cohort (``fedsim
dataset.n_users=N federation.participation=0.001``, the other settings at their defaults). Rows:

* floor, per-user loop (ML-100K only) — the local training function called once per user, no Flower;
* floor, per shard — one round's device work (``train_shard``: samples, training, privacy step, item-set attack,
  upload) of every shard's sampled users, no Flower, on one core (torch single-threaded, as each Ray worker runs):
  "floor / cores" is the ideal round on this machine, and the stage table says where its CPU goes
  (``time.process_time``, less sensitive to other load than wall time);
* Flower in-process (ML-100K only) — the real ServerApp loop + ClientApp handlers + messages, delivered by a direct
  call (no Ray), one node after another on one core (compare it with the floor, not floor / cores);
* Flower + Ray, sharded — the Simulation Engine with the default shards (4 nodes) on 2 Ray workers (the default);
* Flower + Ray, item-set attack off; and, with ``--per-user-nodes``, one node per user (943 nodes and messages).

Flower rows report the median of the steady rounds' ``time/round_s`` (round 1 — Ray start-up, actor warm-up, the
nodes' first state — is excluded), and the median CPU seconds a steady round costs all processes together (driver,
Ray, workers; from /proc, between consecutive rows of ``metrics.jsonl``, so the server's per-round reporting is in).
The load average before and after is printed: on a shared machine compare ratios from one sitting. Extra arguments
are Hydra overrides for every row (e.g. ``privacy=central``).

  python experiments/bench_round/bench.py [--rounds 8] [--per-user-nodes] [overrides ...]
  python experiments/bench_round/bench.py --population 1000000 [--rounds 8] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fedsim.cli import compose
from fedsim.client.device import train_shard
from fedsim.config import FedsimConfig
from fedsim.data.negatives import draw_user_samples
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.server.sampling import UserSampler
from fedsim.training.local import train_users

STAGES = ("samples", "train", "privacy", "attack", "upload")
DATA = Path(__file__).resolve().parents[3] / "shared/data/ml-100k"


def bench_overrides(args: argparse.Namespace) -> list[str]:
    common = ["progress=false", f"federation.rounds={args.rounds}", "evaluation.every=100000", "checkpoint.every=0"]
    if args.population:
        return [f"dataset.n_users={args.population}", "federation.participation=0.001", *common, *args.overrides]
    return ["dataset=movielens_100k", f"dataset.path={args.data}", "client.epochs=1", *common, *args.overrides]


def floor_per_user(cfg: FedsimConfig, repeats: int) -> list[float]:
    torch.set_num_threads(1)  # the floor is single-core compute: each Ray worker gets one core
    rt = get_runtime(cfg)
    users = np.flatnonzero(rt.split.n_train() > 0)
    shared = rt.model.init_shared(0)
    private = rt.model.init_private(users, 0)
    params = rt.training_params()
    times = []
    for r in range(1, repeats + 1):
        start = time.process_time()
        for i, u in enumerate(users.tolist()):
            s = draw_user_samples(rt.split, u, r, 0, cfg.client.negatives, cfg.client.epochs, cfg.model.loss)
            train_users(rt.model, shared, private[[i]], [s], params)
        times.append(time.process_time() - start)
    return times


def floor_per_shard(cfg: FedsimConfig, repeats: int) -> tuple[list[float], dict[str, float]]:
    """CPU seconds of each round's device work over all shards (each shard's users of the round's cohort, drawn as
    the server draws it), and the median CPU seconds of each stage."""
    torch.set_num_threads(1)
    rt = get_runtime(cfg)
    shared = rt.model.init_shared(0)
    f = cfg.federation
    sampler = UserSampler(rt.eligible, f.participation, f.sampling, cfg.seed)
    partition = rt.partition_of_user()
    totals, stages = [], []
    for r in range(repeats + 1):  # round 0: warm-up (first-call allocations, imports)
        cohort = sampler.sample(r + 1)
        work = [cohort[partition[cohort] == p] for p in range(rt.n_nodes)]
        work = [(users, rt.model.init_private(users, cfg.seed)) for users in work if len(users)]
        timings: dict[str, float] = {}
        start = time.process_time()
        for users, private in work:
            train_shard(rt, users, private, shared, r + 1, {}, timings=timings)
        if r:
            totals.append(time.process_time() - start)
            stages.append(timings)
    return totals, {stage: statistics.median(t.get(stage, 0.0) for t in stages) for stage in STAGES}


def _tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and all its live descendants (the driver, Ray's GCS and raylet,
    the workers), read from /proc; NaN where there is no /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # exited meanwhile
                parent[int(entry.name)] = int(fields[1])
                cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    except OSError:
        return float("nan")
    me, total = os.getpid(), 0.0
    for pid in cpu:
        ancestor = pid
        while ancestor not in (me, 0, 1) and ancestor in parent:
            ancestor = parent[ancestor]
        total += cpu[pid] if ancestor == me else 0.0
    return total


class _RoundCpu(threading.Thread):
    """Samples the process tree's CPU seconds each time ``metrics.jsonl`` gains a row (a round ended): the CPU
    cost of a round over every process — less sensitive to other load than wall time."""

    def __init__(self, metrics: Path) -> None:
        super().__init__(daemon=True)
        self.metrics, self.at_row = metrics, {0: _tree_cpu_seconds()}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            rows = self.metrics.read_text().count("\n") if self.metrics.exists() else 0
            if rows not in self.at_row:
                self.at_row[rows] = _tree_cpu_seconds()

    def per_round(self, first: int, last: int) -> float:
        """Median CPU seconds of rounds first..last (1-based; rows that were missed are skipped)."""
        seconds = [
            self.at_row[r] - self.at_row[r - 1] for r in range(first, last + 1) if {r, r - 1} <= set(self.at_row)
        ]
        return statistics.median(seconds) if seconds else float("nan")


def flower_rounds(cfg: FedsimConfig) -> tuple[list[float], float, float]:
    """Each round's ``time/round_s``, the run's wall time, and the median CPU seconds of a steady round (all
    processes; a round's row also carries its reporting, so this includes the server's per-round work)."""
    with tempfile.TemporaryDirectory() as tmp:
        monitor = _RoundCpu(Path(tmp) / "metrics.jsonl")
        monitor.start()
        start = time.perf_counter()
        run(cfg, tmp)
        total = time.perf_counter() - start
        monitor.stop.set()
        monitor.join()
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    rounds = [r["time/round_s"] for r in rows if "time/round_s" in r]
    return rounds, total, monitor.per_round(2, len(rounds) - 1)  # the last row also holds the final evaluation


def steady(rounds: list[float], total: float, cpu: float) -> tuple[float, float, str]:
    return statistics.median(rounds[1:]), cpu, f"{len(rounds) - 1} rounds; round 1 {rounds[0]:.1f}s; run {total:.0f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="MovieLens-100K folder")
    parser.add_argument("--population", type=int, default=0, help="synthetic population of this many users")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-user-nodes", action="store_true", help="also the 943-node row (ML-100K, ~1 min)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every row")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    overrides = bench_overrides(args)
    cfg = compose(overrides)
    rt = get_runtime(cfg)
    rows: list[tuple[str, float, float, str]] = []

    if not args.population:
        per_user = floor_per_user(cfg, 3)
        per_user_cpu = statistics.median(per_user)
        rows.append(("floor: per-user loop, no Flower, 1 core", per_user_cpu, per_user_cpu, "3 repeats"))
    per_shard, stages = floor_per_shard(cfg, 7)
    floor = statistics.median(per_shard)
    rows.append((f"floor: per shard, vectorised, no Flower, 1 core ({rt.n_nodes} shards)", floor, floor, "7 rounds"))

    if not args.population:
        inproc = flower_rounds(compose([*overrides, "federation.backend=inprocess"]))
        rows.append(("Flower in-process grid, sharded, 1 core", *steady(*inproc)))
    default_round, default_cpu, note = steady(*flower_rounds(compose([*overrides, "federation.backend=ray"])))
    rows.append((f"Flower + Ray, sharded ({rt.n_nodes} nodes; the default)", default_round, default_cpu, note))
    no_attack = flower_rounds(compose([*overrides, "federation.backend=ray", "attack.item_set=false"]))
    rows.append(("Flower + Ray, sharded, item-set attack off", *steady(*no_attack)))
    if args.per_user_nodes and not args.population:
        per_node = flower_rounds(compose([*overrides, "federation.rounds=3", "federation.users_per_node=1"]))
        rows.append(("Flower + Ray, one node per user (943)", *steady(*per_node)))

    cohort = f"{cfg.federation.participation:g} of {rt.split.n_users} users" if args.population else "943 users"
    print(f"\n{' '.join(overrides)}")
    print(f"{cohort} per round, {cfg.client.epochs} local epoch(s); {cores} cores; ", end="")
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'setup':<58}{'s/round':>8}  {'x floor/cores':>13}  {'CPU s/round':>11}  notes")
    for name, seconds, cpu, note in rows:
        print(f"{name:<58}{seconds:>8.3f}  {seconds / (floor / cores):>13.2f}  {cpu:>11.3f}  {note}")
    print(f"\nwhere the floor's CPU goes (median CPU s per round, all {rt.n_nodes} shards):")
    for stage in STAGES:
        print(f"  {stage:<10}{stages[stage]:>8.3f}  {stages[stage] / floor:>6.1%}")
    print(f"\nFlower + Ray over floor/cores: {default_round - floor / cores:+.3f} s per round (wall); ", end="")
    print(f"{default_cpu - floor:+.3f} CPU s per round over the floor (every process)")


if __name__ == "__main__":
    main()
