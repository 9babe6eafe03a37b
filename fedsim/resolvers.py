"""Config resolvers for presets whose settings are functions of the population size N.

A population sweep (``+experiment=privacy_population``) varies ``dataset.n_users`` alone; what must scale with N — the
participation rate of a fixed expected cohort, and δ = 1/N^1.1 — is written once in the preset as an interpolation of
``dataset.n_users``, so that one ``fedsim -m`` command sweeps N and ``fedsim-report`` sees N as the only varying key
(the derived values vary with it and are recorded, resolved, in each run's summary).

* ``${fedsim.cohort_rate:<cohort>,<N>}``: min(1, cohort/N), the participation q of an expected cohort of ``cohort``;
* ``${fedsim.pow:<x>,<p>}``: x**p, e.g. δ = ``${fedsim.pow:${dataset.n_users},-1.1}``;
* ``${fedsim.if_private:<ε>,<a>,<b>}``: ``a`` when ε is finite, ``b`` when ε = ∞ — the frontier's non-private
  reference is the best non-private model (chosen on validation; tuning it spends no privacy), while every finite ε
  shares one pipeline (tuning per ε on the same users would itself spend privacy).
"""

from __future__ import annotations

import math

from omegaconf import OmegaConf


def cohort_rate(cohort: float, population: float) -> float:
    """The participation rate q = min(1, cohort/N) whose expected cohort qN is ``cohort`` (everyone when N ≤ cohort)."""
    if cohort <= 0 or population <= 0:
        raise ValueError(f"fedsim.cohort_rate needs a cohort > 0 and N > 0, got cohort={cohort}, N={population}")
    return min(1.0, float(cohort) / float(population))


def power(base: float, exponent: float) -> float:
    """``base ** exponent`` as a float (δ = N^-1.1 from ``dataset.n_users``)."""
    if base <= 0:
        raise ValueError(f"fedsim.pow needs a base > 0, got {base}")
    return float(base) ** float(exponent)


def if_private(epsilon: float | None, private: object, non_private: object) -> object:
    """``private`` for a finite target ε — or none (``privacy.target_epsilon=null``: z is set directly, a DP run) —
    and ``non_private`` for ε = ∞ (see the module docstring)."""
    return non_private if epsilon is not None and math.isinf(float(epsilon)) else private


def register() -> None:
    """Register the resolvers (idempotent: composing twice in one process is fine)."""
    resolvers = (("fedsim.cohort_rate", cohort_rate), ("fedsim.pow", power), ("fedsim.if_private", if_private))
    for name, function in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register()
