"""fedsim chooses torch's thread count itself (issue 20): one thread unless the user set OMP_NUM_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import os, fedsim.cli, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"


def _threads(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_one_thread_by_default_and_the_users_choice_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    assert _threads(env) == "1 1"
    assert _threads({**env, "OMP_NUM_THREADS": "2"}) == "2 2"
