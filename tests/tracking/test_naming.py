"""Issue 20 item 3: a run is named by what it is (preset + overrides), not "demo" for every run."""

import json
import os
import re
import subprocess
import sys

from conftest import TINY

from fedsim.cli import preflight, with_run_name
from fedsim.tracking.naming import MAX_LENGTH, run_name


def _name(*arguments: str) -> str:
    """The ``name=`` that ``fedsim <arguments>`` runs under (what Hydra's run folder and TensorBoard show)."""
    named = with_run_name(list(arguments), preflight(list(arguments)))
    return named[-1].partition("=")[2].strip("'") if len(named) > len(arguments) else preflight(list(arguments)).name


def test_the_name_says_what_the_run_is():
    assert _name() == "demo"
    assert (
        _name("privacy=central", "privacy.target_epsilon=8", "dataset=movielens_100k") == "privacy=central,eps=8,ml100k"
    )
    assert _name("+experiment=audit_demo", "seed=1") == "audit_demo,seed=1"
    assert _name("+experiment=audit_demo") == "audit_demo"
    assert _name("progress=false", "verbose=true") == "demo"  # presentation only: the same run
    assert _name("name=mine", "seed=3") == "mine"  # name= still decides


OVERRIDE_SETS = [
    (),
    ("seed=1",),
    ("seed=2",),
    ("privacy=central",),
    ("privacy=central", "privacy.target_epsilon=8"),
    ("privacy=central", "privacy.target_epsilon=8.0"),
    ("privacy=local",),
    ("dataset=movielens_100k",),
    ("dataset.path=../a/b",),
    ("dataset.path=../a_b",),
    ("client.lr=0.1",),
    ("federation.rounds=3", "client.lr=0.1"),
    ("client.lr=0.1", "federation.rounds=3", "seed=0", "model.dim=16", "privacy=central", "privacy.target_epsilon=1",
     "personalization=dual", "mitigation=rerank", "consent=purposes", "secagg=secagg_plus"),
    ("client.lr=0.1", "federation.rounds=3", "seed=0", "model.dim=16", "privacy=central", "privacy.target_epsilon=1",
     "personalization=dual", "mitigation=rerank", "consent=purposes", "secagg=none"),
]  # fmt: skip


def test_different_overrides_never_share_a_name_and_names_are_filesystem_safe():
    names = [run_name("demo", list(overrides)) for overrides in OVERRIDE_SETS]
    assert len(set(names)) == len(names), names
    assert names == [run_name("demo", list(o)) for o in OVERRIDE_SETS]  # deterministic
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", name) and len(name) <= MAX_LENGTH, name


def test_the_cli_writes_the_run_into_a_folder_with_its_name(tmp_path):
    """End to end: ``fedsim <overrides>`` (no name=) makes results/runs/<derived name>/<timestamp>/ and records the
    name in summary.json (on main: results/runs/demo/...)."""
    overrides = [o for o in TINY if not o.startswith("name=")] + ["federation.rounds=1", "seed=7"]
    done = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = run_name("demo", overrides)
    assert expected != "demo" and "progress" not in expected
    (run_dir,) = (tmp_path / "results" / "runs" / expected).iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["name"] == expected


def test_runs_named_by_their_seed_are_still_replicates_of_one_setting():
    """``fedsim seed=0`` and ``fedsim seed=1`` now have different names; fedsim-report must still pool them."""
    from fedsim.report.sweep import _varying

    configs = [{"name": run_name("demo", [f"seed={s}"]), "seed": s, "model.dim": 16} for s in (0, 1)]
    assert configs[0]["name"] != configs[1]["name"] and _varying(configs) == []
