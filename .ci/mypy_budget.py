"""Type-check fedsim/ and fail when mypy reports more errors than the recorded budget (it may only go down).

Run from the repository root: ``python .ci/mypy_budget.py``. After fixing errors, lower BUDGET to the new count.
"""

import re
import subprocess
import sys

BUDGET = 41  # mypy 1.x/2.x on fedsim/ at the last recount; lower it when errors are fixed, never raise it

result = subprocess.run([sys.executable, "-m", "mypy", "fedsim"], capture_output=True, text=True)
match = re.search(r"Found (\d+) errors?", result.stdout)
count = int(match.group(1)) if match else (0 if result.returncode == 0 else -1)
if count < 0:
    print(result.stdout + result.stderr)
    sys.exit("mypy did not run")
print(f"mypy: {count} errors (budget {BUDGET})")
if count > BUDGET:
    print(result.stdout)
    sys.exit(f"mypy reports {count} errors, above the recorded budget of {BUDGET}")
