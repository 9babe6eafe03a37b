"""``dual`` (PFedRec) and ``ditto``: personal parts live on the device across rounds, change the ranking, and never
change what is uploaded beyond what private_embedding would upload from the same start."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedsim.client.app import PERSONAL_KEY, make_client_app
from fedsim.client.device import evaluate_shard, train_shard
from fedsim.config import ConfigError
from fedsim.data.negatives import UserSamples
from fedsim.personalization import build_personalization
from fedsim.personalization.ditto import personal_sgd_
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.simulation import node_context
from fedsim.training.local import train_users


def _shard(cfg):
    rt = get_runtime(cfg)
    users = rt.shards[0][rt.split.n_train()[rt.shards[0]] > 0][:6]
    return rt, users, rt.model.init_private(users, cfg.seed), rt.model.init_shared(cfg.seed)


def _same_upload(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _mf_scores(user: np.ndarray, item_matrix: np.ndarray, dim: int) -> np.ndarray:
    """MF by hand: <p_u, q_i> + b_i, item_matrix = [q | b]."""
    return user @ item_matrix[:, :dim].T + item_matrix[:, dim]


def test_dual_uploads_only_the_shared_update_and_keeps_its_own_fine_tuning():
    dual, reference = tiny_config("personalization=dual"), tiny_config()
    rt, users, private, shared = _shard(dual)
    rt_ref = get_runtime(reference)
    method = build_personalization(dual.personalization)
    width = rt.model.n_items * rt.model.item_width
    personal_a = np.zeros((len(users), width), dtype=np.float32)
    personal_b = np.random.default_rng(3).normal(size=(len(users), width)).astype(np.float32)
    up_a, _, private_a, _ = train_shard(rt, users, private, shared, 2, {"server-round": 2}, personal_a)
    up_b, _, private_b, _ = train_shard(rt, users, private, shared, 2, {"server-round": 2}, personal_b)
    # whatever the device kept, the upload and the new embedding are the same: nothing personal is in them
    assert _same_upload(up_a, up_b) and np.array_equal(private_a, private_b)
    assert np.array_equal(personal_a, personal_b)  # δ is replaced each round, not accumulated
    # step 1 (score function, items frozen) then private_embedding's round from that start: the same upload
    start = method.train_start(rt, users, private, shared, 2)
    assert not np.array_equal(start, private)
    up_ref, _, private_ref, _ = train_shard(rt_ref, users, start, shared, 2, {"server-round": 2})
    assert _same_upload(up_a, up_ref) and np.array_equal(private_a, private_ref)
    # the kept offset of one user is its own change to the rows it trained, zero elsewhere (trained alone here)
    row = 2
    alone = train_users(rt.model, shared, start[row : row + 1], [rt.samples(int(users[row]), 2)], rt.training_params())
    expected = np.zeros((rt.model.n_items, rt.model.item_width), dtype=np.float32)
    chunk = alone.chunks[0]
    valid = chunk.items[0] >= 0
    expected[chunk.items[0][valid].numpy()] = chunk.item_delta[0][valid].numpy()
    np.testing.assert_allclose(personal_a[row].reshape(expected.shape), expected, atol=1e-6)
    # ranking: the score function against the device's own table w + δ (MF by hand), not the shared table
    scores = method.scores(rt, users, private_a, shared, 3, personal_a).numpy()
    matrix = rt.model.pack_items(shared).numpy()
    by_hand = np.stack([_mf_scores(private_a[r], matrix + personal_a[r].reshape(matrix.shape), 8) for r in range(6)])
    np.testing.assert_allclose(scores, by_hand, rtol=1e-5, atol=1e-5)
    assert not np.allclose(scores, _mf_scores(private_a, matrix, 8), atol=1e-4)


def test_ditto_global_update_is_private_embeddings_and_lambda_to_infinity_gives_the_shared_ranking():
    reference = tiny_config()
    rt, users, private, shared = _shard(reference)
    up_ref, metrics_ref, private_ref, _ = train_shard(rt, users, private, shared, 1, {"server-round": 1})
    scores = {}
    for lam in ("0.1", "1e12"):
        cfg = tiny_config("personalization=ditto", f"personalization.ditto_lambda={lam}")
        rt_d, method = get_runtime(cfg), build_personalization(cfg.personalization)
        personal = method.init_state(rt_d, users)
        before = personal.copy()
        up, metrics, new_private, _ = train_shard(rt_d, users, private, shared, 1, {"server-round": 1}, personal)
        assert _same_upload(up, up_ref) and metrics == metrics_ref and np.array_equal(new_private, private_ref)
        assert not np.array_equal(personal, before)  # the personal model trained
        scores[lam] = method.scores(rt_d, users, new_private, shared, 2, personal)
    plain = rt.model.score_all(torch.as_tensor(private_ref), shared)
    torch.testing.assert_close(scores["1e12"], plain, rtol=1e-4, atol=1e-4)  # λ → ∞: the personal model is w
    assert torch.equal(scores["1e12"].topk(10).indices, plain.topk(10).indices)
    assert not torch.equal(scores["0.1"].topk(10).indices, plain.topk(10).indices)


def test_personal_sgd_takes_the_gradient_step_then_the_exact_proximal_step():
    cfg = tiny_config("client.l2=0")
    rt = get_runtime(cfg)
    dim, lr, lam = 8, 0.3, 2.0
    rng = np.random.default_rng(0)
    items = torch.as_tensor(rng.normal(size=(rt.model.n_items, dim + 1)), dtype=torch.float32)
    user0 = rng.normal(size=dim).astype(np.float32)
    anchor = rng.normal(size=dim).astype(np.float32)
    offsets = torch.zeros(1, rt.model.n_items, dim + 1)
    offsets[0, 7] = 0.5
    sample = UserSamples(user=0, first=np.array([7, 11]), second=np.array([7, 11]), label=np.array([1.0, 0.0]))
    user = torch.as_tensor(user0[None]).clone()
    personal_sgd_(rt.model, items, user, torch.as_tensor(anchor[None]), offsets, [sample], lr, lam, 64, "bce", 0.0)
    # by hand: s_i = <p, q_i + δ_i> + b_i + δb_i; dL/ds_i = (σ(s_i) − y_i) / 2; then shrink by 1/(1 + lr·λ)
    q = items.numpy() + np.pad(np.zeros((1, dim + 1)), ((7, rt.model.n_items - 8), (0, 0))) + 0.0
    q[7] += 0.5
    s = np.array([user0 @ q[i, :dim] + q[i, dim] for i in (7, 11)])
    g = (1 / (1 + np.exp(-s)) - np.array([1.0, 0.0])) / 2
    shrink = 1 / (1 + lr * lam)
    expected_offsets = np.zeros((rt.model.n_items, dim + 1))
    expected_offsets[7] = 0.5
    for gi, i in zip(g, (7, 11), strict=True):
        expected_offsets[i, :dim] -= lr * gi * user0
        expected_offsets[i, dim] -= lr * gi
    expected_offsets *= shrink
    expected_user = anchor + (user0 - lr * (g[0] * q[7, :dim] + g[1] * q[11, :dim]) - anchor) * shrink
    np.testing.assert_allclose(offsets[0].numpy(), expected_offsets, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(user[0].numpy(), expected_user, rtol=1e-5, atol=1e-6)


def _two_rounds(cfg) -> tuple[list[np.ndarray], list[np.ndarray], Context]:
    """Two train messages (rounds 1 and 2) to node 0, each followed by an evaluation; returns the kept personal
    state after each round and the evaluation replies' per-user test hits of the personal and shared rankings."""
    rt = get_runtime(cfg)
    app, context = make_client_app(cfg), node_context(0, rt.n_nodes)
    arrays = ArrayRecord({k: Array(v) for k, v in rt.model.init_shared(0).items()})
    states, replies = [], []
    for server_round in (1, 2):
        config = ConfigRecord({"server-round": server_round, "user-ids": rt.shards[0].tolist()})
        app(Message(RecordDict({"arrays": arrays, "config": config}), 7, MessageType.TRAIN), context)
        states.append(np.array(context.state[PERSONAL_KEY]["personal"].numpy()))
        evaluate = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
        replies.append(app(Message(evaluate, 7, MessageType.EVALUATE), context).content["metrics"])
    return states, replies, context


