"""The real Hydra config composes, every group option builds, and bad values stop with one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli import CONF_DIR, compose
from fedsim.config import ConfigError, FedsimConfig, as_dict
from fedsim.models import build_model
from fedsim.privacy import build_mechanism
from fedsim.registry import names
from fedsim.server.strategy import build_strategy


def _compose(*overrides: str) -> FedsimConfig:
    return compose(list(overrides))


CONF = Path(CONF_DIR)
GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name != "experiment"
    for option in group.glob("*.yaml")
)
PRESETS = sorted(option.stem for option in (CONF / "experiment").glob("*.yaml"))
# options that need more than their group file to be complete (a dataset path, a noise level)
NEEDS = {
    ("dataset", "movielens_1m"): ["dataset.path=/nonexistent"],
    ("privacy", "central"): ["privacy.noise_multiplier=1"],
    ("privacy", "local"): ["privacy.noise_multiplier=1"],
    ("privacy", "record"): ["privacy.noise_multiplier=1"],
}


def test_the_config_tree_has_the_groups_the_packages_have():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert groups == {
        "dataset",
        "model",
        "client",
        "federation",
        "strategy",
        "privacy",
        "consent",
        "attack",
        "audit",
        "personalization",
        "mitigation",
        "secagg",
    }
    assert len(GROUP_OPTIONS) >= 20 and PRESETS  # the listing found the files


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_group_option_composes_and_builds(group, option):
    cfg = _compose(f"{group}={option}", *NEEDS.get((group, option), []))
    # the option selects the implementation its file names
    selected = {"model": cfg.model.name, "strategy": cfg.strategy.name, "privacy": cfg.privacy.mechanism}
    if group in selected:
        assert selected[group] == option
    assert build_model(cfg.model, 50).name == cfg.model.name
    assert type(build_strategy(cfg.strategy, 4)).__name__.lower().startswith(cfg.strategy.name)
    assert build_mechanism(cfg, 100).name == cfg.privacy.mechanism


@pytest.mark.parametrize("group", sorted({g for g, _ in GROUP_OPTIONS if sum(x == g for x, _ in GROUP_OPTIONS) > 1}))
def test_every_option_of_a_group_changes_the_config(group):
    """A group's options are not interchangeable: each composes to a different config (an option file that was
    ignored, or that repeats another, would not)."""
    options = [option for g, option in GROUP_OPTIONS if g == group]
    configs = [as_dict(_compose(f"{group}={option}", *NEEDS.get((group, option), []))) for option in options]
    assert len(options) >= 2
    assert all(a != b for i, a in enumerate(configs) for b in configs[i + 1 :])


# a sweep preset's swept ε comes from its sweeper; a fixed z keeps this test free of a (slow) calibration
FIXED_Z = ["privacy.target_epsilon=null", "privacy.noise_multiplier=1"]
PRESET_NEEDS = {"privacy_frontier": FIXED_Z, "privacy_population": FIXED_Z}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_composes_and_builds(preset):
    # a sweep preset's swept keys come from its sweeper; give one value of each
    cfg = _compose(f"+experiment={preset}", *PRESET_NEEDS.get(preset, []))
    assert cfg.name == preset
    build_model(cfg.model, 50)
    build_strategy(cfg.strategy, 4)
    assert build_mechanism(cfg, 600).name == cfg.privacy.mechanism


def test_defaults_have_one_source():
    """conf/ adds no value of its own to the schema's defaults: `fedsim` with no override runs FedsimConfig()."""
    assert as_dict(_compose()) == as_dict(FedsimConfig())


def test_every_registered_name_has_a_config_file_and_validation_reads_the_registry():
    files = {group: {option for g, option in GROUP_OPTIONS if g == group} for group in ("model", "strategy")}
    assert set(names("model")) == files["model"] and set(names("strategy")) == files["strategy"]
    with pytest.raises(ConfigError, match="choose one of: mf, neumf"):
        _compose("model.name=transformer")


@pytest.mark.parametrize(
    "override, key",
    [
        ("federation.rounds=-1", "federation.rounds"),
        ("federation.participation=1.5", "federation.participation"),
        ("model.name=transformer", "model.name"),
        ("client.optimizer=lbfgs", "client.optimizer"),
        ("mode=both", "mode"),
        ("privacy=central privacy.noise_multiplier=1 mode=centralized", "mode=centralized"),
        ("mitigation=rerank mitigation.rerank_weight=2", "mitigation.rerank_weight"),
        ("erasure.share=0.1 erasure.round=1", "erasure.round"),
        # fedsim/security: robust rules need each user's update (hidden by secagg; unbounded under central DP)
        ("attack.poison.strategy=shill", "attack.poison.strategy"),
        ("strategy.robust=median secagg=secagg_plus", "strategy.robust=median"),
        ("privacy=central privacy.noise_multiplier=1 strategy.robust=krum", "strategy.robust=krum"),
        ("privacy=local privacy.noise_multiplier=1 secagg=secagg_plus", "secagg.enabled=true"),
        ("secagg=secagg_plus federation.user_weighting=examples", "federation.user_weighting=examples"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        _compose(*override.split())
    assert key in str(error.value) and "\n" not in str(error.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_bad_value_is_one_line_without_traceback(tmp_path):
    result = _cli("federation.participation=2", f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "federation.participation=2.0 is out of range" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_missing_data_file_is_one_line(tmp_path):
    result = _cli(
        "dataset=movielens_100k", f"dataset.path={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'out'}", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "u.data" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_cli_runs_the_composed_config_end_to_end(tmp_path):
    """`fedsim` itself (Hydra entry point, conf/ defaults), on a small population: files written, table printed."""
    out = tmp_path / "run"
    result = _cli(
        "dataset.n_users=40",
        "dataset.n_items=300",
        "federation.rounds=2",
        "federation.backend=inprocess",
        "progress=false",
        f"output_dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] is True and summary["config"]["client"]["epochs"] == FedsimConfig().client.epochs
    assert (out / "report.md").is_file() and (out / "per_user.csv").is_file() and (out / "audit.json").is_file()
    assert "best round" in result.stdout and "ItemPop" in result.stdout and "Traceback" not in result.stderr
