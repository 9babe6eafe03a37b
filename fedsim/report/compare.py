"""``fedsim-report compare <run A> <run B>``: who is better or worse off in run B than in run A, group by group.

A change that improves the mean can still leave a group worse off (more DP noise typically costs light users and
minorities most), and two fairness tables side by side hide it: their CIs overlap even when every user of a group
lost. Both runs evaluate the *same users on the same split* (same dataset and seed), so the comparison is paired:
per user d = B − A, per group the mean of d with a percentile bootstrap 95% CI that resamples the group's users
(seeded). A group whose CI lies entirely below 0 is flagged "significantly worse off" — when it has at least
``min_group_size`` users, since a bootstrap over a handful of users says little.

Groupings are every column of ``per_user.csv`` between ``n_train`` and the metrics (role, the dataset's attributes,
activity groups), plus everyone.

Exposure is compared too — it is what a fairness mitigation such as ``mitigation=rerank`` exists to change, and a
comparison of HR alone would show only its price: per user, the long-tail share of the top-K the user was shown
(``long_tail_share`` in ``per_user.csv``), paired like the metrics (a change there is not flagged "worse off": it
is the items', not the user's, outcome); and for the catalogue, the final coverage, Gini of exposure, average
recommended popularity and long-tail share of each run (``items/*`` in ``summary.json``) side by side.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.ethics.fairness import bootstrap_ci
from fedsim.report.collect import ReportError
from fedsim.report.formatting import fmt

METRICS = ("test_hr", "test_ndcg")
EXPOSURE_COLUMNS = ("long_tail_share",)  # per user, compared when both runs' per_user.csv have it
# catalogue-level exposure (fedsim/ethics/exposure.py) at the final round; the arrow says which way is less biased
CATALOGUE = {
    "items/coverage": "catalogue coverage (↑)",
    "items/gini": "Gini of exposure (↓)",
    "items/arp": "average recommended popularity (↓)",
    "items/long_tail_share": "long-tail share of the lists (↑)",
}
MUST_MATCH = ("dataset", "seed", "evaluation")  # same data, same split, same sampled negatives: a paired comparison
MIN_GROUP_SIZE = 10


@dataclass
class PerUser:
    """One run's per_user.csv: its user ids (sorted), grouping columns and metric columns."""

    path: Path
    users: np.ndarray
    groupings: dict[str, np.ndarray]
    metrics: dict[str, np.ndarray]
    config: dict[str, Any]
    final: dict[str, Any]
    ceiling: str = ""  # summary.json["ceiling"] of a centralized run: what it is, why it can sit below a federation


@dataclass
class Difference:
    grouping: str
    group: str
    metric: str
    size: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    worse: bool


def read_run(run_dir: str | Path) -> PerUser:
    """A run's per_user.csv and config; raises :class:`ReportError` (one line) when it is not a finished run."""
    folder = Path(run_dir)
    table, summary = folder / "per_user.csv", folder / "summary.json"
    if not table.is_file() or not summary.is_file():
        raise ReportError(f"{folder}: not a fedsim run folder (needs per_user.csv and summary.json)")
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ReportError(f"{table}: no users")
    columns = list(rows[0])
    rows = [r for r in rows if r.get("role") != "malicious"]  # attack.poison's devices: listed, not evaluated
    if "user" not in columns or "n_train" not in columns or not set(METRICS) <= set(columns):
        raise ReportError(f"{table}: missing columns (needs user, n_train, {', '.join(METRICS)})")
    order = np.argsort([int(r["user"]) for r in rows], kind="stable")
    rows = [rows[i] for i in order]
    first_metric = min(i for i, c in enumerate(columns) if c.startswith(("val_", "test_")))
    grouping_columns = ["role", *columns[columns.index("n_train") + 1 : first_metric]]
    metric_columns = [*METRICS, *(c for c in EXPOSURE_COLUMNS if c in columns)]
    recorded = json.loads(summary.read_text())
    return PerUser(
        folder,
        np.array([int(r["user"]) for r in rows], dtype=np.int64),
        {g: np.array([r[g] for r in rows], dtype=str) for g in dict.fromkeys(grouping_columns) if g in columns},
        {m: np.array([float(r[m]) for r in rows]) for m in metric_columns},
        recorded.get("config", {}),
        recorded.get("final", {}),
        recorded.get("ceiling", ""),
    )


def check_comparable(a: PerUser, b: PerUser) -> None:
    """Refuse (one line) when the two runs do not evaluate the same users on the same split."""
    for key in MUST_MATCH:
        if a.config.get(key) != b.config.get(key):
            raise ReportError(
                f"the runs differ in {key} ({a.config.get(key)!r} vs {b.config.get(key)!r}): a paired comparison "
                "needs the same dataset, seed and evaluation"
            )
    if not np.array_equal(a.users, b.users):
        only_a, only_b = np.setdiff1d(a.users, b.users), np.setdiff1d(b.users, a.users)
        raise ReportError(
            f"the runs evaluate different users ({len(only_a)} only in A, {len(only_b)} only in B): compare runs "
            "with the same consent, hold-out and measurement settings"
        )


