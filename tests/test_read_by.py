"""A setting is honoured or refused, never ignored: every key of the schema is declared in ``READ_BY`` with the
condition under which the code reads it, and a key that is set (not at its schema default, or named on the command
line) while its condition does not hold is refused with one line naming what would read it (issue 18, item 1)."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from fedsim.cli import CONF_DIR, compose
from fedsim.config import (
    ALWAYS,
    GROUP_OPTIONS,
    READ_BY,
    ConfigError,
    FedsimConfig,
    declared_key,
    setting,
    validate,
)
from fedsim.run import run
from fedsim.runtime import get_runtime

CONF = Path(CONF_DIR)
DP = ["privacy.noise_multiplier=1"]
POISON = ["attack.poison.fraction=0.05"]
BOOST = [*POISON, "attack.poison.strategy=boost_target"]


def _remedy(name: str) -> list[str]:
    rule = "audit.rules.utility_vs_itempop"
    return [f"{rule}.action=rollback", f"{rule}.then=continue", f"{rule}.remediation={name}"]


# Configurations users run: every group option of conf/ (with what it needs to be complete) and every value condition
# of READ_BY on both of its sides. Each composes as it is — so no group file sets a key its own option does not read.
WORLDS: list[list[str]] = [
    [],
    ["mode=centralized"],
    ["dataset=synthetic"],
    ["dataset=synthetic_v1"],
    ["dataset=movielens_100k"],
    ["dataset=movielens_1m", "dataset.path=/nonexistent"],
    ["model=mf"],
    ["model=neumf"],
    ["client=default"],
    ["federation=default"],
    ["federation.backend=inprocess"],
    ["federation.deadline_s=1"],
    ["federation.node_hang_prob=0.1"],
    ["federation.availability_attribute=group", "+federation.availability_by_group.A=0.5"],
    ["strategy=fedavg"],
    ["strategy=fedprox"],
    ["strategy=fedavgm"],
    ["strategy=fedadam"],
    ["strategy.robust=norm_bound"],
    ["strategy.robust=trimmed_mean"],
    ["strategy.robust=krum"],
    ["privacy=none"],
    ["privacy=central", *DP],
    ["privacy=central", *DP, "privacy.clipping=adaptive"],
    ["privacy=central", *DP, "privacy.noise=banded_mf", "federation.sampling=cyclic", "federation.participation=0.5"],
    ["privacy=local", *DP],
    ["privacy=record", *DP],
    ["privacy=on_device"],
    ["consent=none"],
    ["consent=opt_out"],
    ["consent=opt_out", "consent.group_attribute=group", "consent.group_value=B"],
    ["consent=purposes"],
    ["attack=default"],
    ["attack=off"],
    ["attack.mitigation=fake_items"],
    POISON,
    BOOST,
    [*BOOST, "privacy=central", *DP],
    [*BOOST, "privacy=central", *DP, "attack.poison.skip_clip=false"],
    ["audit=default"],
    ["audit=off"],
    ["personalization=private_embedding"],
    ["personalization=local_finetune"],
    ["personalization=reconstruction"],
    ["personalization=dual"],
    ["personalization=ditto"],
    ["mitigation=none"],
    ["mitigation=exposure_regularizer"],
    ["mitigation=rerank"],
    _remedy("rerank"),
    _remedy("exposure_regularizer"),
    ["secagg=none"],
    ["secagg=secagg_plus"],
    ["erasure.share=0.3", "erasure.round=6", "federation.rounds=10"],
]

GROUP_FILES = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name != "experiment"
    for option in group.glob("*.yaml")
)


def _leaves(schema: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(schema)
    out: list[str] = []
    for f in fields(schema):
        hint = hints[f.name]
        out += _leaves(hint, f"{prefix}{f.name}.") if is_dataclass(hint) else [f"{prefix}{f.name}"]
    return out


@pytest.fixture(scope="module")
def worlds() -> list[tuple[list[str], FedsimConfig]]:
    return [(world, compose(world)) for world in WORLDS]


def _refusal(cfg: FedsimConfig, key: str) -> str | None:
    try:
        validate(cfg, {key})
    except ConfigError as error:
        return str(error)
    return None


def test_every_key_of_the_schema_is_declared_once():
    """Adding a key to fedsim/config.py means saying who reads it (READ_BY); a declared key that left the schema
    would declare nothing."""
    assert sorted(READ_BY) == sorted(_leaves(FedsimConfig))


def test_every_group_option_of_conf_is_a_world():
    chosen = {tuple(o.split("=", 1)) for world in WORLDS for o in world if "." not in o}
    missing = [f"{g}={o}" for g, o in GROUP_FILES if (g, o) not in chosen]
    assert not missing, f"add these group options to WORLDS: {missing}"


@pytest.mark.parametrize("key", sorted(GROUP_OPTIONS))
def test_a_group_option_is_named_as_users_type_it(key):
    """GROUP_OPTIONS maps a key's value to the conf/ file that sets it (how a refusal names the option)."""
    group, files = GROUP_OPTIONS[key]
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        needs = {"movielens_1m": ["dataset.path=/x"], "central": DP, "local": DP, "record": DP}
        extra = needs.get(option, [])
        value = setting(compose([f"{group}={option}", *extra]), key)
        assert files.get(value, value) == option


def test_each_world_reads_what_its_files_set(worlds):
    """Every world composed (above, in the fixture); the keys it sets, named or not, are all read."""
    for world, cfg in worlds:
        assert validate(cfg, {k for k in map(declared_key, world) if k}) is cfg, world


