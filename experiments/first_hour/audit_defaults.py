"""What a healthy default run measures against each default audit rule (issue 20 item 5).

Usage: run ``fedsim seed=S output_dir=<dir>`` for a few seeds, then
``python experiments/first_hour/audit_defaults.py <dir> [<dir> ...]``. Prints, per run, the range over its
evaluations of every metric a default rule reads (or used to read), and the bootstrap 95 % CI of the validation DI
ratio at the last evaluation with each grouping's sizes — the numbers the bounds in
``fedsim.config.default_audit_rules`` are set from (experiments/first_hour/README.md).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from fedsim.ethics.fairness import gap_cis

TAGS = (
    "fair_val/gender/di_ratio_hr",
    "fair_val/age/di_ratio_hr",
    "fair_val/activity_top5/di_ratio_hr",
    "fair_val/gender/eod_recall",
    "fair_val/activity_top5/eod_recall",
    "risk/itemset_auc",
    "util/val_hr_lift_vs_itempop",
    "privacy/epsilon",
)
GROUPINGS = ("gender", "age", "activity_top5")


def main(folders: list[str]) -> None:
    print(f"{'run':<12}{'metric':<38}{'min':>8}{'max':>8}  evaluations")
    for folder in map(Path, folders):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        evaluated = [r for r in rows if "val/hr@10" in r and not r.get("final_evaluation_of_kept_model")]
        for tag in TAGS:
            values = [r[tag] for r in (evaluated if tag != "risk/itemset_auc" else rows) if r.get(tag) is not None]
            if values:
                print(f"{folder.name:<12}{tag:<38}{min(values):>8.3f}{max(values):>8.3f}  {len(values)}")
        users = list(csv.DictReader((folder / "per_user.csv").open()))
        hr = np.array([float(u["val_hr"]) for u in users])
        recall = np.array([float(u["val_recall_full"]) for u in users])
        for grouping in GROUPINGS:
            labels = np.array([u[grouping] for u in users])
            names, counts = np.unique(labels, return_counts=True)
            ci = gap_cis(hr, recall, labels, seed=0)
            sizes = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))
            print(f"{folder.name:<12}DI CI {grouping:<32}{ci['di_ratio_hr_ci_low']:>8.3f}"
                  f"{ci['di_ratio_hr_ci_high']:>8.3f}  groups: {sizes}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
