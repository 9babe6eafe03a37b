"""The privacy–utility frontier of a sweep: one row per run, one row per setting (mean ± 95% CI over seeds).

Utility is the **final-round** test metric: picking the best round by validation is itself a data-dependent choice
that the DP guarantee does not cover, so the frontier does not use it (both are in each run's summary.json).

A *setting* is one combination of the values the sweep varies (:mod:`fedsim.report.sweep`): only runs that differ in
``seed`` alone are averaged, and the CI (Student t) is over their distinct seeds. A *line* of the frontier is a
setting without its ε keys: one line per population size N, per mechanism, per dataset, ...; each line has its own
non-private reference and its own ItemPop baseline.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from fedsim.report.collect import RunRecord
from fedsim.report.formatting import fmt
from fedsim.report.sweep import Sweep, label, order

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
    "finished",
    "stop_reason",
    "group",
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
    "group",
    "dataset",
    "mechanism",
    "dp_unit",
    "target_epsilon",
    "epsilon",
    "delta",
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
TITLES = {
    "target_epsilon": "target ε",
    "epsilon": "ε spent",
    "delta": "δ",
    "noise_multiplier": "z",
    "dp_unit": "DP unit",
    "test_hr": "test HR@10",
    "test_hr_ci95": "± CI",
    "test_ndcg": "test NDCG@10",
    "test_ndcg_ci95": "± CI",
    "hr_drop_vs_nonprivate": "HR drop vs non-private",
    "itempop_test_hr": "ItemPop HR@10",
}
"""frontier.md's column headings."""


def run_row(record: RunRecord, root: Path, k: int = 10, sweep: Sweep | None = None) -> dict[str, Any]:
    """One run's frontier numbers, its values of the sweep's varying keys (``setting``) and its line (``group``)."""
    final = record.get("final", {})
    threat = record.get("threat_model", {})
    setting = sweep.setting(record) if sweep is not None else {}
    row = {
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
        "finished": record.finished,
        "stop_reason": record.summary.get("stop_reason") or "",
        "setting": setting,
        "line": {key: setting[key] for key in sweep.line_keys} if sweep is not None else {},
        "group": label(setting, sweep.line_keys) if sweep is not None else "",
    }
    row.update({key: value for key, value in setting.items() if key not in row})
    return row


def _epsilon(final: dict[str, Any]) -> float:
    """The run's ε in its own unit: user-level ``privacy/epsilon`` or record-level ``privacy/epsilon_record_level``
    (summary.json stores ∞ as null, and a run without DP has neither: ∞)."""
    for tag in ("privacy/epsilon", "privacy/epsilon_record_level"):
        if final.get(tag) is not None:
            return float(final[tag])
    return math.inf


def _target(row: dict[str, Any]) -> Any:
    target = row["target_epsilon"]
    if row["mechanism"] == "none" or (target is None and row["noise_multiplier"] == 0.0):
        return math.inf  # no noise (summary.json stores a target of ∞ as null)
    return target if target is not None else f"z={row['noise_multiplier']}"


def _setting(row: dict[str, Any]) -> tuple:
    """What tells settings apart: every varying key but ``seed`` (and, for rows built without a sweep, the dataset,
    mechanism and target ε, as before)."""
    varying = tuple(sorted((key, repr(value)) for key, value in row.get("setting", {}).items()))
    return (row["dataset"], row["mechanism"], _target(row), varying)


