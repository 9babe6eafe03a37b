from conftest import tiny_config

from fedsim.config import ConsentConfig
from fedsim.data.roles import OPTED_IN, OPTED_OUT
from fedsim.ethics.explain import explain_user, load_device_embeddings
from fedsim.ethics.explain_cli import main
from fedsim.run import run
from fedsim.runtime import get_runtime


def test_explanations_come_from_the_users_own_history_or_say_fallback(tmp_path, capsys):
    cfg = tiny_config()
    cfg.consent = ConsentConfig(opt_out_rate=0.2)
    run(cfg, tmp_path)
    rt = get_runtime(cfg)
    import numpy as np

    shared = dict(np.load(tmp_path / "model.npz"))
    embeddings = load_device_embeddings(tmp_path)
    user = int(np.flatnonzero(rt.roles == OPTED_IN)[0])
    explained = explain_user(rt, shared, embeddings[user], user, k=5)
    history = set(rt.split.train_items_of(user).tolist())
    assert len(explained) == 5 and not {e.item for e in explained} & history
    assert all(e.kind == "personalised" and e.because and {b[0] for b in e.because} <= history for e in explained)
    out_user = int(np.flatnonzero(rt.roles == OPTED_OUT)[0])
    fallback = explain_user(rt, shared, embeddings.get(out_user), out_user, k=3)
    assert all("fallback" in e.kind and not e.because for e in fallback)

    assert main([str(tmp_path), f"user={user}", "k=3"]) == 0
    assert f"user {user} (opted_in): personalised" in capsys.readouterr().out
    assert main([str(tmp_path), "user=100000"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "user=1"]) == 2
