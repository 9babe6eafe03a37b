"""A population read one user at a time: the :class:`~fedsim.data.protocol.Split` and
:class:`~fedsim.data.interactions.Interactions` every module reads, without holding the population.

:class:`LazySplit` is a ``Split`` whose per-user rows are drawn from the :class:`~fedsim.data.population.Population`
when a process first asks for them (and kept in a bounded per-process cache, :class:`UserRows`):

* per-user scalars for everyone — ``n_train()``, ``evaluated``, the attributes — come from the users' traits
  (O(N) small integers, cheap at 10⁶ users);
* a user's training items, held-out items and sampled negatives (``train_items_of(u)``, ``val_item[users]``,
  ``test_item[users]``, ``eval_negatives[users]``) are drawn for that user only: a node touches only the users it
  trains or evaluates, so memory follows the cohort and the evaluation sample, not N;
* what needs the whole population — item popularity over a set of users (ItemPop, the consent fallback, exposure),
  the re-identification audit — streams it in chunks (:meth:`LazySplit.stream_train_items`) with O(n_items) memory
  per aggregate; popularity is computed once per group of users (:meth:`LazySplit.popularity_groups`) and any union
  of groups is then a sum.

The split follows :mod:`fedsim.data.protocol`'s rules exactly: the latest event is the test item, the one before the
validation item (events are distinct items with strictly increasing times, so there are no ties or repeats to drop),
and each user's negatives come from the user's own stream (:func:`~fedsim.data.protocol.user_negatives`) — so
:func:`materialize_split` (eager, ``leave_one_out(..., negatives_per_user=True)``) gives the same arrays, which
``tests/data/test_population.py`` checks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np

from fedsim.data.interactions import DatasetError, Interactions
from fedsim.data.population import Population
from fedsim.data.protocol import Split, leave_one_out, user_negatives

CACHE_USERS = 65_536  # users whose rows a process keeps (≈ 1 KB each at ML-100K's activity); least recently used go
STREAM_CHUNK = 8192  # users per chunk when a whole-population aggregate streams them


class UserRow(NamedTuple):
    train: np.ndarray
    val: int
    test: int
    seen: np.ndarray  # every item of the user, sorted (the negatives avoid them)


def user_row(population: Population, user: int) -> UserRow:
    """User ``user``'s leave-one-out row (latest event = test, second latest = validation, the rest training)."""
    items = population.events(user).items
    if len(items) < 3:
        return UserRow(items, -1, -1, np.sort(items))
    return UserRow(items[:-2], int(items[-2]), int(items[-1]), np.sort(items))


class UserRows:
    """The rows this process has drawn, least recently used evicted past ``capacity`` users."""

    def __init__(self, population: Population, capacity: int = CACHE_USERS) -> None:
        self.population, self.capacity = population, capacity
        self._rows: OrderedDict[int, UserRow] = OrderedDict()

    def __getitem__(self, user: int) -> UserRow:
        row = self._rows.get(user)
        if row is None:
            row = user_row(self.population, user)
            self._rows[user] = row
            if len(self._rows) > self.capacity:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(user)
        return row


class UserColumn:
    """A per-user column of the split (validation item, test item or sampled negatives), read for the users asked
    for: ``column[users]`` (an int or an array of user ids). It is never a whole array — nothing may read all N."""

    def __init__(self, split: LazySplit, name: str) -> None:
        self.split, self.name = split, name

    def __getitem__(self, users: Any) -> np.ndarray:
        if isinstance(users, slice):
            users = np.arange(self.split.n_users)[users]
        ids = np.asarray(users)
        ids = np.flatnonzero(ids) if ids.dtype == bool else ids.astype(np.int64)
        out = np.array([self._value(int(u)) for u in ids.reshape(-1)], dtype=np.int64)
        if self.name == "negatives":
            return out.reshape(*ids.shape, self.split.n_negatives)
        return out.reshape(ids.shape)

    def _value(self, user: int) -> Any:
        row = self.split.rows[user]
        if self.name == "val":
            return row.val
        if self.name == "test":
            return row.test
        if row.test < 0:
            return np.full(self.split.n_negatives, -1, dtype=np.int64)
        s = self.split
        return user_negatives(s.seed, user, s.n_items, row.seen, s.n_negatives)

    def __len__(self) -> int:
        return self.split.n_users

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(f"the {self.name} column of a lazy split is read per user: index it with user ids")


class _NotMaterialised:
    """Stands for the CSR arrays a lazy split never builds; any use names the per-user method to call instead."""

    def __getattr__(self, name: str) -> Any:
        raise TypeError("a lazy split holds no train_indptr/train_items: use train_items_of(user) or n_train()")

    def __len__(self) -> int:
        raise TypeError("a lazy split holds no train_indptr/train_items: use train_items_of(user) or n_train()")


