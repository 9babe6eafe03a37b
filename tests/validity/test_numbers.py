"""Validity of the numbers a run reports and of the rules it applies (issue 13, items 2, 5, 6, 7, 8, 9, 11, 12).

Every expected value is computed here, independently of fedsim's wrappers: by hand from the update rule
θ ← θ + η·Δ, with numpy from the split, or by comparing two runs that must (or must not) agree. Each test names the
defect of the code before the fixes (f4f5f67) that it pins and why that code fails the assertion.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from fedsim.callbacks import Callback, CallbackList, Decision
from fedsim.client.app import make_client_app
from fedsim.client.device import train_shard
from fedsim.config import AuditRule, ConfigError, validate
from fedsim.data.roles import HOLDOUT, OPTED_IN
from fedsim.privacy import build_mechanism
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.report.collect import collect_runs
from fedsim.report.frontier import aggregate, markdown, run_row
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.server.app import build_loop
from fedsim.simulation import InProcessGrid

FAST = ("attack=off", "audit=off")  # no simulated attacks, no gates: the cheapest faithful run


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tiny runs are 30x faster on one thread when the machine's two cores are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _model(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "model.npz") as data:
        return {name: data[name] for name in data.files}


# --- item 2: rollback and resume with a stateful server optimiser -----------------------------------------------------

# audit_demo as shipped (local DP z=0.002, rollback + more_noise on the item-set attack, fedavg with server_lr=100,
# i.e. Flower's FedAvgM, which keeps its own copy of the model), shrunk to 6 rounds of 60 users. With seed 1 the gate
# breaches at round 1 (→ round 0) and round 3 (→ round 2), so one rollback restores a round that was measured.
AUDIT_DEMO = (
    "+experiment=audit_demo",
    "federation.rounds=6",
    "dataset.n_users=60",
    "attack.membership=false",
    "seed=1",
)


@pytest.fixture(scope="module")
def audit_demo(tmp_path_factory):
    cfg = tiny_config(*AUDIT_DEMO)
    run_dir = tmp_path_factory.mktemp("audit_demo")
    return cfg, run(cfg, run_dir), run_dir


def test_rollback_under_fedavgm_keeps_the_model_bounded_and_usable(audit_demo, tmp_path):
    """Defect: a rollback restored the loop's model but FedAvgM kept stepping from its own (rolled-past) copy, so the
    next round applied θ_stale + η·(θ_restored + Δ − θ_stale): η = 100 times the rollback's jump. The old code's
    audit_demo ended with parameters of 2370 against 0.003; on this config (checked against f4f5f67) it ends with
    max |item_bias| 85 against 2.2 without the audit — the 5× bound fails. Its val HR@10 also fell from 0.33 to 0.17
    right after its first rollback, but that one restored round 0 (never measured), so the recovery check below
    only guards the new code's rollbacks to a measured round."""
    cfg, summary, run_dir = audit_demo
    assert cfg.strategy.name == "fedavg" and cfg.strategy.server_lr == 100.0
    rule = cfg.audit.rules["item_set_attack"]
    assert (rule.metric, rule.action, rule.then) == ("risk/itemset_auc", "rollback", "continue")
    rollbacks = [a for a in summary["audit"]["actions"] if a["action"] == "rollback"]
    assert rollbacks, "the demo must roll back at least once"

    reference = tmp_path / "no_audit"
    # the same gate, only warning: no rollback (audit.enabled=false would leave the preset's gate unread: refused)
    gate = "audit.rules.item_set_attack"
    run(tiny_config(*AUDIT_DEMO, f"{gate}.action=warn", f"{gate}.then=stop", f"{gate}.remediation=none"), reference)
    audited, plain = _model(run_dir), _model(reference)
    for name, values in plain.items():
        assert np.isfinite(audited[name]).all()
        assert np.abs(audited[name]).max() <= 5 * np.abs(values).max(), name

    rows = _history(run_dir)
    first_val = {}
    for row in rows:
        first_val.setdefault(row["round"], row["val/hr@10"])
    checked = 0
    for action in rollbacks:
        restored = action["restored_round"]
        position = next(i for i, row in enumerate(rows) if row["round"] == action["round"])
        if restored == 0 or position + 1 == len(rows):
            continue  # the initial model was never measured
        after = rows[position + 1]["val/hr@10"]  # the first measurement of a model stepped from the restored one
        assert after > 0.5 * first_val[restored], (action, after, first_val[restored])
        checked += 1
    assert checked >= 1


