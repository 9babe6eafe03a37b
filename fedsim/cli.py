"""``fedsim``: the Hydra entry point. Compose the config, validate it, run, print the summary.

Bad input — a value out of range, an unknown key or group option, a missing or malformed data file, an output folder
that cannot be written or already holds a run, a bad ``resume_from`` — ends with one line naming what is wrong and
what is allowed, exit code 2, no traceback, and no folder left behind.

Why the output handling looks the way it does:

* Hydra creates the run folder and writes ``.hydra/`` into it *before* it calls the task function, so validating
  there is too late to avoid a junk folder per typo. :func:`main` therefore composes and validates the config first
  (:func:`preflight`) and only then hands over to Hydra. What can only fail later (data files are read inside
  :func:`fedsim.run.run`; a ``--multirun`` job's values are validated when the job starts) removes the run folder
  again — but only a folder this process created that holds nothing but Hydra's own files (:func:`discard`):
  nothing already written is ever deleted.
* Run folders never collide: ``hydra.run.dir`` and ``hydra.sweep.dir`` go through the ``fedsim.run_dir`` resolver,
  which claims the timestamped folder with an atomic ``mkdir`` and appends ``_2``, ``_3``, ... when a run started in
  the same second already took it (names stay as readable as before).
* An explicit ``output_dir`` is the run folder itself (``.hydra/`` included). One that already holds a run
  (``summary.json`` or ``metrics.jsonl``) is refused rather than mixed: continuing a run is ``resume_from``, which
  writes to a new folder. Two runs started on the same empty folder at the same moment both pass that check, so the
  check also takes the folder's lock (:mod:`fedsim.runlock`) before Hydra writes anything there; the loser is
  refused with one line and the winner's files are untouched. A ``resume_from`` is read before ``output_dir`` is
  created, so a refused one leaves no folder; one whose run is still running (its lock is held) is refused.
* Signals: a first SIGINT/SIGTERM stops the run after its round (exit 130/143, one line); a second one stops it at
  once (:func:`_stopped_at_once`), also under Ray.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from fedsim import runlock
from fedsim.config import ConfigError, FedsimConfig, register_schemas, to_schema
from fedsim.data.movielens import DatasetError
from fedsim.resolvers import register as register_resolvers
from fedsim.tracking.naming import named_explicitly, run_name

register_schemas()

# conf/ sits beside the package in the repository (the README installs with `pip install -e .`).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

RUN_FILES = ("summary.json", "metrics.jsonl")  # a folder holding either already belongs to a run
HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})  # what Hydra writes into .hydra/
JOB_LOG = "cli.log"  # Hydra's job log: hydra.job.name is this module's name
# lines of Hydra/OmegaConf error messages that locate the error in Hydra's internals, not in the user's input
_NOISE = ("full_key:", "reference_type=", "object_type=", "Set the environment variable HYDRA_FULL_ERROR",
          "Config search path", "provider=", "See https://hydra.cc")  # fmt: skip

_created: set[Path] = set()  # folders this process created: the only ones an aborted run may remove
_refusals: dict[Path, str] = {}  # stand-in folder -> why the intended run folder could not be used
_claimed: list[Path] = []  # run and sweep folders the resolver made for this process


def _absolute(path: str | Path) -> Path:
    """Absolute and normalised like Hydra's ``hydra.runtime.output_dir`` (``os.path.abspath``), so paths compare."""
    return Path(os.path.abspath(path))