def compare(a: PerUser, b: PerUser, seed: int = 0, min_group_size: int = MIN_GROUP_SIZE) -> list[Difference]:
    """Per grouping, group and metric: the paired mean difference B − A with its bootstrap 95% CI."""
    check_comparable(a, b)
    metrics = [m for m in a.metrics if m in b.metrics]
    groupings = {"all": np.full(len(a.users), "everyone")}
    groupings.update({g: v for g, v in a.groupings.items() if g in b.groupings and np.array_equal(v, b.groupings[g])})
    out = []
    for grouping, labels in groupings.items():
        for group in sorted(set(labels.tolist())):
            mask = labels == group
            for metric in metrics:
                d = b.metrics[metric][mask] - a.metrics[metric][mask]
                low, high = bootstrap_ci(d, seed)
                out.append(
                    Difference(
                        grouping,
                        group,
                        metric,
                        int(mask.sum()),
                        float(a.metrics[metric][mask].mean()),
                        float(b.metrics[metric][mask].mean()),
                        float(d.mean()),
                        low,
                        high,
                        bool(high < 0 and mask.sum() >= min_group_size and metric in METRICS),
                    )
                )
    return out


def markdown(a: PerUser, b: PerUser, rows: list[Difference], min_group_size: int = MIN_GROUP_SIZE) -> str:
    worse = [r for r in rows if r.worse]
    lines = [
        "# fedsim run comparison",
        "",
        f"- A: `{a.path}`",
        f"- B: `{b.path}`",
        "",
        f"{len(a.users)} users evaluated in both runs (same dataset, seed and split). Per group: mean of A, mean of "
        "B, and the paired difference B − A with a bootstrap 95% CI over the group's users. **worse off**: the CI "
        f"is entirely below 0 (groups of at least {min_group_size} users).",
        "",
    ]
    if worse:
        lines.append(
            "Significantly worse off in B: "
            + "; ".join(f"{r.grouping}={r.group} ({r.metric} {r.diff:+.4f})" for r in worse)
            + "."
        )
    else:
        lines.append("No group is significantly worse off in B.")
    lines.append("")
    lines += ceiling_below(a, b)
    lines += catalogue_exposure(a, b)
    if any(c in a.metrics and c in b.metrics for c in EXPOSURE_COLUMNS):
        lines += [
            "Per user, `long_tail_share` below is the share of the user's own top-K outside the 20% most popular "
            "items (its mean is the long-tail share above); a change there is reported, not flagged.",
            "",
        ]
    else:
        lines += ["A per_user.csv has no per-user exposure column (older run): per-user exposure is not compared.", ""]
    for grouping in dict.fromkeys(r.grouping for r in rows):
        lines += [
            f"## {grouping}",
            "",
            "| group | users | metric | A | B | B − A [95% CI] | |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r.grouping == grouping:
                lines.append(
                    f"| {r.group} | {r.size} | {r.metric} | {fmt(r.mean_a)} | {fmt(r.mean_b)} | "
                    f"{r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {'⚠ worse off' if r.worse else ''} |"
                )
        lines.append("")
    return "\n".join(lines)


def ceiling_below(a: PerUser, b: PerUser) -> list[str]:
    """When one run is the centralized ceiling and it scores below the federated one, why (its own note)."""
    runs = {run.config.get("mode"): run for run in (a, b)}
    ceiling, federated = runs.get("centralized"), runs.get("federated")
    if ceiling is None or federated is None:
        return []
    hr_c, hr_f = float(ceiling.metrics["test_hr"].mean()), float(federated.metrics["test_hr"].mean())
    if hr_c >= hr_f:
        return []
    why = ceiling.ceiling or "one pooled epoch per round against the devices' client.epochs per round"
    return [f"The centralized ceiling is below the federation here (test HR {hr_c:.4f} vs {hr_f:.4f}): {why}.", ""]


def catalogue_exposure(a: PerUser, b: PerUser) -> list[str]:
    """The item-exposure table of both runs' final round (what a fairness mitigation changes), or nothing when
    neither recorded it."""
    shown = [tag for tag in CATALOGUE if tag in a.final or tag in b.final]
    if not shown:
        return []
    lines = ["## item exposure (catalogue, final round)", "", "| measure | A | B | B − A |", "|---|---|---|---|"]
    for tag in shown:
        va, vb = a.final.get(tag), b.final.get(tag)
        both = isinstance(va, (int, float)) and isinstance(vb, (int, float))
        lines.append(f"| {CATALOGUE[tag]} | {fmt(va)} | {fmt(vb)} | {f'{vb - va:+.4f}' if both else '–'} |")
    return [*lines, ""]


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    min_group_size: int = MIN_GROUP_SIZE,
) -> tuple[Path, str]:
    """Write ``compare.md`` into ``out`` (default: run B's folder); return its path and text."""
    a, b = read_run(run_a), read_run(run_b)
    text = markdown(a, b, compare(a, b, seed, min_group_size), min_group_size)
    folder = Path(out) if out is not None else b.path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "compare.md"
    path.write_text(text)
    return path, text