class _ShiftedMean(NoPrivacy):
    """The identity mechanism plus a constant 1e-3 on every coordinate of the mean update — a stand-in for central DP
    noise, which moves the model even in a round nobody took part in. Records every mean (by name) it returns."""

    SHIFT = 1e-3

    def __init__(self, model) -> None:
        super().__init__("uniform")
        self.model = model
        self.means: list[dict[str, np.ndarray]] = []

    def mean_update(self, aggregate, rng):
        mean, metrics = super().mean_update(aggregate, rng)
        mean = {k: v + self.SHIFT for k, v in mean.items()}
        named = {k: v.numpy().copy() for k, v in self.model.unpack_items(mean["__items__"]).items()}
        named.update({k: v.numpy().copy() for k, v in mean.items() if k != "__items__"})
        self.means.append(named)
        return mean, metrics


class _RollBackAt(Callback):
    """Keeps each round's model; at ``at`` asks the loop to restore round ``to`` (as the audit does)."""

    def __init__(self, at: int, to: int) -> None:
        self.at, self.to = at, to
        self.models: dict[int, dict[str, np.ndarray]] = {}
        self.states: dict[int, dict] = {}

    def on_round_end(self, report):
        self.models[report.server_round] = {k: v.copy() for k, v in report.shared.items()}
        self.states[report.server_round] = report.strategy_state
        if report.server_round == self.at:
            return Decision(
                restore={"shared": self.models[self.to], "strategy": self.states[self.to]}, restored_round=self.to
            )
        return None


def test_fedavgm_steps_from_the_loops_model_after_an_empty_round_and_a_rollback():
    """Defect: FedAvgM stepped from its own copy of the model, which the loop did not keep in step. After a round with
    nobody sampled (the noised mean is applied without the strategy) and after a rollback, the old loop produced
    θ_stale + η·(θ_loop + Δ − θ_stale) instead of θ_loop + η·Δ: off by (η − 1)·1e-3 ≈ 0.1 per coordinate here.

    Hand-derived reference: round r's model = (model the round started from) + η·mean_r — an empty round's (noised)
    mean goes through the same server rule — and the round after a rollback starts from the restored model."""
    cfg = tiny_config(*FAST, rounds=4)
    eta = cfg.strategy.server_lr
    assert cfg.strategy.name == "fedavg" and eta == 100.0  # FedAvgM with zero momentum
    rt = get_runtime(cfg)
    mechanism = _ShiftedMean(rt.model)
    recorder = _RollBackAt(at=3, to=1)
    loop = build_loop(cfg, CallbackList([recorder]), mechanism)
    sample = loop.sampler.sample
    loop.sampler.sample = lambda r: np.zeros(0, dtype=np.int64) if r == 2 else sample(r)  # a Poisson draw of nobody
    loop.run(InProcessGrid(make_client_app(cfg), rt.n_nodes, seed=cfg.seed))

    m, mean = recorder.models, mechanism.means
    start = {1: rt.model.init_shared(cfg.seed), 2: m[1], 3: m[2], 4: m[1]}  # round 4 starts from the restored round 1
    rate = {1: eta, 2: eta, 3: eta, 4: eta}
    for r in (1, 2, 3, 4):
        for name in start[r]:
            expected = start[r][name].astype(np.float64) + rate[r] * mean[r - 1][name]
            np.testing.assert_allclose(m[r][name], expected, atol=1e-4, err_msg=f"round {r}, {name}")
    assert np.allclose(loop.shared["item_bias"], m[4]["item_bias"])


