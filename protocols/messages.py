"""Every message type of the PNS wire protocol, as plain data.

Owns the names: which operations a client may ask for, which messages flow between the daemon
and its workers, and the type tag each carries. Request/reply pairs share a stem:
``<op>.req`` answered by ``<op>.rep`` (or by ``error``). Nothing here encodes or sends.
Python 3.6 compatible (the stdio worker runtime runs on 3.6); imports nothing of ours.
"""

from typing import Dict, NamedTuple, Tuple


class Operation(NamedTuple):
    """A client request type: ``<name>.req``, answered by ``<name>.rep``."""

    name: str
    doc: str

    @property
    def request(self) -> str:
        return self.name + ".req"

    @property
    def reply(self) -> str:
        return self.name + ".rep"


def request_type(op: str) -> str:
    return op + ".req"


def reply_type(op: str) -> str:
    return op + ".rep"


def op_of(message_type: str) -> str:
    """The operation named by a request type (``run.req`` -> ``run``); '' if not a request."""
    return message_type[:-4] if message_type.endswith(".req") else ""


ERROR = "error"                 # any request may be answered by this: {code, message, details}
JOB_EVENT = "job.event"         # streamed before job.watch.rep: {job, seq, kind, ...}

# Client <-> daemon. Bodies are documented in SPEC.md, section "Operations".
OPERATIONS: Tuple[Operation, ...] = (
    Operation("ping", "liveness: {} -> {version, time}"),
    Operation("status", "daemon version, uptime, PTS states"),
    Operation("stats", "{span?} -> finished runs and latency percentiles per PTS, per 5 s"),
    Operation("pts.list", "every PTS with its mode, version and state"),
    Operation("pts.describe", "{name} -> the spec and state of one PTS"),
    Operation("pts.hook", "{name, hook: init|config|clean, timeout?} -> the hook's result"),
    Operation("pts.files", "{name, which: input|output} -> files of the PTS's latest run dir"),
    Operation("pts.script", "{name, hook: init|config|run|clean} -> {text, path}"),
    Operation("pts.update", "{name, changes: {timeout}} -> {spec}: a new generation, swapped in"),
    Operation("pts.deploy", "{name, spec, who?} -> the swap: a new PTS, started, tested, saved"),
    Operation("pts.replace", "{name, spec, who?} -> the swap: a new generation, then the switch"),
    Operation("pts.undeploy", "{name, who?} -> the change: the PTS drains and goes"),
    Operation("pts.history", "{name, limit?} -> {events}: the audit of its changes, newest first"),
    Operation("reload", "{} -> {outcome}: config and pts.d re-read, differences applied"),
    Operation("demo.reset", "{} -> {restored}: the packaged hello scripts back in the home"),
    Operation("upload", "{size} or {upload, offset, data} -> {upload, received, size}: an "
              "input in parts, for run or submit's input_upload"),
    Operation("run", "{pts, input, timeout?} -> {job, result}: a synchronous run"),
    Operation("submit", "{pts, input, timeout?} -> {job}: an asynchronous run, durable"),
    Operation("job.status", "{job} -> the job's status record"),
    Operation("job.result", "{job} -> {job, result}; not_ready until finished"),
    Operation("job.input", "{job} -> {job, input}: the input the job was given"),
    Operation("job.result_chunk", "{job, offset?, limit?} -> {job, size, offset, data}"),
    Operation("job.list", "{pts?, status?, limit?, offset?} -> {jobs, total}"),
    Operation("job.cancel", "{job} -> the job's status record after dismissal"),
    Operation("job.watch", "{job, after?} -> job.event messages, then {job}"),
    Operation("job.delete", "{job} -> {}"),
    Operation("jobs.cleanup", "{max_age?, max_bytes?} -> {deleted}"),
)
OPERATION_NAMES = frozenset(op.name for op in OPERATIONS)

# Daemon <-> worker (see SPEC.md, "Worker protocol").
WORKER_HELLO = "worker.hello"           # worker -> daemon: {pid, entry, hooks, python, ...}
WORKER_HEARTBEAT = "worker.heartbeat"   # worker -> daemon: {busy}
WORKER_WELCOME = "worker.welcome"       # daemon -> worker, re=hello: {protocol} chosen
WORKER_STOP = "worker.stop"             # daemon -> worker: {} finish and exit
TASK_REQ = "task.req"                   # daemon -> worker: {op, data, timeout, job}
TASK_REP = "task.rep"                   # worker -> daemon, re=task: {result}
TASK_PROGRESS = "task.progress"         # worker -> daemon, re=task: {percent, message}
TASK_LOG = "task.log"                   # worker -> daemon, re=task: {line}
TASK_CANCEL = "task.cancel"             # daemon -> worker, re=task: {}

WORKER_MESSAGES: Dict[str, str] = {
    WORKER_HELLO: "worker announces itself after connecting",
    WORKER_HEARTBEAT: "worker is alive (every heartbeat interval)",
    WORKER_WELCOME: "daemon accepts the hello: the worker protocol version chosen",
    WORKER_STOP: "daemon asks the worker to exit cleanly",
    TASK_REQ: "daemon hands the worker one operation",
    TASK_REP: "the operation's result",
    TASK_PROGRESS: "progress of the running operation",
    TASK_LOG: "a log line of the running operation",
    TASK_CANCEL: "daemon asks the worker to cancel the running operation",
}


def all_message_types() -> Tuple[str, ...]:
    """Every type tag that may appear on the wire."""
    tags = [ERROR, JOB_EVENT]
    for op in OPERATIONS:
        tags += [op.request, op.reply]
    tags += list(WORKER_MESSAGES)
    return tuple(tags)