def _privacy_free(row: dict[str, Any]) -> tuple:
    """The row's setting without its privacy keys: the rows that share it share data and training, so the ones
    among them without noise are its non-private reference."""
    kept = {k: v for k, v in row.get("setting", {}).items() if k != "privacy" and not k.startswith("privacy.")}
    return (row["dataset"], tuple(sorted((k, repr(v)) for k, v in kept.items())))


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95% Student-t interval (n − 1 degrees of freedom: honest at 3 seeds)."""
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return math.nan, math.nan
    mean = float(np.mean(clean))
    if len(clean) < 2:
        return mean, math.nan
    quantile = float(stats.t.ppf(0.975, len(clean) - 1))
    return mean, quantile * float(np.std(clean, ddof=1)) / math.sqrt(len(clean))


def _one_per_seed(members: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, duplicates): two runs of one setting with the same seed are one replicate, not two — the CI is over
    seeds. The finished run with the most rounds is kept."""
    best: dict[Any, dict[str, Any]] = {}
    for row in members:
        seed = repr(row["seed"])
        rank = (bool(row.get("finished", True)), row.get("rounds") or 0)
        current = best.get(seed)
        if current is None or rank > (bool(current.get("finished", True)), current.get("rounds") or 0):
            best[seed] = row
    kept = list(best.values())
    return kept, [row for row in members if not any(row is k for k in kept)]


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (a line's point at one ε): means over its seeds, 95% CIs of HR and NDCG."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_setting(row)].append(row)
    out = []
    for members_all in groups.values():
        members, duplicates = _one_per_seed(members_all)
        first = members[0]
        hr, hr_ci = mean_ci([m["test_hr"] for m in members])
        ndcg, ndcg_ci = mean_ci([m["test_ndcg"] for m in members])
        eps = [m["epsilon"] for m in members]
        out.append(
            {
                "group": first.get("group", ""),
                "setting": first.get("setting", {}),
                "line": first.get("line", {}),
                **first.get("setting", {}),
                "dataset": first["dataset"],
                "mechanism": first["mechanism"],
                "dp_unit": first["dp_unit"],
                "target_epsilon": _target(first),
                "seeds": len(members),
                "unfinished": sum(1 for m in members if not m.get("finished", True)),
                "duplicates": [d["run"] for d in duplicates],
                "epsilon": float(np.mean(eps)) if all(math.isfinite(e) for e in eps) else math.inf,
                "delta": mean_ci([m["delta"] for m in members])[0],
                "noise_multiplier": first["noise_multiplier"],
                "test_hr": hr,
                "test_hr_ci95": hr_ci,
                "test_ndcg": ndcg,
                "test_ndcg_ci95": ndcg_ci,
                "itempop_test_hr": mean_ci([m["itempop_test_hr"] for m in members])[0],
                **{column: mean_ci([m[column] for m in members])[0] for column in ETHICS_COLUMNS},
                "_context": _privacy_free(first),
            }
        )
    for o in out:
        o["hr_drop_vs_nonprivate"] = _reference_hr(o, out) - o["test_hr"]
    for o in out:
        del o["_context"]
    return sorted(out, key=_row_order)


def _reference_hr(row: dict[str, Any], settings: list[dict[str, Any]]) -> float:
    """Test HR of ``row``'s non-private reference (NaN when there is none), among the settings with the same
    non-privacy keys (same data, population and training): the mechanism-none run, else the same line's ε = ∞ run,
    else any ε = ∞ run. A line per N compares with its own N; a line per clipping norm with its own ε = ∞ point."""
    nearby = [o for o in settings if o["_context"] == row["_context"]]
    candidates = (
        [o for o in nearby if o["mechanism"] == "none"]
        or [o for o in nearby if o["line"] == row["line"] and not math.isfinite(o["epsilon"])]
        or [o for o in nearby if not math.isfinite(o["epsilon"])]
    )
    return candidates[0]["test_hr"] if candidates else math.nan


def _row_order(o: dict[str, Any]) -> tuple:
    line = tuple(order(v) for v in o["line"].values())
    return (str(o["dataset"]), line, o["group"], -o["epsilon"] if math.isfinite(o["epsilon"]) else -math.inf)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in columns})


def _line_name(s: dict[str, Any], line_keys: tuple[str, ...]) -> str:
    return label(s["setting"], line_keys) or f"{s['dataset']}: {s['mechanism']} DP"


