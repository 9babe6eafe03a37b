"""Fairness mitigations (fedsim/mitigation): the math by hand, and the run wiring (off = bit-identical)."""

import json

import numpy as np
import pytest
import torch
from conftest import V1, tiny_config

from fedsim.config import ConfigError
from fedsim.data.negatives import UserSamples
from fedsim.metrics.evaluate import evaluate_scores
from fedsim.mitigation.popularity import popularity_proxy, short_head
from fedsim.mitigation.regularizer import popularity_correlation_penalty
from fedsim.mitigation.rerank import Reranker, calibrated_rerank
from fedsim.models.mf import MatrixFactorization
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.training.local import LocalTrainingParams, train_users

# --- re-ranking ---------------------------------------------------------------------------------------------------


def test_calibrated_rerank_trades_one_head_item_for_a_tail_item_by_hand():
    # 3 head items scored 6,5,4 and 3 tail items scored 3,2,1; the user's history is half long tail.
    # rel = (s-1)/5 = [1, .8, .6, .4, .2, 0]. Step 1: both categories give KL(p‖q̃) = 1.958 (symmetric), so the best
    # item 0 wins. Step 2: a head item keeps KL = 1.958, a tail item makes the list 50/50: KL = 0. Gains with λ = .5:
    # item 1 = .5·.8 − .5·1.958 = −.579, item 3 = .5·.4 − 0 = .2 → item 3.
    scores = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    tail = torch.tensor([[False, False, False, True, True, True]])
    target = torch.tensor([0.5])
    assert calibrated_rerank(scores, tail, target, 2, weight=0.5).tolist() == [[0, 3]]
    assert calibrated_rerank(scores, tail, target, 2, weight=0.0).tolist() == [[0, 1]]  # λ = 0: score order
    # a user whose history is all head items gets no tail item, whatever λ
    assert calibrated_rerank(scores, tail, torch.tensor([0.0]), 3, weight=0.9).tolist() == [[0, 1, 2]]


def test_reranked_top_k_raises_the_long_tail_share():
    popularity = np.array([50, 40, 30, 20, 10, 3, 2, 1, 1, 1], dtype=float)
    tail = ~short_head(popularity, 0.5)  # head: items 0-4
    assert tail.tolist() == [False] * 5 + [True] * 5
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]] * 2)
    plain = torch.topk(scores, 4, dim=1).indices
    reranked = Reranker(tail, {0: 0.5, 1: 0.5}, k=4, pool=8, weight=0.5).top_k(scores, np.array([0, 1]))
    # pool = items 0-7, rel = (7 - i)/7. Item 0 first (both categories' KL equal); then the first tail item 5 (KL 0
    # against 1.958 for a head item); at 3 items both categories give KL .058: relevance picks 1; at 4 a tail item
    # gives KL 0, a head item .140: item 2 gains .5·5/7 − .5·.140 = .287 > item 6's .5·1/7 = .071.
    assert reranked.tolist() == [[0, 5, 1, 2]] * 2
    assert float(np.mean(tail[plain.numpy()])) == 0.0 and float(np.mean(tail[reranked.numpy()])) == 0.25


def test_sampled_candidates_are_reranked_only_within_the_top_n_pool_by_hand():
    # 5 negatives (items 0-4, scored 9 8 7 1 0) and the held-out item 5 last; items 3-5 are long tail and both users'
    # histories are all tail. Pool N = 3 of the C = 6 candidates, as the full ranking restricts to its top-N.
    # User 0's held-out item scores 5: three negatives beat it (plain rank 3 >= N), so it is outside the pool — a miss
    # (rank k = 2), although re-ranking all six would put this only tail item of score > 1 first.
    # User 1's scores 7.5: plain rank 2 < N, the pool is {0, 1, held-out}, the held-out item is its only tail item and
    # λ = .9 puts it first (rank 0).
    tail = np.array([False, False, False, True, True, True])
    scores = torch.tensor([[9.0, 8.0, 7.0, 1.0, 0.0, 5.0], [9.0, 8.0, 7.0, 1.0, 0.0, 7.5]])
    candidates = torch.tensor([[0, 1, 2, 3, 4, 5]] * 2)
    users = np.array([0, 1])
    reranker = Reranker(tail, {0: 1.0, 1: 1.0}, k=2, pool=3, weight=0.9)
    base = torch.tensor([3, 2])
    assert reranker.rank_in_sampled_pool(scores, candidates, base, users).tolist() == [2, 0]
    assert reranker.rank_of_last(scores, candidates, users).tolist() == [0, 0]  # all C re-ranked: user 0 a hit
    wide = Reranker(tail, {0: 1.0, 1: 1.0}, k=2, pool=6, weight=0.9)  # N >= C: every candidate is in the pool
    assert wide.rank_in_sampled_pool(scores, candidates, base, users).tolist() == [0, 0]


