"""The tutorial notebooks (tutorials/*.ipynb) run against the installed package, end to end, and teach what they say.

Each notebook is executed with nbclient in a fresh ``python3`` kernel (ipykernel from the ``dev`` extra), from the
tutorials folder as Jupyter would run it. A cell that raises fails the test; then the notebook's "Answer" cell —
numbers it computed live from the runs' files — is parsed and checked against the lesson the notebook's prose draws,
so a change in fedsim that silently breaks a lesson (the attack stops working, the audit stops rolling back, a
fairness number stops matching per_user.csv) fails here rather than in front of a class.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import nbclient
import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NUMBER = r"([-+]?\d+(?:\.\d+)?|inf)"


def _answer(nb) -> str:
    """The stdout of the notebook's answer cell (the code cell that prints a line starting with "Answer:")."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")
        if text.startswith("Answer:"):
            return text
    raise AssertionError("no cell printed a line starting with 'Answer:'")


def _check_privacy(answer: str) -> None:
    pattern = (
        rf"target ε={NUMBER}: test HR@10 {NUMBER} vs ItemPop {NUMBER} \((above|below) ItemPop\), z={NUMBER}, "
        rf"max membership advantage {NUMBER}"
    )
    rows = {float(m[0]): m for m in re.findall(pattern, answer)}
    assert sorted(rows) == [2.0, 8.0, float("inf")], answer
    hr = {eps: float(m[1]) for eps, m in rows.items()}
    pop = {float(m[2]) for m in rows.values()}
    z = {eps: float(m[4]) for eps, m in rows.items()}
    bound = {eps: float(m[5]) for eps, m in rows.items()}
    assert len(pop) == 1, "every ε must be compared with the same ItemPop"
    for eps, m in rows.items():
        assert (m[3] == "above") == (hr[eps] > next(iter(pop))), m  # the verdict word follows the numbers
    assert hr[2.0] < hr[8.0] < hr[float("inf")], "the price of privacy: utility falls as ε shrinks"
    assert z[float("inf")] == 0 < z[8.0] < z[2.0], "smaller ε needs more noise"
    assert bound[float("inf")] == 1.0 and bound[2.0] < bound[8.0] < 1.0, "the membership bound tightens with ε"


def _check_audit(answer: str) -> None:
    rollbacks = int(re.search(r"rollbacks: (\d+)", answer)[1])
    pauses = int(re.search(r"pauses in the paused run: (\d+)", answer)[1])
    z_first, z_last = map(float, re.search(rf"noise multiplier z: {NUMBER} -> {NUMBER}", answer).groups())
    auc_first, auc_last = map(float, re.search(rf"item-set AUC first {NUMBER}, last {NUMBER}", answer).groups())
    assert rollbacks >= 1 and pauses == 1, answer
    assert z_last == pytest.approx(z_first * 2**rollbacks, rel=1e-3), "each rollback's remediation doubles z"
    assert auc_first > 0.6 >= auc_last, "the breach is closed by the remediation"
    di = re.findall(rf"disparate impact by (\w+): {NUMBER} \(reported {NUMBER}\)", answer)
    assert len(di) == 2, answer  # the dataset's first two groupings
    for _, recomputed, reported in di:
        assert float(recomputed) == pytest.approx(float(reported), abs=1e-4), "per_user.csv must reproduce the DI"


def _check_poisoning(answer: str) -> None:
    pattern = rf"(.+): target exposure@10 {NUMBER}, median rank {NUMBER}, benign test HR@10 {NUMBER}"
    rows = {name: (float(e), float(r), float(h)) for name, e, r, h in re.findall(pattern, answer)}
    expected = {"no attack", "attack, FedAvg", "attack, norm_bound", "attack, trimmed_mean", "attack, multi_krum"}
    assert set(rows) == expected, answer
    clean, attacked = rows["no attack"], rows["attack, FedAvg"]
    assert clean[0] < 0.05 and attacked[0] > 0.5, "boost_target must put the target in most benign top-10s"
    assert attacked[1] < clean[1], "the attack must raise the target's rank"
    assert abs(attacked[2] - clean[2]) < 0.05, "the attack is invisible in benign HR@10 (the lesson)"
    best = re.search(r"best defence here: (\w+)", answer)[1]
    exposure = {name: e for name, (e, _, _) in rows.items()}
    assert exposure[f"attack, {best}"] == min(
        v for k, v in exposure.items() if k not in ("no attack", "attack, FedAvg")
    )
    assert exposure[f"attack, {best}"] < attacked[0] / 2, "at least one robust rule must hold the attack back"


CHECKS: dict[str, Callable[[str], None]] = {
    "01_price_of_privacy.ipynb": _check_privacy,
    "02_fairness_and_audit.ipynb": _check_audit,
    "03_poisoning_and_defences.ipynb": _check_poisoning,
}


def test_every_tutorial_is_checked_and_stored_without_outputs():
    """Each notebook under tutorials/ has a check here, is stored without outputs (small diffs) and names the
    ``python3`` kernel that ipykernel installs into the virtual environment."""
    notebooks = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
    assert notebooks == sorted(CHECKS)
    for name in notebooks:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{name}: strip outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_tutorial_runs_and_teaches_what_it_says(name, tmp_path, monkeypatch):
    # this interpreter's kernelspec first, so a kernel registered elsewhere (a user's ~/.local) cannot run the notebook
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    monkeypatch.setenv("FEDSIM_TUTORIAL_DIR", str(tmp_path))  # the runs' folders (tutorial.py), removed by pytest
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the tutorial's plots must render inline"
    CHECKS[name](_answer(nb))
