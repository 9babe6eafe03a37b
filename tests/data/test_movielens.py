import numpy as np
import pytest

from fedsim.data.movielens import DatasetError, age_bracket, load_ml1m, load_ml100k
from fedsim.data.protocol import leave_one_out


def _write_ml100k(folder, data_rows, user_rows):
    folder.mkdir(exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data_rows))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|00000\n" for u, a, g, o in user_rows))


def test_reads_a_small_ml100k_layout_with_attributes(tmp_path):
    _write_ml100k(
        tmp_path, [(1, 10, 5, 100), (2, 11, 1, 50), (1, 11, 3, 90)], [(1, 24, "M", "writer"), (2, 61, "F", "doctor")]
    )
    data = load_ml100k(tmp_path)
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 2, 3)
    assert data.user_attributes["gender"].tolist() == ["M", "F"]
    assert data.user_attributes["age"].tolist() == ["18-24", "56+"]
    assert data.user_attributes["occupation"].tolist() == ["writer", "doctor"]


def test_missing_file_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_ml100k(tmp_path)
    message = str(error.value)
    assert "u.data" in message and "grouplens" in message and "\n" not in message


def test_malformed_rows_are_reported_with_file_and_line(tmp_path):
    _write_ml100k(tmp_path, [(1, 10, 5, 100)], [(1, 24, "M", "writer")])
    with (tmp_path / "u.data").open("a") as handle:
        handle.write("1\t12\n")
    with pytest.raises(DatasetError, match=r"u\.data:2: expected 4 fields"):
        load_ml100k(tmp_path)


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
    split = leave_one_out(data, n_negatives=99)
    assert len(split.evaluated_users) == 943
    assert split.n_train().sum() == 100_000 - 2 * 943
    assert np.all(split.eval_negatives >= 0)
