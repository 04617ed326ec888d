"""Job runs executed by a *Python* Celery worker (deploy/python/celeryc_jobs.py): one `celeryc
beat --job-store URL --db-upgrade` sends the runs, one Python Celery 5.2 prefork worker
(tests/integration/pyjobs_app.py: pyworker_app + celeryc_jobs.install) executes them, and
every outcome is read back through `celeryc jobs ... --json`.

Without the module the runs stay Q (sent) and, with the default `forbid` policy, a scheduled
job never runs a second time: test_scheduled_forbid_runs_repeatedly fails then. The beat and
the worker are shared by the module (one database); every test uses its own jobs."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from beatutil import dump_logs_on_failure, module_database, pg_query, store_cmd, store_json
from conftest import (HERE, PY, TIMEOUT, Worker, celeryc_bin, scaled,
                      unique_queue, wait_for)

psycopg2 = pytest.importorskip("psycopg2")

REAP_TIMEOUT = 5  # --run-heartbeat-timeout (s): the worker heartbeats every 0.5 s
HEARTBEAT = 0.5


class Env:
    def __init__(self, url, tmp, queue):
        self.url, self.tmp, self.queue = url, tmp, queue
        self.beat = self.worker = None

    def start_beat(self):
        argv = [celeryc_bin(), "beat", "-b", os.environ["CELERYC_TEST_AMQP_URL"], "-l", "debug",
                "--job-store", self.url, "--db-upgrade", "--lease-ttl", "2",
                "--run-heartbeat-timeout", str(REAP_TIMEOUT)]
        self.beat = Worker(argv, dict(os.environ), str(self.tmp / "beat.log"), None, "beat",
                           cwd=str(self.tmp))
        self.beat.wait_log(r"leader now", 20)

    def start_worker(self):
        name = "pyjobs-%s@localhost" % self.queue
        env = dict(os.environ)
        env.update({"CELERY_BROKER_URL": os.environ["CELERYC_TEST_AMQP_URL"],
                    "CELERY_RESULT_BACKEND": os.environ["CELERYC_TEST_REDIS_URL"],
                    "CELERYC_JOB_STORE": self.url, "PYJ_HEARTBEAT": str(HEARTBEAT),
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HERE)})
        argv = [PY, "-m", "celery", "-A", "pyjobs_app", "worker", "--pool", "prefork", "-c", "2",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q",
                self.queue, "-n", name, "-l", "info"]
        self.worker = Worker(argv, env, str(self.tmp / "pyworker.log"), self.queue, name,
                             cwd=str(HERE))
        self.worker.wait_ready()

    def processes(self):
        return [p for p in (self.beat, self.worker) if p is not None]


@pytest.fixture(scope="module")
def env(services, tmp_path_factory):
    with module_database("it_pyjobs_") as url:
        e = Env(url, tmp_path_factory.mktemp("pyjobs"), unique_queue("pyjobs"))
        try:
            e.start_beat()  # --db-upgrade: the schema exists before the worker's first run
            e.start_worker()
            yield e
        finally:
            for p in e.processes():
                p.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, env):
    yield
    dump_logs_on_failure(request, env.processes())


def cc(env, *args, timeout=30):
    return store_cmd(env.url, *args, timeout=timeout)


def js(env, *args):
    return store_json(env.url, *args)


def mkjob(env, task, kwargs=None, interval=None, concurrency=None):
    args = ["jobs", "create", "--title", "py " + task, "--task", task, "--queue", env.queue]
    if task == "pyjobs.index":
        args += ["--since-kwarg", "since"]  # it logs the `since` it got
    if concurrency is not None:
        args += ["--concurrency", concurrency]
    if kwargs is not None:
        args += ["--kwargs", json.dumps(kwargs)]
    if interval is not None:
        args += ["--interval", str(interval)]
    return js(env, *args)["id"]


def runs(env, job):
    return list(reversed(js(env, "jobs", "runs", job, "-n", "1000")))


def wait_run(env, rid, statuses, timeout=TIMEOUT):
    last = {}

    def check():
        last["r"] = js(env, "jobs", "show", rid)
        st = last["r"]["status"]
        if st not in statuses and st not in "QRC":
            raise AssertionError("run %s is %s (%s), not in %s"
                                 % (rid, st, last["r"]["message"], statuses))
        return last["r"] if st in statuses else None
    try:
        return wait_for(check, timeout, "run %s in %s" % (rid, statuses), interval=0.1)
    except AssertionError as e:
        raise AssertionError("%s (now %s)" % (e, last.get("r", {}).get("status"))) from None


def manual_run(env, job):
    return js(env, "jobs", "run", job, "--user", "pytest")["run"]


def log_lines(env, rid):
    return [(ln["level"], ln["message"]) for ln in js(env, "jobs", "logs", rid)]


# ---- tests ---------------------------------------------------------------------------------

def test_scheduled_forbid_runs_repeatedly(env):
    """Default policy forbid: each run must end (S) for the next slot to run at all."""
    job = mkjob(env, "pyjobs.index", kwargs={"n": 1}, interval=1)
    assert js(env, "jobs", "show", job)["concurrency"] == "forbid"
    try:
        wait_for(lambda: sum(r["status"] == "S" for r in runs(env, job)) >= 4, 25,
                 "four successful scheduled runs on the Python worker", interval=0.2)
    finally:
        js(env, "jobs", "update", job, "--inactive")
        env.beat.wait_log(r"job %s removed from the schedule" % job, 10)
    rs = runs(env, job)
    for r in rs:
        wait_run(env, r["id"], "S")
    rs = runs(env, job)
    assert len(rs) >= 4 and all(r["started_by"] is None for r in rs)
    for r in rs:
        assert r["status"] == "S" and r["hostname"] == env.worker.name, r
        assert r["started_at"] and r["finished_at"] and r["heartbeat_at"], r
        assert (r["processed"], r["errored"]) == (1, 0), r
        # The header reaches the task as a request attribute: the task logs it.
        assert log_lines(env, r["id"])[0] == ("INFO", "run %s since %s"
                                             % (r["id"], r["kwargs"]["since"]))
    assert rs[0]["kwargs"]["since"] is None and rs[-1]["kwargs"]["since"] is not None


def test_failure_is_F_with_the_message(env):
    job = mkjob(env, "pyjobs.fail", kwargs={"message": "kaput"})
    r = wait_run(env, manual_run(env, job)["id"], "F")
    assert r["message"] == "ValueError: kaput"
    assert r["started_at"] and r["finished_at"] and r["hostname"] == env.worker.name
    assert log_lines(env, r["id"]) == [("INFO", "about to fail"), ("WARNING", "printed")]


def test_partial_success_counts_and_logs(env):
    job = mkjob(env, "pyjobs.index", kwargs={"n": 450, "fail_every": 3})
    r0 = manual_run(env, job)
    r = wait_run(env, r0["id"], "P")
    assert (r["processed"], r["errored"]) == (300, 150)
    assert r["message"] == "300 indexed, 150 failed"
    lines = log_lines(env, r["id"])
    assert len(lines) == 451
    # Batched: each statement is its own transaction (autocommit), so its rows share an xmin.
    (n_tx,), = pg_query(env.url, "SELECT count(DISTINCT xmin::text) FROM celeryc.run_logs "
                        "WHERE run_id = %s", (r["id"],))
    assert 3 <= n_tx <= 5, n_tx  # 200 + 200 + the rest (+ the first line, at once)
    assert lines[0] == ("INFO", "run %s since None" % r["id"])
    assert lines[1] == ("INFO", "item 0 indexed")
    assert lines[3] == ("WARNING", "item 2 failed")  # a plain (propagating) logger too
    assert not any("succeeded in" in m or "Received task" in m for _, m in lines)


def test_manual_run_success_and_warning(env):
    job = mkjob(env, "pyjobs.index", kwargs={"n": 2})
    r0 = manual_run(env, job)
    r = wait_run(env, r0["id"], "S")
    assert r["started_by"] == "pytest" and r["task_id"] == r0["task_id"]
    assert (r["processed"], r["errored"]) == (2, 0)
    job2 = mkjob(env, "pyjobs.sleep", kwargs={"seconds": 0.1})
    r = wait_run(env, manual_run(env, job2)["id"], "W")
    assert r["message"] == "slept"


def test_retry_keeps_the_run(env):
    """task.retry(): the retry message carries the run on (same task id, header put back);
    the run stays R in between and ends S after the second attempt."""
    job = mkjob(env, "pyjobs.retry_once")
    r = wait_run(env, manual_run(env, job)["id"], "S")
    assert (r["processed"], r["attempt"]) == (1, 1)
    assert log_lines(env, r["id"]) == [("INFO", "attempt 0"), ("INFO", "attempt 1")]


def test_long_run_heartbeats_then_stop_terminates(env):
    """A run longer than the reaper timeout stays R (heartbeats); `jobs stop` -> C, revoke
    with terminate -> the worker's main process records it, the store makes it X."""
    job = mkjob(env, "pyjobs.sleep", kwargs={"seconds": 60})
    rid = manual_run(env, job)["id"]
    r = wait_run(env, rid, "R")
    time.sleep(scaled(REAP_TIMEOUT + 6))  # past the reaper's timeout and sweep
    r = js(env, "jobs", "show", rid)
    assert r["status"] == "R", r
    p = cc(env, "jobs", "stop", rid, "-b", os.environ["CELERYC_TEST_AMQP_URL"])
    assert p.returncode == 0, (p.stdout, p.stderr)
    r = wait_run(env, rid, "X")
    assert r["finished_at"]