def test_rerank_with_zero_weight_reproduces_the_plain_evaluation():
    """The re-ranked evaluation path (candidate lists, pool, held-out item last) gives exactly the plain metrics
    when λ = 0 — the plumbing itself changes nothing."""
    rt = get_runtime(tiny_config())
    users = rt.split.evaluated_users
    scores = torch.randn(len(users), rt.split.n_items, generator=torch.Generator().manual_seed(3))
    tail = np.arange(rt.split.n_items) % 3 == 0
    reranker = Reranker(tail, {int(u): 0.4 for u in users}, k=10, pool=30, weight=0.0)
    plain = evaluate_scores(scores, users, rt.split, 10)
    reranked = evaluate_scores(scores, users, rt.split, 10, reranker)
    for name, values in plain.values.items():
        assert np.array_equal(values, reranked.values[name]), name
    assert np.array_equal(plain.top_k, reranked.top_k)
    pushed = evaluate_scores(scores, users, rt.split, 10, Reranker(tail, reranker.target_tail, 10, 30, 0.9))
    assert np.mean(tail[pushed.top_k]) > np.mean(tail[plain.top_k])


# --- the regulariser ----------------------------------------------------------------------------------------------


def test_penalty_is_the_squared_pearson_correlation_of_the_selected_pairs():
    gen = torch.Generator().manual_seed(0)
    scores, popularity = torch.randn(3, 8, generator=gen), torch.randn(3, 8, generator=gen)
    weights = torch.ones(3, 8)
    weights[1, 5:] = 0
    weights[2, 1:] = 0  # one pair only: undefined, 0
    got = popularity_correlation_penalty(scores, popularity, weights)
    r0 = np.corrcoef(scores[0].numpy(), popularity[0].numpy())[0, 1]
    r1 = np.corrcoef(scores[1, :5].numpy(), popularity[1, :5].numpy())[0, 1]
    assert got.tolist() == pytest.approx([r0**2, r1**2, 0.0], abs=1e-6)


def test_regularised_local_step_matches_a_hand_written_objective():
    """One SGD step of one user on one minibatch: the embedding moves by −lr·∇(mean BCE + λ·corr(score, pop)²) over
    its positives, the correlation taken with torch.corrcoef and popularity = the item biases (MF, zero user)."""
    model = MatrixFactorization(n_items=12, dim=4)
    shared = model.init_shared(seed=1)
    shared["item_bias"] = np.linspace(-1, 1, 12, dtype=np.float32).reshape(12, 1)
    private = model.init_private(np.array([0]), seed=1)
    first = np.array([0, 3, 5, 7, 9, 1, 2])
    label = np.array([1, 1, 1, 1, 1, 0, 0], dtype=np.float32)
    sample = UserSamples(0, first, first.copy(), label)
    lam, lr = 2.0, 0.1
    params = LocalTrainingParams(
        batch_size=64, lr=lr, optimizer="sgd", loss="bce", l2=0.0, max_rows_per_chunk=4096, exposure_weight=lam
    )
    got = train_users(model, shared, private, [sample], params).private.numpy()

    assert popularity_proxy(model, shared) == pytest.approx(shared["item_bias"].ravel())
    user = torch.tensor(private, dtype=torch.float32, requires_grad=True)
    q = torch.tensor(shared["item_embedding"])[first]
    b = torch.tensor(shared["item_bias"]).ravel()[first]
    score = (user @ q.T).ravel() + b
    bce = torch.nn.functional.binary_cross_entropy_with_logits(score, torch.tensor(label))
    pos = torch.tensor(label) > 0
    corr = torch.corrcoef(torch.stack([score[pos], b[pos]]))[0, 1]
    (bce + lam * corr**2).backward()
    expected = (user - lr * user.grad).detach().numpy()
    assert got == pytest.approx(expected, abs=1e-5)
    plain = train_users(model, shared, private, [sample], LocalTrainingParams(**{**vars(params), "exposure_weight": 0}))
    assert not np.allclose(plain.private.numpy(), got)  # the penalty did move it


# --- in a run -----------------------------------------------------------------------------------------------------


def _final(summary):
    return {k: v for k, v in summary["final"].items() if k.startswith(("test/", "val/", "items/"))}


