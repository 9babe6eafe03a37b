import shutil
from pathlib import Path

import numpy as np
import pytest

from fedsim.data.movielens import DatasetError, age_bracket, load_ml1m, load_ml100k
from fedsim.data.protocol import leave_one_out


def _write_ml100k(folder, data_rows, user_rows):
    folder.mkdir(exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data_rows))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|00000\n" for u, a, g, o in user_rows))


def _item_row(item: int, title: str) -> str:
    """One u.item row in GroupLens' 24-field layout (id, title, dates, IMDb URL, 19 genre flags)."""
    return "|".join([str(item), title, "01-Jan-1995", "", "http://us.imdb.com/"] + ["0"] * 19)


def _valid_files(dataset: str) -> dict[str, list[str]]:
    """A valid 3-user, 3-item dataset as lines per file; each bad-data case corrupts exactly one line of it."""
    if dataset == "ml-100k":
        return {
            "u.data": ["1\t1\t5\t100", "1\t2\t3\t101", "2\t2\t4\t102", "2\t3\t1\t103", "3\t1\t2\t104"],
            "u.user": ["1|24|M|writer|00000", "2|61|F|doctor|00000", "3|30|M|other|00000"],
            "u.item": [_item_row(1, "Alpha (1990)"), _item_row(2, "Beta (1991)"), _item_row(3, "Gamma (1992)")],
        }
    return {
        "ratings.dat": ["1::1::5::100", "1::2::3::101", "2::2::4::102", "2::3::1::103", "3::1::2::104"],
        "users.dat": ["1::M::25::3::00000", "2::F::56::7::00000", "3::M::18::0::00000"],
        "movies.dat": ["1::Alpha (1990)::Drama", "2::Beta (1991)::Comedy", "3::Gamma (1992)::Horror"],
    }


def _write(folder: Path, files: dict[str, list[str]]) -> None:
    for name, lines in files.items():
        (folder / name).write_text("".join(f"{line}\n" for line in lines), encoding="latin-1")


def _load(dataset: str, folder: Path):
    return load_ml100k(folder) if dataset == "ml-100k" else load_ml1m(folder)


def test_reads_a_small_ml100k_layout_with_attributes(tmp_path):
    _write_ml100k(
        tmp_path, [(1, 10, 5, 100), (2, 11, 1, 50), (1, 11, 3, 90)], [(1, 24, "M", "writer"), (2, 61, "F", "doctor")]
    )
    data = load_ml100k(tmp_path)
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 2, 3)
    assert data.user_attributes["gender"].tolist() == ["M", "F"]
    assert data.user_attributes["age"].tolist() == ["18-24", "56+"]
    assert data.user_attributes["occupation"].tolist() == ["writer", "doctor"]


@pytest.mark.parametrize("dataset", ["ml-100k", "ml-1m"])
def test_valid_synthetic_layouts_load_with_titles(tmp_path, dataset):
    _write(tmp_path, _valid_files(dataset))
    data = _load(dataset, tmp_path)
    assert (data.n_users, data.n_items, data.n_interactions) == (3, 3, 5)
    assert data.item_names == ["Alpha (1990)", "Beta (1991)", "Gamma (1992)"]
    assert data.user_attributes["gender"].tolist() == ["M", "F", "M"]
    assert data.user.tolist() == [0, 0, 1, 1, 2] and data.item.tolist() == [0, 1, 1, 2, 0]
    assert data.timestamp.tolist() == [100, 101, 102, 103, 104]


def test_missing_file_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_ml100k(tmp_path)
    message = str(error.value)
    assert "u.data" in message and "grouplens" in message and "\n" not in message


TIMESTAMPS = "Unix seconds 0 <= t < 4102444800 (before 2100-01-01)"
RATINGS = "whole stars 1..5"