def _digest(values: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(values).tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class LazySplit(Split):
    """The leave-one-out split of a :class:`Population`, drawn per user on demand (see the module docstring)."""

    population: Population = field(default=cast(Population, None))
    seed: int = 0
    n_negatives: int = 99
    rows: UserRows = field(default=cast(UserRows, None))
    _aggregates: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, population: Population, seed: int, n_negatives: int) -> LazySplit:
        missing = cast(np.ndarray, _NotMaterialised())
        split = cls(
            population.n_users,
            population.n_items,
            missing,
            missing,
            missing,
            missing,
            missing,
            population=population,
            seed=seed,
            n_negatives=n_negatives,
            rows=UserRows(population),
        )
        for name, column in (("val_item", "val"), ("test_item", "test"), ("eval_negatives", "negatives")):
            object.__setattr__(split, name, UserColumn(split, column))
        return split

    def train_items_of(self, user: int) -> np.ndarray:
        return self.rows[int(user)].train

    def n_train(self) -> np.ndarray:
        return self._per_user("n_train", lambda events: np.where(events >= 3, events - 2, events))

    @property
    def evaluated(self) -> np.ndarray:
        return self._per_user("evaluated", lambda events: events >= 3)

    def _per_user(self, name: str, derive: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """A per-user scalar derived from the users' numbers of events, computed once (read-only: shared)."""
        if name not in self._aggregates:
            values = derive(self.population.traits().n_events)
            values.flags.writeable = False
            self._aggregates[name] = values
        return cast(np.ndarray, self._aggregates[name])

    def stream_train_items(self, users: np.ndarray, chunk: int = STREAM_CHUNK) -> Iterator[list[np.ndarray]]:
        """The training items of ``users``, in order, ``chunk`` users at a time — drawn afresh, not cached, so a
        whole-population pass holds one chunk at a time. Users streamed here are also counted into the item
        popularity of their group (:meth:`popularity_groups`), so a later popularity request streams only the
        users no pass has read yet: the re-identification audit and ItemPop share one pass."""
        for start in range(0, len(users), chunk):
            ids = users[start : start + chunk]
            rows = [user_row(self.population, int(u)).train for u in ids.tolist()]
            self._tally(ids, rows)
            yield rows

    def popularity_groups(self, labels: np.ndarray) -> None:
        """Declare a grouping of the users (a small integer label each, e.g. role × consent): popularity is then
        counted per group as users stream by, and any union of groups is a sum — not another pass."""
        labels = np.asarray(labels, dtype=np.int64)
        tally = self._aggregates.get("tally")
        if tally is None or not np.array_equal(tally[0], labels):
            table = np.zeros((int(labels.max()) + 1 if len(labels) else 1, self.n_items), dtype=np.int64)
            self._aggregates["tally"] = (labels, table, np.zeros(self.n_users, dtype=bool))

    def _tally(self, users: np.ndarray, rows: list[np.ndarray]) -> None:
        tally = self._aggregates.get("tally")
        if tally is None:
            return
        labels, table, counted = tally
        fresh = ~counted[users]
        if fresh.any():
            lengths = np.array([len(r) for r, f in zip(rows, fresh, strict=True) if f], dtype=np.int64)
            flat = np.concatenate([r for r, f in zip(rows, fresh, strict=True) if f])
            cells = np.repeat(labels[users[fresh]], lengths) * self.n_items + flat
            table += np.bincount(cells, minlength=table.size).reshape(table.shape)
            counted[users[fresh]] = True

    def item_popularity(self, users: np.ndarray | None = None) -> np.ndarray:
        mask = np.ones(self.n_users, dtype=bool)
        if users is not None:
            mask = np.zeros(self.n_users, dtype=bool)
            mask[np.asarray(users, dtype=np.int64)] = True
        tally = self._aggregates.get("tally")
        if tally is not None:
            labels, table, counted = tally
            groups = np.unique(labels[mask])
            if np.array_equal(mask, np.isin(labels, groups)):  # a union of groups: complete them, then sum
                for _ in self.stream_train_items(np.flatnonzero(~counted & mask)):
                    pass
                return table[groups].sum(axis=0)
        key = "popularity:" + _digest(mask)
        if key not in self._aggregates:
            counts = np.zeros(self.n_items, dtype=np.int64)
            for rows in self.stream_train_items(np.flatnonzero(mask)):
                counts += np.bincount(np.concatenate(rows), minlength=self.n_items)
            self._aggregates[key] = counts
        return cast(np.ndarray, self._aggregates[key]).copy()


@dataclass(frozen=True, eq=False)
class LazyInteractions(Interactions):
    """What a run reads of the interaction log (sizes, attributes, names, source) without the event arrays."""

    population: Population = field(default=cast(Population, None))

    @classmethod
    def of(cls, population: Population) -> LazyInteractions:
        missing = cast(np.ndarray, _NotMaterialised())
        return cls(
            missing,
            missing,
            missing,
            population.n_users,
            population.n_items,
            population.traits().attributes(),
            population.item_names,
            population.source,
            population=population,
        )

    def __post_init__(self) -> None:  # attributes have N values by construction; there are no event arrays to check
        pass

    @property
    def n_interactions(self) -> int:
        return int(self.population.traits().n_events.sum())

    def interactions_per_user(self) -> np.ndarray:
        return self.population.traits().n_events.copy()


def lazy_views(population: Population, seed: int, n_negatives: int) -> tuple[Interactions, Split]:
    """The run's views of ``population``: nothing is drawn until a user is read."""
    if population.n_items - population.max_events < n_negatives:
        raise DatasetError(
            f"a user may have {population.max_events} of the {population.n_items} items but "
            f"evaluation.n_negatives={n_negatives}: use a larger catalogue, fewer interactions or fewer negatives"
        )
    return LazyInteractions.of(population), LazySplit.of(population, seed, n_negatives)


def materialize_split(population: Population, seed: int, n_negatives: int) -> tuple[Interactions, Split]:
    """The same data, drawn eagerly (every user, in memory): the reference the lazy views must equal."""
    data = population.materialize()
    return data, leave_one_out(data, n_negatives=n_negatives, seed=seed, negatives_per_user=True)
