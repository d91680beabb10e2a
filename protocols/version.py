"""Protocol identity: the marker frame and the version every message header carries."""

PROTOCOL_VERSION = 1
# The worker protocol versions this side speaks, lowest and highest (SPEC.md, "The versioned
# hello"); a worker's hello announces its range and the daemon picks the highest shared one.
WORKER_PROTOCOLS = (1, 2)
MAGIC = b"PNS"
__version__ = "0.1.0"
