"""Job runs on the worker side (issue #6): a celeryc worker started with --job-store marks the
runs it executes in Postgres (R, then S / F / P / W / X), writes their logs in batches,
heartbeats them, and records what the master decides (WorkerLostError, revoke terminate).

Each test has its own database (`pg_url`); the worker creates the schema (--db-upgrade), the
test inserts a job and a Q run with psycopg2 and publishes the run's message itself with the
Python client, as the beat would: task_id = the run's task_id, header celeryc_run = run id.
celeryc only (the Python worker ignores the header).
"""
import datetime
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import TIMEOUT, c_only, celeryc_bin, free_port, scaled, wait_for

pytestmark = c_only

psycopg2 = pytest.importorskip("psycopg2")
import psycopg2.extras  # noqa: E402


class JobDB:
    """The job store's tables through psycopg2 (autocommit)."""

    def __init__(self, url):
        self.url = url
        self.conn = psycopg2.connect(url, connect_timeout=10)
        self.conn.autocommit = True

    def close(self):
        self.conn.close()

    def q(self, sql, *args):
        with self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None

    def job(self, task, kwargs=None):
        jid = str(uuid.uuid4())
        self.q("INSERT INTO celeryc.jobs (id, title, task, kwargs) VALUES (%s, %s, %s, %s)",
               jid, "job " + task, task, json.dumps(kwargs or {}))
        return jid

    def run(self, job_id, kwargs=None, status="Q"):
        rid, tid = str(uuid.uuid4()), str(uuid.uuid4())
        self.q("INSERT INTO celeryc.runs (id, job_id, task_id, kwargs, status, started_by) "
               "VALUES (%s, %s, %s, %s, %s, 'test')",
               rid, job_id, tid, json.dumps(kwargs or {}), status)
        return rid, tid

    def get(self, rid):
        return self.q("SELECT * FROM celeryc.runs WHERE id = %s", rid)[0]

    def logs(self, rid):
        return self.q("SELECT id, timestamp, level, message, task_id, xmin::text AS xmin "
                      "FROM celeryc.run_logs WHERE run_id = %s ORDER BY id", rid)

    def wait_status(self, rid, statuses, timeout=TIMEOUT):
        def check():
            r = self.get(rid)
            return r if r["status"] in statuses else None
        return wait_for(check, timeout, "run %s in %s (now %s)" % (rid, statuses,
                                                                  self.get(rid)["status"]))


def start_worker(worker_factory, pg_url, concurrency=2, extra=(), **kw):
    """A worker with the job store; the schema is created by --db-upgrade."""
    w = worker_factory(concurrency=concurrency,
                       extra=["--job-store", pg_url, "--db-upgrade",
                              "--job-run-heartbeat-interval", "0.5"] + list(extra), **kw)
    return w


def send_run(app, w, db, task, kwargs=None, status="Q", **options):
    """A job and a run of it (status Q unless said), then the run's message as the beat sends
    it. Returns (run id, AsyncResult)."""
    kwargs = kwargs or {}
    rid, tid = db.run(db.job(task, kwargs), kwargs, status=status)
    res = app.send_task(task, kwargs=kwargs, task_id=tid, queue=w.queue,
                        headers={"celeryc_run": rid}, **options)
    return rid, res


def celeryc(*argv, timeout=30):
    """Run a celeryc client command (`jobs ...`, `db ...`); returns CompletedProcess."""
    return subprocess.run([celeryc_bin()] + list(argv), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=scaled(timeout),
                          env=dict(os.environ, CELERY_BROKER_URL=os.environ["CELERYC_TEST_AMQP_URL"]))


