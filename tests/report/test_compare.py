"""fedsim-report compare: paired per-group differences B − A from two runs' per_user.csv."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import V1, tiny_config

from fedsim.report.cli import main
from fedsim.run import run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")
    run(tiny_config(V1, "privacy=none"), a)  # hand-checked on group A of the first generator's data
    run(tiny_config(V1, "privacy=central", "privacy.noise_multiplier=50"), b)
    return a, b


def _rows(path):
    with (path / "per_user.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path, rows):
    with (path / "per_user.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _table_row(text, grouping, group, metric):
    section = text.split(f"## {grouping}\n", 1)[1].split("\n## ", 1)[0]
    return next(line for line in section.splitlines() if line.startswith(f"| {group} |") and f"| {metric} |" in line)


def test_compare_writes_the_paired_group_mean_difference(two_runs, capsys):
    a, b = two_runs
    assert main(["compare", str(a), str(b)]) == 0
    text = (b / "compare.md").read_text()
    assert text.strip() in capsys.readouterr().out
    rows_a = {r["user"]: r for r in _rows(a)}
    rows_b = _rows(b)
    # hand check: group "A" of the synthetic data, test NDCG
    diffs = [float(r["test_ndcg"]) - float(rows_a[r["user"]]["test_ndcg"]) for r in rows_b if r["group"] == "A"]
    line = _table_row(text, "group", "A", "test_ndcg")
    assert f"| {len(diffs)} |" in line and f"{np.mean(diffs):+.4f} [" in line
    for grouping in ("role", "activity_tier", "activity_top5", "activity_quartile"):
        assert f"## {grouping}\n" in text
    assert "## item exposure (catalogue, final round)" in text and "long_tail_share" in text


def test_a_much_worse_run_is_flagged_for_the_group_that_lost(two_runs, tmp_path):
    a, _ = two_runs
    worse = tmp_path / "worse"
    shutil.copytree(a, worse)
    rows = _rows(a)
    for r in rows:  # every user of group A loses every hit; group B is unchanged
        if r["group"] == "A":
            r["test_hr"], r["test_ndcg"] = "0", "0"
    _write_rows(worse, rows)
    assert main(["compare", str(a), str(worse), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "⚠ worse off" in _table_row(text, "group", "A", "test_hr")
    assert "⚠ worse off" not in _table_row(text, "group", "B", "test_hr")
    assert "Significantly worse off in B: " in text and "group=A (test_hr" in text
    assert main(["compare", str(a), str(a), "--out", str(tmp_path / "same")]) == 0
    assert "No group is significantly worse off" in (tmp_path / "same" / "compare.md").read_text()


def test_runs_that_are_not_comparable_are_refused_with_one_line(two_runs, tmp_path, capsys):
    a, b = two_runs
    other_seed = tmp_path / "other_seed"
    shutil.copytree(b, other_seed)
    summary = json.loads((other_seed / "summary.json").read_text())
    summary["config"]["seed"] = 1
    (other_seed / "summary.json").write_text(json.dumps(summary))
    fewer = tmp_path / "fewer"
    shutil.copytree(b, fewer)
    lines = (fewer / "per_user.csv").read_text().splitlines()
    (fewer / "per_user.csv").write_text("\n".join(lines[:-1]) + "\n")
    for bad, reason in ((other_seed, "differ in seed"), (fewer, "different users"), (tmp_path / "no", "not a")):
        capsys.readouterr()
        assert main(["compare", str(a), str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fedsim-report compare: error:") and reason in err


def test_the_sweep_form_still_works_and_reports_a_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_compare_of_rerank_vs_no_mitigation_compares_exposure(tmp_path):
    """rerank exists to move exposure to the long tail: compare must show that, per user and for the catalogue."""
    plain, rerank = tmp_path / "none", tmp_path / "rerank"
    run(tiny_config("mitigation=none"), plain)
    run(tiny_config("mitigation=rerank"), rerank)
    assert main(["compare", str(plain), str(rerank)]) == 0
    text = (rerank / "compare.md").read_text()
    final = {name: json.loads((folder / "summary.json").read_text())["final"] for name, folder in
             (("a", plain), ("b", rerank))}  # fmt: skip
    line = next(row for row in text.splitlines() if row.startswith("| long-tail share of the lists"))
    a, b = final["a"]["items/long_tail_share"], final["b"]["items/long_tail_share"]
    assert b > a  # the point of rerank, measured
    assert f"| {a:.4f} | {b:.4f} | {b - a:+.4f} |" in line
    assert "| catalogue coverage (↑) |" in text and "| Gini of exposure (↓) |" in text
    # per user: the long-tail share of each user's list, paired; its mean is the catalogue's long-tail share
    rows_a, rows_b = _rows(plain), _rows(rerank)
    assert np.mean([float(r["long_tail_share"]) for r in rows_a]) == pytest.approx(a, abs=1e-5)
    diffs = [float(rb["long_tail_share"]) - float(ra["long_tail_share"]) for ra, rb in zip(rows_a, rows_b, strict=True)]
    assert f"{np.mean(diffs):+.4f} [" in _table_row(text, "all", "everyone", "long_tail_share")


def test_a_centralized_ceiling_below_the_federation_is_explained(two_runs, tmp_path):
    federated, _ = two_runs
    ceiling = tmp_path / "ceiling"
    run(tiny_config(V1, "mode=centralized"), ceiling)  # the same users as the federation: comparable (issue 20)
    assert "Centralized ceiling: pooled data of the" in (ceiling / "report.md").read_text()
    rows = _rows(ceiling)
    for r in rows:  # make it sit below: every user of the ceiling misses
        r["test_hr"] = "0"
    _write_rows(ceiling, rows)
    assert main(["compare", str(ceiling), str(federated), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "The centralized ceiling is below the federation here (test HR 0.0000 vs" in text
    assert "raise federation.rounds" in text
    assert main(["compare", str(federated), str(federated), "--out", str(tmp_path / "same")]) == 0
    assert "centralized ceiling" not in (tmp_path / "same" / "compare.md").read_text()
