"""Tampered and damaged checkpoints, resumed by the real ``fedsim`` command: the probe table of
experiments/reliability/README.md ("Tampering and damaged checkpoints (issue 18)").

For each code base (``--before <checkout>``: a source tree of the base commit, e.g. made with ``git worktree add``;
and this checkout) it makes two finished 4-round runs (central DP with ``strategy=fedavgm``; local DP), resumes each
untouched to 6 rounds (the reference), then, for every probe, copies the run, applies one edit and resumes it to 6
rounds with the same overrides. Variants:

* **every copy** — the edit in every stored state of the run (each ``checkpoint/round_*`` and the final state);
* **newest only** — in the newest checkpoint only (this checkout keeps the one before to fall back to);
* **manifest rewritten** — every copy, and each ``manifest.json`` recomputed to match, as a tamperer who knows the
  format would (this checkout only: the base has no manifest).

Each resume is classified from its exit code, its console and its files:

* ``refused`` — exit 1/2, exactly one stderr line ``fedsim: error: ...``, no traceback;
* ``fell back`` — exit 0, a ``resume_from: ...`` line said which checkpoint was passed over, and the results equal
  the reference resume's (metrics of rounds 5-6 and model.npz);
* ``traceback`` — a Python traceback on stderr (or any other exit);
* ``silent, ε x < y`` — exit 0, nothing said, and the final ε below the reference's: the run under-reports ε;
* ``silent, other results`` — exit 0, nothing said, results differ from the reference (e.g. a fresh start of state);
* ``unaffected`` — exit 0, nothing said, the same results as the reference.

    mkdir /tmp/fedsim-base && git archive <base commit> | tar -x -C /tmp/fedsim-base
    python experiments/reliability/probe_checkpoints.py --before /tmp/fedsim-base > /tmp/checkpoints.md

About 30-40 minutes on 2 shared cores (some 100 tiny runs, each a new Python process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2]
ROOT = Path("/tmp/fedsim-checkpoint-probes")
TINY = [
    "dataset.n_users=60",
    "dataset.n_items=300",
    "federation.backend=inprocess",
    "progress=false",
    "attack=off",
    "evaluation.every=2",
]
CENTRAL = ["privacy=central", "privacy.noise_multiplier=0.8", "federation.participation=0.5", "strategy=fedavgm"]
LOCAL = ["privacy=local", "privacy.noise_multiplier=2.0", "federation.participation=0.5"]
EARLIER, RESUMED = 4, 6


# --- edits -----------------------------------------------------------------------------------------------------------
def _json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        payload = json.loads((folder / name).read_text())
        change(payload)
        (folder / name).write_text(json.dumps(payload))

    return edit


def _history(change: Callable[[list], None]) -> Callable[[Path], None]:
    return _json("privacy_state.json", lambda state: change(state["accountant"]["history"]))


def _first(index: int, value: Callable[[float], float]) -> Callable[[list], None]:
    def change(history: list) -> None:
        history[0][index] = value(history[0][index])

    return change


def _halve_segments(state: dict) -> None:
    state["segments"][-1][1] = [count // 2 for count in state["segments"][-1][1]]


def _halve_loop(state: dict) -> None:
    state["participations"] = [count // 2 for count in state["participations"]]


def _both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        for one in edits:
            one(folder)

    return edit


def _truncate(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return edit


def _remove(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return edit


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def _model(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        with np.load(folder / "model.npz") as data:
            arrays = {k: data[k].copy() for k in data.files}
        change(arrays)
        with (folder / "model.npz").open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    return edit


def _nan(arrays: dict[str, np.ndarray]) -> None:
    arrays[sorted(arrays)[0]].flat[0] = np.nan


def _short(arrays: dict[str, np.ndarray]) -> None:
    name = sorted(arrays)[0]
    arrays[name] = arrays[name][:-1]


@dataclass
class Probe:
    kind: str  # "tamper" (lowers ε) or "damage"
    what: str
    edit: Callable[[Path], None]
    base: str = "central"  # which earlier run
    file: str = ""  # the file the edit touches (skipped in copies that do not hold it)
    pointer: bool = False  # the edit is to checkpoint/latest.json, not to a state folder


PRIVACY, LOOP = "privacy_state.json", "loop_state.json"
DEVICE_1, DEVICE_2 = "devices/partition_00001.npz", "devices/partition_00002.npz"
HALVED = _json(PRIVACY, _halve_segments)
PROBES = [
    Probe("tamper", f"{PRIVACY}: 2 releases fewer", _history(_first(2, lambda n: n - 2)), file=PRIVACY),
    Probe("tamper", f"{PRIVACY}: z x1.5 in the history", _history(_first(1, lambda z: z * 1.5)), file=PRIVACY),
    Probe("tamper", f"{PRIVACY}: q halved in the history", _history(_first(0, lambda q: q / 2)), file=PRIVACY),
    Probe("tamper", f"{PRIVACY}: history emptied", _history(lambda h: h.clear()), file=PRIVACY),
    Probe(
        "tamper",
        f"{PRIVACY}: δ 1e-5 -> 1e-3",
        _json(PRIVACY, lambda s: s["accountant"].update(delta=1e-3)),
        file=PRIVACY,
    ),
    Probe("tamper", "local DP: participation counts halved", HALVED, "local", PRIVACY),
    Probe("tamper", f"local DP: counts halved, {LOOP} too", _both(HALVED, _json(LOOP, _halve_loop)), "local", PRIVACY),
    Probe("damage", "model.npz truncated", _truncate("model.npz"), file="model.npz"),
    Probe("damage", "strategy_state.npz truncated", _truncate("strategy_state.npz"), file="strategy_state.npz"),
    Probe("damage", "a device file truncated", _truncate(DEVICE_1), file=DEVICE_1),
    Probe("damage", f"{PRIVACY} not JSON", _write(PRIVACY, "{"), file=PRIVACY),
    Probe("damage", f"{LOOP} not JSON", _write(LOOP, "[1, 2"), file=LOOP),
    Probe("damage", "NaN in model.npz", _model(_nan), file="model.npz"),
    Probe("damage", "model.npz of another shape", _model(_short), file="model.npz"),
    Probe("damage", "a device file missing", _remove(DEVICE_2), file=DEVICE_2),
    Probe("damage", "devices/ missing", _remove("devices"), file="devices"),
    Probe("damage", f"{LOOP} missing", _remove(LOOP), file=LOOP),
    Probe("damage", "strategy_state.npz missing", _remove("strategy_state.npz"), file="strategy_state.npz"),
    Probe("damage", "callbacks.json missing", _remove("callbacks.json"), file="callbacks.json"),
    Probe("damage", f"{PRIVACY} missing", _remove(PRIVACY), file=PRIVACY),
    Probe("damage", "checkpoint/latest.json not JSON", _write("latest.json", "{round"), pointer=True),
]


# --- running ---------------------------------------------------------------------------------------------------------
def _fedsim(code: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(code)}
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _base(kind: str) -> list[str]:
    return [*TINY, *(CENTRAL if kind == "central" else LOCAL)]


def _results(run_dir: Path) -> tuple[float | None, str]:
    """(final ε, a digest of rounds 5-6's metrics and the model) of a resumed run (one that fell back to an older
    checkpoint also logs the rounds it ran again, which are left out)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows if row["round"] > EARLIER]
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True).encode() + (run_dir / "model.npz").read_bytes())
    final = json.loads((run_dir / "summary.json").read_text()).get("final", {})
    epsilon = final.get("privacy/epsilon")
    return (float(epsilon) if epsilon is not None else None), digest.hexdigest()


