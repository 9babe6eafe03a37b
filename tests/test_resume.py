"""Resume verifies what it reads (issue 18, items 2-4): tampered or damaged checkpoints are refused in one line or
passed over for the one before; DP settings cannot change on a resume; an unchanged plan resumes bit-identically;
``finished`` means every planned round ran.

Each test goes through :func:`fedsim.run.run` with configs composed from the real ``conf/``, as ``fedsim`` does.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.checkpoint import (
    files_below,
    load_npz,
    publish,
    round_dir,
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


# The probe table's own edits (experiments/reliability/probe_checkpoints.py): what the README measures is pinned here.
_spec = importlib.util.spec_from_file_location(
    "probe_checkpoints", Path(__file__).resolve().parents[1] / "experiments" / "reliability" / "probe_checkpoints.py"
)
assert _spec is not None and _spec.loader is not None
probes = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = probes  # its dataclass looks itself up there
_spec.loader.exec_module(probes)
TAMPER = {p.what: p for p in probes.PROBES if p.kind == "tamper"}
DAMAGE = {p.what: p for p in probes.PROBES if p.kind == "damage" and not p.pointer}
# a tamperer who rewrites the manifest and keeps every file consistent with the edit is beyond a checksum
CONSISTENT = "local DP: counts halved, loop_state.json too"


def _tampered(earlier: Path, earlier_local: Path, tmp_path: Path, probe, variant: str) -> tuple[Path, tuple]:
    run_dir = _copy(earlier_local if probe.base == "local" else earlier, tmp_path)
    targets = probes._targets(run_dir, probe, variant)
    assert targets
    for folder in targets:
        probe.edit(folder)
    if variant == "manifest rewritten":
        probes._rewrite_manifests(targets)
    return run_dir, LOCAL if probe.base == "local" else CENTRAL


@pytest.mark.parametrize(
    ("what", "rewrite"),
    [(what, rewrite) for what in TAMPER for rewrite in (False, True) if not (rewrite and what == CONSISTENT)],
)
def test_an_edit_that_lowers_epsilon_is_refused_in_one_line(earlier, earlier_local, tmp_path, what, rewrite):
    """Edits of the history, δ or participation counts in every stored copy: on main each resumed silently and
    reported a lower ε (probe table: 11.33 true, 6.69-9.30 reported). Refused here, also when the manifest was
    recomputed to match (then by the consistency checks: releases = rounds, q, δ, z, the loop's counts) — except
    an edit kept consistent across every file (CONSISTENT), which no checksum without a secret can tell."""
    variant = "manifest rewritten" if rewrite else "every copy"
    run_dir, base = _tampered(earlier, earlier_local, tmp_path, TAMPER[what], variant)
    assert "no usable checkpoint" in _refused(run_dir, tmp_path, base=base)


@pytest.mark.parametrize("what", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_line(earlier, earlier_local, tmp_path, what):
    """Damage in every stored copy: one line naming the file — on main a traceback (truncated npz, bad JSON, wrong
    shape), a silent fresh start (missing devices, loop or strategy state) or a resume of NaN."""
    run_dir, base = _tampered(earlier, earlier_local, tmp_path, DAMAGE[what], "every copy")
    message = _refused(run_dir, tmp_path, base=base)
    assert "no usable checkpoint" in message and DAMAGE[what].file in message


@pytest.mark.parametrize("what", ["NaN in model.npz", "model.npz of another shape"])
def test_content_checks_catch_what_a_rewritten_manifest_hides(earlier, earlier_local, tmp_path, what):
    run_dir, base = _tampered(earlier, earlier_local, tmp_path, DAMAGE[what], "manifest rewritten")
    assert "model.npz" in _refused(run_dir, tmp_path, base=base)


@pytest.mark.parametrize("what", ["model.npz truncated", "checkpoint/latest.json not JSON"])
def test_a_damaged_newest_checkpoint_is_passed_over_with_one_line(earlier, straight, tmp_path, what):
    """Round 3's model truncated (the resume continues from round 2) or the pointer to it unreadable (round 3 is
    found without it): one line says so, and the run ends exactly as the uninterrupted one (on main: a traceback)."""
    probe = next(p for p in probes.PROBES if p.what == what)
    run_dir, _ = _tampered(earlier, earlier, tmp_path, probe, "newest only")
    summary = _resume(run_dir, tmp_path / "resumed")
    said = [w for w in summary["warnings"] if w.startswith("resume_from:")]
    assert len(said) == 1 and (probe.file or "latest.json") in said[0]
    expected, got = _rows(straight), _rows(tmp_path / "resumed")
    assert max(got) == 4 and all(got[r] == expected[r] for r in got)
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
    to calibrate_remaining's 0.5% tolerance, e.g. 1.90333 -> 1.90660) and ends exactly as the uninterrupted run."""
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
    cfg = tiny_config("mode=centralized", rounds=2)
    centralized = run(cfg, tmp_path / "centralized")
    assert centralized["finished"] is True and centralized["stop_reason"] == ""
