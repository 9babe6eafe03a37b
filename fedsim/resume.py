"""Continuing a run (``resume_from``): the newest checkpoint that verifies, checked against this run, then loaded.

A resume carries an earlier run's privacy claim forward, so it uses nothing it has not checked:

1. candidates, newest first: the published checkpoint (``checkpoint/latest.json``), the complete one kept before it,
   then a finished run's final state (the run folder's own manifest);
2. each must verify against its manifest (sha256 of every file, :mod:`fedsim.checkpoint`); a damaged one is passed
   over for the next, said on the console and in summary.json's warnings;
3. the settings that must match (:data:`RESUME_MUST_MATCH`) are compared with those the manifest recorded: a change
   is refused with one line — the rounds already run used the old value, and summary.json would record the new one;
4. every file is read and checked for what the run will assume: arrays finite and of the model's shapes, one device
   file per partition holding that partition's users, and a privacy state consistent with the loop's own (releases =
   rounds, δ, q, participation counts) — an edit that would under-report ε fails here even when the manifest was
   rewritten to match it. A candidate failing here is passed over like a damaged one.

Whatever cannot be resumed ends in a :class:`~fedsim.config.ConfigError` of one line: never a traceback, never a
silent fresh start of a part of the state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.checkpoint import (
    MANIFEST,
    DamagedCheckpointError,
    latest,
    load_npz,
    one_line,
    round_folders,
    unflatten_state,
    verify,
)
from fedsim.config import ConfigError, FedsimConfig, as_dict
from fedsim.ethics.utility import UtilityMonitor
from fedsim.mitigation import MitigationState
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.runtime import Runtime

# The settings a resume must share with the run it continues, and why. Everything else may change (federation.rounds
# to run longer, privacy.max_epsilon — a stopping rule checked each round against the accountant —, evaluation,
# backend, progress, ...). Each DP key changes the noise or the guarantee of rounds already run or to come, while
# summary.json would state the new value for the whole run.
RESUME_MUST_MATCH: dict[str, str] = {
    "seed": "the sampling, noise and device draws of the rounds to come follow it",
    "dataset": "the users and their data",
    "model": "the parameters the checkpoint holds",
    "client.epochs": "record-level DP composes epochs x steps for every round a user took part in",
    "privacy.mechanism": "the guarantee itself",
    "privacy.delta": "ε of every round already run is reported at this δ",
    "privacy.accountant": "the ε already reported was computed with it",
    "privacy.target_epsilon": "the noise was calibrated for it",
    "privacy.noise_multiplier": "the noise of the rounds already run (the resumed run keeps the z in force)",
    "privacy.clipping": "the sensitivity of every release",
    "privacy.clipping_norm": "the noise std z·C of the rounds already run (the resumed run keeps the C in force)",
    "privacy.target_quantile": "adaptive clipping's rule for C over the whole run",
    "privacy.clip_lr": "adaptive clipping's rule for C over the whole run",
    "privacy.clipped_count_stddev": "the noise of the clipped-count release, which ε counts",
    "privacy.secure_rng": "where the noise came from: seeded noise in part of the run is not a private release",
    "privacy.record_sample_rate": "record-level ε of every step already run is computed with it",
    "federation.users_per_node": "each device's stored state belongs to its partition",
    "federation.participation": "the sampling rate q of every release",
    "federation.sampling": "the sampling the accountant certifies",
    "federation.min_separation": "the cyclic groups whose participations banded_mf's accountant charges",
    "privacy.noise": "the noise of the rounds already run (independent or correlated) and how ε counts it",
    "privacy.bands": "the correlated noise stream's band, which the rounds to come continue",
    "strategy": "the server optimiser's saved state",
    "secagg": "who is trusted with the uploads",
    "attack": "the users held out of training",
    "consent": "who trains, and the accountant's population",
    "erasure.share": "users asked to be forgotten",
}

STATE_FILES = ("model.npz", "privacy_state.json", "loop_state.json", "strategy_state.npz", "callbacks.json")


def resume_settings(cfg: FedsimConfig) -> dict[str, Any]:
    """The values of :data:`RESUME_MUST_MATCH` in ``cfg`` (what a checkpoint's manifest records and fingerprints)."""
    values = as_dict(cfg)
    out: dict[str, Any] = {}
    for dotted in RESUME_MUST_MATCH:
        value: Any = values
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[dotted] = value
    return out


def load_resume(cfg: FedsimConfig, mechanism: NoPrivacy | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """What the run in ``resume_from`` left to continue from: rounds done, shared model, loop and strategy state,
    callback state, the folder of the devices' state, and warnings to say (a damaged checkpoint passed over, a
    costly new noise plan).

    With ``mechanism``, its privacy state is loaded into it and its noise re-planned for ``federation.rounds``; with
    ``rt``, arrays are checked against the model's shapes and the device files against the partitions (the CLI calls
    this first without either, before the data is read). Raises :class:`ConfigError` (one line) when it cannot resume.
    """
    old = Path(cfg.resume_from or "")
    if cfg.mode != "federated":
        raise ConfigError("resume_from continues a federated run; mode=centralized cannot resume")
    notes: list[str] = []
    candidates = _candidates(old, notes)
    if not candidates:
        raise ConfigError(
            f"resume_from={old}: not a fedsim federated run with a checkpoint (needs a checkpoint/ folder or a "
            f"finished run's {MANIFEST})"
        )
    for done, folder in candidates:
        where = _name(old, folder)
        try:
            manifest = verify(folder)
            if manifest["round"] != done and folder != old:
                raise DamagedCheckpointError(f"its {MANIFEST} is of round {manifest['round']}")
            done = manifest["round"]
        except DamagedCheckpointError as damage:
            notes.append(f"{where} is damaged ({damage})")
            continue
        _check_settings(manifest["settings"], resume_settings(cfg))
        if done >= cfg.federation.rounds:
            raise ConfigError(
                f"resume_from: the earlier run already completed {done} rounds; set federation.rounds above {done}"
            )
        try:
            resume, state = _read(folder, manifest, cfg, mechanism, rt)
        except DamagedCheckpointError as damage:
            notes.append(f"{where} is damaged ({damage})")
            continue
        resume["warnings"] = [f"resume_from: {_said(notes)}; resuming from {where}"] if notes else []
        if mechanism is not None:
            mechanism.load_state_dict(state)
            warning = mechanism.continue_for(cfg.federation.rounds, done)
            if warning:
                resume["warnings"].append(warning)
        return resume
    raise ConfigError(f"resume_from={old}: no usable checkpoint: {_said(notes)}")


def _said(notes: list[str]) -> str:
    """The notes on one line, the places with the same problem named together ("a, b are damaged (x)")."""
    places: dict[str, list[str]] = {}
    for note in notes:
        where, _, problem = note.partition(" is damaged ")
        if problem:
            places.setdefault(problem, []).append(where)
        else:  # a note about no one place (an unreadable latest.json)
            places.setdefault(note, [])
    return "; ".join(
        f"{', '.join(where)} {'is' if len(where) == 1 else 'are'} damaged {problem}" if where else problem
        for problem, where in places.items()
    )


def _candidates(old: Path, notes: list[str]) -> list[tuple[int, Path]]:
    """(round, folder) to try, best first: the published round, the older complete one(s), a finished run's final
    state. Round folders newer than the published one were never published and are left out."""
    try:
        published = latest(old)
    except DamagedCheckpointError as damage:
        notes.append(str(damage))
        published = None
    folders = round_folders(old)
    if published is not None:
        folders = [published] + [(r, p) for r, p in folders if r < published[0]]
    final = old / MANIFEST
    if final.is_file():
        try:
            finished_round = json.loads(final.read_text())["round"]
        except (OSError, ValueError, KeyError, TypeError):
            finished_round = -1  # read_manifest says what is wrong with it when its turn comes
        folders.append((finished_round, old))
    return folders


def _name(old: Path, folder: Path) -> str:
    return "the finished run's final state" if folder == old else folder.relative_to(old).as_posix()


def _check_settings(earlier: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse (one line) a setting that differs from the earlier run's; an earlier erasure forbids any resume."""
    share = earlier.get("erasure.share")
    if (
        isinstance(share, int | float) and share > 0
    ):  # its devices and sampler forgot users; a resume (with any erasure.*) would bring them back
        raise ConfigError(
            f"resume_from: the earlier run had erasure.share={share:g} (users asked to be forgotten); resuming it is "
            "refused: start a fresh run"
        )
    for dotted, why in RESUME_MUST_MATCH.items():
        if dotted not in earlier:
            raise ConfigError(f"resume_from: the earlier run's {MANIFEST} does not record {dotted}; start a fresh run")
        if earlier[dotted] != current[dotted]:
            raise ConfigError(
                f"resume_from: {dotted} differs from the earlier run ({earlier[dotted]!r} there, {current[dotted]!r} "
                f"here): {why}; start a fresh run to change it"
            )


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Whatever goes wrong while reading ``name`` becomes one :class:`DamagedCheckpointError` line naming it."""
    try:
        yield
    except DamagedCheckpointError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
    ) as error:
        raise DamagedCheckpointError(f"{name}: {one_line(error)}") from error


def _read(
    folder: Path, manifest: dict[str, Any], cfg: FedsimConfig, mechanism: NoPrivacy | None, rt: Runtime | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every file of the verified checkpoint ``folder``, checked; returns the resume and the privacy state."""
    files, done = manifest["files"], int(manifest["round"])

    def path(name: str) -> Path:
        if name not in files:
            raise DamagedCheckpointError(f"{name} is missing (not in {MANIFEST})")
        return folder / name

    reference = rt.model.init_shared(cfg.seed) if rt is not None else None
    with _reading("model.npz"):
        shared = load_npz(path("model.npz"))
        _check_arrays(shared, reference)
    with _reading("loop_state.json"):
        loop = json.loads(path("loop_state.json").read_text())
        if loop["round"] != done:
            raise ValueError(f"it is of round {loop['round']}, its {MANIFEST} of round {done}")
        participations = np.asarray(loop["participations"], dtype=np.int64)
        n_users = rt.split.n_users if rt is not None else None
        if participations.ndim != 1 or (participations < 0).any() or (n_users and len(participations) > n_users):
            raise ValueError("participations are not one count >= 0 per user")
        MitigationState(cfg.mitigation).load_state_dict(loop.get("mitigation") or {})
    with _reading("strategy_state.npz"):
        strategy = unflatten_state(load_npz(path("strategy_state.npz")))
        _check_strategy(strategy, reference)
    with _reading("privacy_state.json"):
        state = json.loads(path("privacy_state.json").read_text())
        if state.get("mechanism") != cfg.privacy.mechanism:
            raise ValueError(f"it is for privacy.mechanism={state.get('mechanism')!r}")
        if mechanism is not None:  # loaded into a copy: the mechanism gets it only once the whole checkpoint passed
            trial = copy.deepcopy(mechanism)
            trial.load_state_dict(state)
            problem = trial.resume_problem(done, participations)
            if problem:
                raise ValueError(problem)
    resume: dict[str, Any] = {
        "done": done,
        "shared": shared,
        "loop_state": {**loop, "strategy": strategy},
        "source": str(folder),
        "devices": str(folder / "devices"),
    }
    with _reading("callbacks.json"):
        callbacks = json.loads(path("callbacks.json").read_text())
        UtilityMonitor(cfg.evaluation.k).load_state_dict(callbacks["utility"])
        resume["callbacks"] = callbacks
        audit = callbacks.get("audit")
        if audit is not None:
            if not isinstance(audit["checkpoint_round"], int) or not isinstance(audit["breached"], list):
                raise ValueError("its audit state is not one fedsim wrote")
    if audit is not None:
        with _reading("audit_model.npz"):
            arrays = load_npz(path("audit_model.npz"))
            _check_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("shared/")}, reference)
            kept = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("strategy/")}
            _check_strategy(unflatten_state(kept), reference)
            resume["audit_arrays"] = arrays
    _check_devices(files, path, rt)
    return resume, state


