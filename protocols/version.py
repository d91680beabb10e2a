"""Protocol identity: the marker frame and the version every message header carries."""

from __future__ import annotations

PROTOCOL_VERSION = 1
MAGIC = b"PNS"
__version__ = "0.1.0"
