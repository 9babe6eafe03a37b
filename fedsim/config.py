"""Structured-config schemas: every key fedsim accepts, its type, its default and its allowed range.

Hydra composes ``conf/`` against these dataclasses, so an unknown key or a value of the wrong type is refused
before anything runs. Ranges and cross-field rules are checked once, here, in :func:`validate`, which raises
:class:`ConfigError` with one line naming the key and what is allowed.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fedsim.registry import names


class ConfigError(ValueError):
    """A config value is out of range; the message names the key and what is allowed."""


@dataclass
class DatasetConfig:
    """``dataset/``: which interactions to load (synthetic, ml-100k, ml-1m) and the generator's knobs."""

    name: str = "synthetic"
    path: str | None = None
    n_users: int = 600
    n_items: int = 800
    latent_dim: int = 8
    min_interactions: int = 5
    max_interactions: int = 300
    activity_exponent: float = 1.2
    popularity_exponent: float = 0.9
    minority_share: float = 0.3
    group_shift: float = 1.0
    taste_strength: float = 5.0
    # the order of events that share a timestamp in the leave-one-out split (fedsim/data/protocol.py): item_id puts
    # the highest item id last (the test item), file_order the first of them in the file (NCF-PyTorch, PFedRec)
    tie_break: str = "item_id"


@dataclass
class ModelConfig:
    """``model/``: the ranking model. ``dim`` is the GMF/MF factor size; ``mlp_layers`` only for NeuMF."""

    name: str = "mf"
    dim: int = 32
    mlp_layers: list[int] = field(default_factory=lambda: [64, 32, 16])
    init_std: float = 0.1
    loss: str = "bce"