def test_resuming_a_fedavgm_run_equals_running_it_straight(tmp_path):
    """Defect: the server momentum (and FedAvgM's model copy) was not saved with the run, so a resumed FedAvgM run
    restarted with zero momentum from a stale model: 2 + 2 rounds differed from 4 rounds."""
    straight_dir, first_dir, resumed_dir = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    straight = run(tiny_config("strategy=fedavgm", *FAST, rounds=4), straight_dir)
    run(tiny_config("strategy=fedavgm", *FAST, rounds=2), first_dir)
    cfg = tiny_config("strategy=fedavgm", *FAST, rounds=4)
    assert cfg.strategy.server_momentum == 0.9
    cfg.resume_from = str(first_dir)
    resumed = run(cfg, resumed_dir)

    assert resumed["rounds_completed"] == 4 and _history(resumed_dir)[0]["round"] == 3
    assert resumed["final"]["test/hr@10"] == pytest.approx(straight["final"]["test/hr@10"], abs=1e-9)
    assert resumed["final"]["test/ndcg@10"] == pytest.approx(straight["final"]["test/ndcg@10"], abs=1e-6)
    a, b = _model(straight_dir), _model(resumed_dir)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-5, err_msg=name)


# --- item 5: local DP uploads nothing un-noised -----------------------------------------------------------------------

UNNOISED = ("train-loss-sum", "samples", "unclipped-count", "norm-sum")


def _device_metrics(*overrides: str) -> dict[str, float]:
    """One node's reply metrics for round 1, built exactly as the ClientApp builds them."""
    cfg = tiny_config(*overrides)
    rt = get_runtime(cfg)
    config = build_mechanism(cfg, rt.population).round_config(1)
    users = rt.eligible[:6]
    _, metrics, _, _ = train_shard(
        rt, users, rt.model.init_private(users, cfg.seed), rt.model.init_shared(cfg.seed), 1, config
    )
    return metrics


def test_local_dp_devices_upload_no_unnoised_statistics():
    """Defect: under local DP each device still reported its training loss, sample count, unclipped flag and update
    norm in clear, none of which the local guarantee (noise on the update only) covers. Under central DP the
    unclipped count is the adaptive-clipping query and is sent (so the check below is not vacuous)."""
    local = _device_metrics("privacy=local", "privacy.noise_multiplier=1.0")
    assert not set(UNNOISED) & set(local), sorted(local)
    central = _device_metrics("privacy=central", "privacy.noise_multiplier=1.0")
    assert {"unclipped-count", "norm-sum", "train-loss-sum", "samples"} <= set(central)


def test_local_dp_run_does_not_claim_that_training_diverged(audit_demo):
    """Local DP withholds the loss on purpose; the run must not report that as divergence in summary['warnings']."""
    _, summary, _ = audit_demo
    assert not [w for w in summary["warnings"] if "diverged" in w]


# --- item 6: privacy.secure_rng ---------------------------------------------------------------------------------------

CENTRAL = ("privacy=central", "privacy.noise_multiplier=5.0", *FAST)  # large z: cheap PLD accounting


def test_secure_rng_draws_fresh_noise_and_the_default_says_it_is_not_a_release(tmp_path):
    """Defect: DP noise always came from the seed recorded in summary.json, so anyone holding the run folder could
    regenerate and subtract it — and nothing said the model was not a private release. ``secure_rng`` did not
    exist (the old code refuses the key)."""
    summaries, models = {}, {}
    for name, extra in (
        ("a", ()),
        ("b", ()),
        ("sa", ("privacy.secure_rng=true",)),
        ("sb", ("privacy.secure_rng=true",)),
    ):
        summaries[name] = run(tiny_config(*CENTRAL, *extra, rounds=1), tmp_path / name)
        models[name] = _model(tmp_path / name)
    for key in models["a"]:
        assert np.array_equal(models["a"][key], models["b"][key]), key  # seeded: bit-identical
    assert any(not np.array_equal(models["sa"][k], models["sb"][k]) for k in models["sa"])  # OS entropy: differ
    seeded, secure = summaries["a"]["threat_model"]["release"], summaries["sa"]["threat_model"]["release"]
    assert "NOT a private release" in seeded
    assert "releasable" in secure and "OS entropy" in secure and "NOT" not in secure


# --- item 7: resume keeps the labels honest ---------------------------------------------------------------------------


