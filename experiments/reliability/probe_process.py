"""Concurrency, signals and faults probe (issue 18, items 8-10): real ``fedsim`` processes, real signals.

Runs each probe against one or more checkouts of fedsim (``--repo``, default this one; e.g. ``--repo /work/main
--repo .`` for a before/after table) and prints one markdown table, a column per checkout:

* two runs started at once on one ``output_dir``; a refused ``resume_from`` (every refusal path) and the folders it
  leaves; ``resume_from`` a run that is still running;
* SIGTERM (in-process and Ray): exit code, seconds, lines, and whether the run resumes; a second Ctrl-C on Ray, sent
  to the driver and to its process group (what a terminal does): seconds from the second signal to exit;
* the Ray processes (every descendant of the driver, tracked while it runs) still alive when the driver has exited,
  and 10 s later, after a normal end, one Ctrl-C, SIGTERM, a second Ctrl-C and kill -9;
* ``.world/`` left by a killed Ray run: still there after the next start beside it / after a resume from it?
* ``federation.node_crash_prob=0.99``: rounds that trained no user, and whether the console, summary.json and
  report.md say so.

Tracebacks are counted over every process's output. Timings here are wall-clock on a shared machine: read them as
"seconds, roughly", not as benchmarks. Usage::

    OMP_NUM_THREADS=1 python experiments/reliability/probe_process.py --repo /work/main --repo .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
# 60 users on 4 nodes; the same for both backends, so that a Ray run resumes in-process (faster, same numbers)
SMALL = ("dataset.n_users=60", "dataset.n_items=300", "federation.users_per_node=15", "progress=false", "attack=off")
INPROCESS = (*SMALL, "federation.backend=inprocess")
RAY = (*SMALL, "federation.backend=ray")
HANG_CAP_S = 90.0  # a process still running this long after its signal is reported as hung and killed


class Fedsim:
    """One ``python -m fedsim.cli`` process of the checkout ``repo``, in its own session (so that a signal can go to
    its process group as a terminal's Ctrl-C does), its descendants tracked while it runs."""

    def __init__(self, repo: Path, cwd: Path, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedsim.cli", *args],
            cwd=cwd,
            env=env,
            stdout=self.out,
            stderr=self.err,
            start_new_session=True,
        )
        self.tracked: set[tuple[int, str]] = set()
        self.exited_at: float | None = None

    def poll(self) -> bool:
        """True while running; notes its descendants (Ray's processes start and restart while the run goes on)."""
        self.tracked |= descendants(self.process.pid)
        running = self.process.poll() is None
        if not running and self.exited_at is None:
            self.exited_at = time.time()
        return running

    def wait_for(self, condition: Callable[[], bool], limit: float = 600.0) -> bool:
        deadline = time.time() + limit
        while time.time() < deadline and self.poll():
            if condition():
                return True
            time.sleep(0.05)
        return condition()

    def send(self, signum: int, group: bool = False) -> None:
        self.poll()
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def finish(self, limit: float = 600.0) -> float | None:
        """Wait up to ``limit`` s for the process to exit; the seconds it took, or None (then it is killed)."""
        start = time.time()
        while self.poll():
            if time.time() - start > limit:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                self.poll()
                return None
            time.sleep(0.02)
        return time.time() - start

    @property
    def code(self) -> int | None:
        return self.process.returncode

    def text(self) -> tuple[str, str]:
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read(), self.err.read()

    def tracebacks(self) -> int:
        return sum(part.count("Traceback") for part in self.text())

    def err_lines(self) -> list[str]:
        return [line for line in self.text()[1].splitlines() if line.strip()]

    def leftovers(self) -> str:
        """Descendants alive when the driver exited, and 10 s later: ``a → b`` (Ray agents, workers, raylet...)."""
        assert self.exited_at is not None
        at_exit = alive(self.tracked)
        time.sleep(max(0.0, self.exited_at + 10.0 - time.time()))
        later = alive(self.tracked)
        for pid, _ in later:  # leave nothing behind for the next probe
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return f"{len(at_exit)} → {len(later)}"


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[19]


def descendants(root: int) -> set[tuple[int, str]]:
    """Every live descendant of ``root`` as (pid, start time): the start time tells a reused pid apart."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                parents.setdefault(info[0], []).append((int(entry.name), info[1]))
    found, stack = set(), [root]
    while stack:
        for child in parents.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child[0])
    return found


def alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    return {(pid, start) for pid, start in processes if (info := _stat(pid)) is not None and info[1] == start}


def checkpoint_round(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "checkpoint" / "latest.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def rounds_in(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line)["round"] for line in path.read_text().splitlines()] if path.is_file() else []


# --- the probes: each returns one table cell per checkout ------------------------------------------------------------
def concurrent_output_dir(repo: Path, work: Path) -> str:
    out = work / "shared-out"
    runs = [Fedsim(repo, work, *INPROCESS, "federation.rounds=6", f"seed={s}", f"output_dir={out}") for s in (0, 1)]
    for run in runs:
        run.finish()
    codes = sorted(run.code or 0 for run in runs)
    rows = rounds_in(out)
    refused = [line for run in runs if run.code == 2 for line in run.err_lines()]
    shown = ",".join(map(str, rows))
    verdict = "one run, rows once" if rows == list(range(1, 7)) else "both wrote"
    return (
        f"exit {codes}; metrics rounds {shown} ({verdict})"
        + (f"; the other: `{refused[0][:70]}…`" if refused else "")
        + f"; tracebacks {sum(r.tracebacks() for r in runs)}"
    )


def refused_resume(repo: Path, work: Path) -> str:
    finished, empty, a_file = work / "finished", work / "empty", work / "a-file"
    done = Fedsim(repo, work, *INPROCESS, "federation.rounds=2", f"output_dir={finished}")
    done.finish()
    empty.mkdir()
    a_file.write_text("x")
    cases = [
        ("no such run", [f"resume_from={work / 'nowhere'}"]),
        ("empty folder", [f"resume_from={empty}"]),
        ("a file", [f"resume_from={a_file}"]),
        ("centralized", ["mode=centralized", f"resume_from={finished}"]),
        ("other model.dim", ["model.dim=16", "federation.rounds=4", f"resume_from={finished}"]),
        ("already finished", ["federation.rounds=2", f"resume_from={finished}"]),
    ]
    left, codes, tracebacks, lines = 0, [], 0, []
    for i, (_, args) in enumerate(cases):
        for explicit in (True, False):
            cwd = work / f"cwd-{i}-{explicit}"
            cwd.mkdir()
            target = [f"output_dir={cwd / 'new' / 'deep' / 'out'}"] if explicit else []
            run = Fedsim(repo, cwd, *INPROCESS, *args, *target)
            run.finish()
            codes.append(run.code)
            tracebacks += run.tracebacks()
            lines.append(len(run.err_lines()))
            left += any(cwd.iterdir())
    return (
        f"{left} of {len(codes)} refusals left a folder; exit codes {sorted(set(codes))}; "
        f"stderr lines {sorted(set(lines))}; tracebacks {tracebacks}"
    )


def resume_a_live_run(repo: Path, work: Path) -> str:
    live = work / "live"
    run = Fedsim(repo, work, *INPROCESS, "federation.rounds=300", f"output_dir={live}")
    run.wait_for(lambda: checkpoint_round(live) >= 1)
    second = Fedsim(
        repo, work, *INPROCESS, "federation.rounds=301", f"resume_from={live}", f"output_dir={work / 'fork'}"
    )
    took = second.finish(limit=20)
    run.send(signal.SIGINT)
    run.finish()
    first = (second.err_lines() or ["(no line)"])[0][:80]
    state = "still running after 20 s (forked the run)" if took is None else f"exit {second.code}: `{first}`"
    return f"{state}; tracebacks {second.tracebacks() + run.tracebacks()}"


def sigterm(repo: Path, work: Path, backend: tuple[str, ...], group: bool = False) -> str:
    run_dir = work / "term"
    run = Fedsim(repo, work, *backend, "federation.rounds=300", f"output_dir={run_dir}")
    run.wait_for(lambda: checkpoint_round(run_dir) >= 1)
    run.send(signal.SIGTERM, group)
    took = run.finish(limit=HANG_CAP_S)
    try:
        reason = json.loads((run_dir / "summary.json").read_text()).get("stop_reason", "")
    except (OSError, ValueError):
        reason = ""
    done = checkpoint_round(run_dir)
    resumed = Fedsim(
        repo, work, *INPROCESS, f"federation.rounds={done + 1}", f"resume_from={run_dir}", f"output_dir={work / 'r'}"
    )
    resumed.finish()
    timing = f"hung > {HANG_CAP_S:.0f} s" if took is None else f"{took:.1f} s"
    cell = (
        f"exit {run.code}, {timing}, {len(run.err_lines())} stderr lines, stop_reason `{reason or '(none)'}`; "
        f"resume exit {resumed.code}; tracebacks {run.tracebacks() + resumed.tracebacks()}"
    )
    if "federation.backend=ray" in backend:
        cell += f"; Ray processes at exit → +10 s: {run.leftovers()}"
    return cell


def second_ctrl_c(repo: Path, work: Path, group: bool) -> str:
    run_dir = work / f"twice-{group}"
    run = Fedsim(repo, work, *RAY, "federation.rounds=300", f"output_dir={run_dir}")
    run.wait_for(lambda: checkpoint_round(run_dir) >= 1)
    run.send(signal.SIGINT, group)
    time.sleep(0.5)
    run.send(signal.SIGINT, group)
    took = run.finish(limit=HANG_CAP_S)
    timing = (
        f"still running {HANG_CAP_S:.0f} s later (killed)" if took is None else f"exit {run.code} after {took:.1f} s"
    )
    return (
        f"{timing}; {len(run.err_lines())} stderr lines; tracebacks {run.tracebacks()}; "
        f"Ray processes at exit → +10 s: {run.leftovers()}"
    )


def ray_ending(repo: Path, work: Path, ending: str) -> str:
    run_dir = work / f"end-{ending}"
    rounds = "federation.rounds=2" if ending == "normal end" else "federation.rounds=300"
    run = Fedsim(repo, work, *RAY, rounds, f"output_dir={run_dir}")
    if ending != "normal end":
        run.wait_for(lambda: checkpoint_round(run_dir) >= 1)
        run.send(signal.SIGINT if ending == "one Ctrl-C" else signal.SIGKILL, group=ending == "one Ctrl-C")
    took = run.finish(limit=HANG_CAP_S)
    timing = "hung" if took is None else f"exit {run.code}"
    return f"{timing}; Ray processes at exit → +10 s: {run.leftovers()}; tracebacks {run.tracebacks()}"


def stale_world(repo: Path, work: Path) -> str:
    cells = []
    for then in ("next start beside it", "resume from it"):
        parent = work / then.replace(" ", "-")
        killed = parent / "killed"
        run = Fedsim(repo, work, *RAY, "federation.rounds=300", f"output_dir={killed}")
        run.wait_for(lambda killed=killed: checkpoint_round(killed) >= 1)
        run.send(signal.SIGKILL)
        run.finish()
        run.leftovers()
        left = (killed / ".world").is_dir()
        if then == "resume from it":
            args = ["federation.rounds=" + str(checkpoint_round(killed) + 1), f"resume_from={killed}"]
        else:
            args = ["federation.rounds=1"]
        after = Fedsim(repo, work, *INPROCESS, *args, f"output_dir={parent / 'next'}")
        after.finish()
        gone = not (killed / ".world").exists()
        cells.append(
            f"{then}: {'removed' if gone else 'still there'}"
            + ("" if left else " (none left by the kill)")
            + f" (exit {after.code})"
        )
    return "; ".join(cells)


def node_crashes(repo: Path, work: Path) -> str:
    run_dir = work / "crashes"
    run = Fedsim(
        repo,
        work,
        *INPROCESS,
        "federation.rounds=10",
        "federation.users_per_node=6",
        "federation.node_crash_prob=0.99",
        "evaluation.every=5",
        f"output_dir={run_dir}",
    )
    run.finish()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    empty = sum(1 for r in rows if r.get("train/users") == 0)
    out, err = run.text()
    console = sum("nodes" in line and "warning" in line for line in (out + err).splitlines())
    summary = json.loads((run_dir / "summary.json").read_text())
    in_summary = sum("nodes" in w or "no user" in w for w in summary.get("warnings") or [])
    report = (run_dir / "report.md").read_text()
    in_report = sum("nodes" in line or "trained no user" in line for line in report.splitlines() if "Warning" in line)
    return (
        f"exit {run.code}; {empty} of {len(rows)} rounds trained 0 users; warnings: console {console}, "
        f"summary.json {in_summary}, report.md {in_report}; tracebacks {run.tracebacks()}"
    )


PROBES: list[tuple[str, Callable[[Path, Path], str]]] = [
    ("two runs started at once on one output_dir", concurrent_output_dir),
    ("refused resume_from (6 refusals × with/without output_dir)", refused_resume),
    ("resume_from a run that is still running", resume_a_live_run),
    ("SIGTERM, in-process", lambda repo, work: sigterm(repo, work, INPROCESS)),
    ("SIGTERM, Ray", lambda repo, work: sigterm(repo, work, RAY)),
    (
        "SIGTERM, Ray, to its process group (systemd, `kill -- -pgid`)",
        lambda repo, work: sigterm(repo, work, RAY, True),
    ),
    ("second Ctrl-C on Ray, to the driver", lambda repo, work: second_ctrl_c(repo, work, group=False)),
    ("second Ctrl-C on Ray, to its process group (a terminal)", lambda repo, work: second_ctrl_c(repo, work, True)),
    ("Ray, normal end", lambda repo, work: ray_ending(repo, work, "normal end")),
    ("Ray, one Ctrl-C (to the process group, as a terminal)", lambda repo, work: ray_ending(repo, work, "one Ctrl-C")),
    ("Ray, kill -9 of the driver", lambda repo, work: ray_ending(repo, work, "kill -9")),
    ("stale .world/ of a killed Ray run", stale_world),
    ("federation.node_crash_prob=0.99, 10 rounds, 10 nodes", node_crashes),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", type=Path, help="a fedsim checkout (repeat: one column each)")
    parser.add_argument("--only", nargs="*", type=int, help="probe numbers to run (1-based)")
    args = parser.parse_args()
    repos = [repo.resolve() for repo in args.repo or [HERE]]
    chosen = [(i, p) for i, p in enumerate(PROBES, 1) if not args.only or i in args.only]
    cells: dict[int, list[str]] = {}
    for i, (name, probe) in chosen:
        cells[i] = []
        for repo in repos:
            work = Path(tempfile.mkdtemp(prefix="fedsim-probe-"))
            started = time.time()
            try:
                cells[i].append(probe(repo, work))
            except Exception as error:  # a probe that breaks is a row that says so, not a lost table
                cells[i].append(f"probe failed: {type(error).__name__}: {error}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"[{i}] {name} @ {repo}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    header = " | ".join(str(repo) for repo in repos)
    print(f"| # | probe | {header} |")
    print("|---|---|" + "---|" * len(repos))
    for i, (name, _) in chosen:
        print(f"| {i} | {name} | " + " | ".join(cell.replace("|", "\\|") for cell in cells[i]) + " |")


if __name__ == "__main__":
    main()
