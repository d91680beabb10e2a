"""A stdio worker written against SPEC.md alone, that misbehaves on request (for tests).

Started by a PTS's ``command`` as ``python stdio_fake.py -m protocols.stdioworker --connect
stdio ... --key-file K --heartbeat S --id ID``: it reads only the options it needs. A run's
input says what it does: any value is echoed, except ``"garbage"`` (a text line on stdout),
``"partial"`` (the start of a record, then more records), ``"partial-exit"`` (the start of a
record, then exit), ``"close"`` (stdout closed, the process lives on), ``"close-stdin"`` (the
same with stdin) and ``"flood"`` (5 MB on stderr, then the echo). The hello announces the
range in the file named by $FAKE_PROTOCOLS (default 1-2).
"""

import os
import sys
import threading
import time

from protocols.codec import Codec
from protocols.stdioframe import FrameReader, pack_bytes


def option(name, default=None):
    args = sys.argv
    return args[args.index(name) + 1] if name in args else default


def main():
    with open(option("--key-file"), "rb") as handle:
        codec = Codec(handle.read().strip())
    beat = float(option("--heartbeat", "1"))
    lock = threading.Lock()

    def send(msg_type, body, re=None):
        with lock:
            os.write(1, pack_bytes(codec.encode(msg_type, body, re=re)))

    announced = [1, 2]
    path = os.environ.get("FAKE_PROTOCOLS", "")
    if path and os.path.exists(path):
        with open(path) as handle:
            announced = [int(v) for v in handle.read().split("-")]
    send("worker.hello", {"pid": os.getpid(), "id": option("--id", ""), "entry": "fake",
                          "hooks": [], "python": sys.version, "capabilities": [],
                          "protocols": announced})

    def beats():
        while True:
            time.sleep(beat)
            send("worker.heartbeat", {"busy": False})

    threading.Thread(target=beats, daemon=True).start()
    reader = FrameReader(2 ** 27)
    while True:
        data = os.read(0, 65536)
        if not data:
            return 0
        for frames in reader.feed(data):
            message = Codec(codec.signer.key, guard_replay=False).decode(frames)
            if message.type == "error":
                sys.stderr.write(f"refused: {message.body['message']}\n")
                return 6
            if message.type == "worker.stop":
                return 0
            if message.type == "task.req":
                misbehave(message.body["data"], lock)
                send("task.rep", {"result": message.body["data"]}, re=message.id)


def misbehave(what, lock):
    if what == "garbage":
        os.write(1, b"hello from a stray print\n")
    elif what in ("partial", "partial-exit"):
        with lock:     # a record of 64 bytes whose second frame claims 255: it cannot fit
            os.write(1, b"\0\0\0\x40\0\0\0\x03PNS\0\0\0\xff")
            if what == "partial-exit":
                os._exit(0)     # holding the lock: no heartbeat completes the record
    elif what in ("close", "close-stdin"):
        with lock:
            os.close(1 if what == "close" else 0)
            time.sleep(600)
    elif what == "flood":
        line = b"e" * 99 + b"\n"
        for _ in range(500):
            os.write(2, line * 100)


if __name__ == "__main__":
    sys.exit(main())