def test_resume_refuses_another_delta_and_keeps_the_target_epsilon(tmp_path):
    """Defect: a run could be resumed with a different δ (the accountant's ε then mixed two δs under one label), and a
    run calibrated for ``target_epsilon`` over 2 rounds and resumed to 5 was recalibrated for 5 fresh rounds while the
    2 rounds already spent stayed charged: final ε > target. Fixed: δ must match; z is recalibrated for the remaining
    rounds given the spent ones, so ε ≤ target with a larger z than the first run's."""
    first_dir = tmp_path / "first"
    target = ("privacy=central", "privacy.target_epsilon=2", "privacy.accountant=rdp", *FAST)  # RDP: fast calibration
    first = run(tiny_config(*target, rounds=2), first_dir)

    other_delta = tiny_config(*target, "privacy.delta=1e-6", rounds=5)
    other_delta.resume_from = str(first_dir)
    with pytest.raises(ConfigError, match=r"privacy\.delta") as error:
        run(other_delta, tmp_path / "refused")
    assert "\n" not in str(error.value)

    cfg = tiny_config(*target, rounds=5)
    cfg.resume_from = str(first_dir)
    resumed = run(cfg, tmp_path / "resumed")
    assert resumed["rounds_completed"] == 5
    assert resumed["final"]["privacy/epsilon"] <= 2.0 + 1e-9
    assert resumed["threat_model"]["noise_multiplier"] > first["threat_model"]["noise_multiplier"]
    z_before, z_after = first["threat_model"]["noise_multiplier"], resumed["threat_model"]["noise_multiplier"]
    said = [w for w in resumed["warnings"] if "mostly noise" in w]
    assert bool(said) == (z_after > 2 * z_before)  # a resume that leaves little budget says so


# --- item 8: the audit picks models on validation, never on test ------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ("audit.rules.utility_drop.metric=test/hr@10", "audit.rules.utility_drop.action=pause"),
        ("audit.rules.utility_drop.metric='val/hr@10|test/hr@10'", "audit.rules.utility_drop.action=rollback"),
        ("audit.rules.disparate_impact.metric=fair/gender/di_ratio_hr", "audit.rules.disparate_impact.action=rollback"),
        # item_set_attack is not a default gate (fedsim/config.py): audit_demo's rollback rule, under central DP
        ("+experiment=audit_demo", "privacy=central", "privacy.noise_multiplier=1.0"),
    ],
    ids=["test-metric", "test-alternative", "test-fairness", "itemset-under-central"],
)
def test_a_pause_or_rollback_may_not_gate_on_test_or_uncovered_metrics(overrides):
    """Defect: a pause/rollback rule on a test metric (or on test-split fairness, or on the attack over *un-noised*
    central-DP uploads) let the audit choose the kept model by test data or by statistics ε does not cover — and the
    old validation accepted it. Now: one-line ConfigError naming the rule."""
    with pytest.raises(ConfigError, match=r"audit\.rules\.\w+\.metric=.*cannot gate") as error:
        tiny_config(*overrides)
    assert "\n" not in str(error.value)


def test_validation_side_gates_and_the_local_dp_attack_gate_are_allowed():
    """The counterpart: fair_val/, val/ and — under local DP, where the server sees only noised uploads —
    risk/itemset_auc may gate a rollback (audit_demo composes); a warn rule may read anything."""
    cfg = tiny_config(
        "audit.rules.disparate_impact.metric=fair_val/gender/di_ratio_hr",
        "audit.rules.disparate_impact.action=rollback",
        "audit.rules.utility_drop.metric=val/hr@10",
        "audit.rules.utility_drop.action=pause",
    )
    cfg.audit.rules["test_watch"] = AuditRule(metric="test/hr@10", max=0.99, action="warn")
    validate(cfg)
    demo = tiny_config("+experiment=audit_demo")
    assert demo.audit.rules["item_set_attack"].action == "rollback" and demo.privacy.mechanism == "local"
    demo.audit.rules["x"] = AuditRule(metric="test/hr@10", max=0.5, action="pause")
    with pytest.raises(ConfigError, match=r"audit\.rules\.x\.metric='test/hr@10'"):
        validate(demo)


