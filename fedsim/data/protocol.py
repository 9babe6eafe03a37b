"""The evaluation protocol: leave-one-out by time and fixed sampled negatives.

Every number fedsim prints is computed on this split, so its rules live in one place:

* implicit feedback: every interaction (every MovieLens rating, whatever its value) is a positive;
* per user, events are ordered by timestamp; ``dataset.tie_break`` orders the events that share a timestamp:
  ``item_id`` (the default) puts the highest item id last, ``file_order`` puts the event that comes *first* in the
  file last (pandas' ``rank(method="first", ascending=False)``, as in the NCF-PyTorch and PFedRec code). The choice
  matters: on MovieLens-100K 415 of 943 users have several items at their latest timestamp, and ItemPop's test HR@10
  is 0.317 with ``item_id`` against 0.415 with ``file_order`` — the highest id among tied items is a less popular
  film (ids follow the catalogue's order of entry), so ``item_id`` picks harder test items. When the timestamps
  cannot order the data (all equal, or most users' test item shares its timestamp with another of their items) the
  split is by the tie-break rather than by time, and :func:`split_warnings` says so;
* the latest event is the **test** item, the second latest the **validation** item, the rest is training data;
  users with fewer than 3 events keep everything for training and are not evaluated;
* ``n_negatives`` (99 by default) items the user never interacted with are drawn once per user from a generator
  seeded by ``seed``; the positive is ranked among them (HR@K, NDCG@K "sampled", He et al. 2017);
* full ranking ranks the positive among *all* items not in the user's training set (and, for test, not the
  validation item) (Recall@K, NDCG@K "full").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedsim.config import TIE_BREAKS
from fedsim.data.interactions import DatasetError, Interactions


@dataclass(frozen=True)
class Split:
    """Leave-one-out split of an :class:`Interactions` log (CSR layout for the training items).

    ``train_items[train_indptr[u]:train_indptr[u + 1]]`` are user ``u``'s training items, sorted by time.
    ``val_item``/``test_item`` are -1 for users that are not evaluated.
    """

    n_users: int
    n_items: int
    train_indptr: np.ndarray
    train_items: np.ndarray
    val_item: np.ndarray
    test_item: np.ndarray
    eval_negatives: np.ndarray

    def train_items_of(self, user: int) -> np.ndarray:
        return self.train_items[self.train_indptr[user] : self.train_indptr[user + 1]]

    def n_train(self) -> np.ndarray:
        return np.diff(self.train_indptr)

    @property
    def evaluated(self) -> np.ndarray:
        """Per user: has held-out items (is evaluated)."""
        return self.test_item >= 0

    @property
    def evaluated_users(self) -> np.ndarray:
        return np.flatnonzero(self.evaluated)

    def stream_train_items(self, users: np.ndarray, chunk: int = 8192) -> Iterator[list[np.ndarray]]:
        """The training items of ``users``, in order, ``chunk`` users at a time (what a whole-population aggregate
        reads; a lazy split draws each chunk afresh instead of holding the population)."""
        for start in range(0, len(users), chunk):
            yield [self.train_items_of(int(u)) for u in users[start : start + chunk].tolist()]

    def held_out_of(self, user: int) -> np.ndarray:
        """The user's validation and test items (empty for users that are not evaluated)."""
        held = np.array([self.val_item[user], self.test_item[user]], dtype=np.int64)
        return held[held >= 0]

    def item_popularity(self, users: np.ndarray | None = None) -> np.ndarray:
        """Training interactions per item, over ``users`` (all users when None)."""
        if users is None:
            return np.bincount(self.train_items, minlength=self.n_items)
        items = [self.train_items_of(int(u)) for u in users]
        flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
        return np.bincount(flat, minlength=self.n_items)


def _tie_key(data: Interactions, tie_break: str) -> np.ndarray:
    """The key that orders one user's events within a timestamp; the largest key counts as the latest event."""
    if tie_break == "item_id":
        return data.item
    if tie_break == "file_order":  # the rows are in file order: the first row of a tie is the latest event
        return -np.arange(data.n_interactions)
    raise ValueError(f"tie_break={tie_break!r} is not allowed; choose one of: {', '.join(TIE_BREAKS)}")


