"""``fedsim-report <sweep dir>``: frontier.csv, frontier_runs.csv, frontier.png and frontier.md in that directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.report.collect import ReportError, collect_runs
from fedsim.report.frontier import RUN_COLUMNS, SETTING_COLUMNS, aggregate, markdown, plot, run_row, write_csv


def main(argv: list[str] | None = None) -> int:
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