def test_cancelled_before_start_is_not_run(env, app):
    """A run that is already X when the worker starts it (marked by hand: no revoke reaches
    the worker, so only the module stops it) is not run; its result is REVOKED."""
    job = mkjob(env, "pyjobs.index", kwargs={"n": 1})
    # Hold the run back: the worker's two processes are busy with two sleeps first.
    jsl = mkjob(env, "pyjobs.sleep", kwargs={"seconds": 3}, concurrency="allow")
    busy = [manual_run(env, jsl)["id"] for _ in range(2)]
    for b in busy:
        wait_run(env, b, "R")
    r0 = manual_run(env, job)
    rid = r0["id"]
    wait_for(lambda: js(env, "jobs", "show", rid)["sent_at"], 10, "run sent")
    c = psycopg2.connect(env.url)
    c.autocommit = True
    try:
        with c.cursor() as cur:
            cur.execute("UPDATE celeryc.runs SET status = 'X', message = 'by hand' "
                        "WHERE id = %s AND status = 'Q'", (rid,))
            assert cur.rowcount == 1, "the run started before the sleeps ended"
    finally:
        c.close()
    env.worker.wait_log(r"job run %s was cancelled before it started: not run" % rid, 20)
    assert wait_for(lambda: app.AsyncResult(r0["task_id"]).state == "REVOKED", 10,
                    "REVOKED result")
    r = js(env, "jobs", "show", rid)
    assert r["status"] == "X" and r["message"] == "by hand" and r["started_at"] is None, r
    assert log_lines(env, rid) == []  # the body never ran (it logs first)
    for b in busy:
        wait_run(env, b, "W")


