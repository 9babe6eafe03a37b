"""Malformed-input probes of the real ``fedsim`` command: the Markdown table of experiments/reliability/README.md.

Each probe runs ``python -m fedsim.cli <overrides>`` in a fresh, empty working folder and checks what the README
promises for bad input: exactly one stderr line ``fedsim: error: ...``, exit code 2, no traceback, no folder left in
the working folder (where ``results/`` would go), no ``fedsim-refused-*`` stand-in left in the temp folder, and every
file that existed before (an earlier run given as ``output_dir``) unchanged, byte for byte.

Inputs are built under /tmp/fedsim-probes (wiped first), so the printed paths are the same on every machine:

    python experiments/reliability/probe_inputs.py > /tmp/probes.md      # about 2-3 minutes on 2 cores

The readers' probes of issue 18 (strict ids, unreadable files, ``seed=-1``, a full disk, timestamps that cannot order
the split) have their own table, which can show another checkout's behaviour next to this one's ("before"):

    python experiments/reliability/probe_inputs.py --readers --before /path/to/a/main/checkout > /tmp/readers.md

A probe's promise depends on what it feeds in: bad input is refused (exit 2, one line); a full disk stops a started
run with one line (exit 1: not the user's input), keeping what was written; data whose timestamps cannot order the
leave-one-out split runs (exit 0) and says so in a warning.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/tmp/fedsim-probes")
DATA = ROOT / "data"
TINY = [
    "dataset.n_users=40",
    "dataset.n_items=300",
    "federation.rounds=1",
    "federation.backend=inprocess",
    "progress=false",
    "attack=off",
]
ML100K = {
    "u.data": ["1\t1\t5\t881250949", "1\t2\t3\t881250950", "2\t2\t4\t881250951", "2\t3\t1\t881250952"],
    "u.user": ["1|24|M|writer|00000", "2|61|F|doctor|00000"],
    "u.item": ["|".join([str(i), f"Movie {i} (1995)", "01-Jan-1995", "", "http://us.imdb.com/"] + ["0"] * 19)
               for i in (1, 2, 3)],
}  # fmt: skip
FAST = ["federation.rounds=1", "federation.backend=inprocess", "progress=false", "attack=off"]  # a run on real files
TIES = {  # 6 users x 4 items at distinct times; the warning probes make the times tie
    "u.data": [f"{u}\t{i}\t4\t{881250000 + 10 * i}" for u in range(1, 7) for i in range(u, u + 4)],
    "u.user": [f"{u}|30|M|writer|00000" for u in range(1, 7)],
}
ML1M = {
    "ratings.dat": ["1::1::5::978300760", "1::2::3::978300761", "2::2::4::978300762", "2::3::1::978300763"],
    "users.dat": ["1::M::25::3::00000", "2::F::56::7::00000"],
    "movies.dat": ["1::Alpha (1990)::Drama", "2::Beta (1991)::Comedy", "3::Gamma (1992)::Horror"],
}


def _dataset(name: str, base: dict[str, list[str]], edit: Callable[[dict[str, list[str]]], None]) -> Path:
    """A copy of ``base`` with one corruption applied, written under DATA/name."""
    files = {file: list(lines) for file, lines in base.items()}
    edit(files)
    folder = DATA / name
    folder.mkdir(parents=True)
    for file, lines in files.items():
        (folder / file).write_text("".join(f"{line}\n" for line in lines), encoding="latin-1")
    return folder


def _set(file: str, line: int, text: str) -> Callable[[dict[str, list[str]]], None]:
    def edit(files: dict[str, list[str]]) -> None:
        files[file][line - 1] = text

    return edit


def _ml100k(name: str, edit: Callable[[dict[str, list[str]]], None]) -> list[str]:
    return ["dataset=movielens_100k", f"dataset.path={_dataset(name, ML100K, edit)}"]


def _ml1m(name: str, edit: Callable[[dict[str, list[str]]], None]) -> list[str]:
    return ["dataset=movielens_1m", f"dataset.path={_dataset(name, ML1M, edit)}"]


def _old_run(name: str, *files: str) -> Path:
    """A folder that already holds (part of) a run."""
    folder = ROOT / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("name: earlier\n")
    for file in files:
        (folder / file).write_text('{"finished": true}\n' if file == "summary.json" else '{"round": 1}\n')
    return folder


def _finished_run() -> Path:
    """A real finished tiny federated run (for resume_from probes that need one)."""
    folder = ROOT / "finished-run"
    done = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *TINY, f"output_dir={folder}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"could not make the run for the resume probes:\n{done.stderr[-3000:]}")
    return folder


@dataclass
class Probe:
    group: str
    what: str
    args: list[str]
    watched: list[Path] = field(default_factory=list)  # existing paths that must not change
    code: int = 2  # the promised exit code: 2 bad input, 1 a started run that cannot go on, 0 a run that warns
    expect: str = ""  # code 0: the warning the console must show
    reset: Callable[[], None] | None = None  # makes the probe's output folder afresh (it is run twice with --before)


def probes() -> list[Probe]:
    (ROOT / "a-file").write_text("a regular file, not a folder\n")
    (ROOT / "empty-folder").mkdir()
    finished = _finished_run()
    partial = _old_run("interrupted-run", "metrics.jsonl")
    earlier = _old_run("earlier-run", "summary.json", "metrics.jsonl")
    no_user_file = DATA / "no-u.user"
    no_user_file.mkdir(parents=True)
    (no_user_file / "u.data").write_text("1\t1\t5\t881250949\n")
    garbage = DATA / "binary"
    garbage.mkdir()
    (garbage / "u.data").write_bytes(bytes(range(256)) * 4)
    (garbage / "u.user").write_text("1|24|M|writer|00000\n")
    directory_as_file = DATA / "u.data-is-a-folder"
    (directory_as_file / "u.data").mkdir(parents=True)

    def drop_line(file: str, line: int) -> Callable[[dict[str, list[str]]], None]:
        def edit(files: dict[str, list[str]]) -> None:
            del files[file][line - 1]

        return edit

    def empty(file: str) -> Callable[[dict[str, list[str]]], None]:
        return lambda files: files.__setitem__(file, [])

    return [
        Probe("config", "unknown key", ["federation.roundz=3"]),
        Probe("config", "unknown top-level key added with +", ["+learning_rate=0.1"]),
        Probe("config", "unknown group option", ["dataset=movielens_10m"]),
        Probe("config", "unknown experiment preset", ["+experiment=frontier"]),
        Probe("config", "text where an integer belongs", ["federation.rounds=ten"]),
        Probe("config", "zero rounds", ["federation.rounds=0"]),
        Probe("config", "participation above 1", ["federation.participation=1.5"]),
        Probe("config", "negative learning rate", ["client.lr=-0.1"]),
        Probe("config", "unknown model", ["model.name=transformer"]),
        Probe("config", "unknown mode", ["mode=both"]),
        Probe("config", "central DP without a noise level", ["privacy=central"]),
        Probe("config", "broken override syntax", ["federation.rounds=("]),
        Probe("config", "a sweep without --multirun", ["seed=0,1"]),
        Probe("config", "a bad value in a --multirun job", ["-m", "federation.rounds=0,1"]),
        Probe("config", "an unknown key in a --multirun", ["-m", "seed=0,1", "federation.roundz=1"]),
        Probe("config", "an unknown option swept", ["-m", "model=mf,transformer"]),
        Probe("data", "MovieLens-100K, default dataset.path absent", ["dataset=movielens_100k"]),
        Probe("data", "dataset.path does not exist", ["dataset=movielens_100k", f"dataset.path={ROOT / 'nowhere'}"]),
        Probe("data", "u.user missing", ["dataset=movielens_100k", f"dataset.path={no_user_file}"]),
        Probe("data", "u.data is a folder", ["dataset=movielens_100k", f"dataset.path={directory_as_file}"]),
        Probe("data", "u.data empty", _ml100k("empty-u.data", empty("u.data"))),
        Probe("data", "u.data binary garbage", ["dataset=movielens_100k", f"dataset.path={garbage}"]),
        Probe("data", "u.data truncated line", _ml100k("truncated", _set("u.data", 3, "2\t2\t4"))),
        Probe("data", "u.data rating 7", _ml100k("rating-7", _set("u.data", 2, "1\t2\t7\t881250950"))),
        Probe("data", "u.data rating 0", _ml100k("rating-0", _set("u.data", 4, "2\t3\t0\t881250952"))),
        Probe("data", "u.data half-star rating", _ml100k("rating-4.5", _set("u.data", 1, "1\t1\t4.5\t881250949"))),
        Probe("data", "u.data timestamp in ms", _ml100k("ms", _set("u.data", 2, "1\t2\t3\t881250950000"))),
        Probe("data", "u.data negative timestamp", _ml100k("negative-t", _set("u.data", 4, "2\t3\t1\t-1"))),
        Probe("data", "u.data user id not a number", _ml100k("user-abc", _set("u.data", 3, "abc\t2\t4\t881250951"))),
        Probe("data", "u.data user not in u.user", _ml100k("user-9", _set("u.data", 4, "9\t3\t1\t881250952"))),
        Probe("data", "u.data item not in u.item", _ml100k("item-1700", _set("u.data", 2, "1\t1700\t3\t881250950"))),
        Probe("data", "u.user listed twice", _ml100k("dup-user", _set("u.user", 2, "1|61|F|doctor|00000"))),
        Probe("data", "u.user unknown gender", _ml100k("gender-x", _set("u.user", 1, "1|24|X|writer|00000"))),
        Probe("data", "u.user row missing (user 2)", _ml100k("no-user-2", drop_line("u.user", 2))),
        Probe("data", "ratings.dat rating 0 (ML-1M)", _ml1m("ml1m-rating-0", _set("ratings.dat", 2, "1::2::0::1"))),
        Probe(
            "data",
            "ratings.dat timestamp year 2100+",
            _ml1m("ml1m-2100", _set("ratings.dat", 3, "2::2::4::5000000000")),
        ),
        Probe("data", "users.dat age not an ML-1M code", _ml1m("ml1m-age", _set("users.dat", 2, "2::F::30::7::0"))),
        Probe("output", "output_dir in /proc", ["output_dir=/proc/fedsim-out"]),
        Probe("output", "output_dir below a regular file", [f"output_dir={ROOT / 'a-file' / 'out'}"]),
        Probe("output", "output_dir holds a finished run", [*TINY, f"output_dir={earlier}"], [earlier]),
        Probe("output", "output_dir holds an interrupted run", [*TINY, f"output_dir={partial}"], [partial]),
        Probe("output", "same, in a --multirun job", ["-m", *TINY, f"output_dir={earlier}"], [earlier]),
        Probe("resume", "resume_from does not exist", [*TINY, f"resume_from={ROOT / 'no-such-run'}"]),
        Probe("resume", "resume_from an empty folder", [*TINY, f"resume_from={ROOT / 'empty-folder'}"]),
        Probe("resume", "resume_from a regular file", [*TINY, f"resume_from={ROOT / 'a-file'}"]),
        Probe("resume", "resume_from with mode=centralized", [*TINY, "mode=centralized", f"resume_from={finished}"]),
        Probe(
            "resume",
            "resume_from with another model.dim",
            [*TINY, "model.dim=8", "federation.rounds=2", f"resume_from={finished}"],
            [finished],
        ),  # fmt: skip
        Probe("resume", "resume_from a run already at federation.rounds", [*TINY, f"resume_from={finished}"]),
    ]


def _item_id(file: str, line: int, old: str, new: str) -> Callable[[dict[str, list[str]]], None]:
    """Replace the id at the start of an item-file line."""

    def edit(files: dict[str, list[str]]) -> None:
        files[file][line - 1] = new + files[file][line - 1][len(old) :]

    return edit


def _unreadable(name: str, base: dict[str, list[str]], file: str) -> Path:
    """A data folder whose ``file`` exists but fails to read: a link to /proc/self/mem, which gives EIO at offset 0
    (for root too: chmod 000 does not stop root)."""
    folder = _dataset(name, base, lambda files: None)
    (folder / file).unlink()
    (folder / file).symlink_to("/proc/self/mem")
    return folder


def _full_disk(name: str) -> Callable[[], None]:
    """Makes an output folder afresh whose report.md is /dev/full: the run's last file hits "No space left on
    device"."""

    def reset() -> None:
        folder = ROOT / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "report.md").symlink_to("/dev/full")

    return reset


