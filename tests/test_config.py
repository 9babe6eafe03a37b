"""The real Hydra config composes, every group option builds, and bad values stop with one line."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fedsim.cli import CONF_DIR
from fedsim.config import ConfigError, FedsimConfig, register_schemas, to_schema, validate

register_schemas()


def _compose(*overrides: str) -> FedsimConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_schema(compose(config_name="config", overrides=list(overrides)))


def test_default_config_composes_and_validates():
    cfg = _compose()
    assert cfg.dataset.name == "synthetic" and cfg.model.name == "mf" and cfg.mode == "federated"


@pytest.mark.parametrize(
    "override",
    [
        "model=neumf",
        "strategy=fedprox",
        "strategy=fedavgm",
        "strategy=fedadam",
        "dataset=movielens_100k",
        "mode=centralized",
    ],
)
def test_every_group_option_composes(override):
    _compose(override)


@pytest.mark.parametrize(
    "override, key",
    [
        ("federation.rounds=-1", "federation.rounds"),
        ("federation.participation=1.5", "federation.participation"),
        ("model.name=transformer", "model.name"),
        ("client.optimizer=lbfgs", "client.optimizer"),
        ("mode=both", "mode"),
        ("privacy=central privacy.noise_multiplier=1 mode=centralized", "mode=centralized"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        _compose(*override.split())
    assert key in str(error.value) and "\n" not in str(error.value)


def test_validate_accepts_the_defaults():
    assert validate(FedsimConfig()).seed == 0


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