# (dataset, file, 1-based line, replacement for that line, the message after "<path> line <n>: ")
BAD_DATA = {
    # a garbled id in u.item used to be a traceback
    "item-file-garbled-id": (
        "ml-100k",
        "u.item",
        2,
        _item_row(2, "Beta (1991)").replace("2|", "2x|", 1),
        "item '2x' is not an integer; allowed: a positive integer id below 2^63",
    ),
    # a timestamp beyond int64 used to be an OverflowError traceback
    "timestamp-1e23": (
        "ml-100k",
        "u.data",
        2,
        f"1\t2\t3\t{10**23}",
        f"timestamp {10**23} is out of range; allowed: {TIMESTAMPS}",
    ),
    "timestamp-negative": (
        "ml-100k",
        "u.data",
        4,
        "2\t3\t1\t-5",
        f"timestamp -5 is out of range; allowed: {TIMESTAMPS}",
    ),
    # letters in the rating column used to be accepted (the column was never read)
    "rating-letters": ("ml-100k", "u.data", 5, "3\t1\tx\t104", f"rating 'x' is not an integer; allowed: {RATINGS}"),
    "rating-nan": ("ml-100k", "u.data", 1, "1\t1\tnan\t100", f"rating 'nan' is not an integer; allowed: {RATINGS}"),
    # ratings outside GroupLens' 1..5 whole stars used to be accepted (a shifted or corrupted row)
    "rating-zero": ("ml-100k", "u.data", 2, "1\t2\t0\t101", f"rating 0 is out of range; allowed: {RATINGS}"),
    "rating-six": ("ml-100k", "u.data", 3, "2\t2\t6\t102", f"rating 6 is out of range; allowed: {RATINGS}"),
    "rating-negative": ("ml-100k", "u.data", 4, "2\t3\t-1\t103", f"rating -1 is out of range; allowed: {RATINGS}"),
    "rating-half-star": (
        "ml-100k",
        "u.data",
        5,
        "3\t1\t4.5\t104",
        f"rating '4.5' is not an integer; allowed: {RATINGS}",
    ),
    # a timestamp column shifted into the rating column
    "rating-is-a-timestamp": (
        "ml-100k",
        "u.data",
        1,
        "1\t1\t881250949\t100",
        f"rating 881250949 is out of range; allowed: {RATINGS}",
    ),
    # milliseconds (or a far-future clock) used to be accepted and reorder the leave-one-out split
    "timestamp-milliseconds": (
        "ml-100k",
        "u.data",
        2,
        "1\t2\t3\t881250949000",
        f"timestamp 881250949000 is out of range; allowed: {TIMESTAMPS}",
    ),
    "timestamp-year-2100": (
        "ml-100k",
        "u.data",
        3,
        "2\t2\t4\t4102444800",
        f"timestamp 4102444800 is out of range; allowed: {TIMESTAMPS}",
    ),
    # rated items missing from u.item used to become untitled extra items
    "item-beyond-item-file": ("ml-100k", "u.data", 3, "2\t1700\t4\t102", "item 1700 is not in u.item (ids 1..3)"),
    # ids <= 0 used to be accepted
    "negative-user": (
        "ml-100k",
        "u.data",
        2,
        "-3\t2\t3\t101",
        "user -3 is out of range; allowed: a positive integer id below 2^63",
    ),
    "zero-item": (
        "ml-100k",
        "u.data",
        1,
        "1\t0\t5\t100",
        "item 0 is out of range; allowed: a positive integer id below 2^63",
    ),
    "negative-user-in-user-file": (
        "ml-100k",
        "u.user",
        3,
        "-3|30|M|other|00000",
        "user -3 is out of range; allowed: a positive integer id below 2^63",
    ),
    # a truncated row: the old message was "u.data:5: expected 4 fields separated by '\t', got 3"
    "truncated-timestamp": ("ml-100k", "u.data", 5, "3\t1\t2", "expected 4 tab-separated fields, got 3"),
    "extra-field": ("ml-100k", "u.data", 2, "1\t2\t3\t101\t7", "expected 4 tab-separated fields, got 5"),
    "user-file-missing-zip": ("ml-100k", "u.user", 2, "2|61|F|doctor", "expected 5 '|'-separated fields, got 4"),
    # users missing from u.user used to become an "unknown" gender group in the fairness tables
    "user-without-user-row": ("ml-100k", "u.data", 4, "950\t3\t1\t103", "user 950 has no row in u.user"),
    # the old non-integer error had no line number
    "non-integer-user": (
        "ml-100k",
        "u.data",
        3,
        "abc\t2\t4\t102",
        "user 'abc' is not an integer; allowed: a positive integer id below 2^63",
    ),
    "non-integer-timestamp": (
        "ml-100k",
        "u.data",
        4,
        "2\t3\t1\t103.5",
        f"timestamp '103.5' is not an integer; allowed: {TIMESTAMPS}",
    ),
    "non-integer-age": (
        "ml-100k",
        "u.user",
        2,
        "2|old|F|doctor|00000",
        "age 'old' is not an integer; allowed: an integer 0..150",
    ),
    "unknown-gender": ("ml-100k", "u.user", 1, "1|24|X|writer|00000", "gender 'X' is not allowed; allowed: M, F"),
    "duplicate-user-row": ("ml-100k", "u.user", 3, "1|30|M|other|00000", "user 1 is listed twice (first on line 1)"),
    "duplicate-item-row": (
        "ml-100k",
        "u.item",
        3,
        _item_row(2, "Gamma (1992)"),
        "item 2 is listed twice (first on line 2)",
    ),
    # ML-1M: the same rules
    "ml1m-rating-letters": (
        "ml-1m",
        "ratings.dat",
        5,
        "3::1::x::104",
        f"rating 'x' is not an integer; allowed: {RATINGS}",
    ),
    "ml1m-rating-zero": ("ml-1m", "ratings.dat", 2, "1::2::0::101", f"rating 0 is out of range; allowed: {RATINGS}"),
    "ml1m-rating-ten": ("ml-1m", "ratings.dat", 4, "2::3::10::103", f"rating 10 is out of range; allowed: {RATINGS}"),
    "ml1m-rating-half-star": (
        "ml-1m",
        "ratings.dat",
        1,
        "1::1::3.5::100",
        f"rating '3.5' is not an integer; allowed: {RATINGS}",
    ),
    "ml1m-timestamp-milliseconds": (
        "ml-1m",
        "ratings.dat",
        3,
        "2::2::4::978300760000",
        f"timestamp 978300760000 is out of range; allowed: {TIMESTAMPS}",
    ),
    "ml1m-timestamp-negative": (
        "ml-1m",
        "ratings.dat",
        5,
        "3::1::2::-1",
        f"timestamp -1 is out of range; allowed: {TIMESTAMPS}",
    ),
    "ml1m-timestamp-1e23": (
        "ml-1m",
        "ratings.dat",
        2,
        f"1::2::3::{10**23}",
        f"timestamp {10**23} is out of range; allowed: {TIMESTAMPS}",
    ),
    "ml1m-item-beyond-movies": (
        "ml-1m",
        "ratings.dat",
        3,
        "2::4000::4::102",
        "item 4000 is not in movies.dat (ids 1..3)",
    ),
    "ml1m-negative-item": (
        "ml-1m",
        "ratings.dat",
        1,
        "1::-1::5::100",
        "item -1 is out of range; allowed: a positive integer id below 2^63",
    ),
    "ml1m-truncated-timestamp": ("ml-1m", "ratings.dat", 5, "3::1::2", "expected 4 '::'-separated fields, got 3"),
    "ml1m-user-without-user-row": ("ml-1m", "ratings.dat", 4, "6041::3::1::103", "user 6041 has no row in users.dat"),
    "ml1m-movies-garbled-id": (
        "ml-1m",
        "movies.dat",
        2,
        "2b::Beta (1991)::Comedy",
        "item '2b' is not an integer; allowed: a positive integer id below 2^63",
    ),
    # int() reads these as numbers: "1_1" as 11, " 1 " as 1, "+3" as 3; ids, ratings, times are ASCII digits only
    "user-with-underscore": (
        "ml-100k",
        "u.data",
        3,
        "1_1\t2\t4\t102",
        "user '1_1' is not an integer; allowed: a positive integer id below 2^63",
    ),
    "item-file-underscore-id": (
        "ml-100k",
        "u.item",
        2,
        _item_row(2, "Beta (1991)").replace("2|", "0_2|", 1),
        "item '0_2' is not an integer; allowed: a positive integer id below 2^63",
    ),
    "item-file-plus-id": (
        "ml-100k",
        "u.item",
        3,
        _item_row(3, "Gamma (1992)").replace("3|", "+3|", 1),
        "item '+3' is not an integer; allowed: a positive integer id below 2^63",
    ),
    "item-file-padded-id": (
        "ml-100k",
        "u.item",
        1,
        _item_row(1, "Alpha (1990)").replace("1|", " 1 |", 1),
        "item ' 1 ' is not an integer; allowed: a positive integer id below 2^63",
    ),
    "timestamp-with-underscore": (
        "ml-100k",
        "u.data",
        2,
        "1\t2\t3\t10_1",
        f"timestamp '10_1' is not an integer; allowed: {TIMESTAMPS}",
    ),
    "age-with-underscore": (
        "ml-100k",
        "u.user",
        1,
        "1|2_4|M|writer|00000",
        "age '2_4' is not an integer; allowed: an integer 0..150",
    ),
    "ml1m-movies-trailing-space-id": (
        "ml-1m",
        "movies.dat",
        2,
        "2 ::Beta (1991)::Comedy",
        "item '2 ' is not an integer; allowed: a positive integer id below 2^63",
    ),
    "ml1m-timestamp-with-underscore": (
        "ml-1m",
        "ratings.dat",
        4,
        "2::3::1::1_03",
        f"timestamp '1_03' is not an integer; allowed: {TIMESTAMPS}",
    ),
    "ml1m-age-not-a-code": (
        "ml-1m",
        "users.dat",
        2,
        "2::F::30::7::00000",
        "age 30 is not a known code; allowed: an ML-1M age code (1, 18, 25, 35, 45, 50, 56)",
    ),
}