def _fresh(name: str) -> Callable[[], None]:
    return lambda: shutil.rmtree(ROOT / name, ignore_errors=True)


def reader_probes() -> list[Probe]:
    """Issue 18 item 11: ids as ASCII digits only, unreadable files, seed=-1, a full disk, untimed data."""

    def equal_times(files: dict[str, list[str]]) -> None:
        files["u.data"] = [line.rsplit("\t", 1)[0] + "\t881250949" for line in files["u.data"]]

    def last_two_tied(files: dict[str, list[str]]) -> None:  # every user's last two items share a second
        files["u.data"] = [line.rsplit("\t", 1)[0] + f"\t{881250000 + 10 * min(k % 4, 2)}"
                           for k, line in enumerate(files["u.data"])]  # fmt: skip

    def ties(name: str, edit: Callable[[dict[str, list[str]]], None]) -> list[str]:
        path = _dataset(name, TIES, edit)
        out = ROOT / f"{name}-run"
        return [
            "dataset=movielens_100k",
            f"dataset.path={path}",
            "evaluation.n_negatives=3",
            *FAST,
            f"output_dir={out}",
        ]

    full, full_ray = f"output_dir={ROOT / 'full-disk'}", f"output_dir={ROOT / 'full-disk-ray'}"
    return [
        Probe(
            "data", "u.data user id 0_2 (int() reads 2)", _ml100k("user-0_2", _set("u.data", 3, "0_2\t2\t4\t1")) + FAST
        ),
        Probe("data", "u.data timestamp 88_1", _ml100k("t-underscore", _set("u.data", 2, "1\t2\t3\t88_1")) + FAST),
        Probe("data", "u.item id 0_2 (garbled)", _ml100k("item-0_2", _item_id("u.item", 2, "2", "0_2")) + FAST),
        Probe("data", "u.item id +3", _ml100k("item-plus", _item_id("u.item", 3, "3", "+3")) + FAST),
        Probe("data", "u.item id ' 1' (padded)", _ml100k("item-space", _item_id("u.item", 1, "1", " 1")) + FAST),
        Probe(
            "data",
            "ratings.dat user 0_1 (ML-1M)",
            _ml1m("ml1m-user-0_1", _set("ratings.dat", 1, "0_1::1::5::1")) + FAST,
        ),
        Probe(
            "data", "movies.dat id '2 ' (ML-1M)", _ml1m("ml1m-item-space", _item_id("movies.dat", 2, "2", "2 ")) + FAST
        ),
        Probe(
            "data",
            "u.data unreadable (EIO)",
            ["dataset=movielens_100k", f"dataset.path={_unreadable('eio', ML100K, 'u.data')}"],
        ),
        Probe(
            "data",
            "users.dat unreadable (EIO, ML-1M)",
            ["dataset=movielens_1m", f"dataset.path={_unreadable('eio-1m', ML1M, 'users.dat')}"],
        ),
        Probe("config", "seed=-1", [*TINY, "seed=-1"]),
        Probe("output", "disk full while writing run files", [*TINY, full], code=1, reset=_full_disk("full-disk")),
        Probe(
            "output",
            "same, Ray backend",
            [*TINY, "federation.backend=ray", full_ray],
            code=1,
            reset=_full_disk("full-disk-ray"),
        ),
        Probe(
            "data",
            "u.data: every timestamp equal",
            ties("equal-times", equal_times),
            code=0,
            expect="same timestamp",
            reset=_fresh("equal-times-run"),
        ),
        Probe(
            "data",
            "u.data: every user's test item tied",
            ties("tied", last_two_tied),
            code=0,
            expect="ties broken",
            reset=_fresh("tied-run"),
        ),
    ]


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): "dir" if p.is_dir() else hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
    }


