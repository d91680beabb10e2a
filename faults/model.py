"""The ``model`` row: the model-based test (tests/integration/test_model.py) on a longer budget.

Runs that test under pytest in a child process with ``PNS_MODEL_EXAMPLES`` random examples
(``--quick``: fewer) and ``--runxfail``, so the row shows the machine's real verdict even
where the suite marks it as an expected failure. pytest's temporary directories live under the
fault's private directory, so the runner's search for leftover processes covers every node the
machine started. A failure is one should-not-fail (one loss when an acknowledged job or result
went missing) with the falsifying step sequence's last lines as its note; the full report
goes to stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys

from faults.report import Row
from faults.runner import Context
from harness.procs import ROOT

TEST = "tests/integration/test_model.py"
EXAMPLES = 25
QUICK_EXAMPLES = 4
TIMEOUT = 3600.0


def model(ctx: Context) -> Row:
    examples = ctx.pick(EXAMPLES, QUICK_EXAMPLES)
    row = Row("model", tries=examples)
    env = {**os.environ, "PNS_MODEL_EXAMPLES": str(examples)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--runxfail",
            f"--basetemp={ctx.dir / 'pytest'}", "-o", f"timeout={int(TIMEOUT)}", TEST]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT + 60, check=False)
    row.sent = examples
    if done.returncode == 0:
        row.note(f"{examples} random examples of up to 30 steps: every invariant held")
        return row
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ") and "AssertionError" in line] or [
        line for line in lines if line.startswith("E ") and "Error" in line]
    summary = errors[0][1:].strip()[:300] if errors else f"pytest exited {done.returncode}"
    if " lost" in summary:
        row.lose(summary)          # an acknowledged job or its result is gone
    else:
        row.fail(summary)
    steps = [line[2:].strip() for line in lines if line.startswith("E ") and "state." in line]
    if steps:
        row.note("steps: " + " ; ".join(steps[-8:])[:600])
    print(done.stdout[-20000:], file=sys.stderr)
    return row
