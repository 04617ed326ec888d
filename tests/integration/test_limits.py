"""Time limits, crashed children and the failure ack policy (prefork), compared with what the
Python worker does for the same client calls (CELERYC_IT_IMPL=python runs them against it).

- soft limit: a task that looks (demo.soft_guard) keeps its result; one that does not
  (demo.sleep, demo.spin) is stored as billiard's SoftTimeLimitExceeded();
- hard limit: the runaway child is killed, TimeLimitExceeded(<limit as sent>) is stored, the
  child is replaced and the worker keeps serving; limits from the message, or the worker's;
- a child that segfaults, aborts, exits or is OOM-killed: WorkerLostError, child replaced;
- acks_late + reject_on_worker_lost: requeued, runs again, nothing stored in between;
- acks_late + acks_on_failure_or_timeout=False: failed / timed-out messages dead-lettered;
- max_tasks_per_child / max_memory_per_child recycle children.
"""
import json
import re
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

from conftest import IMPL, TIMEOUT, queue_depth, scaled, unique_queue, wait_for


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def start(worker_factory, concurrency=1, acks_late=False, queue=None, time_limit=None,
          soft_time_limit=None, acks_on_failure_or_timeout=None, reject_on_worker_lost=None,
          max_tasks_per_child=None, max_memory_per_child=None):
    """A worker of the implementation under test with these options (flags for celeryc,
    settings through pyworker_app's PYW_* variables for the Python worker)."""
    extra, env = [], {}
    opts = [("--time-limit", "PYW_TIME_LIMIT", time_limit),
            ("--soft-time-limit", "PYW_SOFT_TIME_LIMIT", soft_time_limit),
            ("--max-tasks-per-child", "PYW_MAX_TASKS_PER_CHILD", max_tasks_per_child),
            ("--max-memory-per-child", "PYW_MAX_MEMORY_PER_CHILD", max_memory_per_child)]
    for flag, var, v in opts:
        if v is not None:
            extra += [flag, str(v)]
            env[var] = str(v)
    for flag, var, v in [("acks-on-failure-or-timeout", "PYW_ACKS_ON_FAILURE_OR_TIMEOUT",
                          acks_on_failure_or_timeout),
                         ("reject-on-worker-lost", "PYW_REJECT_ON_WORKER_LOST",
                          reject_on_worker_lost)]:
        if v is not None:
            extra.append("--%s%s" % ("" if v else "no-", flag))
            env[var] = "1" if v else "0"
    return worker_factory(queue=queue, concurrency=concurrency, acks_late=acks_late,
                          extra=extra, env=env)


SOFT_EXC = {"exc_type": "SoftTimeLimitExceeded", "exc_message": [],
            "exc_module": "billiard.exceptions"}


# ---- Soft limit --------------------------------------------------------------------------

def test_soft_limit_task_that_looks_keeps_its_result(app, worker_factory, rds):
    w = start(worker_factory)
    t0 = time.monotonic()
    r = app.send_task("demo.soft_guard", args=[30], queue=w.queue, soft_time_limit=1)
    assert r.get(timeout=TIMEOUT) == "soft limit"
    assert time.monotonic() - t0 < scaled(15), "the soft limit did not interrupt the sleep"
    assert _meta(rds, r.id)["status"] == "SUCCESS"
    w.wait_log(r"WARNING/MainProcess\] Soft time limit \(1s\) exceeded for "
               r"demo\.soft_guard\[%s\]" % r.id, 5)


@pytest.mark.parametrize("task,args", [("demo.sleep", [30]), ("demo.spin", [2])])
def test_soft_limit_ignored_fails_with_soft_time_limit_exceeded(app, worker_factory, rds, task,
                                                                args):
    # demo.sleep is interrupted like Python's time.sleep(); demo.spin never looks (the C task
    # runs to its end, the Python one is interrupted): both end as SoftTimeLimitExceeded().
    w = start(worker_factory)
    r = app.send_task(task, args=args, queue=w.queue, soft_time_limit=0.5)
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=TIMEOUT)
    meta = _meta(rds, r.id)
    assert meta["status"] == "FAILURE"
    assert meta["result"] == SOFT_EXC
    assert meta["traceback"].rstrip().endswith(
        "billiard.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()")
    w.wait_log(r"Soft time limit \(0\.5s\) exceeded for %s\[%s\]" % (re.escape(task), r.id), 5)
    # The same child carries on.
    assert app.send_task("demo.add", args=[1, 2], queue=w.queue).get(timeout=TIMEOUT) == 3


