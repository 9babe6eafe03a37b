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
    for warning in summary.get("warnings") or []:
        lines.append(f"warning: {warning}")
    if summary.get("stop_reason"):
        lines.append(f"stopped early: {summary.get('stop_detail') or summary['stop_reason']}")
    lines.append(f"outputs: {summary.get('run_dir', '')}")
    lines.append("tensorboard: tensorboard --logdir results, open http://localhost:6006/#custom_scalars")
    return "\n".join(lines)
