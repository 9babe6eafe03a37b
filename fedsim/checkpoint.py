"""Crash-safe checkpoints: every file written atomically, a round published only once all of it is on disk.

Layout of a run folder's ``checkpoint/``::

    checkpoint/latest.json           {"round": k} — written last (temp file + rename): the checkpoint in force
    checkpoint/round_0000k/          model.npz, strategy_state.npz, loop_state.json, privacy_state.json,
                                     callbacks.json (+ audit_model.npz), devices/partition_*.npz

A SIGKILL at any moment leaves either the previous published round or the new one, never a mix: a round's folder
is complete before ``latest.json`` points at it, and older round folders are removed only after that.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LATEST = "latest.json"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` through a temp file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """An ``.npz`` file as a plain dict of arrays (read fully, file closed)."""
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def save_json(path: Path, payload: Any, indent: int = 1, default: Callable[[Any], Any] = float) -> None:
    """Write JSON atomically (temporary file, then rename): a reader never sees half a file. The one JSON writer
    for run files (checkpoints and summary.json alike)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=indent, default=default) + "\n")
    os.replace(tmp, path)


def round_dir(run_dir: str | Path, server_round: int) -> Path:
    return Path(run_dir) / "checkpoint" / f"round_{server_round:05d}"


def publish(run_dir: str | Path, server_round: int) -> None:
    """Point ``latest.json`` at ``server_round`` (atomic), then remove the older round folders."""
    root = Path(run_dir) / "checkpoint"
    save_json(root / LATEST, {"round": server_round})
    keep = round_dir(run_dir, server_round).name
    for folder in root.glob("round_*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


def latest(run_dir: str | Path) -> tuple[int, Path] | None:
    """The published checkpoint of ``run_dir``: (round, its folder), or None."""
    pointer = Path(run_dir) / "checkpoint" / LATEST
    if not pointer.is_file():
        return None
    server_round = int(json.loads(pointer.read_text())["round"])
    return server_round, round_dir(run_dir, server_round)


def device_dir(resume_from: str | Path) -> Path:
    """Where the nodes of a resumed run reload their users' private embeddings: the latest checkpoint's
    ``devices/``, or the finished run's ``devices/``."""
    found = latest(resume_from)
    return (found[1] if found else Path(resume_from)) / "devices"
