"""Crash-safe, verifiable checkpoints: every file written atomically, a round published only once all of it is on
disk, and a manifest that says what was written.

Layout of a run folder's ``checkpoint/``::

    checkpoint/latest.json           {"round": k} — written last (temp file + rename): the checkpoint in force
    checkpoint/round_0000k/          model.npz, strategy_state.npz, loop_state.json, privacy_state.json,
                                     callbacks.json (+ audit_model.npz), devices/partition_*.npz, manifest.json

``manifest.json`` is written after every other file of its folder: the sha256 of each file, the round, and the
settings a resume must share with the run (:data:`fedsim.resume.RESUME_MUST_MATCH`) with their fingerprint. A folder
without one is incomplete. A finished run writes the same manifest for its final state (the run folder's
``model.npz``, ``privacy_state.json``, …, ``devices/``).

A SIGKILL at any moment leaves either the previous published round or the new one, never a mix: a round's folder is
complete before ``latest.json`` points at it. The two newest complete rounds are kept (older folders are removed only
after the pointer moved), so a resume can fall back to the one before when the newest is damaged.

What the manifest can and cannot tell: it catches a damaged or truncated file, a missing one, and any edit made
without rewriting the manifest. It is a checksum, not a signature — whoever rewrites the manifest too is caught only
by the consistency checks of :mod:`fedsim.resume` (releases vs rounds, δ, participation counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

LATEST = "latest.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
KEEP = 2  # complete checkpoints kept: the newest and one to fall back to


class DamagedCheckpointError(ValueError):
    """A checkpoint that cannot be used as it is: a file missing, unreadable, or not what its manifest says. The
    message is one line naming the file."""


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


# --- the manifest ----------------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(settings: dict[str, Any]) -> str:
    """sha256 of the settings as canonical JSON (sorted keys): equal settings, equal fingerprint."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def files_below(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative, '/'-separated), except the manifest and half-written ``*.tmp`` files."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp")
    )


def write_manifest(folder: Path, files: Iterable[str], server_round: int, settings: dict[str, Any]) -> None:
    """Record the sha256 of ``files`` (relative to ``folder``), the round and the resume settings — last, atomically:
    the folder's state is complete once this file exists."""
    save_json(
        folder / MANIFEST,
        {
            "format": MANIFEST_FORMAT,
            "round": server_round,
            "settings": settings,
            "fingerprint": fingerprint(settings),
            "files": {name: sha256_of(folder / name) for name in sorted(files)},
        },
        default=str,
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder``, checked for shape and for its settings' fingerprint (not yet the files)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise DamagedCheckpointError(f"no {MANIFEST} (incomplete, or written by a fedsim without manifests)")
    try:
        manifest = json.loads(path.read_text())
        ok = (
            manifest["format"] == MANIFEST_FORMAT
            and isinstance(manifest["round"], int)
            and isinstance(manifest["settings"], dict)
            and isinstance(manifest["files"], dict)
            and all(isinstance(v, str) for v in manifest["files"].values())
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise DamagedCheckpointError(f"{MANIFEST} is unreadable ({one_line(error)})") from error
    if not ok:
        raise DamagedCheckpointError(f"{MANIFEST} is not a fedsim manifest of format {MANIFEST_FORMAT}")
    if fingerprint(manifest["settings"]) != manifest.get("fingerprint"):
        raise DamagedCheckpointError(f"{MANIFEST}: the settings do not match their fingerprint (edited)")
    return manifest


def verify(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder`` once every file it lists is there with the sha256 it records; raises
    :class:`DamagedCheckpointError` naming the first file that is not."""
    manifest = read_manifest(folder)
    root = folder.resolve()
    for name, digest in manifest["files"].items():
        path = folder / name
        if root not in path.resolve().parents:
            raise DamagedCheckpointError(f"{MANIFEST} lists {name!r}, outside the checkpoint")
        if not path.is_file():
            raise DamagedCheckpointError(f"{name} is missing")
        if sha256_of(path) != digest:
            raise DamagedCheckpointError(
                f"{name} was changed after it was written (its sha256 differs from {MANIFEST})"
            )
    return manifest


def one_line(error: BaseException) -> str:
    """An exception's message on one line (numpy's and zipfile's may span several)."""
    return " ".join(str(error).split()) or type(error).__name__


# --- which rounds exist ----------------------------------------------------------------------------------------------
def _round_of(folder: Path) -> int | None:
    digits = folder.name.removeprefix("round_")
    return int(digits) if digits.isdigit() else None


def round_folders(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint/round_*`` folder of ``run_dir`` as (round, folder), newest first (complete or not)."""
    found = [(_round_of(p), p) for p in (Path(run_dir) / "checkpoint").glob("round_*") if p.is_dir()]
    return sorted(((r, p) for r, p in found if r is not None), key=lambda pair: pair[0], reverse=True)


def publish(run_dir: str | Path, server_round: int) -> None:
    """Point ``latest.json`` at ``server_round`` (atomic), then remove every round folder but it and the newest
    complete one before it."""
    root = Path(run_dir) / "checkpoint"
    save_json(root / LATEST, {"round": server_round})
    older = [p for r, p in round_folders(run_dir) if r < server_round and (p / MANIFEST).is_file()]
    keep = {round_dir(run_dir, server_round), *older[: KEEP - 1]}
    for _, folder in round_folders(run_dir):
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def latest(run_dir: str | Path) -> tuple[int, Path] | None:
    """The published checkpoint of ``run_dir``: (round, its folder), or None; raises
    :class:`DamagedCheckpointError` when ``latest.json`` cannot be read."""
    pointer = Path(run_dir) / "checkpoint" / LATEST
    if not pointer.is_file():
        return None
    try:
        server_round = json.loads(pointer.read_text())["round"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise DamagedCheckpointError(f"checkpoint/{LATEST} is unreadable ({one_line(error)})") from error
    if not isinstance(server_round, int) or server_round < 1:
        raise DamagedCheckpointError(f"checkpoint/{LATEST} names round {server_round!r}, not a round number")
    return server_round, round_dir(run_dir, server_round)


# --- the strategy's state as flat arrays -----------------------------------------------------------------------------
def flatten_state(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """``strategy_state`` as flat arrays for an ``.npz`` file (``momentum_vector`` is a list, moments are dicts)."""
    flat: dict[str, np.ndarray] = {}
    for name, value in state.items():
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, array in items:
            flat[f"{name}/{'list' if not isinstance(value, dict) else 'dict'}/{key}"] = np.asarray(array)
    return flat


def unflatten_state(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of :func:`flatten_state`; raises ``ValueError`` on keys it did not write."""
    state: dict[str, Any] = {}
    for key, array in flat.items():
        name, kind, index = key.split("/", 2)
        if kind == "list":
            state.setdefault(name, {})[int(index)] = array
        elif kind == "dict":
            state.setdefault(name, {})[index] = array
        else:
            raise ValueError(f"{key!r} is not a saved strategy array")
    for key in list(state):
        if key == "momentum_vector":
            state[key] = [state[key][i] for i in sorted(state[key])]
    return state