def _targets(run_dir: Path, probe: Probe, variant: str) -> list[Path]:
    if probe.pointer:
        return [run_dir / "checkpoint"]
    rounds = sorted((run_dir / "checkpoint").glob("round_*"), reverse=True)
    folders = rounds[:1] if variant == "newest only" else [*rounds, run_dir]
    return [f for f in folders if (f / probe.file).exists()]


def _rewrite_manifests(folders: list[Path]) -> None:
    from fedsim.checkpoint import files_below, read_manifest, write_manifest  # this checkout's format

    for folder in folders:
        manifest = read_manifest(folder)
        files = files_below(folder) if folder.name.startswith("round_") else list(manifest["files"])
        files = [name for name in files if (folder / name).is_file()]
        write_manifest(folder, files, manifest["round"], manifest["settings"])


def classify(result: subprocess.CompletedProcess, out: Path, reference: tuple[float | None, str]) -> str:
    lines = result.stderr.strip().splitlines()
    if "Traceback" in result.stderr or result.returncode not in (0, 1, 2):
        return "traceback"
    if result.returncode != 0:
        one = len(lines) == 1 and lines[0].startswith("fedsim: error: ")
        return "refused" if one else f"exit {result.returncode}, {len(lines)} lines"
    epsilon, digest = _results(out)
    said = "resume_from:" in result.stdout + result.stderr
    if said:
        return "fell back" if digest == reference[1] else "fell back, other results"
    if epsilon is not None and reference[0] is not None and epsilon < reference[0] - 1e-9:
        return f"silent, ε {epsilon:.3f} < {reference[0]:.3f}"
    return "unaffected" if digest == reference[1] else "silent, other results"


