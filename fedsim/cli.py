"""``fedsim``: the Hydra entry point. Compose the config, validate it, run, print the summary.

Bad input (a value out of range, a missing data file) ends with one line naming what is wrong and what is
allowed, exit code 2, and no traceback; Hydra itself rejects unknown keys and group options.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedsim.config import ConfigError, FedsimConfig, register_schemas, to_schema
from fedsim.data.movielens import DatasetError

register_schemas()

# conf/ sits beside the package in the repository (the README installs with `pip install -e .`).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> FedsimConfig:
    """``conf/`` composed with Hydra overrides and validated — exactly what ``fedsim <overrides>`` runs (no output
    directory side effects). Used by ``flwr run`` (fedsim.flower_apps), the tests and the experiment scripts."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_schema(hydra_compose(config_name="config", overrides=list(overrides)))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    if not cfg.get("verbose", False):
        logging.getLogger().setLevel(logging.WARNING)  # Hydra's job logging is INFO; keep the console clean
    try:
        config = to_schema(cfg)
        from fedsim.run import print_summary, run  # heavy imports (torch, flwr) after validation

        run_dir = config.output_dir or HydraConfig.get().runtime.output_dir
        summary = run(config, run_dir)
    except (ConfigError, DatasetError) as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary)
    return summary.get("best", {}).get(f"val/hr@{config.evaluation.k}")


if __name__ == "__main__":
    main()
