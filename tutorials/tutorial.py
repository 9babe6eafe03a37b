"""What the tutorial notebooks share: run fedsim in the notebook's own process and read what the run wrote.

Why a helper and not the ``fedsim`` command: a notebook wants the run's numbers back as Python objects, and a
class on a 2-core laptop wants no Ray start-up per run. :func:`fedsim_run` composes ``conf/`` with the same Hydra
overrides you would type after ``fedsim`` (:func:`fedsim.cli.compose`: the same validation, the same one-line
errors) and calls the same entry the command calls (:func:`fedsim.run.run`), with the in-process backend, which
gives the same metrics as Ray (``tests/test_end_to_end.py``). Every number a notebook shows is read from the files
the run wrote — ``summary.json``, ``metrics.jsonl``, ``per_user.csv``, ``audit.json``, ``postmortem.md`` — the
files you would open after a ``fedsim`` run.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: tiny runs on a shared machine need no thread pool

import torch  # noqa: E402

from fedsim.cli import compose  # noqa: E402
from fedsim.run import run  # noqa: E402

torch.set_num_threads(1)

# every run of a notebook session goes under one temporary folder (set FEDSIM_TUTORIAL_DIR to keep them)
ROOT = Path(os.environ.get("FEDSIM_TUTORIAL_DIR") or tempfile.mkdtemp(prefix="fedsim-tutorial-"))


@dataclass
class Run:
    """One finished run: its folder and the files a teacher points at."""

    folder: Path
    summary: dict[str, Any]

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation's metrics (``summary.json["final"]``)."""
        return self.summary["final"]

    @property
    def itempop(self) -> dict[str, float]:
        """The popularity baseline on the same split (``summary.json["baselines"]["ItemPop"]``)."""
        return self.summary["baselines"]["ItemPop"]

    def rounds(self, metric: str) -> tuple[list[int], list[float]]:
        """``metric`` per round from ``metrics.jsonl`` (rounds that logged it; a kept model's re-evaluation after
        an audit pause or rollback is left out, so the curve shows what happened round by round)."""
        xs, ys = [], []
        for line in (self.folder / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if metric in row and row[metric] is not None and not row.get("final_evaluation_of_kept_model"):
                xs.append(row["round"])
                ys.append(float(row[metric]))
        return xs, ys

    def per_user(self) -> list[dict[str, str]]:
        """``per_user.csv``: one row per served user (role, group attributes, per-user metrics)."""
        with open(self.folder / "per_user.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    def audit(self) -> dict[str, Any]:
        """``audit.json``: the rules, and every breach and action with its round."""
        return json.loads((self.folder / "audit.json").read_text())

    def text(self, name: str) -> str:
        """A text file of the run (``report.md``, ``postmortem.md``)."""
        return (self.folder / name).read_text()


def fedsim_run(*overrides: str) -> Run:
    """``fedsim <overrides>`` in this process (in-process backend, no progress bar) into a new folder."""
    cfg = compose(["progress=false", "federation.backend=inprocess", *overrides])
    folder = Path(tempfile.mkdtemp(prefix=f"{cfg.name}-", dir=ROOT))
    return Run(folder, run(cfg, folder))
