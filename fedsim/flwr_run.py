"""``fedsim-flwr <flwr run arguments>``: ``flwr run`` that leaves no server running.

flwr 1.42's ``flwr run`` starts a detached local SuperLink the first time it is used (``flwr.cli.local_superlink``:
``flower-superlink --simulation`` with its SuperExec, on fixed local ports) and leaves it running after the run, for
the next one; nothing says so and Flower has no command that stops it. ``fedsim-flwr`` runs ``flwr run`` with the
arguments given and then stops the local SuperLink *if this call started it* (none was running before). That
SuperLink is recognised by its log file, ``$FLWR_HOME/local-superlink/superlink.log``, on its command line, among
this user's processes (Linux ``/proc``); its SuperExec exits with it (``--parent-pid``). A SuperLink that was already
running — started by someone else, or for a deployment — is left alone.

    fedsim-flwr . --stream --federation-config 'num-supernodes=4' --run-config 'overrides="federation.rounds=2"'
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PROC = Path("/proc")


def local_superlink_log() -> Path:
    """Where flwr's managed local SuperLink logs (``flwr.cli.local_superlink``): it names it on its command line."""
    home = os.environ.get("FLWR_HOME") or str(Path.home() / ".flwr")
    return Path(home) / "local-superlink" / "superlink.log"


def local_superlinks(log_file: Path, proc: Path = PROC) -> list[int]:
    """Pids of this user's ``flower-superlink`` processes started with ``--log-file log_file``."""
    found = []
    for entry in proc.glob("[0-9]*"):
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        named = any(Path(a).name == "flower-superlink" for a in argv[:2])
        if named and any(a == "--log-file" and b == str(log_file) for a, b in zip(argv, argv[1:], strict=False)):
            found.append(int(entry.name))
    return sorted(found)


def stop(pids: Sequence[int], wait_s: float = 10.0) -> None:
    """SIGTERM each pid, then wait until they are gone (SIGKILL after ``wait_s``)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    for pid in pids:
        while (PROC / str(pid)).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if (PROC / str(pid)).exists():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    log_file = local_superlink_log()
    watch = PROC.is_dir()
    before = set(local_superlinks(log_file)) if watch else set()
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}  # fedsim is installed already
    try:
        code = subprocess.call(["flwr", "run", *args], env=env)
    except KeyboardInterrupt:
        code = 130
    except FileNotFoundError:
        print("fedsim-flwr: error: the flwr command is not installed (pip install -e .)", file=sys.stderr)
        return 2
    started = [pid for pid in (local_superlinks(log_file) if watch else []) if pid not in before]
    if started:
        stop(started)
        print(f"fedsim-flwr: stopped the local SuperLink this run started (pid {', '.join(map(str, started))})")
    return code


if __name__ == "__main__":
    sys.exit(main())
