"""Console output: one progress bar over rounds with the latest metrics, then a summary table."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from fedsim.callbacks import Callback, RoundReport

LABELS = {
    "train/loss": "loss",
    "val/hr@10": "val_hr@10",
    "test/hr@10": "test_hr@10",
    "privacy/epsilon": "eps",
    "privacy/epsilon_record_level": "eps_record",
}
SHOWN = tuple(LABELS)


class ProgressBar(Callback):
    def __init__(self, total: int, enabled: bool = True, desc: str = "rounds") -> None:
        self.bar = tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)
        self.latest: dict[str, float] = {}

    def on_round_end(self, report: RoundReport) -> str | None:
        self.latest.update({k: v for k, v in report.metrics.items() if k in SHOWN})
        self.bar.set_postfix({LABELS[k]: f"{v:.4f}" for k, v in self.latest.items()}, refresh=False)
        if report.server_round > self.bar.n:
            self.bar.update(report.server_round - self.bar.n)
        return None

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self.bar.close()


def format_summary(summary: dict[str, Any]) -> str:
    """The final table: best (by validation) and final test metrics next to the baselines."""
    k = summary.get("evaluation_k", 10)
    names = [f"test/hr@{k}", f"test/ndcg@{k}", f"test/recall@{k}_full", f"test/ndcg@{k}_full"]
    rows = [
        ("best round " + str(summary["best"].get("round", "-")), summary.get("best", {})),
        ("final round " + str(summary["final"].get("round", "-")), summary.get("final", {})),
    ]
    for name, base in summary.get("baselines", {}).items():
        rows.append((name, base))
    width = max(len(r[0]) for r in rows) + 2
    lines = [" " * width + "".join(f"{n:>22}" for n in names)]
    for label, values in rows:
        cells = "".join(
            f"{values.get(n, float('nan')):>22.4f}" if isinstance(values.get(n), (int, float)) else f"{'-':>22}"
            for n in names
        )
        lines.append(f"{label:<{width}}{cells}")
    lines.append(f"protocol: {summary.get('protocol', {}).get('short', '')}")
    if summary.get("threat_model"):
        lines.append(f"privacy: {summary['threat_model'].get('short', summary['threat_model'].get('guarantee'))}")
    lines += poisoning_lines(summary)
    if summary.get("ceiling"):
        lines.append(f"centralized ceiling: {summary['ceiling']}")
    for warning in summary.get("warnings") or []:
        lines.append(f"warning: {warning}")
    if summary.get("stop_reason"):
        lines.append(f"stopped early: {summary.get('stop_detail') or summary['stop_reason']}")
    lines.append(f"outputs: {summary.get('run_dir', '')}")
    lines.append("tensorboard: tensorboard --logdir results, open http://localhost:6006/#custom_scalars")
    return "\n".join(lines)


def poisoning_lines(summary: dict[str, Any]) -> list[str]:
    """What a poisoning run is about, on the console: how far the attacker's target got into benign users' top-K
    (``risk/target_exposure@K`` at the final round) — the number a benign HR@K never reveals. The floor is one user
    of the population (1/N): the smallest non-zero exposure, and the reference experiments/security divides by."""
    poison = (summary.get("security") or {}).get("poisoning")
    k, final = summary.get("evaluation_k", 10), summary.get("final", {})
    exposure = final.get(f"risk/target_exposure@{k}")
    if not poison or not isinstance(exposure, (int, float)):
        return []
    n_users = int(summary.get("data", {}).get("users") or 0)
    who = (
        f"{poison['malicious_devices']} malicious devices ({poison['strategy']})"
        if poison["malicious_devices"]
        else "no malicious device (the no-attack reference)"
    )
    floor = f" = {exposure * n_users:.0f}× the one-user floor 1/{n_users}" if n_users else ""
    rank = final.get("risk/target_rank_median")
    return [
        f"attack: {who}, target item {poison['target_item']} (popularity rank {poison['target_popularity_rank']}): "
        f"in the top-{k} of {exposure:.1%} of benign users (target exposure@{k} {exposure:.3f}{floor}"
        + (f"; median rank {rank:.0f}" if isinstance(rank, (int, float)) else "")
        + ")"
    ]
