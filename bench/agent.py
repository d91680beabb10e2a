"""The load agent: a separate process that runs one bounded load per command.

``python -m bench.agent`` reads one JSON command per line on stdin and answers one JSON line on
stdout (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``). Keeping one warm
agent for the whole run avoids an interpreter start per trial; the orchestrator
(:class:`bench.stack.Agent`) kills and restarts it if a command overruns its deadline.
"""

from __future__ import annotations

import json
import sys
import traceback

from bench.loads import LOADS


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr    # nothing but answers may reach the pipe
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            answer = {"ok": True, "result": LOADS[command["kind"]](command)}
        except Exception as exc:  # the boundary: report, keep serving
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
