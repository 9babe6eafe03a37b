"""Readers for MovieLens-100K and MovieLens-1M from a local directory.

GroupLens' licence forbids redistribution, so fedsim never ships or downloads these files: the user points
``dataset.path`` at their own copy (https://grouplens.org/datasets/movielens/). Every rating becomes one implicit
interaction; gender, age bracket and occupation become user attributes (for fairness reports only).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fedsim.data.interactions import DatasetError, Interactions

GROUPLENS_URL = "https://grouplens.org/datasets/movielens/"

# md5 of the pristine GroupLens files, to tell a user when their copy was edited.
ML100K_MD5 = {
    "u.data": "6e47046882bad158b0efbb84cd5cb987",
    "u.user": "1b53539edc13caad0282c8500608a319",
    "u.item": "c9e7f390115d79079537301d5204f3f7",
}

# ML-1M codes its ages; ML-100K has raw ages that we bucket into the same brackets.
ML1M_AGE_BRACKETS = {1: "<18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}


def age_bracket(age: int) -> str:
    """Map a raw age to the ML-1M brackets, so both datasets report the same age groups."""
    for lower, label in sorted(ML1M_AGE_BRACKETS.items(), reverse=True):
        if age >= lower:
            return label
    return "<18"


def _require(directory: Path, name: str, dataset: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise DatasetError(
            f"{dataset}: expected file {path} (set dataset.path to the unzipped {dataset} folder; "
            f"download it from {GROUPLENS_URL})"
        )
    return path


def _read_rows(path: Path, sep: str, n_fields: int, encoding: str = "latin-1") -> list[list[str]]:
    rows = []
    with path.open(encoding=encoding) as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) < n_fields:
                raise DatasetError(
                    f"{path}:{line_no}: expected {n_fields} fields separated by {sep!r}, got {len(fields)}"
                )
            rows.append(fields)
    if not rows:
        raise DatasetError(f"{path}: file is empty")
    return rows


def _to_int_columns(path: Path, rows: list[list[str]], columns: list[int]) -> np.ndarray:
    try:
        return np.array([[int(row[c]) for c in columns] for row in rows], dtype=np.int64)
    except ValueError as error:
        raise DatasetError(f"{path}: non-integer value where ids/timestamps are expected ({error})") from None


def _build(
    ratings: np.ndarray, user_rows: dict[int, tuple[str, str, str]], item_titles: dict[int, str], source: str
) -> Interactions:
    """Re-index raw 1-based ids densely and attach attributes."""
    raw_users = np.unique(ratings[:, 0])
    raw_items = np.unique(ratings[:, 1])
    user_index = {u: i for i, u in enumerate(raw_users.tolist())}
    item_index = {it: i for i, it in enumerate(raw_items.tolist())}
    user = np.array([user_index[u] for u in ratings[:, 0].tolist()], dtype=np.int64)
    item = np.array([item_index[i] for i in ratings[:, 1].tolist()], dtype=np.int64)
    attributes = {
        name: np.array([user_rows.get(u, ("unknown",) * 3)[k] for u in raw_users.tolist()])
        for k, name in enumerate(("gender", "age", "occupation"))
    }
    names = [item_titles.get(i, f"item {i}") for i in raw_items.tolist()]
    return Interactions(
        user=user,
        item=item,
        timestamp=ratings[:, 2],
        n_users=len(raw_users),
        n_items=len(raw_items),
        user_attributes=attributes,
        item_names=names,
        source=source,
    )


def load_ml100k(path: str | Path) -> Interactions:
    """Read ``u.data`` (user, item, rating, timestamp; tab-separated), ``u.user`` and ``u.item`` (``|``-separated)."""
    directory = Path(path).expanduser()
    data = _require(directory, "u.data", "MovieLens-100K")
    users = _require(directory, "u.user", "MovieLens-100K")
    ratings = _to_int_columns(data, _read_rows(data, "\t", 4), [0, 1, 3])
    user_rows = {}
    for row in _read_rows(users, "|", 4):
        try:
            user_rows[int(row[0])] = (row[2], age_bracket(int(row[1])), row[3])
        except ValueError:
            raise DatasetError(
                f"{users}: expected 'id|age|gender|occupation|zip' rows, got {'|'.join(row)!r}"
            ) from None
    titles = {}
    items = directory / "u.item"
    if items.is_file():
        titles = {int(row[0]): row[1] for row in _read_rows(items, "|", 2)}
    pristine = file_md5(data) == ML100K_MD5["u.data"]
    note = "" if pristine else " (u.data differs from GroupLens' release: md5 mismatch)"
    return _build(ratings, user_rows, titles, f"MovieLens-100K at {directory}{note}")


def load_ml1m(path: str | Path) -> Interactions:
    """Read ``ratings.dat`` (``user::item::rating::timestamp``), ``users.dat`` and ``movies.dat``."""
    directory = Path(path).expanduser()
    data = _require(directory, "ratings.dat", "MovieLens-1M")
    users = _require(directory, "users.dat", "MovieLens-1M")
    ratings = _to_int_columns(data, _read_rows(data, "::", 4), [0, 1, 3])
    user_rows = {}
    for row in _read_rows(users, "::", 4):
        try:
            user_rows[int(row[0])] = (row[1], ML1M_AGE_BRACKETS.get(int(row[2]), row[2]), row[3])
        except ValueError:
            raise DatasetError(f"{users}: expected 'id::gender::age::occupation::zip' rows") from None
    titles = {}
    movies = directory / "movies.dat"
    if movies.is_file():
        titles = {int(row[0]): row[1] for row in _read_rows(movies, "::", 2)}
    return _build(ratings, user_rows, titles, f"MovieLens-1M at {directory}")


def file_md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()
