"""The calibrated synthetic population (``dataset=synthetic``): MovieLens-100K's statistics at any number of users.

The world is built so that a recommender has the kind of signal MovieLens gives it, at N = 10³ or 10⁶ alike, and so
that no process ever needs the whole population at once:

* **items** (:class:`Catalogue`, one stream of its own): a latent taste vector and a log-normal popularity prior each;
* **users** — traits first (:meth:`Population.traits`): a gender-like attribute (``gender`` F/M, F the minority with
  ``dataset.minority_share``), an ``age`` bracket with ML-100K's shares, and a number of events, ``min_interactions``
  plus a Gamma draw (mean ``activity_mean``, shape ``activity_shape``: ML-100K's heavy tail), capped at
  ``max_interactions``. Drawn in fixed blocks of :data:`TRAIT_BLOCK` users, each block from its own stream
  ``[seed, 'traits', block]``: all N users' traits cost well under a second at N = 10⁶.
* **events** (:meth:`Population.events`): from the user's own stream ``[seed, 'events', user]``, a taste vector
  (standard normal, shifted along one direction for the minority — ``group_shift`` — and along another with age —
  ``age_shift``: tastes differ between groups, so fairness gaps exist); the user's items are a weighted draw without
  replacement (Gumbel top-k) with logit ``popularity + taste_strength · taste·item / √d``; their order in time is a
  noisy Plackett–Luce order of the same logits plus ``drift`` × popularity — the items a user likes most and the
  popular ones come first, the tail later, as MovieLens' sign-up ratings do (the held-out latest items are less
  popular than the average event). Timestamps strictly increase within a user: no ties to break.

So user ``u``'s data is a pure function of ``(seed, u)`` and the dataset settings: independent of N (a population of
1000 is the first 1000 users of a population of 10⁶), of sharding and of which process draws it. A node draws only
the users it hosts, when it needs them (:mod:`fedsim.data.lazy`); the calibration against ML-100K is
``experiments/privacy_population/calibrate.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from fedsim.config import DatasetConfig
from fedsim.data.interactions import DatasetError, Interactions
from fedsim.data.movielens import ML1M_AGE_BRACKETS

TRAIT_BLOCK = 4096  # users per block of trait draws; a constant, so a user's traits never depend on N
_ITEMS, _TRAITS, _EVENTS = 1, 2, 3  # stream tags: [seed, tag, ...]

AGE_BRACKETS = tuple(ML1M_AGE_BRACKETS.values())  # the same age groups as MovieLens' fairness tables
# Shares of the brackets among ML-100K's 943 users (experiments/privacy_population/calibrate.py prints them)
AGE_SHARES = np.array([0.038, 0.210, 0.329, 0.206, 0.085, 0.077, 0.055])
GENDERS = ("M", "F")  # index 1 is the minority ("F": 29% of ML-100K's users)

_START, _SPAN, _MAX_GAP = 874_724_710, 18_561_928, 86_400  # ML-100K's first timestamp and span (s); ≤ 1 day apart


@dataclass(frozen=True)
class Catalogue:
    """The item side of the world, from its own stream ``[seed, 'items']``: what every user's choice reads."""

    factors: np.ndarray  # (n_items, d) item taste vectors
    popularity: np.ndarray  # (n_items,) log-popularity prior
    gender_direction: np.ndarray  # (d,) unit vector: the minority's taste shift
    age_direction: np.ndarray  # (d,) unit vector: the taste shift per standardised age bracket

    @classmethod
    def draw(cls, cfg: DatasetConfig, seed: int) -> Catalogue:
        rng = np.random.default_rng([seed, _ITEMS])
        factors = rng.standard_normal((cfg.n_items, cfg.latent_dim))
        popularity = cfg.popularity_sd * rng.standard_normal(cfg.n_items)
        directions = rng.standard_normal((2, cfg.latent_dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return cls(factors, popularity, directions[0], directions[1])


@dataclass(frozen=True)
class Traits:
    """Per-user scalars of a set of users (codes into :data:`GENDERS` and :data:`AGE_BRACKETS`)."""

    n_events: np.ndarray  # int64
    gender: np.ndarray  # int8: 1 = minority
    age: np.ndarray  # int8

    def attributes(self) -> dict[str, np.ndarray]:
        """The fairness attributes, as MovieLens names them (``gender`` F/M, ``age`` bracket)."""
        return {"gender": np.array(GENDERS)[self.gender], "age": np.array(AGE_BRACKETS)[self.age]}


@dataclass(frozen=True)
class UserEvents:
    """One user's events in time order (distinct items; strictly increasing timestamps)."""

    items: np.ndarray  # int64
    timestamps: np.ndarray  # int64


class Population:
    """The world of ``dataset=synthetic`` for one (config, seed): users drawn one at a time, on demand."""

    def __init__(self, cfg: DatasetConfig, seed: int) -> None:
        limit = min(cfg.max_interactions, cfg.n_items // 2)
        if limit < cfg.min_interactions:
            raise DatasetError(
                f"dataset.min_interactions={cfg.min_interactions} exceeds what {cfg.n_items} items allow (a user "
                f"interacts with at most half the catalogue, {cfg.n_items // 2}): use more items or fewer interactions"
            )
        self.cfg, self.seed = cfg, seed
        self.n_users, self.n_items = cfg.n_users, cfg.n_items
        self.max_events = limit

    @functools.cached_property
    def catalogue(self) -> Catalogue:
        return Catalogue.draw(self.cfg, self.seed)

    @functools.cached_property
    def source(self) -> str:
        return f"synthetic(n_users={self.n_users}, n_items={self.n_items}, seed={self.seed}; calibrated to ML-100K)"

    @functools.cached_property
    def item_names(self) -> list[str]:
        rank = np.empty(self.n_items, dtype=np.int64)
        rank[np.argsort(-self.catalogue.popularity, kind="stable")] = np.arange(1, self.n_items + 1)
        return [f"item {i} (pop. rank {r})" for i, r in enumerate(rank.tolist())]

    def _trait_block(self, block: int) -> Traits:
        c = self.cfg
        rng = np.random.default_rng([self.seed, _TRAITS, block])
        gender = (rng.random(TRAIT_BLOCK) < c.minority_share).astype(np.int8)
        age = rng.choice(len(AGE_BRACKETS), size=TRAIT_BLOCK, p=AGE_SHARES / AGE_SHARES.sum()).astype(np.int8)
        above = rng.gamma(c.activity_shape, (c.activity_mean - c.min_interactions) / c.activity_shape, TRAIT_BLOCK)
        n_events = np.minimum(c.min_interactions + np.round(above), self.max_events).astype(np.int64)
        return Traits(n_events, gender, age)

    @functools.cached_property
    def _all_traits(self) -> Traits:
        blocks = [self._trait_block(b) for b in range(-(-self.n_users // TRAIT_BLOCK))]
        n = self.n_users
        return Traits(*(np.concatenate([getattr(t, f) for t in blocks])[:n] for f in ("n_events", "gender", "age")))

    def traits(self) -> Traits:
        """Every user's traits (O(N) small integers; the blocks make this fast at any N)."""
        return self._all_traits

    def events(self, user: int) -> UserEvents:
        """User ``user``'s events: a pure function of (seed, user, dataset settings)."""
        c, items = self.cfg, self.catalogue
        traits = self._all_traits
        n = int(traits.n_events[user])
        rng = np.random.default_rng([self.seed, _EVENTS, user])
        taste = rng.standard_normal(c.latent_dim)
        taste += c.group_shift * traits.gender[user] * items.gender_direction
        taste += c.age_shift * _standardised_age(int(traits.age[user])) * items.age_direction
        logits = items.popularity + (c.taste_strength / np.sqrt(c.latent_dim)) * (items.factors @ taste)
        keys = logits - np.log(rng.standard_exponential(self.n_items))  # + Gumbel noise: Gumbel top-k
        chosen = np.argpartition(-keys, n - 1)[:n]
        order = keys[chosen] + c.drift * items.popularity[chosen] + rng.gumbel(size=n)
        timeline = chosen[np.argsort(-order, kind="stable")]
        start = _START + int(rng.integers(0, _SPAN))
        timestamps = start + np.cumsum(rng.integers(1, _MAX_GAP, size=n))
        return UserEvents(timeline.astype(np.int64), timestamps.astype(np.int64))

    def materialize(self) -> Interactions:
        """Every user's events as one eager :class:`Interactions` log (small N: tests, the calibration, centralized
        runs); the federation reads the same users lazily instead (:mod:`fedsim.data.lazy`)."""
        events = [self.events(u) for u in range(self.n_users)]
        counts = self._all_traits.n_events
        return Interactions(
            user=np.repeat(np.arange(self.n_users, dtype=np.int64), counts),
            item=np.concatenate([e.items for e in events]),
            timestamp=np.concatenate([e.timestamps for e in events]),
            n_users=self.n_users,
            n_items=self.n_items,
            user_attributes=self._all_traits.attributes(),
            item_names=self.item_names,
            source=self.source,
        )


def _standardised_age(bracket: int) -> float:
    """Bracket index, centred and scaled by ML-100K's shares (mean 0, sd 1 over users)."""
    return float((bracket - _AGE_MEAN) / _AGE_SD)


_AGE_MEAN = float(np.dot(np.arange(len(AGE_SHARES)), AGE_SHARES / AGE_SHARES.sum()))
_AGE_SD = float(np.sqrt(np.dot((np.arange(len(AGE_SHARES)) - _AGE_MEAN) ** 2, AGE_SHARES / AGE_SHARES.sum())))


def population_from_config(cfg: DatasetConfig, seed: int) -> Population:
    """The registry's entry point (see :mod:`fedsim.registry`)."""
    return Population(cfg, seed)
