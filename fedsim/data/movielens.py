"""Readers for MovieLens-100K and MovieLens-1M from a local directory.

GroupLens' licence forbids redistribution, so fedsim never ships or downloads these files: the user points
``dataset.path`` at their own copy (https://grouplens.org/datasets/movielens/). Every rating becomes one implicit
interaction; gender, age bracket and occupation become user attributes (for fairness reports only).

Input is validated before anything is built, because a silently accepted bad row does not crash later: it shifts the
results (a user missing from ``u.user`` becomes an "unknown" fairness group, an item missing from ``u.item`` becomes
an untitled extra item). Every refusal is a :class:`DatasetError` with one line naming the file, the 1-based line
number, the offending value and what is allowed. The happy path parses whole columns at once (ML-1M has a million
rows); only when a column fails does a row-by-row scan run, to find the line to report.

Ratings and timestamps are checked against what GroupLens' files can hold, although fedsim keeps only the order of
events: a value outside that range means a corrupted or shifted row, or a file from another source, whose other
columns cannot be trusted either.

* Ratings: MovieLens-100K and -1M rate in whole stars, 1 to 5. A 0, a 4.5 or a 1997 in that column is not a rating.
* Timestamps: Unix seconds from 1970-01-01 up to (not including) 2100-01-01. GroupLens' files lie in 1997-2003; the
  upper bound refuses timestamps in milliseconds (any instant after mid-February 1970 is above it in milliseconds),
  which would still sort among themselves but, mixed with seconds, reorder events and so change which item becomes
  each user's test item in the leave-one-out split. The bound is deliberately loose otherwise: small synthetic
  timestamps (tests, hand-made files) stay valid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from fedsim.config import DatasetConfig
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

_INT64_END = 2**63  # ids are stored as int64, so every id must lie below this
# An integer field is ASCII digits, with a minus sign for the range check to refuse: Python's int() also accepts
# "1_96" (as 196), " 7 ", "+3" and other scripts' digits ("٣"), which no GroupLens file holds — a garbled row that
# int() reads as some other id would silently join the wrong user or item.
_INTEGER = re.compile(r"-?[0-9]+")
TIMESTAMP_END = 4_102_444_800  # 2100-01-01T00:00:00Z in Unix seconds: see the module docstring


def age_bracket(age: int) -> str:
    """Map a raw age to the ML-1M brackets, so both datasets report the same age groups."""
    for lower, label in sorted(ML1M_AGE_BRACKETS.items(), reverse=True):
        if age >= lower:
            return label
    return "<18"


def _require(directory: Path, name: str, dataset: str) -> Path:
    """The path of a required file; when it is missing, say where the dataset comes from (we may not ship it)."""
    path = directory / name
    if not path.is_file():
        raise DatasetError(
            f"{dataset}: expected file {path} (set dataset.path to the unzipped {dataset} folder, or FEDSIM_DATA to "
            f"the folder that holds it; download it from {GROUPLENS_URL})"
        )
    return path


# --- one file as rows of text fields -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """The non-blank rows of one file, kept with their 1-based line numbers so that any refusal can cite the line."""

    path: Path
    rows: list[list[str]]
    line_nos: list[int]

    def column(self, index: int) -> list[str]:
        return [row[index] for row in self.rows]

    def fail(self, row: int, problem: str) -> NoReturn:
        """Refuse the file, citing row ``row`` (an index into ``rows``) by its line number in the file."""
        raise DatasetError(f"{self.path} line {self.line_nos[row]}: {problem}")


def _read_table(path: Path, sep: str, n_fields: int, sep_name: str) -> _Table:
    """Split ``path`` into exactly ``n_fields`` fields per non-blank line.

    Lines are split on ``\\n`` only (not ``str.splitlines``, which also breaks on latin-1 control characters such as
    ``\\x85``), so the reported line numbers are the ones an editor shows. Blank lines (empty or spaces only) are
    skipped but still counted; a line of bare tabs is not blank, it is a row of empty fields and is refused as such.
    latin-1 decodes any byte, so a stray byte shows up as a wrong value, never as a decoding traceback.
    """
    rows: list[list[str]] = []
    line_nos: list[int] = []
    try:
        lines = path.read_text(encoding="latin-1").split("\n")
    except OSError as error:  # permissions, an I/O error, a special file: one line, not a traceback
        raise DatasetError(f"{path}: cannot be read: {error.strerror or error}") from None
    for line_no, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip(" "):
            continue
        fields = line.split(sep)
        if len(fields) != n_fields:
            raise DatasetError(
                f"{path} line {line_no}: expected {n_fields} {sep_name}-separated fields, got {len(fields)}"
            )
        rows.append(fields)
        line_nos.append(line_no)
    if not rows:
        raise DatasetError(f"{path}: file is empty")
    return _Table(path, rows, line_nos)


# --- typed columns: a vectorised parse, and a per-value check that explains a failure ----------------------------


@dataclass(frozen=True)
class _IntField:
    """An integer column with a half-open range ``low <= value < high`` (ids, ratings, timestamps, ages, codes)."""

    name: str
    low: int
    high: int
    allowed: str
    codes: tuple[int, ...] = ()  # when set, only these values (ML-1M's age codes)

    def parse(self, texts: Sequence[str]) -> np.ndarray | None:
        """All values as int64, or None when at least one is not allowed (then :meth:`problem` says which)."""
        joined = "".join(texts)  # the common case, all plain digits, checked in C; else value by value
        if not (joined.isascii() and joined.isdigit()) and not all(_INTEGER.fullmatch(text) for text in texts):
            return None
        try:
            values = np.fromiter(map(int, texts), dtype=np.int64, count=len(texts))
        except (ValueError, OverflowError):
            return None
        ok = (values >= self.low) & (values < self.high)
        if self.codes:
            ok &= np.isin(values, self.codes)
        return values if bool(np.all(ok)) else None

    def problem(self, text: str) -> str | None:
        if not _INTEGER.fullmatch(text):
            return f"{self.name} {text!r} is not an integer; allowed: {self.allowed}"
        value = int(text)
        if not self.low <= value < self.high:
            return f"{self.name} {text.strip()} is out of range; allowed: {self.allowed}"
        if self.codes and value not in self.codes:
            return f"{self.name} {text.strip()} is not a known code; allowed: {self.allowed}"
        return None


@dataclass(frozen=True)
class _TextField:
    """A categorical text column; ``choices`` restricts it (gender), otherwise it only has to be non-empty."""

    name: str
    choices: tuple[str, ...] = ()

    def parse(self, texts: Sequence[str]) -> np.ndarray | None:
        values = np.array([text.strip() for text in texts])
        ok = np.isin(values, self.choices) if self.choices else values != ""
        return values if bool(np.all(ok)) else None

    def problem(self, text: str) -> str | None:
        value = text.strip()
        if self.choices and value not in self.choices:
            return f"{self.name} {text!r} is not allowed; allowed: {', '.join(self.choices)}"
        if not value:
            return f"{self.name} is empty; allowed: a non-empty text"
        return None


_Field = _IntField | _TextField


def _positive_id(name: str) -> _IntField:
    return _IntField(name, 1, _INT64_END, "a positive integer id below 2^63")


def _parse_columns(table: _Table, fields: dict[int, _Field]) -> dict[int, np.ndarray]:
    """Parse the given columns; on failure, refuse the earliest offending line in the file (over all columns)."""
    parsed = {index: field.parse(table.column(index)) for index, field in fields.items()}
    failed = [index for index, values in parsed.items() if values is None]
    if failed:
        for row, texts in enumerate(table.rows):
            for index in failed:
                problem = fields[index].problem(texts[index])
                if problem is not None:
                    table.fail(row, problem)
        raise DatasetError(f"{table.path}: a column failed to parse but no line could be blamed")  # unreachable
    return {index: values for index, values in parsed.items() if values is not None}


def _unique_ids(table: _Table, ids: np.ndarray, name: str) -> None:
    """An id listed twice would silently keep only its last row, so a duplicate is refused."""
    if len(np.unique(ids)) == len(ids):
        return
    first_row: dict[int, int] = {}
    for row, value in enumerate(ids.tolist()):
        if value in first_row:
            table.fail(row, f"{name} {value} is listed twice (first on line {table.line_nos[first_row[value]]})")
        first_row[value] = row


# --- the two datasets --------------------------------------------------------------------------------------------


def _ratings(directory: Path, name: str, sep: str, sep_name: str, dataset: str) -> tuple[_Table, np.ndarray]:
    """The rating file as (user, item, timestamp) int64 rows; the rating value is checked but not kept (every rating
    is one implicit interaction), its range is checked because a value outside it means a broken row."""
    table = _read_table(_require(directory, name, dataset), sep, 4, sep_name)
    columns = _parse_columns(
        table,
        {
            0: _positive_id("user"),
            1: _positive_id("item"),
            2: _IntField("rating", 1, 6, "whole stars 1..5"),
            3: _IntField("timestamp", 0, TIMESTAMP_END, "Unix seconds 0 <= t < 4102444800 (before 2100-01-01)"),
        },
    )
    return table, np.stack([columns[0], columns[1], columns[3]], axis=1)


def _items(
    directory: Path, name: str, sep: str, sep_name: str, n_fields: int
) -> tuple[_Table | None, np.ndarray, dict[int, str]]:
    """The optional item file: its table, ids (unique, positive) and titles; ``(None, [], {})`` when it is absent."""
    if not (directory / name).is_file():
        return None, np.empty(0, dtype=np.int64), {}
    table = _read_table(directory / name, sep, n_fields, sep_name)
    ids = _parse_columns(table, {0: _positive_id("item")})[0]
    _unique_ids(table, ids, "item")
    return table, ids, dict(zip(ids.tolist(), table.column(1), strict=True))


def _check_ratings(
    data: _Table, ratings: np.ndarray, users: _Table, user_ids: np.ndarray, items: _Table | None, item_ids: np.ndarray
) -> None:
    """Every rating's user (item) must have a row in the user (item) file; else it would join no fairness group.

    The earliest offending line of the rating file is reported, whether its user or its item is the unknown one.
    """
    missing_user = ~np.isin(ratings[:, 0], user_ids)
    missing_item = ~np.isin(ratings[:, 1], item_ids) if items is not None else np.zeros(len(ratings), dtype=bool)
    bad = np.flatnonzero(missing_user | missing_item)
    if len(bad) == 0:
        return
    row = int(bad[0])
    if missing_user[row]:
        data.fail(row, f"user {int(ratings[row, 0])} has no row in {users.path.name}")
    assert items is not None
    low, high = int(item_ids.min()), int(item_ids.max())
    span = f"ids {low}..{high}" if high - low + 1 == len(item_ids) else f"{len(item_ids)} ids from {low} to {high}"
    data.fail(row, f"item {int(ratings[row, 1])} is not in {items.path.name} ({span})")


def _build(
    ratings: np.ndarray, user_ids: np.ndarray, attributes: dict[str, list[str]], titles: dict[int, str], source: str
) -> Interactions:
    """Re-index raw ids densely (users and items that have ratings only) and attach attributes."""
    raw_users, user = np.unique(ratings[:, 0], return_inverse=True)
    raw_items, item = np.unique(ratings[:, 1], return_inverse=True)
    position = {u: k for k, u in enumerate(user_ids.tolist())}
    rows = [position[u] for u in raw_users.tolist()]
    user_attributes = {name: np.array([values[k] for k in rows]) for name, values in attributes.items()}
    names = [titles.get(i, f"item {i}") for i in raw_items.tolist()]
    return Interactions(
        user=user.reshape(-1).astype(np.int64),
        item=item.reshape(-1).astype(np.int64),
        timestamp=ratings[:, 2],
        n_users=len(raw_users),
        n_items=len(raw_items),
        user_attributes=user_attributes,
        item_names=names,
        source=source,
        user_ids=raw_users.astype(np.int64),  # the file's ids: what fedsim-explain accepts and prints
    )


def load_ml100k(path: str | Path) -> Interactions:
    """Read ``u.data`` (user, item, rating, timestamp; tab-separated), ``u.user`` and ``u.item`` (``|``-separated).

    ``u.item`` is optional (it only supplies titles); when present, every rated item must be listed in it.
    """
    directory = Path(path).expanduser()
    data, ratings = _ratings(directory, "u.data", "\t", "tab", "MovieLens-100K")
    users = _read_table(_require(directory, "u.user", "MovieLens-100K"), "|", 5, "'|'")
    columns = _parse_columns(
        users,
        {
            0: _positive_id("user"),
            1: _IntField("age", 0, 151, "an integer 0..150"),
            2: _TextField("gender", ("M", "F")),
            3: _TextField("occupation"),
        },
    )
    _unique_ids(users, columns[0], "user")
    items, item_ids, titles = _items(directory, "u.item", "|", "'|'", 24)
    _check_ratings(data, ratings, users, columns[0], items, item_ids)
    attributes = {
        "gender": columns[2].tolist(),
        "age": [age_bracket(age) for age in columns[1].tolist()],
        "occupation": columns[3].tolist(),
    }
    pristine = file_md5(data.path) == ML100K_MD5["u.data"]
    note = "" if pristine else " (u.data differs from GroupLens' release: md5 mismatch)"
    source = f"MovieLens-100K at {directory}{note}"
    return _build(ratings, columns[0], attributes, titles, source)


def load_ml1m(path: str | Path) -> Interactions:
    """Read ``ratings.dat`` (``user::item::rating::timestamp``), ``users.dat`` and ``movies.dat`` (optional).

    ``users.dat`` rows are ``id::gender::age::occupation::zip`` with ML-1M's age codes and occupation codes 0..20.
    """
    directory = Path(path).expanduser()
    data, ratings = _ratings(directory, "ratings.dat", "::", "'::'", "MovieLens-1M")
    users = _read_table(_require(directory, "users.dat", "MovieLens-1M"), "::", 5, "'::'")
    codes = ", ".join(str(code) for code in ML1M_AGE_BRACKETS)
    columns = _parse_columns(
        users,
        {
            0: _positive_id("user"),
            1: _TextField("gender", ("M", "F")),
            2: _IntField("age", 1, 57, f"an ML-1M age code ({codes})", tuple(ML1M_AGE_BRACKETS)),
            3: _IntField("occupation", 0, 21, "an ML-1M occupation code 0..20"),
        },
    )
    _unique_ids(users, columns[0], "user")
    items, item_ids, titles = _items(directory, "movies.dat", "::", "'::'", 3)
    _check_ratings(data, ratings, users, columns[0], items, item_ids)
    attributes = {
        "gender": columns[1].tolist(),
        "age": [ML1M_AGE_BRACKETS[age] for age in columns[2].tolist()],
        "occupation": [str(code) for code in columns[3].tolist()],
    }
    source = f"MovieLens-1M at {directory}"
    return _build(ratings, columns[0], attributes, titles, source)


def file_md5(path: str | Path) -> str:
    """md5 of a file, to tell the user in the report when their copy differs from GroupLens' release."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def ml100k_from_config(cfg: DatasetConfig, seed: int) -> Interactions:
    """The registry's entry point (see :mod:`fedsim.registry`): ``dataset.path`` holds u.data, u.user (u.item)."""
    return load_ml100k(cfg.path or "")


def ml1m_from_config(cfg: DatasetConfig, seed: int) -> Interactions:
    """The registry's entry point: ``dataset.path`` holds ratings.dat, users.dat (movies.dat)."""
    return load_ml1m(cfg.path or "")
