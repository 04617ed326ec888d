"""Job runs end to end (issue #6, "Runs end to end"): one `celeryc beat --job-store URL
--db-upgrade` dispatches the runs of jobs created with `celeryc jobs create`, one
`celeryc worker --job-store URL` executes them (tasks/jobs.c), and every outcome is read back
through `celeryc jobs ... --json` and psycopg2 on celeryc.runs / run_logs.

The beat and the worker are shared by the module (one database); every test uses its own
jobs. Beat: lease 2 s, reaper timeout 2 s (sweep every 5 s); worker: heartbeat every 0.5 s.
test_restart_neither_skips_nor_doubles restarts the shared beat, so it runs last.
celeryc only."""
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from beatutil import dump_logs_on_failure, module_database, pg_query, store_cmd, store_json
from conftest import (MULT, TIMEOUT, Worker, c_only, celeryc_bin, scaled,
                      unique_queue, wait_for)

pytestmark = c_only

psycopg2 = pytest.importorskip("psycopg2")

LEASE_TTL = 2
REAP_TIMEOUT = 2  # --run-heartbeat-timeout (s)
SWEEP_S = 5  # BEAT_SWEEP_S in src/beat/beat.c
HEARTBEAT = 0.5  # --job-run-heartbeat-interval (s)


class E2E:
    """The module's database, beat and worker."""

    def __init__(self, url, tmp, queue):
        self.url = url
        self.tmp = tmp
        self.queue = queue
        self.beats = []
        self.beat = None
        self.worker = None

    def start_beat(self):
        argv = [celeryc_bin(), "beat", "-b", os.environ["CELERYC_TEST_AMQP_URL"], "-l", "debug",
                "--job-store", self.url, "--db-upgrade", "--lease-ttl", str(LEASE_TTL),
                "--run-heartbeat-timeout", str(REAP_TIMEOUT)]
        n = len(self.beats) + 1
        self.beat = Worker(argv, dict(os.environ), str(self.tmp / ("beat-%d.log" % n)), None,
                           "beat%d" % n, cwd=str(self.tmp))
        self.beats.append(self.beat)
        self.beat.wait_log(r"leader now", 20)
        return self.beat

    def start_worker(self):
        name = "e2e-%s@localhost" % self.queue
        argv = [celeryc_bin(), "worker", "-b", os.environ["CELERYC_TEST_AMQP_URL"],
                "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"], "-Q", self.queue,
                "-n", name, "-c", "4", "-l", "info", "--job-store", self.url,
                "--job-run-heartbeat-interval", str(HEARTBEAT)]
        self.worker = Worker(argv, dict(os.environ), str(self.tmp / "worker.log"), self.queue,
                             name)
        self.worker.wait_ready()
        return self.worker

    def processes(self):
        return self.beats + ([self.worker] if self.worker else [])


@pytest.fixture(scope="module")
def e2e(services, tmp_path_factory):
    with module_database("it_e2e_") as url:
        env = E2E(url, tmp_path_factory.mktemp("e2e"), unique_queue("e2e"))
        try:
            env.start_beat()  # --db-upgrade: the schema exists before the worker checks it
            env.start_worker()
            yield env
        finally:
            for p in env.processes():
                p.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, e2e):
    yield
    dump_logs_on_failure(request, e2e.processes())


# ---- helpers ---------------------------------------------------------------------------------

def cc(e2e, *args, timeout=30):
    return store_cmd(e2e.url, *args, timeout=timeout)


def js(e2e, *args):
    return store_json(e2e.url, *args)


def ts(s):
    """A timestamp of the --json output (row_to_json: ISO 8601 with offset)."""
    return datetime.fromisoformat(s) if s else None


