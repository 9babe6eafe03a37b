"""The README table from finished runs: python experiments/fairness_mitigation/table.py <run dir> ...

Per run: test HR@10 (99 sampled negatives) with its bootstrap CI, DI ratio (min/max group HR@10) and EOD (max − min
group Recall@10, full ranking) with stratified-bootstrap CIs (fedsim.ethics.fairness.gap_cis) for each grouping named
in GROUPINGS that the data has, and the exposure of everyone's top-10 lists (coverage, long-tail share, Gini) from
summary.json's final evaluation. Everything is recomputed from the run's own per_user.csv and summary.json.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from fedsim.ethics.fairness import bootstrap_ci, fairness_gaps, gap_cis

GROUPINGS = ("gender", "age", "group", "activity_top5")


def row(run_dir: Path) -> str:
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg, final = summary["config"], summary["final"]
    with (run_dir / "per_user.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    hr = np.array([float(r["test_hr"]) for r in rows])
    recall = np.array([float(r["test_recall_full"]) for r in rows])
    low, high = bootstrap_ci(hr, cfg["seed"])
    eps = cfg["privacy"]["target_epsilon"]
    cells = [
        cfg["mitigation"]["name"],
        "∞ (z = 0)" if eps is None or eps == float("inf") else f"{final.get('privacy/epsilon', float('nan')):.2f}",
        f"{hr.mean():.3f} [{low:.3f}, {high:.3f}]",
    ]
    for grouping in GROUPINGS:
        if grouping not in rows[0]:
            continue
        labels = np.array([r[grouping] for r in rows])
        min_size = cfg["fairness"]["min_group_size"]
        gaps = fairness_gaps(hr, recall, hr, labels, min_size)
        ci = gap_cis(hr, recall, labels, cfg["seed"], min_size)
        cells.append(
            f"{gaps['di_ratio_hr']:.3f} [{ci['di_ratio_hr_ci_low']:.3f}, {ci['di_ratio_hr_ci_high']:.3f}] / "
            f"{gaps['eod_recall']:.3f} [{ci['eod_recall_ci_low']:.3f}, {ci['eod_recall_ci_high']:.3f}]"
        )
    cells += [f"{final['items/coverage']:.3f}", f"{final['items/long_tail_share']:.3f}", f"{final['items/gini']:.3f}"]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(row(Path(folder)))
