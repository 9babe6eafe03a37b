"""Signals (issue 18, item 9): SIGTERM is a Ctrl-C (stop after the round, files written, exit 143, resumable); a
second signal stops at once, also on Ray; no Ray process outlives the driver; a killed run's ``.world/`` is removed.

The processes are driven by the reliability probe's own harness (experiments/reliability/probe_process.py: real
``fedsim`` processes in their own session, every descendant tracked), so the tests and the probe table measure the
same thing; the probe reports the times, the tests only guard against hangs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_config

from fedsim import runlock
from fedsim.run import WORLD_DIR, run
from fedsim.simulation import STOP_REQUESTED, StopNow, stop_on_interrupt, stop_signal

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "probe_process", REPO / "experiments" / "reliability" / "probe_process.py"
)
assert _spec is not None and _spec.loader is not None
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)

HANG_GUARD_S = 30.0  # a hang guard, not a timing: the probe measures the seconds


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs in the main thread at the next bytecode boundary


def test_sigterm_asks_for_a_stop_like_ctrl_c_and_a_second_signal_stops_at_once():
    def not_handled(signum, frame):
        raise AssertionError("SIGTERM reached the handler outside the run: it would have killed the run")

    previous = signal.signal(signal.SIGTERM, not_handled)  # so that an unhandled SIGTERM fails instead of killing
    try:
        with stop_on_interrupt():
            _signal_self(signal.SIGTERM)
            assert STOP_REQUESTED.is_set() and stop_signal() == signal.SIGTERM
            with pytest.raises(StopNow) as second:
                _signal_self(signal.SIGINT)
            assert second.value.signum == signal.SIGINT and isinstance(second.value, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGTERM) is not_handled  # the handlers are given back
        with stop_on_interrupt():
            assert not STOP_REQUESTED.is_set() and stop_signal() is None  # each run starts clean
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_stop_on_interrupt_outside_the_main_thread_installs_nothing():
    seen = []

    def body():
        with stop_on_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


def _wait_checkpoint(process, run_dir: Path, at_least: int = 1) -> None:
    assert process.wait_for(lambda: probe.checkpoint_round(run_dir) >= at_least, limit=600), process.text()[1][-3000:]
    assert process.poll(), "the run ended before it could be signalled"


def _one_line(process, *expected: str) -> str:
    _, err = process.text()
    assert "Traceback" not in err
    lines = process.err_lines()
    assert len(lines) == 1, err[-3000:]
    for text in expected:
        assert text in lines[0]
    return lines[0]


def _no_descendant_left(process) -> None:
    """Every process the run started (Ray's raylet, GCS, agents, workers) is gone soon after the driver."""
    deadline = time.time() + HANG_GUARD_S
    while probe.alive(process.tracked) and time.time() < deadline:
        time.sleep(0.2)
    left = probe.alive(process.tracked)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} processes of the run outlived it"


def test_sigterm_stops_after_the_round_exit_143_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    process = probe.Fedsim(REPO, tmp_path, *probe.INPROCESS, "federation.rounds=300", f"output_dir={run_dir}")
    _wait_checkpoint(process, run_dir, 2)
    process.send(signal.SIGTERM)
    assert process.finish(limit=HANG_GUARD_S) is not None, "SIGTERM did not stop the run"
    assert process.code == 143
    line = _one_line(process, "interrupted by SIGTERM after round", f"resume_from={run_dir}")
    done = probe.checkpoint_round(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    detail = summary.get("stop_detail", summary["stop_reason"])  # the words (stop_reason holds a code where split)
    assert summary["rounds_completed"] == done and detail == f"interrupted by SIGTERM after round {done}"
    assert line.startswith(f"fedsim: interrupted by SIGTERM after round {done}")
    assert (run_dir / "report.md").is_file() and not (run_dir / runlock.LOCK_FILE).exists()
    resumed = probe.Fedsim(
        REPO,
        tmp_path,
        *probe.INPROCESS,
        f"federation.rounds={done + 1}",
        f"resume_from={run_dir}",
        f"output_dir={tmp_path / 'resumed'}",
    )
    resumed.finish()
    assert resumed.code == 0, resumed.text()[1][-3000:]
    assert probe.rounds_in(tmp_path / "resumed") == [done + 1]


def test_a_stale_world_is_removed_on_resume_and_on_the_next_start(tmp_path):
    """A run killed with SIGKILL leaves its Ray workers' arrays (``.world/``) and its lock file: the next run
    started beside it removes the arrays, and so does a resume from it; a live run's arrays are never touched."""
    killed = tmp_path / "killed"
    (killed / WORLD_DIR).mkdir(parents=True)
    (killed / WORLD_DIR / "arrays.npy").write_bytes(b"x" * 1000)
    (killed / runlock.LOCK_FILE).write_text("999999\n")  # a dead run's: nobody holds the flock
    alive_dir = tmp_path / "alive"
    (alive_dir / WORLD_DIR).mkdir(parents=True)
    holder = subprocess.Popen(  # another live run, holding its folder's lock
        [
            sys.executable,
            "-c",
            f"import sys, time; from fedsim import runlock; runlock.acquire({str(alive_dir)!r}); print(1, flush=True); "
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        run(tiny_config("federation.rounds=1"), tmp_path / "next")
        assert not (killed / WORLD_DIR).exists()
        assert (alive_dir / WORLD_DIR).is_dir()
    finally:
        holder.kill()
        holder.wait()

    (tmp_path / "next" / WORLD_DIR).mkdir()  # as if killed after its first round, then resumed
    run(tiny_config("federation.rounds=2", f"resume_from={tmp_path / 'next'}"), tmp_path / "resumed")
    assert not (tmp_path / "next" / WORLD_DIR).exists()


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["to-the-driver", "to-the-process-group"])
def test_a_second_ctrl_c_on_ray_exits_at_once_with_one_line_and_no_ray_process_left(tmp_path, group):
    """Today's main hung 60-120 s (more here) after the second Ctrl-C: Flower's ServerApp thread waited for replies
    that never came and the interpreter joined it at exit. ``group``: sent to the whole process group, as a terminal's
    Ctrl-C is (the Ray processes get it too)."""
    run_dir = tmp_path / "run"
    process = probe.Fedsim(REPO, tmp_path, *probe.RAY, "federation.rounds=300", f"output_dir={run_dir}")
    _wait_checkpoint(process, run_dir)
    process.send(signal.SIGINT, group)
    time.sleep(0.5)
    process.send(signal.SIGINT, group)
    assert process.finish(limit=HANG_GUARD_S) is not None, "the second Ctrl-C did not stop the run"
    assert process.code == 130
    _one_line(process, "stopped at once by a second SIGINT", f"resume_from={run_dir}")
    assert not (run_dir / WORLD_DIR).exists()
    _no_descendant_left(process)


@pytest.mark.slow
def test_sigterm_on_ray_stops_after_the_round_and_leaves_no_ray_process(tmp_path):
    run_dir = tmp_path / "run"
    process = probe.Fedsim(REPO, tmp_path, *probe.RAY, "federation.rounds=300", f"output_dir={run_dir}")
    _wait_checkpoint(process, run_dir)
    process.send(signal.SIGTERM)
    assert process.finish(limit=120) is not None, "SIGTERM did not stop the run"
    assert process.code == 143
    _one_line(process, "interrupted by SIGTERM after round", f"resume_from={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary.get("stop_detail", summary["stop_reason"]).startswith("interrupted by SIGTERM")
    assert not (run_dir / WORLD_DIR).exists()
    _no_descendant_left(process)
