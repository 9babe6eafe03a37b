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
    import numpy as np

    shared = dict(np.load(tmp_path / "model.npz"))
    embeddings = load_device_embeddings(tmp_path)
    user = int(np.flatnonzero(rt.roles == OPTED_IN)[0])
    explained = explain_user(rt, shared, embeddings[user], user, k=5)
    history = set(rt.split.train_items_of(user).tolist())
    assert len(explained) == 5 and not {e.item for e in explained} & history
    assert all(e.kind == "personalised" and {b[0] for b in e.because} <= history for e in explained)
    # a reason is a history item *similar* to the recommendation; a dissimilar one is never cited
    assert any(e.because for e in explained) and all(sim > 0 for e in explained for _, _, sim in e.because)
    out_user = int(np.flatnonzero(rt.roles == OPTED_OUT)[0])
    fallback = explain_user(rt, shared, embeddings.get(out_user), out_user, k=3)
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