@dataclass
class ClientConfig:
    """``client/``: local training on each device (per participating user, per round)."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.5
    optimizer: str = "sgd"
    negatives: int = 4
    l2: float = 0.0
    max_rows_per_chunk: int = 262_144
    # true: training negatives also skip the user's validation and test items (PFedRec's code; a leak of the
    # held-out items into training, fedsim/data/negatives.py)
    negatives_exclude_held_out: bool = False


@dataclass
class FederationConfig:
    """``federation/``: rounds, participation and how users are hosted on Flower virtual nodes."""

    rounds: int = 30
    backend: str = "ray"
    users_per_node: int = 0
    participation: float = 1.0
    sampling: str = "fixed"
    user_weighting: str = "uniform"
    num_cpus_per_node: float = 1.0
    max_concurrent_nodes: int = 0
    ray_address: str | None = None  # attach to a running Ray cluster ("auto", "host:6379"); None = start a local one
    timeout_s: float = 3600.0
    discovery_timeout_s: float = 120.0
    dropout: float = 0.0
    availability: float = 1.0
    availability_attribute: str | None = None
    availability_by_group: dict[str, float] = field(default_factory=dict)
    straggler_sigma: float = 0.0
    deadline_s: float = 0.0
    fail_fast: bool = False
    node_crash_prob: float = 0.0
    node_hang_prob: float = 0.0  # fault injection: a node's train call sleeps node_hang_s (tests, teaching)
    node_hang_s: float = 30.0


@dataclass
class StrategyConfig:
    """``strategy/``: the server update rule applied to the user-level mean update (Flower strategies)."""

    name: str = "fedavg"
    server_lr: float = 100.0
    server_momentum: float = 0.0
    proximal_mu: float = 0.0
    eta: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    # robust aggregation over the round's individual user updates (fedsim/security/robust.py); none = the plain mean
    robust: str = "none"  # none | norm_bound | median | trimmed_mean | krum | multi_krum
    robust_norm: float = 1.0  # norm_bound: each user's update is scaled to L2 <= this bound
    robust_trim: float = 0.1  # trimmed_mean: share cut at each end of every coordinate (Flower's proportiontocut)
    robust_byzantine: float = 0.1  # krum/multi_krum: assumed share f/n of Byzantine users in a round


@dataclass
class PrivacyConfig:
    """``privacy/``: the DP mechanism, its parameters and the accountant (see fedsim/privacy)."""

    mechanism: str = "none"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_epsilon: float | None = None
    clipping_norm: float = 1.0
    delta: float | None = None
    clipping: str = "fixed"
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clipped_count_stddev: float | None = None
    accountant: str = "pld"
    secure_rng: bool = False
    record_sample_rate: float = 0.1  # privacy=record: Poisson rate q of each record per DP-SGD step


@dataclass
class ConsentConfig:
    """``consent/``: users who opt out of personalisation (they never train and are served a fallback), or who decline
    one purpose only (``decline_*``: personalised ranking, contributing to the shared model, being measured)."""

    opt_out_rate: float = 0.0
    group_attribute: str | None = None
    group_value: str | None = None
    group_factor: float = 1.0
    fallback: str = "popularity"
    # consent per purpose: shares of users (drawn independently, seeded) who decline one use; an opt-out declines all
    decline_personalization: float = 0.0  # served the non-personalised fallback
    decline_contribution: float = 0.0  # fits its embedding on the device, never uploads, never sampled
    decline_measurement: float = 0.0  # served, but left out of attacks, per_user.csv and fairness analytics


@dataclass
class PoisonConfig:
    """``attack.poison``: malicious devices promoting a target item (fedsim/security/poisoning.py); off at 0."""

    fraction: float = 0.0  # share of all users that are malicious devices (role "malicious", drawn from the seed)
    target: int | None = None  # item to promote; None: the coldest item with >= 1 training interaction (lowest id)
    strategy: str = "fake_users"  # fake_users (data poisoning) | boost_target (model-update poisoning)
    filler_items: int = 10  # the most popular items a fake user also "likes" / whose centre boost_target aims at
    update_norm: float = 1.0  # boost_target: L2 norm of the crafted update (with skip_clip=false: just inside the clip)
    skip_clip: bool = True  # malicious devices skip the device-side clip, as a real attacker would (false: they clip)


@dataclass
class AttackConfig:
    """``attack/``: measured privacy risk (curious-server item-set attack, membership inference, re-identification)."""

    item_set: bool = True
    users_per_round: int = 16
    mitigation: str = "none"
    fake_ratio: float = 1.0
    membership: bool = True
    holdout_share: float = 0.1
    fit_epochs: int = 3
    reid_sizes: list[int] = field(default_factory=lambda: [2, 4, 8])
    reid_sample: int = 20_000  # users probed for re-identification risk (seeded sample with a CI; 0 = everyone)
    poison: PoisonConfig = field(default_factory=PoisonConfig)


@dataclass
class AuditRule:
    """One gate: ``metric`` (a metric tag, ``*`` allowed: the worst match counts) must stay ``>= min`` / ``<= max``."""

    metric: str = MISSING
    min: float | None = None
    max: float | None = None
    action: str = "warn"
    then: str = "stop"
    remediation: str = "none"


def default_audit_rules() -> dict[str, AuditRule]:
    """The gates every run checks unless ``audit=off`` (teaching policy; only the 0.8 DI rule has regulatory
    lineage). All warn; experiment presets turn some into pause/rollback."""
    fair = "fair_val/{}/di_ratio_hr"
    return {
        "epsilon": AuditRule(metric="privacy/epsilon", max=8.0),
        "disparate_impact": AuditRule(
            metric="|".join(fair.format(g) for g in ("gender", "age", "group", "activity_top5")), min=0.8
        ),
        "equal_opportunity": AuditRule(
            metric="fair_val/gender/eod_recall|fair_val/group/eod_recall|fair_val/activity_top5/eod_recall", max=0.1
        ),
        "item_set_attack": AuditRule(metric="risk/itemset_auc", max=0.6),
        "utility_drop": AuditRule(metric="util/val_hr_drop_vs_best", max=0.05),
        "utility_vs_itempop": AuditRule(metric="util/val_hr_lift_vs_itempop", min=0.0),
        # measured only when attack.poison.fraction > 0: share of benign users shown the attacker's target
        "target_exposure": AuditRule(metric="risk/target_exposure@*", max=0.05),
    }


@dataclass
class AuditConfig:
    """``audit/``: gates checked every evaluation round, and what to do on a breach."""

    enabled: bool = True
    rules: dict[str, AuditRule] = field(default_factory=default_audit_rules)
    explain_users: int = 3


@dataclass
class FairnessConfig:
    """How group fairness is summarised (see fedsim/ethics/fairness.py)."""

    min_group_size: int = 20


@dataclass
class EvaluationConfig:
    """When and how users are evaluated (on their own devices)."""

    every: int = 5
    k: int = 10
    n_negatives: int = 99
    max_users: int = 10_000  # above this many users, a seeded sample of this size is evaluated (0 = everyone)


@dataclass
class CheckpointConfig:
    """Crash-safe checkpoints (fedsim/checkpoint.py): every ``every`` rounds and at the end; 0 = only at the end."""

    every: int = 1


@dataclass
class PersonalizationConfig:
    """``personalization/``: how a device personalises (fedsim/personalization); every method uploads only the
    shared update."""

    name: str = "private_embedding"
    finetune_steps: int = 1  # local_finetune: local epochs of fine-tuning at evaluation
    reconstruction_epochs: int = 3  # reconstruction: epochs fitting the user embedding, shared model frozen
    score_epochs: int = 1  # dual: epochs fitting the personal score function (item table frozen) before each round
    offset_scale: float = 1.0  # dual: the device ranks with w + offset_scale·δ_u (its item fine-tuning, amplified)
    ditto_lambda: float = 0.1  # ditto: λ of the pull λ/2‖v − w‖² of the personal model toward the shared one
    personal_epochs: int = 1  # ditto: local epochs of the personal model per round


@dataclass
class SecAggConfig:
    """``secagg/``: secure aggregation (SecAgg+, Bell et al. 2020) simulated: the server learns only the round's sum
    (fedsim/security/secagg.py). Quantisation defaults are Flower's ``SecAggPlusWorkflow``'s."""

    enabled: bool = False
    min_users: int = 10  # a round with fewer surviving users is aborted: the server learns nothing
    num_shares: int = 0  # k neighbours each user shares keys with; 0 = min(n - 1, 2*ceil(log2 n)) (SecAgg+: O(log n))
    clipping_range: float = 8.0  # each coordinate clipped to [-c, c] before quantisation
    quantization_bits: int = 22  # 2**bits quantisation levels (Flower: quantization_range = 2**22)
    modulus_bits: int = 32  # masks and sums live mod 2**bits (Flower: modulus_range = 2**32, its maximum)


@dataclass
class MitigationConfig:
    """``mitigation/``: fairness-aware personalisation (fedsim/mitigation), off by default. Both mitigations read
    item popularity from the shared model the device received (post-processing of the release: no privacy cost, and
    no attribute leaves a device)."""

    name: str = "none"  # none | exposure_regularizer (in local training) | rerank (post-processing of each top-K)
    regularizer_weight: float = 0.1  # λ of the on-device popularity-correlation penalty (Zhu et al. 2021)
    rerank_weight: float = 0.9  # λ of calibrated-popularity re-ranking (Steck 2018; Abdollahpouri et al. 2021)
    rerank_pool: int = 100  # the top-N of a device's ranking that it re-ranks into its top-K
    head_share: float = 0.2  # the short head: this share of items the shared model scores highest without a user


@dataclass
class ErasureConfig:
    """``erasure.*``: the right to erasure (fedsim/ethics/erasure.py), off by default (``share: 0``)."""

    share: float = 0.0  # share of contributing users who ask to be forgotten (a seeded draw)
    round: int = 0  # they ask at the start of this round (> evaluation.every, so a "before" is measured)
    policy: str = "continue"  # none (model kept as it stands) | continue (train on without them) | retrain


@dataclass
class FedsimConfig:
    """The root config (``conf/config.yaml``)."""

    name: str = "demo"
    seed: int = 0
    mode: str = "federated"
    verbose: bool = False
    progress: bool = True
    output_dir: str | None = None
    resume_from: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    consent: ConsentConfig = field(default_factory=ConsentConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)
    erasure: ErasureConfig = field(default_factory=ErasureConfig)


LOSSES = ("bce", "bpr")
OPTIMIZERS = ("sgd", "adam")
SAMPLINGS = ("fixed", "poisson")
WEIGHTINGS = ("examples", "uniform")
CLIPPINGS = ("fixed", "adaptive")
ACCOUNTANTS = ("pld", "rdp")
MODES = ("federated", "centralized")
BACKENDS = ("ray", "inprocess")
FALLBACKS = ("popularity", "shared_model")
MITIGATIONS = ("none", "fake_items", "dense")
ACTIONS = ("warn", "pause", "rollback")
THENS = ("stop", "continue")
REMEDIATIONS = ("none", "more_noise", "exposure_regularizer", "rerank")
FAIRNESS_MITIGATIONS = ("none", "exposure_regularizer", "rerank")
ERASURE_POLICIES = ("none", "continue", "retrain")
TIE_BREAKS = ("item_id", "file_order")  # dataset.tie_break (fedsim/data/protocol.py)


def register_schemas() -> None:
    """Register the root schema; ``conf/config.yaml`` lists it first, so every group file is checked against it."""
    ConfigStore.instance().store(name="fedsim_schema", node=FedsimConfig)


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _check(key: str, ok: bool, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {allowed}")


def _positive(key: str, value: float) -> None:
    _check(key, value is not None and value > 0 and math.isfinite(value), "a number > 0", value)


def validate(cfg: FedsimConfig) -> FedsimConfig:
    """Check ranges and cross-field rules once; return ``cfg`` unchanged when it is valid."""
    _one_of("mode", cfg.mode, MODES)
    _check("seed", 0 <= cfg.seed < 2**63, "an integer 0 <= seed < 2^63 (numpy and torch seed with it)", cfg.seed)
    for check in (
        _dataset,
        _model,
        _client,
        _federation,
        _strategy,
        _privacy,
        _consent,
        _attack,
        _audit,
        _evaluation,
        _personalization,
        _security,
        _mitigation,
        _erasure,
    ):
        check(cfg)
    return cfg


def _dataset(cfg: FedsimConfig) -> None:
    d = cfg.dataset
    _one_of("dataset.name", d.name, names("dataset"))
    _one_of("dataset.tie_break", d.tie_break, TIE_BREAKS)
    if d.name != "synthetic" and not d.path:
        raise ConfigError(f"dataset.path is required for dataset.name={d.name} (the folder holding the unzipped files)")
    if d.name == "synthetic":
        _check("dataset.n_users", d.n_users >= 2, "an integer >= 2", d.n_users)
        _check("dataset.n_items", d.n_items >= 20, "an integer >= 20", d.n_items)
        _check(
            "dataset.min_interactions",
            d.min_interactions >= 3,
            "an integer >= 3 (train + val + test)",
            d.min_interactions,
        )
        _check(
            "dataset.max_interactions",
            d.max_interactions >= d.min_interactions,
            f"an integer >= dataset.min_interactions ({d.min_interactions})",
            d.max_interactions,
        )
        _check("dataset.minority_share", 0.0 <= d.minority_share <= 1.0, "0 <= share <= 1", d.minority_share)
        _positive("dataset.activity_exponent", d.activity_exponent)
        _check("dataset.latent_dim", d.latent_dim >= 1, "an integer >= 1", d.latent_dim)


def _model(cfg: FedsimConfig) -> None:
    m = cfg.model
    _one_of("model.name", m.name, names("model"))
    _one_of("model.loss", m.loss, LOSSES)
    _check("model.dim", m.dim >= 1, "an integer >= 1", m.dim)
    _positive("model.init_std", m.init_std)
    if m.name == "neumf":
        _check(
            "model.mlp_layers",
            len(m.mlp_layers) >= 1 and all(x >= 1 for x in m.mlp_layers) and m.mlp_layers[0] % 2 == 0,
            "a non-empty list of positive sizes, the first even",
            m.mlp_layers,
        )


def _client(cfg: FedsimConfig) -> None:
    c = cfg.client
    _check("client.epochs", c.epochs >= 1, "an integer >= 1", c.epochs)
    _check("client.batch_size", c.batch_size >= 1, "an integer >= 1", c.batch_size)
    _positive("client.lr", c.lr)
    _one_of("client.optimizer", c.optimizer, OPTIMIZERS)
    _check("client.negatives", c.negatives >= 1, "an integer >= 1", c.negatives)
    _check("client.l2", c.l2 >= 0, "a number >= 0", c.l2)
    _check("client.max_rows_per_chunk", c.max_rows_per_chunk >= 1024, "an integer >= 1024", c.max_rows_per_chunk)


def _federation(cfg: FedsimConfig) -> None:
    f = cfg.federation
    _check("federation.rounds", f.rounds >= 1, "an integer >= 1", f.rounds)
    _one_of("federation.backend", f.backend, BACKENDS)
    _check("federation.users_per_node", f.users_per_node >= 0, "0 (auto) or an integer >= 1", f.users_per_node)
    _check("federation.participation", 0.0 < f.participation <= 1.0, "0 < fraction <= 1", f.participation)
    _one_of("federation.sampling", f.sampling, SAMPLINGS)
    _one_of("federation.user_weighting", f.user_weighting, WEIGHTINGS)
    _positive("federation.num_cpus_per_node", f.num_cpus_per_node)
    _check(
        "federation.max_concurrent_nodes",
        f.max_concurrent_nodes >= 0,
        "0 (auto) or an integer >= 1",
        f.max_concurrent_nodes,
    )
    if f.ray_address is not None and f.backend != "ray":
        raise ConfigError(
            f"federation.ray_address={f.ray_address!r} needs federation.backend=ray (the in-process grid uses no Ray)"
        )
    _positive("federation.timeout_s", f.timeout_s)
    _positive("federation.discovery_timeout_s", f.discovery_timeout_s)
    _check("federation.dropout", 0.0 <= f.dropout < 1.0, "0 <= probability < 1", f.dropout)
    _check("federation.availability", 0.0 < f.availability <= 1.0, "0 < probability <= 1", f.availability)
    for group, probability in f.availability_by_group.items():
        _check(f"federation.availability_by_group.{group}", 0.0 < probability <= 1.0, "0 < p <= 1", probability)
    if f.availability_by_group and f.availability_attribute is None:
        raise ConfigError("federation.availability_by_group needs federation.availability_attribute (a user attribute)")
    _check("federation.straggler_sigma", f.straggler_sigma >= 0, "a number >= 0", f.straggler_sigma)
    _check("federation.deadline_s", f.deadline_s >= 0, "0 (no deadline) or seconds > 0", f.deadline_s)
    _check("federation.node_crash_prob", 0.0 <= f.node_crash_prob < 1.0, "0 <= probability < 1", f.node_crash_prob)
    _check("federation.node_hang_prob", 0.0 <= f.node_hang_prob < 1.0, "0 <= probability < 1", f.node_hang_prob)
    _positive("federation.node_hang_s", f.node_hang_s)


def _strategy(cfg: FedsimConfig) -> None:
    s = cfg.strategy
    _one_of("strategy.name", s.name, names("strategy"))
    _positive("strategy.server_lr", s.server_lr)
    _check("strategy.server_momentum", 0.0 <= s.server_momentum < 1.0, "0 <= momentum < 1", s.server_momentum)
    _check("strategy.proximal_mu", s.proximal_mu >= 0, "a number >= 0", s.proximal_mu)
    _positive("strategy.eta", s.eta)
    _positive("strategy.tau", s.tau)
    if s.name == "fedadam" and s.server_lr != 1.0:
        raise ConfigError(
            f"strategy.server_lr={s.server_lr:g} is not used by strategy=fedadam (its step size is strategy.eta); "
            "allowed: 1"
        )


def _privacy(cfg: FedsimConfig) -> None:
    p = cfg.privacy
    _one_of("privacy.mechanism", p.mechanism, names("mechanism"))
    if cfg.mode == "centralized" and p.mechanism != "none":
        raise ConfigError(
            f"privacy.mechanism={p.mechanism} applies to mode=federated; mode=centralized is the "
            "non-private pooled-data ceiling (use privacy=none)"
        )
    _one_of("privacy.clipping", p.clipping, CLIPPINGS)
    _one_of("privacy.accountant", p.accountant, ACCOUNTANTS)
    _positive("privacy.clipping_norm", p.clipping_norm)
    if p.noise_multiplier is not None:
        _check("privacy.noise_multiplier", p.noise_multiplier >= 0, "a number >= 0", p.noise_multiplier)
    if p.target_epsilon is not None:
        _check(
            "privacy.target_epsilon",
            p.target_epsilon > 0,
            "a number > 0, or inf (same pipeline, no noise)",
            p.target_epsilon,
        )
    if p.max_epsilon is not None:
        _positive("privacy.max_epsilon", p.max_epsilon)
    if p.delta is not None:
        _check("privacy.delta", 0.0 < p.delta < 1.0, "0 < delta < 1", p.delta)
    _check("privacy.target_quantile", 0.0 < p.target_quantile < 1.0, "0 < quantile < 1", p.target_quantile)
    _positive("privacy.clip_lr", p.clip_lr)
    _check("privacy.record_sample_rate", 0.0 < p.record_sample_rate <= 1.0, "0 < rate <= 1", p.record_sample_rate)
    if p.mechanism == "on_device" and (p.noise_multiplier is not None or p.target_epsilon is not None):
        raise ConfigError("privacy.mechanism=on_device releases nothing (ε = 0): unset noise_multiplier/target_epsilon")
    if p.mechanism not in ("none", "on_device"):
        if p.noise_multiplier is None and p.target_epsilon is None:
            raise ConfigError(
                f"privacy.mechanism={p.mechanism} needs privacy.noise_multiplier or privacy.target_epsilon"
            )
        if p.noise_multiplier is not None and p.target_epsilon is not None:
            raise ConfigError("set only one of privacy.noise_multiplier and privacy.target_epsilon")
    f = cfg.federation
    if p.mechanism == "central" and f.sampling != "poisson" and f.participation < 1.0:
        raise ConfigError(
            "privacy.mechanism=central needs federation.sampling=poisson when federation.participation "
            "< 1 (the accountant certifies Poisson participation, not a fixed-size cohort)"
        )
    if p.mechanism == "record":
        if (
            cfg.model.name != "mf"
            or cfg.client.optimizer != "sgd"
            or cfg.client.l2 != 0
            or cfg.strategy.proximal_mu != 0
        ):
            raise ConfigError(
                "privacy.mechanism=record (DP-SGD per interaction) supports model=mf with "
                "client.optimizer=sgd, client.l2=0 and no proximal term"
            )
        if f.deadline_s > 0:
            raise ConfigError(
                "federation.deadline_s > 0 is refused with privacy.mechanism=record: whether a device meets the "
                "deadline depends on its number of records, which the record-level accountant does not charge"
            )
        if p.clipping != "fixed":
            raise ConfigError("privacy.mechanism=record uses fixed per-sample clipping (privacy.clipping=fixed)")
    if p.mechanism == "local" and (p.clipping != "fixed" or p.accountant != "pld"):
        raise ConfigError(
            "privacy.mechanism=local uses fixed clipping and the PLD accountant (privacy.clipping=fixed, "
            "privacy.accountant=pld); adaptive clipping and RDP are implemented for privacy=central"
        )


def _consent(cfg: FedsimConfig) -> None:
    co = cfg.consent
    _check("consent.opt_out_rate", 0.0 <= co.opt_out_rate < 1.0, "0 <= rate < 1", co.opt_out_rate)
    _positive("consent.group_factor", co.group_factor)
    _one_of("consent.fallback", co.fallback, FALLBACKS)
    for purpose in ("personalization", "contribution", "measurement"):
        share = getattr(co, f"decline_{purpose}")
        _check(f"consent.decline_{purpose}", 0.0 <= share < 1.0, "0 <= share < 1", share)
    if (co.group_attribute is None) != (co.group_value is None):
        raise ConfigError("set both consent.group_attribute and consent.group_value, or neither")


def _attack(cfg: FedsimConfig) -> None:
    a = cfg.attack
    _check("attack.users_per_round", a.users_per_round >= 0, "an integer >= 0", a.users_per_round)
    _one_of("attack.mitigation", a.mitigation, MITIGATIONS)
    _check("attack.fake_ratio", a.fake_ratio > 0, "a number > 0", a.fake_ratio)
    _check("attack.holdout_share", 0.0 <= a.holdout_share < 0.5, "0 <= share < 0.5", a.holdout_share)
    _check("attack.fit_epochs", a.fit_epochs >= 1, "an integer >= 1", a.fit_epochs)
    _check("attack.reid_sizes", all(x >= 1 for x in a.reid_sizes), "positive integers", a.reid_sizes)
    _check("attack.reid_sample", a.reid_sample >= 0, "0 (everyone) or an integer >= 1", a.reid_sample)


def _gate_metric(name: str, metric: str, mechanism: str) -> None:
    """A pause/rollback picks the released model, so it may only read what the guarantee allows: validation metrics
    (never test), the accountant's figures, item exposure of the top-K lists, and — under local DP, where the server
    only sees noised uploads — the item-set attack on those uploads."""
    allowed = ("val/", "fair_val/", "util/", "privacy/", "items/") + (("risk/itemset",) if mechanism == "local" else ())
    for pattern in metric.split("|"):
        if not pattern.strip().startswith(allowed):
            raise ConfigError(
                f"audit.rules.{name}.metric={pattern.strip()!r} cannot gate a pause/rollback under "
                f"privacy.mechanism={mechanism}; allowed prefixes: {', '.join(allowed)} (or action=warn)"
            )


def _audit(cfg: FedsimConfig) -> None:
    p = cfg.privacy
    for name, rule in cfg.audit.rules.items():
        _one_of(f"audit.rules.{name}.action", rule.action, ACTIONS)
        _one_of(f"audit.rules.{name}.then", rule.then, THENS)
        _one_of(f"audit.rules.{name}.remediation", rule.remediation, REMEDIATIONS)
        if (rule.min is None) == (rule.max is None):
            raise ConfigError(f"audit.rules.{name}: set exactly one of min and max")
        if rule.remediation != "none" and (rule.action != "rollback" or rule.then != "continue"):
            raise ConfigError(
                f"audit.rules.{name}.remediation={rule.remediation} runs after a rollback that continues: it needs "
                f"action=rollback and then=continue (got action={rule.action}, then={rule.then})"
            )
        if rule.remediation == "more_noise" and p.mechanism in ("none", "on_device"):
            raise ConfigError(f"audit.rules.{name}.remediation=more_noise needs a privacy mechanism (privacy=central)")
        if rule.remediation == "more_noise" and p.mechanism == "record":
            raise ConfigError(
                f"audit.rules.{name}.remediation=more_noise is implemented for privacy=central and privacy=local, "
                "not privacy=record"
            )
        if rule.action != "warn":
            _gate_metric(name, rule.metric, p.mechanism)


def _evaluation(cfg: FedsimConfig) -> None:
    e = cfg.evaluation
    _check("evaluation.every", e.every >= 1, "an integer >= 1", e.every)
    _check(
        "checkpoint.every", cfg.checkpoint.every >= 0, "0 (only at the end) or an integer >= 1", cfg.checkpoint.every
    )
    _check("evaluation.k", e.k >= 1, "an integer >= 1", e.k)
    _check("evaluation.n_negatives", e.n_negatives >= 1, "an integer >= 1", e.n_negatives)
    _check("evaluation.max_users", e.max_users >= 0, "0 (everyone) or an integer >= 1", e.max_users)


def _personalization(cfg: FedsimConfig) -> None:
    pe = cfg.personalization
    _one_of("personalization.name", pe.name, names("personalization"))
    _check("personalization.finetune_steps", pe.finetune_steps >= 1, "an integer >= 1", pe.finetune_steps)
    epochs = pe.reconstruction_epochs
    _check("personalization.reconstruction_epochs", epochs >= 1, "an integer >= 1", epochs)
    _check("personalization.score_epochs", pe.score_epochs >= 0, "an integer >= 0", pe.score_epochs)
    scale = pe.offset_scale
    _check("personalization.offset_scale", scale >= 0 and math.isfinite(scale), "a finite number >= 0", scale)
    _check(
        "personalization.ditto_lambda", pe.ditto_lambda >= 0, "a number >= 0 (inf: the shared model)", pe.ditto_lambda
    )
    _check("personalization.personal_epochs", pe.personal_epochs >= 1, "an integer >= 1", pe.personal_epochs)
    if pe.name in ("local_finetune", "dual", "ditto") and cfg.model.name != "mf":
        raise ConfigError(f"personalization.name={pe.name} personalises MF item rows only: it supports model=mf")
    if pe.name in ("dual", "ditto") and cfg.resume_from:
        raise ConfigError(
            f"personalization.name={pe.name} keeps personal state the device checkpoints do not hold: "
            "resume_from is not supported"
        )
    if pe.name != "private_embedding" and cfg.mode == "centralized":
        raise ConfigError(f"personalization.name={pe.name} applies to mode=federated (use private_embedding)")
    # record-level DP-SGD must start from a state the records did not shape without DP: dual's score step and
    # reconstruction's re-fit train the user embedding on the same records without DP-SGD
    fits_without_dp = pe.name == "reconstruction" or (pe.name == "dual" and pe.score_epochs > 0)
    if fits_without_dp and cfg.privacy.mechanism == "record":
        raise ConfigError(
            f"personalization.name={pe.name}"
            + (" with personalization.score_epochs > 0" if pe.name == "dual" else "")
            + " fits the user embedding on the records without DP before DP-SGD: privacy.mechanism=record is not "
            "supported (allowed: none, central, local, on_device"
            + ("; or score_epochs=0" if pe.name == "dual" else "")
            + ")"
        )


def _security(cfg: FedsimConfig) -> None:
    """Poisoning, robust aggregation and secure aggregation (fedsim/security), and the combinations refused."""
    po, s, sa = cfg.attack.poison, cfg.strategy, cfg.secagg
    _check("attack.poison.fraction", 0.0 <= po.fraction < 0.5, "0 <= share < 0.5", po.fraction)
    _one_of("attack.poison.strategy", po.strategy, names("poison"))
    if po.target is not None:
        _check("attack.poison.target", po.target >= 0, "an item id >= 0 (or null: a cold item)", po.target)
    _check("attack.poison.filler_items", po.filler_items >= 1, "an integer >= 1", po.filler_items)
    _positive("attack.poison.update_norm", po.update_norm)
    if po.fraction > 0 and cfg.privacy.mechanism == "record":
        raise ConfigError(
            "attack.poison.fraction > 0 with privacy.mechanism=record is not simulated (DP-SGD devices train on their "
            "recorded data, not a crafted profile); allowed: none, central, local, on_device"
        )
    _one_of("strategy.robust", s.robust, names("robust"))
    _positive("strategy.robust_norm", s.robust_norm)
    _check("strategy.robust_trim", 0.0 <= s.robust_trim < 0.5, "0 <= share < 0.5", s.robust_trim)
    _check("strategy.robust_byzantine", 0.0 <= s.robust_byzantine < 0.5, "0 <= share < 0.5", s.robust_byzantine)
    _check("secagg.min_users", sa.min_users >= 2, "an integer >= 2", sa.min_users)
    _check("secagg.num_shares", sa.num_shares >= 0, "0 (auto) or an integer >= 1", sa.num_shares)
    _positive("secagg.clipping_range", sa.clipping_range)
    _check("secagg.modulus_bits", 2 <= sa.modulus_bits <= 32, "2..32 (Flower's modulus_range < 2**32)", sa.modulus_bits)
    _check(
        "secagg.quantization_bits",
        1 <= sa.quantization_bits < sa.modulus_bits,
        f"1..secagg.modulus_bits-1 ({sa.modulus_bits - 1})",
        sa.quantization_bits,
    )
    if s.robust != "none":
        if sa.enabled:
            raise ConfigError(
                f"strategy.robust={s.robust} needs each user's update, which secagg.enabled=true hides from the "
                "server (it learns only the sum); use one of them"
            )
        if cfg.federation.user_weighting != "uniform":
            raise ConfigError(
                f"strategy.robust={s.robust} aggregates users unweighted: set federation.user_weighting=uniform"
            )
        mechanism = cfg.privacy.mechanism
        if mechanism not in ("none", "central") or (mechanism == "central" and s.robust != "norm_bound"):
            raise ConfigError(
                f"strategy.robust={s.robust} with privacy.mechanism={cfg.privacy.mechanism}: only norm_bound keeps "
                "the accountant's sensitivity (a sum of bounded updates), and local/record DP are not simulated per "
                "user upload; allowed: privacy=none with any robust rule, privacy=central with norm_bound"
            )
        if cfg.mode != "federated":
            raise ConfigError(f"strategy.robust={s.robust} applies to mode=federated")
    if sa.enabled and cfg.federation.user_weighting != "uniform":
        raise ConfigError(
            f"secagg.enabled=true with federation.user_weighting={cfg.federation.user_weighting}: each user's w_u·Δ_u "
            "would be clipped at ±secagg.clipping_range per coordinate; use federation.user_weighting=uniform"
        )
    if sa.enabled and cfg.privacy.mechanism in ("local", "on_device"):
        raise ConfigError(
            f"secagg.enabled=true with privacy.mechanism={cfg.privacy.mechanism} is not simulated; allowed: none, "
            "central, record"
        )


def _mitigation(cfg: FedsimConfig) -> None:
    mi = cfg.mitigation
    _one_of("mitigation.name", mi.name, FAIRNESS_MITIGATIONS)
    _check("mitigation.regularizer_weight", mi.regularizer_weight >= 0, "a number >= 0", mi.regularizer_weight)
    _check("mitigation.rerank_weight", 0.0 <= mi.rerank_weight <= 1.0, "0 <= weight <= 1", mi.rerank_weight)
    k = cfg.evaluation.k
    _check("mitigation.rerank_pool", mi.rerank_pool >= k, f"an integer >= evaluation.k ({k})", mi.rerank_pool)
    _check("mitigation.head_share", 0.0 < mi.head_share < 1.0, "0 < share < 1", mi.head_share)
    remedies = {r.remediation for r in cfg.audit.rules.values()} if cfg.audit.enabled else set()
    wanted = ({mi.name} | remedies) & {"exposure_regularizer", "rerank"}
    if cfg.mode == "centralized" and wanted:
        raise ConfigError(f"mitigation {sorted(wanted)[0]} applies to mode=federated (the devices mitigate)")
    if "exposure_regularizer" in wanted and cfg.privacy.mechanism == "record":
        raise ConfigError(
            "mitigation exposure_regularizer (as mitigation.name or an audit remediation) lives in the local "
            "objective, not in privacy=record's DP-SGD (whose per-record clipping would have to bound it too)"
        )


def _erasure(cfg: FedsimConfig) -> None:
    er = cfg.erasure
    _check("erasure.share", 0.0 <= er.share < 1.0, "0 <= share < 1", er.share)
    _one_of("erasure.policy", er.policy, ERASURE_POLICIES)
    if er.share == 0:
        return
    if cfg.mode != "federated" or cfg.resume_from:
        raise ConfigError("erasure.share > 0 needs a fresh federated run (mode=federated, no resume_from)")
    if cfg.privacy.mechanism == "record":  # its bound is per record: nothing user-level to print for an erased user
        raise ConfigError(
            "erasure.share > 0 with privacy=record is refused: record-level DP bounds one rating, not a user; "
            "allowed: privacy none, central, local, on_device"
        )
    if not (cfg.attack.membership and cfg.attack.holdout_share > 0):  # the before/after is that attack's AUC
        raise ConfigError(
            "erasure.share > 0 needs attack.membership=true and attack.holdout_share > 0 (never-members): the "
            "erasure is measured by the membership attack on erased users against them"
        )
    every, rounds = cfg.evaluation.every, cfg.federation.rounds
    _check(
        "erasure.round",
        every < er.round <= rounds and (er.round - 1) % every == 0,
        f"one round after an evaluation round (a multiple of evaluation.every={every} plus 1), at most "
        f"federation.rounds={rounds}: the attack and the DP bound are measured on the model they asked about",
        er.round,
    )
    restoring = [n for n, r in cfg.audit.rules.items() if r.action != "warn"] if cfg.audit.enabled else []
    if er.policy == "retrain" and restoring:
        raise ConfigError(
            f"erasure.policy=retrain with audit rule {restoring[0]!r} (action != warn) is refused: a pause or "
            "rollback could restore a model trained on the erased users"
        )


def to_schema(cfg: DictConfig) -> FedsimConfig:
    """Turn a composed Hydra config into a validated :class:`FedsimConfig`."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    plain.pop("experiment", None)
    return validate(_build(FedsimConfig, plain))


def _build(schema: type, values: dict[str, Any]) -> Any:
    """Instantiate ``schema`` from plain values, recursing into nested dataclasses and dicts of dataclasses."""
    hints = typing.get_type_hints(schema)
    known = {f.name for f in fields(schema)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in {schema.__name__}; allowed: {', '.join(sorted(known))}")
        hint = hints[key]
        args = typing.get_args(hint)
        if is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value)
        elif typing.get_origin(hint) is dict and len(args) == 2 and is_dataclass(args[1]) and isinstance(value, dict):
            value = {k: _build(args[1], v) if isinstance(v, dict) else v for k, v in value.items()}
        kwargs[key] = value
    return schema(**kwargs)


def from_dict(values: dict[str, Any]) -> FedsimConfig:
    """Rebuild a :class:`FedsimConfig` from :func:`as_dict` output (how config reaches Ray workers and resumes)."""
    return _build(FedsimConfig, values)


def as_dict(cfg: FedsimConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