# ---- Hard limit --------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [1, 1.5])
def test_hard_limit_kills_runaway_task(app, worker_factory, rds, limit):
    w = start(worker_factory)
    pid0 = app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT)
    t0 = time.monotonic()
    r = app.send_task("demo.spin", args=[120], queue=w.queue, time_limit=limit)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=TIMEOUT)
    assert time.monotonic() - t0 < scaled(20)
    meta = _meta(rds, r.id)
    assert meta["status"] == "FAILURE"
    # Stored as the limit was sent: TimeLimitExceeded(1) / TimeLimitExceeded(1.5).
    assert meta["result"] == {"exc_type": "TimeLimitExceeded", "exc_message": [limit],
                              "exc_module": "billiard.exceptions"}
    assert type(meta["result"]["exc_message"][0]) is type(limit)
    assert meta["traceback"] is None
    w.wait_log(r"ERROR/MainProcess\] Hard time limit \(%ss\) exceeded for demo\.spin\[%s\]"
               % (re.escape(str(limit)), r.id), 5)
    # The worker keeps serving, from a new child.
    assert app.send_task("demo.add", args=[2, 2], queue=w.queue).get(timeout=TIMEOUT) == 4
    pid1 = app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT)
    assert pid1 != pid0
    assert w.proc.poll() is None


def test_worker_time_limits_and_message_precedence(app, worker_factory, rds):
    # --time-limit is a float option in Celery: TimeLimitExceeded(2.0). A message's own
    # limit wins over the worker's.
    w = start(worker_factory, concurrency=2, time_limit=2)
    r1 = app.send_task("demo.spin", args=[120], queue=w.queue)
    r2 = app.send_task("demo.spin", args=[120], queue=w.queue, time_limit=1)
    r3 = app.send_task("demo.soft_guard", args=[30], queue=w.queue, soft_time_limit=0.5)
    for r in (r1, r2):
        with pytest.raises(TimeLimitExceeded):
            r.get(timeout=TIMEOUT)
    assert _meta(rds, r1.id)["result"]["exc_message"] == [2.0]
    assert type(_meta(rds, r1.id)["result"]["exc_message"][0]) is float
    assert _meta(rds, r2.id)["result"]["exc_message"] == [1]
    assert r3.get(timeout=TIMEOUT) == "soft limit"
    w.wait_log(r"Hard time limit \(2\.0s\) exceeded for demo\.spin\[%s\]" % r1.id, 5)
    # Fast tasks are unaffected by the limits.
    assert app.send_task("demo.add", args=[1, 1], queue=w.queue).get(timeout=TIMEOUT) == 2


# ---- Crashed children --------------------------------------------------------------------

@pytest.mark.parametrize("mode,how", [("segv", r"signal 11 \(SIGSEGV\)"),
                                      ("abort", r"signal 6 \(SIGABRT\)"),
                                      ("oom", r"signal 9 \(SIGKILL\)"),
                                      ("exit", r"exitcode 1")])
def test_crashed_child_is_worker_lost_and_replaced(app, worker_factory, rds, mode, how):
    w = start(worker_factory)
    pid0 = app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT)
    r = app.send_task("demo.crash", args=[mode], queue=w.queue)
    with pytest.raises(WorkerLostError) as ei:
        r.get(timeout=TIMEOUT)
    assert re.fullmatch(r"Worker exited prematurely: %s Job: \d+\." % how, str(ei.value)), \
        str(ei.value)
    meta = _meta(rds, r.id)
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "WorkerLostError"
    assert meta["result"]["exc_module"] == "billiard.exceptions"
    # Keeps consuming, with a new child.
    assert [app.send_task("demo.add", args=[i, i], queue=w.queue).get(timeout=TIMEOUT)
            for i in range(3)] == [0, 2, 4]
    assert app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT) != pid0
    assert w.proc.poll() is None


