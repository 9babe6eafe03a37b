"""One line on the console while the progress bar runs (audit breaches, rollbacks, divergence warnings)."""

from __future__ import annotations

from tqdm import tqdm


def say(line: str) -> None:
    """Print ``line`` above the progress bar without breaking it."""
    tqdm.write(f"fedsim: {line}")