def test_child_killed_is_F_and_the_next_child_reconnects(env):
    """SIGKILL of the prefork child: the main process records WorkerLostError (F). The pool
    forks a new child from a main process that now has its own connection; that child opens
    its own, and the next runs (and a store that dropped every session) still work."""
    job = mkjob(env, "pyjobs.sleep", kwargs={"seconds": 60})
    rid = manual_run(env, job)["id"]
    wait_run(env, rid, "R")
    line = wait_for(lambda: [m for _, m in log_lines(env, rid) if "in pid" in m], 10,
                    "the sleep's first log line")[0]
    os.kill(int(re.search(r"in pid (\d+)", line).group(1)), signal.SIGKILL)
    r = wait_run(env, rid, "F")
    assert r["message"].startswith("WorkerLostError: Worker exited prematurely: signal 9 "
                                   "(SIGKILL)"), r["message"]
    ok = mkjob(env, "pyjobs.index", kwargs={"n": 1})
    for _ in range(3):
        wait_run(env, manual_run(env, ok)["id"], "S")
    # The server ends every session of the module: the next runs reconnect transparently.
    pg_query(env.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE application_name = 'celeryc_jobs'")
    for _ in range(3):
        r = wait_run(env, manual_run(env, ok)["id"], "S")
        assert len(log_lines(env, r["id"])) == 2


def test_store_unreachable_never_fails_the_task(tmp_path):
    """Eager, in a separate interpreter: a job store nobody listens on; the task still runs
    and returns, within the connect attempts' time."""
    from conftest import free_port
    script = tmp_path / "eager.py"
    script.write_text("""
import sys, time, logging
sys.path.insert(0, %r)
from celery import Celery
import celeryc_jobs
logging.basicConfig(level=logging.INFO)
app = Celery("eager")
assert celeryc_jobs.install(app, "postgresql://u:p@127.0.0.1:%d/db", heartbeat_interval=0.1)

@app.task(name="eager.t")
def t():
    logging.getLogger("x").warning("a line")
    celeryc_jobs.progress(1, 0)
    celeryc_jobs.partial("half")
    return celeryc_jobs.run_id()

t0 = time.monotonic()
r = t.apply(task_id="tid-1", headers={"celeryc_run": "run-1"})
print(r.status, r.result, round(time.monotonic() - t0, 1))
""" % (str(HERE.parents[1] / "deploy" / "python"), free_port()))
    p = subprocess.run([PY, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=scaled(60))
    assert p.returncode == 0, p.stderr
    status, result, secs = p.stdout.split()
    assert (status, result) == ("SUCCESS", "run-1"), p.stdout
    assert float(secs) < 10, p.stdout
    assert "could not mark it running" in p.stderr and "could not record" in p.stderr, p.stderr
