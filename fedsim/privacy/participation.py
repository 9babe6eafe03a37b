"""How many rounds each user has taken part in — the one implementation the loop and the accountants share.

The loop counts for the membership attack (members are users who took part); local and record-level DP count to
compose each user's releases (no amplification: the server knows who took part). Counts are indexed by user id and
grow when an id beyond the current length appears.
"""

from __future__ import annotations

import numpy as np


class Participation:
    """Per-user participation counts."""

    def __init__(self, n_users: int = 0) -> None:
        self.counts = np.zeros(n_users, dtype=np.int64)

    def add(self, users: np.ndarray) -> None:
        users = np.asarray(users, dtype=np.int64)
        needed = int(users.max()) + 1 if len(users) else 0
        if needed > len(self.counts):
            self.counts = np.pad(self.counts, (0, needed - len(self.counts)))
        self.counts[users] += 1

    def worst(self) -> int:
        """The largest number of rounds any one user took part in."""
        return int(self.counts.max()) if len(self.counts) else 0

    def state_dict(self) -> list[int]:
        return self.counts.tolist()

    @classmethod
    def from_state(cls, counts: list[int]) -> Participation:
        out = cls()
        out.counts = np.asarray(counts, dtype=np.int64)
        return out


def participation_mismatch(parts: list[np.ndarray], expected: np.ndarray) -> str | None:
    """Why the summed per-user counts ``parts`` (a mechanism's, one array per noise level) are not ``expected`` (the
    loop's counts), or None. Arrays grow with the largest user id seen, so both sides are padded to one length."""
    length = max([len(expected), *(len(p) for p in parts)])
    total = np.zeros(length, dtype=np.int64)
    for part in parts:
        total[: len(part)] += np.asarray(part, dtype=np.int64)
    loop = np.zeros(length, dtype=np.int64)
    loop[: len(expected)] = np.asarray(expected, dtype=np.int64)
    differ = np.flatnonzero(total != loop)
    if len(differ) == 0:
        return None
    user = int(differ[0])
    return (
        f"its participation counts differ from the loop's for {len(differ)} users (user {user}: {int(total[user])} "
        f"in the privacy state, {int(loop[user])} in loop_state.json)"
    )