def test_reject_on_worker_lost_requeues_and_runs_again(app, worker_factory, rds):
    w = start(worker_factory, acks_late=True, reject_on_worker_lost=True)
    r = app.send_task("demo.crash_once", args=["segv"], queue=w.queue)
    # First delivery kills the child; the message is requeued (nothing stored), and the
    # redelivery returns.
    assert r.get(timeout=TIMEOUT) == "survived"
    assert _meta(rds, r.id)["status"] == "SUCCESS"


def test_worker_lost_without_reject_is_stored_and_acked(app, worker_factory, rds, amqp_conn):
    w = start(worker_factory, acks_late=True)
    r = app.send_task("demo.crash_once", args=["abort"], queue=w.queue)
    with pytest.raises(WorkerLostError):
        r.get(timeout=TIMEOUT)
    assert app.send_task("demo.add", args=[1, 1], queue=w.queue).get(timeout=TIMEOUT) == 2
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "queue empty")
    time.sleep(0.5)
    assert _meta(rds, r.id)["status"] == "FAILURE"  # not requeued and re-run


# ---- acks_on_failure_or_timeout ----------------------------------------------------------

@pytest.fixture
def dead_letters(amqp_conn):
    """A queue bound to it.dlx, where queues named dlq-* dead-letter (conftest policy)."""
    ch = amqp_conn.channel()
    ch.exchange_declare("it.dlx", "fanout", durable=True, auto_delete=False)
    name = unique_queue("dead")
    ch.queue_declare(name, durable=False, auto_delete=False, exclusive=False)
    ch.queue_bind(name, "it.dlx", "")
    yield ch, name
    try:
        ch.queue_delete(name)
        ch.close()
    except Exception:
        pass


def _dead_ids(ch, name):
    ids = []
    while True:
        m = ch.basic_get(name, no_ack=True)
        if m is None:
            return ids
        ids.append((m.headers or {}).get("id"))


def test_acks_on_failure_or_timeout_off_dead_letters(app, worker_factory, rds, dead_letters):
    ch, dead = dead_letters
    w = start(worker_factory, queue=unique_queue("dlq"), acks_late=True,
              acks_on_failure_or_timeout=False)
    failed = app.send_task("demo.fail", args=["x"], queue=w.queue)
    timed_out = app.send_task("demo.spin", args=[120], queue=w.queue, time_limit=1)
    ok = app.send_task("demo.add", args=[1, 2], queue=w.queue)
    with pytest.raises(ValueError):
        failed.get(timeout=TIMEOUT)
    with pytest.raises(TimeLimitExceeded):
        timed_out.get(timeout=TIMEOUT)
    assert ok.get(timeout=TIMEOUT) == 3
    got = []
    wait_for(lambda: got.extend(_dead_ids(ch, dead)) or len(got) >= 2, 10, "2 dead letters")
    assert sorted(got) == sorted([failed.id, timed_out.id])
    assert _meta(rds, failed.id)["status"] == "FAILURE"


def test_acks_on_failure_default_acks_failures(app, worker_factory, dead_letters, amqp_conn):
    ch, dead = dead_letters
    w = start(worker_factory, queue=unique_queue("dlq"), acks_late=True)
    with pytest.raises(ValueError):
        app.send_task("demo.fail", args=["x"], queue=w.queue).get(timeout=TIMEOUT)
    assert app.send_task("demo.add", args=[1, 2], queue=w.queue).get(timeout=TIMEOUT) == 3
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "queue empty")
    time.sleep(0.5)
    assert _dead_ids(ch, dead) == []


# ---- Recycling ---------------------------------------------------------------------------

def test_max_tasks_per_child_recycles(app, worker_factory):
    w = start(worker_factory, max_tasks_per_child=2)
    pids = [app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5], pids
    assert len(set(pids)) == 3, pids
    if IMPL == "c":
        # Replaced quietly: not a crash.
        assert not re.search(r"exited|WorkerLostError", w.log()), w.log()[-2000:]


def test_max_memory_per_child_recycles(app, worker_factory):
    # 1 KiB: every child is past it after its first task.
    w = start(worker_factory, max_memory_per_child=1)
    pids = [app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT) for _ in range(3)]
    assert len(set(pids)) == 3, pids
    if IMPL == "c":
        # billiard's warning (the Python worker logs it through multiprocessing's logger).
        w.wait_log(r"WARNING/ForkPoolWorker-\d+\] child process exiting after exceeding memory "
                   r"limit \(\d+KiB / 1KiB\)", 5)
