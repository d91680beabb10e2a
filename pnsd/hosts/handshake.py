"""The versioned hello: which worker protocol version the daemon speaks with a worker.

Owns the choice from the range a worker announces (SPEC.md, "The versioned hello"), for local
workers (:mod:`pnsd.hosts.worker`) and remote ones (:mod:`pnsd.hosts.remote`) alike. It must
not send or receive messages: its callers answer with the welcome or the refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocols.version import WORKER_PROTOCOLS


def choose_protocol(hello: Mapping[str, Any]) -> tuple[int, str]:
    """The worker protocol version to speak with a worker, from its hello; or 0 and why none
    (SPEC.md, "The versioned hello"). A hello without ``protocols`` speaks version 1."""
    ours = WORKER_PROTOCOLS
    if "protocols" not in hello:
        return 1, ""
    announced = hello["protocols"]
    if (not isinstance(announced, list | tuple) or len(announced) != 2
            or not all(type(v) is int for v in announced)       # a bool is no version
            or not 1 <= announced[0] <= announced[1]):
        return 0, (f"worker sent a malformed protocol range {str(announced)[:40]}; this daemon "
                   f"speaks {ours[0]}-{ours[1]}")
    low, high = max(ours[0], announced[0]), min(ours[1], announced[1])
    if low > high:
        return 0, (f"worker speaks protocol {announced[0]}-{announced[1]}; this daemon speaks "
                   f"{ours[0]}-{ours[1]}")
    return high, ""