def mkjob(e2e, task, queue=None, kwargs=None, interval=None, concurrency="allow", retry=None,
          active=True):
    args = ["jobs", "create", "--title", "e2e " + task, "--task", task, "--queue",
            queue or e2e.queue, "--concurrency", concurrency]
    if task == "jobs.index_events":
        args += ["--since-kwarg", "since"]  # the incremental one; the others take no `since`
    if kwargs is not None:
        args += ["--kwargs", json.dumps(kwargs)]
    if interval is not None:
        args += ["--interval", str(interval)]
    if retry is not None:
        args += ["--retry", json.dumps(retry)]
    if not active:
        args.append("--inactive")
    return js(e2e, *args)["id"]


def deactivate(e2e, job):
    js(e2e, "jobs", "update", job, "--inactive")
    e2e.beat.wait_log(r"job %s removed from the schedule" % job, 10)


def runs(e2e, job):
    """The job's runs, oldest first (`jobs runs` is newest first)."""
    return list(reversed(js(e2e, "jobs", "runs", job, "-n", "1000")))


def run(e2e, rid):
    return js(e2e, "jobs", "show", rid)


def wait_run(e2e, rid, statuses, timeout=TIMEOUT):
    last = {}

    def check():
        last["r"] = run(e2e, rid)
        st = last["r"]["status"]
        if st not in statuses and st not in "QRC":
            raise AssertionError("run %s is %s (%s), not in %s"
                                 % (rid, st, last["r"]["message"], statuses))
        return last["r"] if st in statuses else None
    try:
        return wait_for(check, timeout, "run %s in %s" % (rid, statuses), interval=0.1)
    except AssertionError as e:
        raise AssertionError("%s (now %s)" % (e, last.get("r", {}).get("status"))) from None


def log_messages(e2e, rid):
    return [ln["message"] for ln in js(e2e, "jobs", "logs", rid)]


def manual_run(e2e, job):
    return js(e2e, "jobs", "run", job, "--user", "e2e")["run"]


# ---- 1. manual run latency -------------------------------------------------------------------

def test_manual_run_executed_within_a_second(e2e):
    job = mkjob(e2e, "jobs.index_events", kwargs={"n": 3})
    lat = []
    prev = None
    for _ in range(3):
        r0 = manual_run(e2e, job)
        r = wait_run(e2e, r0["id"], "S")
        assert r["started_by"] == "e2e" and r["hostname"] == e2e.worker.name
        assert (r["processed"], r["errored"]) == (3, 0)
        started = (ts(r["started_at"]) - ts(r["created"])).total_seconds()
        sent = (ts(r["sent_at"]) - ts(r["created"])).total_seconds()
        lat.append((sent, started))
        # Manual runs get `since` too: the start of the previous successful run.
        logs = log_messages(e2e, r["id"])
        assert logs[1:] == ["event %d indexed" % i for i in range(3)]
        if prev is None:
            assert logs[0] == "indexing events since the beginning"
        else:
            assert ts(logs[0][len("indexing events since "):]) == ts(prev["started_at"])
        prev = r
    print("manual run latency (created -> sent, created -> started): %s"
          % ", ".join("%.0f/%.0f ms" % (a * 1000, b * 1000) for a, b in lat))
    for sent, started in lat:
        assert 0 <= sent < 1.0 * MULT and 0 <= started < 1.0 * MULT  # sent_at: after the confirm


# ---- 2. scheduled runs and `since` -----------------------------------------------------------