def _stand_ins() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("fedsim-refused-*"))


def run(probe: Probe, number: int, checkout: str | None = None) -> tuple[int, str, bool]:
    """(exit code, the stderr text on one line, whether every promise held); ``checkout``: run that fedsim instead."""
    cwd = ROOT / f"cwd-{number:02d}{'-before' if checkout else ''}"
    cwd.mkdir()
    if probe.reset is not None:
        probe.reset()
    before = {path: _tree(path) for path in probe.watched}
    stand_ins = _stand_ins()
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"PYTHONPATH": checkout} if checkout else {})}
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *probe.args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )
    if probe.code == 0:  # a run that must complete and warn
        said = [line for line in result.stdout.splitlines() if "warning:" in line and probe.expect in line]
        clean = result.returncode == 0 and "Traceback" not in result.stderr and bool(said)
        shutil.rmtree(cwd)
        return result.returncode, (said or ["(no warning)"])[0], clean
    errors = [
        line for line in result.stderr.strip().splitlines() if probe.code != 1 or line.startswith("fedsim: error")
    ]
    lines = result.stderr.strip().splitlines() if probe.code != 1 or "Traceback" in result.stderr else errors
    clean = (
        result.returncode == probe.code
        and len(lines) == 1
        and lines[0].startswith("fedsim: error: ")
        and "Traceback" not in result.stderr
        and not any(cwd.iterdir())
        and _stand_ins() == stand_ins
        and all(_tree(path) == tree for path, tree in before.items())
        and not Path("/proc/fedsim-out").exists()
        and not (ROOT / "a-file").is_dir()
    )
    shutil.rmtree(cwd)
    return result.returncode, _shown(result, lines), clean


