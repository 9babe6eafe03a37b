"""Crash safety: a run killed with SIGKILL mid-run resumes from its last checkpoint to exactly the numbers of an
uninterrupted run (seeded randomness), with a stateful strategy, central DP and the audit in play."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fedsim.checkpoint import latest, publish, round_dir, save_json

ARGS = [
    "dataset.n_users=60",
    "dataset.n_items=300",
    "federation.rounds=8",
    "federation.backend=inprocess",
    "federation.sampling=poisson",
    "federation.participation=0.5",
    "strategy=fedavgm",
    "privacy=central",
    "privacy.noise_multiplier=1.0",
    "evaluation.every=1",
    "progress=false",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(*extra: str, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", *ARGS, *extra],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["round"]: {k: v for k, v in r.items() if not k.startswith("time/")} for r in rows}


def test_publish_is_the_only_step_that_makes_a_checkpoint_current(tmp_path):
    assert latest(tmp_path) is None
    round_dir(tmp_path, 3).mkdir(parents=True)  # a round folder alone (half written) does not count
    save_json(round_dir(tmp_path, 3) / "loop_state.json", {})
    assert latest(tmp_path) is None
    publish(tmp_path, 3)
    round_dir(tmp_path, 4).mkdir()
    assert latest(tmp_path) == (3, round_dir(tmp_path, 3))
    publish(tmp_path, 4)
    assert latest(tmp_path) == (4, round_dir(tmp_path, 4)) and not round_dir(tmp_path, 3).exists()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight, killed, resumed = tmp_path / "straight", tmp_path / "killed", tmp_path / "resumed"
    assert _start(f"output_dir={straight}", cwd=tmp_path).wait(timeout=600) == 0

    process = _start(f"output_dir={killed}", cwd=tmp_path)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        found = latest(killed)
        if found and found[0] >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = latest(killed)[0]
    assert 3 <= done < 8 and not (killed / "model.npz").exists()  # interrupted: no final files, only the checkpoint

    result = _start(f"output_dir={resumed}", f"resume_from={killed}", cwd=tmp_path)
    assert result.wait(timeout=600) == 0, result.stderr.read().decode()[-2000:]

    expected, got = _rows(straight), _rows(resumed)
    assert sorted(got) == list(range(done + 1, 9))
    for r in got:
        diff = {
            k: (got[r].get(k), expected[r].get(k))
            for k in set(got[r]) | set(expected[r])
            if got[r].get(k) != expected[r].get(k)
        }
        assert not diff, f"round {r} differs: {diff}"
    with np.load(straight / "model.npz") as a, np.load(resumed / "model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.slow
def test_one_ctrl_c_stops_after_the_round_with_a_checkpoint_and_one_line(tmp_path):
    run_dir = tmp_path / "run"
    process = _start(f"output_dir={run_dir}", "federation.rounds=200", cwd=tmp_path)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None and not (latest(run_dir) and latest(run_dir)[0] >= 2):
        time.sleep(0.02)
    sent = time.time()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    stopped_after = time.time() - sent
    err = err.decode()
    assert process.returncode == 130 and stopped_after < 5.0
    assert "Traceback" not in err and "interrupted after round" in err and f"resume_from={run_dir}" in err
    done = latest(run_dir)[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == done and summary["stop_detail"] == f"interrupted after round {done}"
    assert summary["stop_reason"] == "interrupted" and summary["finished"] is False
