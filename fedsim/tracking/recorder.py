"""``metrics.jsonl`` (one line per round) and ``summary.json`` (config, final and best metrics, baselines, timings).

Files are written as the run goes — a line per round, appended and flushed — so an interrupted run leaves
everything up to its last round readable. ``summary.json`` is written when the run starts (``"finished": false``) and
again when it ends, with

* ``finished`` — true only when the run completed every planned round (``federation.rounds``; epochs when
  centralized);
* ``stop_reason`` — "" when finished, else a code a program can switch on: ``interrupted`` (Ctrl-C), ``privacy_budget``
  (``privacy.max_epsilon``), ``audit`` (a pause or a rollback that stops), ``erasure`` (``erasure.policy=none``),
  ``callback`` (another callback asked to stop), ``federation_error`` (nodes missing or failing), ``error`` (any other
  exception), ``incomplete`` (fewer rounds without a reason);
* ``stop_detail`` — the same in words, for people (the console and report.md show it).
"""

from __future__ import annotations

import json
import math
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fedsim.callbacks import Callback, RoundReport
from fedsim.checkpoint import save_json

SELECTION_METRIC = "val/hr@{k}"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("fedsim", "flwr", "torch", "numpy", "hydra-core", "dp-accounting", "ray"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    save_json(path, _clean(payload), indent=2, default=str)


class RunRecorder(Callback):
    """Keeps the history, tracks the best round by validation, writes the files."""

    def __init__(self, run_dir: str | Path, k: int = 10) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.selection = SELECTION_METRIC.format(k=k)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.started = time.time()
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.metrics_path.write_text("")

    def on_run_begin(self, info: dict[str, Any]) -> None:
        self.info = info
        write_json(self.run_dir / "summary.json", {**info, "finished": False, "versions": versions()})

    def on_round_end(self, report: RoundReport) -> str | None:
        row = {"round": report.server_round, **report.metrics}
        if report.final_evaluation:
            row["final_evaluation_of_kept_model"] = True
        self.history.append(row)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(_clean(row)) + "\n")
        if self.selection in report.metrics:
            self.final = dict(row)
            if not self.best or report.metrics[self.selection] > self.best.get(self.selection, -1.0):
                self.best = dict(row)
        return None

    def summary(self, extra: dict[str, Any]) -> dict[str, Any]:
        round_times = [r["time/round_s"] for r in self.history if "time/round_s" in r]
        return {
            **self.info,
            "finished": False,
            **extra,  # the caller says whether the run finished (fedsim.session.Session.finish)
            "final": self.final,
            "best": {**self.best, "selected_by": self.selection},
            "timings": {
                "wall_s": time.time() - self.started,
                "rounds": len(round_times),
                "median_round_s": sorted(round_times)[len(round_times) // 2] if round_times else None,
            },
            "versions": versions(),
        }

    def on_run_end(self, summary: dict[str, Any]) -> None:
        write_json(self.run_dir / "summary.json", summary)