@pytest.mark.parametrize("name", ["dual", "ditto"])
def test_personal_state_persists_on_the_node_across_rounds(flower_identity, name):
    cfg = tiny_config(f"personalization={name}")
    states, replies, context = _two_rounds(cfg)
    assert not np.array_equal(states[0], states[1]) and np.abs(states[1]).sum() > 0
    # the node ranks with it: the evaluation reply carries metrics only, and the shared model's hits beside them
    reply = replies[1]
    assert "personal" not in reply and len(reply["shared-users"]) == len(reply["user-ids"])
    # the state evaluated is the kept one: ranking from it directly gives the same hits
    rt = get_runtime(cfg)
    users = rt.shards[0]
    private = context.state["fedsim-private"]["user-embedding"].numpy()
    metrics, _ = evaluate_shard(rt, users, private, rt.model.init_shared(0), 2, states[1])
    assert np.array_equal(metrics.values["test_hr"], np.asarray(reply["test_hr"]))


@pytest.mark.parametrize("name", ["dual", "ditto"])
def test_a_run_reports_lift_per_group_and_is_deterministic(tmp_path, name):
    cfg = tiny_config(f"personalization={name}", "dataset.n_users=80")
    first = run(cfg, tmp_path / "a")["final"]
    second = run(cfg, tmp_path / "b")["final"]
    assert {k: v for k, v in first.items() if not k.startswith("time/")} == {
        k: v for k, v in second.items() if not k.startswith("time/")
    }
    # every evaluated user reports both rankings, so the lift is exactly the difference of the two means
    assert first["lift/test_hr@10"] == pytest.approx(first["test/hr@10"] - first["shared/test_hr@10"], abs=1e-12)
    users = {r["user"]: r for r in _per_user(tmp_path / "a")}
    groups = {u["gender"] for u in users.values()}
    for group in groups:
        key = f"lift/gender/{group}/test_hr@10"
        if key in first:
            assert first[f"{key}_ci_low"] <= first[key] <= first[f"{key}_ci_high"]
            members = [float(u["test_hr"]) for u in users.values() if u["gender"] == group]
            assert first[key] == pytest.approx(np.mean(members) - first[f"shared/gender/{group}/test_hr@10"])
    assert any(k.startswith("lift/gender/") for k in first)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["personalization"].startswith(name) and "never uploaded" in summary["personalization"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert f"Personalization: {name}" in report and f"personalisation lift {first['lift/test_hr@10']:.4f}" in report


def _per_user(run_dir):
    import csv

    with (run_dir / "per_user.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_dual_and_ditto_settings_are_validated_and_reach_the_method():
    with pytest.raises(ConfigError, match="personalization.ditto_lambda"):
        tiny_config("personalization=ditto", "personalization.ditto_lambda=-1")
    with pytest.raises(ConfigError, match="personalization.personal_epochs"):
        tiny_config("personalization=ditto", "personalization.personal_epochs=0")
    with pytest.raises(ConfigError, match="personalization.score_epochs"):
        tiny_config("personalization=dual", "personalization.score_epochs=-1")
    for name in ("dual", "ditto"):
        with pytest.raises(ConfigError, match="model=mf"):
            tiny_config(f"personalization={name}", "model=neumf")
        with pytest.raises(ConfigError, match="resume_from"):
            tiny_config(f"personalization={name}", "resume_from=/tmp/nowhere")
    a = build_personalization(tiny_config("personalization=ditto", "personalization.ditto_lambda=0.5").personalization)
    b = build_personalization(tiny_config("personalization=ditto").personalization)
    assert a.cfg.ditto_lambda == 0.5 and b.cfg.ditto_lambda == 0.1 and "λ = 0.5" in a.describe()
    dual = build_personalization(tiny_config("personalization=dual", "personalization.score_epochs=0").personalization)
    assert dual.cfg.score_epochs == 0


def test_dual_offset_scale_amplifies_only_the_ranking():
    rt, users, private, shared = _shard(tiny_config("personalization=dual"))
    personal = np.random.default_rng(5).normal(0, 0.05, (len(users), rt.model.n_items * rt.model.item_width))
    personal = personal.astype(np.float32)
    matrix = rt.model.pack_items(shared).numpy()
    for scale in (0.0, 10.0):
        cfg = tiny_config("personalization=dual", f"personalization.offset_scale={scale}")
        scores = build_personalization(cfg.personalization).scores(rt, users, private, shared, 1, personal).numpy()
        rows = [_mf_scores(private[r], matrix + scale * personal[r].reshape(matrix.shape), 8) for r in range(6)]
        np.testing.assert_allclose(scores, np.stack(rows), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="personalization.offset_scale"):
        tiny_config("personalization=dual", "personalization.offset_scale=-1")
