"""Output hygiene of the real ``fedsim`` command: refused runs leave no folder, runs never share one, nothing already
written is touched. Every CLI test runs ``python -m fedsim.cli`` in ``tmp_path`` so that ``results/`` lands there."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim import cli, runlock

TINY = (
    "dataset.n_users=40",
    "dataset.n_items=300",
    "federation.rounds=1",
    "federation.backend=inprocess",
    "progress=false",
    "attack=off",
)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )


def _refused(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The single stderr line of a refused run (exit 2, no traceback), checked to contain ``expected``."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fedsim: error: ")
    for text in expected:
        assert text in lines[0]
    return lines[0]


def _tree(root: Path) -> dict[str, str]:
    """Every path below ``root`` with its content hash (folders as ``dir``): to prove nothing changed."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _ml100k(folder: Path, rating_line_2: str = "1\t2\t3\t101") -> Path:
    folder.mkdir()
    (folder / "u.data").write_text(f"1\t1\t5\t100\n{rating_line_2}\n2\t2\t4\t102\n2\t3\t1\t103\n3\t1\t2\t104\n")
    (folder / "u.user").write_text("1|24|M|writer|00000\n2|61|F|doctor|00000\n3|30|M|other|00000\n")
    return folder


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["federation.roundz=3"], "unknown key 'federation.roundz' in FederationConfig; allowed:"),
        (["federation.rounds=0"], "federation.rounds=0 is out of range"),
        (["federation.rounds=abc"], "federation.rounds: Value 'abc'"),
        (["dataset=movielens_10m"], "dataset=movielens_10m is not an option; choose one of: movielens_100k"),
        (["+foo=1"], "unknown key 'foo' in FedsimConfig"),
        (["-m", "federation.rounds=0,1"], "federation.rounds=0 is out of range"),  # a sweep's job: cleaned up after
        (["-m", "seed=0,1", "federation.roundz=1"], "unknown key 'federation.roundz'"),  # Hydra's own error
        (["-m", "model=mf,transformer"], "model=transformer is not an option; choose one of: mf, neumf"),
    ],
    ids=[
        "unknown-key",
        "out-of-range",
        "not-an-integer",
        "unknown-option",
        "added-key",
        "multirun-job",
        "multirun-unknown-key",
        "multirun-unknown-option",
    ],
)
def test_a_config_typo_is_one_line_and_leaves_no_folder(tmp_path, overrides, expected):
    _refused(_cli(*overrides, cwd=tmp_path), expected)
    assert not (tmp_path / "results").exists()


def test_a_missing_data_folder_is_one_line_and_leaves_no_folder(tmp_path):
    """The data is read inside the run, after Hydra made the run folder: the folder is removed again."""
    result = _cli("dataset=movielens_100k", f"dataset.path={tmp_path / 'nowhere'}", cwd=tmp_path)
    _refused(result, "u.data", "grouplens")
    assert not (tmp_path / "results").exists()


def test_a_malformed_data_file_is_one_line_and_leaves_no_folder(tmp_path):
    data = _ml100k(tmp_path / "ml", rating_line_2="1\t2\t7\t101")
    result = _cli("dataset=movielens_100k", f"dataset.path={data}", cwd=tmp_path)
    _refused(result, f"{data / 'u.data'} line 2: rating 7 is out of range; allowed: whole stars 1..5")
    assert not (tmp_path / "results").exists()


def test_a_data_error_keeps_a_pre_existing_output_dir_and_removes_one_it_created(tmp_path):
    data = tmp_path / "nowhere"
    mine = tmp_path / "existing"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    _refused(_cli("dataset=movielens_100k", f"dataset.path={data}", f"output_dir={mine}", cwd=tmp_path), "u.data")
    assert (mine / "notes.txt").read_text() == "mine"
    fresh = tmp_path / "new" / "out"
    _refused(_cli("dataset=movielens_100k", f"dataset.path={data}", f"output_dir={fresh}", cwd=tmp_path), "u.data")
    assert not (tmp_path / "new").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("where", ["/proc/fedsim-out", "a-file/out"])
def test_an_unwritable_output_dir_is_one_line(tmp_path, where):
    (tmp_path / "a-file").write_text("not a folder")
    line = _refused(_cli(f"output_dir={where}", cwd=tmp_path), f"output_dir={where} is not writable: ")
    assert "Errno" not in line
    assert not (tmp_path / "results").exists() and (tmp_path / "a-file").read_text() == "not a folder"


