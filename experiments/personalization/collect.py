"""Rows of the personalization tables (README.md) from run folders: ``python collect.py main|fair|control RUN_DIR...``.

Every number comes from the run's ``summary.json`` — ``final``: the last round (always evaluated); ``fairness``: the
per-group tables of that evaluation with 95% bootstrap CIs — and ``metrics.jsonl`` (median ``time/round_s``).
Lift is ``lift/*``: personal minus shared-model test HR@10 on the same users (fedsim/personalization/lift.py);
the lift gap is ``lift_gap/*``: lift(smallest group) − lift(largest group) with its paired bootstrap CI (runs made
before it existed print "—"). ``control``: seed, local epochs (``client.epochs`` + ``score_epochs`` for ``dual``) and
final test HR@10 — the compute-matched comparison of ``dual`` with ``private_embedding``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# runs made before issue 19 call the first generator "synthetic" (its attribute: group); it is "synthetic_v1" since
GROUPINGS = {"synthetic": ["group", "gender", "age"], "synthetic_v1": ["group"], "ml-100k": ["gender", "age"]}


def _load(run_dir: Path) -> tuple[dict, dict, dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, summary["config"], summary["final"]


def _dp(cfg: dict) -> str:
    return "none" if cfg["privacy"]["mechanism"] == "none" else f"central ε={cfg['privacy']['target_epsilon']:g}"


def main_row(run_dir: Path) -> str:
    summary, cfg, final = _load(run_dir)
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = statistics.median(r["time/round_s"] for r in rounds if "time/round_s" in r)
    shared = final.get("shared/test_hr@10")
    cells = [
        cfg["dataset"]["name"],
        _dp(cfg),
        cfg["personalization"]["name"],
        str(summary["rounds_completed"]),
        f"{final['test/hr@10']:.4f}",
        f"{final['test/ndcg@10']:.4f}",
        f"{final['test/recall@10_full']:.4f}",
        "—" if shared is None else f"{shared:.4f}",
        "—" if shared is None else f"{final['lift/test_hr@10']:+.4f}",
        f"{seconds:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _lift(final: dict, tag: str) -> str:
    key = f"lift/{tag}/test_hr@10"
    if key not in final:
        return "—"
    return f"{final[key]:+.3f} [{final[key + '_ci_low']:+.3f}, {final[key + '_ci_high']:+.3f}]"


def fair_rows(run_dir: Path) -> list[str]:
    """Per grouping: the smallest group that enters the gaps (the minority) and the largest, HR@10 with CI, DI ratio
    over all groups in the gaps, and each one's lift with CI."""
    summary, cfg, final = _load(run_dir)
    out = []
    for grouping in [g for g in GROUPINGS.get(cfg["dataset"]["name"], []) if g in summary["fairness"]]:
        table = summary["fairness"][grouping]["test_hr"]
        kept = sorted((g for g in table if table[g]["in_gaps"]), key=lambda g: table[g]["size"])
        cells = [cfg["dataset"]["name"], _dp(cfg), cfg["personalization"]["name"], grouping]
        for g in (kept[0], kept[-1]):
            s = table[g]
            cells.append(f"{g} ({s['size']}): {s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")
        cells.append(f"{final[f'fair/{grouping}/di_ratio_hr']:.3f}")
        cells += [_lift(final, f"{grouping}/{g}") for g in (kept[0], kept[-1])]
        gap = [k for k in final if k.startswith(f"lift_gap/{grouping}/") and k.endswith("test_hr@10")]
        ci = "" if not gap else f" [{final[gap[0] + '_ci_low']:+.3f}, {final[gap[0] + '_ci_high']:+.3f}]"
        cells.append(f"{final[gap[0]]:+.3f}{ci}" if gap else "—")
        out.append("| " + " | ".join(cells) + " |")
    return out


def control_row(run_dir: Path) -> str:
    """Data, seed, method, local epochs over the data per round, final test HR@10 (and shared-model HR@10)."""
    summary, cfg, final = _load(run_dir)
    pe = cfg["personalization"]
    epochs = cfg["client"]["epochs"] + (pe["score_epochs"] if pe["name"] == "dual" else 0)
    shared = final.get("shared/test_hr@10")
    extra = "" if shared is None else f" (shared {shared:.4f})"
    cells = [cfg["dataset"]["name"], str(cfg["seed"]), pe["name"], str(summary["rounds_completed"]), str(epochs)]
    return "| " + " | ".join([*cells, f"{final['test/hr@10']:.4f}{extra}"]) + " |"


def upload_bytes(overrides: list[str]) -> str:
    """Bytes one device uploads per round, identical for every method (the shared update only): the dense item
    table (n_items × item_width float32) and, as a sparse message, the rows its round touches (its positives and
    sampled negatives: int32 id + item_width float32 each), averaged over users in round 1."""
    import numpy as np

    from fedsim.cli import compose
    from fedsim.runtime import get_runtime

    rt = get_runtime(compose(overrides))
    width = rt.model.item_width
    touched = []
    for user in rt.split.evaluated_users.tolist():
        s = rt.samples(int(user), 1)
        touched.append(len(np.unique(np.concatenate([s.first, s.second]))))
    dense = rt.model.n_items * width * 4
    sparse = float(np.mean(touched)) * (width + 1) * 4
    return (
        f"{rt.cfg.dataset.name}: dense {dense / 1e3:.1f} kB, sparse {sparse / 1e3:.1f} kB ({np.mean(touched):.0f} rows)"
    )


if __name__ == "__main__":
    table, args = sys.argv[1], sys.argv[2:]
    if table == "bytes":  # python collect.py bytes dataset=movielens_100k
        print(upload_bytes(args))
    for folder in [] if table == "bytes" else args:
        rows = {"main": main_row, "control": control_row}
        print(rows[table](Path(folder)) if table in rows else "\n".join(fair_rows(Path(folder))))
