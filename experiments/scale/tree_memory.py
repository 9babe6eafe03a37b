"""Run a command and report the peak memory of its whole process tree (Ray's raylet, GCS and workers included).

Samples every ``--every`` seconds: RSS summed over the tree (counts a memory-mapped file page once per process that
touched it), PSS (shares each such page among them — what the tree really occupies) and the RSS of the command's own
process (the driver: with Ray, the workers are other processes). Linux only (/proc).

    python experiments/scale/tree_memory.py -- fedsim dataset.n_users=1000000 federation.participation=0.001 ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += _children(pid)
    return seen


def _kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    child = subprocess.Popen(command)
    peak_rss = peak_pss = peak_procs = peak_driver = 0
    while child.poll() is None:
        pids = _tree(child.pid)
        sizes = [_kib(p) for p in pids]
        peak_driver = max(peak_driver, sizes[0][0])
        peak_rss = max(peak_rss, sum(r for r, _ in sizes))
        peak_pss = max(peak_pss, sum(p for _, p in sizes))
        peak_procs = max(peak_procs, len(pids))
        time.sleep(args.every)
    wall = time.perf_counter() - start
    print(
        f"tree_memory: exit {child.returncode}, wall {wall:.1f} s, peak tree PSS {peak_pss / 2**20:.2f} GiB, "
        f"peak tree RSS {peak_rss / 2**20:.2f} GiB, peak driver RSS {peak_driver / 2**20:.2f} GiB, "
        f"up to {peak_procs} processes",
        file=sys.stderr,
    )
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