def test_off_is_bit_identical_and_each_mitigation_changes_the_lists(tmp_path):
    base = run(tiny_config(V1), tmp_path / "base")  # the long-tail thresholds were set on the first generator's data
    for name, weight in (("rerank", "rerank_weight"), ("exposure_regularizer", "regularizer_weight")):
        zero = run(tiny_config(V1, f"mitigation={name}", f"mitigation.{weight}=0"), tmp_path / f"{name}0")
        assert _final(zero) == _final(base), name  # λ = 0 runs the mitigation's code path and changes nothing
        on = run(tiny_config(V1, f"mitigation={name}"), tmp_path / name)
        assert on["final"]["items/long_tail_share"] > base["final"]["items/long_tail_share"], name
        assert name in on["threat_model"]["fairness_mitigation"]
        assert on["mitigation_in_force"] == {name: 1}
        assert ("re-ranked on device" in on["protocol"]["short"]) == (name == "rerank")  # the metrics' protocol
        assert f"Fairness mitigation in force: {name} from round 1" in (tmp_path / name / "report.md").read_text()
    assert "fairness_mitigation" not in base["threat_model"] and "mitigation_in_force" not in base
    assert "re-ranked" not in base["protocol"]["short"]
    assert "Fairness mitigation" not in (tmp_path / "base" / "report.md").read_text()  # off: report as before
    assert "mitigation" not in json.loads((tmp_path / "base" / "loop_state.json").read_text())


# the default rule utility_vs_itempop, turned into a long-tail gate that rolls back
LONG_TAIL_GATE = [
    "audit.rules.utility_vs_itempop.metric=items/long_tail_share",
    "audit.rules.utility_vs_itempop.min=0.5",
    "audit.rules.utility_vs_itempop.action=rollback",
    "audit.rules.utility_vs_itempop.then=continue",
]


def test_the_audit_can_switch_on_a_mitigation_as_remediation(tmp_path):
    cfg = tiny_config("federation.rounds=4", *LONG_TAIL_GATE, "audit.rules.utility_vs_itempop.remediation=rerank")
    summary = run(cfg, tmp_path / "run")
    actions = json.loads((tmp_path / "run" / "audit.json").read_text())["actions"]
    assert any(a["action"] == "rollback" and a["remediation"] == "rerank" for a in actions)
    first = next(a for a in actions if a["action"] == "rollback")
    switched = first["round"] + 1  # in force from the round after the rollback that switched it on
    assert json.loads((tmp_path / "run" / "loop_state.json").read_text())["mitigation"] == {"rerank": switched}
    assert summary["mitigation_in_force"] == {"rerank": switched}
    assert "rerank" in summary["threat_model"]["fairness_mitigation"]
    # the HR/NDCG/Recall of the later rounds are on re-ranked lists: the protocol says so, and from when
    assert "re-ranked on device (calibrated popularity, λ=0.9, top-100" in summary["protocol"]["short"]
    assert summary["protocol"]["short"].endswith(f"from round {switched}")
    assert f"Fairness mitigation in force: rerank from round {switched}" in (tmp_path / "run" / "report.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    before = next(r for r in rows if r["round"] == first["round"])["items/long_tail_share"]
    after = next(r for r in rows if r["round"] > first["round"] and "items/long_tail_share" in r)
    text = (tmp_path / "run" / "postmortem.md").read_text()
    assert f"`rerank`: switched on — from round {switched} every device re-ranks its top-K" in text
    later = [a for a in actions if a["action"] == "rollback" and a["round"] > first["round"]]
    assert text.count("already in force (from round") == len(later)  # a second rollback changes nothing
    assert f"went from {before:.3f} to {after['items/long_tail_share']:.3f} (round {after['round']})" in text


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["mitigation=exposure_regularizer", "privacy=record", "privacy.noise_multiplier=1"], "privacy=record"),
        (["mitigation=rerank", "mode=centralized"], "mode=federated"),
        (["mitigation=rerank", "mitigation.rerank_pool=5"], "mitigation.rerank_pool"),
        (["mitigation.name=fair"], "mitigation.name"),
        ([*LONG_TAIL_GATE, "audit.rules.utility_vs_itempop.remediation=rerank", "mode=centralized"], "mode=federated"),
        (["audit.rules.utility_vs_itempop.remediation=rerank"], "action=rollback and then=continue"),  # a warn rule
        (["audit.rules.epsilon.remediation=forget"], "audit.rules.epsilon.remediation"),
    ],
)
def test_impossible_mitigations_are_refused_in_one_line(overrides, key):
    with pytest.raises(ConfigError) as error:
        tiny_config(*overrides)
    assert key in str(error.value) and "\n" not in str(error.value)