def _reason(error: OSError) -> str:
    """``Permission denied`` / ``No such file or directory (/proc/x)``: the OS's words, without a traceback."""
    reason = error.strerror or str(error)
    return f"{reason} ({error.filename})" if error.filename else reason


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` that remembers which folders it created, so that an aborted run removes exactly those."""
    path = _absolute(path)
    for folder in reversed([p for p in (path, *path.parents) if not p.is_dir()]):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # made by a concurrent run meanwhile (theirs, not ours), or a file: the next mkdir says so
        _created.add(folder)


def _probe_writable(path: Path) -> None:
    """Create ``path`` and a temporary file in it: permissions, read-only mounts and pseudo file systems such as
    ``/proc`` all fail here, before anything runs, instead of as a traceback after the data is loaded."""
    _make_dirs(path)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".fedsim-write-test-"):
        pass


def claim(base: Path) -> Path:
    """A folder at ``base`` that no other run uses, created by this call: ``base`` itself or, when taken (a run with
    the same name started in the same second), ``base_2``, ``base_3``, ... ``os.mkdir`` fails when the folder exists,
    so of two concurrent runs exactly one gets each name."""
    number, retries = 1, 3
    while True:
        candidate = base if number == 1 else base.with_name(f"{base.name}_{number}")
        _make_dirs(candidate.parent)
        try:
            candidate.mkdir()
        except FileExistsError:
            number += 1
            continue
        except FileNotFoundError:
            # a concurrent aborted run removed the (then empty) parent between the two mkdirs: make it again
            retries -= 1
            if retries == 0:
                raise
            continue
        _created.add(_absolute(candidate))
        return candidate


def output_problem(path: Path) -> str | None:
    """Why an explicit ``output_dir`` cannot take a new run (a live run holds it, it holds a run, or it cannot be
    written), else None — and then this process holds its lock (:mod:`fedsim.runlock`) until it ends, so that a run
    started at the same moment on the same folder is refused instead of writing into it too."""
    pid = runlock.holder(path)  # checked first, creating nothing in a folder that is not ours
    if pid is not None:
        return runlock.in_use(f"output_dir={path}", pid)
    held = [name for name in RUN_FILES if (path / name).exists()]
    if held:
        return (
            f"output_dir={path} already holds a run ({', '.join(held)}); choose a new folder "
            "(resume_from=<that run> continues it into a new output_dir)"
        )
    try:
        _probe_writable(path)
        pid = runlock.acquire(path)
    except OSError as error:
        return f"output_dir={path} is not writable: {_reason(error)}"
    if pid is not None:  # a run started at the same moment won the lock
        return runlock.in_use(f"output_dir={path}", pid)
    if any((path / name).exists() for name in RUN_FILES):  # a run ended there between the checks
        runlock.release(path)
        return output_problem(path)
    return None


def _run_dir(output_dir: str | None, default: str) -> str:
    """The ``fedsim.run_dir`` resolver behind ``hydra.run.dir``/``hydra.sweep.dir``: ``output_dir`` when given and
    fit for a new run, else a new folder claimed at ``default`` (see :func:`claim`).

    Hydra writes ``.hydra/`` into the folder returned here before fedsim can refuse anything, so a folder that must
    not be touched (it holds a run, or cannot be written) is swapped for a throw-away stand-in; the task function
    then refuses with one line and removes the stand-in.
    """
    if output_dir is not None:
        problem = output_problem(Path(output_dir))
        if problem is None:
            return output_dir
    else:
        try:
            folder = claim(Path(default))
            _claimed.append(_absolute(folder))
            _probe_writable(folder)
            return str(folder)
        except OSError as error:
            problem = f"the run folder {default} is not writable: {_reason(error)} (set output_dir=<a writable folder>)"
    stand_in = _absolute(tempfile.mkdtemp(prefix="fedsim-refused-"))
    _created.add(stand_in)
    _refusals[stand_in] = problem
    return str(stand_in)


if not OmegaConf.has_resolver("fedsim.run_dir"):
    # cached: Hydra resolves hydra.run.dir more than once per run, and each resolution must not claim a new folder
    OmegaConf.register_new_resolver("fedsim.run_dir", _run_dir, use_cache=True)
register_resolvers()  # presets' functions of N (fedsim/resolvers.py)


def discard(folder: Path, job_log: str) -> None:
    """Remove ``folder`` after a refused run when this process created it (it, or a folder above it, such as a
    sweep's) and it holds only what Hydra wrote before fedsim refused: ``.hydra/``, an empty ``<job>.log``, a
    sweep's ``multirun.yaml``. Then remove the parents this process created and left empty (a sweep folder whose
    only job was refused keeps just ``multirun.yaml``). Anything else in the folder keeps it whole: nothing
    already written is lost."""
    folder = _absolute(folder)
    runlock.release(folder)  # the refused run gives the folder back (and removes its lock file)
    if not folder.is_dir() or not any(p in _created for p in (folder, *folder.parents)):
        return
    removable: list[Path] = []
    for entry in folder.iterdir():
        if entry.name == ".hydra" and entry.is_dir() and not entry.is_symlink():
            inside = list(entry.iterdir())
            if not all(f.name in HYDRA_FILES and f.is_file() for f in inside):
                return
            removable += inside
        elif entry.name == job_log and entry.is_file() and entry.stat().st_size == 0:
            removable.append(entry)
        elif entry.name == "multirun.yaml" and entry.is_file():  # a sweep folder whose jobs never started
            removable.append(entry)
        else:
            return
    for file in removable:
        file.unlink()
    if (folder / ".hydra").is_dir():
        (folder / ".hydra").rmdir()
    folder.rmdir()
    for parent in folder.parents:
        if parent not in _created:
            break
        if [p.name for p in parent.iterdir()] == ["multirun.yaml"]:
            (parent / "multirun.yaml").unlink()
        try:
            parent.rmdir()
        except OSError:  # not empty: another run (or the user) has something there
            break


def _discard_created() -> None:
    """Before Hydra started: remove the folders this process created (and what it locked), as long as they are
    empty — a refusal found after an ``output_dir`` check leaves nothing behind."""
    for folder in sorted(_created, key=lambda p: len(p.parts), reverse=True):
        discard(folder, JOB_LOG)


def one_line(error: HydraException | OmegaConfBaseException) -> str:
    """A Hydra composition error as one line in fedsim's style (Hydra prints five to ten lines, exit code 1)."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option} is not an option; choose one of: {', '.join(error.options)}"
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and is_dataclass(cause.object_type):
        known = sorted(f.name for f in fields(cause.object_type))
        return f"unknown key {cause.full_key!r} in {cause.object_type.__name__}; allowed: {', '.join(known)}"
    if isinstance(cause, ValidationError) and cause.full_key:
        return f"{cause.full_key}: {str(cause).splitlines()[0]}"
    lines = str(error).splitlines() + (str(cause).splitlines() if cause is not None else [])
    kept = [line.strip() for line in lines if line.strip() and not line.strip().startswith(_NOISE)]
    return "; ".join(kept) or type(error).__name__


def check_resume(config: FedsimConfig) -> None:
    """Read ``resume_from`` before anything starts, so a bad one is refused before Hydra makes a folder or the data
    is loaded (:func:`fedsim.run.run` reads it again with the privacy state, before Ray starts). It also stops a
    centralized run given ``resume_from``, which would otherwise ignore it and silently start from scratch."""
    if config.resume_from:
        pid = runlock.holder(config.resume_from)
        if pid is not None:  # its checkpoint is still moving: a resume now would fork the run
            raise ConfigError(runlock.in_use(f"resume_from={config.resume_from}", pid))
        from fedsim.resume import load_resume  # heavy imports (torch), only for a resume

        load_resume(config)


def _hydra_compose(overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """``conf/`` composed with Hydra overrides, as Hydra's compose API gives it (no output folder is made)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="cli"):
            return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)
    finally:
        GlobalHydra.instance().clear()  # hydra.main initialises its own


def compose(overrides: list[str] | tuple[str, ...] = ()) -> FedsimConfig:
    """``conf/`` composed with Hydra overrides and validated — exactly what ``fedsim <overrides>`` runs (no output
    directory side effects). Used by ``flwr run`` (fedsim.flower_apps), the tests and the experiment scripts."""
    return to_schema(_hydra_compose(overrides), overrides)


def _compose_checked(overrides: list[str]) -> DictConfig | None:
    """``conf/`` composed with ``overrides`` (Hydra's section included); Hydra's errors as one-line
    :class:`ConfigError`, or None under ``HYDRA_FULL_ERROR=1`` (then Hydra reports them in full)."""
    try:
        return _hydra_compose(overrides, with_hydra=True)
    except (HydraException, OmegaConfBaseException) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return None
        raise ConfigError(one_line(error)) from error


def _sweep_variants(overrides: list[str]) -> list[list[str]] | None:
    """One override list per value of each swept key (the others at their first value): every key and every value of
    a ``--multirun`` command line composes once, without running the product of all sweeps. None when the sweep
    needs Hydra's config loader to expand (``glob(...)``) or is empty: Hydra then reports alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(one_line(error)) from error
    base, alternatives = list(overrides), []
    for index, override in enumerate(parsed):
        if not override.is_sweep_override():
            continue
        try:
            values = [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
        except Exception:  # a sweep this check cannot expand is left to Hydra, never refused here
            return None
        if not values:
            return None
        base[index] = values[0]
        alternatives += [(index, value) for value in values[1:]]
    variants = [base]
    for index, value in alternatives:
        variants.append([*base[:index], value, *base[index + 1 :]])
    return variants


def preflight(arguments: Sequence[str]) -> FedsimConfig | None:
    """Validate what ``fedsim <arguments>`` will run before Hydra creates a folder; raises :class:`ConfigError`.

    A single run is composed and validated in full, with its ``output_dir`` and ``resume_from``. A ``--multirun``
    is checked for what Hydra itself would reject (unknown keys and options, bad syntax) for every swept value; its
    jobs' values are validated one by one in :func:`run_job`, which removes a refused job's folder. Returns the
    config of a single run, None otherwise (Hydra's other flags, ``--cfg``, ``--help``, ..., go to Hydra as they are).
    """
    flags = [argument for argument in arguments if argument.startswith("-")]
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    if any(flag not in ("-m", "--multirun") for flag in flags):
        return None
    if flags or any(override.replace(" ", "").startswith("hydra.mode=MULTIRUN") for override in overrides):
        for variant in _sweep_variants(overrides) or []:
            if _compose_checked(variant) is None:
                break
        return None
    cfg = _compose_checked(overrides)
    if cfg is None or cfg.hydra.mode == RunMode.MULTIRUN:
        return None
    with open_dict(cfg):
        del cfg["hydra"]  # resolving it would claim a run folder
    config = to_schema(cfg, overrides)
    check_resume(config)  # before output_dir is created: a refused resume leaves no folder behind
    if config.output_dir:
        problem = output_problem(Path(config.output_dir))
        if problem is not None:
            raise ConfigError(problem)
    return config


SWEEP_ENV = "FEDSIM_SWEEP"  # "<jobs> <swept key> ...": set by main() for a --multirun, read by each job (any process)


def sweep_plan(overrides: list[str]) -> tuple[int, list[str]] | None:
    """How many jobs a ``--multirun`` of ``overrides`` launches and which keys it sweeps: the command line's sweeps
    and the preset's ``hydra.sweeper.params`` (the command line wins on a shared key, as in Hydra's basic sweeper).
    None when a sweep cannot be expanded here (``glob(...)``) — the jobs then say only their number."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    variants = _sweep_variants(overrides)
    cfg = _compose_checked(variants[0] if variants else overrides)
    params = dict(cfg.hydra.sweeper.get("params") or {}) if cfg is not None else {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    sizes: dict[str, int] = {}
    try:
        for override in OverridesParser.create().parse_overrides(arguments):
            key = override.get_key_element()
            sizes.pop(key, None)  # a later value of the same key replaces the earlier one
            if override.is_sweep_override():
                sizes[key] = len(list(override.sweep_string_iterator()))
    except Exception:  # a sweep this count cannot expand is left to Hydra
        return None
    total = 1
    for size in sizes.values():
        total *= size
    return total, list(sizes)


def job_line(number: int, task_overrides: Sequence[str], plan: str | None) -> str:
    """``job 3 of 15: privacy.target_epsilon=4 seed=0``: where a sweep stands, said as each job starts."""
    jobs, *keys = (plan or "").split()
    swept = [o for o in task_overrides if o.split("=", 1)[0] in keys] if keys else list(task_overrides)
    of = f" of {jobs}" if jobs else ""
    return f"job {number + 1}{of}" + (f": {' '.join(swept)}" if swept else "")


def with_run_name(arguments: list[str], config: FedsimConfig | None) -> list[str]:
    """``arguments`` plus ``name=<what the run is>`` (:func:`fedsim.tracking.naming.run_name`) unless they name the
    run themselves: Hydra then makes ``results/runs/<that name>/<timestamp>`` and the run carries it everywhere
    (summary.json, report.md, TensorBoard). A ``--multirun`` keeps its preset's name for the sweep folder
    (``results/sweeps/<preset>/<time>/<job>``, as the experiment READMEs say) and for its jobs; the HParams table
    and each job's ``.hydra/overrides.yaml`` tell the jobs apart."""
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    if config is None or named_explicitly(overrides):  # a sweep, --cfg, --help, ...: as they are
        return arguments
    return [*arguments, f"name='{run_name(config.name, overrides)}'"]  # quoted: a name holds = and ,


def _fail(error: Exception) -> NoReturn:
    print(f"fedsim: error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_job(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run (one job of a sweep) into Hydra's run folder or ``output_dir``."""
    if not cfg.get("verbose", False):
        logging.getLogger().setLevel(logging.WARNING)  # Hydra's job logging is INFO; keep the console clean
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a sweep: say which job this is (issue 20)
        print(f"fedsim: {job_line(hydra_cfg.job.num, hydra_cfg.overrides.task, os.environ.get(SWEEP_ENV))}", flush=True)
    hydra_dir = _absolute(hydra_cfg.runtime.output_dir)
    run_dir = hydra_dir
    try:
        config = to_schema(cfg, hydra_cfg.overrides.task)
        refusal = next((_refusals[p] for p in (hydra_dir, *hydra_dir.parents) if p in _refusals), None)
        if refusal is not None:
            raise ConfigError(refusal)
        check_resume(config)  # a sweep job's: before its output_dir is created
        if config.output_dir:
            run_dir = _absolute(config.output_dir)
            problem = output_problem(run_dir)  # a sweep job, or hydra.run.dir overridden: not checked yet
            if problem is not None:
                raise ConfigError(problem)
        from fedsim.run import print_summary, run  # heavy imports (torch, flwr) after validation
        from fedsim.server.loop import FederationError
        from fedsim.simulation import stop_signal

        summary = run(config, config.output_dir or hydra_cfg.runtime.output_dir)  # locks a fresh Hydra folder
    except (ConfigError, DatasetError) as error:
        for folder in {hydra_dir, run_dir}:
            discard(folder, f"{hydra_cfg.job.name}.log")
        _fail(error)
    except KeyboardInterrupt as stop:  # a second SIGINT/SIGTERM (fedsim.simulation.StopNow), or Ctrl-C before the run
        signum = getattr(stop, "signum", None)
        cause = f"a second {signal.Signals(signum).name}" if signum else "Ctrl-C"
        _stopped_at_once(cause, signum or signal.SIGINT, run_dir, hydra_dir, f"{hydra_cfg.job.name}.log")
    except FederationError as error:  # the run started: its files up to the last checkpoint stay
        print(f"fedsim: error: {error} (files up to the last checkpoint are in {run_dir})", file=sys.stderr)
        sys.exit(1)
    except OSError as error:  # a full disk or quota, a folder removed under the run: not the user's input (exit 1)
        if cfg.get("verbose", False):
            raise
        print(f"fedsim: error: {_reason(error)} (the run stopped; what it wrote is in {run_dir})", file=sys.stderr)
        sys.exit(1)
    finally:
        runlock.release(run_dir)  # a sweep's next job may use the same folder only to be refused: it holds a run
    print_summary(summary)
    if str(summary.get("stop_reason", "")).startswith("interrupted"):
        print(
            f"fedsim: {summary['stop_detail']} — continue with: fedsim resume_from={summary.get('run_dir')} "
            "(and the same overrides)",
            file=sys.stderr,
        )
        sys.exit(128 + (stop_signal() or signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM (the shell's convention)
    return summary.get("best", {}).get(f"val/hr@{config.evaluation.k}")


def _stopped_at_once(cause: str, signum: int, run_dir: Path, hydra_dir: Path, job_log: str) -> NoReturn:
    """A second SIGINT/SIGTERM (``cause``): one line saying what is left to resume from, then exit at once.

    ``os._exit`` and not ``sys.exit``: under Ray, Flower's ServerApp thread and its worker threads are still blocked
    waiting for replies that will not come (Flower stopped Ray as the interrupt passed through it), and the
    interpreter would join them at exit — the minute-long hang a second Ctrl-C used to end in. Every file the run
    wrote is already on disk (each checkpoint, summary.json and metrics row is written whole)."""
    from fedsim.checkpoint import latest

    try:
        found = latest(run_dir)
    except (OSError, ValueError, KeyError, TypeError):  # a damaged pointer: resume_from says what is wrong
        found = None
    if found:
        what = (
            f"its checkpoint of round {found[0]} is in {run_dir} — continue with: fedsim resume_from={run_dir} "
            "(and the same overrides)"
        )
    else:
        what = f"no checkpoint was written yet: start it again (what it wrote, if anything, is in {run_dir})"
        for folder in {hydra_dir, run_dir}:
            discard(folder, job_log)  # stopped before it wrote anything of its own: no folder is left behind
    print(f"fedsim: stopped at once by {cause}; {what}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    runlock.release_all()
    os._exit(128 + signum)


def main() -> Any:
    """The ``fedsim`` command: :func:`preflight`, then Hydra (which parses ``sys.argv`` itself)."""
    try:
        config = preflight(sys.argv[1:])
        flags = {a for a in sys.argv[1:] if a.startswith("-")}
        if flags and flags <= {"-m", "--multirun"}:  # a sweep to run (not --cfg, --help, ...)
            plan = sweep_plan([a for a in sys.argv[1:] if not a.startswith("-")])
            if plan is not None:
                os.environ[SWEEP_ENV] = " ".join([str(plan[0]), *plan[1]])  # inherited by joblib's worker processes
        sys.argv[1:] = with_run_name(sys.argv[1:], config)
    except ConfigError as error:
        _discard_created()  # a folder an output_dir check made before a later check refused
        _fail(error)
    except KeyboardInterrupt:
        _discard_created()
        print("fedsim: stopped by Ctrl-C before the run started", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    try:
        return run_job()
    except SystemExit as stop:
        if stop.code not in (None, 0):  # Hydra gave up after making a folder (e.g. composing a sweep's job)
            for folder in _claimed:
                discard(folder, JOB_LOG)
        raise
    except KeyboardInterrupt:  # outside a run (Hydra starting, the summary printing): its files are complete
        print("fedsim: stopped by Ctrl-C", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def world_main(argv: Sequence[str] | None = None) -> None:
    """``fedsim-world <folder> [overrides...]``: build the population of ``fedsim <overrides>`` once and save its
    arrays to ``<folder>`` for SuperNodes to memory-map (``--node-config "... world='<folder>'"`` under ``flwr
    run``): each then reads only its own partition's rows."""
    from fedsim.runtime import export_world, get_runtime

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-") or "=" in args[0]:
        _fail(
            ValueError(
                "usage: fedsim-world <folder> [hydra overrides...], e.g. fedsim-world world/ dataset.n_users=1000000"
            )
        )
    try:
        rt = get_runtime(compose(args[1:]))
        folder = export_world(rt, args[0])
    except (HydraException, OmegaConfBaseException) as error:
        _fail(ValueError(one_line(error)))
    except (ConfigError, DatasetError, OSError) as error:
        _fail(error)
    print(f"fedsim-world: saved {rt.data.source}: {rt.data.n_users} users, {len(rt.shards)} partitions, to {folder}")


if __name__ == "__main__":
    main()