def child_pids(pid):
    try:
        text = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_outcomes_success_failure_partial_warning(worker_factory, pg_url, app, pool):
    w = start_worker(worker_factory, pg_url, extra=["--pool", pool])
    db = JobDB(pg_url)
    try:
        since = "2026-11-01T00:00:00+00:00"
        ok, ok_res = send_run(app, w, db, "jobs.index_events", {"n": 5, "since": since})
        bad, bad_res = send_run(app, w, db, "jobs.fail", {"message": "kaput"})
        part, part_res = send_run(app, w, db, "jobs.index_events",
                                  {"n": 4, "errors": 1, "partial": True})
        warn, warn_res = send_run(app, w, db, "jobs.index_events", {"n": 2, "warning": True})

        # S: the Celery result is the task's, the run has times, host and counters.
        assert ok_res.get(timeout=TIMEOUT) == {"indexed": 5, "failed": 0, "since": since,
                                               "run_id": ok}
        r = db.wait_status(ok, "S")
        assert r["started_at"] is not None and r["finished_at"] is not None
        assert r["started_at"] <= r["finished_at"]
        assert r["hostname"] == w.name
        assert (r["processed"], r["errored"]) == (5, 0)
        assert r["summary"] == {"indexed": 5, "failed": 0}  # cc_task_run_summary
        shown = subprocess.run([celeryc_bin(), "jobs", "show", ok, "--job-store", pg_url],
                               capture_output=True, text=True, timeout=scaled(30)).stdout
        assert "\nsummary:\n" in shown and "\n  indexed: 5\n" in shown, shown
        assert r["message"] is None
        lines = [x["message"] for x in db.logs(ok)]
        assert lines == ["indexing events since %s" % since] + \
            ["event %d indexed" % i for i in range(5)]
        assert {x["task_id"] for x in db.logs(ok)} == {ok_res.id}

        # F: the error text, as "Type: message"; the Celery result is the failure.
        with pytest.raises(ValueError):
            bad_res.get(timeout=TIMEOUT)
        r = db.wait_status(bad, "F")
        assert r["message"] == "ValueError: kaput"
        assert r["summary"] is None
        assert r["finished_at"] is not None
        assert [x["message"] for x in db.logs(bad)] == ["about to fail"]

        # P: counters and message; Celery still says SUCCESS with the return value.
        assert part_res.get(timeout=TIMEOUT)["indexed"] == 3
        assert part_res.state == "SUCCESS"
        r = db.wait_status(part, "P")
        assert (r["processed"], r["errored"]) == (3, 1)
        assert r["summary"] == {"indexed": 3, "failed": 1}
        assert r["message"] == "3 of 4 events indexed, 1 failed"
        levels = [(x["level"], x["message"]) for x in db.logs(part)]
        assert levels[-1] == ("WARNING", "event 3 failed")
        assert levels[1] == ("INFO", "event 0 indexed")

        # W
        assert warn_res.get(timeout=TIMEOUT)["indexed"] == 2
        r = db.wait_status(warn, "W")
        assert r["message"] == "2 events indexed; the source was slow"
    finally:
        db.close()


def test_celery_retry_keeps_the_run(worker_factory, pg_url, app):
    """A task that calls retry() inside a job run: the retry message carries the run on, and
    the run ends with the retried attempt's outcome."""
    w = start_worker(worker_factory, pg_url)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "t.integration.tasks.retry_once", {"countdown": 0.5})
        assert res.get(timeout=TIMEOUT) == 1  # retries of the second attempt
        r = db.wait_status(rid, "S")
        assert r["hostname"] == w.name
        assert "retry: Retry in 0.5s" in w.log()
    finally:
        db.close()


def test_logs_batched_in_order(worker_factory, pg_url, app):
    """500 lines land in order, in a few statements (one transaction per batch of <= 200),
    never one round trip per line."""
    w = start_worker(worker_factory, pg_url)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.index_events", {"n": 500})
        res.get(timeout=TIMEOUT)
        db.wait_status(rid, "S")
        logs = db.logs(rid)
        assert [x["message"] for x in logs[1:]] == ["event %d indexed" % i for i in range(500)]
        assert len(logs) == 501
        ts = [x["timestamp"] for x in logs]
        assert ts == sorted(ts)
        xacts = {x["xmin"] for x in logs}
        # 501 lines: batches of 200 -> 3 statements (a slow machine may add a 1 s flush).
        assert 3 <= len(xacts) <= 10, xacts
    finally:
        db.close()