def _check_arrays(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None) -> None:
    """Finite values; with ``reference`` (the model's initial shared arrays), the same names and shapes."""
    if reference is not None:
        if sorted(arrays) != sorted(reference):
            raise ValueError(f"it holds arrays {sorted(arrays)}, the model has {sorted(reference)}")
        for name, array in arrays.items():
            if array.shape != reference[name].shape:
                raise ValueError(f"{name} has shape {array.shape}, the model's is {reference[name].shape}")
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ValueError(f"{name} holds values that are not finite numbers")


def _check_strategy(state: dict[str, Any], reference: dict[str, np.ndarray] | None) -> None:
    """The server optimiser's moments: one finite array per model array (a list in the model's order, or by name)."""
    for name, value in state.items():
        arrays = value
        if isinstance(value, list):
            if reference is not None and len(value) != len(reference):
                raise ValueError(f"the strategy's {name} holds {len(value)} arrays, the model {len(reference)}")
            arrays = dict(zip(reference or [str(i) for i in range(len(value))], value, strict=True))
        try:
            _check_arrays(arrays, reference)
        except ValueError as error:
            raise ValueError(f"the strategy's {name}: {error}") from error


def _check_devices(files: dict[str, str], path: Callable[[str], Path], rt: Runtime | None) -> None:
    """One device file per partition (all of them, with ``rt``), each holding its partition's users and a finite
    private embedding per user: a node never falls back to a fresh embedding on a resume."""
    listed = sorted(name for name in files if name.startswith("devices/"))
    expected = [f"devices/partition_{p:05d}.npz" for p in range(rt.n_nodes)] if rt is not None else listed
    if not expected:
        raise DamagedCheckpointError("devices/ holds no device state")
    if rt is None:
        return  # read in full once the partitions are known (the driver, before the federation starts)
    for partition, name in enumerate(expected):
        with _reading(name):
            data = load_npz(path(name))
            shard = rt.shards[partition]
            if not np.array_equal(data["users"], shard):
                raise ValueError(f"it holds other users than partition {partition}")
            embeddings = data["embeddings"]
            if embeddings.shape != (len(shard), rt.model.private_dim):
                raise ValueError(
                    f"embeddings of shape {embeddings.shape}, expected {(len(shard), rt.model.private_dim)}"
                )
            _check_arrays({"embeddings": embeddings}, None)
