"""Reading a sweep directory: every job's ``summary.json`` (finished or not) and the overrides it was started with.

A run is *finished* only when its ``summary.json`` says ``"finished": true``. A run stopped early (Ctrl-C, a privacy
budget, an audit pause) says ``"finished": false`` and why in ``"stop_reason"`` (a code such as ``interrupted``,
with ``"stop_detail"`` in words); a job that died before writing its
summary has only Hydra's ``.hydra/`` folder. None of them is a seed of the setting it was started for unless the
reader asks for it (``fedsim-report --include-unfinished``): a run cut short after 3 of 20 rounds would pull the
setting's mean down and widen its CI with a number the setting never produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class RunRecord:
    path: Path
    summary: dict[str, Any]
    overrides: list[str] = field(default_factory=list)  # the job's command-line overrides (.hydra/overrides.yaml)
    problem: str = ""  # why the run has no usable summary.json (missing, not JSON), else ""

    @property
    def finished(self) -> bool:
        return self.summary.get("finished") is True

    @property
    def has_results(self) -> bool:
        """Whether the run evaluated at least once (an unfinished run can then be shown on request)."""
        return bool(self.summary.get("final"))

    def stop_reason(self) -> str:
        """Why an unfinished run is unfinished, in one phrase for the report's list."""
        if self.problem:
            return self.problem
        reason = str(self.summary.get("stop_reason") or "")
        detail = str(self.summary.get("stop_detail") or "")  # the reason in words, next to the code
        if reason:
            return f"{reason}: {detail}" if detail and detail != reason else reason
        return "no stop_reason: the run did not end (it crashed, was killed, or is still running)"

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.summary
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


class ReportError(ValueError):
    """The directory holds nothing to report; the message says what was found."""


def _overrides(job: Path) -> list[str]:
    """The job's overrides as Hydra saved them; [] when absent or unreadable (the config in summary.json is then
    the only description of the run)."""
    try:
        loaded = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in loaded] if isinstance(loaded, list) else []


def _record(job: Path) -> RunRecord:
    path = job / "summary.json"
    if not path.is_file():
        return RunRecord(job, {}, _overrides(job), "no summary.json (the job died before its first round)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return RunRecord(job, {}, _overrides(job), f"summary.json unreadable ({type(error).__name__})")
    if not isinstance(summary, dict):
        return RunRecord(job, {}, _overrides(job), "summary.json is not a JSON object")
    return RunRecord(job, summary, _overrides(job))


def collect_runs(directory: str | Path, include_unfinished: bool = False) -> tuple[list[RunRecord], list[RunRecord]]:
    """All runs below ``directory`` as (reported, left out).

    Reported: the finished runs, plus — with ``include_unfinished`` — the unfinished ones that evaluated at least
    once. Raises :class:`ReportError` when nothing can be reported; its message lists what was found.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (give a sweep folder such as results/sweeps/<name>/<timestamp>)")
    jobs = {p.parent for p in root.rglob("summary.json")} | {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    records = [_record(job) for job in sorted(jobs)]
    shown = [r.finished or (include_unfinished and r.has_results) for r in records]
    reported = [r for r, show in zip(records, shown, strict=True) if show]
    left_out = [r for r, show in zip(records, shown, strict=True) if not show]
    if not reported:
        found = ", ".join(f"{r.path.relative_to(root)} ({r.stop_reason()})" for r in left_out) or "none"
        hint = "" if include_unfinished else "; --include-unfinished reports stopped runs that evaluated"
        raise ReportError(f"{root}: no finished runs (found {len(left_out)} unfinished: {found}){hint}")
    return reported, left_out
