"""Peak memory of noise calibration and accounting as the number of rounds grows (issue 18, item 7).

    python experiments/reliability/calibration_memory.py                     # this checkout
    PYTHONPATH=/path/to/other/checkout python experiments/reliability/...    # another one (before/after)

Each case runs in a fresh process (its peak RSS is its own, imports included) under an address-space cap (default
6 GiB, ``--cap-gib``), so that a case that would grow past it fails with MemoryError instead of taking the machine:
such a row says so. Cases: ``calibrate`` — z for target ε = 8 at δ = 1e-5 (what ``privacy.target_epsilon=8`` runs at
start-up); ``account`` — ε after the rounds at a noise multiplier set directly (``privacy.noise_multiplier=0.5``, what
the accountant computes at the end of the run). q = 1 is the default ``federation.participation``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = """
import json, resource, sys, time
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
case, q, rounds = sys.argv[2], float(sys.argv[3]), int(float(sys.argv[4]))
started = time.perf_counter()
try:
    from fedsim.privacy.accountant import epsilon_of
    from fedsim.privacy.calibration import calibrate_noise
    if case == "calibrate":
        z = calibrate_noise(8.0, 1e-5, q, rounds)
        out = f"z = {z:.4g} (ε = {epsilon_of([(q, z, rounds)], 1e-5):.3f})"
    else:
        out = f"ε = {epsilon_of([(q, 0.5, rounds)], 1e-5):.4g}"
except MemoryError as error:
    out = f"MemoryError ({str(error)[:60] or 'allocation refused'})"
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"result": out, "seconds": seconds, "peak_mib": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-gib", type=float, default=6.0)
    parser.add_argument("--rounds", default="100,1000,10000,1000000")
    args = parser.parse_args()
    cap = int(args.cap_gib * 2**30)
    print(f"address-space cap {args.cap_gib:g} GiB per case; δ = 1e-5\n")
    print("| case | q | rounds | result | seconds | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for case in ("calibrate", "account"):
        for q in (1.0, 0.1):
            for rounds in args.rounds.split(","):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, str(cap), case, str(q), rounds],
                    capture_output=True,
                    text=True,
                    timeout=3600,
                )
                lines = done.stdout.strip().splitlines()
                if done.returncode != 0 or not lines:
                    tail = (done.stderr.strip().splitlines() or ["?"])[-1][:80]
                    row = {"result": f"exit {done.returncode}: {tail}", "seconds": time.perf_counter() - started}
                    row["peak_mib"] = float("nan")
                else:
                    row = json.loads(lines[-1])
                print(
                    f"| {case} | {q:g} | {int(float(rounds)):,} | {row['result']} | {row['seconds']:.1f} | "
                    f"{row['peak_mib']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
