"""The attack × defence × DP × secure-aggregation grid of experiments/security/README.md.

    python experiments/security/run_grid.py [--quick]

Every cell is one ``fedsim +experiment=poisoning_demo`` run (synthetic data, in-process backend) with the overrides
below; the combinations fedsim refuses are run too, and their one-line refusal is recorded instead of numbers.
Writes ``results/security/grid.json`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedsim.cli import compose
from fedsim.config import ConfigError
from fedsim.run import run

ATTACKS = {
    "none": ["attack.poison.fraction=0"],
    "fake_users": ["attack.poison.strategy=fake_users"],
    "boost_target": ["attack.poison.strategy=boost_target"],
    # attackers that run the device clip (attack.poison.skip_clip=false): only where a clip exists (central DP)
    "fake_users (clips)": ["attack.poison.strategy=fake_users", "attack.poison.skip_clip=false"],
    "boost_target (clips)": ["attack.poison.strategy=boost_target", "attack.poison.skip_clip=false"],
}
CLIPPED = ("fake_users (clips)", "boost_target (clips)")
DEFENCES = ["none", "norm_bound", "median", "trimmed_mean", "krum", "multi_krum"]
BOUND = {"norm_bound": ["strategy.robust_norm=0.2"]}  # about twice a benign update's norm (≈ 0.1); read by norm_bound
PRIVACY = {"no DP": [], "central DP ε=4": ["privacy=central", "privacy.target_epsilon=4", "privacy.clipping_norm=0.2"]}
SECAGG = {"plain": [], "secagg": ["secagg=secagg_plus"]}
KEYS = ("risk/target_exposure@10", "risk/target_rank_median", "test/hr@10", "risk/itemset_auc", "time/round_s")


def cell(attack: str, defence: str, privacy: str, secagg: str, out: Path) -> dict:
    overrides = ["+experiment=poisoning_demo", *ATTACKS[attack], f"strategy.robust={defence}", *BOUND.get(defence, [])]
    overrides += PRIVACY[privacy] + SECAGG[secagg]
    row = {"attack": attack, "defence": defence, "privacy": privacy, "secagg": secagg, "overrides": overrides}
    try:
        cfg = compose(overrides)
    except ConfigError as error:
        return {**row, "refused": str(error)}
    started = time.perf_counter()
    summary = run(cfg, out / "_".join([attack.replace(" (clips)", "_clips"), defence, privacy.split()[0], secagg]))
    final = summary["final"]
    rounds = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    round_s = [r["time/round_s"] for r in rounds if "time/round_s" in r]
    norms = [r["robust/update_norm"] for r in rounds if "robust/update_norm" in r]
    return {
        **row,
        **{key: final.get(key) for key in KEYS},
        "max_update_norm": max(norms) if norms else None,  # robust rules: 0 = the model never changed
        "mean_round_s": sum(round_s) / max(len(round_s), 1),
        "wall_s": time.perf_counter() - started,
    }


FLOOR = 1 / 600  # one benign user of ~600: the smallest exposure the protocol can show (the reference may be 0)


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    """The README table: each cell against the no-attack, no-defence run with the same DP and secagg setting
    (exposure ratio over max(reference, FLOOR); HR difference in absolute points)."""
    reference = {
        (r["privacy"], r["secagg"]): r
        for r in rows
        if r["attack"] == "none" and r["defence"] == "none" and "refused" not in r
    }
    lines = [
        "| DP | secagg | defence | attack | target exposure@10 | × no-attack | target rank (median) | "
        "benign test HR@10 "
        "| Δ HR vs no-attack FedAvg | item-set AUC | max ‖aggregate‖ | s/round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    refused: dict[tuple, str] = {}
    for r in rows:
        if "refused" in r:
            refused.setdefault((r["privacy"], r["secagg"], r["defence"]), r["refused"])
            continue
        ref = reference[(r["privacy"], r["secagg"])]
        exposure, base = r["risk/target_exposure@10"], ref["risk/target_exposure@10"]
        ratio = exposure / max(base, FLOOR)
        lines.append(
            f"| {r['privacy']} | {r['secagg']} | {r['defence']} | {r['attack']} | {_f(exposure)} | {ratio:.1f} | "
            f"{_f(r['risk/target_rank_median'], 0)} | {_f(r['test/hr@10'])} | "
            f"{r['test/hr@10'] - ref['test/hr@10']:+.3f} | {_f(r['risk/itemset_auc'])} | "
            f"{_f(r.get('max_update_norm'), 4)} | {_f(r['mean_round_s'], 2)} |"
        )
    lines += ["", "Refused combinations (fedsim's one-line answer):", ""]
    lines += [f"- {p} / {s} / strategy.robust={d}: `{msg}`" for (p, s, d), msg in refused.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results/security")
    parser.add_argument("--table", action="store_true", help="print the table of an existing grid.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads((out / "grid.json").read_text())))
        return
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for privacy in PRIVACY:
        for secagg in SECAGG:
            for defence in DEFENCES:
                for attack in ATTACKS:
                    if attack in CLIPPED and (privacy == "no DP" or defence not in ("none", "norm_bound")):
                        continue  # without a DP clip, clipping attackers are the same run
                    rows.append(cell(attack, defence, privacy, secagg, out))
                    print(json.dumps(rows[-1]), flush=True)
    (out / "grid.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
