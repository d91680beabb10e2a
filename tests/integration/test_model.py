"""The model-based test: random interleavings of what users and operators do to a real node.

A Hypothesis state machine drives a real ``pnsd`` and ``pnsweb`` (processes, see
:mod:`tests.integration.model_driver`) through deploy, replace (web, CLI, reload, SIGHUP) and
undeploy of an inproc, a worker and a process-mode PTS, synchronous runs, async submissions
(with and without an Idempotency-Key), dismiss, cancel and delete, reads by the owner, another
user, an administrator and anonymous callers, worker kills, a SIGKILL and restart of pnsd, and
inputs and results around ``max_message_bytes``. After every step it checks the node against
the simple model of :mod:`tests.integration.model_state` (the invariants are in
:mod:`tests.integration.model_checks`); at the end, that nothing of the node is left running.

Budget: a short, derandomised profile (fixed examples, no shrinking: each example starts real
processes) runs in ``make test``; ``PNS_MODEL_EXAMPLES=N`` runs N random examples (the
``model`` row of ``make faults``); ``PNS_MODEL_SHRINK=1`` adds the shrink phase. Every failure
it finds is kept as a plain test in ``test_model_regressions.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.integration import model_checks as checks
from tests.integration.model_driver import Driver
from tests.integration.model_pts import MODES, NAMES, spec, write_code
from tests.integration.model_state import USERS, JobModel, Model, PtsModel

EXAMPLES = int(os.environ.get("PNS_MODEL_EXAMPLES") or 0)
PHASES = (Phase.explicit, Phase.generate) + (
    (Phase.shrink,) if os.environ.get("PNS_MODEL_SHRINK") else ())
SHORT = settings(max_examples=3, stateful_step_count=20, deadline=None, derandomize=True,
                 database=None, phases=PHASES, print_blob=True, report_multiple_bugs=False,
                 suppress_health_check=list(HealthCheck))
PROFILE = settings(SHORT, max_examples=EXAMPLES, stateful_step_count=30,
                   derandomize=False) if EXAMPLES else SHORT

WHO = ("owner", "stranger", "admin", "anonymous")
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
payloads = st.fixed_dictionaries({"n": st.integers(0, 2**31), "t": texts})
sleeps = st.sampled_from([0, 0, 0.3, 1.5])


class NodeMachine(RuleBasedStateMachine):
    """One node per example; the model beside it."""

    base_dir: Path = Path(tempfile.gettempdir())
    pts = Bundle("pts")
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.dir = Path(tempfile.mkdtemp(prefix="m", dir=self.base_dir))
        self.driver = Driver(self.dir)
        self.driver.start()

    def teardown(self) -> None:
        left = self.driver.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not left, f"processes left after stop: {left}"

    # -- PTS lifecycle -------------------------------------------------------------------

    @initialize(target=pts, mode=st.sampled_from(MODES))
    def deploy_first(self, mode: str) -> str:
        return self._deploy(mode, "web")

    @precondition(lambda self: len(self.model.pts) < len(MODES))
    @rule(target=pts, data=st.data(), how=st.sampled_from(["web", "cli"]))
    def deploy(self, data: st.DataObject, how: str) -> str:
        free = [mode for mode in MODES if NAMES[mode] not in self.model.pts]
        return self._deploy(data.draw(st.sampled_from(free), label="mode"), how)

    @rule(name=pts, how=st.sampled_from(["web", "cli", "reload", "sighup"]))
    def replace(self, name: str, how: str) -> None:
        pts = self.model.pts[name]
        version = self.model.new_version(name)
        table = self._table(pts.mode, version)
        if how == "web":
            reply = self.driver.http("PUT", f"/v1/processes/{name}", user="alice",
                                     body={"spec": table})
            assert reply.status == 204, f"replace {name} over the web: {reply}"
        elif how == "cli":
            done = self.driver.cli("pts", "replace", name,
                                   str(self.driver.write_pts_file(name, table)))
            assert done.returncode == 0, f"pnsd pts replace {name}: {done.stderr}"
        else:
            self.driver.edit_pts_d(name, table)
            if how == "reload":
                done = self.driver.cli("reload")
                assert done.returncode == 0, f"pnsd reload: {done.stderr}"
            else:
                self.driver.sighup()
            checks.wait_for_version(self.driver, name, version)
        self.model.swapped(name, version)
        self._probe(name)

    @rule(name=consumes(pts), how=st.sampled_from(["web", "cli"]))
    def undeploy(self, name: str, how: str) -> None:
        mode = self.model.pts[name].mode
        if how == "web":
            reply = self.driver.http("DELETE", f"/v1/processes/{name}", user="alice")
            assert reply.status == 204, f"undeploy {name} over the web: {reply}"
        else:
            done = self.driver.cli("pts", "undeploy", name)
            assert done.returncode == 0, f"pnsd pts undeploy {name}: {done.stderr}"
        self.model.undeployed(name)
        checks.gone_process(self.driver, name, mode)

    # -- runs and jobs -------------------------------------------------------------------

    @rule(target=jobs, name=pts, user=st.sampled_from(USERS), data=payloads)
    def run_sync(self, name: str, user: str, data: Any) -> Any:
        return self._run(name, user, data, size=0)

    @rule(target=jobs, name=pts, user=st.sampled_from(USERS), data=payloads, sleep=sleeps,
          keyed=st.booleans())
    def submit(self, name: str, user: str, data: Any, sleep: float, keyed: bool) -> Any:
        data = {**data, "sleep": sleep}
        key = os.urandom(8).hex() if keyed else None
        job = self._submit(name, user, data, key)
        if key is not None and job is not None and "idempotency" not in checks.RELAXED:
            again = self._submit(name, user, data, key, repeat=True)
            assert again is None or again.id == job.id, (
                f"a repeated submission with Idempotency-Key {key} made job {again.id}, "
                f"the first was {job.id}")
        return job.id if job is not None else multiple()

    @rule(target=jobs, name=pts, user=st.sampled_from(USERS),
          pad=st.sampled_from(checks.INPUT_SIZES))
    def run_sized_input(self, name: str, user: str, pad: str) -> Any:
        return self._run(name, user, checks.sized_payload(pad), size=0)

    @precondition(lambda self: NAMES["process"] in self.model.pts)
    @rule(target=jobs, user=st.sampled_from(USERS), size=st.sampled_from(checks.RESULT_SIZES),
          asynchronous=st.booleans())
    def run_large_result(self, user: str, size: int, asynchronous: bool) -> Any:
        name = NAMES["process"]
        if asynchronous:
            job = self._submit(name, user, {"big": size}, None, size=size)
            return job.id if job is not None else multiple()
        return self._run(name, user, {"big": size}, size=size)

    @rule(job=jobs)
    def read(self, job: str) -> None:
        for who in WHO:
            checks.read_as(self.driver, self.model.jobs[job], self._caller(job, who))

    @rule(job=jobs)
    def wait(self, job: str) -> None:
        checks.wait_final(self.driver, self.model.jobs[job])

    @rule(job=jobs, by=st.sampled_from(["owner", "admin"]))
    def dismiss(self, job: str, by: str) -> None:
        """Anonymous and another user are refused first; then the owner or an admin."""
        for who in ("anonymous", "stranger", by):
            checks.dismiss_as(self.driver, self.model.jobs[job], self._caller(job, who))

    @rule(job=jobs, op=st.sampled_from(["cancel", "delete"]))
    def cli_job(self, job: str, op: str) -> None:
        checks.cli_job_op(self.driver, self.model.jobs[job], op)

    # -- faults --------------------------------------------------------------------------

    @precondition(lambda self: NAMES["worker"] in self.model.pts and self.model.worker_kills < 2)
    @rule()
    def kill_worker(self) -> None:
        self.model.worker_kills += 1
        pids = self.driver.worker_pids("m_worker_v")
        if not pids:
            return
        os.kill(pids[0], 9)
        for job in self.model.unfinished(NAMES["worker"]):
            job.may_fail("worker_died")

    @precondition(lambda self: self.model.daemon_kills < 1)
    @rule()
    def kill_and_restart_daemon(self) -> None:
        self.model.daemon_kills += 1
        self.driver.kill_daemon()
        for job in self.model.unfinished():
            job.may_fail("daemon restarted")
        self.driver.restart_daemon()
        self.driver.wait_link()
        checks.forget_lost_sync_records(self.driver, self.model)
        for job in self.model.jobs.values():
            job.verified = False        # read the results again: nothing may be lost
        checks.no_strays(self.driver)

    @rule()
    def reload_unchanged(self) -> None:
        done = self.driver.cli("reload")
        assert done.returncode == 0, f"pnsd reload with nothing changed: {done.stderr}"

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def web_link_is_up(self) -> None:
        checks.link_up(self.driver)

    @invariant()
    def jobs_match_the_model(self) -> None:
        checks.jobs_consistent(self.driver, self.model)

    # -- helpers -------------------------------------------------------------------------

    def _table(self, mode: str, version: int) -> dict[str, Any]:
        write_code(self.driver.code_dir, mode, version)
        return spec(mode, version, self.driver.code_dir)

    def _deploy(self, mode: str, how: str) -> str:
        name = NAMES[mode]
        version = self.model.new_version(name)
        table = self._table(mode, version)
        if how == "web":
            reply = self.driver.http("POST", "/v1/processes", user="alice",
                                     body={"name": name, "spec": table})
            assert reply.status == 201, f"deploy {name} over the web: {reply}"
        else:
            done = self.driver.cli("pts", "deploy", str(self.driver.write_pts_file(name, table)))
            assert done.returncode == 0, f"pnsd pts deploy {name}: {done.stderr}"
        self.model.pts[name] = PtsModel(name, mode, version)
        self._probe(name)
        return name

    def _probe(self, name: str) -> None:
        """A run right after a deploy or swap: it succeeds, on the new version (defect 1)."""
        job = checks.run_sync(self.driver, self.model.pts[name], "alice", {"n": -1}, 0)
        assert job is not None
        self.model.jobs[job.id] = job

    def _caller(self, job: str, who: str) -> str | None:
        owner = self.model.jobs[job].owner
        if who == "owner":
            return owner
        if who == "admin":
            return "alice"
        if who == "stranger":
            return next(user for user in USERS if user not in (owner, "alice"))
        return None

    def _run(self, name: str, user: str, data: Any, *, size: int) -> Any:
        pts = self.model.pts[name]
        job = checks.run_sync(self.driver, pts, user, data, size)
        if job is None:
            return multiple()
        self.model.jobs[job.id] = job
        return job.id

    def _submit(self, name: str, user: str, data: Any, key: str | None, *, size: int = 0,
                repeat: bool = False) -> JobModel | None:
        pts = self.model.pts[name]
        job = checks.submit(self.driver, pts, user, data, size=size, key=key)
        if job is not None and not repeat:
            self.model.jobs[job.id] = job
        return job


@pytest.mark.slow
@pytest.mark.timeout(900 if EXAMPLES else 240)
def test_the_node_keeps_its_promises_under_random_interleavings(tmp_path: Path) -> None:
    NodeMachine.base_dir = tmp_path
    run_state_machine_as_test(NodeMachine, settings=PROFILE)

