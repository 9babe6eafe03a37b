"""The in-memory interaction log every dataset is turned into.

Keeping one small container (user, item, timestamp arrays plus per-user attributes) is what lets the split, the
sharding, the fairness groups and the re-identification audit all work the same way on synthetic data and MovieLens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A data file is missing or malformed, or the data cannot support the protocol; the message is one line."""


@dataclass(frozen=True)
class Interactions:
    """An implicit-feedback log: one row per (user, item, timestamp) event, rows in the order of the source file
    (the generation order for synthetic data) — ``dataset.tie_break=file_order`` reads that order.

    Parameters
    ----------
    user, item : np.ndarray
        Dense 0-based ids (int64), same length.
    timestamp : np.ndarray
        Event times (int64); only their order within a user matters (leave-one-out by time).
    n_users, n_items : int
        Sizes of the id spaces (every id in ``user``/``item`` is below them).
    user_attributes : dict[str, np.ndarray]
        Per-user categorical attributes (length ``n_users``, strings), e.g. ``gender``, ``age``, ``group``. They are
        used only to disaggregate metrics (fairness), never as model inputs.
    item_names : list[str]
        Human-readable item titles for explanations (``str(i)`` when the dataset has none).
    source : str
        Where the data came from, for the report (``synthetic(seed=0)``, ``ml-100k at /path``).
    user_ids : np.ndarray | None
        The dataset's own id of each dense user (MovieLens: the file's 1-based ids), which is what a user types and
        reads (``fedsim-explain user=13`` is MovieLens user 13); None: the dense id is the dataset's id.
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    n_users: int
    n_items: int
    user_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    item_names: list[str] = field(default_factory=list)
    source: str = ""
    user_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (len(self.user) == len(self.item) == len(self.timestamp)):
            raise ValueError("user, item and timestamp arrays must have the same length")
        for name, values in self.user_attributes.items():
            if len(values) != self.n_users:
                raise ValueError(f"user attribute {name!r} has {len(values)} values for {self.n_users} users")

    @property
    def n_interactions(self) -> int:
        return len(self.user)

    def interactions_per_user(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def user_label(self, user: int) -> int:
        """The id a person reads for dense user ``user`` (the file's id for MovieLens)."""
        return int(self.user_ids[user]) if self.user_ids is not None else int(user)

    def user_index(self, label: int) -> int | None:
        """The dense user whose dataset id is ``label``, or None when no user has it."""
        if self.user_ids is None:
            return int(label) if 0 <= label < self.n_users else None
        found = np.flatnonzero(self.user_ids == label)
        return int(found[0]) if len(found) else None

    def user_id_range(self) -> str:
        """The ids a person may type, for an error message (``1..943``)."""
        if self.user_ids is None:
            return f"0..{self.n_users - 1}"
        low, high = int(self.user_ids.min()), int(self.user_ids.max())
        contiguous = high - low + 1 == len(self.user_ids)
        return f"{low}..{high}" if contiguous else f"{len(self.user_ids)} ids in {low}..{high}"

    def item_name(self, item: int) -> str:
        return self.item_names[item] if self.item_names else f"item {item}"