def test_scheduled_runs_one_per_slot_with_since(e2e):
    job = mkjob(e2e, "jobs.index_events", kwargs={"n": 1}, interval=1)
    wait_for(lambda: sum(r["status"] == "S" for r in runs(e2e, job)) >= 4, 20,
             "four successful scheduled runs", interval=0.2)
    deactivate(e2e, job)
    rs = runs(e2e, job)
    for r in rs:
        wait_run(e2e, r["id"], "S")
    rs = runs(e2e, job)
    assert len(rs) >= 4
    slots = [ts(r["scheduled_for"]) for r in rs]
    assert slots == sorted(slots) and len(set(slots)) == len(slots), slots
    assert all(b - a == timedelta(seconds=1) for a, b in zip(slots, slots[1:])), slots
    assert all(r["started_by"] is None and r["attempt"] == 1 for r in rs)
    assert [r["status"] for r in rs] == ["S"] * len(rs)
    # The message's `since` kwarg (stored with the run, and what the task logged): the start
    # of the previous successful run, or null for the first.
    assert rs[0]["kwargs"]["since"] is None
    assert log_messages(e2e, rs[0]["id"])[0] == "indexing events since the beginning"
    n_prev = 0
    for prev, cur in zip(rs, rs[1:]):
        # The runs that had succeeded when this one was created (normally just all before
        # it: a run takes milliseconds, slots are a second apart).
        done = [ts(r["started_at"]) for r in rs
                if ts(r["finished_at"]) < ts(cur["created"])]
        since = cur["kwargs"]["since"]
        assert since is not None and ts(since) == max(done), (since, cur)
        n_prev += ts(since) == ts(prev["started_at"])
        first = log_messages(e2e, cur["id"])[0]
        assert first.startswith("indexing events since ")
        assert ts(first[len("indexing events since "):]) == ts(since)
    assert n_prev >= len(rs) - 2  # the previous run's start, barring a slow worker
    # One entry slot per run.
    n = pg_query(e2e.url, "SELECT count(*), count(DISTINCT slot) FROM celeryc.entry_slots "
                 "WHERE name = %s", ("job:" + job,))[0]
    assert n[0] == n[1] == len(rs)


# ---- 3. partial success and logs -------------------------------------------------------------

