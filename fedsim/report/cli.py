"""``fedsim-report <sweep dir>``: frontier.csv, frontier_runs.csv, frontier.png and frontier.md in that directory.

``fedsim-report compare <run A> <run B> [--out DIR]``: compare.md, group by group, who is worse off in B than in A
(:mod:`fedsim.report.compare`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.report.collect import ReportError, collect_runs
from fedsim.report.compare import MIN_GROUP_SIZE, compare_runs
from fedsim.report.frontier import RUN_COLUMNS, SETTING_COLUMNS, aggregate, markdown, plot, run_row, write_csv


def compare_main(argv: list[str]) -> int:
    """``fedsim-report compare``: a separate parser, so ``fedsim-report <sweep dir>`` keeps its one positional."""
    parser = argparse.ArgumentParser(prog="fedsim-report compare", description="Paired per-group comparison B − A.")
    parser.add_argument("run_a", help="the reference run folder (A)")
    parser.add_argument("run_b", help="the run compared with it (B); compare.md goes here unless --out")
    parser.add_argument("--out", default=None, help="folder for compare.md (default: run B's folder)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--min-group-size",
        type=int,
        default=MIN_GROUP_SIZE,
        help=f"smallest group that can be flagged worse off (default {MIN_GROUP_SIZE})",
    )
    args = parser.parse_args(argv)
    try:
        _, text = compare_runs(args.run_a, args.run_b, args.out, args.seed, args.min_group_size)
    except ReportError as error:
        print(f"fedsim-report compare: error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(prog="fedsim-report", description=__doc__)
    parser.add_argument("sweep_dir", help="a folder of runs, e.g. results/sweeps/privacy_frontier/<timestamp>")
    args = parser.parse_args(argv)
    root = Path(args.sweep_dir)
    try:
        finished, unfinished = collect_runs(root)
    except ReportError as error:
        print(f"fedsim-report: error: {error}", file=sys.stderr)
        return 2
    runs = [run_row(r, root, r.summary.get("evaluation_k", 10)) for r in finished]
    settings = aggregate(runs)
    write_csv(root / "frontier_runs.csv", runs, RUN_COLUMNS)
    write_csv(root / "frontier.csv", settings, SETTING_COLUMNS)
    plot(root / "frontier.png", settings)
    pending = [str(r.path.relative_to(root)) for r in unfinished]
    text = markdown(settings, runs, pending, root)
    (root / "frontier.md").write_text(text)
    print(text)
    if pending:
        print(f"note: {len(pending)} unfinished run(s) listed above were not included", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
