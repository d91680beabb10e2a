"""The worker runtime: serve one PTS callable to a PNS daemon over the worker protocol.

Run as ``python -m protocols.worker --connect ipc://... --entry module:function
--key-file PATH [--init m:f] [--config m:f] [--clean m:f] [--heartbeat 1.0] [--id ID]``.
It loads the callables (exit code 3 if the entry cannot be loaded, 4 if the init hook fails),
runs init once, connects a DEALER to the daemon, says ``worker.hello`` and then serves
``task.req`` messages one at a time (see SPEC.md, "Worker protocol").

This module is the process entry: options, the key, loading the callables, init, signals and
the socket; the serving loop is :mod:`protocols.workerruntime`. Owns nothing of the daemon's
state and imports only ``protocols``, pyzmq, msgpack and the stdlib (Python 3.8+).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import Any, Dict, List, Optional, Tuple

import zmq

from protocols.codec import DEFAULT_MAX_BYTES, Codec
from protocols.context import EntryError, RunContext
from protocols.workerruntime import CAPABILITIES, Call, WorkerRuntime, make_pipe, note

EXIT_BAD_ENTRY = 3
EXIT_INIT_FAILED = 4
FINAL_LINGER_MS = 1000        # how long the last reply may take to leave at exit


def load_calls(args: argparse.Namespace) -> Dict[str, Call]:
    entries = {"run": args.entry, "init": args.init, "config": args.config, "clean": args.clean}
    return {op: Call(entry) for op, entry in entries.items() if entry}


def read_key(path: str) -> bytes:
    """The signing key: the file's content, whitespace stripped (empty means signing off)."""
    with open(path, "rb") as handle:
        return handle.read().strip()


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m protocols.worker",
                                     description="Serve a PTS callable to a PNS daemon.")
    parser.add_argument("--connect", required=True, help="the daemon's worker endpoint")
    parser.add_argument("--entry", required=True, help="the run callable, module:function")
    for hook in ("init", "config", "clean"):
        parser.add_argument("--" + hook, help="the %s hook, module:function" % hook)
    parser.add_argument("--key-file", required=True, help="the signing key (empty: no signing)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between beats")
    parser.add_argument("--id", default="", help="routing id the daemon knows this worker by")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    return parser.parse_args(argv)


def _install_signals(signal_fd: int, runtime_box: List[WorkerRuntime]) -> None:
    """SIGTERM, SIGINT, SIGHUP: cancel the task and exit (the main loop, or the keeper)."""
    def on_signal(signum: int, frame: Any) -> None:
        for runtime in runtime_box:
            runtime.signalled = True
            if runtime.current is not None:
                runtime.current.ctx.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    # Written even while the main thread is deep in C code: the keeper sees it there
    signal.set_wakeup_fd(signal_fd, warn_on_full_buffer=False)


def _prepare(args: argparse.Namespace) -> Tuple[Dict[str, Call], bytes]:
    """Load the key and callables and run init; raise SystemExit with the code on failure."""
    try:
        key = read_key(args.key_file)
    except OSError as exc:
        note("cannot read the key file %s: %s" % (args.key_file, exc.strerror))
        raise SystemExit(EXIT_BAD_ENTRY) from exc
    try:
        calls = load_calls(args)
    except EntryError as exc:
        note("cannot load the PTS: %s" % exc)
        raise SystemExit(EXIT_BAD_ENTRY) from exc
    if "init" in calls:
        try:
            calls["init"](None, RunContext())
        except Exception as exc:  # a failing init means this worker cannot serve
            note("init %s failed:\n%s" % (args.init, traceback.format_exc().rstrip()))
            raise SystemExit(EXIT_INIT_FAILED) from exc
    return calls, key


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    calls, key = _prepare(args)
    signal_read, signal_write = make_pipe()
    runtimes = []  # type: List[WorkerRuntime]
    _install_signals(signal_write, runtimes)
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    if args.id:
        socket.setsockopt(zmq.ROUTING_ID, args.id.encode("utf-8"))
    socket.setsockopt(zmq.LINGER, FINAL_LINGER_MS)
    socket.setsockopt(zmq.MAXMSGSIZE, args.max_bytes + 2**20)
    socket.connect(args.connect)
    local = args.connect.startswith("ipc://")    # blob frames unsigned on ipc:// only
    runtime = WorkerRuntime(socket, Codec(key, max_bytes=args.max_bytes, local=local), calls,
                            signal_fd=signal_read, heartbeat=args.heartbeat)
    runtimes.append(runtime)
    hello = {"pid": os.getpid(), "id": args.id, "entry": args.entry,
             "hooks": sorted(op for op in calls if op != "run"), "python": sys.version,
             "capabilities": CAPABILITIES}
    try:
        return runtime.serve(hello)
    finally:
        socket.close()
        context.term()


if __name__ == "__main__":
    sys.exit(main())