def test_running_run_heartbeats_logs_and_stop(worker_factory, pg_url, app):
    """While a run is R its heartbeat advances and its log lines arrive within ~1 s (time
    flush, before the task ends). Stopping: C, then revoke(terminate=True) -> X. A run
    terminated while R (not being cancelled) ends F."""
    w = start_worker(worker_factory, pg_url, concurrency=2)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.sleep", {"seconds": 60})
        r = db.wait_status(rid, "R")
        assert r["hostname"] == w.name and r["started_at"] is not None
        hb0 = r["heartbeat_at"]
        wait_for(lambda: db.get(rid)["heartbeat_at"] > hb0, 10, "heartbeat to advance")
        # Logs come before the end of the task (flushed 1 s after the first line).
        wait_for(lambda: len(db.logs(rid)) >= 2, 10, "run logs while the task runs")
        assert db.get(rid)["status"] == "R"

        # jobs stop: the store sets C, then the revoke with terminate.
        db.q("UPDATE celeryc.runs SET status = 'C' WHERE id = %s", rid)
        app.control.revoke(res.id, terminate=True)
        r = db.wait_status(rid, "X")
        assert r["finished_at"] is not None
        wait_for(lambda: res.state == "REVOKED", TIMEOUT, "REVOKED result")

        # End to end with the store slice's CLI: `celeryc jobs stop` (C, then the revoke).
        rid3, res3 = send_run(app, w, db, "jobs.sleep", {"seconds": 60})
        db.wait_status(rid3, "R")
        out = celeryc("jobs", "stop", rid3, "--job-store", pg_url)
        assert out.returncode == 0, out.stdout
        r = db.wait_status(rid3, "X")
        assert r["finished_at"] is not None

        # revoke(terminate=True) of a run nobody asked to stop: F.
        rid2, res2 = send_run(app, w, db, "jobs.sleep", {"seconds": 60})
        db.wait_status(rid2, "R")
        app.control.revoke(res2.id, terminate=True)
        r = db.wait_status(rid2, "F")
        assert r["message"] == "TaskRevokedError: terminated"
    finally:
        db.close()


def test_cancelled_before_start_is_not_run(worker_factory, pg_url, app):
    w = start_worker(worker_factory, pg_url)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.index_events", {"n": 3}, status="C")
        wait_for(lambda: res.state == "REVOKED", TIMEOUT, "REVOKED result")
        r = db.wait_status(rid, "X")
        assert r["started_at"] is None
        assert db.logs(rid) == []  # the task never ran: it would have logged
        assert "indexing events" not in w.log()
        # Expired before it could start: F, never run.
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)
        rid3, res3 = send_run(app, w, db, "jobs.index_events", {"n": 3}, expires=past)
        r = db.wait_status(rid3, "F")
        assert r["message"] == "TaskRevokedError: expired"
        assert db.logs(rid3) == []

        # Revoked (plain revoke) before its message arrives: X, never run.
        rid4, tid4 = db.run(db.job("jobs.index_events"), {"n": 3})
        app.control.revoke(tid4)
        time.sleep(scaled(1))  # the broadcast reaches the worker's pidbox first
        res4 = app.send_task("jobs.index_events", kwargs={"n": 3}, task_id=tid4,
                             queue=w.queue, headers={"celeryc_run": rid4})
        wait_for(lambda: res4.state == "REVOKED", TIMEOUT, "REVOKED result")
        r = db.wait_status(rid4, "X")
        assert r["started_at"] is None and db.logs(rid4) == []

        # The worker goes on with the next run.
        rid2, res2 = send_run(app, w, db, "jobs.index_events", {"n": 1})
        res2.get(timeout=TIMEOUT)
        db.wait_status(rid2, "S")
    finally:
        db.close()


def test_child_killed_worker_lost(worker_factory, pg_url, app):
    """The pool child is SIGKILLed mid-run: the master marks the run F WorkerLostError."""
    w = start_worker(worker_factory, pg_url, concurrency=1)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.sleep", {"seconds": 60})
        db.wait_status(rid, "R")
        kids = child_pids(w.pid)
        assert len(kids) == 1, kids
        os.kill(kids[0], signal.SIGKILL)
        r = db.wait_status(rid, "F")
        assert r["message"].startswith(
            "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)"), r["message"]
        assert r["finished_at"] is not None

        # Killed at the hard time limit: F TimeLimitExceeded (the master records it).
        rid, res = send_run(app, w, db, "jobs.sleep", {"seconds": 60}, time_limit=1)
        r = db.wait_status(rid, "F")
        assert r["message"] == "TimeLimitExceeded: 1", r["message"]
    finally:
        db.close()


