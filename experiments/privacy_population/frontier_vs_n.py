"""The frontier vs N (issue 19, item 2): the table and the plot recorded in this folder's README, read from the
``frontier.csv`` that ``fedsim-report`` writes for the population sweeps.

    fedsim-report results/sweeps/privacy_population                 # every per-N sweep folder below it
    python experiments/privacy_population/frontier_vs_n.py results/sweeps/privacy_population

Prints one Markdown row per (N, ε): test HR@10 (final round, mean ± 95% CI over seeds), the seeds, ItemPop, the gap
to ItemPop and the drop from the same N's ε = ∞ point, and the issue's targets (ε = ∞ ≥ ItemPop + 0.15 at every N;
ε = 1 within 0.02 of ε = ∞ at N = 10⁶; ε = 2 within 0.02 at N = 10⁵) as met / missed by how much. Writes
``frontier_vs_n.png`` there: test HR@10 against N (log axis), one line per ε, ItemPop dashed.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

N_KEY = "dataset.n_users"
TARGETS = {  # (N, ε) -> (what the issue asks, threshold): "gap" ≥ ItemPop + t, "drop" ≤ t from ε = ∞
    **{(n, math.inf): ("gap", 0.15) for n in (1000, 10_000, 100_000, 1_000_000)},
    (1_000_000, 1.0): ("drop", 0.02),
    (100_000, 2.0): ("drop", 0.02),
}


def _float(value: str) -> float:
    return math.nan if value in ("", "nan", "None") else float(value)


def read(root: Path) -> list[dict]:
    rows = []
    for r in csv.DictReader((root / "frontier.csv").open()):
        rows.append(
            {
                "n": int(float(r[N_KEY])),
                "eps": _float(r["target_epsilon"]),
                "hr": _float(r["test_hr"]),
                "ci": _float(r["test_hr_ci95"]),
                "seeds": r["seeds"],
                "itempop": _float(r["itempop_test_hr"]),
                "spent": _float(r["epsilon"]),
                "z": _float(r["noise_multiplier"]),
                "delta": _float(r["delta"]),
            }
        )
    return sorted(rows, key=lambda r: (r["n"], -r["eps"]))


def _target(row: dict, reference: float | None) -> str:
    kind, threshold = TARGETS.get((row["n"], row["eps"]), (None, 0.0))
    if kind == "gap":
        margin = row["hr"] - row["itempop"] - threshold
    elif kind == "drop" and reference is not None:
        margin = threshold - (reference - row["hr"])
    else:
        return ""
    return f"met (+{margin:.3f})" if margin >= 0 else f"**missed by {-margin:.3f}**"


def table(rows: list[dict]) -> str:
    reference = {r["n"]: r["hr"] for r in rows if math.isinf(r["eps"])}
    lines = [
        "| N | target ε | ε spent | z | δ | seeds | test HR@10 (± 95% CI) | ItemPop | − ItemPop | drop vs ε = ∞ "
        "| target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = reference.get(r["n"])
        ci = "" if math.isnan(r["ci"]) else f" ± {r['ci']:.3f}"
        drop = "" if ref is None or math.isinf(r["eps"]) else f"{ref - r['hr']:+.3f}"
        spent = "∞" if math.isinf(r["spent"]) or math.isnan(r["spent"]) else f"{r['spent']:.3f}"
        target = "∞" if math.isinf(r["eps"]) else f"{r['eps']:g}"
        lines.append(
            f"| {r['n']:,} | {target} | {spent} | {r['z']:.3f} | "
            f"{r['delta']:.3g} | {r['seeds']} | {r['hr']:.4f}{ci} | {r['itempop']:.4f} | "
            f"{r['hr'] - r['itempop']:+.3f} | {drop} | {_target(r, ref)} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for eps in sorted({r["eps"] for r in rows}, reverse=True):
        pts = sorted((r for r in rows if r["eps"] == eps), key=lambda r: r["n"])
        ax.errorbar(
            [r["n"] for r in pts],
            [r["hr"] for r in pts],
            yerr=[0 if math.isnan(r["ci"]) else r["ci"] for r in pts],
            marker="o",
            capsize=3,
            label="ε = ∞" if math.isinf(eps) else f"ε = {eps:g}",
        )
    pop = sorted({(r["n"], r["itempop"]) for r in rows if math.isinf(r["eps"])})
    ax.plot([n for n, _ in pop], [h for _, h in pop], "k--", linewidth=1, label="ItemPop")
    ax.set_xscale("log")
    ax.set_xlabel("population N (users); cohort ≈ 1000 a round, δ = N^-1.1")
    ax.set_ylabel("test HR@10 (final round, 99 sampled negatives)")
    ax.set_title("User-level DP-FedAvg (FedRecon) vs N: mean ± 95% CI over seeds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder fedsim-report wrote frontier.csv into")
    args = parser.parse_args()
    rows = read(args.root)
    print(table(rows))
    plot(rows, args.root / "frontier_vs_n.png")
    print(f"\nwrote {args.root / 'frontier_vs_n.png'}")


if __name__ == "__main__":
    main()