# --- item 9: every setting is honoured or refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (
            (
                "privacy=record",
                "privacy.noise_multiplier=1.0",
                "audit.rules.epsilon.action=rollback",
                "audit.rules.epsilon.then=continue",
                "audit.rules.epsilon.remediation=more_noise",
            ),
            "more_noise",
        ),
        (("privacy=local", "privacy.noise_multiplier=1.0", "privacy.clipping=adaptive"), "privacy.clipping"),
        (("privacy=local", "privacy.noise_multiplier=1.0", "privacy.accountant=rdp"), "privacy.accountant"),
        (("strategy=fedadam", "strategy.server_lr=100"), "strategy.server_lr"),
    ],
    ids=["record-more-noise", "local-adaptive", "local-rdp", "fedadam-server-lr"],
)
def test_settings_that_would_be_ignored_are_refused(overrides, key):
    """Defect: these settings were accepted and silently ignored (record-level DP has no noise to double; local DP
    neither adapts C nor accounts with RDP; FedAdam's step is eta, not server_lr). Now: one-line ConfigError."""
    with pytest.raises(ConfigError, match=key) as error:
        tiny_config(*overrides)
    assert "\n" not in str(error.value)


def test_fedprox_honours_the_server_learning_rate(tmp_path):
    """Defect: strategy=fedprox was Flower's FedProx, whose server step is η = 1 whatever strategy.server_lr said, so
    fedprox vs fedavg compared the proximal term *and* a 100× different server step. With proximal_mu=0 FedProx is
    FedAvg: same η (100) ⇒ the same model, bit for bit; and server_lr must matter (η = 1 gives another model)."""
    fedavg = tmp_path / "fedavg"
    run(tiny_config(*FAST, rounds=2), fedavg)
    prox = tmp_path / "fedprox"
    cfg = tiny_config("strategy=fedprox", "strategy.proximal_mu=0", *FAST, rounds=2)
    assert cfg.strategy.server_lr == 100.0
    run(cfg, prox)
    slow = tmp_path / "fedprox_lr1"
    run(tiny_config("strategy=fedprox", "strategy.proximal_mu=0", "strategy.server_lr=1", *FAST, rounds=2), slow)
    a, b, c = _model(fedavg), _model(prox), _model(slow)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
    assert any(not np.allclose(c[name], a[name], atol=1e-3) for name in a)


# --- item 11: ItemPop sees only the data of the users who train -------------------------------------------------------


def _itempop_hr(split, users: np.ndarray, popularity: np.ndarray, k: int = 10) -> float:
    """HR@k of ranking by ``popularity`` (ties by lower item id), the test item among its sampled negatives; a tie
    with a negative counts against the test item."""
    score = popularity.astype(np.float64) - np.arange(split.n_items) * 1e-9
    hits = [
        np.sum(score[split.eval_negatives[u]] >= score[split.test_item[u]]) < k
        for u in users
        if split.test_item[u] >= 0
    ]
    return float(np.mean(hits))


def test_itempop_counts_only_the_training_interactions_of_users_who_train(tmp_path):
    """Defect: ItemPop's popularity counted every user's training items — opted-out users (who never train) and the
    membership hold-out included — so the baseline saw more data than the federated model it is compared with.
    Reference: numpy bincount over the eligible users' training items, evaluated on the served users; on this config
    the all-users popularity gives another HR@10, so the old baseline fails the assertion."""
    cfg = tiny_config("consent=opt_out", "attack.item_set=false", "audit=off", "dataset.n_users=80", rounds=1)
    summary = run(cfg, tmp_path)
    rt = get_runtime(cfg)
    split = rt.split
    eligible = np.flatnonzero((rt.roles == OPTED_IN) & (split.n_train() > 0))
    assert len(eligible) < split.n_users and (rt.roles == HOLDOUT).any() and (rt.roles != OPTED_IN).sum() > 10
    served = np.flatnonzero(split.evaluated & (rt.roles != HOLDOUT))
    trained = np.bincount(np.concatenate([split.train_items_of(int(u)) for u in eligible]), minlength=split.n_items)
    everyone = np.bincount(
        np.concatenate([split.train_items_of(u) for u in range(split.n_users)]), minlength=split.n_items
    )
    expected = _itempop_hr(split, served, trained)
    reported = summary["baselines"]["ItemPop"]["test/hr@10"]
    assert reported == pytest.approx(expected, abs=1e-12)
    assert _itempop_hr(split, served, everyone) != pytest.approx(expected, abs=1e-12)


