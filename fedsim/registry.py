"""The names fedsim accepts for each pluggable kind, and where each implementation lives.

One registry per kind — dataset, model, strategy, privacy mechanism, personalization — mapping a config name to
``"module:attribute"``. Validation (:mod:`fedsim.config`) reads the names from here, and the builders import the
attribute lazily, so this module imports nothing and every package may read it. Adding a dataset, model, mechanism or
personalization method touches three files: its implementation module, its line here, and its
``conf/<group>/<name>.yaml``.
"""

from __future__ import annotations

import importlib
from typing import Any

REGISTRIES: dict[str, dict[str, str]] = {
    "dataset": {
        "synthetic": "fedsim.data.population:population_from_config",
        "synthetic_v1": "fedsim.data.synthetic:synthetic_from_config",
        "ml-100k": "fedsim.data.movielens:ml100k_from_config",
        "ml-1m": "fedsim.data.movielens:ml1m_from_config",
    },
    "model": {
        "mf": "fedsim.models.mf:MatrixFactorization",
        "neumf": "fedsim.models.neumf:NeuMF",
    },
    "strategy": {
        "fedavg": "fedsim.server.strategy:_fedavg",
        "fedprox": "fedsim.server.strategy:_fedprox",
        "fedavgm": "fedsim.server.strategy:_fedavgm",
        "fedadam": "fedsim.server.strategy:_fedadam",
    },
    "mechanism": {
        "none": "fedsim.privacy.mechanism:NoPrivacy",
        "central": "fedsim.privacy.central:CentralDP",
        "local": "fedsim.privacy.local:LocalDP",
        "record": "fedsim.privacy.record:RecordDP",
        "on_device": "fedsim.privacy.on_device:OnDevice",
    },
    "noise": {  # privacy.noise under privacy=central: independent (DP-FedAvg) or correlated (DP-FTRL)
        "independent": "fedsim.privacy.central:CentralDP",
        "banded_mf": "fedsim.privacy.ftrl:BandedMF",
    },
    "poison": {  # attack.poison.strategy (fedsim/security/poisoning.py)
        "fake_users": "fedsim.security.poisoning:FakeUsers",
        "boost_target": "fedsim.security.poisoning:BoostTarget",
    },
    "robust": {  # strategy.robust: a rule over the round's per-user updates (fedsim/security/robust.py)
        "none": "fedsim.security.robust:mean",
        "norm_bound": "fedsim.security.robust:norm_bound",
        "median": "fedsim.security.robust:median",
        "trimmed_mean": "fedsim.security.robust:trimmed_mean",
        "krum": "fedsim.security.robust:krum",
        "multi_krum": "fedsim.security.robust:multi_krum",
    },
    "personalization": {
        "private_embedding": "fedsim.personalization.private_embedding:PrivateEmbedding",
        "local_finetune": "fedsim.personalization.local_finetune:LocalFinetune",
        "reconstruction": "fedsim.personalization.reconstruction:Reconstruction",
        "dual": "fedsim.personalization.dual:Dual",
        "ditto": "fedsim.personalization.ditto:Ditto",
    },
}


def names(kind: str) -> tuple[str, ...]:
    """The names allowed for ``kind`` (in registration order)."""
    return tuple(REGISTRIES[kind])


def resolve(kind: str, name: str) -> Any:
    """The implementation registered as ``name`` for ``kind``; ValueError naming the allowed names otherwise."""
    registry = REGISTRIES[kind]
    if name not in registry:
        raise ValueError(f"{kind} {name!r} is not allowed; choose one of: {', '.join(registry)}")
    module, attribute = registry[name].split(":")
    return getattr(importlib.import_module(module), attribute)
