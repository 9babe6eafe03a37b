"""Issue 18 item 11 through the real ``fedsim`` command: readers and run files give one line, no traceback — an
unreadable data file and ``seed=-1`` (bad input, exit 2), a full disk while the run writes its files (exit 1: not the
user's input) — and a data file whose timestamps cannot order the split warns on the console and in summary.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_hygiene import TINY, _cli  # the same tiny run, through the same real command


def _one_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("fedsim: error")]
    assert len(errors) == 1 and not any(
        line.startswith(("  ", "OSError", "ValueError")) for line in result.stderr.splitlines()
    ), result.stderr
    return errors[0]


def _same_time_ml100k(folder: Path) -> Path:
    """6 users with 4 items each, every rating at the same second."""
    folder.mkdir()
    (folder / "u.user").write_text("".join(f"{u}|30|M|writer|00000\n" for u in range(1, 7)))
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t4\t881250949\n" for u in range(1, 7) for i in range(u, u + 4)))
    return folder


def test_seed_minus_one_is_one_line(tmp_path):
    line = _one_line(_cli(*TINY, "seed=-1", cwd=tmp_path), 2)
    assert (
        line
        == "fedsim: error: seed=-1 is out of range; allowed: an integer 0 <= seed < 2^63 (numpy and torch seed with it)"
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc (a file that fails to read)")
def test_an_unreadable_data_file_is_one_line(tmp_path):
    data = _same_time_ml100k(tmp_path / "ml")
    (data / "u.data").unlink()
    (data / "u.data").symlink_to("/proc/self/mem")  # exists, is a file, and fails to read (EIO), even for root
    line = _one_line(_cli("dataset=movielens_100k", f"dataset.path={data}", cwd=tmp_path), 2)
    assert line == f"fedsim: error: {data / 'u.data'}: cannot be read: Input/output error"
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write fails with ENOSPC)")
def test_a_full_disk_while_writing_the_run_files_is_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").symlink_to("/dev/full")  # the run's report lands on a full disk
    line = _one_line(_cli(*TINY, f"output_dir={out}", cwd=tmp_path), 1)
    assert line == f"fedsim: error: No space left on device (the run stopped; what it wrote is in {out})"
    assert (out / "metrics.jsonl").stat().st_size > 0  # what was written before stays


def test_a_file_whose_timestamps_are_all_equal_warns(tmp_path):
    data = _same_time_ml100k(tmp_path / "ml")
    out = tmp_path / "out"
    result = _cli(
        "dataset=movielens_100k",
        f"dataset.path={data}",
        "evaluation.n_negatives=3",
        "federation.rounds=1",
        "progress=false",
        "attack=off",
        f"output_dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    said = "has the same timestamp (881250949): the leave-one-out split cannot be by time"
    assert f"warning: every interaction of MovieLens-100K at {data}" in result.stdout and said in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert any(said in warning for warning in summary["warnings"])
    assert said in (out / "report.md").read_text()


def test_fedsim_data_sets_the_default_movielens_paths(tmp_path, monkeypatch):
    """One data-path convention (issue 20): $FEDSIM_DATA holds ml-100k/ and ml-1m/; an explicit dataset.path wins."""
    from fedsim.cli import compose

    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    assert compose(["dataset=movielens_100k"]).dataset.path == "../shared/data/ml-100k"
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "data"))
    assert compose(["dataset=movielens_100k"]).dataset.path == str(tmp_path / "data" / "ml-100k")
    assert compose(["dataset=movielens_1m"]).dataset.path == str(tmp_path / "data" / "ml-1m")
    assert compose(["dataset=movielens_100k", "dataset.path=/x"]).dataset.path == "/x"
    # the command reads it too: a folder without the files is one line naming the path and the variable
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "dataset=movielens_100k", "federation.backend=inprocess"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, env={**os.environ, "FEDSIM_DATA": "elsewhere"},
    )  # fmt: skip
    line = _one_line(result, 2)
    assert f"expected file {Path('elsewhere') / 'ml-100k' / 'u.data'}" in line and "FEDSIM_DATA" in line
