"""Reading a sweep directory: every job's ``summary.json``, finished or not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunRecord:
    path: Path
    summary: dict[str, Any]

    @property
    def finished(self) -> bool:
        return bool(self.summary.get("finished"))

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.summary
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


class ReportError(ValueError):
    """The directory holds nothing to report; the message says what was found."""


def collect_runs(directory: str | Path) -> tuple[list[RunRecord], list[RunRecord]]:
    """All runs below ``directory`` (finished, unfinished); raises :class:`ReportError` when there are none."""
    root = Path(directory)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (give a sweep folder such as results/sweeps/<name>/<timestamp>)")
    finished, unfinished = [], []
    for path in sorted(root.rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError:
            unfinished.append(RunRecord(path.parent, {}))
            continue
        (finished if summary.get("finished") else unfinished).append(RunRecord(path.parent, summary))
    job_dirs = {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    for job in sorted(job_dirs - {r.path for r in finished + unfinished}):
        unfinished.append(RunRecord(job, {}))
    if not finished:
        raise ReportError(
            f"{root}: no finished runs (found {len(unfinished)} unfinished: "
            f"{', '.join(str(r.path.relative_to(root)) for r in unfinished) or 'none'})"
        )
    return finished, unfinished
