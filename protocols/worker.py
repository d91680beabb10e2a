"""The worker runtime: serve one PTS callable to a PNS daemon over the worker protocol.

Run as ``python -m protocols.worker --connect ipc://... --entry module:function
--key-file PATH [--init m:f] [--config m:f] [--clean m:f] [--heartbeat 1.0] [--id ID]``.
It loads the callables (exit code 3 if the entry cannot be loaded, 4 if the init hook fails),
runs init once, connects a DEALER to the daemon, says ``worker.hello`` and then serves
``task.req`` messages one at a time (see SPEC.md, "Worker protocol").

A **remote worker** is started by hand (or by systemd) on any machine, not by the daemon::

    python -m protocols.worker --connect tcp://node:7756 --pts NAME --entry mod:fn
        --key-file secret.key --server-key server.key --key NAME.key_secret

joins the pool of PTS NAME over CURVE (:mod:`protocols.membership`) and rejoins after a stop
or a reconnect. ``--config-file FILE`` reads the same options from the ``[worker]`` section of an
INI file (``key = value`` lines, option names without dashes); the command line wins.

This module is the process entry: options, the key, loading the callables, init, signals and
the socket; the serving loop is :mod:`protocols.workerruntime`. Owns nothing of the daemon's
state and imports only ``protocols``, pyzmq, msgpack and the stdlib (Python 3.8+).
"""

from __future__ import annotations

import argparse
import configparser
import os
import platform
import signal
import sys
import traceback
from typing import Any, Dict, List, Optional, Tuple

import zmq

from protocols.codec import DEFAULT_MAX_BYTES, Codec
from protocols.context import EntryError, RunContext
from protocols.keeper import make_pipe, note
from protocols.membership import Membership, load_keys, secure_client
from protocols.version import WORKER_PROTOCOLS
from protocols.workerruntime import CAPABILITIES, Call, WorkerRuntime

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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m protocols.worker",
                                     description="Serve a PTS callable to a PNS daemon.")
    parser.add_argument("--config-file", help="an INI file whose [worker] section gives options")
    parser.add_argument("--connect", required=True, help="the daemon's worker endpoint")
    parser.add_argument("--entry", required=True, help="the run callable, module:function")
    for hook in ("init", "config", "clean"):
        parser.add_argument("--" + hook, help="the %s hook, module:function" % hook)
    parser.add_argument("--key-file", required=True, help="the signing key (empty: no signing)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between beats")
    parser.add_argument("--id", default="", help="routing id the daemon knows this worker by")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--pts", help="remote worker: the PTS whose pool to join")
    parser.add_argument("--server-key", help="remote worker: the node's CURVE public key file")
    parser.add_argument("--key", help="remote worker: this worker's CURVE secret key file")
    config = _config_path(argv)
    if config:
        argv = _config_args(config, parser) + argv
    args = parser.parse_args(argv)
    if bool(args.server_key) != bool(args.key):
        parser.error("--server-key and --key go together")
    if args.server_key and not args.pts:
        parser.error("CURVE keys are for a remote worker: give --pts too")
    return args


def _config_path(argv: List[str]) -> str:
    for index, item in enumerate(argv):
        if item == "--config-file" and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith("--config-file="):
            return item.split("=", 1)[1]
    return ""


def _config_args(path: str, parser: argparse.ArgumentParser) -> List[str]:
    """The ``[worker]`` section of ``path`` as command-line options (given first: the real
    command line wins)."""
    reader = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            reader.read_file(handle)
    except (OSError, configparser.Error) as exc:
        parser.error("cannot read %s: %s" % (path, exc))
    if not reader.has_section("worker"):
        parser.error("%s has no [worker] section" % path)
    args = []  # type: List[str]
    for name, value in reader.items("worker"):
        if name.replace("_", "-") != "config-file":
            args += ["--" + name.replace("_", "-"), value]
    return args


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
    if args.id and not args.pts:     # a remote worker is known by its connection
        socket.setsockopt(zmq.ROUTING_ID, args.id.encode("utf-8"))
    socket.setsockopt(zmq.LINGER, FINAL_LINGER_MS)
    socket.setsockopt(zmq.MAXMSGSIZE, args.max_bytes + 2**20)
    hello = {"pid": os.getpid(), "id": args.id, "entry": args.entry,
             "hooks": sorted(op for op in calls if op != "run"), "python": sys.version,
             "capabilities": CAPABILITIES, "protocols": list(WORKER_PROTOCOLS)}
    membership = _remote(args, socket, hello)
    socket.connect(args.connect)
    local = args.connect.startswith("ipc://")    # blob frames unsigned on ipc:// only
    runtime = WorkerRuntime(socket, Codec(key, max_bytes=args.max_bytes, local=local), calls,
                            signal_fd=signal_read, heartbeat=args.heartbeat,
                            membership=membership)
    runtimes.append(runtime)
    try:
        return runtime.serve(hello)
    finally:
        if membership is not None:
            membership.close()
        socket.close()
        context.term()


def _remote(args: argparse.Namespace, socket: "zmq.Socket[bytes]",
            hello: Dict[str, Any]) -> Optional[Membership]:
    """A remote worker's membership (CURVE keys set on ``socket``), or None for a local one."""
    if not args.pts:
        return None
    if args.server_key:
        try:
            secure_client(socket, load_keys(args.server_key, args.key))
        except (OSError, ValueError) as exc:
            note("cannot load the CURVE keys: %s" % exc)
            raise SystemExit(EXIT_BAD_ENTRY) from exc
    # only to a connection whose handshake is done: nothing queues up while the node is away
    socket.setsockopt(zmq.IMMEDIATE, 1)
    hello["host"] = platform.node()     # the node's status shows where the worker runs
    return Membership(socket, hello, pts=args.pts)


if __name__ == "__main__":
    sys.exit(main())
