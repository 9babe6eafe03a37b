import numpy as np
import pytest
import torch

from fedsim.data.interactions import Interactions
from fedsim.data.protocol import leave_one_out
from fedsim.metrics.baselines import popularity_scores
from fedsim.metrics.evaluate import evaluate_scores, metric_tags
from fedsim.metrics.ranking import hit_at_k, ndcg_at_k, rank_among


def test_rank_counts_ties_against_the_target():
    target = torch.tensor([0.5, 0.5, 0.9])
    candidates = torch.tensor([[0.1, 0.6, 0.5], [0.1, 0.2, 0.3], [0.9, 0.9, 0.1]])
    assert rank_among(target, candidates).tolist() == [2, 0, 2]


def test_hit_and_ndcg_on_hand_computed_ranks():
    ranks = np.array([0, 1, 9, 10])
    assert hit_at_k(ranks, 10).tolist() == [1, 1, 1, 0]
    assert ndcg_at_k(ranks, 10) == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0])


def _one_user_split():
    # user 0: train items 0, 1; validation 2; test 3 (by time); 5 items in all
    rows = [(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4)]
    u, i, t = (np.array(c) for c in zip(*rows, strict=True))
    return leave_one_out(Interactions(u, i, t, 1, 6), n_negatives=2, seed=0)


def test_full_ranking_excludes_training_items_and_the_validation_item_for_test():
    split = _one_user_split()
    # scores: training items score highest; then the validation item; the test item is next
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 1.0, 0.0]])
    m = evaluate_scores(scores, np.array([0]), split, k=1)
    assert m.values["test_recall_full"].tolist() == [1.0]  # train items and val item are not competitors
    assert m.values["val_recall_full"].tolist() == [1.0]
    assert m.top_k.tolist() == [[2]]  # recommendations never repeat training items


def test_sampled_metrics_rank_against_the_fixed_negatives():
    split = _one_user_split()
    negatives = split.eval_negatives[0]
    scores = torch.zeros(1, 6)
    scores[0, negatives[0]] = 5.0  # one negative beats the test item
    scores[0, 3] = 4.0
    m = evaluate_scores(scores, np.array([0]), split, k=1)
    assert m.values["test_hr"].tolist() == [0.0]
    m2 = evaluate_scores(scores, np.array([0]), split, k=2)
    assert m2.values["test_hr"].tolist() == [1.0]
    assert m2.values["test_ndcg"] == pytest.approx([1 / np.log2(3)])


def test_constant_scores_get_zero_not_one():
    split = _one_user_split()
    m = evaluate_scores(torch.zeros(1, 6), np.array([0]), split, k=2)  # 2 tied negatives: rank 2
    assert m.values["test_hr"].tolist() == [0.0]


def test_popularity_scores_rank_by_training_counts():
    split = _one_user_split()
    scores = popularity_scores(split, np.array([0]), np.array([1, 3, 0, 3, 0, 2]))
    # counts 3, 3 tie: the lower item id ranks first; then item 5 (2), item 0 (1), items 2 and 4 (0)
    assert torch.argsort(scores[0], descending=True, stable=True).tolist() == [1, 3, 5, 0, 2, 4]


def test_metric_tags_name_sampled_and_full_metrics():
    tags = metric_tags({"val_hr": 0.5, "test_ndcg_full": 0.1}, 10)
    assert tags == {"val/hr@10": 0.5, "test/ndcg@10_full": 0.1}