def _shown(result: subprocess.CompletedProcess, lines: list[str]) -> str:
    """The stderr as the table shows it: the lines joined, a traceback condensed to its length and last line."""
    if "Traceback" in result.stderr:
        every = result.stderr.strip().splitlines()
        last = [line for line in every if line.strip() and not line.startswith("Set the environment")][-1]
        return f"a {len(every)}-line traceback ending {last}"
    if not lines and result.returncode == 0:
        return "(nothing: the run was accepted and trained)"
    return " ⏎ ".join(lines)


def _cell(code: int, text: str, clean: bool) -> str:
    return f"{code} | `{text.replace('|', chr(92) + '|')}` | {'yes' if clean else '**NO**'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", action="store_true", help="only the readers' probes of issue 18")
    parser.add_argument("--before", default=None, help="another checkout (its root) to run each probe with as well")
    args = parser.parse_args()
    if ROOT.exists():
        shutil.rmtree(ROOT)
    DATA.mkdir(parents=True)
    chosen = reader_probes() if args.readers else [*probes(), *reader_probes()]
    head = "| # | input | overrides (after `fedsim`) |"
    head += " before: exit | before: stderr or warning | promise held |" if args.before else ""
    table = [head + " exit | stderr (exact), or the warning | promise held (one line, no traceback, no junk) |"]
    table.append("|" + "---|" * (table[0].count("|") - 1))
    failures = 0
    for number, probe in enumerate(chosen, start=1):
        cells = []
        if args.before:
            cells.append(_cell(*run(probe, number, args.before)))
        code, text, clean = run(probe, number)
        cells.append(_cell(code, text, clean))
        failures += not clean
        shown = " ".join(arg for arg in probe.args if arg not in TINY and arg not in FAST)
        table.append(f"| {number} | {probe.group}: {probe.what} | `{shown}` | " + " | ".join(cells) + " |")
        print(f"{number:2d} {'ok ' if clean else 'BAD'} {probe.what}", file=sys.stderr)
    print("\n".join(table))
    print(f"\n{len(table) - 2} probes, {failures} broke a promise.")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
