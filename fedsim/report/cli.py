"""``fedsim-report <sweep dir> [--include-unfinished]``: frontier.csv, frontier_runs.csv, frontier.png (and, when
several settings vary, frontier_by_<key>.png) and frontier.md in that directory.

Runs that did not finish (``"finished": false`` in summary.json: stopped by Ctrl-C, a budget or a pause, or dead
before writing it) are left out of the frontier and listed with their ``stop_reason``; ``--include-unfinished``
reports those that evaluated at least once, marked as such.

``fedsim-report compare <run A> <run B> [--out DIR]``: compare.md, group by group, who is worse off in B than in A
(:mod:`fedsim.report.compare`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.report.collect import ReportError, RunRecord, collect_runs
from fedsim.report.compare import MIN_GROUP_SIZE, compare_runs
from fedsim.report.frontier import RUN_COLUMNS, SETTING_COLUMNS, aggregate, markdown, plots, run_row, write_csv
from fedsim.report.sweep import describe


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


def _entry(record: RunRecord, root: Path) -> str:
    return f"`{record.path.relative_to(root)}` ({record.stop_reason()})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(prog="fedsim-report", description=__doc__)
    parser.add_argument("sweep_dir", help="a folder of runs, e.g. results/sweeps/privacy_frontier/<timestamp>")
    parser.add_argument(
        "--include-unfinished",
        action="store_true",
        help="also report runs stopped early that evaluated at least once (marked in the tables)",
    )
    args = parser.parse_args(argv)
    root = Path(args.sweep_dir)
    try:
        reported, left_out = collect_runs(root, include_unfinished=args.include_unfinished)
    except ReportError as error:
        print(f"fedsim-report: error: {error}", file=sys.stderr)
        return 2
    sweep = describe(reported)
    k = int(reported[0].summary.get("evaluation_k", 10))
    negatives = int(reported[0].get("config.evaluation.n_negatives", 99))
    runs = [run_row(r, root, k, sweep) for r in reported]
    settings = aggregate(runs)
    extra = [key for key in sweep.keys if key not in RUN_COLUMNS]
    write_csv(root / "frontier_runs.csv", runs, [*RUN_COLUMNS, *extra])
    lines = [key for key in extra if key in sweep.line_keys]  # the values of each line's keys, after its label
    write_csv(root / "frontier.csv", settings, [SETTING_COLUMNS[0], *lines, *SETTING_COLUMNS[1:]])
    plots(root, settings, sweep.line_keys, k, negatives)
    pending = [_entry(r, root) for r in left_out]
    included = [_entry(r, root) for r in reported if not r.finished]
    text = markdown(settings, runs, pending, root, sweep.line_keys, included)
    (root / "frontier.md").write_text(text)
    print(text)
    if pending:
        print(f"note: {len(pending)} unfinished run(s) listed above were not included", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
