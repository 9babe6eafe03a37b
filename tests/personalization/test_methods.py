"""Personalization methods (fedsim/personalization): the reference is today's behaviour, the others change only what
stays on the device — never what is uploaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedsim.client.app import STATE_KEY, make_client_app
from fedsim.client.device import evaluate_shard, train_shard
from fedsim.config import ConfigError, PersonalizationConfig
from fedsim.personalization import build_personalization
from fedsim.registry import names
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.simulation import node_context
from fedsim.training.local import train_users

METHODS = ("private_embedding", "local_finetune", "reconstruction", "dual", "ditto")


def _history(run_dir):
    """Every round's metrics but wall-clock timings."""
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rounds]


def _shard(cfg):
    """A trained-looking state: shard 0's users, a shared model after one round, their embeddings after it."""
    rt = get_runtime(cfg)
    users = rt.shards[0][rt.split.n_train()[rt.shards[0]] > 0][:6]
    shared = rt.model.init_shared(cfg.seed)
    private = rt.model.init_private(users, cfg.seed)
    return rt, users, private, shared


@pytest.mark.parametrize("name", METHODS)
def test_every_method_composes_from_conf_and_says_what_it_releases(name):
    cfg = tiny_config(f"personalization={name}")
    method = build_personalization(cfg.personalization)
    assert cfg.personalization.name == name == method.name
    assert "released: only the shared update" in method.describe()
    assert set(names("personalization")) == set(METHODS)


def test_bad_personalization_settings_are_refused():
    with pytest.raises(ConfigError, match="personalization.name"):
        tiny_config("personalization.name=fedavg_plus")
    with pytest.raises(ConfigError, match="personalization.finetune_steps"):
        tiny_config("personalization=local_finetune", "personalization.finetune_steps=0")
    with pytest.raises(ConfigError, match="model=mf"):
        tiny_config("personalization=local_finetune", "model=neumf")


def test_private_embedding_is_todays_behaviour_bit_for_bit(tmp_path):
    # the seam is the identity on the device: training starts from the kept embedding, ranking is score_all
    cfg = tiny_config()
    rt, users, private, shared = _shard(cfg)
    _, _, new_private, result = train_shard(rt, users, private, shared, 1, {"server-round": 1})
    direct = train_users(rt.model, shared, private, [rt.samples(int(u), 1) for u in users], rt.training_params())
    assert torch.equal(result.private, direct.private) and np.array_equal(new_private, direct.private.numpy())
    method = build_personalization(cfg.personalization)
    assert torch.equal(
        method.scores(rt, users, new_private, shared, 1), rt.model.score_all(torch.as_tensor(new_private), shared)
    )
    # a whole run: the explicit reference equals the default, metric for metric, and summary.json says what it releases
    default = run(cfg, tmp_path / "default")
    run(tiny_config("personalization=private_embedding"), tmp_path / "explicit")
    assert _history(tmp_path / "default") == _history(tmp_path / "explicit")
    assert _history(tmp_path / "default")[-1]["test/hr@10"] == default["final"]["test/hr@10"]
    saved = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert saved["personalization"].startswith("private_embedding")


def test_local_finetune_uploads_what_private_embedding_uploads_and_changes_the_ranking():
    reference, finetune = (
        tiny_config(),
        tiny_config("personalization=local_finetune", "personalization.finetune_steps=2"),
    )
    rt, users, private, shared = _shard(reference)
    rt_ft = get_runtime(finetune)
    up_ref, metrics_ref, private_ref, _ = train_shard(rt, users, private, shared, 1, {"server-round": 1})
    up_ft, metrics_ft, private_ft, _ = train_shard(rt_ft, users, private, shared, 1, {"server-round": 1})
    assert up_ref.keys() == up_ft.keys() and all(np.array_equal(up_ref[k], up_ft[k]) for k in up_ref)
    assert metrics_ref == metrics_ft and np.array_equal(private_ref, private_ft)  # the kept state is the same too

    method = build_personalization(finetune.personalization)
    scores = method.scores(rt_ft, users, private_ref, shared, 3)
    plain = rt.model.score_all(torch.as_tensor(private_ref), shared)
    assert not torch.equal(scores.argsort(dim=1), plain.argsort(dim=1))
    # per-user reference: fine-tune one user alone, rank with its own item matrix (shared + its delta on its rows)
    for row in (0, len(users) - 1):
        u = int(users[row])
        one = train_users(
            rt.model,
            shared,
            private_ref[row : row + 1],
            [rt.samples(u, 3, epochs=2, mitigate=False)],
            rt.training_params(),
        )
        matrix = rt.model.pack_items(shared).float().clone()
        chunk = one.chunks[0]
        valid = chunk.items[0] >= 0
        matrix[chunk.items[0][valid]] += chunk.item_delta[0][valid]
        personal = rt.model.unpack_items(matrix)
        expected = rt.model.score_all(one.private, {k: v.numpy() for k, v in personal.items()})
        torch.testing.assert_close(scores[row], expected[0], rtol=1e-5, atol=1e-5)
    # the evaluation reply carries metrics only (no item rows): the same keys as the reference's
    metrics_a, _ = evaluate_shard(rt, users, private_ref, shared, 3)
    metrics_b, _ = evaluate_shard(rt_ft, users, private_ref, shared, 3)
    assert metrics_a.values.keys() == metrics_b.values.keys()


def _train_twice(cfg) -> tuple[list[np.ndarray], Context]:
    """Send the same train message (round 1, the same model) twice to one node, evaluating after each."""
    rt = get_runtime(cfg)
    app, context = make_client_app(cfg), node_context(0, rt.n_nodes)
    arrays = ArrayRecord({k: Array(v) for k, v in rt.model.init_shared(0).items()})
    uploads = []
    for _ in range(2):
        config = ConfigRecord({"server-round": 1, "user-ids": rt.shards[0][:5].tolist()})
        reply = app(Message(RecordDict({"arrays": arrays, "config": config}), 7, MessageType.TRAIN), context)
        uploads.append(reply.content["arrays"]["__items__"].numpy())
        evaluate = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
        app(Message(evaluate, 7, MessageType.EVALUATE), context)
    return uploads, context


def test_reconstruction_keeps_no_embedding_between_rounds(flower_identity):
    (first, second), context = _train_twice(tiny_config("personalization=reconstruction"))
    assert STATE_KEY not in context.state  # nothing of the user is stored on the node between rounds
    # every round re-fits from the same data-independent start: the same message gives the same upload ...
    assert np.array_equal(first, second) and np.abs(first).sum() > 0
    # ... whereas the reference starts its second round from the embedding it kept
    (first, second), context = _train_twice(tiny_config())
    assert STATE_KEY in context.state and not np.array_equal(first, second)


def test_reconstruction_serves_users_who_never_trained(tmp_path):
    cfg = tiny_config(
        "personalization=reconstruction", "attack.holdout_share=0.3", "dataset.n_users=80", "federation.rounds=5"
    )
    rt = get_runtime(cfg)
    assert (rt.roles == "holdout").sum() >= 10
    summary = run(cfg, tmp_path)
    final = summary["final"]
    # random ranking hits among 1 + 49 candidates with probability 10/50; ItemPop on the same users is reported beside
    assert final["cold/test_hr@10"] > 0.2 + 0.1
    assert 0 <= final["cold/itempop_test_hr@10"] <= 1 and final["cold/users"] >= 10
    assert "cold start" in json.loads((tmp_path / "summary.json").read_text())["personalization"]
    assert PersonalizationConfig().name == "private_embedding"
