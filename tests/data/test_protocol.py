import numpy as np
import pytest
from conftest import v1_dataset

from fedsim.data.interactions import Interactions
from fedsim.data.negatives import draw_user_samples
from fedsim.data.protocol import leave_one_out, split_warnings
from fedsim.data.sharding import shard_users
from fedsim.data.synthetic import generate_synthetic


def _log(rows: list[tuple[int, int, int]], n_users: int, n_items: int) -> Interactions:
    u, i, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    return Interactions(u, i, t, n_users, n_items)


def test_leave_one_out_takes_latest_as_test_and_second_latest_as_validation():
    # Prepare: user 0 has events at t=5 (item 3), t=1 (item 1), t=9 (item 7), t=7 (item 2)
    data = _log([(0, 3, 5), (0, 1, 1), (0, 7, 9), (0, 2, 7), (1, 4, 1), (1, 5, 2)], n_users=2, n_items=30)
    # Execute
    split = leave_one_out(data, n_negatives=5, seed=0)
    # Assert
    assert split.test_item[0] == 7 and split.val_item[0] == 2
    assert split.train_items_of(0).tolist() == [1, 3]  # in time order
    assert split.test_item[1] == -1 and split.train_items_of(1).tolist() == [4, 5]  # < 3 events: not evaluated
    assert split.evaluated_users.tolist() == [0]


def test_ties_in_time_are_broken_by_item_id():
    data = _log([(0, 9, 5), (0, 4, 5), (0, 6, 5), (0, 1, 1)], n_users=1, n_items=30)
    split = leave_one_out(data, n_negatives=5)
    assert (split.val_item[0], split.test_item[0]) == (6, 9)


def test_negatives_are_unseen_distinct_and_fixed_by_seed():
    data = generate_synthetic(v1_dataset(), n_users=30, n_items=200, seed=1)
    a = leave_one_out(data, n_negatives=20, seed=3)
    b = leave_one_out(data, n_negatives=20, seed=3)
    c = leave_one_out(data, n_negatives=20, seed=4)
    assert np.array_equal(a.eval_negatives, b.eval_negatives)
    assert not np.array_equal(a.eval_negatives, c.eval_negatives)
    for u in a.evaluated_users:
        seen = set(data.item[data.user == u].tolist())
        negs = a.eval_negatives[u].tolist()
        assert len(set(negs)) == 20 and not seen & set(negs)


def test_too_few_unseen_items_is_a_clear_error():
    data = _log([(0, i, i) for i in range(8)], n_users=1, n_items=10)
    with pytest.raises(ValueError, match="n_negatives=5"):
        leave_one_out(data, n_negatives=5)


def test_training_samples_exclude_positives_and_do_not_depend_on_anything_but_seed_round_user():
    data = generate_synthetic(v1_dataset(), n_users=20, n_items=100, seed=0)
    split = leave_one_out(data, n_negatives=10)
    s1 = draw_user_samples(split, 3, server_round=2, seed=0, negatives=4, epochs=2, loss="bce")
    s2 = draw_user_samples(split, 3, server_round=2, seed=0, negatives=4, epochs=2, loss="bce")
    positives = set(split.train_items_of(3).tolist())
    assert np.array_equal(s1.first, s2.first)
    assert len(s1) == 2 * 5 * len(positives)
    assert set(s1.first[s1.label == 1].tolist()) == positives
    assert not positives & set(s1.first[s1.label == 0].tolist())
    bpr = draw_user_samples(split, 3, server_round=2, seed=0, negatives=4, epochs=1, loss="bpr")
    assert set(bpr.first.tolist()) == positives and not positives & set(bpr.second.tolist())


def test_synthetic_data_is_deterministic_heavy_tailed_and_grouped():
    a = generate_synthetic(v1_dataset(), n_users=300, n_items=400, seed=5, minority_share=0.3)
    b = generate_synthetic(v1_dataset(), n_users=300, n_items=400, seed=5, minority_share=0.3)
    assert np.array_equal(a.item, b.item) and np.array_equal(a.timestamp, b.timestamp)
    counts = a.interactions_per_user()
    assert counts.min() >= 5 and counts.max() <= 200 and counts.max() > 8 * np.median(counts)
    share = np.mean(a.user_attributes["group"] == "B")
    assert 0.2 < share < 0.4
    assert set(a.user_attributes["activity_tier"]) <= {"light", "medium", "heavy"}
    popularity = np.sort(np.bincount(a.item, minlength=400))[::-1]
    assert popularity[:40].mean() > 4 * popularity[-200:].mean()  # a short head and a long tail


def test_sharding_covers_every_user_once_and_balances_work():
    work = np.array([100, 1, 1, 1, 50, 50, 3, 2, 2, 90])
    shards = shard_users(work, 3)
    flat = np.sort(np.concatenate(shards))
    assert flat.tolist() == list(range(10))
    loads = [work[s].sum() for s in shards]
    assert max(loads) - min(loads) <= 50
    assert [s.tolist() for s in shard_users(work, 10)] == [[u] for u in range(10)]


def test_a_split_that_time_cannot_order_warns():
    """Issue 18 item 11: a file whose timestamps are all equal, or where most users' test item is tie-broken by item
    id (several items share their latest timestamp), is not split by time; the run says so."""
    same_time = _log([(u, i, 7) for u in range(4) for i in range(u, u + 4)], n_users=4, n_items=30)
    (line,) = split_warnings(same_time, leave_one_out(same_time, n_negatives=5))
    assert "same timestamp (7)" in line and "cannot be by time" in line

    # 3 of 4 evaluated users end on two items at the same time (75% > 50%); user 3's last event is alone
    rows = [(u, i, 10 * i) for u in range(4) for i in range(1, 4)] + [(u, 9, 30) for u in range(3)]
    tied = _log(rows, n_users=4, n_items=30)
    (line,) = split_warnings(tied, leave_one_out(tied, n_negatives=5))
    assert line.startswith("3 of 4 evaluated users (75%)") and "ties broken by item id" in line

    # 2 of 4 tied (50%, not more than half): no warning; a repeated event later in time does not make a tie
    half = _log(rows[:-1] + [(3, 1, 30)], n_users=4, n_items=30)
    assert split_warnings(half, leave_one_out(half, n_negatives=5)) == []
    assert split_warnings(*_synthetic_split()) == []


def _synthetic_split():
    data = generate_synthetic(v1_dataset(), n_users=30, n_items=200, seed=1)
    return data, leave_one_out(data, n_negatives=20, seed=3)
