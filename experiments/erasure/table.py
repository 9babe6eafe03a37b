"""The README table from finished erasure runs: python experiments/erasure/table.py <run dir> ...

Per run, from summary.json: the policy, ε, the membership attack's AUC on erased users vs never-members before the
request and at the end (95% bootstrap CI), the same attack on the members who stayed (the reference), the final test
HR@10 (99 sampled negatives), the cost in rounds and the DP bound the erased users keep.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _auc(m: dict | None, tag: str) -> str:
    if not m or f"mia_auc_{tag}" not in m:
        return "–"
    return f"{m[f'mia_auc_{tag}']:.3f} [{m[f'mia_auc_{tag}_ci_low']:.3f}, {m[f'mia_auc_{tag}_ci_high']:.3f}]"


def row(run_dir: Path) -> str:
    summary = json.loads((run_dir / "summary.json").read_text())
    erasure, final = summary["erasure"], summary["final"]
    before, after = erasure["before"], erasure["after"]
    eps = final.get("privacy/epsilon")
    bound = (before or {}).get("dp_advantage_bound")
    cells = [
        erasure["policy"],
        "none" if summary["config"]["privacy"]["mechanism"] == "none" else f"{eps:.2f}",
        f"{erasure['erased_users']} ({before.get('erased_members', 0):.0f} members)",
        f"{_auc(before, 'erased')} (r{before['round']})",
        f"{_auc(after, 'erased')} (r{after['round']})",
        f"{_auc(before, 'retained')} → {_auc(after, 'retained')}",
        f"{final['test/hr@10']:.3f}",
        erasure["cost"],
        "–" if bound is None or bound >= 1 else f"{bound:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(row(Path(folder)))