def _x_axis(settings: list[dict[str, Any]]) -> tuple[dict[float, float], list[float], list[str]]:
    """ε → x position (log2 ε), with ε = 0 and ε = ∞ placed just outside the finite range; the ticks and labels."""
    eps = sorted({s["epsilon"] for s in settings if not math.isnan(s["epsilon"])})
    finite = [e for e in eps if 0 < e < math.inf]
    low = math.floor(math.log2(min(finite))) if finite else 0
    high = math.ceil(math.log2(max(finite))) if finite else 0
    position = {e: math.log2(e) for e in finite}
    ticks = [float(i) for i in range(low, high + 1)] if finite else []
    labels = [f"{2.0**i:g}" for i in range(low, high + 1)] if finite else []
    if 0.0 in eps:
        position[0.0] = low - 1.5
        ticks, labels = [low - 1.5, *ticks], ["0", *labels]
    if math.inf in eps:
        position[math.inf] = high + 1.5
        ticks, labels = [*ticks, high + 1.5], [*labels, "∞\n(no noise)"]
    return position, ticks, labels


def plot(
    path: Path,
    settings: list[dict[str, Any]],
    line_keys: tuple[str, ...] = (),
    panel_keys: tuple[str, ...] = (),
    k: int = 10,
    negatives: int = 99,
) -> None:
    """Test HR@k against ε spent: one line per combination of ``line_keys`` (its ItemPop dotted, same colour), one
    panel per combination of ``panel_keys``; ε = ∞ (and 0) at the ends of a log axis, error bars = 95% CI over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({label(s["setting"], panel_keys) for s in settings})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 + 4.0 * (len(panels) - 1), 4.6), sharey=True, squeeze=False)
    position, ticks, tick_labels = _x_axis(settings)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted({_line_name(s, line_keys) for s in settings}, key=lambda n: _name_order(n, settings, line_keys))
    for ax, panel in zip(axes[0], panels, strict=True):
        rows = [s for s in settings if label(s["setting"], panel_keys) == panel]
        for index, name in enumerate(names):
            colour = colours[index % len(colours)]
            dodge = 0.08 * (index - (len(names) - 1) / 2)  # lines side by side, so their error bars do not overlap
            pts = sorted([s for s in rows if _line_name(s, line_keys) == name], key=lambda s: s["epsilon"])
            pts = [s for s in pts if s["epsilon"] in position]
            if not pts:
                continue
            finite = [s for s in pts if 0 < s["epsilon"] < math.inf]
            ends = [s for s in pts if not 0 < s["epsilon"] < math.inf]
            for part, style in ((finite, "-"), (ends, "none")):
                if part:
                    ax.errorbar(
                        [position[s["epsilon"]] + dodge for s in part],
                        [s["test_hr"] for s in part],
                        yerr=[0 if math.isnan(s["test_hr_ci95"]) else s["test_hr_ci95"] for s in part],
                        marker="o" if style == "-" else "D",
                        linestyle=style,
                        color=colour,
                        capsize=3,
                        label=name if part is finite or not finite else None,
                    )
            itempop = pts[0]["itempop_test_hr"]
            if itempop is not None and not _nan(itempop):
                ax.axhline(itempop, linestyle=":", color=colour, linewidth=1, label=f"ItemPop, {name}")
        ax.set_xticks(ticks, tick_labels)
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -0.02), min(high, 1.02))  # HR lies in [0, 1]: whiskers past it are cut at the frame
        units = sorted({str(s.get("dp_unit")) for s in rows if s.get("dp_unit") not in (None, "none")})
        ax.set_xlabel(f"ε spent, log scale (DP unit: {'; '.join(units) or 'none'})", fontsize=8)
        if panel:
            ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"test HR@{k} (final round, {negatives} sampled negatives)")
    by = f"; one line per {', '.join(line_keys)}" if line_keys else ""
    fig.suptitle(f"Privacy–utility frontier (mean ± 95% CI over seeds{by})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _name_order(name: str, settings: list[dict[str, Any]], line_keys: tuple[str, ...]) -> tuple:
    """Lines in the numeric order of their values (N = 1000 before N = 10000), not the order of their labels."""
    row = next(s for s in settings if _line_name(s, line_keys) == name)
    return (*(order(row["setting"].get(k)) for k in line_keys), name)


def plots(root: Path, settings: list[dict[str, Any]], line_keys: tuple[str, ...], k: int, negatives: int) -> list[Path]:
    """frontier.png (a line per combination of every varying key) and, when several keys vary, one
    frontier_by_<key>.png per key: a line per value of that key, a panel per combination of the others."""
    written = [root / "frontier.png"]
    plot(written[0], settings, line_keys, (), k, negatives)
    if len(line_keys) > 1:
        for key in line_keys:
            path = root / f"frontier_by_{key.replace('/', '_')}.png"
            plot(path, settings, (key,), tuple(other for other in line_keys if other != key), k, negatives)
            written.append(path)
    return written


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _seeds(s: dict[str, Any]) -> str:
    return str(s["seeds"]) + (f" ({s['unfinished']} unfinished)" if s.get("unfinished") else "")


def markdown(
    settings: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    unfinished: list[str],
    root: Path,
    line_keys: tuple[str, ...] = (),
    included: list[str] | None = None,
) -> str:
    """frontier.md: the utility table, the fairness/exposure/risk table, and every run that was left out or
    included although unfinished (``unfinished`` and ``included``: "`path` (stop reason)" entries)."""
    keys = list(line_keys)
    columns = [*keys, *(c for c in UTILITY_COLUMNS if c != "group")]
    lines = [
        f"# Privacy–utility frontier: `{root}`",
        "",
        "Utility: final-round test HR@10 / NDCG@10 (leave-one-out by time, 99 sampled negatives per user). "
        "ε: in the unit of the `DP unit` column (user-level central DP: add/remove one user, Poisson sampling; "
        "record-level DP-SGD: one interaction, `privacy/epsilon_record_level`), from the accountant and at the δ "
        "in each run's summary (threat_model). Mean ± 95% CI (Student t) over seeds.",
        "",
    ]
    if keys:
        lines += [
            f"Settings: the sweep varies {', '.join(f'`{k}`' for k in keys)} besides ε and the seed; each row "
            "averages only runs that differ in `seed`; the HR drop is against the non-private run with the same "
            "non-privacy settings (mechanism none, else the same line at ε = ∞).",
            "",
        ]
    lines += [
        "| " + " | ".join(TITLES.get(c, c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for s in settings:
        cells = [_seeds(s) if c == "seeds" else fmt(s.get(c), 8 if c == "delta" else 4) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    present = [c for c in ETHICS_COLUMNS if any(s.get(c) is not None and not _nan(s.get(c)) for s in settings)]
    if present:
        lines += [
            "",
            "Fairness, exposure and measured risk at the final round (means over seeds; DI = min/max group "
            "HR@10, EOD = Recall@10 gap, UGF = NDCG@10 gap; long-tail share of recommended slots; attack AUCs "
            "and the accountant's ceiling on any attack's advantage):",
            "",
            "| " + " | ".join([*keys, "dataset", "mechanism", "target ε", *present]) + " |",
            "|" + "---|" * (len(keys) + 3 + len(present)),
        ]
        for s in settings:
            cells = [fmt(s.get(c)) for c in [*keys, "dataset", "mechanism", "target_epsilon"]]
            lines.append("| " + " | ".join(cells + [fmt(s.get(c), 3) for c in present]) + " |")
    lines += ["", f"{len(runs)} runs reported (one row each in frontier_runs.csv)."]
    duplicates = [d for s in settings for d in s.get("duplicates", [])]
    if duplicates:
        lines += [
            "",
            f"Repeated seeds ({len(duplicates)}), not counted (another run of the same setting has the same seed): "
            + ", ".join(f"`{d}`" for d in duplicates),
        ]
    if included:
        lines += [
            "",
            f"Unfinished runs included on request (--include-unfinished) ({len(included)}): " + "; ".join(included),
        ]
    if unfinished:
        lines += [
            "",
            f"Unfinished runs ({len(unfinished)}), not included (fedsim-report --include-unfinished shows those that "
            "evaluated): " + "; ".join(unfinished),
        ]
    return "\n".join(lines) + "\n"
