"""The privacy–utility frontier of a sweep: one row per run, one row per setting (mean ± 95% CI over seeds).

Utility is the **final-round** test metric: picking the best round by validation is itself a data-dependent choice
that the DP guarantee does not cover, so the frontier does not use it (both are in each run's summary.json).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.report.collect import RunRecord
from fedsim.report.formatting import fmt

# two-sided 95% Student-t quantiles for n-1 degrees of freedom (n = seeds), so the CI is honest for 3 seeds
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}

RUN_COLUMNS = [
    "run",
    "dataset",
    "mechanism",
    "target_epsilon",
    "noise_multiplier",
    "clipping_norm",
    "q",
    "seed",
    "rounds",
    "epsilon",
    "delta",
    "test_hr",
    "test_ndcg",
    "itempop_test_hr",
]

# fairness, exposure and risk at the final round: what privacy costs in fairness, what personalisation costs in risk
ETHICS_COLUMNS = {
    "di_gender": "fair/gender/di_ratio_hr",
    "di_age": "fair/age/di_ratio_hr",
    "di_group": "fair/group/di_ratio_hr",
    "di_activity": "fair/activity_top5/di_ratio_hr",
    "eod_activity": "fair/activity_top5/eod_recall",
    "ugf_activity": "fair/activity_top5/ugf_gap_ndcg",
    "long_tail_share": "items/long_tail_share",
    "coverage": "items/coverage",
    "gini": "items/gini",
    "itemset_auc": "risk/itemset_auc",
    "mia_auc": "risk/mia_auc",
    "max_advantage_bound": "risk/max_advantage_bound",
}
RUN_COLUMNS += list(ETHICS_COLUMNS)
UTILITY_COLUMNS = [
    "dataset",
    "mechanism",
    "dp_unit",
    "target_epsilon",
    "epsilon",
    "noise_multiplier",
    "seeds",
    "test_hr",
    "test_hr_ci95",
    "test_ndcg",
    "test_ndcg_ci95",
    "hr_drop_vs_nonprivate",
    "itempop_test_hr",
]
SETTING_COLUMNS = [*UTILITY_COLUMNS, *ETHICS_COLUMNS]


def run_row(record: RunRecord, root: Path, k: int = 10) -> dict[str, Any]:
    final = record.get("final", {})
    threat = record.get("threat_model", {})
    return {
        "run": str(record.path.relative_to(root)),
        "dataset": record.get("config.dataset.name"),
        "mechanism": record.get("config.privacy.mechanism"),
        "dp_unit": threat.get("unit", "none"),
        "target_epsilon": record.get("config.privacy.target_epsilon"),
        "noise_multiplier": threat.get(
            "noise_multiplier", 0.0 if record.get("config.privacy.mechanism") == "none" else None
        ),
        "clipping_norm": record.get("config.privacy.clipping_norm")
        if threat.get("noise_multiplier") is not None
        else None,
        "q": record.get("config.federation.participation"),
        "seed": record.get("config.seed"),
        "rounds": record.get("rounds_completed"),
        "epsilon": _epsilon(final),
        "delta": final.get("privacy/delta"),
        "test_hr": final.get(f"test/hr@{k}"),
        "test_ndcg": final.get(f"test/ndcg@{k}"),
        "itempop_test_hr": record.get(f"baselines.ItemPop.test/hr@{k}"),
        **{column: final.get(tag) for column, tag in ETHICS_COLUMNS.items()},
    }


def _epsilon(final: dict[str, Any]) -> float:
    """The run's ε in its own unit: user-level ``privacy/epsilon`` or record-level ``privacy/epsilon_record_level``
    (summary.json stores ∞ as null, and a run without DP has neither: ∞)."""
    for tag in ("privacy/epsilon", "privacy/epsilon_record_level"):
        if final.get(tag) is not None:
            return float(final[tag])
    return math.inf


def _setting(row: dict[str, Any]) -> tuple:
    target = row["target_epsilon"]
    if row["mechanism"] == "none" or (target is None and row["noise_multiplier"] == 0.0):
        target = math.inf  # no noise (summary.json stores a target of ∞ as null)
    return (row["dataset"], row["mechanism"], target if target is not None else f"z={row['noise_multiplier']}")


def mean_ci(values: list[float]) -> tuple[float, float]:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return math.nan, math.nan
    mean = float(np.mean(clean))
    if len(clean) < 2:
        return mean, math.nan
    return mean, T95.get(len(clean) - 1, 1.96) * float(np.std(clean, ddof=1)) / math.sqrt(len(clean))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_setting(row)].append(row)
    out = []
    for (dataset, mechanism, target), members in groups.items():
        hr, hr_ci = mean_ci([m["test_hr"] for m in members])
        ndcg, ndcg_ci = mean_ci([m["test_ndcg"] for m in members])
        eps = [m["epsilon"] for m in members]
        out.append(
            {
                "dataset": dataset,
                "mechanism": mechanism,
                "dp_unit": members[0]["dp_unit"],
                "target_epsilon": target,
                "seeds": len(members),
                "epsilon": float(np.mean(eps)) if all(math.isfinite(e) for e in eps) else math.inf,
                "noise_multiplier": members[0]["noise_multiplier"],
                "test_hr": hr,
                "test_hr_ci95": hr_ci,
                "test_ndcg": ndcg,
                "test_ndcg_ci95": ndcg_ci,
                "itempop_test_hr": mean_ci([m["itempop_test_hr"] for m in members])[0],
                **{column: mean_ci([m[column] for m in members])[0] for column in ETHICS_COLUMNS},
            }
        )
    for dataset in {o["dataset"] for o in out}:
        same = [o for o in out if o["dataset"] == dataset]
        reference = [o for o in same if o["mechanism"] == "none"] or [
            o for o in same if not math.isfinite(o["epsilon"])
        ]
        base_hr = reference[0]["test_hr"] if reference else math.nan
        for o in same:
            o["hr_drop_vs_nonprivate"] = base_hr - o["test_hr"] if reference else math.nan
    return sorted(out, key=lambda o: (str(o["dataset"]), -o["epsilon"] if math.isfinite(o["epsilon"]) else -math.inf))


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in columns})


def plot(path: Path, settings: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for dataset in sorted({str(s["dataset"]) for s in settings}):
        rows = [s for s in settings if str(s["dataset"]) == dataset]
        finite = [s for s in rows if math.isfinite(s["epsilon"]) and s["epsilon"] > 0]
        for mechanism in sorted({s["mechanism"] for s in finite}):
            pts = sorted([s for s in finite if s["mechanism"] == mechanism], key=lambda s: s["epsilon"])
            ax.errorbar(
                [s["epsilon"] for s in pts],
                [s["test_hr"] for s in pts],
                yerr=[0 if math.isnan(s["test_hr_ci95"]) else s["test_hr_ci95"] for s in pts],
                marker="o",
                capsize=3,
                label=f"{dataset}: {mechanism} DP",
            )
        for s in rows:
            if not math.isfinite(s["epsilon"]):
                ax.axhline(
                    s["test_hr"], linestyle="--", color="black", label=f"{dataset}: non-private ({s['mechanism']}, ε=∞)"
                )
                break
        if rows and rows[0]["itempop_test_hr"] is not None:
            ax.axhline(rows[0]["itempop_test_hr"], linestyle=":", color="gray", label=f"{dataset}: ItemPop")
    ax.set_xscale("log")
    units = sorted({str(s.get("dp_unit")) for s in settings if s.get("dp_unit") not in (None, "none")})
    ax.set_xlabel(f"ε spent (DP unit: {'; '.join(units) or 'none'}; accountant per run: frontier.md)")
    ax.set_ylabel("test HR@10 (final round, 99 sampled negatives)")
    ax.set_title("Privacy–utility frontier (mean ± 95% CI over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def markdown(settings: list[dict[str, Any]], runs: list[dict[str, Any]], unfinished: list[str], root: Path) -> str:
    lines = [
        f"# Privacy–utility frontier: `{root}`",
        "",
        "Utility: final-round test HR@10 / NDCG@10 (leave-one-out by time, 99 sampled negatives per user). "
        "ε: in the unit of the `DP unit` column (user-level central DP: add/remove one user, Poisson sampling; "
        "record-level DP-SGD: one interaction, `privacy/epsilon_record_level`), from the accountant and at the δ "
        "in each run's summary (threat_model). Mean ± 95% CI (Student t) over seeds.",
        "",
        "| dataset | mechanism | DP unit | target ε | ε spent | z | seeds | test HR@10 | ± CI | test NDCG@10 | ± CI | "
        "HR drop vs non-private | ItemPop HR@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in settings:
        lines.append("| " + " | ".join(fmt(s[c]) if c != "seeds" else str(s[c]) for c in UTILITY_COLUMNS) + " |")
    present = [c for c in ETHICS_COLUMNS if any(s.get(c) is not None and not _nan(s.get(c)) for s in settings)]
    if present:
        lines += [
            "",
            "Fairness, exposure and measured risk at the final round (means over seeds; DI = min/max group "
            "HR@10, EOD = Recall@10 gap, UGF = NDCG@10 gap; long-tail share of recommended slots; attack AUCs "
            "and the accountant's ceiling on any attack's advantage):",
            "",
            "| dataset | mechanism | target ε | " + " | ".join(present) + " |",
            "|---|---|---|" + "---|" * len(present),
        ]
        for s in settings:
            lines.append(
                f"| {fmt(s['dataset'])} | {fmt(s['mechanism'])} | {fmt(s['target_epsilon'])} | "
                + " | ".join(fmt(s.get(c), 3) for c in present)
                + " |"
            )
    lines += ["", f"{len(runs)} finished runs (one row each in frontier_runs.csv)."]
    if unfinished:
        lines += ["", f"Unfinished runs ({len(unfinished)}), not included: " + ", ".join(f"`{u}`" for u in unfinished)]
    return "\n".join(lines) + "\n"