def test_every_key_is_refused_exactly_where_its_condition_fails(worlds):
    """Named on the command line (even at its default), a key is accepted where READ_BY says it is read and refused
    with one line naming the key, its reader and this run's setting everywhere else."""
    for (world, cfg), (key, condition) in itertools.product(worlds, READ_BY.items()):
        message = _refusal(cfg, key)
        if condition.holds(cfg):
            assert message is None, (world, key, message)
        else:
            assert message is not None, (world, key)
            assert message.startswith(f"{key}=") and f"is read only {condition.phrase()}; this run has" in message
            assert "\n" not in message


def test_every_conditional_key_is_seen_accepted_and_refused(worlds):
    for key, condition in READ_BY.items():
        sides = {condition.holds(cfg) for _, cfg in worlds}
        assert sides == ({True} if condition is ALWAYS else {True, False}), key


def _typed(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("'", "")


@pytest.mark.parametrize("key", sorted(k for k, c in READ_BY.items() if c is not ALWAYS and k != "audit.rules"))
def test_the_command_line_names_a_key_even_at_its_default(worlds, key):
    """Through the real compose: ``<key>=<its default>`` on the command line is accepted where the key is read and
    refused where it is not (e.g. ``dataset=movielens_100k dataset.n_users=600``)."""
    condition = READ_BY[key]
    reading, read_cfg = next((world, cfg) for world, cfg in worlds if condition.holds(cfg))
    other, other_cfg = next((world, cfg) for world, cfg in worlds if not condition.holds(cfg))
    assert setting(other_cfg, key) == setting(FedsimConfig(), key)  # not read there, so at its default
    compose([*reading, f"{key}={_typed(setting(read_cfg, key))}"])
    with pytest.raises(ConfigError, match=f"^{key}=.* is read only"):
        compose([*other, f"{key}={_typed(setting(other_cfg, key))}"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["privacy.target_epsilon=8"], "privacy.target_epsilon=8.0 is read only by privacy=central|local|record; "
         "this run has privacy=none"),
        (["dataset.path=/x"], "dataset.path=/x is read only by dataset=movielens_100k|movielens_1m; "
         "this run has dataset=synthetic"),
        (["+experiment=erasure_demo", "dataset=movielens_100k"], "dataset.n_users=120 is read only by "
         "dataset=synthetic|synthetic_v1; this run has dataset=movielens_100k"),
        (["privacy=central", *DP, "privacy.target_quantile=0.9"], "privacy.target_quantile=0.9 is read only when "
         "privacy=central and privacy.clipping=adaptive; this run has privacy=central, privacy.clipping=fixed"),
        (["mode=centralized", "strategy=fedprox"], "strategy.name=fedprox is read only when mode=federated; "
         "this run has mode=centralized"),
        (["attack.poison.strategy=boost_target"], "attack.poison.strategy=boost_target is read only when "
         "attack.poison.fraction > 0; this run has attack.poison.fraction=0.0"),
        (["mitigation.rerank_pool=50"], "mitigation.rerank_pool=50 is read only when mitigation=rerank or an audit "
         "rule has remediation=rerank; this run has mitigation=none, audit.enabled=true"),
        (["secagg.min_users=5"], "secagg.min_users=5 is read only by secagg=secagg_plus; this run has secagg=none"),
    ],
)  # fmt: skip
def test_what_a_new_user_types_is_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose(overrides)
    assert str(error.value) == message


def test_the_cli_refuses_an_unread_key_with_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "privacy.target_epsilon=8", f"output_dir={tmp_path / 'out'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "fedsim: error: privacy.target_epsilon=8.0 is read only by privacy=central|local|record; "
        "this run has privacy=none"
    )
    assert not (tmp_path / "out").exists()


def _sweep(preset: str) -> list[list[str]]:
    """Every job of the preset's own sweep (hydra.sweeper.params), as override lists."""
    params = yaml.safe_load((CONF / "experiment" / f"{preset}.yaml").read_text()).get("hydra", {})
    params = params.get("sweeper", {}).get("params", {})
    grid = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*grid)]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_preset_and_every_job_of_its_sweep_reads_what_it_sets(preset):
    """A preset sets only keys its runs read — at every value of its own sweep (privacy_frontier's clipping_norm is
    still read at ε = ∞, where z = 0 but devices clip; privacy_population's n_users is the synthetic generator's)."""
    for job in _sweep(preset):
        cfg = compose([f"+experiment={preset}", *job])
        assert validate(cfg, {k for k in map(declared_key, job) if k}) is cfg


def test_declared_key_maps_an_override_to_its_declared_key():
    assert declared_key("privacy.target_epsilon=8") == "privacy.target_epsilon"
    assert declared_key("+attack.poison.fraction=0.1") == "attack.poison.fraction"
    assert declared_key("audit.rules.epsilon.max=4") == "audit.rules"
    assert declared_key("federation.availability_by_group.A=0.5") == "federation.availability_by_group"
    assert declared_key("privacy=central") is None and declared_key("+experiment=audit_demo") is None


def test_the_centralized_baseline_honours_evaluation_max_users(tmp_path):
    """evaluation.max_users is read in both modes: the centralized baseline scored every user while its protocol
    said "a seeded sample of max_users" (summary.json); now it scores the federated run's sample."""
    cfg = tiny_config("mode=centralized", "evaluation.max_users=10", "federation.rounds=1")
    summary = run(cfg, tmp_path)
    with open(tmp_path / "per_user.csv", newline="") as handle:
        users = sorted(int(row["user"]) for row in csv.DictReader(handle))
    sample = get_runtime(cfg).in_evaluation_sample
    assert 0 < len(users) <= 10 and all(sample[u] for u in users)
    assert "a seeded sample of 10" in summary["protocol"]["users"]