# --- item 12: reported facts ------------------------------------------------------------------------------------------


def _write_ml100k_with_a_repeat(folder: Path) -> int:
    """10 users × 8 items drawn from 80 items, user 1 rating item 5 twice; returns the number of lines."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, 11):
        for j, item in enumerate(rng.choice(np.arange(1, 81), size=8, replace=False)):
            rows.append((user, int(item), 1 + j % 5, 1000 * user + j))
    first = rows[0]
    rows.append((first[0], first[1], 4, first[3] + 500))  # the same (user, item) rated again later
    covered = {item for _, item, _, _ in rows}
    missing = [item for item in range(1, 81) if item not in covered]
    rows += [(1 + n % 10, item, 3, 20_000 + n) for n, item in enumerate(missing)]  # every item appears somewhere
    folder.mkdir()
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    genders = "MF"
    (folder / "u.user").write_text("".join(f"{u}|{20 + u}|{genders[u % 2]}|other|00000\n" for u in range(1, 11)))
    return len(rows)


def test_interaction_count_is_of_unique_pairs_and_the_source_count_is_kept(tmp_path):
    """Defect: summary['data']['interactions'] was the number of rating lines, although the split drops repeated
    (user, item) events — the report overstated the data the model saw. Now it counts unique pairs and keeps the raw
    count as events_in_source."""
    path = tmp_path / "ml"
    lines = _write_ml100k_with_a_repeat(path)
    cfg = tiny_config("dataset=movielens_100k", f"dataset.path={path}", *FAST, rounds=1)
    summary = run(cfg, tmp_path / "run")
    data = get_runtime(cfg).data
    unique_pairs = len(np.unique(np.stack([data.user, data.item], axis=1), axis=0))
    assert unique_pairs == lines - 1
    assert summary["data"]["interactions"] == unique_pairs
    assert summary["data"]["events_in_source"] == lines


def test_frontier_reads_a_record_level_runs_epsilon_and_names_its_unit(tmp_path):
    """Defect: fedsim-report took ε from privacy/epsilon only, so a record-level DP-SGD run (which reports
    privacy/epsilon_record_level) appeared at ε = ∞ — as if it were non-private — with no DP unit in the table."""
    sweep = tmp_path / "sweep"
    summary = run(tiny_config("privacy=record", "privacy.noise_multiplier=1.0", *FAST, rounds=1), sweep / "0")
    eps = summary["final"]["privacy/epsilon_record_level"]
    assert 0 < eps < float("inf") and "privacy/epsilon" not in summary["final"]

    finished, _ = collect_runs(sweep)
    rows = [run_row(r, sweep) for r in finished]
    assert rows[0]["epsilon"] == pytest.approx(eps)
    assert "RECORD" in rows[0]["dp_unit"]
    settings = aggregate(rows)
    assert settings[0]["epsilon"] == pytest.approx(eps) and "RECORD" in settings[0]["dp_unit"]
    table = markdown(settings, rows, [], sweep)
    assert "RECORD" in table  # the unit column (the table's fixed header only says "record-level")


def test_threat_model_shows_the_noise_in_force_after_more_noise(audit_demo):
    """Defect: summary['threat_model'] was written when the run began, so after the audit's more_noise remediation it
    still showed the starting z (0.002) although the model was trained with 0.002·2^(rollbacks)."""
    _, summary, _ = audit_demo
    doublings = sum(
        1 for a in summary["audit"]["actions"] if a["action"] == "rollback" and a["remediation"] == "more_noise"
    )
    assert doublings >= 1
    assert summary["threat_model"]["noise_multiplier"] == pytest.approx(0.002 * 2**doublings, rel=1e-12)