@pytest.mark.parametrize(("dataset", "name", "line", "bad_line", "problem"), BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_data_is_refused_with_one_line_naming_file_line_and_value(tmp_path, dataset, name, line, bad_line, problem):
    files = _valid_files(dataset)
    files[name][line - 1] = bad_line
    _write(tmp_path, files)
    with pytest.raises(DatasetError) as error:
        _load(dataset, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert message == f"{tmp_path / name} line {line}: {problem}"


def test_line_numbers_count_blank_lines_and_the_earliest_bad_line_wins(tmp_path):
    files = _valid_files("ml-100k")
    # line 3 is blank; line 5 has a bad timestamp, line 6 a bad user: line 5 is reported though user is column 1
    files["u.data"] = ["1\t1\t5\t100", "1\t2\t3\t101", "", "2\t2\t4\t102", "2\t3\t1\tlate", "oops\t1\t2\t104"]
    _write(tmp_path, files)
    with pytest.raises(DatasetError) as error:
        load_ml100k(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'u.data'} line 5: timestamp 'late' is not an integer; allowed: {TIMESTAMPS}"
    )


def test_a_line_of_bare_tabs_is_a_row_of_empty_fields_not_a_blank_line(tmp_path):
    files = _valid_files("ml-100k")
    files["u.data"][1] = "\t\t\t"
    _write(tmp_path, files)
    with pytest.raises(DatasetError, match=r"u\.data line 2: user '' is not an integer"):
        load_ml100k(tmp_path)


def test_item_file_stays_optional(tmp_path):
    """u.item only supplies titles; without it items are not cross-checked and get placeholder names."""
    files = _valid_files("ml-100k")
    del files["u.item"]
    _write(tmp_path, files)
    assert load_ml100k(tmp_path).item_names == ["item 1", "item 2", "item 3"]


def test_ml1m_layout(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::5::4::10\n1::6::4::11\n1::7::4::12\n")
    (tmp_path / "users.dat").write_text("1::F::25::3::000\n")
    data = load_ml1m(tmp_path)
    assert data.user_attributes["age"].tolist() == ["25-34"] and data.n_items == 3


def test_age_brackets():
    assert [age_bracket(a) for a in (7, 18, 30, 47, 52, 73)] == ["<18", "18-24", "25-34", "45-49", "50-55", "56+"]


def test_real_ml100k_smoke(ml100k_path):
    data = load_ml100k(ml100k_path)
    assert (data.n_users, data.n_items, data.n_interactions) == (943, 1682, 100_000)
    assert "md5 mismatch" not in data.source
    genders = data.user_attributes["gender"].tolist()
    assert (genders.count("M"), genders.count("F")) == (670, 273)
    assert data.item_names[0] == "Toy Story (1995)"
    split = leave_one_out(data, n_negatives=99)
    assert len(split.evaluated_users) == 943
    assert split.n_train().sum() == 100_000 - 2 * 943
    assert np.all(split.eval_negatives >= 0)


def test_one_bad_line_in_a_copy_of_real_ml100k_is_located(ml100k_path, tmp_path):
    """The vectorised happy path must still point at the exact line among 100k (copy kept in tmp_path only)."""
    for name in ("u.data", "u.user", "u.item"):
        shutil.copy(ml100k_path / name, tmp_path / name)
    lines = (tmp_path / "u.data").read_text(encoding="latin-1").split("\n")
    user, item, _, stamp = lines[16].split("\t")
    lines[16] = "\t".join([user, item, "x", stamp])
    (tmp_path / "u.data").write_text("\n".join(lines), encoding="latin-1")
    with pytest.raises(DatasetError) as error:
        load_ml100k(tmp_path)
    assert str(error.value) == f"{tmp_path / 'u.data'} line 17: rating 'x' is not an integer; allowed: {RATINGS}"


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc (a file that fails to read)")
@pytest.mark.parametrize("dataset", ["ml-100k", "ml-1m"])
def test_an_unreadable_file_is_one_line(tmp_path, dataset):
    """A file that exists but cannot be read (permissions, an I/O error) was an OSError traceback. /proc/self/mem
    fails to read at offset 0 with EIO for root too (chmod 000 does not stop root)."""
    files = _valid_files(dataset)
    _write(tmp_path, files)
    name = "u.data" if dataset == "ml-100k" else "users.dat"
    (tmp_path / name).unlink()
    (tmp_path / name).symlink_to("/proc/self/mem")
    with pytest.raises(DatasetError) as error:
        _load(dataset, tmp_path)
    assert str(error.value) == f"{tmp_path / name}: cannot be read: Input/output error"