def leave_one_out(
    data: Interactions,
    n_negatives: int = 99,
    seed: int = 0,
    negatives_per_user: bool = False,
    tie_break: str = "item_id",
) -> Split:
    """Split ``data`` by time (ties ordered by ``tie_break``) and draw the fixed evaluation negatives (see the module
    docstring).

    ``negatives_per_user``: each user's negatives come from its own stream (:func:`user_negatives`), so a user's
    split does not depend on the other users — what a population drawn one user at a time needs
    (:mod:`fedsim.data.lazy`); otherwise one stream over the users in order (MovieLens, ``synthetic_v1``)."""
    order = np.lexsort((_tie_key(data, tie_break), data.timestamp, data.user))
    user, item = data.user[order], data.item[order]
    # drop repeated (user, item) events, keeping the earliest: a held-out item must be new to the user
    keep = np.ones(len(user), dtype=bool)
    pair = user * data.n_items + item
    _, first = np.unique(pair, return_index=True)
    keep[:] = False
    keep[first] = True
    user, item = user[keep], item[keep]

    counts = np.bincount(user, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)])
    val_item = np.full(data.n_users, -1, dtype=np.int64)
    test_item = np.full(data.n_users, -1, dtype=np.int64)
    held_out = np.zeros(len(user), dtype=bool)
    evaluated = counts >= 3
    last = starts[1:] - 1
    test_item[evaluated] = item[last[evaluated]]
    val_item[evaluated] = item[last[evaluated] - 1]
    held_out[last[evaluated]] = True
    held_out[last[evaluated] - 1] = True

    train_items = item[~held_out]
    train_counts = np.bincount(user[~held_out], minlength=data.n_users)
    train_indptr = np.concatenate([[0], np.cumsum(train_counts)]).astype(np.int64)

    negatives = np.full((data.n_users, n_negatives), -1, dtype=np.int64)
    rng = np.random.default_rng([seed, 99])
    for u in np.flatnonzero(evaluated):
        seen = np.sort(item[starts[u] : starts[u + 1]])
        available = data.n_items - len(seen)
        if available < n_negatives:
            raise DatasetError(
                f"user {u} has only {available} unseen items but evaluation.n_negatives={n_negatives}: "
                "use a larger catalogue or fewer negatives"
            )
        if negatives_per_user:
            negatives[u] = user_negatives(seed, int(u), data.n_items, seen, n_negatives)
        else:
            negatives[u] = sample_unseen(rng, data.n_items, seen, n_negatives, replace=False)
    return Split(
        n_users=data.n_users,
        n_items=data.n_items,
        train_indptr=train_indptr,
        train_items=train_items,
        val_item=val_item,
        test_item=test_item,
        eval_negatives=negatives,
    )


TIED_SHARE = 0.5
"""Above this share of evaluated users whose test item was chosen by item id (tied timestamps), a run warns."""


def _held_out_time(data: Interactions, held_out: np.ndarray) -> np.ndarray:
    """Per user, the time of their event with item ``held_out[user]`` (its earliest, as the split keeps it); one
    vectorised pass over the events, no sort (a million-user population has ~2·10⁷ events)."""
    times = np.full(data.n_users, np.iinfo(np.int64).max, dtype=np.int64)
    match = np.flatnonzero(data.item == held_out[data.user])
    np.minimum.at(times, data.user[match], data.timestamp[match].astype(np.int64))
    return times


TIE_WORDS = {"item_id": "by item id", "file_order": "by file order"}


def split_warnings(data: Interactions, split: Split, tie_break: str = "item_id") -> list[str]:
    """Why ``split`` may not be by time: all timestamps equal, or more than half of the evaluated users' test items
    tied on time with their validation item (the latest timestamp is on several items; the test item is then chosen
    by ``tie_break``, not by time). Said on the console and in summary.json; [] otherwise.
    A lazy population (:mod:`fedsim.data.lazy`) has no event arrays to scan and, by construction, no ties."""
    if not isinstance(data.timestamp, np.ndarray):
        return []
    by = TIE_WORDS[tie_break]
    if data.n_interactions > 1 and bool(np.all(data.timestamp == data.timestamp[0])):
        chosen = "their highest item ids" if tie_break == "item_id" else "their first events in the file"
        return [
            f"every interaction of {data.source} has the same timestamp ({int(data.timestamp[0])}): the "
            f"leave-one-out split cannot be by time; each user's test and validation items are {chosen}"
        ]
    users = split.evaluated_users
    if len(users) == 0:
        return []
    tied = (_held_out_time(data, split.test_item) == _held_out_time(data, split.val_item))[users]
    if tied.mean() <= TIED_SHARE:
        return []
    return [
        f"{int(tied.sum())} of {len(tied)} evaluated users ({tied.mean():.0%}) of {data.source} have their latest "
        f"timestamp on several items: their test item is chosen among those {by}, not by time (leave-one-out "
        f"ties broken {by}, dataset.tie_break={tie_break})"
    ]


def user_negatives(seed: int, user: int, n_items: int, seen_sorted: np.ndarray, n_negatives: int) -> np.ndarray:
    """User ``user``'s fixed evaluation negatives from the user's own stream ``[seed, 99, user]``."""
    return sample_unseen(np.random.default_rng([seed, 99, user]), n_items, seen_sorted, n_negatives, replace=False)


def sample_unseen(
    rng: np.random.Generator, n_items: int, seen_sorted: np.ndarray, size: int, replace: bool = True
) -> np.ndarray:
    """Uniform draws from the items not in ``seen_sorted`` (rejection sampling; exact when few items are seen)."""
    if len(seen_sorted) > n_items // 2:
        candidates = np.setdiff1d(np.arange(n_items), seen_sorted, assume_unique=True)
        return rng.choice(candidates, size=size, replace=replace)
    out = np.empty(0, dtype=np.int64)
    while len(out) < size:
        draw = rng.integers(0, n_items, size=2 * (size - len(out)) + 8)
        pos = np.searchsorted(seen_sorted, draw)
        ok = (pos >= len(seen_sorted)) | (seen_sorted[np.minimum(pos, len(seen_sorted) - 1)] != draw)
        draw = draw[ok]
        if not replace:
            out = np.concatenate([out, draw])
            _, first = np.unique(out, return_index=True)
            out = out[np.sort(first)]
        else:
            out = np.concatenate([out, draw])
    return out[:size]