def probe_code(code: Path, label: str, variants: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """{(probe, variant): (outcome, first stderr line)} for the fedsim in ``code``."""
    work = ROOT / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    earlier, reference = {}, {}
    for kind in ("central", "local"):
        earlier[kind] = work / f"earlier-{kind}"
        made = _fedsim(code, [*_base(kind), f"federation.rounds={EARLIER}", f"output_dir={earlier[kind]}"], work)
        if made.returncode != 0:
            raise SystemExit(f"{label}: could not make the {kind} run:\n{made.stderr[-3000:]}")
        out = work / f"reference-{kind}"
        again = [*_base(kind), f"federation.rounds={RESUMED}", f"resume_from={earlier[kind]}", f"output_dir={out}"]
        resumed = _fedsim(code, again, work)
        if resumed.returncode != 0:
            raise SystemExit(f"{label}: the untouched {kind} run did not resume:\n{resumed.stderr[-3000:]}")
        reference[kind] = _results(out)
    outcomes = {}
    for number, probe in enumerate(PROBES, start=1):
        for variant in variants:
            folder = work / f"probe-{number:02d}-{variant.replace(' ', '-')}"
            run_dir = folder / "run"
            shutil.copytree(earlier[probe.base], run_dir)
            targets = _targets(run_dir, probe, variant)
            if not targets:
                continue
            for target in targets:
                probe.edit(target)
            if variant == "manifest rewritten":
                if probe.pointer:
                    continue
                _rewrite_manifests(targets)
            args = [*_base(probe.base), f"federation.rounds={RESUMED}", f"resume_from={run_dir}"]
            result = _fedsim(code, [*args, f"output_dir={folder / 'out'}"], folder)
            outcome = classify(result, folder / "out", reference[probe.base])
            said = (result.stderr.strip().splitlines() or [""])[-1]
            if outcome.startswith("fell back"):
                said = next(line for line in (result.stdout + result.stderr).splitlines() if "resume_from:" in line)
            outcomes[probe.what, variant] = (outcome, said)
            print(f"{label:6} {number:2d} {variant:18} {outcome:28} {probe.what}", file=sys.stderr)
    return outcomes


def table(before: dict, after: dict, variants: list[str]) -> str:
    head = ["#", "probe", "before: every copy", *(f"after: {v}" for v in variants)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for number, probe in enumerate(PROBES, start=1):
        cells = [before.get((probe.what, "every copy"), ("–", ""))[0]]
        cells += [after.get((probe.what, v), ("–", ""))[0] for v in variants]
        lines.append(f"| {number} | {probe.kind}: {probe.what} | " + " | ".join(cells) + " |")
    lines += ["", "Counts (every copy):", ""]
    for label, outcomes in (("before", before), ("after", after)):
        counts = Counter(
            "silent wrong resume" if o.startswith("silent") else o
            for (_, v), (o, _) in outcomes.items()
            if v == "every copy"
        )
        lines.append(f"- {label}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    lines += ["", "One line said by this checkout, per probe (every copy; newest only where it fell back):", ""]
    for number, probe in enumerate(PROBES, start=1):
        outcome, said = after.get((probe.what, "every copy"), ("", ""))
        newest = after.get((probe.what, "newest only"), ("", ""))
        shown = newest[1] if newest[0].startswith("fell back") and not said.startswith("fedsim: error") else said
        lines.append(f"{number}. `{shown.replace('|', '/')}`")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a source tree of the base commit (its fedsim/ and conf/)")
    args = parser.parse_args()
    variants = ["every copy", "newest only", "manifest rewritten"]
    before = probe_code(args.before.resolve(), "before", ["every copy"]) if args.before else {}
    after = probe_code(HERE, "after", variants)
    print(table(before, after, variants))
    refused = sum(o in ("refused", "fell back") for (_, v), (o, _) in after.items() if v == "every copy")
    print(f"\n{len(PROBES)} probes; after: {refused} detected with one line (every copy).")


if __name__ == "__main__":
    main()
