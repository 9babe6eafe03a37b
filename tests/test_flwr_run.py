"""``fedsim-flwr``: ``flwr run`` that stops the local SuperLink it started (issue 20). Flower itself is replaced by
stand-ins here (a fake ``flwr`` that starts a fake detached ``flower-superlink``, as flwr 1.42 does); the real
``flwr run`` is the recorded probe in experiments/reliability/README.md."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim import flwr_run

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")

SLEEPER = f"#!{sys.executable}\nimport time\ntime.sleep(60)\n"


def _fake_flower(tmp_path: Path, log: Path) -> Path:
    """A folder with ``flwr`` (starts a detached ``flower-superlink --log-file <log>`` and returns) and that
    ``flower-superlink`` (sleeps)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link = bin_dir / "flower-superlink"
    link.write_text(SLEEPER)
    flwr = bin_dir / "flwr"
    # like flwr 1.42: start it detached, wait until it is up, run, return (here: at once)
    flwr.write_text(f"#!/bin/sh\nsetsid {link} --simulation --log-file {log} >/dev/null 2>&1 &\nsleep 1\nexit 0\n")
    for path in (link, flwr):
        path.chmod(0o755)
    return bin_dir


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_superlink_a_run_started_is_stopped_and_one_that_ran_before_is_left(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    log = flwr_run.local_superlink_log()
    assert log == tmp_path / "home" / "local-superlink" / "superlink.log"
    monkeypatch.setenv("PATH", f"{_fake_flower(tmp_path, log)}{os.pathsep}{os.environ['PATH']}")
    assert flwr_run.main([".", "--stream"]) == 0
    assert "stopped the local SuperLink this run started" in capsys.readouterr().out
    assert _wait_for(lambda: flwr_run.local_superlinks(log) == [])
    # a SuperLink already running before the call (the user's) is not stopped
    mine = subprocess.Popen([str(tmp_path / "bin" / "flower-superlink"), "--log-file", str(log)])
    try:
        assert _wait_for(lambda: flwr_run.local_superlinks(log) == [mine.pid])
        (tmp_path / "bin" / "flwr").write_text("#!/bin/sh\nexit 3\n")
        assert flwr_run.main(["."]) == 3  # flwr's exit code is passed on
        assert mine.poll() is None and "stopped" not in capsys.readouterr().out
    finally:
        mine.kill()
        mine.wait()


def test_another_flwr_home_is_not_ours(tmp_path):
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "flower-superlink", "--log-file", str(tmp_path / "x")]
    )
    try:
        time.sleep(0.2)
        assert flwr_run.local_superlinks(tmp_path / "y") == []
    finally:
        other.kill()
        other.wait()
