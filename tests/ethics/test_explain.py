import numpy as np
import pytest
from conftest import tiny_config

from fedsim.data.roles import OPTED_IN, OPTED_OUT
from fedsim.ethics.explain import explain_user, load_device_embeddings
from fedsim.ethics.explain_cli import main
from fedsim.run import run
from fedsim.runtime import get_runtime


def test_explanations_come_from_the_users_own_history_or_say_fallback(tmp_path, capsys):
    cfg = tiny_config("consent=opt_out")
    run(cfg, tmp_path)
    rt = get_runtime(cfg)
    shared = dict(np.load(tmp_path / "model.npz"))
    embeddings = load_device_embeddings(tmp_path)
    user = int(np.flatnonzero(rt.roles == OPTED_IN)[0])
    explained = explain_user(rt, shared, embeddings[user], user, k=5)
    history_items = rt.split.train_items_of(user)
    # by hand (MF): score = p·q_i + b_i over items outside the user's history; the top 5 in order
    q, bias = shared["item_embedding"].astype(np.float64), shared["item_bias"][:, 0].astype(np.float64)
    scores = q @ embeddings[user].astype(np.float64) + bias
    scores[history_items] = -np.inf
    assert [e.item for e in explained] == np.argsort(-scores, kind="stable")[:5].tolist()
    assert [e.score for e in explained] == pytest.approx(scores[[e.item for e in explained]], abs=1e-5)
    assert all(e.kind == "personalised" for e in explained)
    # a reason is one of the (at most 3) history items most cosine-similar to the recommendation, and only if similar
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    for e in explained:
        similarity = unit[history_items] @ unit[e.item]
        order = np.argsort(-similarity)[:3]
        expected = [(int(history_items[j]), similarity[j]) for j in order if similarity[j] > 0]
        assert [b[0] for b in e.because] == [item for item, _ in expected]
        assert [b[2] for b in e.because] == pytest.approx([sim for _, sim in expected], abs=1e-6)
    assert any(e.because for e in explained)
    # an opted-out user gets the fallback: popularity among opted-in users' training items, ties to the lower id
    out_user = int(np.flatnonzero(rt.roles == OPTED_OUT)[0])
    fallback = explain_user(rt, shared, embeddings.get(out_user), out_user, k=3)
    popularity = np.zeros(rt.split.n_items)
    for u in np.flatnonzero(rt.roles == OPTED_IN):
        np.add.at(popularity, rt.split.train_items_of(int(u)), 1)
    popularity[rt.split.train_items_of(out_user)] = -np.inf
    assert [e.item for e in fallback] == np.argsort(-popularity, kind="stable")[:3].tolist()
    assert all("fallback" in e.kind and not e.because for e in fallback)

    assert main([str(tmp_path), f"user={user}", "k=3"]) == 0
    assert f"user {user} (opted_in): personalised" in capsys.readouterr().out
    assert main([str(tmp_path), "user=100000"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "user=1"]) == 2


def test_a_centralized_run_is_explained_as_personalised(tmp_path, capsys):
    cfg = tiny_config("mode=centralized")
    run(cfg, tmp_path)
    assert main([str(tmp_path), "user=3", "k=3"]) == 0
    out = capsys.readouterr().out
    assert "user 3" in out and "personalised" in out and "fallback" not in out
