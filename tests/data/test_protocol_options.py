"""Issue 20 item 8: the two protocol choices that move every ML-100K number — how timestamp ties pick the test item
(``dataset.tie_break``) and whether training negatives skip the held-out items (``client.negatives_exclude_held_out``)
— are explicit options, and ``+experiment=pfedrec_protocol`` sets both as PFedRec's public code does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from test_cli_hygiene import _cli
from test_cli_inputs import _one_line

from fedsim.cli import compose
from fedsim.config import ConfigError, DatasetConfig
from fedsim.data import load_split
from fedsim.data.interactions import Interactions
from fedsim.data.negatives import draw_user_samples
from fedsim.data.protocol import leave_one_out, split_warnings
from fedsim.metrics.baselines import item_pop
from fedsim.runtime import get_runtime
from fedsim.session import describe_protocol

# user 0, in file order: three items at its latest second (4 first, then 9, then 6), one earlier event
TIED = [(0, 4, 5), (0, 9, 5), (0, 6, 5), (0, 1, 1)]


def _log(rows: list[tuple[int, int, int]], n_users: int = 1, n_items: int = 30) -> Interactions:
    u, i, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    return Interactions(u, i, t, n_users, n_items)


def test_the_tie_break_picks_the_test_item_of_a_tied_user():
    data = _log(TIED)
    by_id = leave_one_out(data, n_negatives=5)  # the default: the highest item id is the latest
    assert (by_id.test_item[0], by_id.val_item[0]) == (9, 6)
    by_file = leave_one_out(data, n_negatives=5, tie_break="file_order")  # pandas rank(method="first", desc)
    assert (by_file.test_item[0], by_file.val_item[0]) == (4, 9)
    assert by_file.train_items_of(0).tolist() == [1, 6]
    # an event alone at its time is ordered by time whatever the tie-break
    alone = _log([(0, 7, 9), *TIED])
    assert leave_one_out(alone, n_negatives=5, tie_break="file_order").test_item[0] == 7


def test_the_tie_break_reads_the_order_of_the_data_file(tmp_path):
    """Through the MovieLens reader and ``load_split``, as a run loads it: file order survives re-indexing."""
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "u.user").write_text("".join(f"{u}|30|M|writer|00000\n" for u in (1, 2)))
    rows = [(1, 14, 50), (1, 19, 50), (1, 16, 50), (1, 11, 10), (1, 18, 5), (1, 20, 5)]
    rows += [(2, i, 10 * i) for i in range(11, 17)]
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in rows))
    raw = {}
    for tie_break in ("item_id", "file_order"):
        cfg = DatasetConfig(name="ml-100k", path=str(folder), tie_break=tie_break)
        data, split = load_split(cfg, seed=0, n_negatives=3)
        raw[tie_break] = (int(np.unique(np.array(rows)[:, 1])[split.test_item[0]]), int(split.test_item[1]))
    assert raw["item_id"][0] == 19 and raw["file_order"][0] == 14  # MovieLens ids of user 1's test item
    assert raw["item_id"][1] == raw["file_order"][1]  # user 2 has no tie: the same test item


def test_the_split_warning_names_the_tie_break():
    rows = [(u, i, 10 * i) for u in range(4) for i in range(1, 4)] + [(u, 9, 30) for u in range(3)]
    data = _log(rows, n_users=4)
    (line,) = split_warnings(data, leave_one_out(data, n_negatives=5, tie_break="file_order"), "file_order")
    assert "chosen among those by file order" in line and "dataset.tie_break=file_order" in line


def test_training_negatives_exclude_the_held_out_items_only_when_asked():
    # user 0: 3 training items, validation and test items; a 12-item catalogue, so 200 draws hit every unseen item
    data = _log([(0, i, t) for t, i in enumerate([2, 5, 7, 3, 8])], n_items=12)
    split = leave_one_out(data, n_negatives=2)
    held = {int(split.val_item[0]), int(split.test_item[0])}
    assert held == {3, 8}
    for loss in ("bce", "bpr"):
        kwargs = dict(user=0, server_round=1, seed=0, negatives=40, epochs=2, loss=loss)
        default = draw_user_samples(split, **kwargs)
        leak = draw_user_samples(split, **kwargs, exclude_held_out=True)
        negatives = (lambda s: s.first[s.label == 0]) if loss == "bce" else (lambda s: s.second)
        assert held <= set(negatives(default).tolist())  # today: a device does not know its future
        assert not held & set(negatives(leak).tolist())
        assert not {2, 5, 7} & set(negatives(leak).tolist())
        assert set(negatives(leak).tolist()) == set(range(12)) - {2, 5, 7} - held
    dense = draw_user_samples(split, 0, 1, 0, 4, 1, "bce", dense=True, exclude_held_out=True)
    assert not held & set(dense.first[dense.label == 0].tolist())
    fakes = draw_user_samples(split, 0, 1, 0, 4, 3, "bce", fake_ratio=2.0, exclude_held_out=True)
    assert not held & set(fakes.first[fakes.label == 1].tolist())  # a pseudo-positive is not a held-out item


def test_a_run_honours_the_negatives_option():
    def held_out_negatives(rt, user: int) -> set[int]:
        s = rt.samples(user, server_round=1)
        return set(rt.split.held_out_of(user).tolist()) & set(s.first[s.label == 0].tolist())

    leak = get_runtime(tiny_config("client.negatives_exclude_held_out=true", "client.negatives=30"))
    base = get_runtime(tiny_config("client.negatives=30"))
    users = leak.split.evaluated_users[:10].tolist()
    assert not any(held_out_negatives(leak, u) for u in users)
    assert any(held_out_negatives(base, u) for u in users)  # without the option, held-out items are negatives


def test_the_preset_composes_validates_and_states_its_protocol():
    cfg = compose(["+experiment=pfedrec_protocol"])
    assert cfg.name == "pfedrec_protocol"
    assert cfg.dataset.name == "ml-100k" and cfg.dataset.tie_break == "file_order"
    assert cfg.client.negatives_exclude_held_out is True
    assert cfg.personalization.name == "dual" and cfg.federation.rounds == 100
    assert cfg.federation.participation == 1.0 and cfg.attack.holdout_share == 0.0  # every user trains every round
    protocol = describe_protocol(cfg, 943)
    assert "ties by file order" in protocol["short"] and "exclude the held-out items" in protocol["short"]
    assert "dataset.tie_break=file_order" in protocol["split"]
    assert "validation and test items excluded" in protocol["training_negatives"]
    default = describe_protocol(compose([]), 943)
    assert "ties by item id" in default["short"] and "exclude" not in default["short"]
    assert "validation and test items included" in default["training_negatives"]
    assert "held out" not in default["short"] and default["users"] == "every user"


def test_the_protocol_line_names_the_users_the_membership_attack_holds_out():
    """With the attack's hold-out, 94 of ML-100K's 943 users neither train nor are scored: the console says so, so a
    frontier run with the attack on cannot be mistaken for one over every user (issue 19 item 4)."""
    protocol = describe_protocol(compose([]), 943, held_out=94)
    assert "94 users held out (membership attack)" in protocol["short"]
    assert "94 users held out of training and scoring" in protocol["users"] and "attack=off" in protocol["users"]


def test_a_bad_tie_break_is_refused_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^dataset.tie_break='newest' is not allowed; choose one of: item_id, "):
        compose(["dataset.tie_break=newest"])
    line = _one_line(_cli("dataset.tie_break=latest", cwd=tmp_path), 2)
    assert line == "fedsim: error: dataset.tie_break='latest' is not allowed; choose one of: item_id, file_order"
    assert not (tmp_path / "results").exists()


def test_ml100k_itempop_under_each_tie_break(ml100k_path: Path):
    """The figure the docs quote: 415 of 943 users tie at their latest timestamp; ItemPop's test HR@10 is 0.317 with
    the default tie-break and 0.416 with file order."""
    hr = {}
    for tie_break in ("item_id", "file_order"):
        data, split = load_split(DatasetConfig(name="ml-100k", path=str(ml100k_path), tie_break=tie_break), 0)
        hr[tie_break] = float(item_pop(split).values["test_hr"].mean())
    last = np.full(data.n_users, -1)
    np.maximum.at(last, data.user, data.timestamp)
    tied = np.bincount(data.user[data.timestamp == last[data.user]], minlength=data.n_users) > 1
    assert int(tied.sum()) == 415
    assert hr["item_id"] == pytest.approx(0.3171, abs=5e-5) and hr["file_order"] == pytest.approx(0.4157, abs=5e-5)
