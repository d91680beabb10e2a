'use strict';
// The serving loop of a worker (protocols/SPEC.md, "Worker protocol"): hello, heartbeats, one
// task at a time, progress and log lines, cancel, stop.

const { ProtocolError } = require('./codec');

const PROTOCOLS = [1, 2];             // the worker protocol versions this runtime speaks
const MAX_PENDING = 1000;             // progress and log messages queued before lines are dropped
const OPS = ['run', 'init', 'config', 'clean'];

function note(line) {
  process.stderr.write(`pns-worker: ${line}\n`);
}

// What a PTS function gets as its second argument
class RunContext {
  constructor(job, emit) {
    this.job = job;
    this.emit = emit;
    this.cancelled = false;
    this.waiters = new Set();
  }

  progress(percent, message = '') {
    if (typeof percent !== 'number' || !Number.isFinite(percent)) {
      return this.log(`progress ignored: ${String(percent)} is not a finite number`);
    }
    return this.emit('task.progress', { percent: Math.max(0, Math.min(100, Math.trunc(percent))),
      message: String(message) });
  }

  log(line) {
    return this.emit('task.log', { line: String(line) });
  }

  // Resolves true as soon as the task is cancelled, false after `seconds`
  waitCancelled(seconds) {
    if (this.cancelled) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = (value) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(value);
      };
      const timer = setTimeout(() => waiter(false), Math.max(0, seconds * 1000));
      this.waiters.add(waiter);
    });
  }

  cancel() {
    this.cancelled = true;
    for (const waiter of [...this.waiters]) waiter(true);
  }
}

function errorMessage(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return `Error: ${String(err)}`;
}

class WorkerRuntime {
  constructor({ codec, transport, calls, id, heartbeat, entry, exit }) {
    Object.assign(this, { codec, transport, calls, id, heartbeat, entry, exit });
    this.current = null;          // {id, ctx} of the running task
    this.stopping = false;
    this.pending = 0;             // progress and log messages sent but not yet out
    this.parent = process.ppid;
  }

  start() {
    this.transport.onFrames((frames) => this.receive(frames));
    this.transport.onEnd((reason) => {
      if (reason) note(reason);
      this.exit(0);
    });
    this.send('worker.hello', {
      pid: process.pid, id: this.id, entry: this.entry,
      hooks: OPS.filter((op) => op !== 'run' && this.calls[op]),
      python: `node ${process.version}`, capabilities: ['cancel', 'progress', 'log'],
      protocols: PROTOCOLS,
    });
    this.beat = setInterval(() => this.tick(), this.heartbeat * 1000);
  }

  tick() {
    if (process.ppid !== this.parent) {     // the daemon died: nobody will stop us
      note('the daemon is gone; exiting');
      this.exit(0);
      return;
    }
    this.send('worker.heartbeat', { busy: this.current !== null });
  }

  send(type, body, re = null) {
    let frames;
    try {
      frames = this.codec.encode(type, body, { re });
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      frames = this.codec.encode('error', { code: 'pts_error', message: err.message.slice(0, 200), details: {} }, { re });
    }
    return this.transport.send(frames).catch((err) => note(`send failed: ${err.message}`));
  }

  receive(frames) {
    let message;
    try {
      message = this.codec.decode(frames);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      note(`dropped a message: ${err.code}: ${err.message}`);
      return;
    }
    const handlers = {
      'task.req': () => this.onTask(message),
      'task.cancel': () => this.onCancel(message),
      'worker.stop': () => this.onStop(),
      'worker.welcome': () => {},
      error: () => this.onError(message),
    };
    const handler = handlers[message.type];
    if (handler) handler();
    else note(`dropped a message of unknown type ${message.type}`);
  }

  onTask(message) {
    const body = message.body || {};
    if (this.current !== null || this.stopping) {
      this.send('error', { code: 'busy', message: 'worker is busy', details: {} }, message.id);
    } else if (!OPS.includes(body.op)) {
      this.send('error', { code: 'bad_request', message: `unknown op ${String(body.op)}`, details: {} }, message.id);
    } else if (!this.calls[body.op]) {
      this.send('task.rep', { result: null }, message.id);
    } else {
      this.runTask(message.id, this.calls[body.op], body);
    }
  }

  async runTask(taskId, call, body) {
    const ctx = new RunContext(body.job ?? null, (type, event) => this.emit(taskId, type, event));
    this.current = { id: taskId, ctx };
    let frames;
    try {
      const result = await call(body.data ?? null, ctx);
      frames = this.answer(taskId, result === undefined ? null : result);
    } catch (err) {
      if (err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
      const code = ctx.cancelled ? 'cancelled' : 'pts_error';
      frames = this.failure(taskId, code, errorMessage(err));
    }
    this.current = null;        // before the answer leaves: the next task may follow at once
    await this.transport.send(frames).catch((err) => note(`send failed: ${err.message}`));
    if (this.stopping) await this.quit();
  }

  // The frames of a task's answer: its result, or pts_error when that cannot be sent
  answer(taskId, result) {
    try {
      return this.codec.encode('task.rep', { result }, { re: taskId });
    } catch (err) {
      const why = err instanceof ProtocolError ? err.message : `cannot be encoded in msgpack: ${err.message}`;
      return this.failure(taskId, 'pts_error', `result ${why}`);
    }
  }

  failure(taskId, code, message) {
    return this.codec.encode('error', { code, message: message.slice(0, 2000), details: {} }, { re: taskId });
  }

  // Resolves once the message has left (at once if it is dropped)
  emit(taskId, type, body) {
    if (this.current === null || this.current.id !== taskId) return Promise.resolve();
    if (this.pending >= MAX_PENDING && type === 'task.log') return Promise.resolve();
    this.pending += 1;
    return this.send(type, body, taskId).finally(() => { this.pending -= 1; });
  }

  onCancel(message) {
    if (this.current !== null && this.current.id === message.re) this.current.ctx.cancel();
  }

  onStop() {
    this.stopping = true;
    if (this.current === null) this.quit();
  }

  onError(message) {
    const { code, message: text } = message.body || {};
    note(`the daemon refused us: ${code}: ${text}`);
    if (code === 'version') this.exit(6);
  }

  // SIGTERM, SIGINT, SIGHUP: cancel the task and exit at once
  signalled() {
    if (this.current !== null) this.current.ctx.cancel();
    this.exit(0);
  }

  async quit() {
    clearInterval(this.beat);
    await this.transport.flush();
    this.exit(0);
  }
}

module.exports = { WorkerRuntime, RunContext, PROTOCOLS };
