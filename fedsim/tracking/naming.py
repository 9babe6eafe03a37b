"""A run's name from what it is: the preset and the command-line overrides, e.g. ``privacy=central,eps=8,ml100k``.

Why: the name is the results folder (``results/runs/<name>/<timestamp>``) and the run's name in TensorBoard, so a
class that runs ten variants should see ten names, not ten ``demo`` folders. The name is

* deterministic — the same command line gives the same name;
* injective — two command lines that differ in a setting never share a name: a token is shortened only through
  :data:`SHORT` (a fixed one-to-one table), and when anything is lost (a character that is not filesystem-safe, a
  name cut to :data:`MAX_LENGTH`) a short hash of the whole override list is appended;
* filesystem-safe — letters, digits and ``. _ = , + -`` only.

Keys that change nothing a run computes (:data:`PRESENTATION`: ``verbose``, ``progress``, where it writes) are left
out. ``name=...`` on the command line is used as it is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from fedsim.config import FedsimConfig

# one-to-one abbreviations of frequent keys (the key's full path is used for every other key)
SHORT = {
    "privacy.target_epsilon": "eps",
    "privacy.noise_multiplier": "z",
    "privacy.clipping_norm": "clip",
    "privacy.max_epsilon": "max_eps",
    "federation.rounds": "rounds",
    "federation.participation": "part",
    "dataset.n_users": "users",
    "attack.poison.fraction": "poison",
    "attack.poison.strategy": "poison_by",
    "strategy.robust": "robust",
    "client.lr": "lr",
    "client.epochs": "epochs",
    "model.dim": "dim",
}
# dataset options shown as a bare token (the example above ends in ``ml100k``)
DATASETS = {"movielens_100k": "ml100k", "movielens_1m": "ml1m"}
PRESENTATION = ("name", "verbose", "progress", "output_dir", "hydra")
PRESET = "experiment"  # ``+experiment=<preset>``: the preset's own ``name`` is the first part
MAX_LENGTH = 80
SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def _key(override: str) -> tuple[str, str | None]:
    """``+a.b=1`` -> (``a.b``, ``1``); ``~a.b`` -> (``~a.b``, None)."""
    key, _, value = override.partition("=")
    key = key.strip()
    if key.startswith("~"):
        return key, None
    return key.lstrip("+"), value.strip()


def named_explicitly(overrides: Iterable[str]) -> bool:
    """Whether the command line sets ``name=`` itself (then it is used as it is)."""
    return any(_key(o)[0] == "name" for o in overrides)


def _token(key: str, value: str | None) -> str:
    if value is None:  # ``~key``: a key deleted from the config
        return f"no_{key.lstrip('~')}"
    if key == "dataset":
        return DATASETS.get(value, value)
    # a --multirun sweep's values (or a list): "+" keeps the comma for joining tokens (the hash marks the change)
    return f"{SHORT.get(key, key)}={value.replace(',', '+')}"


def run_name(base: str, overrides: Iterable[str]) -> str:
    """The name of a run whose preset (or ``conf/config.yaml``) calls it ``base``, given the command line's
    ``overrides``: ``base`` alone without overrides, else the overrides' tokens (after ``base`` when a preset set
    it, i.e. ``base`` is not the schema's default name ``demo``)."""
    overrides = [o for o in overrides if o.strip()]
    if named_explicitly(overrides):
        return base
    last: dict[str, str | None] = {}
    for override in overrides:  # Hydra applies them in order: the last value of a key is the one that runs
        key, value = _key(override)
        if key.split(".")[0] in PRESENTATION or key == PRESET:
            continue
        last.pop(key, None)
        last[key] = value
    tokens = [_token(k, v) for k, v in last.items()]
    if not tokens:
        return base
    if base != FedsimConfig.name:
        tokens.insert(0, base)
    name = SAFE.sub("_", ",".join(tokens))
    lossy = any("," in (v or "") or "+" in (v or "") for v in last.values()) or SAFE.search(",".join(last.keys()))
    lossy = lossy or any(SAFE.search(v or "") for v in last.values()) or len(name) > MAX_LENGTH
    if lossy:  # something was replaced or cut: the hash of the whole command line keeps different runs apart
        digest = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]
        name = f"{name[: MAX_LENGTH - len(digest) - 2]}-h{digest}"
    return name