def test_a_bad_resume_from_is_one_line_and_leaves_no_folder(tmp_path):
    _refused(_cli(f"resume_from={tmp_path / 'no-such-run'}", cwd=tmp_path), "resume_from=")
    assert not (tmp_path / "results").exists()


def test_an_output_dir_that_holds_a_run_is_refused_and_left_untouched(tmp_path):
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "summary.json").write_text('{"finished": true}\n')
    (old / "metrics.jsonl").write_text('{"round": 1}\n')
    (old / ".hydra").mkdir()
    (old / ".hydra" / "config.yaml").write_text("name: old\n")
    before = _tree(old)
    for flags in ([], ["-m"]):  # the single-run preflight and a sweep job
        result = _cli(*flags, *TINY, f"output_dir={old}", cwd=tmp_path)
        _refused(result, f"output_dir={old} already holds a run (summary.json, metrics.jsonl)")
        assert _tree(old) == before
        assert not (tmp_path / "results").exists()


def test_two_runs_with_the_same_name_in_the_same_second_get_two_folders(tmp_path):
    """Both runs ask for the same folder (hydra.run.dir pinned, so the collision is certain, not a timing accident)."""
    same = "hydra.run.dir=${fedsim.run_dir:null,results/runs/twin/same-second}"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "fedsim.cli", same, "name=twin", f"seed={seed}", *TINY],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-2000:]
    folders = sorted(p.name for p in (tmp_path / "results" / "runs" / "twin").iterdir())
    assert folders == ["same-second", "same-second_2"]
    seeds = set()
    for name in folders:
        summary = json.loads((tmp_path / "results" / "runs" / "twin" / name / "summary.json").read_text())
        assert summary["finished"] is True and summary["run_dir"].endswith(name)
        seeds.add(summary["config"]["seed"])
    assert seeds == {0, 1}  # each folder holds one whole run, not a mix


