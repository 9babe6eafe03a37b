"""TensorBoard: per-round scalars, the run description as text, and the config as hparams with final metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from fedsim.callbacks import Callback, RoundReport


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class TensorBoardCallback(Callback):
    """Writes event files into the run directory (``tensorboard --logdir results`` shows every run)."""

    def __init__(self, log_dir: str | Path, hparam_keys: tuple[str, ...] = ()) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.log_dir = Path(log_dir)
        self.hparam_keys = hparam_keys
        self.hparams: dict[str, Any] = {}

    def on_run_begin(self, info: dict[str, Any]) -> None:
        flat = flatten(info.get("config", {}))
        self.hparams = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v))
            for k, v in flat.items()
            if not self.hparam_keys or k in self.hparam_keys
        }
        self.hparams.update(info.get("extra_hparams", {}))
        for section in ("protocol", "threat_model", "data", "data_audit", "roles"):
            if section in info:
                text = "\n".join(f"- **{k}**: {v}" for k, v in flatten(info[section]).items())
                self.writer.add_text(section, text, 0)
        self.writer.add_text("config", "```\n" + json.dumps(info.get("config", {}), indent=2) + "\n```", 0)

    def on_round_end(self, report: RoundReport) -> str | None:
        for tag, value in report.metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, value, report.server_round)
        self.writer.flush()
        return None

    def on_run_end(self, summary: dict[str, Any]) -> None:
        final = {f"final/{k}": v for k, v in summary.get("final", {}).items() if isinstance(v, (int, float))}
        best = {f"best/{k}": v for k, v in summary.get("best", {}).items() if isinstance(v, (int, float))}
        hparams = {k: v for k, v in self.hparams.items() if v is not None}
        hparams.update({k: v for k, v in summary.get("extra_hparams", {}).items() if v is not None})
        self.writer.add_hparams(hparams, {**final, **best}, run_name=".")
        self.writer.flush()
        self.writer.close()
