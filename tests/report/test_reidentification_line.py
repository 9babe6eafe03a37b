"""report.md's re-identification line: one entry per probe size with its interval (issue 20: it printed s=low)."""

from conftest import tiny_config

from fedsim.run import run


def test_the_reidentification_line_names_each_size_once_with_its_interval(tmp_path):
    summary = run(tiny_config(), tmp_path)
    audit = summary["data_audit"]
    line = next(row for row in (tmp_path / "report.md").read_text().splitlines() if "Re-identification" in row)
    expected = ", ".join(
        f"s={s}: {audit[f'risk/reid_unique_at_{s}']:.3f} [{audit[f'risk/reid_unique_at_{s}_ci_low']:.3f}, "
        f"{audit[f'risk/reid_unique_at_{s}_ci_high']:.3f}]"
        for s in (2, 4, 8)
    )
    assert line.endswith(f"95% Wilson interval): {expected}.")
    assert "s=low" not in line and "s=high" not in line
