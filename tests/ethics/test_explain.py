import numpy as np
import pytest
from conftest import tiny_config

from fedsim.data.roles import OPTED_IN, OPTED_OUT
from fedsim.ethics.explain import explain_user, format_explanations, load_device_embeddings
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
    assert "is not a user of this run; its users are 0..39" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "user=1"]) == 2


def test_a_centralized_run_is_explained_as_personalised(tmp_path, capsys):
    cfg = tiny_config("mode=centralized")
    run(cfg, tmp_path)
    assert main([str(tmp_path), "user=3", "k=3"]) == 0
    out = capsys.readouterr().out
    assert "user 3" in out and "personalised" in out and "fallback" not in out


def _write_small_ml100k(folder):
    """A MovieLens-100K layout (1-based file ids) with 30 users × 12 interactions over 80 items."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    rows = [
        f"{user}\t{item}\t4\t{880000000 + 10 * user + t}"
        for user in range(1, 31)
        for t, item in enumerate(rng.choice(np.arange(1, 81), size=12, replace=False).tolist())
    ]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    (folder / "u.user").write_text("".join(f"{u}|{20 + u}|{'MF'[u % 2]}|writer|00000\n" for u in range(1, 31)))


def test_movielens_users_are_named_by_the_files_ids(tmp_path, capsys):
    """fedsim-explain user=5 on MovieLens is the file's user 5 (it was the file's user 6: the 0-based index)."""
    _write_small_ml100k(tmp_path / "ml")
    cfg = tiny_config("dataset=movielens_100k", f"dataset.path={tmp_path / 'ml'}", "attack=off")
    run(cfg, tmp_path / "run")
    rt = get_runtime(cfg)
    assert rt.data.user_label(4) == 5 and rt.data.user_index(5) == 4
    shared = dict(np.load(tmp_path / "run" / "model.npz"))
    embeddings = load_device_embeddings(tmp_path / "run")
    expected = format_explanations(5, str(rt.roles[4]), explain_user(rt, shared, embeddings.get(4), 4, 3))
    capsys.readouterr()
    assert main([str(tmp_path / "run"), "user=5", "k=3"]) == 0
    assert capsys.readouterr().out.strip() == expected.strip() and expected.startswith("user 5 (")
    for missing in ("0", "31"):
        assert main([str(tmp_path / "run"), f"user={missing}"]) == 2
        assert f"user={missing} is not a user of this run; its users are 1..30" in capsys.readouterr().err
    # report.md's examples name users the same way
    report = (tmp_path / "run" / "report.md").read_text()
    named = [int(line.split()[1]) for line in report.splitlines() if line.startswith("user ")]
    assert named and all(1 <= user <= 30 for user in named)