def test_the_default_run_folder_is_claimed_once_per_run(tmp_path):
    """Two quick runs with the default folder layout: two folders, each with its own summary.json."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "fedsim.cli", "name=pair", *TINY], cwd=tmp_path, stdout=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    folders = list((tmp_path / "results" / "runs" / "pair").iterdir())
    assert len(folders) == 2 and all((folder / "summary.json").is_file() for folder in folders)


def test_claim_appends_a_suffix_when_the_folder_is_taken(tmp_path):
    base = tmp_path / "runs" / "x" / "2030-01-01_00-00-00"
    assert [cli.claim(base).name for _ in range(3)] == [base.name, f"{base.name}_2", f"{base.name}_3"]


def test_discard_removes_only_hydra_files_in_folders_this_process_created(tmp_path):
    kept_parent = tmp_path / "results"
    kept_parent.mkdir()
    folder = cli.claim(kept_parent / "runs" / "demo" / "t")
    (folder / ".hydra").mkdir()
    for name in cli.HYDRA_FILES:
        (folder / ".hydra" / name).write_text("x")
    (folder / "cli.log").write_text("")
    cli.discard(folder, "cli.log")
    assert not (kept_parent / "runs").exists() and kept_parent.is_dir()  # created parents go, the old one stays

    busy = cli.claim(kept_parent / "t")
    (busy / "metrics.jsonl").write_text("{}\n")
    cli.discard(busy, "cli.log")
    assert (busy / "metrics.jsonl").is_file()

    not_ours = tmp_path / "elsewhere"
    (not_ours / ".hydra").mkdir(parents=True)
    cli.discard(not_ours, "cli.log")
    assert (not_ours / ".hydra").is_dir()


# --- one run per folder, also concurrently (issue 18, item 8) --------------------------------------------------------
def _start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_runs_started_at_once_on_one_output_dir_one_is_refused(tmp_path):
    """Both see an empty folder when they start; without a lock both wrote into it (metrics rows 1,2,3,1,2,3)."""
    out = tmp_path / "shared"
    runs = [_start(*TINY, "federation.rounds=4", f"seed={seed}", f"output_dir={out}", cwd=tmp_path) for seed in (0, 1)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], [err[-2000:] for _, _, err in results]
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    loser = results[1 - winner]
    line = _refused(subprocess.CompletedProcess([], loser[0], loser[1], loser[2]), f"output_dir={out}")
    assert "in use by another fedsim run" in line or "already holds a run" in line  # the latter: it started late
    assert _rounds(out) == [1, 2, 3, 4]
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == winner
    assert not (out / runlock.LOCK_FILE).exists()  # the winner gave its lock back at the end


def test_a_live_run_keeps_its_folder_and_a_dead_one_does_not(tmp_path):
    """While a run lives, its output_dir and a resume from it are refused with its pid; once it is killed -9 (its
    lock file left behind), the lock no longer blocks: the run resumes."""
    live = tmp_path / "live"
    run = _start(*TINY, "federation.rounds=300", "checkpoint.every=1", f"output_dir={live}", cwd=tmp_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and run.poll() is None and not (live / "checkpoint" / "latest.json").is_file():
            time.sleep(0.05)
        assert run.poll() is None, run.communicate()[1][-2000:]
        before = _tree(live / ".hydra")
        busy = _cli(*TINY, f"output_dir={live}", cwd=tmp_path)
        _refused(busy, f"output_dir={live} is in use by another fedsim run (pid {run.pid})")
        fork = tmp_path / "fork"
        busy = _cli(*TINY, "federation.rounds=400", f"resume_from={live}", f"output_dir={fork}", cwd=tmp_path)
        _refused(busy, f"resume_from={live} is in use by another fedsim run (pid {run.pid})")
        assert not fork.exists() and _tree(live / ".hydra") == before
    finally:
        run.kill()
        run.communicate()
    assert (live / runlock.LOCK_FILE).exists()  # killed: the file stays, the kernel released the lock
    done = int(json.loads((live / "checkpoint" / "latest.json").read_text())["round"])
    resumed = tmp_path / "resumed"
    result = _cli(*TINY, f"federation.rounds={done + 1}", f"resume_from={live}", f"output_dir={resumed}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _rounds(resumed) == [done + 1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished federated run of one round (the CLI's own configuration), to resume from."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    result = _cli(*TINY, f"output_dir={folder}", cwd=folder.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.mark.parametrize(
    "overrides, expected",
    [
        pytest.param(["resume_from={nowhere}"], "not a fedsim federated run", id="no-such-run"),
        pytest.param(["resume_from={a_file}"], "not a fedsim federated run", id="a-file"),
        pytest.param(
            ["mode=centralized", "resume_from={run}"],
            "is read only when mode=federated; this run has mode=centralized",
            id="centralized",
        ),
        pytest.param(["model.dim=8", "federation.rounds=3", "resume_from={run}"], "model differs", id="other-model"),
        pytest.param(["resume_from={run}"], "already completed 1 rounds", id="already-finished"),
    ],
)
def test_a_refused_resume_leaves_no_folder(tmp_path, finished_run, overrides, expected):
    """Every refusal path of resume_from with a new output_dir whose parents do not exist yet: nothing is created
    (the run folder without output_dir: test_a_bad_resume_from_is_one_line_and_leaves_no_folder)."""
    (tmp_path / "a-file").write_text("x")
    paths = {"nowhere": tmp_path / "nowhere", "a_file": tmp_path / "a-file", "run": finished_run}
    args = [override.format(**paths) for override in overrides]
    before = _tree(finished_run)
    _refused(_cli(*TINY, *args, f"output_dir={tmp_path / 'new' / 'deep' / 'out'}", cwd=tmp_path), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no new/, no results/
    assert _tree(finished_run) == before


def test_a_sweep_says_which_job_of_how_many_is_running(tmp_path):
    """Job progress on --multirun sweeps (issue 20): the preset's sweeper params count, the command line wins."""
    from fedsim.cli import sweep_plan

    assert sweep_plan(["+experiment=privacy_frontier"]) == (15, ["privacy.target_epsilon", "seed"])
    assert sweep_plan(["+experiment=privacy_frontier", "seed=0"]) == (5, ["privacy.target_epsilon"])
    result = _cli("-m", *TINY, "attack=off", "seed=0,1", "model.dim=4,8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = [line for line in result.stdout.splitlines() if line.startswith("fedsim: job ")]
    assert jobs == [
        "fedsim: job 1 of 4: seed=0 model.dim=4",
        "fedsim: job 2 of 4: seed=0 model.dim=8",
        "fedsim: job 3 of 4: seed=1 model.dim=4",
        "fedsim: job 4 of 4: seed=1 model.dim=8",
    ]