def test_counters_written_while_running(worker_factory, pg_url, app):
    """cc_task_run_progress reaches the run while it runs (at most every 2 s, the first 2 s
    after the start), so `celeryc jobs show` follows a long run; the outcome has the last."""
    w = start_worker(worker_factory, pg_url, concurrency=1)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.index_events",
                            {"n": 24, "errors": 6, "delay": 0.25})  # 6 s
        db.wait_status(rid, "R")
        seen = wait_for(lambda: (lambda r: r if r["status"] == "R" and 0 < r["processed"]
                                 else None)(db.get(rid)), scaled(5), "counters while R")
        assert seen["processed"] < 18 and seen["errored"] == 0  # errors come last
        assert res.get(timeout=TIMEOUT)["indexed"] == 18
        r = db.wait_status(rid, "S")
        assert (r["processed"], r["errored"]) == (18, 6)
    finally:
        db.close()


def test_store_connection_killed_mid_run(worker_factory, pg_url, app):
    """The server drops every worker connection mid-run: the next write reconnects once and
    nothing is lost (logs, counters, outcome, heartbeats)."""
    w = start_worker(worker_factory, pg_url, concurrency=1)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.index_events", {"n": 30, "delay": 0.1})
        db.wait_status(rid, "R")
        wait_for(lambda: len(db.logs(rid)) >= 2, 10, "the first flush")
        killed = db.q("SELECT pg_terminate_backend(pid) AS k FROM pg_stat_activity "
                      "WHERE application_name = 'celeryc' AND datname = current_database()")
        assert len(killed) >= 2  # the child's and the master's
        assert res.get(timeout=TIMEOUT)["indexed"] == 30
        r = db.wait_status(rid, "S")
        assert (r["processed"], r["errored"]) == (30, 0)
        assert [x["message"] for x in db.logs(rid)[1:]] == \
            ["event %d indexed" % i for i in range(30)]
        assert "dropping its log lines" not in w.log()
    finally:
        db.close()


def test_store_unreachable_never_fails_the_task(worker_factory, app):
    """No Postgres at the URL: the worker starts, the task runs and succeeds; its log lines
    are dropped with one warning and counted."""
    url = "postgresql://celeryc:celeryc@127.0.0.1:%d/nowhere" % free_port()
    w = worker_factory(concurrency=1, extra=["--job-store", url])
    rid = str(uuid.uuid4())
    res = app.send_task("jobs.index_events", kwargs={"n": 450}, queue=w.queue,
                        headers={"celeryc_run": rid})
    assert res.get(timeout=TIMEOUT)["indexed"] == 450
    w.wait_log(r"451 log line\(s\) dropped")
    assert w.log().count("dropping its log lines") == 1  # three batches, one warning


def test_worker_killed_heartbeat_stops(worker_factory, pg_url, app):
    """A worker killed with -9 mid-run leaves the run R with a heartbeat that no longer
    advances (the beat's reaper fails it after its timeout)."""
    w = start_worker(worker_factory, pg_url, concurrency=1)
    db = JobDB(pg_url)
    try:
        rid, res = send_run(app, w, db, "jobs.sleep", {"seconds": 60})
        hb0 = db.wait_status(rid, "R")["heartbeat_at"]
        wait_for(lambda: db.get(rid)["heartbeat_at"] > hb0, 10, "heartbeat to advance")
        w.kill()  # SIGKILL to the whole process group: master and child
        hb1 = db.get(rid)["heartbeat_at"]
        time.sleep(scaled(2.5))  # five heartbeat intervals
        r = db.get(rid)
        assert r["status"] == "R"
        assert r["heartbeat_at"] == hb1
        # The beat leader's reaper (cc_jobstore_reap, here through the store CLI's debug hook).
        out = celeryc("db", "debug", "reap", "2", "--job-store", pg_url)
        assert out.returncode == 0, out.stdout
        r = db.get(rid)
        assert r["status"] == "F"
        assert w.name in r["message"] and "no heartbeat" in r["message"], r["message"]
    finally:
        db.close()


def test_without_job_store_header_ignored(worker_factory, app):
    """No --job-store: job run messages run as plain tasks; one warning per worker start."""
    w = worker_factory()
    rs = [app.send_task("jobs.index_events", kwargs={"n": 1}, queue=w.queue,
                        headers={"celeryc_run": str(uuid.uuid4())}) for _ in range(3)]
    for r in rs:
        assert r.get(timeout=TIMEOUT)["run_id"] is None
    assert w.log().count("is a job run (header celeryc_run) but this worker has no job store") \
        == 1