def test_partial_success_logs_and_follow(e2e):
    job = mkjob(e2e, "jobs.index_events",
                kwargs={"n": 20, "errors": 5, "partial": True, "delay": 0.1})
    r0 = manual_run(e2e, job)
    wait_run(e2e, r0["id"], "R")
    p = subprocess.Popen([celeryc_bin(), "jobs", "logs", r0["id"], "--follow", "--timeout",
                          str(scaled(30)), "--job-store", e2e.url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert p.poll() is None, "--follow ended while the run was R"
        out, err = p.communicate(timeout=scaled(30))
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    r = run(e2e, r0["id"])
    assert r["status"] == "P", r  # --follow ended because the run finished
    assert (r["processed"], r["errored"]) == (15, 5)
    assert r["message"] == "15 of 20 events indexed, 5 failed"
    logs = js(e2e, "jobs", "logs", r0["id"])
    assert [(ln["level"], ln["message"]) for ln in logs] == \
        [("INFO", "indexing events since the beginning")] + \
        [("INFO", "event %d indexed" % i) for i in range(15)] + \
        [("WARNING", "event %d failed" % i) for i in range(15, 20)]
    ids = [ln["id"] for ln in logs]
    assert ids == sorted(ids)
    assert [ts(ln["timestamp"]) for ln in logs] == sorted(ts(ln["timestamp"]) for ln in logs)
    assert {ln["task_id"] for ln in logs} == {r["task_id"]}
    # --follow printed every line, in order.
    lines = out.splitlines()
    assert len(lines) == 21, out
    assert lines[0].endswith("indexing events since the beginning")
    assert lines[-1].endswith("event 19 failed") and "WARNING" in lines[-1]


# ---- 4. stop ---------------------------------------------------------------------------------

def test_stop_running_run(e2e):
    job = mkjob(e2e, "jobs.sleep", kwargs={"seconds": 60})
    r0 = manual_run(e2e, job)
    wait_run(e2e, r0["id"], "R")
    # A line after a quiet second is written at once (the first, then one a second here);
    # lines still buffered in the pool child when it is terminated would be lost.
    first = wait_for(lambda: log_messages(e2e, r0["id"]), 10, "the first log line")
    assert first[0] == "sleeping, 60 s left"
    t0 = time.monotonic()
    out = js(e2e, "jobs", "stop", r0["id"], "-b", os.environ["CELERYC_TEST_AMQP_URL"])
    assert (out["status"], out["terminate"], out["revoked"]) == ("C", True, True)
    t1 = time.monotonic()  # `jobs stop` waits up to 1 s for the workers' replies
    r = wait_run(e2e, r0["id"], "X", timeout=10)
    took = time.monotonic() - t0
    print("stop: X %.2f s after `jobs stop` started (%.2f s after it returned)"
          % (took, time.monotonic() - t1))
    assert took < scaled(5)
    assert r["finished_at"] is not None and r["started_at"] is not None
    logs = log_messages(e2e, r0["id"])
    assert logs == ["sleeping, %d s left" % (60 - i) for i in range(len(logs))]


def test_stop_queued_run_before_a_worker_exists(e2e, worker_factory, amqp_conn):
    q = unique_queue("e2e-late")
    ch = amqp_conn.channel()
    ch.queue_declare(q, durable=True, auto_delete=False)  # the message is routable
    ch.close()
    try:
        job = mkjob(e2e, "jobs.index_events", queue=q, kwargs={"n": 2})
        r0 = manual_run(e2e, job)
        wait_for(lambda: run(e2e, r0["id"])["sent_at"], 10, "the beat to send the run")
        out = js(e2e, "jobs", "stop", r0["id"], "-b", os.environ["CELERYC_TEST_AMQP_URL"])
        assert (out["status"], out["terminate"]) == ("X", False)
        # The worker that starts now missed the revoke broadcast: the store says X.
        w = worker_factory(queue=q, concurrency=1,
                           extra=["--job-store", e2e.url, "--job-run-heartbeat-interval",
                                  str(HEARTBEAT)])
        # A later run of the same job goes through: the first message was consumed before it.
        r1 = manual_run(e2e, job)
        wait_run(e2e, r1["id"], "S")
        r = run(e2e, r0["id"])
        assert r["status"] == "X" and r["started_at"] is None and r["hostname"] is None
        assert log_messages(e2e, r0["id"]) == []
        assert w.proc.poll() is None
    finally:
        ch = amqp_conn.channel()
        ch.queue_delete(q)
        ch.close()


# ---- 5. concurrency policies -----------------------------------------------------------------

def test_concurrency_forbid_skips_slots(e2e):
    job = mkjob(e2e, "jobs.sleep", kwargs={"seconds": 3}, interval=1, concurrency="forbid")
    first = wait_for(lambda: runs(e2e, job), 10, "the first run", interval=0.1)[0]
    wait_run(e2e, first["id"], "R")
    e2e.beat.wait_log(r"Scheduler: skipping job:%s for this slot: forbid: run %s is R"
                      % (job, first["id"]), 10)
    wait_run(e2e, first["id"], "S", timeout=15)
    # While it ran, no run was created for the slots it covered.
    wait_for(lambda: len(runs(e2e, job)) >= 2, 10, "the next slot's run", interval=0.1)
    deactivate(e2e, job)
    rs = runs(e2e, job)
    skips = e2e.beat.log().count("skipping job:%s for this slot: forbid" % job)
    first, second = rs[0], rs[1]
    gap = ts(second["scheduled_for"]) - ts(first["scheduled_for"])
    print("forbid: %d slot(s) skipped, next run %s after the first" % (skips, gap))
    assert skips >= 2
    assert gap >= timedelta(seconds=3)
    assert ts(second["created"]) >= ts(first["finished_at"]) - timedelta(seconds=1)
    for r in rs:
        wait_run(e2e, r["id"], "S", timeout=15)
    rs = runs(e2e, job)
    for a, b in zip(rs, rs[1:]):  # never two runs at once
        assert ts(b["started_at"]) >= ts(a["finished_at"]), (a, b)


def test_concurrency_replace_cancels_the_old_run(e2e):
    job = mkjob(e2e, "jobs.sleep", kwargs={"seconds": 60}, interval=2, concurrency="replace")
    first = wait_for(lambda: runs(e2e, job), 10, "the first run", interval=0.1)[0]
    wait_run(e2e, first["id"], "R")
    wait_for(lambda: len(runs(e2e, job)) >= 2, 10, "the second slot's run", interval=0.1)
    deactivate(e2e, job)
    e2e.beat.wait_log(r"job:%s: replace policy: cancelling run %s" % (job, first["id"]), 10)
    r = wait_run(e2e, first["id"], "X", timeout=10)
    assert r["started_at"] is not None and r["finished_at"] is not None
    rs = runs(e2e, job)
    print("replace: old run X %.2f s after the new run was created"
          % (ts(r["finished_at"]) - ts(rs[1]["created"])).total_seconds())
    last = wait_run(e2e, rs[-1]["id"], "R")
    assert last["hostname"] == e2e.worker.name
    for x in rs[:-1]:
        wait_run(e2e, x["id"], "X", timeout=10)
    js(e2e, "jobs", "stop", last["id"], "-b", os.environ["CELERYC_TEST_AMQP_URL"])
    wait_run(e2e, last["id"], "X", timeout=10)


# ---- 6. retry policy -------------------------------------------------------------------------

def test_retry_policy_three_attempts(e2e):
    policy = {"max_attempts": 3, "backoff": 1, "factor": 2}
    job = mkjob(e2e, "jobs.fail", kwargs={"message": "no source"}, retry=policy)
    r0 = manual_run(e2e, job)
    t0 = time.monotonic()
    wait_for(lambda: [r for r in runs(e2e, job) if r["attempt"] == 3 and r["status"] == "F"],
             30, "the third attempt to fail", interval=0.2)
    took = time.monotonic() - t0
    time.sleep(scaled(1))  # the sweep that follows a failure queues no fourth attempt
    rs = runs(e2e, job)
    assert [(r["attempt"], r["status"]) for r in rs] == [(1, "F"), (2, "F"), (3, "F")]
    assert rs[0]["id"] == r0["id"] and rs[0]["retry_of"] is None
    assert rs[1]["retry_of"] == rs[0]["id"] and rs[2]["retry_of"] == rs[1]["id"]
    assert len({r["task_id"] for r in rs}) == 3
    assert all(r["message"] == "ValueError: no source" for r in rs)
    assert all(r["started_by"] == "e2e" for r in rs)
    gaps = []
    for k, (a, b) in enumerate(zip(rs, rs[1:])):
        backoff = policy["backoff"] * policy["factor"] ** k
        gap = (ts(b["started_at"]) - ts(a["finished_at"])).total_seconds()
        gaps.append(gap)
        # Not held back to the 5 s sweep: the beat sweeps again at the retry's not_before.
        assert backoff <= gap < backoff + scaled(2.5), (k, gap)
        assert (ts(b["not_before"]) - ts(a["finished_at"])).total_seconds() == \
            pytest.approx(backoff, abs=0.01)
    print("retry: attempt gaps %s s (backoff 1, 2), three attempts in %.1f s"
          % (["%.2f" % g for g in gaps], took))
    assert log_messages(e2e, rs[2]["id"]) == ["about to fail"]


# ---- 7. reaper -------------------------------------------------------------------------------

def test_worker_killed_run_reaped(e2e, worker_factory):
    w = worker_factory(queue=unique_queue("e2e-kill"), concurrency=1,
                       extra=["--job-store", e2e.url, "--job-run-heartbeat-interval",
                              str(HEARTBEAT)])
    job = mkjob(e2e, "jobs.sleep", queue=w.queue, kwargs={"seconds": 60})
    r0 = manual_run(e2e, job)
    r = wait_run(e2e, r0["id"], "R")
    assert r["hostname"] == w.name
    w.kill()  # SIGKILL to master and child
    t0 = time.monotonic()
    r = wait_run(e2e, r0["id"], "F", timeout=REAP_TIMEOUT + SWEEP_S + 10)
    took = time.monotonic() - t0
    print("reaper: run F %.2f s after the kill (timeout %d s + sweep %d s)"
          % (took, REAP_TIMEOUT, SWEEP_S))
    assert r["message"].startswith("worker %s lost: no heartbeat for " % w.name), r["message"]
    assert r["finished_at"] is not None
    assert took <= scaled(REAP_TIMEOUT + SWEEP_S) + 2
    e2e.beat.wait_log(r"reaper: 1 run\(s\) without a worker heartbeat", 5)


# ---- 8. run arguments, since, rerun (issue #14) ----------------------------------------------

def result_of(rds, task_id):
    """The task's result as the worker stored it (Redis backend): Celery's meta object."""
    raw = wait_for(lambda: rds.get("celery-task-meta-" + task_id), 10,
                   "the result of " + task_id)
    return json.loads(raw)


def test_run_kwargs_override_computes_with_override(e2e, rds, amqp_conn):
    """`jobs run --kwargs/--args/--queue` used to run with the job's own arguments: the
    worker now computes with the override (read back from the result backend), on the
    override queue, and a retry of that run keeps it."""
    idle = unique_queue("e2e-idle")
    ch = amqp_conn.channel()
    ch.queue_declare(idle, durable=True, auto_delete=False)  # the job's queue: no consumer
    ch.close()
    try:
        job = mkjob(e2e, "demo.add", queue=idle, kwargs={"x": 1, "y": 2})
        r0 = js(e2e, "jobs", "run", job, "--user", "e2e", "--kwargs", '{"x": 40, "y": 2}',
                "--queue", e2e.queue)["run"]
        r = wait_run(e2e, r0["id"], "S")
        assert (r["kwargs"], r["queue"], r["hostname"]) == ({"x": 40, "y": 2}, e2e.queue,
                                                            e2e.worker.name)
        res = result_of(rds, r["task_id"])
        assert (res["status"], res["result"]) == ("SUCCESS", 42), res
        # --args replaces the job's (empty) args; --kwargs '{}' drops the job's kwargs.
        r1 = js(e2e, "jobs", "run", job, "--args", "[20, 22]", "--kwargs", "{}", "--queue",
                e2e.queue)["run"]
        wait_run(e2e, r1["id"], "S")
        assert result_of(rds, r1["task_id"])["result"] == 42
    finally:
        ch = amqp_conn.channel()
        ch.queue_delete(idle)
        ch.close()
    # A retry of a run started with an override keeps the override.
    jf = mkjob(e2e, "jobs.fail", kwargs={"message": "the job's own"},
               retry={"max_attempts": 2, "backoff": 0})
    rf = js(e2e, "jobs", "run", jf, "--kwargs", '{"message": "the override"}')["run"]
    wait_for(lambda: [x for x in runs(e2e, jf) if x["attempt"] == 2 and x["status"] == "F"],
             30, "the second attempt to fail", interval=0.2)
    rs = runs(e2e, jf)
    assert [(x["attempt"], x["status"], x["message"], x["kwargs"]) for x in rs] == \
        [(1, "F", "ValueError: the override", {"message": "the override"}),
         (2, "F", "ValueError: the override", {"message": "the override"})]
    assert rs[0]["id"] == rf["id"] and rs[1]["retry_of"] == rf["id"]


def test_plain_job_runs_demo_add_without_since(e2e, rds):
    """A job created without --since-kwarg gets no `since` kwarg: demo.add(x, y) used to fail
    with TypeError (unexpected keyword argument 'since'), scheduled and manual runs alike."""
    job = mkjob(e2e, "demo.add", kwargs={"x": 2, "y": 3}, interval=1)
    assert js(e2e, "jobs", "show", job)["since_kwarg"] is None
    first = wait_for(lambda: runs(e2e, job), 10, "the first scheduled run", interval=0.1)[0]
    deactivate(e2e, job)
    r = wait_run(e2e, first["id"], "S")
    assert r["kwargs"] == {"x": 2, "y": 3} and r["started_by"] is None
    assert result_of(rds, r["task_id"])["result"] == 5
    for x in runs(e2e, job):
        wait_run(e2e, x["id"], "S")
    m = wait_run(e2e, manual_run(e2e, job)["id"], "S")
    assert m["kwargs"] == {"x": 2, "y": 3}
    assert result_of(rds, m["task_id"])["result"] == 5


def test_rerun_reproduces_arguments(e2e, rds):
    """`jobs rerun RUN_ID` sends a new run with the arguments of a finished run (an override
    included); a run that has not finished is refused."""
    job = mkjob(e2e, "demo.add", kwargs={"x": 1, "y": 1}, concurrency="forbid")
    r0 = js(e2e, "jobs", "run", job, "--kwargs", '{"x": 30, "y": 12}')["run"]
    wait_run(e2e, r0["id"], "S")
    assert result_of(rds, r0["task_id"])["result"] == 42
    n = js(e2e, "jobs", "rerun", r0["id"], "--user", "e2e")["run"]
    assert (n["rerun_of"], n["started_by"]) == (r0["id"], "e2e")
    r = wait_run(e2e, n["id"], "S")
    assert r["kwargs"] == {"x": 30, "y": 12} and r["task_id"] != r0["task_id"]
    assert result_of(rds, r["task_id"])["result"] == 42
    # A running run cannot be rerun (exit 1, nothing queued).
    js_ = mkjob(e2e, "jobs.sleep", kwargs={"seconds": 30})
    rs = manual_run(e2e, js_)
    wait_run(e2e, rs["id"], "R")
    p = cc(e2e, "jobs", "rerun", rs["id"])
    assert p.returncode == 1, p.stderr
    assert "run %s is R (running): only a finished run can be rerun" % rs["id"] in p.stderr
    assert len(runs(e2e, js_)) == 1
    js(e2e, "jobs", "stop", rs["id"], "-b", os.environ["CELERYC_TEST_AMQP_URL"])
    wait_run(e2e, rs["id"], "X", timeout=10)


# ---- 9. beat restart (runs last: it replaces the module's beat) ------------------------------

def test_restart_neither_skips_nor_doubles(e2e):
    """The beat is stopped (SIGTERM) just after a slot and started again just after the next
    one passed: the new beat sends that missed slot (missed=run_once, one slot missed), then
    goes on; no slot is skipped or sent twice."""
    every = 3
    job = mkjob(e2e, "jobs.index_events", kwargs={"n": 1}, interval=every)
    wait_for(lambda: len(runs(e2e, job)) >= 2, 15, "two runs before the restart", interval=0.2)
    old = e2e.beat
    e1 = runs(e2e, job)[-1]["epoch"]
    assert old.stop() == 0
    assert "lease released" in old.log()
    stopped = datetime.now(timezone.utc)
    before = runs(e2e, job)
    missed = max(ts(r["scheduled_for"]) for r in before) + timedelta(seconds=every)
    assert missed > stopped, "the old beat stopped too late for this test"
    while datetime.now(timezone.utc) < missed + timedelta(seconds=0.3):
        time.sleep(0.05)
    t0 = time.monotonic()
    e2e.start_beat()
    print("restart: down %.2f s; the new beat is leader %.2f s after its start"
          % ((datetime.now(timezone.utc) - stopped).total_seconds(), time.monotonic() - t0))
    wait_for(lambda: len(runs(e2e, job)) >= len(before) + 2, 15, "two runs after the restart",
             interval=0.2)
    deactivate(e2e, job)
    rs = runs(e2e, job)
    for r in rs:
        wait_run(e2e, r["id"], "S")
    rs = runs(e2e, job)
    slots = [ts(r["scheduled_for"]) for r in rs]
    assert len(set(slots)) == len(slots), "a slot ran twice: %s" % slots
    assert all(b - a == timedelta(seconds=every) for a, b in zip(slots, slots[1:])), slots
    caught_up = [r for r in rs if ts(r["scheduled_for"]) == missed]
    assert len(caught_up) == 1 and caught_up[0]["epoch"] > e1
    assert ts(caught_up[0]["created"]) > stopped
    assert "missed run(s) of job:%s: running once" % job in e2e.beat.log()
    epochs = [r["epoch"] for r in rs]
    assert epochs == sorted(epochs) and epochs[0] < epochs[-1]
    assert all(r["hostname"] == e2e.worker.name for r in rs)
