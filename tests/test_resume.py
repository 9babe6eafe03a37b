"""Resume verifies what it reads (issue 18, items 2-4): tampered or damaged checkpoints are refused in one line or
passed over for the one before; DP settings cannot change on a resume; an unchanged plan resumes bit-identically;
``finished`` means every planned round ran.

Each test goes through :func:`fedsim.run.run` with configs composed from the real ``conf/``, as ``fedsim`` does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.checkpoint import (
    MANIFEST,
    files_below,
    load_npz,
    publish,
    read_manifest,
    round_dir,
    save_npz,
    write_manifest,
)
from fedsim.config import ConfigError
from fedsim.run import run
from fedsim.server import loop as server_loop
from fedsim.simulation import STOP_REQUESTED

CENTRAL = (
    "privacy=central",
    "privacy.noise_multiplier=1.0",
    "privacy.clipping_norm=0.5",
    "federation.sampling=poisson",
    "federation.participation=0.5",
    "attack=off",
)
LOCAL = ("privacy=local", "privacy.noise_multiplier=1.0", "federation.participation=0.5", "attack=off")


def _rows(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["round"]: {k: v for k, v in r.items() if not k.startswith("time/")} for r in rows}


def _model(run_dir: Path) -> dict[str, np.ndarray]:
    return load_npz(run_dir / "model.npz")


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """A finished 3-round central-DP run: checkpoints of rounds 2 and 3, and its final state."""
    folder = tmp_path_factory.mktemp("earlier") / "run"
    run(tiny_config(*CENTRAL, rounds=3), folder)
    return folder


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("straight") / "run"
    run(tiny_config(*CENTRAL, rounds=4), folder)
    return folder


@pytest.fixture(scope="module")
def earlier_local(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("earlier_local") / "run"
    run(tiny_config(*LOCAL, rounds=3), folder)
    return folder


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(source, target)
    return target


def _copies(run_dir: Path) -> list[Path]:
    """Every stored state of a run: its two checkpoints and its final state."""
    return [*sorted((run_dir / "checkpoint").glob("round_*")), run_dir]


def _resume(run_dir: Path, out: Path, *overrides: str, base: tuple[str, ...] = CENTRAL, rounds: int = 4) -> dict:
    cfg = tiny_config(*base, *overrides, rounds=rounds)
    cfg.resume_from = str(run_dir)
    return run(cfg, out)


def _refused(run_dir: Path, tmp_path: Path, *overrides: str, base: tuple[str, ...] = CENTRAL) -> str:
    with pytest.raises(ConfigError) as error:
        _resume(run_dir, tmp_path / "resumed", *overrides, base=base)
    message = str(error.value)
    assert "\n" not in message and message.startswith("resume_from")
    return message


def _edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        payload = json.loads((folder / name).read_text())
        change(payload)
        (folder / name).write_text(json.dumps(payload))

    return edit


def _history(change: Callable[[list], None]) -> Callable[[Path], None]:
    return _edit_json("privacy_state.json", lambda state: change(state["accountant"]["history"]))


def _set(entry_index: int, value: Callable[[float], float]) -> Callable[[list], None]:
    def change(history: list) -> None:
        history[0][entry_index] = value(history[0][entry_index])

    return change


def _halve_counts(key: str) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        if key == "segments":
            state["segments"][-1][1] = [c // 2 for c in state["segments"][-1][1]]
        else:
            state[key] = [c // 2 for c in state[key]]

    return change


def _rewrite_manifest(folder: Path) -> None:
    """What a tamperer who knows the format does: recompute every sha256 after the edit."""
    manifest = read_manifest(folder)
    files = files_below(folder) if folder.name.startswith("round_") else list(manifest["files"])
    write_manifest(folder, files, manifest["round"], manifest["settings"])


# Edits to privacy_state.json that would make a resumed run report a smaller ε than it spent.
CENTRAL_EDITS = {
    "fewer releases": _history(_set(2, lambda n: n - 2)),
    "larger z": _history(_set(1, lambda z: z * 1.5)),
    "smaller q": _history(_set(0, lambda q: q / 2)),
    "no history": _history(lambda history: history.clear()),
    "larger delta": _edit_json("privacy_state.json", lambda state: state["accountant"].update(delta=1e-3)),
}


@pytest.mark.parametrize("rewrite", [False, True], ids=["manifest-kept", "manifest-rewritten"])
@pytest.mark.parametrize("edit", CENTRAL_EDITS, ids=list(CENTRAL_EDITS))
def test_an_edit_that_lowers_central_epsilon_is_refused_in_one_line(earlier, tmp_path, edit, rewrite):
    """On main every one of these resumed silently (or with a traceback) and reported the lower ε."""
    run_dir = _copy(earlier, tmp_path)
    for folder in _copies(run_dir):
        CENTRAL_EDITS[edit](folder)
        if rewrite:
            _rewrite_manifest(folder)
    message = _refused(run_dir, tmp_path)
    assert "no usable checkpoint" in message and "privacy_state.json" in message


@pytest.mark.parametrize("rewrite", [False, True], ids=["manifest-kept", "manifest-rewritten"])
def test_fewer_local_dp_participations_are_refused(earlier_local, tmp_path, rewrite):
    """Local DP's ε is the worst user's participations: halving them in privacy_state.json halves the reported ε."""
    run_dir = _copy(earlier_local, tmp_path)
    for folder in _copies(run_dir):
        _edit_json("privacy_state.json", _halve_counts("segments"))(folder)
        if rewrite:
            _rewrite_manifest(folder)
    message = _refused(run_dir, tmp_path, base=LOCAL)
    assert "participation counts differ" in message if rewrite else "privacy_state.json was changed" in message


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return damage


def _remove(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


def _rewrite_model(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        arrays = load_npz(folder / "model.npz")
        change(arrays)
        save_npz(folder / "model.npz", arrays)
        _rewrite_manifest(folder)  # the file is "as written": only the content checks can tell

    return damage


def _nan(arrays: dict) -> None:
    name = sorted(arrays)[0]
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nan


def _shape(arrays: dict) -> None:
    name = sorted(arrays)[0]
    arrays[name] = arrays[name][:-1]


DAMAGE = {
    "truncated model.npz": (_truncate("model.npz"), "model.npz"),
    "truncated device file": (_truncate("devices/partition_00001.npz"), "partition_00001.npz"),
    "privacy_state.json not JSON": (lambda f: (f / "privacy_state.json").write_text("{"), "privacy_state.json"),
    "NaN in model.npz": (_rewrite_model(_nan), "not finite"),
    "model.npz of another shape": (_rewrite_model(_shape), "shape"),
    "a device file missing": (_remove("devices/partition_00002.npz"), "partition_00002.npz"),
    "devices/ missing": (_remove("devices"), "devices/"),
    "loop_state.json missing": (_remove("loop_state.json"), "loop_state.json"),
    "strategy_state.npz missing": (_remove("strategy_state.npz"), "strategy_state.npz"),
    "callbacks.json missing": (_remove("callbacks.json"), "callbacks.json"),
    "manifest.json missing": (_remove(MANIFEST), MANIFEST),
}


@pytest.mark.parametrize("kind", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_line(earlier, tmp_path, kind):
    """Damage in every stored copy: one line naming the file — on main a traceback (truncated npz, bad JSON, wrong
    shape), a silent fresh start (missing devices, loop or strategy state) or a resume of NaN."""
    damage, named = DAMAGE[kind]
    run_dir = _copy(earlier, tmp_path)
    for folder in _copies(run_dir):
        damage(folder)
    message = _refused(run_dir, tmp_path)
    assert "no usable checkpoint" in message and named in message


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(earlier, straight, tmp_path):
    """Round 3's model is truncated: the resume says so and continues from round 2, exactly as the uninterrupted
    run (on main: a BadZipFile traceback)."""
    run_dir = _copy(earlier, tmp_path)
    _truncate("model.npz")(round_dir(run_dir, 3))
    summary = _resume(run_dir, tmp_path / "resumed")
    said = [w for w in summary["warnings"] if w.startswith("resume_from:")]
    assert len(said) == 1 and "round_00003" in said[0] and "model.npz" in said[0] and "round_00002" in said[0]
    expected, got = _rows(straight), _rows(tmp_path / "resumed")
    assert sorted(got) == [3, 4] and all(got[r] == expected[r] for r in got)
    for name, array in _model(straight).items():
        np.testing.assert_array_equal(_model(tmp_path / "resumed")[name], array)


def test_publish_keeps_the_two_newest_complete_checkpoints(tmp_path):
    settings = {"seed": 0}
    for server_round in (1, 2, 3):
        folder = round_dir(tmp_path, server_round)
        folder.mkdir(parents=True)
        (folder / "model.npz").write_bytes(b"x")
        write_manifest(folder, files_below(folder), server_round, settings)
        publish(tmp_path, server_round)
    round_dir(tmp_path, 4).mkdir()  # written, never completed (no manifest): not a checkpoint to keep
    publish(tmp_path, 3)
    assert sorted(p.name for p in (tmp_path / "checkpoint").glob("round_*")) == ["round_00002", "round_00003"]


# --- item 3: DP settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "privacy.noise_multiplier=2.0",
        "privacy.clipping_norm=0.7",
        "privacy.secure_rng=true",
        "privacy.clipping=adaptive",
        "client.epochs=1",
    ],
)
def test_a_changed_dp_setting_is_refused(earlier, tmp_path, override):
    """On main a resume ran on with the earlier noise and clip (restored from the checkpoint) while summary.json
    recorded the new ones."""
    key = override.split("=")[0]
    assert f"{key} differs from the earlier run" in _refused(earlier, tmp_path, override)


@pytest.fixture(scope="module")
def earlier_adaptive(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("earlier_adaptive") / "run"
    run(tiny_config(*CENTRAL, "privacy.clipping=adaptive", rounds=2), folder)
    return folder


@pytest.mark.parametrize(
    "override", ["privacy.target_quantile=0.7", "privacy.clip_lr=0.5", "privacy.clipped_count_stddev=3.0"]
)
def test_a_changed_adaptive_clipping_setting_is_refused(earlier_adaptive, tmp_path, override):
    key = override.split("=")[0]
    message = _refused(earlier_adaptive, tmp_path, "privacy.clipping=adaptive", override)
    assert f"{key} differs from the earlier run" in message


def test_max_epsilon_may_change_and_is_honoured(earlier, tmp_path):
    """A stopping rule, not the noise: raising or setting it on a resume is allowed, and it stops the run."""
    summary = _resume(earlier, tmp_path / "resumed", "privacy.max_epsilon=0.01")
    assert summary["rounds_completed"] == 3 and summary["stop_reason"] == "privacy_budget"
    assert summary["finished"] is False


TARGET = ("privacy=central", "privacy.target_epsilon=3", "federation.sampling=poisson", "federation.participation=0.5")


@pytest.fixture(scope="module")
def target_runs(tmp_path_factory) -> Path:
    """A 5-round target-ε run straight, and the same run stopped by a Ctrl-C after round 2 then resumed."""
    root = tmp_path_factory.mktemp("target")
    run(tiny_config(*TARGET, "attack=off", rounds=5), root / "straight")
    checkpoint = server_loop.FederatedLoop._checkpoint

    def ctrl_c_after_round_2(self, grid, server_round):  # what a Ctrl-C during round 2 does
        checkpoint(self, grid, server_round)
        if server_round == 2:
            STOP_REQUESTED.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_loop.FederatedLoop, "_checkpoint", ctrl_c_after_round_2)
        run(tiny_config(*TARGET, "attack=off", rounds=5), root / "first")
    STOP_REQUESTED.clear()
    cfg = tiny_config(*TARGET, "attack=off", rounds=5)
    cfg.resume_from = str(root / "first")
    run(cfg, root / "resumed")
    return root


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_an_interrupted_target_epsilon_run_resumes_bit_identically(target_runs):
    """Same settings, same rounds: the resumed run keeps the calibrated z (main recalibrated it for the rounds left,
    to calibrate_remaining's 0.5% tolerance, e.g. 2.03414 -> 2.03461) and ends exactly as the uninterrupted run."""
    straight, resumed = _summary(target_runs / "straight"), _summary(target_runs / "resumed")
    assert resumed["threat_model"]["noise_multiplier"] == straight["threat_model"]["noise_multiplier"]
    expected, got = _rows(target_runs / "straight"), _rows(target_runs / "resumed")
    assert sorted(got) == [3, 4, 5] and all(got[r] == expected[r] for r in got)
    for name, array in _model(target_runs / "straight").items():
        np.testing.assert_array_equal(_model(target_runs / "resumed")[name], array)


# --- item 4: finished means finished ---------------------------------------------------------------------------------


def test_a_federation_error_leaves_an_unfinished_summary_with_its_reason(tmp_path):
    cfg = tiny_config("attack=off", "federation.node_crash_prob=0.99", "federation.fail_fast=true", rounds=3)
    with pytest.raises(server_loop.FederationError):
        run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["finished"] is False and summary["stop_reason"] == "federation_error"
    assert "injected fault" in summary["stop_detail"] and summary["rounds_completed"] == 0


def test_an_interrupted_run_is_not_finished_and_its_resume_is(target_runs):
    first = _summary(target_runs / "first")
    assert first["rounds_completed"] == 2 and first["finished"] is False
    assert first["stop_reason"] == "interrupted" and first["stop_detail"] == "interrupted after round 2"
    straight, resumed = _summary(target_runs / "straight"), _summary(target_runs / "resumed")
    assert (
        straight["finished"] is resumed["finished"] is True and straight["stop_reason"] == resumed["stop_reason"] == ""
    )


def test_only_a_run_of_every_planned_round_is_finished(earlier, tmp_path):
    done = json.loads((earlier / "summary.json").read_text())
    assert done["finished"] is True and done["stop_reason"] == "" and done["rounds_completed"] == 3
    cfg = tiny_config("attack=off", "mode=centralized", rounds=2)
    centralized = run(cfg, tmp_path / "centralized")
    assert centralized["finished"] is True and centralized["stop_reason"] == ""
